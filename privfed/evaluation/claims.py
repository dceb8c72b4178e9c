"""Conclusions a results page may state, each one a paired test across seeds.

A results page must not say more than its numbers support, and its words must not drift from
its numbers when it is regenerated. So the conclusions are generated: for every panel (task and
Dirichlet alpha) at a private epsilon, this module compares, seed by seed,

* each series with the per-client majority-class baseline (the label prior: each client
  predicts the most frequent label of its own training data),
* each series with the panel's best series (by mean),
* each series with its own non-private run (the privacy cost),

with a two-sided paired test (:mod:`privfed.evaluation.stats`), adjusts all p-values of the page
together with Holm's method, and writes a sentence only for what passes at the stated level
("local > majority baseline by 0.091 [0.05, 0.13], p = 0.002"), listing the rest as not
distinguishable. "No private method beats the label prior here" is written exactly when no
series is significantly above the majority baseline of a panel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from privfed.evaluation.results import (
    Layout,
    baseline,
    collect,
    multitask_rows,
    panel_alphas,
)
from privfed.evaluation.stats import PairedTest, holm, paired_t_test, wilcoxon_signed_rank

__all__ = ["Comparison", "PanelConclusions", "Conclusions", "conclusions"]

Row = Mapping[str, str]

TESTS: Mapping[str, Callable[..., PairedTest]] = {
    "t": paired_t_test,
    "wilcoxon": wilcoxon_signed_rank,
}


@dataclass(frozen=True)
class Comparison:
    """One paired comparison ``left - right`` over the seeds both have.

    Attributes:
        kind: ``baseline`` (series vs majority), ``best`` (series vs the panel's best) or
            ``cost`` (non-private run minus private run of the same series).
        left: the series on the left of the difference.
        right: what it is compared with (a series, ``majority baseline`` or ``ε = ∞``).
        test: the paired test.
        p_adjusted: Holm-adjusted p-value over every comparison of the page.
    """

    kind: str
    left: str
    right: str
    test: PairedTest
    p_adjusted: float = math.nan

    def significant(self, level: float) -> bool:
        """Whether the adjusted p-value is at most ``level``."""
        return self.p_adjusted <= level

    def effect(self) -> str:
        """``+0.091 [0.052, 0.130], p = 0.002`` (difference, its interval, adjusted p)."""
        t = self.test
        ci = (
            f" [{t.ci_low:+.3f}, {t.ci_high:+.3f}]"
            if math.isfinite(t.ci_low) and math.isfinite(t.ci_high)
            else ""
        )
        return f"{t.mean_difference:+.3f}{ci}, {_p(self.p_adjusted)}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


@dataclass(frozen=True)
class PanelConclusions:
    """The comparisons of one panel (task, alpha) at one epsilon.

    Attributes:
        task: the task (or ``multi-task average``).
        alpha: the panel's Dirichlet alpha (None when not swept or not applicable).
        epsilon: the record-level target epsilon.
        means: series -> mean over seeds.
        majority: mean majority-class baseline of the panel.
        best: the series with the highest mean.
        comparisons: every comparison of the panel.
        seeds: the number of seeds of the panel's series (fewest, most).
    """

    task: str
    alpha: float | None
    epsilon: float
    means: Mapping[str, float]
    majority: float
    best: str
    comparisons: tuple[Comparison, ...] = field(default_factory=tuple)
    seeds: tuple[int, int] = (0, 0)

    def title(self) -> str:
        """``image.identity, α = 0.1, ε = 4 (n = 10 seeds)``."""
        parts = [self.task]
        if self.alpha is not None:
            parts.append(f"α = {self.alpha:g}")
        parts.append("ε = ∞" if math.isinf(self.epsilon) else f"ε = {self.epsilon:g}")
        lo, hi = self.seeds
        n = f"{lo}" if lo == hi else f"{lo}-{hi}"
        return ", ".join(parts) + f" (n = {n} seeds per series)"

    def sentences(self, level: float) -> list[str]:
        """The statements this panel supports at ``level`` (Holm-adjusted)."""
        out: list[str] = []
        by = {(c.kind, c.left): c for c in self.comparisons}
        names = sorted(self.means, key=lambda s: -self.means[s])
        if math.isfinite(self.majority):
            above = [s for s in names if _sig(by.get(("baseline", s)), level, +1)]
            below = [s for s in names if _sig(by.get(("baseline", s)), level, -1)]
            tied = [s for s in names if s not in above and s not in below]
            maj = f"the majority-class baseline ({self.majority:.3f})"
            if above:
                out.append(
                    f"Above {maj}: "
                    + "; ".join(f"{s} ({by[('baseline', s)].effect()})" for s in above)
                    + "."
                )
            else:
                out.append(
                    f"No private method beats the label prior here: none is significantly "
                    f"above {maj}."
                    if not math.isinf(self.epsilon)
                    else f"No method is significantly above {maj}."
                )
            if below:
                out.append(
                    "Below it: "
                    + "; ".join(f"{s} ({by[('baseline', s)].effect()})" for s in below)
                    + "."
                )
            if tied:
                out.append("Not distinguishable from it: " + ", ".join(tied) + ".")
        worse = [s for s in names if s != self.best and _sig(by.get(("best", s)), level, -1)]
        level_with = [s for s in names if s != self.best and s not in worse]
        text = f"Highest mean: {self.best} ({self.means[self.best]:.3f})"
        if level_with:
            text += "; not distinguishable from it: " + ", ".join(level_with)
        if worse:
            text += "; below it: " + "; ".join(f"{s} ({by[('best', s)].effect()})" for s in worse)
        out.append(text + ".")
        costs = [by[("cost", s)] for s in names if ("cost", s) in by]
        if costs:
            sig = [c for c in costs if c.significant(level)]
            if sig:
                out.append(
                    "Privacy cost (non-private minus private, same series and seeds): "
                    + "; ".join(f"{c.left} {c.effect()}" for c in sig)
                    + "."
                )
            rest = [c.left for c in costs if not c.significant(level)]
            if rest:
                out.append("No significant privacy cost: " + ", ".join(rest) + ".")
        return out


def _sig(c: Comparison | None, level: float, sign: int) -> bool:
    return (
        c is not None
        and c.significant(level)
        and (c.test.mean_difference > 0) == (sign > 0)
        and c.test.mean_difference != 0
    )


@dataclass(frozen=True)
class Conclusions:
    """Every panel's comparisons, with the p-values adjusted together.

    Attributes:
        panels: the panels, in page order.
        test: name of the paired test.
        level: the family-wise level statements are made at.
        comparisons: number of comparisons in the Holm family.
    """

    panels: tuple[PanelConclusions, ...]
    test: str
    level: float
    comparisons: int

    def markdown(self) -> list[str]:
        """The conclusions section: the method, then one bullet list per panel."""
        lines = [
            f"Generated from `results.csv` by `privfed.evaluation.claims`: every statement is a "
            f"two-sided {self.test} test across seeds (pairs: the same seed, hence the same data "
            f"partition and initialization), with p-values Holm-adjusted over all "
            f"{self.comparisons} comparisons below; a difference is stated only at adjusted "
            f"p <= {self.level:g}, everything else is listed as not distinguishable. Effects are "
            "mean differences with their 95% t interval.",
            "",
        ]
        for p in self.panels:
            lines.append(f"**{p.title()}**")
            lines.append("")
            lines += [f"- {s}" for s in p.sentences(self.level)]
            lines.append("")
        return lines


def _paired(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[list[float], list[float]]:
    seeds = sorted(s for s in set(a) & set(b) if math.isfinite(a[s]) and math.isfinite(b[s]))
    return [a[s] for s in seeds], [b[s] for s in seeds]


def conclusions(
    rows: Sequence[Row],
    layout: Layout,
    *,
    epsilons: Sequence[float],
    tasks: Sequence[str] | None = None,
    column: str = "mean_acc",
    test: str = "t",
    level: float = 0.05,
    grid_only: bool = True,
) -> Conclusions:
    """Compare the series of every panel at each of ``epsilons`` (see the module docstring).

    Args:
        rows: results.csv rows.
        layout: the sweep's layout (:func:`privfed.evaluation.results.layout_of`).
        epsilons: record-level target epsilons to conclude about (private ones, or inf).
        tasks: tasks to include (default: every task, then ``multi-task average``).
        column: the per-point metric compared.
        test: ``t`` (paired t-test) or ``wilcoxon`` (Wilcoxon signed-rank).
        level: family-wise level of the statements.
        grid_only: compare only the grid's series (baselines such as a secure-aggregation
            check are shown in the tables, not concluded about).

    Raises:
        ValueError: an unknown test.
    """
    if test not in TESTS:
        raise ValueError(f"test must be one of {', '.join(TESTS)}, got {test!r}")
    run = TESTS[test]
    if grid_only:
        rows = [r for r in rows if (r.get("label") or "grid") == "grid"]
    all_rows = [*rows, *multitask_rows(rows)]
    values = collect(all_rows, layout, column)
    majority = collect(all_rows, layout, "majority_acc")
    wanted = (
        list(tasks)
        if tasks is not None
        else [
            *dict.fromkeys(r["task"] for r in rows),
            "multi-task average",
        ]
    )
    drafts: list[
        tuple[
            str,
            float | None,
            float,
            dict[str, float],
            float,
            str,
            list[Comparison],
            tuple[int, int],
        ]
    ]
    drafts = []
    for task in wanted:
        for alpha in panel_alphas(values, task):
            for eps in epsilons:
                cells = {
                    k[1]: v
                    for k, v in values.items()
                    if k[0] == task and k[2] == alpha and k[3] == eps and v
                }
                if not cells:
                    continue
                means = {s: sum(v.values()) / len(v) for s, v in cells.items()}
                best = max(means, key=lambda s: means[s])
                comps: list[Comparison] = []
                for s, v in cells.items():
                    maj = majority.get((task, s, alpha, eps), {})
                    a, b = _paired(v, maj)
                    if len(a) >= 2:
                        comps.append(Comparison("baseline", s, "majority baseline", run(a, b)))
                    if s != best:
                        a, b = _paired(v, cells[best])
                        if len(a) >= 2:
                            comps.append(Comparison("best", s, best, run(a, b)))
                    if math.isfinite(eps):
                        ref = values.get((task, s, alpha, math.inf), {})
                        a, b = _paired(ref, v)
                        if len(a) >= 2:
                            comps.append(Comparison("cost", s, "ε = ∞", run(a, b)))
                maj_mean = baseline(all_rows, layout, "majority_acc", task=task, alpha=alpha)
                counts = [len(v) for v in cells.values()]
                seeds = (min(counts), max(counts))
                drafts.append((task, alpha, eps, means, maj_mean, best, comps, seeds))
    flat = [c for d in drafts for c in d[6]]
    adjusted = holm([c.test.p_value for c in flat])
    it = iter(adjusted)
    panels = []
    for task, alpha, eps, means, maj_mean, best, comps, seeds in drafts:
        done = tuple(
            Comparison(c.kind, c.left, c.right, c.test, p_adjusted=next(it)) for c in comps
        )
        panels.append(PanelConclusions(task, alpha, eps, means, maj_mean, best, done, seeds))
    name = "paired t" if test == "t" else "Wilcoxon signed-rank"
    return Conclusions(tuple(panels), name, level, len(flat))

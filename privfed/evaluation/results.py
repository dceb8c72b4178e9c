"""The rows of a sweep's ``results.csv`` organised for reports and claims.

One place decides, for every row, which *series* it belongs to, which *panel* (task and
Dirichlet alpha) it is drawn in and which record-level epsilon it sits at, and collects the
per-seed values of a column, so that the report (:mod:`privfed.evaluation.report`) and the
checked conclusions (:mod:`privfed.evaluation.claims`) compare the same numbers.

* A series is named by what varies *within the sweep's grid*: the algorithm and every other
  grid axis with more than one value (``aggregator=secagg``), never fields that do not vary
  (``mode=off``). A baseline point is its own series, named by the baseline's name up to an
  ``@`` (``fedavg-secagg@a0.1`` and ``fedavg-secagg@a1``: one series whose entries differ by
  the alpha they fix).
* The swept Dirichlet alpha of group ``g`` (``groups.g.partition.alpha``) splits the panels of
  ``g``'s tasks and of the multi-task aggregates; the tasks of other groups are unaffected by
  it, so their rows at each alpha are the same runs' numbers and only the first alpha's are
  kept (no seed is counted twice).
* Rows with client-level DP (``client_dp`` not ``off``) are not placed on the record-level
  epsilon axis; :func:`client_level` lists them apart.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from privfed.evaluation.metrics import mean_ci

__all__ = [
    "MIN_SEEDS",
    "Cell",
    "Interval",
    "Layout",
    "collect",
    "interval",
    "layout_of",
    "multitask_rows",
    "panel_alphas",
]

Row = Mapping[str, str]

#: Fewer seeds than this and an interval is marked as indicative only.
MIN_SEEDS = 5

#: Columns whose values are fractions (accuracies, AUCs, TPRs): intervals are clipped to [0, 1].
FRACTION_PREFIXES = ("mean_acc", "median_acc", "worst_acc", "val_mean_acc", "majority_acc")

EPSILON = "dp.target_epsilon"
SEED = "seed"


def f(value: str | None) -> float:
    """A results.csv cell as a float (nan when empty or not a number)."""
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its 95% Student-t interval, clipped to the metric's range.

    Attributes:
        mean: the mean.
        low: lower end (clipped; nan for n < 2).
        high: upper end (clipped; nan for n < 2).
        n: number of values (seeds).
    """

    mean: float
    low: float
    high: float
    n: int

    @property
    def few(self) -> bool:
        """Fewer than :data:`MIN_SEEDS` values: the interval is indicative only."""
        return self.n < MIN_SEEDS

    def format(self, digits: int = 3) -> str:
        """``0.431 [0.312, 0.550] n=3†`` (``†``: fewer than :data:`MIN_SEEDS` seeds)."""
        if self.n == 0 or not math.isfinite(self.mean):
            if self.n and math.isinf(self.mean):
                return "∞"
            return "—"
        text = f"{self.mean:.{digits}f}"
        if self.n >= 2 and math.isfinite(self.low) and math.isfinite(self.high):
            text += f" [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        return text + f" n={self.n}" + ("†" if self.few else "")


def interval(
    values: Iterable[float], *, lower: float | None = None, upper: float | None = None
) -> Interval:
    """Mean and 95% t interval of ``values``, the interval clipped to ``[lower, upper]``."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if vals and all(math.isinf(v) and v > 0 for v in vals):
        return Interval(math.inf, math.inf, math.inf, len(vals))
    m = mean_ci([v for v in vals if math.isfinite(v)])
    if m.n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    lo = m.mean - m.half_width if math.isfinite(m.half_width) else math.nan
    hi = m.mean + m.half_width if math.isfinite(m.half_width) else math.nan
    if lower is not None and math.isfinite(lo):
        lo = max(lo, lower)
    if upper is not None and math.isfinite(hi):
        hi = min(hi, upper)
    return Interval(m.mean, lo, hi, m.n)


def fraction_range(column: str) -> tuple[float | None, float | None]:
    """The range of a column's values: [0, 1] for accuracies, AUCs and TPRs, else unbounded."""
    metric = column.rsplit(":", 1)[-1]
    if column.startswith(FRACTION_PREFIXES) or metric.startswith(("auc", "tpr", "acc")):
        return 0.0, 1.0
    return None, None


@dataclass(frozen=True)
class Layout:
    """Which results.csv columns play which role in a sweep.

    Attributes:
        alpha: the swept Dirichlet-alpha path, or None.
        alpha_group: the task group that alpha partitions (``image`` for
            ``groups.image.partition.alpha``).
        series_fields: grid axes other than epsilon, alpha and seed that take several values.
    """

    alpha: str | None
    alpha_group: str | None
    series_fields: tuple[str, ...]

    def series(self, row: Row) -> str:
        """The series a row belongs to (see the module docstring)."""
        label = row.get("label", "grid") or "grid"
        if label != "grid":
            return label.split("@", 1)[0]
        parts = [row.get("algorithm") or row.get("federation.algorithm") or "?"]
        for fld in self.series_fields:
            if fld in ("federation.algorithm", "algorithm"):
                continue
            parts.append(f"{fld.rsplit('.', 1)[-1]}={row.get(fld, '')}")
        return ", ".join(parts)

    def alpha_of(self, row: Row) -> float | None:
        """The row's swept alpha if it applies to the row's task, else None."""
        if self.alpha is None:
            return None
        task = row.get("task", "")
        if self.alpha_group and "." in task and task.split(".", 1)[0] != self.alpha_group:
            return None  # another group's task: this alpha does not partition its data
        return f(row.get(self.alpha))


def layout_of(rows: Sequence[Row], sweep: Mapping[str, Any] | None = None) -> Layout:
    """The layout of a sweep's rows (``sweep``: its ``sweep.json``, for the grid axes)."""
    header = list(rows[0]) if rows else []
    swept = list((sweep or {}).get("swept_fields") or [])
    if not swept and SEED in header:
        swept = header[2 : header.index(SEED)]
    axes = (sweep or {}).get("axes") or {}
    alpha = next((fld for fld in swept if fld.endswith("partition.alpha")), None)
    alpha_group = None
    if alpha and alpha.startswith("groups."):
        alpha_group = alpha.split(".")[1]
    grid_rows = [r for r in rows if (r.get("label") or "grid") == "grid"] or list(rows)
    candidates = list(axes) if axes else swept
    series_fields = tuple(
        fld
        for fld in candidates
        if fld not in (EPSILON, SEED, alpha)
        and fld in header
        and len({r.get(fld) for r in grid_rows}) > 1
    )
    return Layout(alpha=alpha, alpha_group=alpha_group, series_fields=series_fields)


def is_client_level(row: Row) -> bool:
    """Whether the row's point runs client-level DP."""
    return (row.get("client_dp") or "off") != "off"


#: (task, series, alpha or None, record-level target epsilon)
Cell = tuple[str, str, float | None, float]


def collect(
    rows: Sequence[Row],
    layout: Layout,
    column: str,
    *,
    client_level: bool = False,
    per_point: bool = False,
) -> dict[Cell, dict[int, float]]:
    """Per-seed values of ``column`` in each (task, series, alpha, epsilon) cell.

    Args:
        rows: results.csv rows (or :func:`multitask_rows`).
        layout: the sweep's layout.
        column: the column to collect.
        client_level: collect the client-level DP rows instead of the record-level ones.
        per_point: the column has one value per point (attack metrics, costs): collect it
            once per point under task ``""``.

    Returns:
        cell -> seed -> value. A seed appears once per cell: for tasks that the swept alpha
        does not partition, the first alpha's row is kept.
    """
    out: dict[Cell, dict[int, float]] = defaultdict(dict)
    ordered = sorted(rows, key=lambda r: f(r.get(layout.alpha, "")) if layout.alpha else 0.0)
    seen: set[tuple[str, str]] = set()
    for r in ordered:
        if is_client_level(r) != client_level or column not in r:
            continue
        if per_point:
            if (r["point_id"], "") in seen:
                continue
            seen.add((r["point_id"], ""))
            task = ""
            alpha = f(r.get(layout.alpha, "")) if layout.alpha else None
        else:
            task = r["task"]
            alpha = layout.alpha_of(r)
        key: Cell = (task, layout.series(r), alpha, f(r.get("target_epsilon")))
        seed = int(r[SEED])
        if seed not in out[key]:
            out[key][seed] = f(r[column])
    return dict(out)


def multitask_rows(rows: Sequence[Row]) -> list[dict[str, str]]:
    """Per point, pseudo-rows ``multi-task average`` and ``worst task`` of ``mean_acc``.

    The majority baseline of the average is the average of the tasks' majority baselines; the
    worst task has none. Tasks of groups the swept alpha does not partition enter every point
    with their own numbers, as they were measured in that run.
    """
    by_point: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_point[r["point_id"]].append(r)
    out: list[dict[str, str]] = []
    for prs in by_point.values():
        accs = [f(r["mean_acc"]) for r in prs]
        maj = [f(r.get("majority_acc")) for r in prs]
        base = dict(prs[0])
        avg = dict(base, task="multi-task average", mean_acc=repr(sum(accs) / len(accs)))
        avg["majority_acc"] = repr(sum(maj) / len(maj))
        worst = dict(base, task="worst task", mean_acc=repr(min(accs)), majority_acc="nan")
        for extra in ("bayes_pooled_acc", "bayes_personal_acc"):
            avg[extra] = worst[extra] = "nan"
        out += [avg, worst]
    return out


def panel_alphas(cells: Iterable[Cell], task: str) -> list[float | None]:
    """The alphas of a task's panels (``[None]`` when alpha does not apply)."""
    found = {c[2] for c in cells if c[0] == task}
    if found == {None} or not found:
        return [None]
    return [a for a in sorted(x for x in found if x is not None)]


def baseline(
    rows: Sequence[Row], layout: Layout, column: str, *, task: str, alpha: float | None
) -> float:
    """Mean over seeds of a per-point baseline column (``majority_acc``, ``bayes_*``) in a panel.

    Each seed's partition gives its own baseline; series at the same seed and alpha share it.
    """
    per_seed: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        if r.get("task") != task or column not in r or is_client_level(r):
            continue
        if layout.alpha_of(r) != alpha:
            continue
        v = f(r[column])
        if math.isfinite(v):
            per_seed[int(r[SEED])].append(v)
    if not per_seed:
        return math.nan
    return sum(sum(v) / len(v) for v in per_seed.values()) / len(per_seed)

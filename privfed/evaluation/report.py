"""Reports of a sweep directory: ``report.md`` with interval tables and PNG plots.

``privfed report DIR`` reads ``DIR/results.csv`` (and ``sweep.json``, the point manifests and
their last ``metrics.jsonl`` line for per-client numbers) and writes into ``DIR``:

* ``acc_vs_epsilon_<task>.png``: mean client test accuracy vs record-level target epsilon, one
  line per series, one panel per Dirichlet alpha of the task's group; markers are means over
  seeds, bars 95% Student-t intervals clipped to [0, 1], hollow markers when fewer than
  :data:`~privfed.evaluation.results.MIN_SEEDS` seeds; the panel's own majority-class
  baseline (and the Bayes-optimal accuracies where the data source knows them) as lines;
* ``multitask.png``: the multi-task average and the worst task vs epsilon;
* ``acc_vs_alpha.png``: accuracy vs Dirichlet alpha at one epsilon, with the baseline per alpha;
* ``client_spread.png``: the per-client accuracy distribution at one epsilon;
* ``cost.png``: bytes and local compute per participation, per series;
* ``attacks.png``: every attack metric (``attack:NAME:METRIC`` columns) vs epsilon;
* ``report.md`` linking them, with tables (mean, clipped 95% interval, number of seeds; the
  non-private reference and the privacy cost next to every private point), the privacy
  guarantees (record-level and client-level epsilon and delta in separate columns) and the
  provenance read from the run manifests.

A series keeps one colour and one marker in every figure (the built-in algorithms always get
the same colour), and series at the same epsilon are drawn side by side rather than on top of
each other. Series, panels and baselines are those of :mod:`privfed.evaluation.results`.

Accuracies are final-round test accuracies on each client's held-out test split; no model
selection is done here (``val_mean_acc`` in ``results.csv`` is the validation-split number).
Plotting needs matplotlib (``pip install -e '.[report]'`` in the privfed checkout, or
``pip install matplotlib``).
"""

from __future__ import annotations

import json
import math
import platform
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from privfed.errors import PrivfedError
from privfed.evaluation.results import (
    MIN_SEEDS,
    Cell,
    Interval,
    Layout,
    baseline,
    collect,
    f,
    fraction_range,
    interval,
    is_client_level,
    layout_of,
    multitask_rows,
    panel_alphas,
)
from privfed.evaluation.stats import paired_t_test
from privfed.evaluation.sweep import RESULTS_CSV, SWEEP_JSON, read_results
from privfed.io import atomic_write_bytes, atomic_write_text, read_json, read_jsonl, storage_error

__all__ = ["Report", "ReportError", "SeriesStyle", "make_report", "series_styles"]

Row = Mapping[str, str]


class ReportError(PrivfedError):
    """A sweep directory cannot be reported on."""


@dataclass(frozen=True)
class Report:
    """What :func:`make_report` wrote.

    Attributes:
        markdown: path of ``report.md``.
        figures: paths of the PNG plots.
    """

    markdown: Path
    figures: tuple[Path, ...]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PrivfedError(
            "privfed report draws its plots with matplotlib, which is not installed; "
            "run: pip install matplotlib (or pip install -e '.[report]' in the privfed checkout)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt_eps(e: float) -> str:
    return "∞" if math.isinf(e) else f"{e:g}"


# --------------------------------------------------------------------------------------------
# Series styles: one colour and one marker per series, in every figure


@dataclass(frozen=True)
class SeriesStyle:
    """How a series is drawn.

    Attributes:
        colour: a matplotlib colour.
        marker: a matplotlib marker.
    """

    colour: str
    marker: str


#: Colours and markers of the built-in algorithms, the same on every page.
ALGORITHM_STYLES: Mapping[str, SeriesStyle] = {
    "fedavg": SeriesStyle("#1f77b4", "o"),
    "fedavg-ft": SeriesStyle("#ff7f0e", "s"),
    "fedprox": SeriesStyle("#2ca02c", "^"),
    "fedper": SeriesStyle("#d62728", "D"),
    "fedrep": SeriesStyle("#9467bd", "v"),
    "ditto": SeriesStyle("#8c564b", "P"),
    "local": SeriesStyle("#e377c2", "X"),
    "mocha": SeriesStyle("#7f7f7f", "*"),
}
_OTHER_COLOURS = (
    "#17becf",
    "#bcbd22",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
    "#31a354",
    "#756bb1",
    "#636363",
)
_OTHER_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "d", "8", "H")


def series_styles(names: Sequence[str]) -> dict[str, SeriesStyle]:
    """A colour and a marker for every series name; one report uses one map for all figures.

    A series named exactly like a built-in algorithm always gets that algorithm's style (on
    every page); the others take the remaining colours and markers in sorted order, so no two
    series of a report share both colour and marker.
    """
    out: dict[str, SeriesStyle] = {}
    others = sorted(n for n in set(names) if n not in ALGORITHM_STYLES)
    for n in set(names) & set(ALGORITHM_STYLES):
        out[n] = ALGORITHM_STYLES[n]
    for i, n in enumerate(others):
        out[n] = SeriesStyle(
            _OTHER_COLOURS[i % len(_OTHER_COLOURS)],
            _OTHER_MARKERS[(i // len(_OTHER_COLOURS) + i) % len(_OTHER_MARKERS)],
        )
    return out


# --------------------------------------------------------------------------------------------
# Plots


def _eps_positions(eps_values: Sequence[float]) -> tuple[dict[float, float], list[float]]:
    finite = sorted(e for e in eps_values if math.isfinite(e))
    pos = {e: e for e in finite}
    x_inf = finite[-1] * 3.0 if finite else 1.0
    if any(math.isinf(e) for e in eps_values):
        pos[math.inf] = x_inf
    return pos, finite


def _dodge(i: int, k: int, spread: float = 0.06) -> float:
    """Multiplicative x offset of the ``i``-th of ``k`` series (log axis): side by side."""
    return math.exp(spread * (i - (k - 1) / 2.0))


def _errorbar(ax: Any, xs: list[float], ivs: list[Interval], style: SeriesStyle, **kw: Any) -> None:
    """Means with clipped interval bars; hollow markers where fewer than MIN_SEEDS seeds."""
    ys = [iv.mean for iv in ivs]
    lo = [iv.mean - iv.low if math.isfinite(iv.low) else 0.0 for iv in ivs]
    hi = [iv.high - iv.mean if math.isfinite(iv.high) else 0.0 for iv in ivs]
    few = [iv.few for iv in ivs]
    hollow = any(few)
    ax.errorbar(
        xs,
        ys,
        yerr=[lo, hi],
        fmt=kw.pop("fmt", "-"),
        color=style.colour,
        marker=style.marker,
        markerfacecolor="white" if hollow else style.colour,
        markersize=6,
        capsize=3,
        linewidth=1.2,
        **kw,
    )
    if hollow:  # fill the markers of the points that do have enough seeds
        full = [(x, y) for x, y, sparse in zip(xs, ys, few, strict=True) if not sparse]
        if full:
            ax.plot(
                [p[0] for p in full],
                [p[1] for p in full],
                marker=style.marker,
                color=style.colour,
                markersize=6,
                linestyle="none",
                zorder=3,
            )


def _eps_panel(
    ax: Any,
    data: Mapping[str, Mapping[float, Interval]],
    styles: Mapping[str, SeriesStyle],
    *,
    title: str,
    ylabel: str,
    delta: str,
    references: Sequence[tuple[str, float, str]] = (),
    ylim: tuple[float, float] | None = (-0.02, 1.02),
) -> None:
    """Series vs epsilon on a log axis, inf at the right; ``references``: (label, y, style)."""
    all_eps = sorted({e for d in data.values() for e in d})
    pos, finite = _eps_positions(all_eps)
    names = sorted(data)
    for i, name in enumerate(names):
        pts = data[name]
        shift = _dodge(i, len(names))
        style = styles[name]
        fin = sorted(e for e in pts if math.isfinite(e))
        if fin:
            _errorbar(ax, [pos[e] * shift for e in fin], [pts[e] for e in fin], style, label=name)
        if math.inf in pts:
            _errorbar(
                ax,
                [pos[math.inf] * shift],
                [pts[math.inf]],
                style,
                fmt="",
                linestyle="none",
                label=None if fin else name,
            )
    if math.inf in pos and finite:
        ax.axvline(math.sqrt(finite[-1] * pos[math.inf]), color="0.6", linestyle=":", linewidth=1)
    for label, y, ls in references:
        if math.isfinite(y):
            ax.axhline(y, color="0.35", linestyle=ls, linewidth=1, label=label)
    ax.set_xscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ticks = [pos[e] for e in sorted(pos)]
    ax.set_xticks(ticks)
    ax.set_xticklabels(
        [_fmt_eps(e) if math.isfinite(e) else "∞\n(non-private)" for e in sorted(pos)]
    )
    ax.minorticks_off()
    ax.set_xlabel(f"record-level target ε per client and data source (δ = {delta}, log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def _save(fig: Any, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _baseline_refs(
    rows: Sequence[Row], layout: Layout, task: str, alpha: float | None
) -> list[tuple[str, float, str]]:
    """The panel's baselines as (label, value, line style)."""
    where = f" (α = {alpha:g})" if alpha is not None else ""
    out = []
    maj = baseline(rows, layout, "majority_acc", task=task, alpha=alpha)
    if math.isfinite(maj):
        out.append((f"majority-class baseline{where}: {maj:.3f}", maj, "--"))
    for col, name in (("bayes_pooled_acc", "pooled"), ("bayes_personal_acc", "personal")):
        v = baseline(rows, layout, col, task=task, alpha=alpha)
        if math.isfinite(v):
            out.append(
                (f"Bayes-optimal, {name} model: {v:.3f}", v, ":" if name == "pooled" else "-.")
            )
    return out


def _intervals(cells: Mapping[Cell, Mapping[int, float]], column: str) -> dict[Cell, Interval]:
    lo, hi = fraction_range(column)
    return {k: interval(v.values(), lower=lo, upper=hi) for k, v in cells.items()}


# --------------------------------------------------------------------------------------------
# Tables


def _cost(cells: Mapping[Cell, Mapping[int, float]], key: Cell) -> tuple[Interval, int] | None:
    """Non-private minus private accuracy of the same series, paired by seed."""
    task, series, alpha, eps = key
    ref = cells.get((task, series, alpha, math.inf))
    mine = cells.get(key)
    if not ref or not mine or math.isinf(eps):
        return None
    seeds = sorted(s for s in set(ref) & set(mine) if math.isfinite(ref[s] + mine[s]))
    if not seeds:
        return None
    t = paired_t_test([ref[s] for s in seeds], [mine[s] for s in seeds])
    # a difference of two fractions lies in [-1, 1]
    lo = max(t.ci_low, -1.0) if math.isfinite(t.ci_low) else math.nan
    hi = min(t.ci_high, 1.0) if math.isfinite(t.ci_high) else math.nan
    return Interval(t.mean_difference, lo, hi, len(seeds)), len(seeds)


def _accuracy_table(
    rows: Sequence[Row],
    layout: Layout,
    cells: Mapping[Cell, Mapping[int, float]],
    ivs: Mapping[Cell, Interval],
    task: str,
    *,
    with_cost: bool,
) -> list[str]:
    keys = [k for k in ivs if k[0] == task]
    eps = sorted({k[3] for k in keys}, key=lambda e: (not math.isinf(e), -e))
    alphas = panel_alphas(keys, task)
    has_alpha = alphas != [None]
    bayes = {
        a: (
            baseline(rows, layout, "bayes_pooled_acc", task=task, alpha=a),
            baseline(rows, layout, "bayes_personal_acc", task=task, alpha=a),
        )
        for a in alphas
    }
    show_bayes = any(math.isfinite(v) for pair in bayes.values() for v in pair)
    head = ["series"] + (["α"] if has_alpha else []) + ["majority baseline"]
    if show_bayes:
        head.append("Bayes-optimal (pooled / personal)")
    for e in eps:
        head.append(f"ε = {_fmt_eps(e)}" + (" (reference)" if math.isinf(e) else ""))
        if with_cost and math.isfinite(e):
            head.append(f"cost at ε = {_fmt_eps(e)}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for a in alphas:
        series = sorted({k[1] for k in keys if k[2] == a})
        maj = baseline(rows, layout, "majority_acc", task=task, alpha=a)
        for s in series:
            cells_row = [s] + ([f"{a:g}"] if has_alpha and a is not None else [])
            cells_row.append(f"{maj:.3f}" if math.isfinite(maj) else "—")
            if show_bayes:
                p, q = bayes[a]
                cells_row.append(
                    f"{p:.3f} / {q:.3f}" if math.isfinite(p) and math.isfinite(q) else "—"
                )
            for e in eps:
                iv = ivs.get((task, s, a, e))
                cells_row.append(iv.format() if iv else "—")
                if with_cost and math.isfinite(e):
                    c = _cost(cells, (task, s, a, e))
                    cells_row.append(c[0].format() if c else "—")
            lines.append("| " + " | ".join(cells_row) + " |")
    return lines


# --------------------------------------------------------------------------------------------
# Report


def _manifests(sweep_dir: Path, rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["point_id"] in out:
            continue
        try:
            data = read_json(sweep_dir / r["run_dir"] / "manifest.json")
        except (OSError, ValueError):
            data = {}
        out[r["point_id"]] = data if isinstance(data, dict) else {}
    return out


def attack_columns(rows: Sequence[Row]) -> dict[str, list[str]]:
    """Attack name -> its ``attack:NAME:METRIC`` columns with at least one number."""
    out: dict[str, list[str]] = defaultdict(list)
    for col in rows[0] if rows else ():
        if not col.startswith("attack:"):
            continue
        if not any(math.isfinite(f(r.get(col))) or f(r.get(col)) == math.inf for r in rows):
            continue
        _, name, _metric = col.split(":", 2)
        out[name].append(col)
    return {k: sorted(v) for k, v in out.items()}


#: Attack metrics that describe the setup rather than the attack's success (tables only).
_SETUP_METRICS = ("challenge", "candidates", "shadows")


def make_report(
    sweep_dir: str | Path,
    *,
    epsilon: float | None = None,
    alpha: float | None = None,
    out_dir: str | Path | None = None,
) -> Report:
    """Write ``report.md`` and the PNG plots of a sweep directory.

    Args:
        sweep_dir: a directory written by ``privfed sweep`` (holds ``results.csv``).
        epsilon: target epsilon of the per-client spread and accuracy-vs-alpha plots
            (default: inf if present, else the largest swept).
        alpha: Dirichlet alpha of the per-client spread plot (default: the smallest swept).
        out_dir: where to write (default: ``sweep_dir``).

    Returns:
        The paths written.

    Raises:
        PrivfedError: if ``results.csv`` is missing or empty, or matplotlib is not installed.
    """
    sweep_dir = Path(sweep_dir)
    out = Path(out_dir) if out_dir else sweep_dir
    rows = read_results(sweep_dir / RESULTS_CSV)
    if not rows:
        raise ReportError(
            f"{sweep_dir / RESULTS_CSV} has no finished points yet; run (or "
            "resume) `privfed sweep` until at least one point finishes"
        )
    plt = _pyplot()
    try:
        sweep = read_json(sweep_dir / SWEEP_JSON)
    except (OSError, ValueError):
        sweep = {}
    if not isinstance(sweep, dict):
        sweep = {}
    layout = layout_of(rows, sweep)
    record_rows = [r for r in rows if not is_client_level(r)] or list(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    eps_all = sorted({f(r["target_epsilon"]) for r in record_rows})
    alphas = sorted({f(r[layout.alpha]) for r in rows}) if layout.alpha else [None]
    chosen_eps = (
        epsilon if epsilon is not None else (math.inf if math.inf in eps_all else eps_all[-1])
    )
    if chosen_eps not in eps_all:
        raise ReportError(
            f"--epsilon {chosen_eps:g} was not swept; choose one of "
            f"{', '.join(_fmt_eps(e) for e in eps_all)}"
        )
    chosen_alpha = alpha if alpha is not None else alphas[0]
    if layout.alpha and chosen_alpha not in alphas:
        raise ReportError(
            f"--alpha {chosen_alpha:g} was not swept; choose one of "
            f"{', '.join(f'{a:g}' for a in alphas if a is not None)}"
        )
    delta = ", ".join(sorted({r["delta"] for r in record_rows}))
    mt_rows = multitask_rows(rows)
    acc_cells = collect(rows, layout, "mean_acc")
    worst_cells = collect(rows, layout, "worst_acc")
    mt_cells = collect(mt_rows, layout, "mean_acc")
    acc = _intervals(acc_cells, "mean_acc")
    worst = _intervals(worst_cells, "worst_acc")
    mt = _intervals(mt_cells, "mean_acc")
    styles = series_styles([layout.series(r) for r in rows])
    figures: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(out, exc, action="create the report directory") from None
    ylabel = "mean client test accuracy (fraction)"

    def alpha_title(a: float | None) -> str:
        return f", α = {a:g}" if a is not None else ""

    # accuracy vs epsilon, one figure per task, one panel per alpha of the task's group
    for t in tasks:
        panel = panel_alphas(acc, t)
        fig, axes = plt.subplots(
            1, len(panel), figsize=(6.4 * len(panel), 4.8), squeeze=False, layout="constrained"
        )
        for ax, a in zip(axes[0], panel, strict=True):
            data: dict[str, dict[float, Interval]] = defaultdict(dict)
            for (task, series, aa, e), iv in acc.items():
                if task == t and aa == a:
                    data[series][e] = iv
            note = "" if a is not None or layout.alpha is None else " (α does not apply)"
            _eps_panel(
                ax,
                data,
                styles,
                title=f"{t}: accuracy vs privacy{alpha_title(a)}{note}",
                ylabel=ylabel,
                delta=delta,
                references=_baseline_refs(rows, layout, t, a),
            )
        figures.append(_save(fig, out / f"acc_vs_epsilon_{_safe(t)}.png"))
        plt.close(fig)

    # multi-task average and worst task vs epsilon
    mt_alphas = panel_alphas(mt, "multi-task average")
    fig, axes = plt.subplots(
        2, len(mt_alphas), figsize=(6.4 * len(mt_alphas), 9.4), squeeze=False, layout="constrained"
    )
    for j, a in enumerate(mt_alphas):
        for rowi, t in enumerate(["multi-task average", "worst task"]):
            data = defaultdict(dict)
            for (task, series, aa, e), iv in mt.items():
                if task == t and aa == a:
                    data[series][e] = iv
            _eps_panel(
                axes[rowi][j],
                data,
                styles,
                title=f"{t} over {len(tasks)} tasks{alpha_title(a)}",
                ylabel=f"{t} of mean client accuracy (fraction)",
                delta=delta,
                references=_baseline_refs(mt_rows, layout, t, a) if rowi == 0 else (),
            )
    figures.append(_save(fig, out / "multitask.png"))
    plt.close(fig)

    # accuracy vs alpha at the chosen epsilon (tasks the swept alpha partitions)
    alpha_tasks = [t for t in tasks if panel_alphas(acc, t) != [None]]
    if layout.alpha and len(alphas) > 1 and alpha_tasks:
        ncol = min(3, len(alpha_tasks))
        nrow = math.ceil(len(alpha_tasks) / ncol)
        fig, axes = plt.subplots(
            nrow, ncol, figsize=(5.4 * ncol, 4.4 * nrow), squeeze=False, layout="constrained"
        )
        for i, t in enumerate(alpha_tasks):
            ax = axes[i // ncol][i % ncol]
            series_pts: dict[str, dict[float, Interval]] = defaultdict(dict)
            for (task, series, aa, e), iv in acc.items():
                if task == t and e == chosen_eps and aa is not None:
                    series_pts[series][aa] = iv
            names = sorted(series_pts)
            for j, name in enumerate(names):
                xs = sorted(series_pts[name])
                _errorbar(
                    ax,
                    [x * _dodge(j, len(names)) for x in xs],
                    [series_pts[name][x] for x in xs],
                    styles[name],
                    label=name,
                )
            base_xs = [a for a in alphas if a is not None]
            maj = [baseline(rows, layout, "majority_acc", task=t, alpha=a) for a in base_xs]
            ax.plot(
                base_xs,
                maj,
                "k--",
                linewidth=1,
                marker="_",
                markersize=12,
                label="majority-class baseline (per α)",
            )
            ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(f"Dirichlet α of {layout.alpha_group} (log scale; smaller = more skewed)")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{t} at ε = {_fmt_eps(chosen_eps)}", fontsize=10)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        for k in range(len(alpha_tasks), nrow * ncol):
            axes[k // ncol][k % ncol].axis("off")
        figures.append(_save(fig, out / "acc_vs_alpha.png"))
        plt.close(fig)

    # per-client spread at the chosen epsilon (and alpha)
    spread: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seen_points: set[str] = set()
    for r in record_rows:
        if f(r["target_epsilon"]) != chosen_eps or r["point_id"] in seen_points:
            continue
        if layout.alpha and f(r[layout.alpha]) != chosen_alpha:
            continue
        seen_points.add(r["point_id"])
        metrics = read_jsonl(sweep_dir / r["run_dir"] / "metrics.jsonl")
        if not metrics:
            continue
        for task, clients in metrics[-1].get("per_client", {}).items():
            spread[task][layout.series(r)].extend(float(v) for v in clients.values())
    if spread:
        spread_tasks = [t for t in tasks if t in spread]
        ncol = min(3, len(spread_tasks))
        nrow = math.ceil(len(spread_tasks) / ncol)
        fig, axes = plt.subplots(
            nrow, ncol, figsize=(5.4 * ncol, 4.4 * nrow), squeeze=False, layout="constrained"
        )
        for i, t in enumerate(spread_tasks):
            ax = axes[i // ncol][i % ncol]
            names = sorted(spread[t])
            box = ax.boxplot([spread[t][n] for n in names], showmeans=True, patch_artist=True)
            for patch, n in zip(box["boxes"], names, strict=True):
                patch.set_facecolor(styles[n].colour)
                patch.set_alpha(0.35)
            ax.set_xticks(range(1, len(names) + 1))
            ax.set_xticklabels(names, rotation=20, fontsize=7)
            ax.set_ylabel("client test accuracy (fraction)")
            ax.set_ylim(-0.02, 1.02)
            ax.set_title(
                f"{t}: per-client accuracy, ε = {_fmt_eps(chosen_eps)}"
                + (f", α = {chosen_alpha:g}" if chosen_alpha is not None else ""),
                fontsize=9,
            )
            ax.grid(True, axis="y", alpha=0.3)
        for k in range(len(spread_tasks), nrow * ncol):
            axes[k // ncol][k % ncol].axis("off")
        fig.suptitle(
            "Per-client accuracy spread (all clients of all seeds; box: quartiles, triangle: mean)",
            fontsize=10,
        )
        figures.append(_save(fig, out / "client_spread.png"))
        plt.close(fig)

    cost = _costs(rows, layout)
    if cost:
        figures.append(_cost_figure(plt, cost, styles, out))

    attacks = attack_columns(rows)
    attack_ivs: dict[str, dict[Cell, Interval]] = {}
    for cols in attacks.values():
        for col in cols:
            attack_ivs[col] = _intervals(collect(rows, layout, col, per_point=True), col)
    if attacks:
        figures.append(_attack_figure(plt, attacks, attack_ivs, styles, out, delta=delta))

    md = _markdown(
        sweep_dir,
        sweep,
        rows,
        layout,
        tasks,
        cells={"acc": acc_cells, "worst": worst_cells, "mt": mt_cells},
        ivs={"acc": acc, "worst": worst, "mt": mt},
        mt_rows=mt_rows,
        figures=figures,
        out=out,
        cost=cost,
        attacks=attacks,
        attack_ivs=attack_ivs,
    )
    atomic_write_text(out / "report.md", md)
    return Report(markdown=out / "report.md", figures=tuple(figures))


def _attack_figure(
    plt: Any,
    attacks: Mapping[str, Sequence[str]],
    ivs: Mapping[str, Mapping[Cell, Interval]],
    styles: Mapping[str, SeriesStyle],
    out: Path,
    *,
    delta: str,
) -> Path:
    """One panel per attack metric (AUC, TPR, PSNR...) vs epsilon, one line per series."""
    cols = [
        c
        for name in sorted(attacks)
        for c in attacks[name]
        if not c.rsplit(":", 1)[-1].startswith(_SETUP_METRICS)
    ][:16]
    ncol = min(3, max(1, len(cols)))
    nrow = max(1, math.ceil(len(cols) / ncol))
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(5.6 * ncol, 4.4 * nrow), squeeze=False, layout="constrained"
    )
    for i, col in enumerate(cols):
        ax = axes[i // ncol][i % ncol]
        data: dict[str, dict[float, Interval]] = defaultdict(dict)
        for (_, series, a, e), iv in ivs[col].items():
            name = series if a is None else f"{series}, α = {a:g}"
            data[name][e] = iv
        styled = {n: styles.get(n.split(", α =")[0], SeriesStyle("0.3", "o")) for n in data}
        metric = col.rsplit(":", 1)[-1]
        refs: list[tuple[str, float, str]] = []
        if metric.startswith("auc"):
            refs.append(("chance (AUC 0.5)", 0.5, "--"))
        elif metric.startswith("tpr@"):
            try:
                fpr = float(metric[4:].split("fpr")[0])
                refs.append((f"chance (TPR = FPR = {fpr:g})", fpr, "--"))
            except ValueError:
                pass
        lo, hi = fraction_range(col)
        _eps_panel(
            ax,
            data,
            styled,
            title=col.removeprefix("attack:"),
            ylabel=metric,
            delta=delta,
            references=refs,
            ylim=(-0.02, 1.02) if lo is not None else None,
        )
    for k in range(len(cols), nrow * ncol):
        axes[k // ncol][k % ncol].axis("off")
    path = _save(fig, out / "attacks.png")
    plt.close(fig)
    return path


def _markdown(
    sweep_dir: Path,
    sweep: Mapping[str, Any],
    rows: Sequence[Row],
    layout: Layout,
    tasks: Sequence[str],
    *,
    cells: Mapping[str, Mapping[Cell, Mapping[int, float]]],
    ivs: Mapping[str, Mapping[Cell, Interval]],
    mt_rows: Sequence[Row],
    figures: Sequence[Path],
    out: Path,
    cost: Mapping[str, Mapping[str, Interval]],
    attacks: Mapping[str, Sequence[str]],
    attack_ivs: Mapping[str, Mapping[Cell, Interval]],
) -> str:
    manifests = _manifests(sweep_dir, rows)
    n_points = len({r["point_id"] for r in rows})
    total = len(sweep.get("points", [])) or n_points
    seeds = sorted({int(r["seed"]) for r in rows})
    versions = sorted(
        {json.dumps(m.get("versions", {}), sort_keys=True) for m in manifests.values()}
    )
    commits = sorted(
        {
            f"{m.get('git', {}).get('commit', 'unknown')}"
            + (" (uncommitted changes)" if m.get("git", {}).get("dirty") else "")
            for m in manifests.values()
        }
    )
    platforms = sorted(
        {json.dumps(m.get("platform", {}), sort_keys=True) for m in manifests.values()}
    )
    accountants = sorted({r["accountant"] for r in rows})
    axes = "; ".join(
        f"`{k}` = [{', '.join(str(x) for x in v)}]" for k, v in sweep.get("axes", {}).items()
    )
    baselines = ", ".join(b.get("name", "?") for b in sweep.get("baselines", [])) or "none"
    record = [r for r in rows if not is_client_level(r)]
    L: list[str] = [
        f"# Privacy-utility report: {sweep.get('name', sweep_dir.name)}",
        "",
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by "
        f"`privfed report {sweep_dir}` on {platform.node() or 'unknown host'}. "
        f"{n_points} of {total} points finished"
        + (
            ""
            if n_points == total
            else " (**incomplete sweep**: resume it with the same `privfed sweep` command)"
        )
        + ".",
        "",
        f"- sweep file: `{sweep.get('sweep_file', '?')}` (base config: `{sweep.get('base', '?')}`)",
        f"- swept: {axes}",
        f"- baselines: {baselines}",
        f"- series: named by the grid axes that vary ({', '.join(layout.series_fields) or 'none'})"
        " and by baseline name",
        f"- seeds: {seeds}; each cell is the mean over seeds, its 95% Student-t interval clipped "
        f"to the metric's range in brackets, and n = seeds; † marks n < {MIN_SEEDS} (indicative "
        "only; hollow markers in the figures)",
        "- accuracy: final-round accuracy on each client's held-out **test** split, averaged "
        "over clients (`mean_acc`); worst-10%: mean of the lowest 10% of clients. No model "
        "selection is done here (the validation-split accuracy is `val_mean_acc` in results.csv)",
        "- majority baseline: each client predicts the most frequent label of its own training "
        "data (the label prior), averaged over clients and seeds, per panel (it depends on the "
        "partition, hence on α); Bayes-optimal accuracies are given where the data source "
        "knows them (generated data)",
        "- ε: record-level target budget per client and data source at δ = "
        f"{', '.join(sorted({r['delta'] for r in record})) or '—'} (accountant: "
        f"{', '.join(accountants)}); ε = ∞ is non-private training and the reference of the "
        "cost columns (non-private minus private accuracy of the same series, paired by seed); "
        "client-level guarantees are tabulated apart",
        f"- results table: `{RESULTS_CSV}` ({len(rows)} rows; one per point and task, with "
        "config hash and seed)",
    ]
    if layout.alpha and layout.alpha_group:
        L.append(
            f"- `{layout.alpha}` partitions group `{layout.alpha_group}` only: the other groups' "
            "tasks are shown once (their numbers do not depend on it)"
        )
    warned = sorted({r["run_dir"] for r in rows if int(r.get("privacy_warnings") or 0) > 0})
    if warned:
        L.append(
            f"- **privacy warnings** in {len(warned)} point(s) (e.g. a delta within a factor 10 "
            f"of 1/n): read `warnings` in their privacy.json ({', '.join(warned[:3])}"
            + (", ..." if len(warned) > 3 else "")
            + ")"
        )
    L += [
        "",
        "## Provenance",
        "",
        f"- commit(s): {', '.join(f'`{c}`' for c in commits)}",
    ]
    for v in versions:
        L.append(f"- versions: {', '.join(f'{k} {x}' for k, x in json.loads(v).items())}")
    for p in platforms:
        L.append(f"- platform: {', '.join(f'{k}={x}' for k, x in json.loads(p).items() if x)}")
    L += ["", "## Figures", ""]
    for fpath in figures:
        rel = fpath.relative_to(out) if fpath.is_relative_to(out) else fpath
        L.append(f"![{fpath.stem}]({rel})")
        L.append("")
    L += ["## Mean client test accuracy", ""]
    for t in tasks:
        L += [
            f"### {t}",
            "",
            *_accuracy_table(rows, layout, cells["acc"], ivs["acc"], t, with_cost=True),
            "",
        ]
    L += ["## Worst-10% client test accuracy", ""]
    for t in tasks:
        L += [
            f"### {t}",
            "",
            *_accuracy_table(rows, layout, cells["worst"], ivs["worst"], t, with_cost=False),
            "",
        ]
    L += [
        "## Multi-task average and worst task",
        "",
        "Per point: the average over tasks of the mean client accuracy, and its minimum over "
        "tasks; then mean and interval over seeds. The average's baseline is the average of "
        "the tasks' majority baselines.",
        "",
    ]
    for t in ("multi-task average", "worst task"):
        L += [
            f"### {t}",
            "",
            *_accuracy_table(mt_rows, layout, cells["mt"], ivs["mt"], t, with_cost=True),
            "",
        ]
    L += _client_level_section(rows, layout, tasks)
    L += _privacy_section(rows, layout)
    if attacks:
        L += _attack_section(attacks, attack_ivs)
    if cost:
        L += [
            "## Cost",
            "",
            "Per participation (one client in one round), mean and interval over the points of "
            "each series: bytes of the real messages (the task a client downloads, the update or "
            "secure-aggregation messages it uploads; the same on every backend), the client's "
            "local compute (CPU seconds of training and encoding) and the driver's wall time "
            "per round. Times are measurements on the machine named above, under its load "
            "(`costs.jsonl` of each point has them per round and client).",
            "",
            "| series | KiB down | KiB up | compute (ms) | round (s) |",
            "|---|---|---|---|---|",
        ]
        for series, m in sorted(cost.items()):
            L.append(
                f"| {series} | {m['down'].format()} | {m['up'].format()} | "
                f"{m['compute'].format()} | {m['round'].format()} |"
            )
        L.append("")
    return "\n".join(L)


def _client_level_section(rows: Sequence[Row], layout: Layout, tasks: Sequence[str]) -> list[str]:
    """Accuracy of the client-level DP points, with their guarantee (not on the ε axis)."""
    client_rows = [r for r in rows if is_client_level(r)]
    if not client_rows:
        return []
    cells = collect(client_rows, layout, "mean_acc", client_level=True)
    ivs = _intervals(cells, "mean_acc")
    keys = sorted({(k[1], k[2]) for k in ivs}, key=lambda x: (x[0], x[1] or 0.0))
    guarantees: dict[str, tuple[set[str], list[float], set[str], set[str]]] = defaultdict(
        lambda: (set(), [], set(), set())
    )
    for r in client_rows:
        g = guarantees[layout.series(r)]
        g[0].add(f"{r['client_dp']} {_fmt_eps(f(r['client_target_epsilon']))}")
        g[1].append(f(r["client_epsilon"]))
        g[2].add(r["client_delta"])
        g[3].add(_fmt_eps(f(r["target_epsilon"])))
    head = ["series", "α", "client-level mode, target ε", "client ε (max)", "client δ", "record ε"]
    head += list(tasks)
    L = [
        "## Client-level DP points",
        "",
        "Points with client-level DP (the unit is a client's whole contribution) are not drawn on "
        "the record-level ε axis; their guarantee is in its own columns.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for s, a in keys:
        modes, eps, deltas, rec = guarantees[s]
        mx = max(eps) if eps else math.nan
        cells_row = [
            s,
            "—" if a is None else f"{a:g}",
            ", ".join(sorted(modes)),
            f"{mx:.3f}" if math.isfinite(mx) else _fmt_eps(mx),
            ", ".join(sorted(deltas)),
            ", ".join(sorted(rec)),
        ]
        for t in tasks:
            found = [iv for k, iv in ivs.items() if k[0] == t and k[1] == s and k[2] in (a, None)]
            cells_row.append(found[0].format() if found else "—")
        L.append("| " + " | ".join(cells_row) + " |")
    return [*L, ""]


def _privacy_section(rows: Sequence[Row], layout: Layout) -> list[str]:
    """Record-level and client-level (epsilon, delta) per series and target, separate columns."""
    spent: dict[tuple[str, float, str], dict[str, Any]] = {}
    seen: set[tuple[str, str]] = set()
    for r in rows:
        if (r["point_id"], r["source"]) in seen:
            continue
        seen.add((r["point_id"], r["source"]))
        key = (layout.series(r), f(r["target_epsilon"]), r["source"])
        e = spent.setdefault(
            key, {"max": [], "mean": [], "delta": set(), "mode": set(), "ceps": [], "cdelta": set()}
        )
        e["max"].append(f(r["epsilon_max"]))
        e["mean"].append(f(r["epsilon_mean"]))
        e["delta"].add(r["delta"])
        mode = r.get("client_dp") or "off"
        e["mode"].add(mode)
        if mode != "off":
            e["ceps"].append(f(r.get("client_epsilon")))
            e["cdelta"].add(r.get("client_delta", ""))
    L = [
        "## Privacy guarantees",
        "",
        "Per series and record-level target: the record-level ε spent per data source (largest "
        "over clients and points; mean over clients, averaged over points) at its δ, and the "
        "client-level guarantee (largest guaranteed ε over the points) at its δ; — where a "
        "level is not used.",
        "",
        "| series | source | record target ε | record ε spent (max) | record ε spent (mean) | "
        "record δ | client-level mode | client ε | client δ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def num(v: float) -> str:
        return _fmt_eps(v) if math.isinf(v) else f"{v:.3f}"

    for (series, target, src), e in sorted(spent.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        mx = max(e["max"])
        mn = sum(e["mean"]) / len(e["mean"])
        ceps = max(e["ceps"]) if e["ceps"] else math.nan
        L.append(
            f"| {series} | {src} | {_fmt_eps(target)} | {num(mx)} | {num(mn)} | "
            f"{', '.join(sorted(e['delta']))} | {', '.join(sorted(e['mode']))} | "
            f"{num(ceps) if math.isfinite(ceps) or math.isinf(ceps) else '—'} | "
            f"{', '.join(sorted(d for d in e['cdelta'] if d)) or '—'} |"
        )
    return [*L, ""]


def _attack_section(
    attacks: Mapping[str, Sequence[str]], ivs: Mapping[str, Mapping[Cell, Interval]]
) -> list[str]:
    """One table per attack: each metric per series against record-level epsilon."""
    L = [
        "## Attacks",
        "",
        "Each attack's metrics (`attack:NAME:METRIC` columns of results.csv, one value per "
        "point) per series against the record-level target ε; chance is AUC 0.5 and TPR = FPR. "
        "An attack's failure is not a privacy guarantee: read it next to ε.",
        "",
    ]
    for name in sorted(attacks):
        cols = attacks[name]
        eps = sorted({k[3] for c in cols for k in ivs[c]}, key=lambda e: (not math.isinf(e), -e))
        L += [f"### {name}", ""]
        head = ["series", "metric", *(f"ε = {_fmt_eps(e)}" for e in eps)]
        L += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        series = sorted(
            {(k[1], k[2]) for c in cols for k in ivs[c]}, key=lambda x: (x[0], x[1] or 0)
        )
        for s, a in series:
            label = s if a is None else f"{s}, α = {a:g}"
            for c in cols:
                cells_row = [label, c.split(":", 2)[2]]
                for e in eps:
                    iv = ivs[c].get(("", s, a, e))
                    cells_row.append(iv.format() if iv else "—")
                L.append("| " + " | ".join(cells_row) + " |")
        L.append("")
    return L


def _costs(rows: Sequence[Row], layout: Layout) -> dict[str, dict[str, Interval]]:
    """Series -> interval over its points of the per-participation costs (empty if none)."""
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seen: set[str] = set()
    for r in rows:
        if r["point_id"] in seen or not r.get("bytes_down_per_participation"):
            continue
        seen.add(r["point_id"])
        m = per[layout.series(r)]
        m["down"].append(f(r["bytes_down_per_participation"]) / 1024)
        m["up"].append(f(r["bytes_up_per_participation"]) / 1024)
        m["compute"].append(f(r["compute_s_per_participation"]) * 1000)
        m["round"].append(f(r["round_s"]))
    return {s: {k: interval(v, lower=0.0) for k, v in m.items()} for s, m in per.items()}


def _cost_figure(
    plt: Any,
    cost: Mapping[str, Mapping[str, Interval]],
    styles: Mapping[str, SeriesStyle],
    out: Path,
) -> Path:
    """Bars of bytes per participation (down, up) and compute per participation, per series."""
    names = sorted(cost)
    xs = list(range(len(names)))
    fig, axes = plt.subplots(
        1, 2, figsize=(max(6.4, 1.1 * len(names) + 3), 4.4), layout="constrained"
    )
    width = 0.4
    for k, (key, label, hatch) in enumerate((("down", "download", ""), ("up", "upload", "//"))):
        axes[0].bar(
            [x + (k - 0.5) * width for x in xs],
            [cost[n][key].mean for n in names],
            width,
            yerr=[_half(cost[n][key]) for n in names],
            label=label,
            color=[styles[n].colour for n in names],
            hatch=hatch,
            edgecolor="0.2",
        )
    axes[0].set_ylabel("KiB per participation")
    axes[0].set_title("communication per client and round (plain: download, hatched: upload)")
    axes[0].legend(fontsize=8)
    axes[1].bar(
        xs,
        [cost[n]["compute"].mean for n in names],
        0.6,
        yerr=[_half(cost[n]["compute"]) for n in names],
        color=[styles[n].colour for n in names],
    )
    axes[1].set_ylabel("ms CPU per participation")
    axes[1].set_title("local compute per client and round")
    for ax in axes:
        ax.set_xticks(xs)
        ax.set_xticklabels(names, rotation=20, fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    path = _save(fig, out / "cost.png")
    plt.close(fig)
    return path


def _half(iv: Interval) -> float:
    if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return 0.0
    return (iv.high - iv.low) / 2.0

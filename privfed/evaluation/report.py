"""Reports of a sweep directory: ``report.md`` with mean ± 95% CI tables and PNG plots.

``privfed report DIR`` reads ``DIR/results.csv`` (and ``sweep.json``, the point manifests and
their last ``metrics.jsonl`` line for per-client numbers) and writes into ``DIR``:

* ``acc_vs_epsilon_<task>.png``: mean client test accuracy vs target epsilon, one line per
  algorithm (and other swept field), mean over seeds with a 95% Student-t band; epsilon on a log
  axis, the non-private point (epsilon = inf) drawn as a separate marker at the right;
* ``acc_vs_alpha.png``: accuracy vs Dirichlet alpha at one epsilon (if alpha was swept);
* ``multitask.png``: the multi-task average and the worst task vs epsilon;
* ``client_spread.png``: the per-client accuracy distribution at one epsilon;
* ``cost.png``: per participation, the bytes each client downloads and uploads and its local
  compute time, per series (from each point's ``costs.jsonl``);
* ``report.md`` linking them, with tables of mean ± 95% CI over seeds and the provenance
  (versions, commits, config hashes, seeds) read from the run manifests.

Accuracies are final-round test accuracies on each client's held-out test split; no model
selection is done (``val_mean_acc`` in ``results.csv`` is the validation-split number).
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
from privfed.evaluation.metrics import MeanCI, mean_ci
from privfed.evaluation.sweep import RESULTS_CSV, SWEEP_JSON, read_results
from privfed.io import atomic_write_bytes, atomic_write_text, read_json, read_jsonl, storage_error

__all__ = ["Report", "make_report"]

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


def _f(v: str) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _fmt_eps(e: float) -> str:
    return "∞" if math.isinf(e) else f"{e:g}"


@dataclass(frozen=True)
class _Layout:
    """Which results.csv columns play which role."""

    alpha: str | None
    series: tuple[str, ...]


def _layout(rows: Sequence[Row], swept: Sequence[str]) -> _Layout:
    alpha = next((f for f in swept if f.endswith("partition.alpha")), None)
    series = tuple(
        f
        for f in swept
        if f not in ("dp.target_epsilon", "seed", alpha) and len({r[f] for r in rows}) > 1
    )
    if "federation.algorithm" not in series and "algorithm" in (rows[0] if rows else {}):
        series = ("algorithm", *series)
    return _Layout(alpha=alpha, series=series)


def _series_name(row: Row, layout: _Layout) -> str:
    parts = []
    for f in layout.series:
        if f in ("federation.algorithm", "algorithm"):
            parts.append(row[f])
        else:
            parts.append(f"{f.split('.')[-1]}={row[f]}")
    return ", ".join(parts) or "all"


def _alpha(row: Row, layout: _Layout) -> float:
    return _f(row[layout.alpha]) if layout.alpha else 0.0  # 0.0: alpha not swept


def _group(
    rows: Sequence[Row], layout: _Layout, value: str
) -> dict[tuple[str, str, float, float], MeanCI]:
    """(task, series, alpha, epsilon) -> mean ± CI over seeds of column ``value``."""
    acc: dict[tuple[str, str, float, float], list[float]] = defaultdict(list)
    for r in rows:
        acc[
            (r["task"], _series_name(r, layout), _alpha(r, layout), _f(r["target_epsilon"]))
        ].append(_f(r[value]))
    return {k: mean_ci(v) for k, v in acc.items()}


def _multitask_rows(rows: Sequence[Row]) -> list[dict[str, str]]:
    """One pseudo-row per point: task ``average`` (mean over tasks) and ``worst task``."""
    by_point: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        by_point[r["point_id"]].append(r)
    out: list[dict[str, str]] = []
    for prs in by_point.values():
        accs = [_f(r["mean_acc"]) for r in prs]
        base = dict(prs[0])
        out.append({**base, "task": "multi-task average", "mean_acc": repr(sum(accs) / len(accs))})
        out.append({**base, "task": "worst task", "mean_acc": repr(min(accs))})
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


def _eps_panel(
    ax: Any,
    data: Mapping[str, Mapping[float, MeanCI]],
    *,
    title: str,
    ylabel: str,
    delta: str,
    majority: float | None = None,
) -> None:
    all_eps = sorted({e for d in data.values() for e in d})
    pos, finite = _eps_positions(all_eps)
    for i, (name, pts) in enumerate(sorted(data.items())):
        color = f"C{i % 10}"
        fin = sorted(e for e in pts if math.isfinite(e))
        if fin:
            xs = [pos[e] for e in fin]
            ys = [pts[e].mean for e in fin]
            lo = [pts[e].mean - _hw(pts[e]) for e in fin]
            hi = [pts[e].mean + _hw(pts[e]) for e in fin]
            ax.errorbar(
                xs,
                ys,
                yerr=[
                    [y - a for y, a in zip(ys, lo, strict=True)],
                    [b - y for y, b in zip(ys, hi, strict=True)],
                ],
                fmt="o-",
                color=color,
                capsize=3,
                label=name,
            )
            if len(xs) > 1:
                ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
        if math.inf in pts:
            m = pts[math.inf]
            ax.errorbar(
                [pos[math.inf]],
                [m.mean],
                yerr=[[_hw(m)], [_hw(m)]],
                fmt="D",
                color=color,
                capsize=4,
                markersize=7,
                label=None if fin else name,
            )
    if math.inf in pos and finite:
        ax.axvline(math.sqrt(finite[-1] * pos[math.inf]), color="0.6", linestyle=":", linewidth=1)
    if majority is not None and math.isfinite(majority):
        ax.axhline(
            majority, color="0.4", linestyle="--", linewidth=1, label="majority-class baseline"
        )
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)  # accuracy; CI bands are clipped to the possible range
    ticks = [pos[e] for e in sorted(pos)]
    ax.set_xticks(ticks)
    ax.set_xticklabels(
        [_fmt_eps(e) if math.isfinite(e) else "∞\n(non-private)" for e in sorted(pos)]
    )
    ax.minorticks_off()
    ax.set_xlabel(f"target ε per client and data source (δ = {delta}, log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def _hw(m: MeanCI) -> float:
    return m.half_width if math.isfinite(m.half_width) else 0.0


def _save(fig: Any, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


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


def _table(
    groups: Mapping[tuple[str, str, float, float], MeanCI], task: str, layout: _Layout
) -> list[str]:
    keys = [k for k in groups if k[0] == task]
    eps = sorted({k[3] for k in keys})
    rowkeys = sorted({(k[1], k[2]) for k in keys}, key=lambda x: (x[0], x[1]))
    head = ["series"] + (["α"] if layout.alpha else []) + [f"ε = {_fmt_eps(e)}" for e in eps]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for series, a in rowkeys:
        cells = [series] + ([f"{a:g}"] if layout.alpha else [])
        for e in eps:
            m = groups.get((task, series, a, e))
            cells.append("—" if m is None else f"{m} (n={m.n})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


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
    header = list(rows[0])
    swept = sweep.get("swept_fields") or header[2 : header.index("seed")]
    layout = _layout(rows, swept)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    eps_all = sorted({_f(r["target_epsilon"]) for r in rows})
    alphas = sorted({_alpha(r, layout) for r in rows})
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
            f"{', '.join(f'{a:g}' for a in alphas)}"
        )
    delta = ", ".join(sorted({r["delta"] for r in rows}))
    acc = _group(rows, layout, "mean_acc")
    worst = _group(rows, layout, "worst_acc")
    mt_rows = _multitask_rows(rows)
    mt = _group(mt_rows, layout, "mean_acc")
    majority: dict[str, float] = {}
    for t in tasks:
        vals = [_f(r["majority_acc"]) for r in rows if r["task"] == t]
        majority[t] = sum(vals) / len(vals)
    figures: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(out, exc, action="create the report directory") from None
    ylabel = "mean client test accuracy (fraction)"

    def alpha_title(a: float) -> str:
        return f", α = {a:g}" if layout.alpha else ""

    # accuracy vs epsilon, one figure per task, one panel per alpha
    for t in tasks:
        fig, axes = plt.subplots(
            1, len(alphas), figsize=(6.4 * len(alphas), 4.6), squeeze=False, layout="constrained"
        )
        for ax, a in zip(axes[0], alphas, strict=True):
            data: dict[str, dict[float, MeanCI]] = defaultdict(dict)
            for (task, series, aa, e), m in acc.items():
                if task == t and (aa == a or not layout.alpha):
                    data[series][e] = m
            _eps_panel(
                ax,
                data,
                title=f"{t}: accuracy vs privacy{alpha_title(a)}",
                ylabel=ylabel,
                delta=delta,
                majority=majority[t],
            )
        figures.append(_save(fig, out / f"acc_vs_epsilon_{_safe(t)}.png"))
        plt.close(fig)

    # multi-task average and worst task vs epsilon
    fig, axes = plt.subplots(
        2, len(alphas), figsize=(6.4 * len(alphas), 9), squeeze=False, layout="constrained"
    )
    for col, a in enumerate(alphas):
        for rowi, t in enumerate(["multi-task average", "worst task"]):
            data = defaultdict(dict)
            for (task, series, aa, e), m in mt.items():
                if task == t and (aa == a or not layout.alpha):
                    data[series][e] = m
            _eps_panel(
                axes[rowi][col],
                data,
                title=f"{t} over {len(tasks)} tasks{alpha_title(a)}",
                ylabel=f"{t} of mean client accuracy (fraction)",
                delta=delta,
            )
    figures.append(_save(fig, out / "multitask.png"))
    plt.close(fig)

    # accuracy vs alpha at the chosen epsilon
    if layout.alpha and len(alphas) > 1:
        ncol = min(3, len(tasks))
        nrow = math.ceil(len(tasks) / ncol)
        fig, axes = plt.subplots(
            nrow, ncol, figsize=(5.2 * ncol, 4.2 * nrow), squeeze=False, layout="constrained"
        )
        for i, t in enumerate(tasks):
            ax = axes[i // ncol][i % ncol]
            series_pts: dict[str, dict[float, MeanCI]] = defaultdict(dict)
            for (task, series, aa, e), m in acc.items():
                if task == t and e == chosen_eps:
                    series_pts[series][aa] = m
            for j, (name, pts) in enumerate(sorted(series_pts.items())):
                xs = sorted(pts)
                ys = [pts[x].mean for x in xs]
                ax.plot(xs, ys, "o-", color=f"C{j % 10}", label=name)
                ax.fill_between(
                    xs,
                    [pts[x].mean - _hw(pts[x]) for x in xs],
                    [pts[x].mean + _hw(pts[x]) for x in xs],
                    color=f"C{j % 10}",
                    alpha=0.2,
                    linewidth=0,
                )
            ax.axhline(
                majority[t],
                color="0.4",
                linestyle="--",
                linewidth=1,
                label="majority-class baseline",
            )
            ax.set_xscale("log")
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(
                f"Dirichlet α of {layout.alpha.split('.')[1]} (log scale; smaller = more skewed)"
            )
            ax.set_ylabel(ylabel)
            ax.set_title(f"{t} at ε = {_fmt_eps(chosen_eps)}")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        for k in range(len(tasks), nrow * ncol):
            axes[k // ncol][k % ncol].axis("off")
        figures.append(_save(fig, out / "acc_vs_alpha.png"))
        plt.close(fig)

    # per-client spread at the chosen epsilon (and alpha)
    spread: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seen_points: set[str] = set()
    for r in rows:
        if _f(r["target_epsilon"]) != chosen_eps or r["point_id"] in seen_points:
            continue
        if layout.alpha and _alpha(r, layout) != chosen_alpha:
            continue
        seen_points.add(r["point_id"])
        metrics = read_jsonl(sweep_dir / r["run_dir"] / "metrics.jsonl")
        if not metrics:
            continue
        for task, clients in metrics[-1].get("per_client", {}).items():
            spread[task][_series_name(r, layout)].extend(float(v) for v in clients.values())
    if spread:
        ncol = min(3, len(spread))
        nrow = math.ceil(len(spread) / ncol)
        fig, axes = plt.subplots(
            nrow, ncol, figsize=(5.2 * ncol, 4.2 * nrow), squeeze=False, layout="constrained"
        )
        for i, t in enumerate(tasks):
            ax = axes[i // ncol][i % ncol]
            names = sorted(spread[t])
            ax.boxplot([spread[t][n] for n in names], showmeans=True)
            ax.set_xticks(range(1, len(names) + 1))
            ax.set_xticklabels(names, rotation=20, fontsize=8)
            ax.set_ylabel("client test accuracy (fraction)")
            ax.set_title(
                f"{t}: per-client accuracy, ε = {_fmt_eps(chosen_eps)}"
                + (f", α = {chosen_alpha:g}" if layout.alpha else ""),
                fontsize=10,
            )
            ax.grid(True, axis="y", alpha=0.3)
        for k in range(len(tasks), nrow * ncol):
            axes[k // ncol][k % ncol].axis("off")
        fig.suptitle(
            "Per-client accuracy spread (all clients of all seeds; box: quartiles, triangle: mean)",
            fontsize=10,
        )
        figures.append(_save(fig, out / "client_spread.png"))
        plt.close(fig)

    cost = _costs(rows, layout)
    if cost:
        figures.append(_cost_figure(plt, cost, out))

    md = _markdown(
        sweep_dir,
        sweep,
        rows,
        layout,
        tasks,
        acc,
        worst,
        mt,
        figures,
        out,
        chosen_eps=chosen_eps,
        chosen_alpha=chosen_alpha,
        cost=cost,
    )
    atomic_write_text(out / "report.md", md)
    return Report(markdown=out / "report.md", figures=tuple(figures))


def _markdown(
    sweep_dir: Path,
    sweep: Mapping[str, Any],
    rows: Sequence[Row],
    layout: _Layout,
    tasks: Sequence[str],
    acc: Mapping[tuple[str, str, float, float], MeanCI],
    worst: Mapping[tuple[str, str, float, float], MeanCI],
    mt: Mapping[tuple[str, str, float, float], MeanCI],
    figures: Sequence[Path],
    out: Path,
    *,
    chosen_eps: float,
    chosen_alpha: float,
    cost: Mapping[str, Mapping[str, MeanCI]] | None = None,
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
        f"- seeds: {seeds}; every number is a mean over seeds ± the half-width of a 95% "
        "Student-t interval (n = seeds); a single seed has no interval",
        "- accuracy: final-round accuracy on each client's held-out **test** split, averaged "
        "over clients (`mean_acc`); worst-10%: mean of the lowest 10% of clients. No model "
        "selection is done (the validation-split accuracy is `val_mean_acc` in results.csv)",
        f"- ε: record-level target budget per client and data source at δ = "
        f"{', '.join(sorted({r['delta'] for r in rows}))} (accountant: {', '.join(accountants)}); "
        "ε = ∞ is non-private training; client-level guarantees are listed separately under "
        "Privacy spent",
        f"- results table: `{RESULTS_CSV}` ({len(rows)} rows; one per point and task, with "
        "config hash and seed)",
    ]
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
        L += [f"### {t}", "", *_table(acc, t, layout), ""]
    L += ["## Worst-10% client test accuracy", ""]
    for t in tasks:
        L += [f"### {t}", "", *_table(worst, t, layout), ""]
    L += [
        "## Multi-task average and worst task",
        "",
        "Per point: the average over tasks of the mean client accuracy, and its minimum over "
        "tasks; then mean ± 95% CI over seeds.",
        "",
    ]
    for t in ("multi-task average", "worst task"):
        L += [f"### {t}", "", *_table(mt, t, layout), ""]
    L += [
        "## Privacy spent",
        "",
        "ε spent per data source: the largest over clients (max over the points with that "
        "target) and the mean over clients (averaged over those points).",
        "",
        "| target ε | δ | source | ε spent (max over clients) | ε spent (mean over clients) |",
        "|---|---|---|---|---|",
    ]
    spent: dict[tuple[float, str, str], list[tuple[float, float]]] = defaultdict(list)
    seen: set[tuple[str, str]] = set()
    for r in rows:
        if (r["point_id"], r["source"]) in seen:
            continue
        seen.add((r["point_id"], r["source"]))
        spent[(_f(r["target_epsilon"]), r["delta"], r["source"])].append(
            (_f(r["epsilon_max"]), _f(r["epsilon_mean"]))
        )
    for (e, d, src), vals in sorted(spent.items()):
        mx = max(v[0] for v in vals)
        mn = sum(v[1] for v in vals) / len(vals)
        L.append(
            f"| {_fmt_eps(e)} | {d} | {src} | {_fmt_eps(mx) if math.isinf(mx) else f'{mx:.3f}'}"
            f" | {_fmt_eps(mn) if math.isinf(mn) else f'{mn:.3f}'} |"
        )
    client: dict[tuple[str, float, str], list[float]] = defaultdict(list)
    seen_points: set[str] = set()
    for r in rows:
        mode = r.get("client_dp", "off") or "off"
        if mode == "off" or r["point_id"] in seen_points:
            continue
        seen_points.add(r["point_id"])
        key = (mode, _f(r["client_target_epsilon"]), r["client_delta"])
        client[key].append(_f(r["client_epsilon"]))
    if client:
        L += [
            "",
            "Client-level guarantees (unit: one client), largest guaranteed ε over the points:",
            "",
            "| mode | target ε | δ | ε guaranteed (max over points) |",
            "|---|---|---|---|",
        ]
        for (mode, e, d), guaranteed in sorted(client.items()):
            mx = max(guaranteed)
            L.append(
                f"| {mode} | {_fmt_eps(e)} | {d} | "
                f"{_fmt_eps(mx) if math.isinf(mx) else f'{mx:.3f}'} |"
            )
    L.append("")
    if cost:
        L += [
            "## Cost",
            "",
            "Per participation (one client in one round), mean ± 95% CI over the points of each "
            "series: bytes of the real messages (the task a client downloads, the update or "
            "secure-aggregation messages it uploads; the same on every backend), the client's "
            "local compute (CPU seconds of training and encoding) and the driver's wall time "
            "per round. Times are measurements on the machine named above, under its load "
            "(`costs.jsonl` of each point has them per round and client).",
            "",
            "| series | KiB down | KiB up | compute (ms) | round (s) |",
            "|---|---|---|---|---|",
        ]
        for series, m in sorted(cost.items()):
            L.append(f"| {series} | {m['down']} | {m['up']} | {m['compute']} | {m['round']} |")
        L.append("")
    return "\n".join(L)


def _costs(rows: Sequence[Row], layout: _Layout) -> dict[str, dict[str, MeanCI]]:
    """Series -> mean ± CI over its points of the per-participation costs (empty if none)."""
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seen: set[str] = set()
    for r in rows:
        if r["point_id"] in seen or not r.get("bytes_down_per_participation"):
            continue
        seen.add(r["point_id"])
        m = per[_series_name(r, layout)]
        m["down"].append(_f(r["bytes_down_per_participation"]) / 1024)
        m["up"].append(_f(r["bytes_up_per_participation"]) / 1024)
        m["compute"].append(_f(r["compute_s_per_participation"]) * 1000)
        m["round"].append(_f(r["round_s"]))
    return {s: {k: mean_ci(v) for k, v in m.items()} for s, m in per.items()}


def _cost_figure(plt: Any, cost: Mapping[str, Mapping[str, MeanCI]], out: Path) -> Path:
    """Bars of bytes per participation (down, up) and compute per participation, per series."""
    names = sorted(cost)
    xs = list(range(len(names)))
    fig, axes = plt.subplots(
        1, 2, figsize=(max(6.4, 1.1 * len(names) + 3), 4.4), layout="constrained"
    )
    width = 0.4
    for k, (key, label) in enumerate((("down", "download"), ("up", "upload"))):
        axes[0].bar(
            [x + (k - 0.5) * width for x in xs],
            [cost[n][key].mean for n in names],
            width,
            yerr=[_hw(cost[n][key]) for n in names],
            label=label,
            color=f"C{k}",
        )
    axes[0].set_ylabel("KiB per participation")
    axes[0].set_title("communication per client and round")
    axes[0].legend(fontsize=8)
    axes[1].bar(
        xs,
        [cost[n]["compute"].mean for n in names],
        0.6,
        yerr=[_hw(cost[n]["compute"]) for n in names],
        color="C2",
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

"""Regenerate docs/results/privacy-utility.md: accuracy against record-level epsilon.

Runs (or resumes) the sweep declared in a config file, builds the report, generates the
conclusions (paired tests across seeds, :mod:`privfed.evaluation.claims`) and writes
``RESULTS/PAGE.md`` with its figures and ``results.csv`` in ``RESULTS/PAGE/``. Everything numeric
comes from the privfed library; this script only wires it together.

A page under docs/results/ is written only from a clean checkout, and only from points computed
at that commit (the page names it); ``--allow-dirty`` runs on a dirty tree but then writes
outside docs/results/ only.

    python experiments/privacy_utility.py                                  # headline grid
    python experiments/privacy_utility.py --config experiments/configs/smoke.toml --grid smoke \\
        --out sweeps/smoke --results sweeps/smoke/page --page privacy-utility-smoke --allow-dirty
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Args:
    """Arguments of this script (each is also a --flag)."""

    config: str = "experiments/configs/privacy_utility.toml"
    """Sweep file (relative to the repository root)."""
    grid: str = "headline"
    """Label printed at the top of the results page: 'headline', 'smoke' or a name."""
    out: str = ""
    """Sweep directory; empty means sweeps/<sweep name>. Reuse it to resume."""
    workers: int = 2
    """Cores the sweep may use (points run in parallel processes)."""
    backend: str = "serial"
    """Where each run's clients train: serial (in the point's process) or process."""
    run_workers: int = 0
    """Worker processes per run with --backend process (0: all of --workers)."""
    epsilon: float = float("inf")
    """Target epsilon of the per-client spread and accuracy-vs-alpha plots."""
    results: str = "docs/results"
    """Where the results page and its figure directory go."""
    page: str = "privacy-utility"
    """Name of the results page (PAGE.md) and of its figure directory."""
    title: str = "Privacy-utility results"
    """Title of the results page."""
    commands: str = "experiments/regenerate_all.sh"
    """Shell file listing the exact commands of every page."""
    claims_tasks: str = "multi-task average"
    """Comma-separated tasks the conclusions cover ('' for every task)."""
    test: str = "t"
    """Paired test of the conclusions: t (paired t-test) or wilcoxon (signed-rank)."""
    allow_dirty: bool = False
    """Run on a checkout with uncommitted changes; the page must then go outside docs/results."""


def parse_args(argv: list[str] | None = None) -> Args:
    """The script's arguments, one ``--flag`` per field of :class:`Args`."""
    from privfed.evaluation.provenance import parse_dataclass_args

    return parse_dataclass_args(Args, argv, description=__doc__.splitlines()[0])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    from privfed.backends import BackendOptions
    from privfed.errors import PrivfedError
    from privfed.evaluation.pages import PageClaims, open_page, write_page
    from privfed.evaluation.provenance import SweepRun, provenance_lines
    from privfed.evaluation.sweep import load_sweep, run_sweep

    # 0. may this checkout write the page? (a page names the commit its numbers come from)
    opened = open_page(
        args.results, args.page, repo=REPO, allow_dirty=args.allow_dirty, script="privacy_utility"
    )
    if opened is None:
        return 2
    page, figures, state = opened

    # 1. the sweep: one run directory per point, results.csv (resumes what is already done)
    spec = load_sweep(args.config)
    out = Path(args.out or f"sweeps/{spec.name}")
    t0 = time.perf_counter()
    backend = BackendOptions(backend=args.backend, workers=args.run_workers)
    result = run_sweep(spec, out, workers=args.workers, backend=backend)
    sweep_s = time.perf_counter() - t0
    if result.failed:
        print(f"{len(result.failed)} points failed; fix them and run again", file=sys.stderr)
        return 1

    # 2. the page: provenance, conclusions from paired tests, then the report's tables
    grid_note = (
        "**Smoke grid**: a few rounds and 2 seeds to exercise the whole pipeline; these are "
        "NOT results (the headline page is docs/results/privacy-utility.md)."
        if args.grid == "smoke"
        else "**Headline grid.**"
        if args.grid == "headline"
        else f"**Grid: {args.grid}.**"
    )
    run = SweepRun(
        args.config, len(result.points), len(result.ran), len(result.skipped), sweep_s / 60
    )
    head = [
        grid_note,
        "",
        *provenance_lines(
            script="experiments/privacy_utility.py",
            argv=list(argv if argv is not None else sys.argv[1:]),
            sweeps=[run],
            workers=args.workers,
            commands_file=args.commands,
            state=state,
        ),
    ]
    eps = {p.config.dp.target_epsilon for p in result.points}
    private = sorted((e for e in eps if math.isfinite(e)), reverse=True)
    tasks = tuple(t.strip() for t in args.claims_tasks.split(",") if t.strip())
    try:
        write_page(
            sweep_dir=out,
            page=page,
            figures=figures,
            title=args.title,
            head=head,
            state=state,
            publish=not args.allow_dirty,
            epsilon=args.epsilon,
            claims=PageClaims(epsilons=tuple(private), tasks=tasks, test=args.test),
        )
    except PrivfedError as exc:
        print(f"privacy_utility: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {page} and its figures in {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

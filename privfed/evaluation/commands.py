"""CLI sub-commands of the evaluation module (``sweep``, ``report``, ``reproduce``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_sweep(args: argparse.Namespace) -> int:
    """``privfed sweep SWEEP.toml [--out DIR] [--workers N] [--backend B [--run-workers K]]``."""
    from privfed.backends import BackendError, BackendOptions, default_workers
    from privfed.evaluation.sweep import load_sweep, run_sweep

    spec = load_sweep(args.sweep)
    out = Path(args.out) if args.out else Path("sweeps") / spec.name
    name = args.backend or ("ray" if args.address else "serial")
    if args.run_workers and name != "process":
        raise BackendError("--run-workers needs --backend process")
    workers = args.workers or default_workers()
    backend = BackendOptions(backend=name, workers=args.run_workers, address=args.address)
    result = run_sweep(spec, out, workers=workers, backend=backend, progress=not args.quiet)
    print(
        f"results: {result.results_csv} ({len(result.points) - len(result.failed)} of "
        f"{len(result.points)} points finished; ran {len(result.ran)}, "
        f"already done {len(result.skipped)})"
    )
    if result.failed:
        print(
            f"{len(result.failed)} point(s) failed: {', '.join(result.failed)}; fix the cause "
            f"and run the same command again (finished points are kept)"
        )
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """``privfed report DIR [--epsilon E] [--alpha A]``."""
    from privfed.evaluation.report import make_report

    report = make_report(args.dir, epsilon=args.epsilon, alpha=args.alpha, out_dir=args.out)
    print(f"report: {report.markdown}")
    for png in report.figures:
        print(f"  figure: {png}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``privfed reproduce RUN_DIR [--out DIR]``: exit 0 if identical, 1 if anything differs."""
    from privfed.evaluation.reproduce import reproduce

    result = reproduce(args.run_dir, out_dir=args.out, progress=not args.quiet)
    print(result.render())
    return 0 if result.identical else 1


def register(sub: argparse._SubParsersAction) -> None:
    """Add the evaluation sub-commands to the ``privfed`` parser."""
    p = sub.add_parser("sweep", help="run a grid of experiments (resumable) into one directory")
    p.add_argument("sweep", help="sweep TOML file ([sweep] table: base, set, grid, baselines)")
    p.add_argument("--out", help="sweep directory (default: sweeps/NAME); reuse it to resume")
    from privfed.cli import add_backend_options

    add_backend_options(p, sweep=True)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("report", help="report.md and PNG plots of a sweep directory")
    p.add_argument("dir", help="sweep directory holding results.csv")
    p.add_argument(
        "--epsilon",
        type=float,
        default=None,
        help="target epsilon for the per-client spread and accuracy-vs-alpha plots "
        "(default: inf if swept, else the largest)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=None,
        help="Dirichlet alpha for the per-client spread plot (default: the smallest)",
    )
    p.add_argument("--out", help="where report.md and the PNGs go (default: DIR)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("reproduce", help="re-run a run directory and diff every metric")
    p.add_argument("run_dir", help="a run directory (or a sweep point directory)")
    p.add_argument("--out", help="fresh directory for the re-run (default: RUN_DIR.reproduce-N)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reproduce)

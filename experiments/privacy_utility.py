"""Regenerate the privacy-utility table and figures in docs/results/.

Runs (or resumes) the sweep declared in a config file, builds the report, and writes
``docs/results/privacy-utility.md`` (tables, command, machine, versions, date) with its figures
in ``docs/results/privacy-utility/``. Everything numeric comes from the privfed library; this
script only wires it together.

    python experiments/privacy_utility.py                                  # headline grid
    python experiments/privacy_utility.py --config experiments/configs/smoke.toml --grid smoke
"""

from __future__ import annotations

import os
import re
import shutil
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
    """Label printed at the top of the results page: 'headline' or 'smoke'."""
    out: str = ""
    """Sweep directory; empty means sweeps/<sweep name>. Reuse it to resume."""
    workers: int = 2
    """Points run in parallel processes."""
    epsilon: float = float("inf")
    """Target epsilon of the per-client spread and accuracy-vs-alpha plots."""
    results: str = "docs/results"
    """Where the results page and its figure directory go."""
    page: str = "privacy-utility"
    """Name of the results page (PAGE.md) and of its figure directory."""
    title: str = "Privacy-utility results"
    """Title of the results page."""
    commands: str = ""
    """Shell file listing the exact commands (empty: smoke.sh or privacy_utility.sh by grid)."""


def parse_args(argv: list[str] | None = None) -> Args:
    """The script's arguments, one ``--flag`` per field of :class:`Args`."""
    from privfed.evaluation.provenance import parse_dataclass_args

    return parse_dataclass_args(Args, argv, description=__doc__.splitlines()[0])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)

    # 1. the sweep: one run directory per point, results.csv (resumes what is already done)
    from privfed.evaluation.sweep import load_sweep, run_sweep

    spec = load_sweep(args.config)
    out = Path(args.out or f"sweeps/{spec.name}")
    t0 = time.perf_counter()
    result = run_sweep(spec, out, workers=args.workers)
    sweep_s = time.perf_counter() - t0
    if result.failed:
        print(f"{len(result.failed)} points failed; fix them and run again", file=sys.stderr)
        return 1

    # 2. the report: tables (mean ± 95% CI over seeds) and PNG figures
    from privfed.evaluation.report import make_report

    fig_dir = Path(args.results) / args.page
    if fig_dir.exists():
        shutil.rmtree(fig_dir)
    report = make_report(out, epsilon=args.epsilon, out_dir=fig_dir)
    shutil.copyfile(out / "results.csv", fig_dir / "results.csv")  # every row: config hash, seed
    body = report.markdown.read_text(encoding="utf-8")
    report.markdown.unlink()  # its content goes into privacy-utility.md below
    body = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", rf"![\1]({args.page}/\2)", body)
    body = body.replace("`results.csv`", f"[`results.csv`]({args.page}/results.csv)")
    body = body.split("\n", 1)[1]  # drop the report's own title

    # 3. the results page: what was run, where, with what, then the report
    from privfed.evaluation.provenance import SweepRun, provenance_lines

    grid_note = (
        "**Smoke grid** — a few rounds and 2 seeds to exercise the whole pipeline; these are "
        "NOT the headline numbers. Regenerate the headline grid with "
        "`python experiments/privacy_utility.py`."
        if args.grid == "smoke"
        else "**Headline grid.**"
        if args.grid == "headline"
        else f"**Grid: {args.grid}.**"
    )
    commands = args.commands or (
        f"experiments/benchmarks/{'smoke' if args.grid == 'smoke' else 'privacy_utility'}.sh"
    )
    head = [
        f"# {args.title}",
        "",
        grid_note,
        "",
        *provenance_lines(
            script="experiments/privacy_utility.py",
            argv=list(argv if argv is not None else sys.argv[1:]),
            sweeps=[
                SweepRun(
                    args.config,
                    len(result.points),
                    len(result.ran),
                    len(result.skipped),
                    sweep_s / 60,
                )
            ],
            workers=args.workers,
            commands_file=commands,
        ),
        "",
    ]
    page = Path(args.results) / f"{args.page}.md"
    page.write_text("\n".join(head) + body, encoding="utf-8")
    print(f"wrote {page} and {len(report.figures)} figures in {fig_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

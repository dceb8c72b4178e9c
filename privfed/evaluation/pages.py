"""Assemble a results page from a sweep directory: provenance, conclusions, report, figures.

The experiment scripts (``experiments/*.py``) run their sweeps and call :func:`write_page`,
which checks that every point was computed at the page's commit, writes the report's figures
and ``results.csv`` into the page's directory, and puts the page together: title, provenance,
the generated conclusions (:mod:`privfed.evaluation.claims`), then the report's tables.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from privfed.evaluation.provenance import (
    Checkout,
    ProvenanceError,
    check_points,
    dirty_points,
)

__all__ = ["PageClaims", "open_page", "page_paths", "point_problems", "write_page"]


@dataclass(frozen=True)
class PageClaims:
    """Which conclusions a page states.

    Attributes:
        epsilons: record-level epsilons of the panels concluded about.
        tasks: tasks (``multi-task average`` included) concluded about; empty: all.
        test: ``t`` or ``wilcoxon``.
        level: family-wise level.
    """

    epsilons: tuple[float, ...]
    tasks: tuple[str, ...] = ()
    test: str = "t"
    level: float = 0.05


def page_paths(results: str | Path, page: str) -> tuple[Path, Path]:
    """The page file and its figure directory: ``RESULTS/PAGE.md`` and ``RESULTS/PAGE/``."""
    return Path(results) / f"{page}.md", Path(results) / page


def open_page(
    results: str | Path, page: str, *, repo: Path, allow_dirty: bool, script: str
) -> tuple[Path, Path, Checkout] | None:
    """The page, its figure directory and the checkout, if this checkout may write them.

    Prints why not (to stderr, prefixed with ``script``) and returns None otherwise: see
    :func:`privfed.evaluation.provenance.check_destination`.
    """
    import sys

    from privfed.errors import PrivfedError
    from privfed.evaluation.provenance import check_destination

    path, figures = page_paths(results, page)
    try:
        state = check_destination([path, figures], repo=repo, allow_dirty=allow_dirty)
    except PrivfedError as exc:
        print(f"{script}: {exc}", file=sys.stderr)
        return None
    return path, figures, state


def point_problems(sweep_dir: str | Path, state: Checkout) -> list[str]:
    """Why the points of ``sweep_dir`` cannot be published as computed at ``state.commit``."""
    from privfed.evaluation.sweep import RESULTS_CSV, read_results

    rows = read_results(Path(sweep_dir) / RESULTS_CSV)
    problems = check_points(rows, commit=state.commit)
    dirty = dirty_points(sweep_dir, rows)
    if dirty:
        problems.append(
            f"{len(dirty)} point(s) ran from a checkout with uncommitted changes (e.g. "
            f"{dirty[0]}): delete them and run again from a clean commit"
        )
    return problems


def write_page(
    *,
    sweep_dir: str | Path,
    page: Path,
    figures: Path,
    title: str,
    head: Sequence[str],
    state: Checkout,
    publish: bool,
    epsilon: float | None = None,
    claims: PageClaims | None = None,
    sections: Sequence[str] = (),
) -> Path:
    """Write ``page`` and its figure directory from a finished sweep.

    Args:
        sweep_dir: the sweep directory (results.csv, sweep.json, points).
        page: the page file.
        figures: the page's figure directory (replaced).
        title: the page's title.
        head: lines after the title (the provenance block, the setup).
        state: the checkout the page names.
        publish: the page goes to docs/results: every point must come from ``state.commit``
            on a clean tree.
        epsilon: the epsilon of the per-client spread and accuracy-vs-alpha plots.
        claims: the conclusions to generate (None: none).
        sections: markdown lines between the head and the conclusions (setup, selection).

    Raises:
        ProvenanceError: ``publish`` and some point comes from another commit or a dirty tree.
    """
    from privfed.evaluation.claims import conclusions
    from privfed.evaluation.report import make_report
    from privfed.evaluation.results import layout_of
    from privfed.evaluation.sweep import RESULTS_CSV, SWEEP_JSON, read_results
    from privfed.io import read_json

    problems = point_problems(sweep_dir, state)
    if problems and publish:
        raise ProvenanceError(f"refusing to write {page}: " + "; ".join(problems))
    sweep_dir = Path(sweep_dir)
    if figures.exists():
        shutil.rmtree(figures)
    report = make_report(sweep_dir, epsilon=epsilon, out_dir=figures)
    shutil.copyfile(sweep_dir / RESULTS_CSV, figures / RESULTS_CSV)
    body = report.markdown.read_text(encoding="utf-8")
    report.markdown.unlink()
    rel = figures.name
    body = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", rf"![\1]({rel}/\2)", body)
    body = body.replace(f"`{RESULTS_CSV}`", f"[`{RESULTS_CSV}`]({rel}/{RESULTS_CSV})")
    body = "## Report\n" + body.split("\n", 1)[1]  # the report's own title
    lines = [f"# {title}", "", *head, ""]
    if problems:
        lines += ["**Not publishable:** " + "; ".join(problems), ""]
    lines += list(sections)
    if claims is not None:
        rows = read_results(sweep_dir / RESULTS_CSV)
        try:
            sweep = read_json(sweep_dir / SWEEP_JSON)
        except (OSError, ValueError):
            sweep = {}
        layout = layout_of(rows, sweep if isinstance(sweep, dict) else {})
        found = conclusions(
            rows,
            layout,
            epsilons=list(claims.epsilons),
            tasks=list(claims.tasks) or None,
            test=claims.test,
            level=claims.level,
        )
        lines += ["## Conclusions", "", *found.markdown()]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text("\n".join(lines) + body, encoding="utf-8")
    return page

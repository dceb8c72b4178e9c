"""Provenance of results pages: one clean commit, named on the page, for every number on it.

Every page under ``docs/results/`` is written by one script in ``experiments/`` (listed with its
exact command in ``experiments/regenerate_all.sh``), and the page names the commit it was made
from. So a script

* refuses to write into ``docs/results/`` from a checkout with uncommitted changes
  (:func:`check_destination`): the commit named on the page would not be the code that ran;
* refuses to publish points that were computed at another commit, or from a dirty tree
  (:func:`check_points`): a resumed sweep directory from an older checkout is not this commit's
  result;
* with ``--allow-dirty`` may run on a dirty tree, but then only writes *outside*
  ``docs/results/`` (to try a script; smoke runs write to ``sweeps/``).

:func:`provenance_lines` is the block at the top of every page; :func:`parse_dataclass_args`
turns a script's argument dataclass into flags.
"""

from __future__ import annotations

import os
import platform
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TypeVar

from privfed.errors import PrivfedError

__all__ = [
    "RESULTS_DIR",
    "Checkout",
    "ProvenanceError",
    "SweepRun",
    "check_destination",
    "check_points",
    "checkout",
    "parse_dataclass_args",
    "provenance_lines",
]

#: Where the published results pages live, relative to the repository root.
RESULTS_DIR = Path("docs") / "results"


class ProvenanceError(PrivfedError):
    """A results page would claim a commit its numbers do not come from."""


@dataclass(frozen=True)
class Checkout:
    """The state of the repository a script runs from.

    Attributes:
        commit: ``git rev-parse HEAD`` (``unknown`` outside a git checkout).
        changes: ``git status --porcelain`` lines: modified, staged and untracked files that
            are not ignored (empty: clean).
    """

    commit: str
    changes: tuple[str, ...]

    @property
    def clean(self) -> bool:
        """A known commit and no uncommitted change."""
        return self.commit != "unknown" and not self.changes


def checkout(repo: str | Path) -> Checkout:
    """The commit of ``repo`` and its uncommitted changes (untracked files included)."""
    from privfed.repro import git_state

    state = git_state(repo, untracked=True)
    if state is None:
        return Checkout("unknown", ())
    return Checkout(state[0], state[1])


def _inside_results(path: Path, repo: Path) -> bool:
    results = (repo / RESULTS_DIR).resolve()
    target = (path if path.is_absolute() else repo / path).resolve()
    return target == results or target.is_relative_to(results)


def check_destination(
    pages: Iterable[str | Path], *, repo: str | Path, allow_dirty: bool
) -> Checkout:
    """May a script write ``pages`` (files or directories) from this checkout?

    Args:
        pages: every file and directory the script will write.
        repo: the repository root.
        allow_dirty: the script's ``--allow-dirty`` flag.

    Returns:
        The checkout (its commit goes on the page).

    Raises:
        ProvenanceError: a destination is under ``docs/results/`` and the checkout is not clean
            (or ``--allow-dirty`` was given), or the checkout is dirty and ``--allow-dirty`` was
            not given; the message names the files and what to do.
    """
    root = Path(repo)
    state = checkout(root)
    inside = [str(p) for p in pages if _inside_results(Path(p), root)]
    listing = ", ".join(c[3:] for c in state.changes[:5]) + (
        ", ..." if len(state.changes) > 5 else ""
    )
    if inside and allow_dirty:
        raise ProvenanceError(
            f"--allow-dirty writes only outside {RESULTS_DIR}/, but this run would write "
            f"{', '.join(inside)}; give another destination (e.g. --results /tmp/pages) or drop "
            "--allow-dirty and run from a clean commit"
        )
    if inside and not state.clean:
        what = (
            "is not a git checkout"
            if state.commit == "unknown"
            else f"has uncommitted changes ({listing})"
        )
        raise ProvenanceError(
            f"refusing to write {', '.join(inside)}: the repository {what}, and a results page "
            "names the commit its numbers come from. Commit (or stash) the changes and run "
            "again; to try the script on this tree, write elsewhere with --allow-dirty"
        )
    if state.commit == "unknown" and not allow_dirty:
        raise ProvenanceError(
            "the repository is not a git checkout: a results page must record the commit it was "
            "made from; pass --allow-dirty to write a page outside docs/results/ anyway"
        )
    if state.changes and not allow_dirty:
        raise ProvenanceError(
            f"the repository has uncommitted changes ({listing}); run from a clean commit, or "
            "pass --allow-dirty to write a page outside docs/results/ that says so"
        )
    return state


def check_points(rows: Iterable[Mapping[str, str]], *, commit: str) -> list[str]:
    """Problems with publishing these results.csv rows as computed at ``commit``.

    Each point's ``commit`` column (from its manifest) must be ``commit``. Empty when all are.
    """
    others: dict[str, set[str]] = {}
    for r in rows:
        c = r.get("commit", "") or "unknown"
        if c != commit:
            others.setdefault(c, set()).add(r.get("point_id", "?"))
    return [
        f"{len(pts)} point(s) were computed at commit {c[:12]} (e.g. {sorted(pts)[0]}), not at "
        f"{commit[:12]}: delete those point directories (or the sweep directory) and run again"
        for c, pts in sorted(others.items())
    ]


def dirty_points(sweep_dir: str | Path, rows: Iterable[Mapping[str, str]]) -> list[str]:
    """Points of ``sweep_dir`` whose manifest says the code had uncommitted changes."""
    from privfed.io import read_json

    bad: set[str] = set()
    for r in rows:
        pid = r.get("point_id", "")
        if pid in bad:
            continue
        try:
            manifest = read_json(Path(sweep_dir) / r["run_dir"] / "manifest.json")
        except (OSError, ValueError, KeyError):
            bad.add(pid)
            continue
        git = manifest.get("git", {}) if isinstance(manifest, dict) else {}
        if not isinstance(git, dict) or git.get("dirty") is not False:
            bad.add(pid)
    return sorted(bad)


@dataclass(frozen=True)
class SweepRun:
    """One sweep an experiment script ran: its file, size and what this invocation did."""

    sweep_file: str
    points: int
    ran: int
    skipped: int
    minutes: float


def provenance_lines(
    *,
    script: str,
    argv: Sequence[str],
    sweeps: Sequence[SweepRun],
    workers: int,
    commands_file: str,
    state: Checkout | None = None,
) -> list[str]:
    """Markdown bullet lines: command, sweep files, machine, versions, commit, date.

    ``state`` is the checkout the script checked with :func:`check_destination`; a dirty one
    is said on the page (such a page never lands in ``docs/results/``).
    """
    from privfed.repro import git_commit, package_versions

    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    command = " ".join(["python", script, *(shlex.quote(a) for a in argv)])
    lines = [
        f"- command: `{command}` (the exact commands and seeds of every page are in "
        f"`{commands_file}`)",
    ]
    for s in sweeps:
        lines.append(
            f"- sweep file: `{s.sweep_file}` ({s.points} points; this invocation ran {s.ran} and "
            f"found {s.skipped} already finished, {s.minutes:.1f} min with {workers} workers)"
        )
    commit = state.commit if state is not None else str(git_commit().get("commit"))
    clean = state is None or state.clean
    lines += [
        f"- machine: {platform.node()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, Python {platform.python_version()}",
        f"- versions: {versions}",
        f"- commit: `{commit}`"
        + (
            " (clean checkout; every point was computed at this commit)"
            if clean
            else " **with uncommitted changes: not a publishable result**"
        ),
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
    ]
    return lines


A = TypeVar("A")


def parse_dataclass_args(cls: type[A], argv: Sequence[str] | None, *, description: str) -> A:
    """Parse ``--field value`` flags into the frozen argument dataclass ``cls`` of a script.

    Each field becomes a flag of its default's type (``--field_name`` and ``--field-name``); a
    boolean field defaulting to False is a switch (``--allow-dirty``). The experiment scripts
    declare their arguments as such a dataclass, first thing in the file.
    """
    import argparse
    import dataclasses

    parser = argparse.ArgumentParser(description=description)
    for fld in dataclasses.fields(cls):  # type: ignore[arg-type]
        names = [f"--{fld.name}"]
        if "_" in fld.name:
            names.append(f"--{fld.name.replace('_', '-')}")
        if isinstance(fld.default, bool):
            parser.add_argument(
                *names,
                dest=fld.name,
                action="store_false" if fld.default else "store_true",
                default=fld.default,
            )
        else:
            parser.add_argument(*names, dest=fld.name, type=type(fld.default), default=fld.default)
    return cls(**vars(parser.parse_args(list(argv) if argv is not None else None)))

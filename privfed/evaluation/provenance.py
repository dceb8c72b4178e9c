"""The provenance block at the top of every regenerated results page."""

from __future__ import annotations

import os
import platform
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar


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
) -> list[str]:
    """Markdown bullet lines: command, sweep files, machine, versions, commit, date."""
    from privfed.repro import git_commit, package_versions

    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    command = " ".join(["python", script, *(shlex.quote(a) for a in argv)])
    lines = [
        f"- command: `{command}` (the exact sweep/report commands and seeds are in "
        f"`{commands_file}`)",
    ]
    for s in sweeps:
        lines.append(
            f"- sweep file: `{s.sweep_file}` ({s.points} points; this invocation ran {s.ran} and "
            f"found {s.skipped} already finished, {s.minutes:.1f} min with {workers} workers)"
        )
    lines += [
        f"- machine: {platform.node()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} logical CPUs, Python {platform.python_version()}",
        f"- versions: {versions}",
        f"- commit: `{git_commit().get('commit')}`",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
    ]
    return lines


A = TypeVar("A")


def parse_dataclass_args(cls: type[A], argv: Sequence[str] | None, *, description: str) -> A:
    """Parse ``--field value`` flags into the frozen argument dataclass ``cls`` of a script.

    Each field becomes a flag of its default's type; the experiment scripts declare their
    arguments as such a dataclass, first thing in the file.
    """
    import argparse
    import dataclasses

    parser = argparse.ArgumentParser(description=description)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        parser.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
    return cls(**vars(parser.parse_args(list(argv) if argv is not None else None)))

"""Shared fixtures, and the checkout's entry points for a stale editable install."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from support import tiny

from privfed.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]


def _entry_points_overlay() -> None:
    """Expose the entry points pyproject.toml declares when the installed metadata lacks them.

    The library finds the built-in attacks and the ``attack``/``poison`` commands through entry
    points. An editable install made before they were declared does not list them until it is
    reinstalled (``pip install -e .``); CI installs afresh. So that the suite tests this
    checkout either way, this writes the metadata a reinstall would write into a temporary
    directory placed first on the path (for subprocesses too). It does nothing when the
    installed metadata already declares everything.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    groups = {**project.get("entry-points", {}), "console_scripts": project.get("scripts", {})}
    want = {(g, n, v) for g, eps in groups.items() for n, v in eps.items()}
    try:
        dist: metadata.Distribution | None = metadata.distribution("privfed")
    except metadata.PackageNotFoundError:
        dist = None
    have = {(ep.group, ep.name, ep.value) for ep in (dist.entry_points if dist else [])}
    if want <= have:
        return
    overlay = Path(tempfile.mkdtemp(prefix="privfed-entry-points-"))
    atexit.register(shutil.rmtree, overlay, ignore_errors=True)
    info = overlay / f"privfed-{project['version']}.dist-info"
    info.mkdir()
    meta = dist.read_text("METADATA") if dist is not None else None
    (info / "METADATA").write_text(
        meta or f"Metadata-Version: 2.1\nName: privfed\nVersion: {project['version']}\n"
    )
    lines = []
    for group, eps in groups.items():
        lines.append(f"[{group}]")
        lines.extend(f"{name} = {value}" for name, value in eps.items())
        lines.append("")
    (info / "entry_points.txt").write_text("\n".join(lines))
    sys.path.insert(0, str(overlay))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(overlay), os.environ.get("PYTHONPATH", "")) if p
    )


_entry_points_overlay()


@pytest.fixture
def tiny_config() -> ExperimentConfig:
    return tiny()

"""Run manifests: what a result needs to be regenerated (config, seed, versions, commit)."""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from privfed.config import ExperimentConfig, config_hash, to_dict

_PACKAGES = ("privfed", "torch", "opacus", "cryptography", "numpy", "scikit-learn", "scipy")


def package_versions() -> dict[str, str]:
    """Installed versions of privfed and the packages its numbers depend on."""
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


#: Where the page scripts write their outputs (relative to the checkout's top). Changes there
#: are products of a commit's code, never inputs to a number, so they do not make a checkout
#: dirty: ``experiments/regenerate_all.sh`` writes one page after another from one commit.
GENERATED_OUTPUTS = "docs/results"


def git_state(path: str | Path, *, untracked: bool) -> tuple[str, tuple[str, ...]] | None:
    """``(HEAD commit, git status --porcelain lines)`` of the checkout holding ``path``.

    Changes under :data:`GENERATED_OUTPUTS` are not listed.

    Args:
        path: a directory inside the checkout.
        untracked: list untracked (not ignored) files among the changes.

    Returns:
        None when ``path`` is not in a git checkout (or git is missing).
    """
    status = ["git", "status", "--porcelain"] + ([] if untracked else ["--untracked-files=no"])
    status += ["--", ":(top)", f":(top,exclude){GENERATED_OUTPUTS}"]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
        lines = subprocess.run(
            status, cwd=path, capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return commit, tuple(line for line in lines.splitlines() if line.strip())


@functools.lru_cache(maxsize=1)
def git_commit() -> dict[str, Any]:
    """The commit of the privfed source tree, and whether it had uncommitted changes.

    Read once per process (the first call), so a long run or a sweep worker reports the code it
    started with even if the checkout moves on meanwhile. Returns ``{"commit": "unknown"}``
    when privfed is not running from a git checkout.
    """
    state = git_state(Path(__file__).resolve().parent, untracked=False)
    if state is None:
        return {"commit": "unknown", "dirty": None}
    return {"commit": state[0], "dirty": bool(state[1])}


def timestamp() -> str:
    """The current UTC time as an ISO 8601 string to the second (``written_at``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_manifest(cfg: ExperimentConfig) -> dict[str, Any]:
    """The static part of ``manifest.json`` for a run of ``cfg``."""
    return {
        "format": 1,
        "name": cfg.name,
        "seed": cfg.seed,
        "config_hash": config_hash(cfg),
        "config": to_dict(cfg),
        "versions": package_versions(),
        "git": dict(git_commit()),
        "platform": {
            "system": platform.system(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "python": sys.version.split()[0],
        },
        "written_at": timestamp(),
    }

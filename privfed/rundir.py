"""The run directory: which files a run owns, where ``--out`` may point, checkpoint records.

A run directory holds ``manifest.json`` (written first, so its presence marks the directory as
privfed's), ``config.toml``, ``metrics.jsonl``, ``privacy.json``, ``attacks.json``,
``audit.json`` and ``checkpoint/state.ckpt`` (:mod:`privfed.checkpoint`). The manifest's
``checkpoint`` entry records the sha256 of the checkpoint file; everything that reads a
checkpoint back (``--resume``, attacks, ``privfed poison``, ``privfed reproduce``) checks the file
against it.

The checkpoint and its manifest entry are committed in three steps, so a process killed at any
moment leaves a pair that verifies: (1) the manifest records the new file's digest as
``pending_sha256`` next to the current one, (2) the checkpoint file is replaced atomically,
(3) the manifest records the new digest alone. A reader accepts ``sha256`` or
``pending_sha256``.

``--out`` rules (:func:`prepare_out_dir`): privfed writes only into a new directory, an empty
one, or one of its own runs; it never writes into a directory of other files (a user's
``config.toml`` is never replaced) and never over a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privfed.errors import CheckpointError
from privfed.io import read_json, remove_stale_temps, sha256_file, storage_error

CHECKPOINT = "checkpoint/state.ckpt"
"""The checkpoint file, relative to the run directory."""
LEGACY_CHECKPOINT = "checkpoint/state.pt"
"""Where privfed versions before the pickle-free format wrote a ``torch.save`` checkpoint."""
MANIFEST = "manifest.json"
RUN_FILES = (
    MANIFEST,
    "config.toml",
    "metrics.jsonl",
    "privacy.json",
    "attacks.json",
    "audit.json",
)
"""Files a run writes at the top of its directory."""

_SHA256 = re.compile(r"[0-9a-f]{64}")
# a temporary file of privfed.io.atomic_write for one of the run's files
_TEMP = re.compile(r"\.(" + "|".join(re.escape(n) for n in RUN_FILES) + r")\.[0-9a-f]+\.tmp")
_SHOWN = 5


def _entries(directory: Path) -> list[str]:
    """Names in ``directory`` (sub-directories with a trailing ``/``), sorted."""
    return sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir())


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """The run's ``manifest.json`` as a dict.

    Raises:
        CheckpointError: it is missing, unreadable, not JSON or not an object.
    """
    path = Path(run_dir) / MANIFEST
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} does not exist; {Path(run_dir)} is not a privfed run directory (or it is "
            "damaged): pass the directory a `privfed run` wrote"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"{path} cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise CheckpointError(
            f"{path} is not valid JSON ({exc}); the run directory is damaged"
        ) from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a JSON object; the run directory is damaged")
    return data


def is_run_dir(directory: str | Path) -> bool:
    """Whether ``directory`` was written by ``privfed run`` (has its manifest or checkpoint)."""
    d = Path(directory)
    if (d / CHECKPOINT).exists() or (d / LEGACY_CHECKPOINT).exists():
        return True
    try:
        manifest = read_manifest(d)
    except CheckpointError:
        return False
    return {"format", "config_hash", "seed"} <= set(manifest)


def has_progress(directory: str | Path) -> bool:
    """Whether the run in ``directory`` has finished a round (a checkpoint or metrics)."""
    d = Path(directory)
    return any((d / f).exists() for f in (CHECKPOINT, LEGACY_CHECKPOINT, "metrics.jsonl"))


def _describe(directory: Path) -> str:
    names = _entries(directory)
    shown = ", ".join(names[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{shown}{more}"


def check_out_dir(out: str | Path, *, resume: bool) -> None:
    """Check that a run may write into ``out``, without touching anything.

    A new run needs ``out`` to be missing, empty, or a privfed run that never finished a round
    (which it starts again; other files in it are left alone). ``--resume`` needs a privfed
    run directory.

    Raises:
        CheckpointError: ``out`` is a file, a directory of other files, a run that has
            progress (without ``resume``), or missing / not a run (with ``resume``).
    """
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise CheckpointError(
            f"--out {d} is an existing file, not a directory; privfed never overwrites a file: "
            "give --out a new directory name"
        )
    if resume:
        if not d.exists():
            raise CheckpointError(
                f"--out {d} does not exist, so there is no run to resume; check the path, or "
                "run without --resume to start a new run there"
            )
        if not (d / "config.toml").exists() or not is_run_dir(d):
            raise CheckpointError(
                f"{d} holds no privfed run (no manifest.json and config.toml); run without "
                "--resume to start one, or pass the directory of the run to continue"
            )
    elif d.exists():
        if is_run_dir(d):
            if has_progress(d):
                raise CheckpointError(
                    f"{d} already holds a run; pass --resume to continue it or choose another --out"
                )
        elif any(not _TEMP.fullmatch(n) for n in _entries(d)):
            raise CheckpointError(
                f"--out {d} is a directory that holds other files ({_describe(d)}) and no "
                "privfed run; privfed writes only into a new or empty directory so it never "
                "replaces your files: choose another --out (e.g. a new sub-directory)"
            )


def prepare_out_dir(out: str | Path, *, resume: bool) -> Path:
    """:func:`check_out_dir`, then create ``out`` and remove the run's stale temporary files.

    Temporary files are what a write interrupted by a kill leaves behind
    (:func:`privfed.io.remove_stale_temps`); only those of the run's own files are removed.

    Returns:
        ``out`` as a Path.

    Raises:
        CheckpointError: see :func:`check_out_dir`.
        StorageError: the directory cannot be created.
    """
    d = Path(out)
    check_out_dir(d, resume=resume)
    try:
        (d / "checkpoint").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(d, exc, action="create the run directory") from None
    remove_stale_temps(d, RUN_FILES)
    remove_stale_temps(d / "checkpoint", [Path(CHECKPOINT).name])
    return d


def checkpoint_record(
    *, sha256: str | None, rounds_done: int, pending_sha256: str | None = None
) -> dict[str, Any]:
    """The manifest's ``checkpoint`` entry.

    Args:
        sha256: digest of the checkpoint file now on disk (None before the first one).
        rounds_done: rounds that checkpoint holds.
        pending_sha256: digest of the checkpoint being written (step 1 of the commit).
    """
    from privfed.checkpoint import FORMAT

    return {
        "file": CHECKPOINT,
        "format": FORMAT,
        "sha256": sha256,
        "rounds_done": rounds_done,
        "pending_sha256": pending_sha256,
    }


def expected_checkpoint_sha256(
    run_dir: str | Path, manifest: Mapping[str, Any] | None = None
) -> tuple[str, ...]:
    """The digests the run's manifest accepts for its checkpoint file.

    Raises:
        CheckpointError: the manifest is missing or records no checkpoint digest.
    """
    d = Path(run_dir)
    m = read_manifest(d) if manifest is None else manifest
    rec = m.get("checkpoint")
    digests = []
    if isinstance(rec, Mapping):
        digests = [
            v
            for v in (rec.get("sha256"), rec.get("pending_sha256"))
            if isinstance(v, str) and _SHA256.fullmatch(v)
        ]
    if not digests:
        raise CheckpointError(
            f"{d / MANIFEST} records no sha256 for {CHECKPOINT}, so the checkpoint cannot be "
            "verified; the run directory is damaged or was written by an older privfed: start "
            "the run afresh in a new --out directory"
        )
    return tuple(digests)


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint read back and verified against its run's manifest.

    Attributes:
        path: the checkpoint file.
        sha256: its digest (one the manifest records).
        tree: its content (:func:`privfed.checkpoint.read_state`).
    """

    path: Path
    sha256: str
    tree: dict[str, Any]


def verify_checkpoint(run_dir: str | Path) -> VerifiedCheckpoint:
    """Read the checkpoint of ``run_dir`` and verify it against the run's manifest.

    Raises:
        CheckpointError: the checkpoint is missing, an old pickle, damaged, or not the one the
            manifest records.
    """
    from privfed.checkpoint import read_state

    d = Path(run_dir)
    path = d / CHECKPOINT
    if not path.exists() and (d / LEGACY_CHECKPOINT).exists():
        raise CheckpointError(
            f"{d / LEGACY_CHECKPOINT} is an old-style checkpoint written with torch.save (a "
            "pickle). Loading a pickle can run any code it contains, so privfed no longer "
            "reads these files: start the run afresh in a new --out directory, or use the "
            "privfed version that wrote it"
        )
    expected = expected_checkpoint_sha256(d)
    tree = read_state(path, expected_sha256=expected)
    digest = expected[0] if len(expected) == 1 else sha256_file(path)
    return VerifiedCheckpoint(path=path, sha256=digest, tree=tree)

"""``privfed reproduce RUN_DIR``: re-run a run directory from its own config and diff the numbers.

The re-run uses the run's resolved ``config.toml`` (checked against the ``config_hash`` in its
``manifest.json``) and goes into a fresh directory. Every value of every ``metrics.jsonl`` line
(per-task summaries and per-client accuracies) and of ``privacy.json`` (epsilon summary and every
client ledger) is compared exactly: on the same machine with the same versions nothing should
differ. Differences in versions, commit or platform are reported as notes, since they explain a
numeric difference but are not one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privfed.config import config_hash, load_config
from privfed.errors import ConfigError, PrivfedError
from privfed.io import read_json, read_jsonl
from privfed.rundir import CHECKPOINT, LEGACY_CHECKPOINT, verify_checkpoint

__all__ = ["ReproduceResult", "diff_json", "diff_run_dirs", "reproduce"]


class ReproduceError(PrivfedError):
    """A run directory cannot be reproduced as asked."""


@dataclass(frozen=True)
class ReproduceResult:
    """The outcome of a reproduction.

    Attributes:
        original: the run directory that was reproduced.
        rerun: the fresh directory of the re-run.
        differences: one line per differing value (empty: identical).
        notes: differences of environment (versions, commit, platform) between the two runs.
        compared: how many numbers and strings were compared.
    """

    original: Path
    rerun: Path
    differences: tuple[str, ...]
    notes: tuple[str, ...]
    compared: int

    @property
    def identical(self) -> bool:
        """Whether every compared value is equal."""
        return not self.differences

    def render(self, *, limit: int = 50) -> str:
        """A human-readable summary (at most ``limit`` difference lines)."""
        lines = [f"reproduced {self.original} -> {self.rerun}"]
        lines += [f"note: {n}" for n in self.notes]
        if self.identical:
            lines.append(
                f"identical: all {self.compared} values in metrics.jsonl and privacy.json match"
            )
        else:
            lines.append(f"DIFFERENT: {len(self.differences)} of {self.compared} values differ")
            lines += [f"  {d}" for d in self.differences[:limit]]
            if len(self.differences) > limit:
                lines.append(f"  ... and {len(self.differences) - limit} more")
        return "\n".join(lines)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b) and type(a) is type(b)


def diff_json(a: Any, b: Any, path: str = "") -> tuple[list[str], int]:
    """Every leaf where two JSON values differ, as ``path: a -> b`` lines.

    Returns:
        (difference lines, number of leaves compared).
    """
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        n = 0
        for k in sorted(set(a) | set(b), key=str):
            p = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{p}: missing in the original, {b[k]!r} in the re-run")
                n += 1
            elif k not in b:
                out.append(f"{p}: {a[k]!r} in the original, missing in the re-run")
                n += 1
            else:
                d, m = diff_json(a[k], b[k], p)
                out += d
                n += m
        return out, n
    if isinstance(a, list) and isinstance(b, list):
        out = []
        n = 0
        if len(a) != len(b):
            out.append(f"{path}: {len(a)} items in the original, {len(b)} in the re-run")
            n += 1
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            d, m = diff_json(x, y, f"{path}[{i}]")
            out += d
            n += m
        return out, n
    if _same(a, b):
        return [], 1
    return [f"{path}: {a!r} -> {b!r}"], 1


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except OSError:
        raise ReproduceError(f"{path} is missing; is this a finished run directory?") from None
    except ValueError as exc:
        raise ReproduceError(
            f"{path} is not valid JSON ({exc}); the run directory is damaged"
        ) from None


def _rounds(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"round {r.get('round')}": r for r in rows}


def diff_run_dirs(original: str | Path, rerun: str | Path) -> ReproduceResult:
    """Compare the numbers of two run directories of the same config.

    Args:
        original: the first run directory.
        rerun: the second.

    Returns:
        A :class:`ReproduceResult` listing every differing value of ``metrics.jsonl`` (by
        round) and ``privacy.json``.
    """
    a_dir, b_dir = Path(original), Path(rerun)
    a_rows = read_jsonl(a_dir / "metrics.jsonl")
    b_rows = read_jsonl(b_dir / "metrics.jsonl")
    if not a_rows:
        raise ReproduceError(f"{a_dir / 'metrics.jsonl'} is missing or empty")
    diffs, n = diff_json(_rounds(a_rows), _rounds(b_rows), "metrics.jsonl")
    d2, n2 = diff_json(
        _read_json(a_dir / "privacy.json"), _read_json(b_dir / "privacy.json"), "privacy.json"
    )
    diffs += d2
    notes: list[str] = []
    ma = _read_json(a_dir / "manifest.json")
    mb = _read_json(b_dir / "manifest.json")
    for key in ("versions", "git", "platform"):
        d, _ = diff_json(ma.get(key), mb.get(key), key)
        notes += d
    return ReproduceResult(
        original=a_dir, rerun=b_dir, differences=tuple(diffs), notes=tuple(notes), compared=n + n2
    )


def _fresh_dir(run_dir: Path) -> Path:
    for i in range(1, 10_000):
        cand = run_dir.parent / f"{run_dir.name}.reproduce-{i}"
        if not cand.exists():
            return cand
    raise ReproduceError(f"too many {run_dir.name}.reproduce-N directories; pass --out")


def reproduce(
    run_dir: str | Path, *, out_dir: str | Path | None = None, progress: bool = True
) -> ReproduceResult:
    """Re-run ``run_dir`` from its ``config.toml`` into a fresh directory and diff the numbers.

    Args:
        run_dir: a finished run directory (``privfed run`` or a sweep point).
        out_dir: where the re-run goes (must not exist or be empty; default
            ``RUN_DIR.reproduce-N`` next to it).
        progress: show the engine's progress bar.

    Returns:
        The comparison; ``identical`` is True when nothing differs.

    Raises:
        ReproduceError: if the directory is not a finished run, its config does not match its
            manifest's config hash, or ``out_dir`` already holds files.
        CheckpointError: the run's checkpoint is damaged or not the one its manifest records.
    """
    from privfed.engine import run_experiment

    run = Path(run_dir)
    if not (run / "config.toml").exists():
        raise ReproduceError(
            f"{run / 'config.toml'} is missing; RUN_DIR must be a run "
            "directory written by `privfed run` or `privfed sweep`"
        )
    manifest = _read_json(run / "manifest.json")
    if not isinstance(manifest, dict):
        raise ReproduceError(f"{run / 'manifest.json'} is not a JSON object; the run is damaged")
    if manifest.get("finished") is not True:
        raise ReproduceError(
            f"{run} is not finished (manifest.json finished=false); finish it "
            f"with `privfed run --resume --out {run}` first"
        )
    try:
        cfg = load_config(run / "config.toml")
    except ConfigError as exc:
        raise ReproduceError(
            f"{run / 'config.toml'} no longer loads with this privfed "
            f"(the run was made at commit {manifest.get('git', {}).get('commit', 'unknown')}): "
            f"{exc}"
        ) from None
    want = manifest.get("config_hash")
    got = config_hash(cfg)
    if got != want:
        raise ReproduceError(
            f"{run / 'config.toml'} hashes to {got} but manifest.json records {want}: either "
            "the file was edited after the run, or this privfed resolves configs differently "
            f"(the run was made at commit {manifest.get('git', {}).get('commit', 'unknown')}; "
            "check that commit out to reproduce it)"
        )
    # A checkpoint that is there must be the one the run wrote (sha256 in the manifest); the
    # re-run does not need it, so a copy of the run without it can still be reproduced.
    if (run / CHECKPOINT).exists() or (run / LEGACY_CHECKPOINT).exists():
        verify_checkpoint(run)
    out = Path(out_dir) if out_dir else _fresh_dir(run)
    if out.exists() and not out.is_dir():
        raise ReproduceError(f"--out {out} is a file; give a new or empty directory")
    if out.exists() and any(out.iterdir()):
        raise ReproduceError(f"{out} already holds files; give an empty or new --out")
    run_experiment(cfg, out, progress=progress, echo=lambda _m: None)
    return diff_run_dirs(run, out)

"""The run directory as an untrusted place: --out rules, checksummed checkpoints, disk errors,
stale temporary files, consistent permissions, an honest manifest after an interruption."""

from __future__ import annotations

import copy
import errno
import hashlib
import json
import os
import pickle
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import tiny

from privfed.checkpoint import read_state, write_state
from privfed.cli import main
from privfed.config import dump_config
from privfed.engine import Engine, run_experiment
from privfed.errors import CheckpointError, StorageError
from privfed.io import append_text, atomic_write_text, read_jsonl
from privfed.rundir import CHECKPOINT, LEGACY_CHECKPOINT, check_out_dir, verify_checkpoint


def _run(cfg: Any, out: Path, *, resume: bool = False) -> Any:
    return run_experiment(cfg, out, resume=resume, progress=False, echo=lambda m: None)


def _interrupted(out: Path, *, rounds: int = 3, stop: int = 2) -> Any:
    """A run of ``rounds`` rounds interrupted in round ``stop + 1``."""
    cfg = tiny(rounds=rounds)
    original = Engine.run_round

    def crash(self: Engine, r: int, state: Any, **kw: Any) -> Any:
        if r == stop:
            raise KeyboardInterrupt
        return original(self, r, state, **kw)

    Engine.run_round = crash  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            _run(cfg, out)
    finally:
        Engine.run_round = original  # type: ignore[method-assign]
    return cfg


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 3-round run."""
    out = tmp_path_factory.mktemp("ref") / "run"
    _run(tiny(rounds=3), out)
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-round run without DP (attacks and poisoning can replay it)."""
    out = tmp_path_factory.mktemp("fin") / "run"
    _run(tiny(rounds=1, dp={"target_epsilon": "inf"}), out)
    return out


def _tmp_files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*.tmp"))


# ------------------------------------------------------------------------------------- --out


def test_out_at_a_directory_of_user_files_is_refused_and_nothing_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    user = "# my experiment, with comments I care about\n" + dump_config(tiny())
    (tmp_path / "config.toml").write_text(user)
    (tmp_path / "notes.md").write_text("notes")
    before = sorted(tmp_path.iterdir())
    monkeypatch.chdir(tmp_path)
    assert main(["run", "config.toml", "--out", ".", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--out . is a directory that holds other files (config.toml, notes.md)" in err
    assert "choose another --out" in err
    assert (tmp_path / "config.toml").read_text() == user
    assert sorted(tmp_path.iterdir()) == before


def test_out_at_an_existing_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(dump_config(tiny()))
    target = tmp_path / "results"
    target.write_text("keep me")
    assert main(["run", str(cfg), "--out", str(target), "--quiet"]) == 2
    assert f"--out {target} is an existing file" in capsys.readouterr().err
    assert target.read_text() == "keep me"
    with pytest.raises(CheckpointError, match="is an existing file"):
        _run(tiny(), target)
    assert target.read_text() == "keep me"


def test_resume_of_a_missing_directory_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--resume", "--out", str(tmp_path / "nope"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not exist, so there is no run to resume" in err
    assert "invalid configuration" not in err
    assert not (tmp_path / "nope").exists()
    (tmp_path / "empty").mkdir()
    assert main(["run", "--resume", "--out", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "holds no privfed run" in capsys.readouterr().err


def test_out_rules(tmp_path: Path) -> None:
    check_out_dir(tmp_path / "new", resume=False)
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty", resume=False)
    # only temporary files of privfed's own writes: still empty for a run
    (tmp_path / "empty" / ".manifest.json.0a1b2c.tmp").write_text("x")
    check_out_dir(tmp_path / "empty", resume=False)
    crowd = tmp_path / "crowd"
    crowd.mkdir()
    for i in range(7):
        (crowd / f"f{i}").write_text("x")
    (crowd / "sub").mkdir()
    with pytest.raises(CheckpointError, match=r"\(f0, f1, f2, f3, f4 and 3 more\)"):
        check_out_dir(crowd, resume=False)
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / ".env").write_text("SECRET=1")
    with pytest.raises(CheckpointError, match=r"other files \(\.env\)"):
        check_out_dir(hidden, resume=False)
    with pytest.raises(CheckpointError, match="holds no privfed run"):
        check_out_dir(crowd, resume=True)


def test_a_started_run_without_progress_restarts_and_one_with_progress_is_refused(
    tmp_path: Path,
) -> None:
    out = tmp_path / "r"
    cfg = _interrupted(out, rounds=1, stop=0)
    assert (out / "manifest.json").exists() and not (out / CHECKPOINT).exists()
    (out / "mine.txt").write_text("kept")
    _run(cfg, out)  # nothing was computed: starting again is allowed
    assert (out / "mine.txt").read_text() == "kept"
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        _run(cfg, out)


# ---------------------------------------------------------------------------------- manifest


def test_interrupted_run_manifest_counts_checkpointed_rounds_and_its_checksum(
    tmp_path: Path, reference: Path
) -> None:
    out = tmp_path / "cut"
    cfg = _interrupted(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished"] is False and manifest["rounds_done"] == 2
    rec = manifest["checkpoint"]
    assert rec["rounds_done"] == 2 and rec["pending_sha256"] is None
    assert rec["file"] == CHECKPOINT and rec["format"] == 1
    assert rec["sha256"] == hashlib.sha256((out / CHECKPOINT).read_bytes()).hexdigest()
    _run(cfg, out, resume=True)
    done = json.loads((out / "manifest.json").read_text())
    assert done["finished"] is True and done["rounds_done"] == 3
    assert (
        done["checkpoint"]["sha256"] == hashlib.sha256((out / CHECKPOINT).read_bytes()).hexdigest()
    )
    assert (out / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()


def test_resume_verifies_the_checkpoint_against_the_manifest(
    tmp_path: Path, reference: Path
) -> None:
    out = tmp_path / "cut"
    cfg = _interrupted(out)
    path = out / CHECKPOINT
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x04
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=f"{path}.*damaged.*start the run afresh"):
        _run(cfg, out, resume=True)
    # a well-formed checkpoint that is not the one the run wrote (e.g. edited weights)
    path.write_bytes(good)
    tree = read_state(path)
    tree["globals"] = {k: v + 1 for k, v in tree["globals"].items()}
    write_state(path, tree)
    with pytest.raises(CheckpointError, match="manifest|recorded.*replaced or modified"):
        _run(cfg, out, resume=True)
    # a checkpoint whose digest matches a manifest that was edited with it: the tree checks
    manifest = json.loads((out / "manifest.json").read_text())
    tree = read_state(path)
    tree["globals"] = {k: v[:-1] for k, v in tree["globals"].items()}
    manifest["checkpoint"]["sha256"] = write_state(path, tree)
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"globals\.image must be a float32 vector of"):
        _run(cfg, out, resume=True)
    path.write_bytes(good)
    manifest["checkpoint"]["sha256"] = hashlib.sha256(good).hexdigest()
    (out / "manifest.json").write_text(json.dumps(manifest))
    _run(cfg, out, resume=True)
    assert (out / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()


class _Marker:
    """Unpickling this writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').write('pwned')"

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


@pytest.mark.parametrize("where", [CHECKPOINT, LEGACY_CHECKPOINT])
def test_a_crafted_pickle_checkpoint_never_runs_on_resume_attack_poison_or_reproduce(
    tmp_path: Path, finished: Path, where: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    marker = tmp_path / "PWNED"
    (run / CHECKPOINT).unlink()
    torch.save({"next_round": 1, "payload": _Marker(marker)}, run / where)
    assert pickle.loads(pickle.dumps(_Marker(marker))) is None and marker.exists()  # live
    marker.unlink()
    for argv in (
        ["run", "--resume", "--out", str(run), "--quiet"],
        ["attack", "mia-loss", "--run", str(run), "--seed", "0"],
        ["poison", "--run", str(run), "--seed", "0", "--rounds", "1"],
        ["reproduce", str(run), "--out", str(tmp_path / "again"), "--quiet"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "torch.save (a pickle)" in err or "old-style checkpoint" in err, (argv, err)
        assert not marker.exists(), argv


def test_attack_poison_and_reproduce_verify_the_checkpoint(
    tmp_path: Path, finished: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    data = bytearray((run / CHECKPOINT).read_bytes())
    data[-100] ^= 0xFF
    (run / CHECKPOINT).write_bytes(bytes(data))
    for argv in (
        ["attack", "mia-loss", "--run", str(run), "--seed", "0"],
        ["poison", "--run", str(run), "--seed", "0", "--rounds", "1"],
        ["reproduce", str(run), "--out", str(tmp_path / "again"), "--quiet"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert f"{run / CHECKPOINT} is not a valid privfed checkpoint" in err, (argv, err)
        assert "damaged" in err
    assert not (tmp_path / "again").exists()
    assert verify_checkpoint(finished).tree["next_round"] == 1


# ------------------------------------------------------------------------------- disk errors


@pytest.mark.parametrize("nth", [1, 3, 4, 5, 6])
def test_a_full_disk_mid_round_loses_nothing_and_leaves_no_temp(
    tmp_path: Path, reference: Path, monkeypatch: pytest.MonkeyPatch, nth: int
) -> None:
    """ENOSPC on the nth file written once the first checkpoint exists (round 1's manifest
    and privacy.json, then round 2's metrics line, manifest with the pending digest, checkpoint,
    manifest: whatever the order, a resume must accept what is on disk)."""
    out = tmp_path / "r"
    cfg = tiny(rounds=3)
    real_fsync = os.fsync
    count = {"n": 0}

    def fsync(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode) and (out / CHECKPOINT).exists():
            count["n"] += 1
            if count["n"] >= nth:
                raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(StorageError) as info:
        _run(cfg, out)
    monkeypatch.setattr(os, "fsync", real_fsync)
    msg = str(info.value)
    assert "no space left on the device" in msg and "free disk space" in msg
    assert str(out) in msg and f"privfed run --resume --out {out}" in msg
    assert "Nothing computed is lost" in msg
    assert _tmp_files(out) == []
    state = verify_checkpoint(out).tree
    assert state["next_round"] in (1, 2)
    assert all(isinstance(r, dict) for r in read_jsonl(out / "metrics.jsonl"))
    _run(cfg, out, resume=True)
    assert (out / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()
    ref = json.loads((reference / "privacy.json").read_text())["ledgers"]
    assert json.loads((out / "privacy.json").read_text())["ledgers"] == ref


def test_permission_denied_and_read_only_disks_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import privfed.io

    def denied(self: Path, *a: Any, **kw: Any) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    with monkeypatch.context() as m:
        m.setattr(Path, "mkdir", denied)
        with pytest.raises(StorageError, match=r"cannot create the run directory .*permission"):
            _run(tiny(rounds=1), tmp_path / "denied")

    def read_only(path: Path) -> Any:
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    with monkeypatch.context() as m:
        m.setattr(privfed.io, "_create_temp", read_only)
        with pytest.raises(StorageError) as info:
            _run(tiny(rounds=1), tmp_path / "ro")
    assert "the file system is read-only; choose a directory on a writable disk" in str(info.value)
    assert "manifest.json" in str(info.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_real_read_only_directory(tmp_path: Path) -> None:  # pragma: no cover - not root
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(StorageError, match="permission denied"):
            _run(tiny(rounds=1), ro / "run")
    finally:
        ro.chmod(0o700)


def test_interrupted_writes_leave_no_temp_and_stale_ones_are_removed(
    tmp_path: Path, reference: Path
) -> None:
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")

    def interrupted(fh: Any) -> None:
        fh.write(b"partial")
        raise KeyboardInterrupt

    from privfed.io import atomic_write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    assert target.read_text() == "old" and _tmp_files(tmp_path) == []
    # temp files a SIGKILL left behind are removed when the run continues; others are not
    out = tmp_path / "cut"
    cfg = _interrupted(out)
    stale = [out / "checkpoint" / ".state.ckpt.3f9a0c1b2d4e.tmp", out / ".manifest.json.0abc12.tmp"]
    for p in stale:
        p.write_bytes(b"half a file")
    (out / ".notes.tmp").write_text("user file")
    _run(cfg, out, resume=True)
    assert not any(p.exists() for p in stale)
    assert (out / ".notes.tmp").read_text() == "user file"


def test_a_failed_append_leaves_no_torn_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.jsonl"
    append_text(path, '{"round": 1}\n')

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match="m.jsonl: no space left"):
        append_text(path, '{"round": 2, "tasks": {}}\n')
    monkeypatch.undo()
    assert path.read_text() == '{"round": 1}\n'


# ------------------------------------------------------------------------------- permissions


def test_every_output_file_has_the_same_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "r"
        out.mkdir()  # an existing empty directory is fine
        _run(tiny(rounds=1), out)
    finally:
        os.umask(old)
    modes = {
        str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode)
        for p in out.rglob("*")
        if p.is_file()
    }
    assert {"config.toml", "manifest.json", "metrics.jsonl", "privacy.json", CHECKPOINT} <= set(
        modes
    )
    assert set(modes.values()) == {0o644}, modes
    old = os.umask(0o077)
    try:
        atomic_write_text(tmp_path / "a", "x")
        append_text(tmp_path / "b", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o600


def test_hostile_metrics_lines_do_not_break_a_resume(tmp_path: Path) -> None:
    out = tmp_path / "cut"
    cfg = _interrupted(out, rounds=2, stop=1)
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write('[1, 2]\n{"round": "x"}\n')
    summary = _run(cfg, out, resume=True)
    assert summary.rounds == 2
    assert [r["round"] for r in read_jsonl(out / "metrics.jsonl")] == [1, 2]
    np.testing.assert_equal(len(read_jsonl(out / "metrics.jsonl")), 2)


def _paths(node: Any, prefix: tuple[Any, ...] = (), depth: int = 0) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if depth < 5 and isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k), depth + 1)
    elif depth < 5 and isinstance(node, list):
        for i, v in enumerate(node[:3]):
            out += _paths(v, (*prefix, i), depth + 1)
    return out


_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(),
        st.text(max_size=5),
        st.sampled_from(["image", "text.next", "m", "v"]),
        st.builds(
            lambda n, dt: np.zeros(n, dtype=dt),
            st.integers(0, 300),
            st.sampled_from(["f4", "f8", "i8", "u1", "?"]),
        ),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def engine_and_tree(finished: Path) -> tuple[Engine, dict[str, Any]]:
    from privfed.config import load_config

    engine = Engine(load_config(finished / "config.toml"), finished, progress=False, echo=print)
    return engine, verify_checkpoint(finished).tree


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_a_tampered_tree_gives_a_state_or_a_checkpoint_error(
    engine_and_tree: tuple[Engine, dict[str, Any]], data: st.DataObject
) -> None:
    """Whatever one field of a checksum-consistent checkpoint is replaced by, resuming it gives
    a checked state or a CheckpointError naming the file, never another exception."""
    engine, tree = engine_and_tree
    tree = copy.deepcopy(tree)
    paths = _paths(tree)
    path = data.draw(st.sampled_from(paths))
    node = tree
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = data.draw(_values)
    try:
        engine.server.state_from_tree(tree, source="state.ckpt")
    except CheckpointError as exc:
        assert str(exc).startswith("state.ckpt")

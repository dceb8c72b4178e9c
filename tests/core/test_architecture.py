"""The seams hold: the library never imports its plug-ins, messages are checked bytes, a
participation depends on its task and runtime only, and each round is a record."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tomllib
from support import tiny, tiny_dict

from privfed.config import from_dict
from privfed.engine import Engine
from privfed.wire import WireError, pack, unpack

ROOT = Path(__file__).resolve().parents[2]


def test_the_library_never_imports_attacks() -> None:
    offenders = []
    for path in sorted((ROOT / "privfed").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(n == "attacks" or n.startswith("attacks.") for n in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, f"privfed imports the attacks package at {offenders}"


def test_every_library_module_imports_with_the_attacks_package_blocked() -> None:
    code = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "attacks" or name.startswith("attacks."):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import privfed
for m in pkgutil.walk_packages(privfed.__path__, "privfed."):
    if m.name != "privfed.backends.ray_backend" or importlib.util.find_spec("ray"):
        importlib.import_module(m.name)
print("ok")
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_builtin_attacks_are_declared_as_entry_points_and_found_through_them() -> None:
    from attacks.base import BUILTINS
    from privfed.attack_api import ATTACKS

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared["privfed.attacks"] == BUILTINS
    assert "attacks" in declared["privfed.commands"]
    for name in BUILTINS:
        cls = ATTACKS.get(name)  # loaded through the entry point group, not imported here
        assert cls.name == name
        assert ATTACKS.entry(name).description == cls.threat_model.describe()


# ---------------------------------------------------------------------------- messages
def test_messages_round_trip() -> None:
    tree = {
        "a": np.arange(5, dtype=np.float32),
        "b": [1, 2.5, None, True, "x", {"c": np.zeros((2, 0))}],
        "d": np.array([2**40, 3], dtype=np.uint64),
        "e": float("inf"),
        "f": np.ones((2, 3), dtype=bool),
    }
    back = unpack(pack(tree))
    assert back["b"][:5] == [1, 2.5, None, True, "x"] and back["e"] == float("inf")
    for k in ("a", "d", "f"):
        assert back[k].dtype == tree[k].dtype and np.array_equal(back[k], tree[k])
    back["a"][0] = 7.0  # arrays are writable copies, not views of the caller's message


@pytest.mark.parametrize(
    "mangle, match",
    [
        (lambda m: b"XXXX" + m[4:], "bad magic"),
        (lambda m: m[:20], "runs past the end"),
        (lambda m: m[:12] + b"}" + m[13:], "not valid JSON"),
        (lambda m: m.replace(b'"<f4"', b'"|O8"', 1), "dtype"),
        (lambda m: m.replace(b"[5]", b"[9]", 1), "cannot take"),
    ],
)
def test_malformed_messages_are_refused_with_the_reason(mangle, match) -> None:
    msg = pack({"v": np.arange(5, dtype=np.float32)})
    with pytest.raises(WireError, match=match):
        unpack(mangle(msg), what="test message")


def test_only_numbers_and_plain_values_can_be_packed() -> None:
    with pytest.raises(TypeError, match="dtype object"):
        pack({"v": np.array([object()])})
    with pytest.raises(TypeError, match="type set"):
        pack({"v": {1, 2}})


# ---------------------------------------------------------------------------- participation
def test_a_participation_is_a_function_of_its_task_and_runtime(tmp_path: Path) -> None:
    """Same task, fresh runtime or a trainer cache of one: the same participation."""
    from privfed.federation import Federation
    from privfed.participation import ClientRuntime, ClientSetup, TrainerCache, participate

    cfg = tiny()
    eng = Engine(cfg, tmp_path / "r", progress=False, echo=lambda _m: None)
    plan = eng.server.plan_tasks(0, eng.fresh_state())
    setup = ClientSetup(cfg, Federation(cfg))
    wide, narrow = TrainerCache(64), TrainerCache(1)
    for task in plan.tasks:
        a = participate(ClientRuntime(task.client, setup, wide), task)
        b = participate(ClientRuntime(task.client, setup, narrow), task)
        again = participate(ClientRuntime(task.client, setup, wide), task)
        for p in (b, again):
            assert np.array_equal(a.upload, p.upload)
            assert a.events == p.events
            assert a.personal.keys() == p.personal.keys()
    assert len(narrow) == 1
    # Opacus's per-sample gradients are released after training
    for _, tr in wide.items():
        assert all(getattr(p, "grad_sample", None) is None for p in tr.model.parameters())


def test_round_records_count_the_real_message_bytes(tmp_path: Path) -> None:
    from privfed.backends import Backend

    eng = Engine(tiny(), tmp_path / "r", progress=False, echo=lambda _m: None)
    state = eng.fresh_state()
    plan = eng.server.plan_tasks(0, state)
    sizes = {t.client: len(pack(t.message())) for t in plan.tasks}
    record = eng.run_round(0, state)
    assert isinstance(eng.backend, Backend)
    assert record.cohort == tuple(sorted(sizes)) and record.encoding == "plain"
    for c, cost in record.costs.items():
        assert cost.download == {"task": sizes[c]}
        # the float32 update plus a small header
        assert (
            4 * eng.server.layout.length
            < cost.upload["update"]
            < 4 * eng.server.layout.length + 200
        )
        assert cost.compute_seconds > 0
    # what the server observed is each plain update; the aggregate is their sum
    assert record.aggregate is not None
    total = sum(v.astype(np.float64) for v in record.observed.values())
    assert np.allclose(record.aggregate, total)
    assert record.events and all(c in record.cohort for c, _ in record.events)


def test_secure_aggregation_records_masked_vectors_and_bytes_per_phase(tmp_path: Path) -> None:
    data = tiny_dict()
    data["federation"]["aggregator"] = "secagg"
    eng = Engine(from_dict(data), tmp_path / "r", progress=False, echo=lambda _m: None)
    played = eng.play_round(0, eng.fresh_state(), keep_updates=True)
    record = played.record
    assert record.encoding == "secagg" and set(record.observed) == set(record.cohort)
    for c, seen in record.observed.items():
        assert seen.dtype.kind == "u"  # masked integers, not the update
        cost = record.costs[c]
        # the default (malicious) setting adds the consistency check between masking and unmasking
        phases = {"advertise_keys", "share_keys", "masked_input", "consistency_check", "unmask"}
        assert set(cost.upload) == phases
        assert {"task", "share_keys", "masked_input", "consistency_check", "unmask"} <= set(
            cost.download
        )
        assert cost.protocol_seconds > 0
    # the true updates come apart from the record, and the decoded sum matches them
    true = sum(v.astype(np.float64) for v in played.updates.values())
    assert np.allclose(record.aggregate, true, atol=len(played.updates) * 2.0**-15)

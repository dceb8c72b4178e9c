"""Hostile data files: pickles that would run code, non-finite or out-of-range values, headers
that lie about sizes, nesting bombs. Every one gives a DataError naming the file; none runs."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import pickletools
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privfed.data import load_source
from privfed.data.loaders import read_idx
from privfed.data.safepickle import ALLOWED_OPCODES, parse_pickle, read_pickle
from privfed.errors import DataError

# -------------------------------------------------------------------- audit: nothing is called

_AUDIT: dict[str, Any] = {"on": False, "events": []}
_WATCHED = ("pickle.find_class", "exec", "compile", "os.system", "subprocess.Popen", "import")


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _AUDIT["on"] or event not in _WATCHED:
        return
    # The standard library loads a text codec (encodings.*) the first time pickletools decodes
    # a protocol-0 string; that import is the parser's, whatever the file says.
    if event == "import" and str(args[0]).startswith("encodings"):
        return
    if event == "exec" and "/encodings/" in getattr(args[0], "co_filename", ""):
        return
    _AUDIT["events"].append(event)


sys.addaudithook(_hook)  # gated by _AUDIT["on"]; audit hooks cannot be removed


def _parse_watched(data: bytes) -> tuple[Any, list[str]]:
    """parse_pickle(data) while recording find_class / exec / import / os.system events."""
    _AUDIT["events"] = []
    _AUDIT["on"] = True
    try:
        try:
            result: Any = parse_pickle(data, name="probe")
        except DataError as exc:
            result = exc
    finally:
        _AUDIT["on"] = False
    return result, list(_AUDIT["events"])


class _Exec:
    """Unpickling this runs ``exec`` of code that writes a marker file."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').write('pwned')"

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


class _System:
    def __init__(self, marker: Path) -> None:
        self.cmd = f"touch {marker}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.cmd,))


def _payloads(marker: Path) -> dict[str, bytes]:
    """Pickles that run code when unpickled, in many shapes."""
    code = f"open({str(marker)!r}, 'w').write('pwned')".encode()
    out = {}
    for proto in range(6):
        out[f"exec-p{proto}"] = pickle.dumps({b"data": _Exec(marker)}, protocol=proto)
        out[f"system-p{proto}"] = pickle.dumps([_System(marker)], protocol=proto)
    # INST (protocol 0): calls builtins.exec with the marked argument
    out["inst"] = b"(S'" + code.replace(b"'", b"\\'") + b"'\nibuiltins\nexec\n."
    # OBJ: MARK, class, args, OBJ
    out["obj"] = b"(cbuiltins\nexec\nS'" + code.replace(b"'", b"\\'") + b"'\no."
    # STACK_GLOBAL of builtins.exec, REDUCE
    out["stack-global"] = (
        b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93\x8c" + bytes([len(code)]) + code + b"\x85R."
    )
    # numpy's own loader (would unpickle a nested file) and getattr chains
    out["numpy-load"] = b"\x80\x02cnumpy\nload\nX\x01\x00\x00\x00xq\x00\x85R."
    out["getattr"] = b"\x80\x02cbuiltins\ngetattr\n."
    return out


def _live(data: bytes, marker: Path) -> bool:
    """Whether ``data`` really runs code when unpickled (the marker appears)."""
    try:
        pickle.loads(data)  # noqa: S301 - our own payload, to prove it is live
    except Exception:
        pass
    alive = marker.exists()
    marker.unlink(missing_ok=True)
    return alive


def test_code_running_pickles_are_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    payloads = _payloads(marker)
    live = [name for name, data in payloads.items() if _live(data, marker)]
    assert {"exec-p0", "exec-p4", "system-p2", "inst", "obj", "stack-global"} <= set(live)
    for name, data in payloads.items():
        result, events = _parse_watched(data)
        assert isinstance(result, DataError), name
        assert "refers to" in str(result) or "refused" in str(result), name
        assert events == [], (name, events)
        assert not marker.exists(), name
    # the same through the CIFAR-10 loader
    _cifar_dir(tmp_path)
    (tmp_path / "data_batch_2").write_bytes(payloads["exec-p2"])
    with pytest.raises(DataError, match=r"data_batch_2 refers to (__builtin__|builtins)\.exec"):
        load_source("cifar10", seed=0, path=tmp_path)
    assert not marker.exists()


_REFUSED = {
    "NEXT_BUFFER": b"\x97",
    "EMPTY_SET": b"\x8f",
    "ADDITEMS": b"(\x90",
    "FROZENSET": b"(\x91",
    "EXT1": b"\x82\x01",
    "EXT2": b"\x83\x01\x00",
    "EXT4": b"\x84\x01\x00\x00\x00",
    "INST": b"(ibuiltins\nexec\n",
    "OBJ": b"(o",
    "NEWOBJ": b"cnumpy\nndarray\n)\x81",
    "NEWOBJ_EX": b"cnumpy\nndarray\n)}\x92",
    "PERSID": b"Pfoo\n",
    "BINPERSID": b"K\x01Q",
}


def test_every_opcode_is_either_evaluated_as_data_or_refused() -> None:
    every = {op.name for op in pickletools.opcodes}
    assert every - ALLOWED_OPCODES == set(_REFUSED)
    for name, body in _REFUSED.items():
        result, events = _parse_watched(b"\x80\x05" + body + b".")
        assert isinstance(result, DataError) and f"opcode {name}" in str(result), name
        assert events == []


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        # numpy.dtype of an object dtype (an array of Python objects)
        (b"\x80\x02cnumpy\ndtype\nX\x01\x00\x00\x00O\x85R.", "numpy.dtype 'O'"),
        # numpy.dtype of a structured spec (a list)
        (b"\x80\x02cnumpy\ndtype\n]\x85R.", "numpy.dtype of list"),
        # _reconstruct of something other than ndarray
        (
            b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\ndtype\nK\x00\x85C\x01b\x87R.",
            "_reconstruct",
        ),
        # BUILD on a plain dict (would set attributes / call __setstate__)
        (b"\x80\x02}}b.", "BUILD"),
        # _codecs.encode with another codec
        (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x03\x00\x00\x00hex\x86R.", "_codecs"),
        # a dict key that is a list
        (b"\x80\x02}]K\x01s.", "dict key"),
        # bytes after STOP
        (b"\x80\x02K\x01.junk", "after the STOP"),
        # a pop across a MARK
        (b"\x80\x02K\x01(0.", "MARK"),
    ],
)
def test_malformed_or_hostile_structure_is_refused(body: bytes, refusal: str) -> None:
    result, events = _parse_watched(body)
    assert isinstance(result, DataError)
    assert refusal in str(result)
    assert events == []


def test_array_headers_that_lie_are_refused_without_allocating() -> None:
    good = pickle.dumps({b"data": np.zeros((2, 3), np.uint8)}, protocol=2)
    # the shape (2, 3) is pickled as BININT1 2, BININT1 3 -> claim (2**30, 2**30) instead
    lie = good.replace(b"K\x02K\x03\x86", b"J\x00\x00\x00@J\x00\x00\x00@\x86")
    assert lie != good
    result, events = _parse_watched(lie)
    assert isinstance(result, DataError) and "bytes of data" in str(result)
    assert events == []


def test_valid_pickles_of_every_protocol_read_back_exactly() -> None:
    obj = {
        b"data": np.arange(24, dtype=np.uint8).reshape(4, 6),
        b"f": np.arange(3, dtype=">f8"),
        b"fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        b"labels": [0, 9, 2**70, -3],
        "text": "x",
        b"tuple": (1, 2.5, None, True, b"b"),
        b"empty": np.zeros((0, 3072), np.uint8),
    }
    for proto in range(6):
        out, events = _parse_watched(pickle.dumps(obj, protocol=proto))
        assert events == [] and not isinstance(out, DataError), proto
        assert set(out) == set(obj)
        for k, v in obj.items():
            if isinstance(v, np.ndarray):
                assert out[k].dtype == v.dtype and np.array_equal(out[k], v), (proto, k)
            else:
                assert out[k] == v, (proto, k)


def _py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR-10 batch as Python 2's cPickle (protocol 2) wrote the real files: str as
    SHORT_BINSTRING / BINSTRING, numpy.core.multiarray._reconstruct + BUILD for the array."""

    def s(b: bytes) -> bytes:
        return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<i", len(b))) + b

    def i(v: int) -> bytes:
        return b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)

    arr = (
        b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02"
        + i(0)
        + b"\x85"
        + s(b"b")
        + b"\x87Rq\x03("
        + i(1)
        + i(data.shape[0])
        + i(data.shape[1])
        + b"\x86cnumpy\ndtype\nq\x04"
        + s(b"u1")
        + i(0)
        + i(1)
        + b"\x87Rq\x05("
        + i(3)
        + s(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xff"
        + i(0)
        + b"tb\x89"
        + s(data.tobytes())
        + b"tb"
    )
    lab = b"]q\x06(" + b"".join(i(v) for v in labels) + b"e"
    return (
        b"\x80\x02}q\x00("
        + s(b"data")
        + arr
        + s(b"labels")
        + lab
        + s(b"batch_label")
        + s(b"training batch 1 of 5")
        + b"u."
    )


def _cifar_dir(tmp: Path, *, per_batch: int = 3) -> Path:
    rng = np.random.default_rng(1)
    for name in [*(f"data_batch_{j}" for j in range(1, 6)), "test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        (tmp / name).write_bytes(_py2_batch(data, [int(v) for v in rng.integers(0, 10, per_batch)]))
    meta = {b"label_names": [n.encode() for n in "abcdefghij"], b"num_vis": 3072}
    (tmp / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return tmp


def test_python2_cifar_batches_read_back(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, (3, 3072), dtype=np.uint8)
    raw = _py2_batch(data, [1, 2, 3])
    assert np.array_equal(pickle.loads(raw, encoding="bytes")[b"data"], data)  # a real pickle
    out = parse_pickle(raw, name="b")
    assert np.array_equal(out[b"data"], data) and out[b"labels"] == [1, 2, 3]
    _cifar_dir(tmp_path)
    d = load_source("cifar10", seed=0, path=tmp_path)
    assert len(d) == 18 and d.meta["label_names"] == tuple("abcdefghij")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_pickles_never_escape_or_crash(data: st.DataObject) -> None:
    base = pickle.dumps(
        {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [1, 2], b"x": "y"},
        protocol=data.draw(st.integers(0, 5)),
    )
    raw = bytearray(base)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(raw)))
    result, events = _parse_watched(bytes(raw[:cut]))
    assert events == []
    assert isinstance(result, (DataError, dict, list, tuple, int, float, str, bytes, type(None)))


def test_read_pickle_refuses_oversized_files(tmp_path: Path) -> None:
    f = tmp_path / "big"
    f.write_bytes(b"\x80\x02" + b"N" * 100 + b".")
    with pytest.raises(DataError, match="larger than 50 bytes"):
        read_pickle(f, max_bytes=50)


# ----------------------------------------------------------------------------------------- LEAF


def _leaf_file(tmp: Path, x: Any, y: Any, *, raw: str | None = None) -> Path:
    doc = {"users": ["u"], "num_samples": [len(y)], "user_data": {"u": {"x": x, "y": y}}}
    f = tmp / "data.json"
    f.write_text(raw if raw is not None else json.dumps(doc))
    return f


def _row(value: Any = 0.5, at: int = 7) -> list[Any]:
    row: list[Any] = [0.0] * 784
    row[at] = value
    return row


@pytest.mark.parametrize(
    ("literal", "why"),
    [
        ("NaN", "not a JSON number"),
        ("Infinity", "not a JSON number"),
        ("-Infinity", "not a JSON number"),
        ("1e999", "x\\[7\\] is inf, not a finite float32"),
        ("3.5e38", "x\\[7\\] is 3.5e\\+38, not a finite float32"),
        ("null", "x\\[7\\] is None, not a number"),
        ('"0.5"', "x\\[7\\] is '0.5', not a number"),
        ("[0.5]", "x\\[7\\] is \\[0.5\\], not a number"),
    ],
)
def test_leaf_non_finite_or_non_numeric_x_is_refused(
    tmp_path: Path, literal: str, why: str
) -> None:
    good = json.dumps([_row(), _row()])
    bad_row = json.dumps(_row(123456.0)).replace("123456.0", literal)
    text = json.dumps({"users": ["u"], "num_samples": [3], "user_data": {"u": {"y": [1, 2, 3]}}})
    text = text.replace('{"y"', '{"x": ' + good[:-1] + ", " + bad_row + '], "y"')
    _leaf_file(tmp_path, None, [], raw=text)
    with pytest.raises(DataError, match=f"data.json.*{why}") as info:
        load_source("leaf", seed=0, path=tmp_path)
    if "JSON" not in why:
        assert "user 'u', record 2" in str(info.value)


@pytest.mark.parametrize(
    ("label", "shown"),
    [(-1, "-1"), (62, "62"), (3.0, "3.0"), (True, "True"), ("3", "'3'"), (None, "None")],
)
def test_leaf_labels_out_of_range_or_not_integers_are_refused(
    tmp_path: Path, label: Any, shown: str
) -> None:
    _leaf_file(tmp_path, [_row(), _row()], [1, label])
    with pytest.raises(
        DataError, match=f"user 'u', record 1: expected y an int in 0..61, got {shown}"
    ):
        load_source("leaf", seed=0, path=tmp_path)


def test_leaf_ragged_records_are_refused_naming_the_record(tmp_path: Path) -> None:
    _leaf_file(tmp_path, [_row(), [0.0] * 783], [1, 2])
    with pytest.raises(DataError, match="user 'u', record 1: x must be a list of 784 numbers"):
        load_source("leaf", seed=0, path=tmp_path)
    _leaf_file(tmp_path, [_row(), "a" * 80], [1, 2])
    with pytest.raises(DataError, match="user 'u', record 1: x must be a list of 784 numbers"):
        load_source("leaf", seed=0, path=tmp_path)
    _leaf_file(tmp_path, [_row()], [1, 2])
    with pytest.raises(DataError, match="num_samples 2 but 1 x and 2 y"):
        load_source("leaf", seed=0, path=tmp_path)


def test_leaf_deeply_nested_json_is_a_clear_error_not_a_recursion_error(tmp_path: Path) -> None:
    depth = 200_000
    _leaf_file(tmp_path, None, [], raw='{"users": ' + "[" * depth + "]" * depth + "}")
    with pytest.raises(DataError, match="data.json is not readable JSON: nested too deeply"):
        load_source("leaf", seed=0, path=tmp_path)
    # nested, but within the parser's limit: the schema check names it
    x = [_row()]
    x[0][3] = [[[[1.0]]]]
    _leaf_file(tmp_path, x, [1])
    with pytest.raises(DataError, match=r"record 0: x\[3\] is \[\[\[\[1.0\]\]\]\], not a number"):
        load_source("leaf", seed=0, path=tmp_path)


def test_leaf_repeated_keys_and_users_are_refused(tmp_path: Path) -> None:
    _leaf_file(tmp_path, None, [], raw='{"users": [], "users": [], "num_samples": []}')
    with pytest.raises(DataError, match="key 'users' appears twice"):
        load_source("leaf", seed=0, path=tmp_path)
    doc = {
        "users": ["u", "u"],
        "num_samples": [1, 1],
        "user_data": {"u": {"x": [_row()], "y": [1]}},
    }
    (tmp_path / "data.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match="users must be distinct strings"):
        load_source("leaf", seed=0, path=tmp_path)


def test_leaf_valid_extremes_pass(tmp_path: Path) -> None:
    _leaf_file(tmp_path, [_row(3.0e38), _row(-1e-45), _row(0)], [0, 61, 5])
    d = load_source("leaf", seed=0, path=tmp_path)
    assert d.labels["label"].tolist() == [0, 61, 5] and np.isfinite(d.x).all()


# ---------------------------------------------------------------------------------------- MNIST


def test_idx_header_whose_dimensions_overflow_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(struct.pack(">IIII", 0x803, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + b"\0" * 64)
    with pytest.raises(DataError, match=r"declares dims \[4294967295, 4294967295, 4294967295\]"):
        read_idx(f, magic=0x803, ndim=3)
    # dims whose int64 product wraps around to the real data size
    f.write_bytes(struct.pack(">IIII", 0x803, 2**31, 2**31, 4) + b"\0" * 16)
    with pytest.raises(DataError, match="more than the .* privfed reads"):
        read_idx(f, magic=0x803, ndim=3)


def test_idx_size_disagreeing_with_the_header_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "x"
    f.write_bytes(struct.pack(">II", 0x801, 10) + b"\1" * 12)
    with pytest.raises(DataError, match=r"declares dims \[10\] = 10 bytes of data, found more"):
        read_idx(f, magic=0x801, ndim=1)
    f.write_bytes(struct.pack(">II", 0x801, 10) + b"\1" * 4)
    with pytest.raises(DataError, match="found 4; the file is truncated"):
        read_idx(f, magic=0x801, ndim=1)


def test_idx_gzip_bomb_is_refused_without_expanding_it(tmp_path: Path) -> None:
    f = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bomb = struct.pack(">II", 0x801, 12) + b"\0" * (64 * 2**20)
    f.write_bytes(gzip.compress(bomb, compresslevel=9))
    assert f.stat().st_size < 2**20
    with pytest.raises(DataError, match="found more"):
        read_idx(f, magic=0x801, ndim=1)
    noise = np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes()
    f.write_bytes(gzip.compress(struct.pack(">II", 0x801, 100_000) + noise)[:50_000])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz cannot be read"):
        read_idx(f, magic=0x801, ndim=1)

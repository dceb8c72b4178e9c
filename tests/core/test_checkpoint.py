"""The checkpoint container: exact round trips, every damaged or crafted file refused."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from privfed.checkpoint import FORMAT, MAGIC, MAX_DEPTH, encode_state, read_state, write_state
from privfed.errors import CheckpointError, StorageError


def _same(a: Any, b: Any) -> bool:
    """Equal values of equal types (tuples written as lists, NaN equal to NaN)."""
    if isinstance(a, np.ndarray):
        return (
            isinstance(b, np.ndarray)
            and a.dtype.newbyteorder("<") == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
        )
    if isinstance(a, float):
        return isinstance(b, float) and (
            (math.isnan(a) and math.isnan(b))
            or (a == b and math.copysign(1, a) == math.copysign(1, b))
        )
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


TREE: dict[str, Any] = {
    "globals": {"u": np.linspace(-1, 1, 7, dtype=np.float32), "$x": np.arange(3)},
    "$$y": {"$array": 3, "$float": "inf"},  # user keys that look like tags
    "floats": [0.1, -0.0, 1e300, 5e-324, math.inf, -math.inf, math.nan],
    "ints": [0, -(2**63), 2**64 - 1, 7],
    "misc": [None, True, False, "", "é\U0001f600\ud800", (1, (2, 3))],
    "arrays": [
        np.zeros((2, 0, 3), np.int64),
        np.array(3.5, dtype=">f8"),
        np.arange(12.0).reshape(3, 4)[:, ::2],
        np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        np.array([True, False]),
        np.arange(4, dtype=np.complex128) * 1j,
        np.array([np.nan, -np.inf], dtype=np.float16),
        *(np.arange(5, dtype=t) for t in ("i1", "u1", "i2", "u2", "i4", "u4", "u8", "f8", "c8")),
    ],
    "empty": {},
    "nested": [[[[{"deep": [1]}]]]],
}


def test_round_trip_is_exact_and_the_digest_is_the_files(tmp_path: Path) -> None:
    path = tmp_path / "s.ckpt"
    digest = write_state(path, TREE)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    back = read_state(path, expected_sha256=digest)
    assert _same(TREE, back)
    assert back["globals"]["u"].flags.writeable
    enc = encode_state(TREE)
    assert enc.sha256 == digest and enc.size == path.stat().st_size
    assert write_state(tmp_path / "again", TREE) == digest  # deterministic bytes


_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
_arrays = st.sampled_from(["i1", "u2", "<i4", ">i8", "f2", ">f4", "f8", "c8", "?"]).flatmap(
    lambda dt: st.lists(st.integers(0, 3), max_size=3).map(
        lambda shape: (np.arange(int(np.prod(shape)), dtype=np.int64) % 7).astype(dt).reshape(shape)
    )
)
_trees = st.recursive(
    st.one_of(_scalars, _arrays),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=6), _trees, max_size=5))
def test_any_tree_round_trips(
    tmp_path_factory: pytest.TempPathFactory, tree: dict[str, Any]
) -> None:
    path = tmp_path_factory.mktemp("h") / "s"
    digest = write_state(path, tree)
    assert _same(tree, read_state(path, expected_sha256=digest))


def test_every_flipped_byte_and_every_truncation_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "s"
    digest = write_state(path, {"v": np.arange(10, dtype=np.float32), "n": 3, "t": "x"})
    good = path.read_bytes()
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError, match=str(path)):
            read_state(path)
        with pytest.raises(CheckpointError):
            read_state(path, expected_sha256=digest)
    for n in range(len(good)):
        path.write_bytes(good[:n])
        with pytest.raises(CheckpointError, match=str(path)):
            read_state(path)
    path.write_bytes(good)
    # a flip in the data section: the message says the file is damaged and what to do
    bad = bytearray(good)
    bad[-40] ^= 0x80
    path.write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match="checksum does not match.*damaged.*start the run"):
        read_state(path)


def test_a_valid_checkpoint_that_is_not_the_expected_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    digest = write_state(path, {"v": np.zeros(3)})
    write_state(path, {"v": np.ones(3)})
    with pytest.raises(CheckpointError, match=f"the run recorded {digest}.*replaced or modified"):
        read_state(path, expected_sha256=digest)
    assert read_state(path, expected_sha256=[digest, hashlib.sha256(path.read_bytes()).hexdigest()])


class _Marker:
    """Unpickling this writes a marker file (it runs ``exec``)."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').write('pwned')"

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "state.ckpt"
    torch.save({"next_round": 1, "x": _Marker(marker)}, evil)
    torch.load(evil, weights_only=False)  # the file is live: loading it runs the payload
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match="written with torch.save.*can run any code"):
        read_state(evil)
    evil.write_bytes(pickle.dumps({"x": _Marker(marker)}))
    with pytest.raises(CheckpointError, match="written with torch.save"):
        read_state(evil)
    evil.write_bytes(b"garbage" + pickle.dumps(_Marker(marker)))
    with pytest.raises(CheckpointError, match="does not start with the privfed checkpoint magic"):
        read_state(evil)
    assert not marker.exists()


# ------------------------------------------------------------------- crafted (checksummed) files


def _craft(header: Any, data: bytes = b"", *, fmt: int = FORMAT, raw: bytes | None = None) -> bytes:
    """A file with a correct checksum around ``header`` (an attacker can recompute it)."""
    body = raw if raw is not None else json.dumps(header).encode()
    head = struct.pack("<8sIQ", MAGIC, fmt, len(body)) + body
    head += bytes(-len(head) % 64)
    content = head + data
    return content + hashlib.sha256(content).digest()


def _checksummed(content: bytes) -> bytes:
    return content + hashlib.sha256(content).digest()


def _arr(dtype: str = "<f4", shape: Any = (2,), offset: Any = 0, nbytes: Any = 8) -> dict[str, Any]:
    return {
        "dtype": dtype,
        "shape": list(shape) if isinstance(shape, tuple) else shape,
        "offset": offset,
        "nbytes": nbytes,
    }


CRAFTED: list[tuple[str, bytes, str]] = [
    (
        "format 2",
        _craft({"arrays": [], "tree": {}}, fmt=2),
        "format 2; this privfed reads format 1",
    ),
    (
        "object dtype",
        _craft({"arrays": [_arr("|O", (1,), 0, 8)], "tree": {"a": {"$array": 0}}}, bytes(8)),
        "dtype '|O'",
    ),
    (
        "big-endian",
        _craft({"arrays": [_arr(">f4")], "tree": {"a": {"$array": 0}}}, bytes(8)),
        "dtype '>f4'",
    ),
    (
        "unicode dtype",
        _craft({"arrays": [_arr("<U2", (1,), 0, 8)], "tree": {"a": {"$array": 0}}}, bytes(8)),
        "dtype '<U2'",
    ),
    (
        "negative dim",
        _craft({"arrays": [_arr(shape=[-2])], "tree": {"a": {"$array": 0}}}, bytes(8)),
        "shape \\[-2\\]",
    ),
    (
        "bool dim",
        _craft({"arrays": [_arr(shape=[True])], "tree": {"a": {"$array": 0}}}, bytes(8)),
        "shape \\[true\\]|shape \\[True\\]",
    ),
    (
        "too many dims",
        _craft(
            {"arrays": [_arr(shape=[1] * 33, nbytes=4)], "tree": {"a": {"$array": 0}}}, bytes(4)
        ),
        "at most 32",
    ),
    (
        "overflowing dims",
        _craft({"arrays": [_arr(shape=[2**62, 2**62], nbytes=0)], "tree": {"a": {"$array": 0}}}),
        "declares 0 bytes",
    ),
    (
        "huge claim",
        _craft(
            {"arrays": [_arr(shape=[2**40], nbytes=2**42)], "tree": {"a": {"$array": 0}}}, bytes(8)
        ),
        "ends at byte 4398046511104 of the data section, which has 8",
    ),
    (
        "nbytes lie",
        _craft({"arrays": [_arr(nbytes=4)], "tree": {"a": {"$array": 0}}}, bytes(8)),
        "declares 4 bytes",
    ),
    (
        "overlap",
        _craft(
            {"arrays": [_arr(), _arr(offset=0)], "tree": {"a": {"$array": 0}, "b": {"$array": 1}}},
            bytes(72),
        ),
        "arrays\\[1\\] is at offset 0; the packed layout puts it at 64",
    ),
    (
        "trailing data",
        _craft({"arrays": [_arr()], "tree": {"a": {"$array": 0}}}, bytes(16)),
        "data section has 16 bytes but the arrays account for 8",
    ),
    (
        "non-zero padding",
        _craft(
            {"arrays": [_arr(), _arr(offset=64)], "tree": {"a": {"$array": 0}, "b": {"$array": 1}}},
            bytes(8) + b"\x01" + bytes(63),
        ),
        "padding before arrays\\[1\\]",
    ),
    (
        "header too long",
        _checksummed(struct.pack("<8sIQ", MAGIC, 1, 2**40) + bytes(100)),
        "header length 1099511627776 exceeds the file",
    ),
    ("not utf-8", _craft(None, raw=b'{"arrays": [], "tree": {"\xff": 1}}'), "not valid JSON"),
    ("NaN literal", _craft(None, raw=b'{"arrays": [], "tree": {"a": NaN}}'), "not valid JSON.*NaN"),
    (
        "overflowing float",
        _craft(None, raw=b'{"arrays": [], "tree": {"a": 1e999}}'),
        "overflows a float",
    ),
    (
        "huge int",
        _craft(None, raw=b'{"arrays": [], "tree": {"a": ' + b"9" * 30 + b"}}"),
        r"outside \[-2\*\*63",
    ),
    (
        "int too long to parse",
        _craft(None, raw=b'{"arrays": [], "tree": {"a": ' + b"9" * 5000 + b"}}"),
        "not valid JSON",
    ),
    (
        "int out of range",
        _craft({"arrays": [], "tree": {"a": 2**64}}),
        "outside \\[-2\\*\\*63, 2\\*\\*64\\)",
    ),
    (
        "duplicate key",
        _craft(None, raw=b'{"arrays": [], "tree": {"a": 1, "a": 2}}'),
        "appears twice",
    ),
    (
        "parser bomb",
        _craft(None, raw=b'{"arrays": [], "tree": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        "nested too deeply",
    ),
    (
        "tree too deep",
        _craft(
            {"arrays": [], "tree": {"a": json.loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))}}
        ),
        f"more than {MAX_DEPTH} levels",
    ),
    (
        "extra header key",
        _craft({"arrays": [], "tree": {}, "code": "x"}),
        "exactly the keys 'arrays' and 'tree'",
    ),
    ("tree not an object", _craft({"arrays": [], "tree": [1]}), "tree is not an object"),
    (
        "array index out of range",
        _craft({"arrays": [], "tree": {"a": {"$array": 0}}}),
        "refers to array 0; the file has 0",
    ),
    (
        "array used twice",
        _craft({"arrays": [_arr()], "tree": {"a": {"$array": 0}, "b": {"$array": 0}}}, bytes(8)),
        "used twice",
    ),
    ("array unused", _craft({"arrays": [_arr()], "tree": {}}, bytes(8)), "listed but not used"),
    (
        "unknown tag",
        _craft({"arrays": [], "tree": {"a": {"$pickle": "gASV"}}}),
        "unknown tag '\\$pickle'",
    ),
    (
        "tag with extras",
        _craft({"arrays": [], "tree": {"a": {"$float": "inf", "b": 1}}}),
        "mixes the tag",
    ),
    (
        "bad float tag",
        _craft({"arrays": [], "tree": {"a": {"$float": "1e5"}}}),
        "expected 'inf', '-inf' or 'nan'",
    ),
    (
        "array entry keys",
        _craft({"arrays": [{"dtype": "<f4"}], "tree": {}}),
        "keys dtype, shape, offset, nbytes",
    ),
]


@pytest.mark.parametrize(("case", "content", "problem"), CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_files_with_valid_checksums_are_refused(
    tmp_path: Path, case: str, content: bytes, problem: str
) -> None:
    path = tmp_path / "state.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=problem) as info:
        read_state(path)
    assert str(path) in str(info.value)


def test_size_limit_is_checked_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "s"
    write_state(path, {"v": np.zeros(100)})
    with pytest.raises(CheckpointError, match="larger than the 100 a checkpoint may be"):
        read_state(path, max_bytes=100)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state(tmp_path / "missing")


@pytest.mark.parametrize(
    ("tree", "where"),
    [
        ({"a": np.array(["x"])}, r"state\['a'\] is an array of dtype <U1"),
        ({"a": np.array([object()])}, r"state\['a'\] is an array of dtype object"),
        ({"a": {1: 2}}, r"state\['a'\]\[1\] has a key of type int"),
        ({"a": [{3, 4}]}, r"state\['a'\]\[0\] is a set"),
        ({"a": 2**64}, r"outside \[-2\*\*63, 2\*\*64\)"),
        ({"a": np.datetime64("2020-01-01")}, "is a datetime64"),
        ({"a": b"bytes"}, "is a bytes"),
    ],
)
def test_unsupported_values_are_refused_naming_where(tree: dict[str, Any], where: str) -> None:
    with pytest.raises(CheckpointError, match=where):
        encode_state(tree)


def test_cycles_and_deep_trees_are_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(CheckpointError, match=r"nested more than 64 levels deep \(or is a cycle\)"):
        encode_state({"a": loop})


def test_numpy_scalars_are_stored_as_python_scalars(tmp_path: Path) -> None:
    tree = {"i": np.int64(3), "f": np.float32(0.5), "b": np.bool_(True)}
    write_state(tmp_path / "s", tree)
    assert read_state(tmp_path / "s") == {"i": 3, "f": 0.5, "b": True}


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    path = tmp_path / "state.ckpt"
    digest = write_state(path, {"v": np.zeros(3)})

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match=f"cannot write {path}: no space left.*free disk space"):
        write_state(path, {"v": np.ones(3)})
    monkeypatch.undo()
    assert read_state(path, expected_sha256=digest)["v"].sum() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.ckpt"]


_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.sampled_from(["<f4", "|u1", "$array", "$float", "inf", "nan", "x"]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                ["arrays", "tree", "dtype", "shape", "offset", "nbytes", "$array", "$float", "a"]
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(
    header=st.one_of(_json, st.fixed_dictionaries({"arrays": _json, "tree": _json})),
    data=st.binary(max_size=200),
)
def test_arbitrary_checksummed_headers_give_a_tree_or_a_checkpoint_error(
    tmp_path_factory: pytest.TempPathFactory, header: Any, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "state.ckpt"
    path.write_bytes(_craft(header, data))
    try:
        tree = read_state(path)
    except CheckpointError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(tree, dict)

r"""The checkpoint container: a tree of plain values and numpy arrays, stored without pickle.

A checkpoint is read back from a run directory that anyone may have handed over, so reading it
must not be able to run code, allocate what the file does not hold, or recurse without bound.
This format is therefore data only: a JSON header that describes the tree, then the raw bytes
of the arrays, then a checksum. Nothing in it names a Python type or a callable; reading it
builds only ``dict``, ``list``, ``str``, ``int``, ``float``, ``bool``, ``None`` and numpy arrays
of numeric dtypes, and checks every field before it uses it.

File layout (format 1; every integer little-endian)::

    offset 0    magic         8 bytes   b"\x89PFCKPT\n"
    offset 8    format        uint32    1
    offset 12   header_len    uint64    length of the header in bytes
    offset 20   header        header_len bytes of UTF-8 JSON (below)
                padding       zero bytes up to the next multiple of 64 from the file start
    data start  arrays        each array's bytes (little-endian, C order), the first at the data
                              start, each next one at the next multiple of 64 after the previous
                              one ends (zero padding between); the last one ends the data
    last 32     checksum      sha256 of every byte before it

The header is ``{"arrays": [...], "tree": NODE}``. ``arrays[i]`` is
``{"dtype": "<f4", "shape": [3, 4], "offset": 0, "nbytes": 48}`` with ``offset`` counted from
the data start. A ``NODE`` is ``null``, ``true`` / ``false``, a string, an integer (a JSON
number without fraction or exponent, in ``[-2**63, 2**64)``), a finite float (a JSON number with
a fraction or exponent), a list of nodes, an object of nodes, ``{"$float": "inf" | "-inf" |
"nan"}`` for non-finite floats, or ``{"$array": i}`` for ``arrays[i]``. An object key that
starts with ``$`` is written with one more ``$`` in front (``"$x"`` -> ``"$$x"``), so user keys
never collide with the two tags.

What a reader checks (:func:`read_state`), in this order: the file size against
``max_bytes``; the magic and format number (an old ``torch.save`` pickle is recognised and
refused without being opened); the trailing sha256 (any flipped or missing byte); the whole-file
sha256 against ``expected_sha256`` when given (a valid checkpoint that is not the expected one);
the header length, its UTF-8 and strict JSON (no duplicate keys, no ``NaN`` literal, no float
that overflows, no integer outside the range above); the exact keys of the header and of every
array entry; every dtype against an allow-list of numeric dtypes; every shape (at most
``MAX_NDIM`` non-negative dimensions) and ``nbytes == prod(shape) * itemsize``, computed with
Python integers so nothing overflows; every offset against the packed layout above, so arrays
neither overlap nor leave gaps, and the data section length; zero padding; the tree's depth
(at most ``MAX_DEPTH``); that every array is used exactly once.

Round trip: values come back equal and of the same type, except that tuples come back as
lists, numpy scalars as Python ``bool`` / ``int`` / ``float``, NaN without its payload, and
arrays as writable little-endian arrays of the same dtype and shape (sharing one buffer).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from privfed.errors import CheckpointError, PrivfedError
from privfed.io import atomic_write, parse_json

__all__ = [
    "FORMAT",
    "MAGIC",
    "EncodedState",
    "TreeReader",
    "encode_state",
    "is_int",
    "is_number",
    "read_state",
    "write_state",
]

MAGIC = b"\x89PFCKPT\n"
"""The first 8 bytes of every checkpoint (a non-ASCII first byte and a newline, as PNG does,
so text-mode transfers and truncated copies are recognised)."""
FORMAT = 1
"""The format number this module writes and reads."""

ALIGN = 64
MAX_DEPTH = 64
"""Deepest nesting of lists and objects a checkpoint tree may have."""
MAX_NDIM = 32
MAX_ARRAYS = 2**24
MAX_HEADER_BYTES = 2**30
MAX_STATE_BYTES = 2**36
"""Largest checkpoint :func:`read_state` reads by default (64 GiB)."""

_PREFIX = struct.Struct("<8sIQ")
_DIGEST = 32
_INT_MIN, _INT_END = -(2**63), 2**64
_ALLOWED_DTYPES = frozenset(
    np.dtype(f"{kind}{size}").newbyteorder("<").str
    for kind, sizes in (("b", (1,)), ("i", (1, 2, 4, 8)), ("u", (1, 2, 4, 8)))
    for size in sizes
) | frozenset(("<f2", "<f4", "<f8", "<c8", "<c16"))
_NONFINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}
_ADVICE = (
    "restore the file from a copy, or start the run afresh in a new --out directory "
    "(privfed run CONFIG --out NEW_DIR)"
)


def _align(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def is_int(v: Any) -> bool:
    """Whether ``v`` is an int (and not a bool)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """Whether ``v`` is an int or a float (and not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ------------------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class EncodedState:
    """A tree encoded as a checkpoint, not yet written.

    Lets a caller know the checksum before the file exists (to record it first, then write).

    Attributes:
        head: the prefix, the header and its padding (everything before the data start).
        arrays: the arrays, little-endian and C-contiguous, in file order.
        trailer: the 32-byte checksum that ends the file.
        sha256: hex sha256 of the whole file :meth:`write` produces.
        size: the file's length in bytes.
    """

    head: bytes
    arrays: tuple[np.ndarray, ...]
    trailer: bytes
    sha256: str
    size: int

    def chunks(self) -> list[bytes | memoryview]:
        """The file's bytes in order, without copying the arrays."""
        return _chunks(self.head, self.arrays) + [self.trailer]

    def write(self, path: str | Path) -> None:
        """Write the checkpoint to ``path`` atomically (a failed write leaves the old file).

        Raises:
            StorageError: the file cannot be written (full disk, permissions).
        """

        def fill(fh: IO[bytes]) -> None:
            for chunk in self.chunks():
                fh.write(chunk)

        atomic_write(path, fill)


def _chunks(head: bytes, arrays: tuple[np.ndarray, ...]) -> list[bytes | memoryview]:
    out: list[bytes | memoryview] = [head]
    pos = 0
    for i, a in enumerate(arrays):
        if i and _align(pos) > pos:
            out.append(bytes(_align(pos) - pos))
            pos = _align(pos)
        if a.nbytes:
            out.append(a.reshape(-1).view(np.uint8).data)
        pos += a.nbytes
    return out


_Path = tuple[Any, Any] | None
"""Where a node is: None for the root, else (parent path, key or index); formatted on error."""


def _where(path: _Path) -> str:
    keys = []
    while path is not None:
        path, key = path
        keys.append(key)
    return "state" + "".join(f"[{k!r}]" for k in reversed(keys))


def _tree_error(path: _Path, problem: str) -> CheckpointError:
    return CheckpointError(
        f"cannot write a checkpoint: {_where(path)} {problem}; convert it in the code that builds "
        "the checkpoint tree (allowed: dict with str keys, list, tuple, str, int, float, bool, "
        "None, numpy arrays of bool/int/uint/float/complex dtypes)"
    )


def _encode_float(node: float) -> Any:
    if math.isfinite(node):
        return node
    return {"$float": "nan" if math.isnan(node) else ("inf" if node > 0 else "-inf")}


def _encode_node(node: Any, path: _Path, depth: int, arrays: list[np.ndarray]) -> Any:
    t = type(node)
    if t is str or t is bool or node is None:
        return node
    if t is float:
        return _encode_float(node)
    if t is int:
        if not _INT_MIN <= node < _INT_END:
            raise _tree_error(path, f"is the integer {node}, outside [-2**63, 2**64)")
        return node
    if t is dict or t is list or t is tuple or isinstance(node, (Mapping, list, tuple)):
        if depth >= MAX_DEPTH:
            raise _tree_error(path, f"is nested more than {MAX_DEPTH} levels deep (or is a cycle)")
        if isinstance(node, (list, tuple)):
            return [_encode_node(v, (path, i), depth + 1, arrays) for i, v in enumerate(node)]
        out: dict[str, Any] = {}
        for k, v in node.items():
            if type(k) is not str:
                raise _tree_error((path, k), f"has a key of type {type(k).__name__}")
            out["$" + k if k[:1] == "$" else k] = _encode_node(v, (path, k), depth + 1, arrays)
        return out
    if isinstance(node, np.ndarray):
        dt = node.dtype.newbyteorder("<") if node.dtype.byteorder != "|" else node.dtype
        if dt.str not in _ALLOWED_DTYPES:
            raise _tree_error(path, f"is an array of dtype {node.dtype} (not a numeric dtype)")
        if node.ndim > MAX_NDIM:
            raise _tree_error(path, f"has {node.ndim} dimensions, more than {MAX_NDIM}")
        arrays.append(np.asarray(node, dtype=dt, order="C"))
        return {"$array": len(arrays) - 1}
    if isinstance(node, (np.bool_, np.integer, np.floating)):
        return _encode_node(node.item(), path, depth, arrays)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, (bool, int)):  # int subclasses (IntEnum)
        return _encode_node(int(node), path, depth, arrays)
    if isinstance(node, float):
        return _encode_float(float(node))
    raise _tree_error(path, f"is a {t.__name__}")


def encode_state(tree: Mapping[str, Any]) -> EncodedState:
    """Encode ``tree`` (see the module docstring for what it may hold) without writing it.

    Raises:
        CheckpointError: the tree holds a value the format cannot store (the message names
            where), or is nested too deeply.
    """
    if not isinstance(tree, Mapping):
        raise _tree_error(None, f"is a {type(tree).__name__}, not a mapping")
    arrays: list[np.ndarray] = []
    root = _encode_node(tree, None, 0, arrays)
    if len(arrays) > MAX_ARRAYS:
        raise _tree_error(None, f"holds {len(arrays)} arrays, more than {MAX_ARRAYS}")
    table = []
    pos = 0
    for i, a in enumerate(arrays):
        if i:
            pos = _align(pos)
        table.append(
            {"dtype": a.dtype.str, "shape": list(a.shape), "offset": pos, "nbytes": a.nbytes}
        )
        pos += a.nbytes
    header = json.dumps(
        {"arrays": table, "tree": root}, allow_nan=False, separators=(",", ":")
    ).encode("ascii")
    if len(header) > MAX_HEADER_BYTES:
        raise _tree_error(None, f"needs a {len(header)}-byte header (> {MAX_HEADER_BYTES})")
    head = _PREFIX.pack(MAGIC, FORMAT, len(header)) + header
    head += bytes(_align(len(head)) - len(head))
    frozen = tuple(arrays)
    h = hashlib.sha256()
    for chunk in _chunks(head, frozen):
        h.update(chunk)
    trailer = h.digest()
    h.update(trailer)
    return EncodedState(
        head=head,
        arrays=frozen,
        trailer=trailer,
        sha256=h.hexdigest(),
        size=len(head) + pos + _DIGEST,
    )


def write_state(path: str | Path, tree: Mapping[str, Any]) -> str:
    """Atomically write ``tree`` to ``path`` without pickle; return the file's sha256 (hex).

    ``tree`` is a nested ``dict[str, ...]`` of ``dict`` / ``list`` / ``tuple`` / ``str`` /
    ``int`` / ``float`` (inf and nan included) / ``bool`` / ``None`` / numpy arrays of any
    numeric dtype. The returned digest is what ``sha256sum`` prints for the file.

    Raises:
        CheckpointError: the tree holds something the format cannot store.
        StorageError: the file cannot be written; the previous file at ``path`` is unchanged.
    """
    enc = encode_state(tree)
    enc.write(path)
    return enc.sha256


# ------------------------------------------------------------------------------------- reading


class _Bad(Exception):
    """A problem found while reading; becomes a CheckpointError naming the file."""


def _check_arrays(table: Any, data_len: int, buf: bytearray, data_start: int) -> list[np.ndarray]:
    if not isinstance(table, list):
        raise _Bad("the header's 'arrays' is not a list")
    if len(table) > MAX_ARRAYS:
        raise _Bad(f"the header lists {len(table)} arrays, more than {MAX_ARRAYS}")
    out: list[np.ndarray] = []
    pos = 0
    for i, entry in enumerate(table):
        where = f"arrays[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "offset", "nbytes"}:
            raise _Bad(f"{where} must be an object with keys dtype, shape, offset, nbytes")
        dtype, shape, offset, nbytes = (entry[k] for k in ("dtype", "shape", "offset", "nbytes"))
        if not isinstance(dtype, str) or dtype not in _ALLOWED_DTYPES:
            raise _Bad(
                f"{where} has dtype {dtype!r}; allowed: {', '.join(sorted(_ALLOWED_DTYPES))}"
            )
        if (
            not isinstance(shape, list)
            or len(shape) > MAX_NDIM
            or not all(is_int(d) and d >= 0 for d in shape)
        ):
            raise _Bad(f"{where} has shape {shape!r}; expected at most {MAX_NDIM} sizes >= 0")
        dt = np.dtype(dtype)
        want = math.prod(shape) * dt.itemsize
        if not is_int(nbytes) or nbytes != want:
            raise _Bad(f"{where} declares {nbytes!r} bytes, but shape {shape} of {dtype} is {want}")
        start = _align(pos) if i else 0
        if not is_int(offset) or offset != start:
            raise _Bad(f"{where} is at offset {offset!r}; the packed layout puts it at {start}")
        if start + want > data_len:
            raise _Bad(
                f"{where} ends at byte {start + want} of the data section, which has {data_len}"
            )
        if any(buf[data_start + pos : data_start + start]):
            raise _Bad(f"the padding before {where} is not zero")
        out.append(
            np.frombuffer(buf, dtype=dt, count=math.prod(shape), offset=data_start + start).reshape(
                tuple(shape)
            )
        )
        pos = start + want
    if pos != data_len:
        raise _Bad(f"the data section has {data_len} bytes but the arrays account for {pos}")
    return out


def _decode_tag(
    node: dict[str, Any], tag: str, path: _Path, arrays: list[np.ndarray], used: list[bool]
) -> Any:
    if len(node) != 1:
        raise _Bad(f"{_where(path)} mixes the tag {tag!r} with other keys")
    value = node[tag]
    if tag == "$float":
        if not isinstance(value, str) or value not in _NONFINITE:
            raise _Bad(f"{_where(path)} has $float {value!r}; expected 'inf', '-inf' or 'nan'")
        return _NONFINITE[value]
    if tag == "$array":
        if not is_int(value) or not 0 <= value < len(arrays):
            raise _Bad(f"{_where(path)} refers to array {value!r}; the file has {len(arrays)}")
        if used[value]:
            raise _Bad(f"{_where(path)} refers to array {value}, which is used twice")
        used[value] = True
        return arrays[value]
    raise _Bad(f"{_where(path)} has the unknown tag {tag!r}")


def _decode_node(
    node: Any, path: _Path, depth: int, arrays: list[np.ndarray], used: list[bool]
) -> Any:
    t = type(node)
    if t is str or t is bool or node is None:
        return node
    if t is float:
        if not math.isfinite(node):
            raise _Bad(f"{_where(path)} is a number that overflows a float")
        return node
    if t is int:
        if not _INT_MIN <= node < _INT_END:
            raise _Bad(f"{_where(path)} is the integer {node}, outside [-2**63, 2**64)")
        return node
    if depth >= MAX_DEPTH:
        raise _Bad(f"{_where(path)} is nested more than {MAX_DEPTH} levels deep")
    if t is list:
        return [_decode_node(v, (path, i), depth + 1, arrays, used) for i, v in enumerate(node)]
    if t is not dict:  # pragma: no cover - JSON has no other types
        raise _Bad(f"{_where(path)} is a {t.__name__}")
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k[:1] == "$":
            if k[:2] != "$$":
                return _decode_tag(node, k, path, arrays, used)
            k = k[1:]
        out[k] = _decode_node(v, (path, k), depth + 1, arrays, used)
    return out


def _expected_set(expected: str | Collection[str] | None) -> frozenset[str] | None:
    if expected is None:
        return None
    if isinstance(expected, str):
        return frozenset((expected.lower(),))
    return frozenset(e.lower() for e in expected)


def read_state(
    path: str | Path,
    *,
    expected_sha256: str | Collection[str] | None = None,
    max_bytes: int = MAX_STATE_BYTES,
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`write_state`, checking everything before using it.

    Args:
        path: the checkpoint file.
        expected_sha256: the file's sha256 as recorded when it was written (hex), or a
            collection of acceptable digests; None skips this check (the file's own trailing
            checksum is always verified).
        max_bytes: refuse files larger than this.

    Returns:
        The tree (see the module docstring for the types it may hold).

    Raises:
        CheckpointError: naming the file and the problem (missing, unreadable, not a privfed
            checkpoint, another format, damaged, not the expected file, malformed header).
    """
    p = Path(path)
    try:
        with p.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise CheckpointError(
                    f"{p} is {size} bytes, larger than the {max_bytes} a checkpoint may be; "
                    f"it is not a privfed checkpoint: {_ADVICE}"
                )
            buf = bytearray(size)
            got = fh.readinto(buf)
    except FileNotFoundError:
        raise CheckpointError(f"{p} does not exist; {_ADVICE}") from None
    except OSError as exc:
        raise CheckpointError(
            f"{p} cannot be read ({exc.strerror or exc}); check its permissions and the disk"
        ) from None
    try:
        return _read(p, buf, got, size, _expected_set(expected_sha256))
    except _Bad as exc:
        raise CheckpointError(f"{p} is not a valid privfed checkpoint: {exc}; {_ADVICE}") from None


def _read(
    p: Path, buf: bytearray, got: int, size: int, expected: frozenset[str] | None
) -> dict[str, Any]:
    if got != size:
        raise _Bad(f"only {got} of its {size} bytes could be read (the file changed while read)")
    if buf[:4] == b"PK\x03\x04" or buf[:1] == b"\x80":
        raise CheckpointError(
            f"{p} is an old-style checkpoint written with torch.save (a pickle). Loading a "
            "pickle can run any code it contains, so privfed no longer reads these files: "
            "start the run afresh in a new --out directory, or finish it with the privfed "
            "version that wrote it"
        )
    if size < _PREFIX.size + _DIGEST or bytes(buf[:8]) != MAGIC:
        raise _Bad("it does not start with the privfed checkpoint magic bytes")
    _, fmt, header_len = _PREFIX.unpack_from(buf)
    if fmt != FORMAT:
        raise CheckpointError(
            f"{p} is a privfed checkpoint of format {fmt}; this privfed reads format {FORMAT}. "
            "Use the privfed version that wrote it, or start the run afresh"
        )
    h = hashlib.sha256()
    h.update(memoryview(buf)[: size - _DIGEST])
    if h.digest() != bytes(buf[size - _DIGEST :]):
        raise _Bad(
            "its checksum does not match its content: the file is damaged (changed or "
            "truncated bytes)"
        )
    if expected is not None:
        h.update(memoryview(buf)[size - _DIGEST :])
        digest = h.hexdigest()
        if digest not in expected:
            raise CheckpointError(
                f"{p} has sha256 {digest}, but the run recorded "
                f"{' or '.join(sorted(expected))} for its checkpoint: the file was replaced or "
                f"modified after it was written; {_ADVICE}"
            )
    body_end = size - _DIGEST
    if header_len > MAX_HEADER_BYTES or _PREFIX.size + header_len > body_end:
        raise _Bad(f"its header length {header_len} exceeds the file")
    data_start = _align(_PREFIX.size + header_len)
    if data_start > body_end:
        raise _Bad("the padding after its header is cut short")
    if any(buf[_PREFIX.size + header_len : data_start]):
        raise _Bad("the padding after its header is not zero")
    try:
        header = parse_json(bytes(buf[_PREFIX.size : _PREFIX.size + header_len]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _Bad(f"its header is not valid JSON ({exc})") from None
    if not isinstance(header, dict) or set(header) != {"arrays", "tree"}:
        raise _Bad("its header must be an object with exactly the keys 'arrays' and 'tree'")
    arrays = _check_arrays(header["arrays"], body_end - data_start, buf, data_start)
    used = [False] * len(arrays)
    tree = _decode_node(header["tree"], None, 0, arrays, used)
    if not isinstance(tree, dict):
        raise _Bad("its tree is not an object")
    if not all(used):
        raise _Bad(f"array {used.index(False)} is listed but not used in the tree")
    return tree


# ------------------------------------------------------------------------- checked access


class TreeReader:
    """Checked access to a tree read by :func:`read_state`; each failure names file and field.

    :func:`read_state` guarantees types (only plain values and numeric arrays); the reader of a
    tree checks meaning: keys present, numbers in range, vectors of the expected length. Every
    method raises :class:`CheckpointError` naming the file and the field and saying what to do.

    Args:
        tree: the tree (or a sub-tree).
        source: the file it came from, for messages.
    """

    def __init__(self, tree: Mapping[str, Any], source: str | Path) -> None:
        self.tree = tree
        self.source = source

    def check(self, ok: bool, field: str, problem: str) -> None:
        """Raise a CheckpointError about ``field`` unless ``ok``."""
        if not ok:
            raise CheckpointError(
                f"{self.source}: {field} {problem}; the checkpoint is damaged or belongs to "
                "another run: restore it from a copy, or start the run afresh in a new --out"
            )

    def equals(self, key: str, expected: str | int) -> bool:
        """Whether the entry ``key`` is present, of ``expected``'s type and equal to it."""
        value = self.tree.get(key)
        return type(value) is type(expected) and value == expected

    def get(self, key: str) -> Any:
        """The entry ``key`` (which must be present)."""
        self.check(key in self.tree, key, "is missing")
        return self.tree[key]

    def mapping(self, key: str) -> dict[str, Any]:
        """The entry ``key``, an object."""
        value = self.get(key)
        self.check(isinstance(value, dict), key, "must be an object")
        return dict(value)

    def sequence(self, key: str) -> list[Any]:
        """The entry ``key``, a list."""
        value = self.get(key)
        self.check(isinstance(value, list), key, "must be a list")
        return list(value)

    def integer(self, key: str, *, low: int, high: int) -> int:
        """The entry ``key``, an integer in ``[low, high]``."""
        value = self.get(key)
        self.check(is_int(value) and low <= value <= high, key, f"must be in {low}..{high}")
        return int(value)

    def integers(self, key: str, *, low: int, high: int) -> list[int]:
        """The entry ``key`` (an empty list if absent), integers in ``[low, high]``."""
        values = self.tree.get(key, [])
        ok = isinstance(values, list) and all(is_int(v) and low <= v <= high for v in values)
        self.check(ok, key, f"must be a list of integers in {low}..{high}")
        return [int(v) for v in values]

    def vector(
        self, field: str, value: Any, length: int, *, dtype: type | None = np.float32
    ) -> np.ndarray:
        """``value``, a 1-D array of ``length`` floats (of ``dtype`` unless None)."""
        ok = (
            isinstance(value, np.ndarray)
            and value.shape == (length,)
            and value.dtype.kind == "f"
            and (dtype is None or value.dtype == dtype)
        )
        want = f"{np.dtype(dtype).name} " if dtype is not None else "float "
        self.check(ok, field, f"must be a {want}vector of {length} entries (this run's layout)")
        return value

    def build(self, field: str, fn: Callable[[Any], Any], value: Any) -> Any:
        """``fn(value)``, any error it raises on bad content reported against ``field``."""
        try:
            return fn(value)
        except (
            PrivfedError,
            LookupError,
            TypeError,
            ValueError,
            AttributeError,
            ArithmeticError,
        ) as exc:
            self.check(False, field, f"cannot be restored ({type(exc).__name__}: {exc})")
            raise AssertionError("unreachable") from None

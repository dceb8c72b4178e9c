r"""The byte format of the messages that cross the client seam (never pickle).

Every message between the driver and the clients' workers -- a client's task, its reply, a
secure-aggregation step -- is a small tree packed by :func:`pack` and checked by
:func:`unpack`: dicts with string keys, lists, ``None``, booleans, integers, floats, strings
and numeric numpy arrays. The layout is::

    b"PFW1" | u64 header length | JSON header | padding to 8 | array buffers (8-aligned)

The JSON header is the tree with each array replaced by ``{"\u0000a": [dtype, shape, offset,
nbytes]}``; buffers follow in order. :func:`unpack` checks the magic, the header, every dtype
(little-endian numbers and booleans only), shape, offset and length, and returns arrays as
views of one writable copy of the message. Byte counts reported for a round's communication
(``RoundRecord.costs``) are the lengths of these messages.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from privfed.errors import PrivfedError

__all__ = ["WireError", "pack", "unpack"]

MAGIC = b"PFW1"
_ARRAY = "\u0000a"
_ALIGN = 8
#: Array dtypes a message may carry (little-endian numbers and booleans).
_KINDS = frozenset("biuf")


class WireError(PrivfedError):
    """A message is malformed: wrong magic, bad header, or an array out of bounds."""


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def pack(tree: Mapping[str, Any]) -> bytes:
    """Pack ``tree`` into one message (see the module docstring for what a tree may hold).

    Raises:
        TypeError: a value of another type, a non-string key, or a key starting with NUL.
    """
    buffers: list[memoryview] = []
    offset = 0

    def conv(v: Any) -> Any:
        nonlocal offset
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, (int, np.integer)):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return float(v)
        if isinstance(v, np.ndarray):
            if v.dtype.kind not in _KINDS:
                raise TypeError(f"cannot pack an array of dtype {v.dtype}")
            arr = np.ascontiguousarray(v, dtype=v.dtype.newbyteorder("<"))
            entry = [arr.dtype.str, list(arr.shape), offset, arr.nbytes]
            buffers.append(memoryview(arr.reshape(-1)).cast("B"))  # type: ignore[arg-type]
            offset += arr.nbytes + _pad(arr.nbytes)
            return {_ARRAY: entry}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, Mapping):
            out = {}
            for k, x in v.items():
                if not isinstance(k, str) or k.startswith("\u0000"):
                    raise TypeError(f"message keys must be strings not starting with NUL: {k!r}")
                out[k] = conv(x)
            return out
        raise TypeError(f"cannot pack a value of type {type(v).__name__}")

    header = json.dumps(conv(tree), separators=(",", ":"), allow_nan=True).encode()
    head = MAGIC + struct.pack("<Q", len(header)) + header
    parts: list[bytes | memoryview] = [head, b"\0" * _pad(len(head))]
    for buf in buffers:
        parts.append(buf)
        parts.append(b"\0" * _pad(len(buf)))
    return b"".join(parts)


def unpack(data: bytes | memoryview, *, what: str = "message") -> dict[str, Any]:
    """Check and unpack a message made by :func:`pack`.

    Args:
        data: the message.
        what: what the message is, for error messages (e.g. ``"task for client 3"``).

    Raises:
        WireError: naming ``what`` and the problem.
    """
    # One copy into a writable buffer: the arrays are views of it, writable like any array.
    buf = bytearray(data)
    view = memoryview(buf)
    if len(view) < 12 or bytes(view[:4]) != MAGIC:
        raise WireError(f"{what}: not a privfed message (bad magic); was it cut short?")
    (hlen,) = struct.unpack("<Q", bytes(view[4:12]))
    if 12 + hlen > len(view):
        raise WireError(f"{what}: header of {hlen} bytes runs past the end ({len(view)} bytes)")
    try:
        tree = json.loads(bytes(view[12 : 12 + hlen]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"{what}: header is not valid JSON ({exc})") from None
    base = 12 + hlen + _pad(12 + hlen)
    body = len(view) - base

    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            if _ARRAY in v:
                return array(v[_ARRAY])
            return {k: conv(x) for k, x in v.items()}
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v

    def array(entry: Any) -> np.ndarray:
        try:
            dstr, shape, off, nbytes = entry
            dtype = np.dtype(dstr)
            shape = tuple(int(s) for s in shape)
            off, nbytes = int(off), int(nbytes)
        except (TypeError, ValueError) as exc:
            raise WireError(f"{what}: bad array entry {entry!r} ({exc})") from None
        if dtype.kind not in _KINDS or dtype.byteorder == ">":
            raise WireError(f"{what}: array dtype {dstr!r} is not allowed")
        if any(s < 0 for s in shape) or nbytes != math.prod(shape) * dtype.itemsize:
            raise WireError(f"{what}: array of shape {shape} cannot take {nbytes} bytes")
        if off < 0 or off + nbytes > body:
            raise WireError(f"{what}: array at {off}+{nbytes} runs past the end ({body} bytes)")
        if nbytes == 0:
            return np.zeros(shape, dtype=dtype)
        flat = np.frombuffer(buf, dtype=dtype, count=math.prod(shape), offset=base + off)
        return flat.reshape(shape)

    out = conv(tree)
    if not isinstance(out, dict):
        raise WireError(f"{what}: the message must hold a table, got {type(out).__name__}")
    return out

"""Read the data inside a pickle without unpickling it.

CIFAR-10's python batches are pickles, and ``pickle.load`` executes whatever the file says
(``os.system``, ``builtins.exec``...). Restricting ``Unpickler.find_class`` to numpy's array
globals (what privfed did before) stops the obvious payloads but still *calls* numpy's
reconstruction functions, ``numpy.dtype`` and ``ndarray.__setstate__`` with arguments the file
chooses. This module calls nothing the file names: :func:`parse_pickle` walks the opcodes with
:func:`pickletools.genops` (a parser that only decodes arguments) and evaluates them as data on
its own stack. The few globals a numpy array needs become inert markers, and an array is built
here, by ``numpy.frombuffer`` on bytes taken from the file, after its dtype, shape and length
are checked. Any other global, any opcode that would build an arbitrary object (``INST``,
``OBJ``, ``NEWOBJ``, extension codes, persistent ids, out-of-band buffers) is refused with a
:class:`~privfed.errors.DataError` naming the file.

What it reads: ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes`` (Python 2 ``str`` comes
back as ``bytes``, as with ``encoding="bytes"``), ``list``, ``tuple``, ``dict`` (keys of those
scalar types), and numpy arrays of bool / int / uint / float dtypes, from pickle protocols 0-5.
Arrays come from ``numpy[._]core.multiarray._reconstruct`` plus ``BUILD`` (protocols 0-4,
including files written by Python 2) or ``numpy[._]core.numeric._frombuffer`` with an in-band
buffer (protocol 5); ``_codecs.encode(text, "latin1")`` and ``bytes()`` (how Python 3 writes
``bytes`` at protocols 0-2) become bytes.

Bounds: at most ``max_ops`` opcodes; strings and buffers are slices of the file, so nothing is
allocated that the file does not hold (an array's length must equal its shape times its item
size); no recursion (the stack is a list; the result is checked iteratively).
"""

from __future__ import annotations

import math
import pickletools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privfed.errors import DataError

__all__ = ["ALLOWED_OPCODES", "parse_pickle", "read_pickle"]

MAX_OPS = 10_000_000
MAX_FILE_BYTES = 2**32

ALLOWED_OPCODES = frozenset(
    (
        *("PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP"),
        *("NONE", "NEWTRUE", "NEWFALSE", "INT", "BININT", "BININT1", "BININT2"),
        *("LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"),
        *("STRING", "BINSTRING", "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"),
        *("BYTEARRAY8", "READONLY_BUFFER"),
        *("UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"),
        *("EMPTY_LIST", "EMPTY_DICT", "EMPTY_TUPLE", "LIST", "TUPLE", "TUPLE1", "TUPLE2"),
        *("TUPLE3", "DICT", "APPEND", "APPENDS", "SETITEM", "SETITEMS"),
        *("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET"),
        *("GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD"),
    )
)
"""Opcodes :func:`parse_pickle` evaluates (as data); every other opcode is refused. ``GLOBAL`` /
``STACK_GLOBAL`` yield only inert markers for the allow-listed numpy names, and ``REDUCE`` /
``BUILD`` act only on those markers (see the module docstring)."""


@dataclass(frozen=True)
class _Global:
    """A global the file may name; never resolved to anything callable."""

    name: str


_RECONSTRUCT = _Global("numpy._core.multiarray._reconstruct")
_NDARRAY = _Global("numpy.ndarray")
_DTYPE = _Global("numpy.dtype")
_FROMBUFFER = _Global("numpy._core.numeric._frombuffer")
_ENCODE = _Global("_codecs.encode")
_BYTES = _Global("builtins.bytes")
_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DTYPE,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER,
    ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
    ("_codecs", "encode"): _ENCODE,
    # protocols 0-2 write b"" as bytes() and other bytes as _codecs.encode(text, "latin1")
    ("__builtin__", "bytes"): _BYTES,
    ("builtins", "bytes"): _BYTES,
}


@dataclass
class _DtypeStub:
    """``numpy.dtype(spec)`` as the file describes it, until its state is applied."""

    spec: str
    byteorder: str | None = None

    def resolve(self) -> np.dtype[Any]:
        base = _DTYPES[self.spec]
        if self.byteorder == "<":
            return base.newbyteorder("<")
        if self.byteorder == ">":
            return base.newbyteorder(">")
        return base


@dataclass
class _ArrayStub:
    """An empty array from ``_reconstruct``, waiting for the ``BUILD`` that fills it."""

    built: np.ndarray | None = None


@dataclass
class _Mark:
    pass


@dataclass
class _State:
    stack: list[Any] = field(default_factory=list)
    marks: list[int] = field(default_factory=list)
    memo: dict[int, Any] = field(default_factory=dict)


class _Refused(Exception):
    """The pickle asks for something this reader does not do."""


# The dtype names numpy's reduction writes (``dtype.str[1:]``) for the dtypes read here. A name
# from the file is looked up in this table and never handed to numpy.dtype() itself (whose
# string parser would evaluate the file's text).
_DTYPES = {
    f"{kind}{size}": np.dtype(f"{kind}{size}")
    for kind, sizes in (("b", (1,)), ("i", (1, 2, 4, 8)), ("u", (1, 2, 4, 8)), ("f", (2, 4, 8)))
    for size in sizes
}


def _dtype_from(spec: Any) -> _DtypeStub:
    if not isinstance(spec, (str, bytes)):
        raise _Refused(f"numpy.dtype of {type(spec).__name__}")
    text = spec.decode("latin-1") if isinstance(spec, bytes) else spec
    if text not in _DTYPES:
        raise _Refused(
            f"numpy.dtype {text[:16]!r} (only bool, int, uint and float arrays are read)"
        )
    return _DtypeStub(text)


def _shape(value: Any) -> tuple[int, ...]:
    if not isinstance(value, tuple) or len(value) > 32:
        raise _Refused("an array shape that is not a tuple of at most 32 sizes")
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value):
        raise _Refused(f"the array shape {value!r}")
    return value


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):  # Python 2 str read with encoding="latin1"-style semantics
        return value.encode("latin-1")
    raise _Refused(f"array data of type {type(value).__name__}")


def _array(data: Any, dtype: np.dtype[Any], shape: tuple[int, ...], order: str) -> np.ndarray:
    raw = _as_bytes(data)
    want = math.prod(shape) * dtype.itemsize
    if len(raw) != want:
        raise _Refused(
            f"an array of shape {list(shape)} and dtype {dtype} ({want} bytes) "
            f"with {len(raw)} bytes of data"
        )
    flat = np.frombuffer(raw, dtype=dtype, count=math.prod(shape))
    return flat.reshape(shape, order="F" if order == "F" else "C").copy()


def _reduce(func: Any, args: Any) -> Any:
    if not isinstance(args, tuple):
        raise _Refused("REDUCE with arguments that are not a tuple")
    if func is _RECONSTRUCT:
        if len(args) != 3 or args[0] is not _NDARRAY:
            raise _Refused("_reconstruct of something other than numpy.ndarray")
        return _ArrayStub()
    if func is _DTYPE:
        if not 1 <= len(args) <= 3:
            raise _Refused("numpy.dtype with unexpected arguments")
        return _dtype_from(args[0])
    if func is _FROMBUFFER:
        if len(args) != 4 or not isinstance(args[1], _DtypeStub) or args[3] not in ("C", "F"):
            raise _Refused("_frombuffer with unexpected arguments")
        return _array(args[0], args[1].resolve(), _shape(args[2]), args[3])
    if func is _BYTES:
        if args != ():
            raise _Refused("bytes() with arguments")
        return b""
    if func is _ENCODE:
        if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
            raise _Refused("_codecs.encode other than of text to latin1")
        return args[0].encode("latin-1")
    raise _Refused(f"a call of {type(func).__name__}")


def _build(obj: Any, state: Any) -> None:
    if isinstance(obj, _DtypeStub):
        if (
            not isinstance(state, tuple)
            or len(state) not in (8, 9)
            or state[0] not in (3, 4)
            or state[1] not in ("<", ">", "|", "=", b"<", b">", b"|", b"=")
            or any(v is not None for v in state[2:5])
        ):
            raise _Refused("a numpy.dtype state other than a plain numeric dtype")
        order = state[1].decode() if isinstance(state[1], bytes) else state[1]
        obj.byteorder = order
        return
    if isinstance(obj, _ArrayStub):
        if not isinstance(state, tuple) or len(state) not in (4, 5) or obj.built is not None:
            raise _Refused("an ndarray state of unexpected form")
        if len(state) == 5:
            if state[0] != 1:
                raise _Refused(f"an ndarray state of version {state[0]!r}")
            state = state[1:]
        shape, dtype, fortran, data = state
        if not isinstance(dtype, _DtypeStub) or not isinstance(fortran, bool):
            raise _Refused("an ndarray state of unexpected form")
        obj.built = _array(data, dtype.resolve(), _shape(shape), "F" if fortran else "C")
        return
    raise _Refused(f"BUILD (setting the state) of a {type(obj).__name__}")


def _pop_mark(st: _State) -> list[Any]:
    if not st.marks:
        raise _Refused("a MARK-terminated opcode without a MARK")
    k = st.marks.pop()
    items = st.stack[k:]
    del st.stack[k:]
    return items


def _pop(st: _State) -> Any:
    if not st.stack or (st.marks and len(st.stack) <= st.marks[-1]):
        raise _Refused("an opcode that pops from an empty stack (or across a MARK)")
    return st.stack.pop()


_KEY_TYPES = (str, bytes, int, float, type(None))


def _set_items(d: Any, items: list[Any]) -> None:
    if not isinstance(d, dict) or len(items) % 2:
        raise _Refused("SETITEM(S) on something that is not a dict")
    for k, v in zip(items[::2], items[1::2], strict=True):
        if not isinstance(k, _KEY_TYPES) and not (
            isinstance(k, tuple) and all(isinstance(x, _KEY_TYPES) for x in k)
        ):
            raise _Refused(f"a dict key of type {type(k).__name__}")
        d[k] = v


def _finish(obj: Any) -> Any:
    """Replace built array stubs by their arrays; refuse unfinished stubs (iteratively)."""

    def fix(v: Any) -> Any:
        if isinstance(v, _ArrayStub):
            if v.built is None:
                raise _Refused("an ndarray whose state was never set")
            return v.built
        if isinstance(v, (_DtypeStub, _Global, _Mark)):
            raise _Refused(f"a bare {type(v).__name__.strip('_')} in the data")
        return v

    root = [fix(obj)]
    todo: list[Any] = [root]
    seen: set[int] = set()
    while todo:
        c = todo.pop()
        if id(c) in seen:
            continue
        seen.add(id(c))
        if isinstance(c, list):
            for i, v in enumerate(c):
                c[i] = fix(v)
                if isinstance(c[i], (list, dict, tuple)):
                    todo.append(c[i])
        elif isinstance(c, dict):
            for k in list(c):
                c[k] = fix(c[k])
                if isinstance(c[k], (list, dict, tuple)):
                    todo.append(c[k])
        elif isinstance(c, tuple):
            for v in c:
                if isinstance(v, (_ArrayStub, _DtypeStub, _Global, _Mark)):
                    fix(v)  # tuples are immutable: only finished values may sit in them
                    raise _Refused("an ndarray inside a tuple")
                if isinstance(v, (list, dict, tuple)):
                    todo.append(v)
    return root[0]


def _ops(data: bytes, max_ops: int) -> Iterator[tuple[str, Any, int]]:
    for n, (op, arg, pos) in enumerate(pickletools.genops(data)):
        if n >= max_ops:
            raise _Refused(f"more than {max_ops} opcodes")
        yield op.name, arg, int(pos or 0)


def parse_pickle(data: bytes, *, name: str, max_ops: int = MAX_OPS) -> Any:
    """The value a pickle describes, computed from its opcodes without executing anything.

    Args:
        data: the pickle.
        name: the file name used in error messages.
        max_ops: refuse pickles with more opcodes.

    Returns:
        The value (see the module docstring for the types it may hold).

    Raises:
        DataError: naming ``name`` and what was refused or malformed.
    """
    st = _State()
    result: Any = _Mark()
    stop_at = -1
    try:
        for opname, arg, pos in _ops(data, max_ops):
            if opname not in ALLOWED_OPCODES:
                # INST, OBJ, NEWOBJ(_EX), EXT1/2/4, PERSID, BINPERSID, NEXT_BUFFER, sets
                raise _Refused(f"the opcode {opname} (it builds objects privfed does not read)")
            s = st.stack
            if opname in ("PROTO", "FRAME"):
                if opname == "PROTO" and not 0 <= arg <= 5:
                    raise _Refused(f"pickle protocol {arg}")
            elif opname == "STOP":
                if len(s) != 1 or st.marks:
                    raise _Refused("STOP with a stack that does not hold exactly one value")
                result = s.pop()
                stop_at = pos
            elif opname == "MARK":
                st.marks.append(len(s))
            elif opname == "POP":
                _pop(st)
            elif opname == "POP_MARK":
                _pop_mark(st)
            elif opname == "DUP":
                top = _pop(st)
                s.extend((top, top))
            elif opname == "NONE":
                s.append(None)
            elif opname in ("NEWTRUE", "NEWFALSE"):
                s.append(opname == "NEWTRUE")
            elif opname in ("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"):
                s.append(arg)
            elif opname in ("FLOAT", "BINFLOAT"):
                s.append(float(arg))
            elif opname in ("STRING", "BINSTRING", "SHORT_BINSTRING"):
                s.append(str(arg).encode("latin-1"))  # Python 2 str, as encoding="bytes"
            elif opname in ("BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8"):
                s.append(bytes(arg))
            elif opname in ("UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"):
                s.append(str(arg))
            elif opname == "READONLY_BUFFER":
                if not s or not isinstance(s[-1], bytes):
                    raise _Refused("READONLY_BUFFER on something that is not a buffer")
            elif opname == "EMPTY_LIST":
                s.append([])
            elif opname == "EMPTY_DICT":
                s.append({})
            elif opname == "EMPTY_TUPLE":
                s.append(())
            elif opname == "LIST":
                s.append(_pop_mark(st))
            elif opname == "TUPLE":
                s.append(tuple(_pop_mark(st)))
            elif opname in ("TUPLE1", "TUPLE2", "TUPLE3"):
                k = int(opname[-1])
                items = [_pop(st) for _ in range(k)][::-1]
                s.append(tuple(items))
            elif opname == "DICT":
                d: dict[Any, Any] = {}
                _set_items(d, _pop_mark(st))
                s.append(d)
            elif opname == "APPEND":
                v = _pop(st)
                if not s or not isinstance(s[-1], list):
                    raise _Refused("APPEND to something that is not a list")
                s[-1].append(v)
            elif opname == "APPENDS":
                items = _pop_mark(st)
                if not s or not isinstance(s[-1], list):
                    raise _Refused("APPENDS to something that is not a list")
                s[-1].extend(items)
            elif opname == "SETITEM":
                v = _pop(st)
                k = _pop(st)
                _set_items(s[-1] if s else None, [k, v])
            elif opname == "SETITEMS":
                items = _pop_mark(st)
                _set_items(s[-1] if s else None, items)
            elif opname in ("PUT", "BINPUT", "LONG_BINPUT"):
                if not s:
                    raise _Refused("PUT with an empty stack")
                st.memo[int(arg)] = s[-1]
            elif opname == "MEMOIZE":
                if not s:
                    raise _Refused("MEMOIZE with an empty stack")
                st.memo[len(st.memo)] = s[-1]
            elif opname in ("GET", "BINGET", "LONG_BINGET"):
                if int(arg) not in st.memo:
                    raise _Refused(f"memo entry {arg} that was never stored")
                s.append(st.memo[int(arg)])
            elif opname in ("GLOBAL", "STACK_GLOBAL"):
                if opname == "GLOBAL":
                    module, _, qual = str(arg).partition(" ")
                else:
                    qual, module = _pop(st), _pop(st)
                    if not isinstance(module, str) or not isinstance(qual, str):
                        raise _Refused("STACK_GLOBAL with names that are not strings")
                marker = _GLOBALS.get((module, qual))
                if marker is None:
                    raise DataError(
                        f"{name} refers to {module}.{qual}; only numpy array globals are "
                        "allowed in a data pickle, so the file was refused unread"
                    )
                s.append(marker)
            elif opname == "REDUCE":
                args = _pop(st)
                func = _pop(st)
                s.append(_reduce(func, args))
            elif opname == "BUILD":
                state = _pop(st)
                target = _pop(st)
                _build(target, state)
                if isinstance(target, _ArrayStub):
                    # From here on the array stands wherever the stub was referenced.
                    for k, v in st.memo.items():
                        if v is target:
                            st.memo[k] = target.built
                    target = target.built
                s.append(target)
            else:  # pragma: no cover - ALLOWED_OPCODES and the branches above agree
                raise AssertionError(f"allowed opcode {opname} has no handler")
        if stop_at < 0:
            raise _Refused("no STOP opcode")
        if stop_at + 1 != len(data):
            raise _Refused(f"{len(data) - stop_at - 1} bytes after the STOP opcode")
        return _finish(result)
    except DataError:
        raise
    except _Refused as exc:
        raise DataError(
            f"{name} is refused: its pickle asks for {exc}; privfed reads only plain data and "
            "numpy arrays from pickles and never runs code from them"
        ) from None
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, MemoryError) as exc:
        # pickletools raises ValueError on truncated or unknown opcodes
        raise DataError(f"{name} is not a valid pickle: {exc}") from None


def read_pickle(file: Path, *, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """:func:`parse_pickle` of ``file``'s content.

    Raises:
        DataError: the file cannot be read, is larger than ``max_bytes``, or is refused.
    """
    try:
        with file.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise DataError(f"{file} cannot be read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise DataError(f"{file} is larger than {max_bytes} bytes; it is not a dataset batch")
    return parse_pickle(data, name=str(file))

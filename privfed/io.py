"""File writes that never leave half a file, and JSON reads that never trust the file.

Writes go through a temporary file in the same directory (``.NAME.RANDOM.tmp``), flushed and
fsynced, then renamed over the target: a reader (or a resumed run) sees the old file or the new
one, never half of one. (The directory is not fsynced after the rename: that would only make
the rename itself reach the disk sooner, at one more disk flush per file.) A failed write
removes its temporary file and leaves the previous version of the target untouched; an
:class:`OSError` (full disk, read-only or permission-denied directory) becomes a
:class:`~privfed.errors.StorageError` naming the path and what to do. A process killed mid-write
can still leave a temporary file behind: :func:`remove_stale_temps` removes those of named
files (a run calls it on its own directory when it starts).

Files are created with mode ``0o666`` minus the process umask (``0644`` under the usual umask
022), the mode ``open()`` gives, so every file of a run directory has the same permissions.

Reads: :func:`parse_json` is strict JSON (no ``NaN``/``Infinity`` literals, no duplicate keys)
whose nesting is bounded by the interpreter's recursion limit without exhausting the stack; a
document nested deeper is a ``ValueError``, never a ``RecursionError``. :func:`read_json` adds a
size limit. Callers validate the structure of what they accept.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from privfed.errors import StorageError

#: Largest JSON file :func:`read_json` reads by default (run files are far smaller).
MAX_JSON_BYTES = 256 * 2**20

_TEMP_SUFFIX = ".tmp"


def storage_error(path: str | Path, exc: OSError, *, action: str = "write") -> StorageError:
    """A :class:`StorageError` for ``exc`` that names ``path`` and says what to do.

    Args:
        path: the file or directory the operation was on.
        exc: the operating system error.
        action: what was attempted (``"write"``, ``"create the directory"``, ``"read"``...).
    """
    code = exc.errno
    if code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        why = "no space left on the device (disk full or quota exceeded)"
        fix = "free disk space, or choose a directory on another disk, and try again"
    elif code == errno.EROFS:
        why = "the file system is read-only"
        fix = "choose a directory on a writable disk"
    elif code in (errno.EACCES, errno.EPERM):
        why = "permission denied"
        fix = "make the directory writable for this user, or choose another directory"
    else:
        why = exc.strerror or str(exc)
        fix = "check the disk and the directory, then try again"
    return StorageError(f"cannot {action} {path}: {why}; {fix}", path=str(path), errno=code)


def _create_temp(path: Path) -> tuple[Path, int]:
    """A new temporary file next to ``path``, opened for writing (mode 0o666 & ~umask)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}"
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path))


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` atomically: ``write(fh)`` fills a temporary file that replaces ``path``.

    On any failure (including an exception from ``write``) the temporary file is removed and
    ``path`` keeps its previous content.

    Raises:
        StorageError: the directory cannot be created or the file cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise storage_error(path.parent, exc, action="create the directory") from None
    try:
        tmp, fd = _create_temp(path)
    except OSError as exc:
        raise storage_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        _unlink_quietly(tmp)
        if isinstance(exc, OSError):
            raise storage_error(path, exc) from None
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""

    def write(fh: IO[bytes]) -> None:
        fh.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def append_text(path: str | Path, text: str) -> None:
    """Append UTF-8 ``text`` to ``path`` (created if missing), all of it or nothing.

    A failed append (e.g. the disk filled up half-way) truncates the file back to its previous
    length, so no torn line is left behind.

    Raises:
        StorageError: the file cannot be opened or written.
    """
    path = Path(path)
    try:
        fh = open(path, "ab")  # noqa: SIM115 - closed below, truncated on failure
    except OSError as exc:
        raise storage_error(path, exc) from None
    with fh:
        start = fh.tell()
        try:
            fh.write(text.encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
        except BaseException as exc:
            try:
                fh.truncate(start)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise storage_error(path, exc) from None
            raise


def remove_stale_temps(directory: str | Path, names: Iterable[str]) -> list[Path]:
    """Remove temporary files left by interrupted atomic writes of ``names`` in ``directory``.

    Only files named ``.NAME.<hex>.tmp`` for the given names are touched.

    Returns:
        The files removed.
    """
    d = Path(directory)
    removed: list[Path] = []
    if not d.is_dir():
        return removed
    for name in names:
        for p in d.glob(f".{name}.*{_TEMP_SUFFIX}"):
            middle = p.name[len(name) + 2 : -len(_TEMP_SUFFIX)]
            if p.is_file() and middle and all(c in "0123456789abcdef" for c in middle):
                _unlink_quietly(p)
                removed.append(p)
    return removed


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's content (what ``sha256sum`` prints)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return _json_safe(obj.item())
    return obj


def to_json(obj: Any, *, indent: int | None = None) -> str:
    """Strict JSON (infinities and NaN written as the strings "inf", "-inf", "nan")."""
    return json.dumps(_json_safe(obj), indent=indent, sort_keys=True, allow_nan=False)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON atomically."""
    atomic_write_text(path, to_json(obj, indent=2) + "\n")


def rewrite_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Atomically replace a JSON-lines file with ``rows``."""
    atomic_write_text(path, "".join(to_json(r) + "\n" for r in rows))


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number (strict JSON has no NaN or Infinity)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"the key {k!r} appears twice in one object")
            seen.add(k)
    return out


def parse_json(
    text: str | bytes,
    *,
    parse_int: Callable[[str], Any] | None = None,
    parse_float: Callable[[str], Any] | None = None,
) -> Any:
    """Parse strict JSON from an untrusted source.

    Refuses ``NaN`` / ``Infinity`` literals and objects with a repeated key. Nesting deeper
    than the interpreter's recursion limit (about 1,000 levels) is refused with a
    ``ValueError``; the decoder checks the depth as it descends, so no input exhausts the stack.

    Args:
        text: the document.
        parse_int: called with the text of every integer (default ``int``); may raise
            ``ValueError`` to refuse it.
        parse_float: called with the text of every non-integer number (default ``float``).

    Raises:
        ValueError: the text is not strict JSON or is nested too deeply.
    """
    try:
        return json.loads(
            text,
            parse_constant=_no_constants,
            object_pairs_hook=_unique_keys,
            parse_int=parse_int,
            parse_float=parse_float,
        )
    except RecursionError:
        raise ValueError(
            "nested too deeply (more levels of arrays/objects than the parser allows)"
        ) from None


def read_json(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read and parse a JSON file with :func:`parse_json`, refusing files over ``max_bytes``.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is too large, not UTF-8, not strict JSON, or nested too deeply.
    """
    p = Path(path)
    with p.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes} bytes, more than this file can hold")
    return parse_json(data.decode("utf-8"))


def read_jsonl(path: str | Path, *, max_bytes: int = 4 * MAX_JSON_BYTES) -> list[dict[str, Any]]:
    """Every complete row of a JSON-lines file of objects.

    Reading stops at the first line that is not a JSON object (a torn last line after a crash);
    a missing file gives no rows.

    Raises:
        OSError: the file exists but cannot be read.
        ValueError: the file is larger than ``max_bytes``.
    """
    p = Path(path)
    if not p.exists():
        return []
    with p.open("rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{p} is larger than {max_bytes} bytes; it is not a privfed file")
    rows = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = parse_json(line)
        except ValueError:
            break
        if not isinstance(row, dict):
            break
        rows.append(row)
    return rows

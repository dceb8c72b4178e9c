"""Readers of datasets the user has already placed in a local directory.

privfed never downloads. Each reader validates what it reads and raises a
:class:`~privfed.errors.DataError` naming the file and what was expected:

* MNIST IDX (LeCun et al.): big-endian magic ``0x00000803`` (uint8 images, 3 dims) or
  ``0x00000801`` (uint8 labels, 1 dim), then the dims as big-endian uint32, then the data.
* CIFAR-10 python batches (Krizhevsky 2009): pickled dicts with ``b"data"`` (uint8 N x 3072)
  and ``b"labels"`` (ints in 0..9). Unpickling can run arbitrary code, so these files are never
  unpickled: :func:`privfed.data.safepickle.read_pickle` evaluates their opcodes as data and
  builds the arrays itself; any other global or object-building opcode is refused. Files with
  unknown names in the directory are refused too.
* LEAF JSON (Caldas et al. 2018): ``{"users": [...], "num_samples": [...],
  "user_data": {user: {"x": [...], "y": [...]}}}``; FEMNIST (x = 784 finite numbers, y an int in
  0..61) or Shakespeare (x = 80-character strings, y = the next character). JSON is parsed
  strictly (no ``NaN``/``Infinity``, no repeated keys, bounded nesting); a non-finite or
  float32-overflowing x, a label out of range or not an integer, or a record of the wrong length
  is refused naming the file, the user and the record.

The readers return raw arrays; :mod:`privfed.data.sources` turns them into ``SourceData``.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from privfed.data.safepickle import read_pickle
from privfed.errors import ConfigError, DataError
from privfed.io import parse_json

_NEVER = "privfed never downloads data; place the files there yourself"


@dataclass(frozen=True)
class ImageArrays:
    """Images and labels read from files.

    Attributes:
        x: uint8 images, [N, 28, 28] (MNIST) or [N, 3072] (CIFAR-10).
        y: int64 [N] labels.
        files: the files read, in order.
        label_names: class names when the files carry them, else empty.
    """

    x: np.ndarray
    y: np.ndarray
    files: tuple[str, ...]
    label_names: tuple[str, ...] = ()


def _require_dir(path: Path, what: str, expected: list[str]) -> None:
    if not path.is_dir():
        raise DataError(
            f"{what} directory {path} does not exist; expected it to contain "
            f"{', '.join(expected)}. {_NEVER}."
        )


# ---------------------------------------------------------------------------------------- MNIST

IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801
_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def _find_idx(path: Path, stem: str) -> Path:
    for candidate in (path / stem, path / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"MNIST file {path / stem} (or {stem}.gz) is missing. {_NEVER}.")


MAX_IDX_BYTES = 2**32
"""Largest IDX payload read (MNIST's training images are 47 MB)."""


def read_idx(file: Path, *, magic: int, ndim: int) -> np.ndarray:
    """Read one uint8 IDX file and check its magic number, dims and length.

    The header's dimensions are multiplied as Python integers (no overflow) and must describe
    exactly the bytes that follow, at most :data:`MAX_IDX_BYTES`; a ``.gz`` file is decompressed
    only up to one byte past what its header declares, so a decompression bomb is refused
    without being expanded.

    Args:
        file: the file (``.gz`` is decompressed).
        magic: expected magic number (``0x00000803`` images, ``0x00000801`` labels).
        ndim: expected number of dimensions (3 images, 1 labels).

    Returns:
        The uint8 array of the shape the header declares.
    """
    header = 4 + 4 * ndim
    try:
        opener = gzip.open if file.suffix == ".gz" else open
        with opener(file, "rb") as fh:
            head = fh.read(header)
            if len(head) < header:
                raise DataError(
                    f"MNIST file {file} is {len(head)} bytes, shorter than its {header}-byte header"
                )
            (got,) = struct.unpack(">I", head[:4])
            if got != magic:
                raise DataError(
                    f"MNIST file {file} has magic 0x{got:08x}, expected 0x{magic:08x} "
                    f"(uint8 IDX with {ndim} dims, big-endian)"
                )
            dims = struct.unpack(f">{ndim}I", head[4:header])
            count = math.prod(dims)
            if count > MAX_IDX_BYTES:
                raise DataError(
                    f"MNIST file {file} declares dims {list(dims)} = {count} bytes of data, "
                    f"more than the {MAX_IDX_BYTES} privfed reads; the header is damaged or "
                    "this is not an MNIST file"
                )
            body = fh.read(count + 1)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise DataError(f"MNIST file {file} cannot be read: {exc}") from exc
    if len(body) != count:
        found = f"{len(body)}" if len(body) <= count else "more"
        raise DataError(
            f"MNIST file {file} declares dims {list(dims)} = {count} bytes of data, "
            f"found {found}; the file is truncated or damaged: replace it"
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims).copy()


def read_mnist(path: Path, *, split: str = "all") -> ImageArrays:
    """Read MNIST IDX files from ``path``.

    Args:
        path: directory with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``).
        split: ``"train"``, ``"test"`` or ``"all"`` (train then test).

    Returns:
        uint8 [N, 28, 28] images and int64 labels.
    """
    splits = {"train": ["train"], "test": ["test"], "all": ["train", "test"]}
    if split not in splits:
        raise ConfigError(f"split must be 'train', 'test' or 'all', got {split!r}")
    expected = [f for s in splits[split] for f in _MNIST_FILES[s]]
    _require_dir(path, "MNIST", expected)
    xs, ys, files = [], [], []
    for s in splits[split]:
        img_file = _find_idx(path, _MNIST_FILES[s][0])
        lab_file = _find_idx(path, _MNIST_FILES[s][1])
        x = read_idx(img_file, magic=IDX_IMAGES_MAGIC, ndim=3)
        y = read_idx(lab_file, magic=IDX_LABELS_MAGIC, ndim=1)
        if x.shape[1:] != (28, 28):
            raise DataError(
                f"MNIST file {img_file} has images of {list(x.shape[1:])}, expected [28, 28]"
            )
        if x.shape[0] != y.shape[0]:
            raise DataError(
                f"MNIST file {lab_file} has {y.shape[0]} labels but {img_file} has "
                f"{x.shape[0]} images; expected equal counts"
            )
        if y.size and y.max() > 9:
            i = int(np.argmax(y > 9))
            raise DataError(
                f"MNIST file {lab_file} has label {int(y[i])} at record {i}, expected 0..9; the "
                "file is damaged or not MNIST: replace it"
            )
        xs.append(x)
        ys.append(y.astype(np.int64))
        files += [str(img_file), str(lab_file)]
    return ImageArrays(x=np.concatenate(xs), y=np.concatenate(ys), files=tuple(files))


# ------------------------------------------------------------------------------------- CIFAR-10

CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)
CIFAR_META = "batches.meta"
CIFAR_KNOWN = frozenset((*CIFAR_TRAIN, *CIFAR_TEST, CIFAR_META, "readme.html"))


def _key(d: dict[Any, Any], key: str) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(key)


def _read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = read_pickle(file)
    if not isinstance(obj, dict):
        raise DataError(f"CIFAR-10 file {file} holds a {type(obj).__name__}, expected a dict")
    try:
        data, labels = _key(obj, "data"), _key(obj, "labels")
    except KeyError as exc:
        raise DataError(
            f"CIFAR-10 file {file} has no {exc} entry; expected b'data' and b'labels'"
        ) from None
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3072
    ):
        desc = (
            f"{data.dtype} {list(data.shape)}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise DataError(f"CIFAR-10 file {file}: data is {desc}, expected uint8 N x 3072")
    if not isinstance(labels, list):
        raise DataError(f"CIFAR-10 file {file}: labels must be a list of ints in 0..9")
    for i, v in enumerate(labels):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= 9:
            raise DataError(
                f"CIFAR-10 file {file}: labels must be a list of ints in 0..9; record {i} has {v!r}"
            )
    if len(labels) != data.shape[0]:
        raise DataError(
            f"CIFAR-10 file {file}: {len(labels)} labels for {data.shape[0]} images; expected equal"
        )
    return data, np.asarray(labels, dtype=np.int64)


def read_cifar10(path: Path, *, split: str = "all") -> ImageArrays:
    """Read CIFAR-10 python batches from ``path`` without trusting the pickles.

    Args:
        path: a ``cifar-10-batches-py`` directory. Any file other than ``data_batch_1..5``,
            ``test_batch``, ``batches.meta`` and ``readme.html`` makes the directory refused.
        split: ``"train"``, ``"test"`` or ``"all"`` (train then test).

    Returns:
        uint8 [N, 3072] images (channel-major, as stored) and int64 labels.
    """
    splits = {"train": CIFAR_TRAIN, "test": CIFAR_TEST, "all": CIFAR_TRAIN + CIFAR_TEST}
    if split not in splits:
        raise ConfigError(f"split must be 'train', 'test' or 'all', got {split!r}")
    names = list(splits[split])
    _require_dir(path, "CIFAR-10", [*names, CIFAR_META])
    unknown = sorted(p.name for p in path.iterdir() if p.name not in CIFAR_KNOWN)
    if unknown:
        raise DataError(
            f"CIFAR-10 directory {path} holds unknown files {unknown}; privfed reads only "
            f"{sorted(CIFAR_KNOWN - {'readme.html'})}: remove the others"
        )
    xs, ys, files = [], [], []
    for name in names:
        file = path / name
        if not file.is_file():
            raise DataError(f"CIFAR-10 file {file} is missing. {_NEVER}.")
        x, y = _read_cifar_batch(file)
        xs.append(x)
        ys.append(y)
        files.append(str(file))
    label_names: tuple[str, ...] = ()
    meta_file = path / CIFAR_META
    if meta_file.is_file():
        meta = read_pickle(meta_file)
        try:
            raw = _key(meta, "label_names") if isinstance(meta, dict) else None
        except KeyError:
            raw = None
        if not isinstance(raw, list) or len(raw) != 10:
            raise DataError(
                f"CIFAR-10 file {meta_file}: expected b'label_names', a list of 10 names"
            )
        label_names = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in raw)
        files.append(str(meta_file))
    return ImageArrays(
        x=np.concatenate(xs), y=np.concatenate(ys), files=tuple(files), label_names=label_names
    )


# ----------------------------------------------------------------------------------------- LEAF

LEAF_CHARS = "\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}"
"""LEAF's Shakespeare character vocabulary (``ALL_LETTERS`` in LEAF's language_utils); any
other character maps to the extra id ``len(LEAF_CHARS)`` (unknown)."""

_CHAR_ID = {c: i for i, c in enumerate(LEAF_CHARS)}
FEMNIST_CLASSES = 62
FEMNIST_PIXELS = 784
SHAKESPEARE_LEN = 80


@dataclass(frozen=True)
class LeafArrays:
    """Records read from LEAF JSON files.

    Attributes:
        x: float32 [N, 784] (FEMNIST) or int64 [N, 80] character ids (Shakespeare).
        y: int64 [N] class or next-character id.
        owner: int64 [N] index of the record's user in ``users``.
        users: user names in order of first appearance.
        kind: ``"image"`` or ``"text"``.
        num_classes: 62 (FEMNIST) or ``len(LEAF_CHARS) + 1`` (Shakespeare, with unknown).
        files: the JSON files read, in order.
    """

    x: np.ndarray
    y: np.ndarray
    owner: np.ndarray
    users: tuple[str, ...]
    kind: str
    num_classes: int
    files: tuple[str, ...]


def encode_chars(text: str) -> list[int]:
    """Map characters to LEAF vocabulary ids (unknown characters -> ``len(LEAF_CHARS)``)."""
    unknown = len(LEAF_CHARS)
    return [_CHAR_ID.get(c, unknown) for c in text]


MAX_LEAF_FILE_BYTES = 2**32
"""Largest LEAF JSON file read (LEAF's FEMNIST files are a few hundred MB)."""
_F32_MAX = float(np.finfo(np.float32).max)


def _leaf_doc(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as fh:
            raw = fh.read(MAX_LEAF_FILE_BYTES + 1)
        if len(raw) > MAX_LEAF_FILE_BYTES:
            raise DataError(
                f"LEAF file {file} is larger than {MAX_LEAF_FILE_BYTES} bytes; split it or check "
                "that it is a LEAF file"
            )
        doc = parse_json(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"LEAF file {file} is not readable JSON: {exc}") from None
    if not isinstance(doc, dict) or not {"users", "num_samples", "user_data"} <= set(doc):
        raise DataError(
            f"LEAF file {file} must be an object with keys users, num_samples, user_data"
        )
    return doc


def _bad_image_record(ux: list[Any]) -> tuple[int, str]:
    """The first record of ``ux`` that is not 784 finite float32 numbers, and why."""
    for i, xi in enumerate(ux):
        if not isinstance(xi, list) or len(xi) != FEMNIST_PIXELS:
            return i, f"x must be a list of {FEMNIST_PIXELS} numbers"
        for j, v in enumerate(xi):
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                return i, f"x[{j}] is {v!r}, not a number"
            if not math.isfinite(v) or abs(v) > _F32_MAX:
                return i, f"x[{j}] is {v!r}, not a finite float32 value"
    raise AssertionError("no bad record")  # pragma: no cover - only called after a failure


def _image_records(file: Path, user: str, ux: list[Any], uy: list[Any]) -> np.ndarray:
    """FEMNIST records of one user as float32 [n, 784], every value and label checked."""
    for i, yi in enumerate(uy):
        if not isinstance(yi, int) or isinstance(yi, bool) or not 0 <= yi < FEMNIST_CLASSES:
            raise DataError(
                f"LEAF file {file}: user {user!r}, record {i}: expected y an int in "
                f"0..{FEMNIST_CLASSES - 1}, got {yi!r}; fix or remove the record"
            )
    try:
        arr = np.asarray(ux)
        ok = arr.dtype.kind in "iuf" and arr.shape == (len(ux), FEMNIST_PIXELS)
        if ok:
            with np.errstate(over="ignore", invalid="ignore"):
                arr = arr.astype(np.float64)
                ok = bool(np.isfinite(arr).all() and (np.abs(arr) <= _F32_MAX).all())
    except (ValueError, TypeError, OverflowError):
        ok = False  # ragged or not numbers: the scan below names the record
    if not ok:
        i, why = _bad_image_record(ux)
        raise DataError(
            f"LEAF file {file}: user {user!r}, record {i}: {why}; fix or remove the record"
        )
    return arr.astype(np.float32)


def read_leaf(path: Path) -> LeafArrays:
    """Read every ``*.json`` file under ``path`` (e.g. LEAF's ``data/train`` and ``data/test``).

    Users appearing in several files (train and test) keep one owner index.

    Args:
        path: directory searched recursively.

    Returns:
        The records of all users.

    Raises:
        DataError: naming the file (and the user and record) of anything malformed, non-finite
            or out of range.
    """
    _require_dir(path, "LEAF", ["*.json files with keys users, num_samples, user_data"])
    files = sorted(path.rglob("*.json"))
    if not files:
        raise DataError(
            f"LEAF directory {path} has no *.json files; expected LEAF JSON with keys users, "
            f"num_samples, user_data. {_NEVER}."
        )
    users: dict[str, int] = {}
    xs: list[np.ndarray] = []
    ys: list[int] = []
    owners: list[int] = []
    kind: str | None = None
    for file in files:
        doc = _leaf_doc(file)
        names, counts, data = doc["users"], doc["num_samples"], doc["user_data"]
        if not isinstance(names, list) or not isinstance(counts, list) or len(names) != len(counts):
            raise DataError(
                f"LEAF file {file}: users and num_samples must be lists of equal length"
            )
        if not isinstance(data, dict):
            raise DataError(f"LEAF file {file}: user_data must be an object keyed by user")
        if not all(isinstance(u, str) for u in names) or len(set(names)) != len(names):
            raise DataError(f"LEAF file {file}: users must be distinct strings")
        for user, count in zip(names, counts, strict=True):
            record = data.get(user)
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("x"), list)
                or not isinstance(record.get("y"), list)
            ):
                raise DataError(f"LEAF file {file}: user_data[{user!r}] must have lists x and y")
            ux, uy = record["x"], record["y"]
            if len(ux) != count or len(uy) != count:
                raise DataError(
                    f"LEAF file {file}: user {user!r} has num_samples {count!r} but "
                    f"{len(ux)} x and {len(uy)} y"
                )
            if not ux:
                continue
            this = "text" if isinstance(ux[0], str) else "image"
            if kind is None:
                kind = this
            elif kind != this:
                raise DataError(
                    f"LEAF file {file}: user {user!r} has {this} records, earlier users have "
                    f"{kind} records; one LEAF directory holds one dataset"
                )
            if this == "text":
                ids = []
                for i, (xi, yi) in enumerate(zip(ux, uy, strict=True)):
                    if (
                        not isinstance(xi, str)
                        or len(xi) != SHAKESPEARE_LEN
                        or not isinstance(yi, str)
                        or len(yi) != 1
                    ):
                        raise DataError(
                            f"LEAF file {file}: user {user!r}, record {i}: expected x an "
                            f"{SHAKESPEARE_LEN}-character string and y one character"
                        )
                    ids.append(encode_chars(xi))
                    ys.append(encode_chars(yi)[0])
                xs.append(np.asarray(ids, dtype=np.int64).reshape(-1, SHAKESPEARE_LEN))
            else:
                xs.append(_image_records(file, user, ux, uy))
                ys.extend(uy)
            owners.extend([users.setdefault(user, len(users))] * len(ux))
    if kind is None:
        raise DataError(f"LEAF directory {path} has no records")
    if kind == "text":
        x = np.concatenate(xs).astype(np.int64)
        num_classes = len(LEAF_CHARS) + 1
    else:
        x = np.concatenate(xs).astype(np.float32)
        num_classes = FEMNIST_CLASSES
    return LeafArrays(
        x=x,
        y=np.asarray(ys, dtype=np.int64),
        owner=np.asarray(owners, dtype=np.int64),
        users=tuple(users),
        kind=kind,
        num_classes=num_classes,
        files=tuple(str(f) for f in files),
    )

"""Readers of datasets the user has already placed in a local directory.

privfed never downloads. Each reader validates what it reads and raises a
:class:`~privfed.errors.DataError` naming the file and what was expected:

* MNIST IDX (LeCun et al.): big-endian magic ``0x00000803`` (uint8 images, 3 dims) or
  ``0x00000801`` (uint8 labels, 1 dim), then the dims as big-endian uint32, then the data.
* CIFAR-10 python batches (Krizhevsky 2009): pickled dicts with ``b"data"`` (uint8 N x 3072)
  and ``b"labels"`` (ints in 0..9). Pickle can run arbitrary code, so these files are read by
  :class:`RestrictedUnpickler`, which resolves only numpy's array-reconstruction globals and
  refuses every other global; files with unknown names are refused too.
* LEAF JSON (Caldas et al. 2018): ``{"users": [...], "num_samples": [...],
  "user_data": {user: {"x": [...], "y": [...]}}}``; FEMNIST (x = 784 floats, y in 0..61) or
  Shakespeare (x = 80-character strings, y = the next character).

The readers return raw arrays; :mod:`privfed.data.sources` turns them into ``SourceData``.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from privfed.errors import ConfigError, DataError

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


def read_idx(file: Path, *, magic: int, ndim: int) -> np.ndarray:
    """Read one uint8 IDX file and check its magic number, dims and length.

    Args:
        file: the file (``.gz`` is decompressed).
        magic: expected magic number (``0x00000803`` images, ``0x00000801`` labels).
        ndim: expected number of dimensions (3 images, 1 labels).

    Returns:
        The uint8 array of the shape the header declares.
    """
    try:
        raw = gzip.decompress(file.read_bytes()) if file.suffix == ".gz" else file.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"MNIST file {file} cannot be read: {exc}") from exc
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(
            f"MNIST file {file} is {len(raw)} bytes, shorter than its {header}-byte header"
        )
    (got,) = struct.unpack(">I", raw[:4])
    if got != magic:
        raise DataError(
            f"MNIST file {file} has magic 0x{got:08x}, expected 0x{magic:08x} "
            f"(uint8 IDX with {ndim} dims, big-endian)"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != count:
        raise DataError(
            f"MNIST file {file} declares dims {list(dims)} = {count} bytes of data, "
            f"found {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


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
            raise DataError(f"MNIST file {lab_file} has label {int(y.max())}, expected 0..9")
        xs.append(x)
        ys.append(y.astype(np.int64))
        files += [str(img_file), str(lab_file)]
    return ImageArrays(x=np.concatenate(xs), y=np.concatenate(ys), files=tuple(files))


# ------------------------------------------------------------------------------------- CIFAR-10

CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST = ("test_batch",)
CIFAR_META = "batches.meta"
CIFAR_KNOWN = frozenset((*CIFAR_TRAIN, *CIFAR_TEST, CIFAR_META, "readme.html"))


def _allowed_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric

    reconstruct = multiarray._reconstruct
    frombuffer = getattr(numeric, "_frombuffer")  # noqa: B009 (private, untyped in the stubs)
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # protocol 5 (Python >= 3.14 default) rebuilds arrays from an in-band buffer
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays and plain Python containers.

    ``find_class`` resolves exactly numpy's array-reconstruction globals
    (``numpy[._]core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype`` and, for
    pickle protocol 5, ``numpy[._]core.numeric._frombuffer``); any other global (``os.system``,
    ``builtins.eval``, ...) raises a DataError before it is resolved, so nothing runs.
    """

    def __init__(self, file: io.BufferedIOBase, *, name: str) -> None:
        super().__init__(file, encoding="bytes")
        self._name = name
        self._allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        """Resolve ``module.name`` only if it is an allowed numpy global."""
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise DataError(
                f"CIFAR-10 file {self._name} refers to {module}.{name}; only numpy array "
                "globals are allowed in a CIFAR-10 batch, so the file was refused unread"
            ) from None


def safe_unpickle(file: Path) -> Any:
    """Unpickle ``file`` with :class:`RestrictedUnpickler`, mapping every failure to DataError."""
    try:
        with file.open("rb") as fh:
            return RestrictedUnpickler(fh, name=str(file)).load()
    except DataError:
        raise
    except Exception as exc:  # malformed pickles raise many types; report them uniformly
        raise DataError(f"CIFAR-10 file {file} is not a valid pickle: {exc}") from exc


def _key(d: dict[Any, Any], key: str) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(key)


def _read_cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = safe_unpickle(file)
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
    if not isinstance(labels, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 9 for v in labels
    ):
        raise DataError(f"CIFAR-10 file {file}: labels must be a list of ints in 0..9")
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
            f"CIFAR-10 directory {path} holds unknown files {unknown}; privfed unpickles only "
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
        meta = safe_unpickle(meta_file)
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


def read_leaf(path: Path) -> LeafArrays:
    """Read every ``*.json`` file under ``path`` (e.g. LEAF's ``data/train`` and ``data/test``).

    Users appearing in several files (train and test) keep one owner index.

    Args:
        path: directory searched recursively.

    Returns:
        The records of all users.
    """
    _require_dir(path, "LEAF", ["*.json files with keys users, num_samples, user_data"])
    files = sorted(path.rglob("*.json"))
    if not files:
        raise DataError(
            f"LEAF directory {path} has no *.json files; expected LEAF JSON with keys users, "
            f"num_samples, user_data. {_NEVER}."
        )
    users: dict[str, int] = {}
    xs: list[Any] = []
    ys: list[int] = []
    owners: list[int] = []
    kind: str | None = None
    for file in files:
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"LEAF file {file} is not readable JSON: {exc}") from exc
        if not isinstance(doc, dict) or not {"users", "num_samples", "user_data"} <= set(doc):
            raise DataError(
                f"LEAF file {file} must be an object with keys users, num_samples, user_data"
            )
        names, counts, data = doc["users"], doc["num_samples"], doc["user_data"]
        if not isinstance(names, list) or not isinstance(counts, list) or len(names) != len(counts):
            raise DataError(
                f"LEAF file {file}: users and num_samples must be lists of equal length"
            )
        if not isinstance(data, dict):
            raise DataError(f"LEAF file {file}: user_data must be an object keyed by user")
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
                    f"LEAF file {file}: user {user!r} has num_samples {count} but "
                    f"{len(ux)} x and {len(uy)} y"
                )
            for xi, yi in zip(ux, uy, strict=True):
                this = "text" if isinstance(xi, str) else "image"
                if kind is None:
                    kind = this
                elif kind != this:
                    raise DataError(f"LEAF file {file}: user {user!r} mixes text and image records")
                if this == "text":
                    if len(xi) != SHAKESPEARE_LEN or not isinstance(yi, str) or len(yi) != 1:
                        raise DataError(
                            f"LEAF file {file}: user {user!r}: expected x an {SHAKESPEARE_LEN}-"
                            "character string and y one character"
                        )
                    xs.append(encode_chars(xi))
                    ys.append(encode_chars(yi)[0])
                else:
                    if not isinstance(xi, list) or len(xi) != FEMNIST_PIXELS:
                        raise DataError(
                            f"LEAF file {file}: user {user!r}: expected x a list of "
                            f"{FEMNIST_PIXELS} numbers"
                        )
                    if (
                        not isinstance(yi, int)
                        or isinstance(yi, bool)
                        or not 0 <= yi < FEMNIST_CLASSES
                    ):
                        raise DataError(
                            f"LEAF file {file}: user {user!r}: expected y an int in "
                            f"0..{FEMNIST_CLASSES - 1}, got {yi!r}"
                        )
                    xs.append(xi)
                    ys.append(yi)
                owners.append(users.setdefault(str(user), len(users)))
    if kind is None:
        raise DataError(f"LEAF directory {path} has no records")
    x: np.ndarray
    if kind == "text":
        x = np.asarray(xs, dtype=np.int64).reshape(-1, SHAKESPEARE_LEN)
        num_classes = len(LEAF_CHARS) + 1
    else:
        try:
            x = np.asarray(xs, dtype=np.float32).reshape(-1, FEMNIST_PIXELS)
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"LEAF directory {path}: FEMNIST x values must be numbers: {exc}"
            ) from exc
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

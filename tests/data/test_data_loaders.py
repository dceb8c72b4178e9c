"""Tests of the local-directory loaders on small files written in the real formats."""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from privfed.data import load_source
from privfed.data.loaders import LEAF_CHARS, encode_chars
from privfed.data.safepickle import read_pickle
from privfed.errors import ConfigError, DataError

# ------------------------------------------------------------------------------------ MNIST IDX


def _write_idx(path: Path, array: np.ndarray, magic: int, *, gz: bool = False) -> None:
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def _mnist_dir(tmp: Path, *, n_train: int = 12, n_test: int = 5, gz: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(
            tmp / f"{prefix}-images-idx3-ubyte",
            rng.integers(0, 256, (n, 28, 28)),
            0x00000803,
            gz=gz,
        )
        _write_idx(tmp / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 0x00000801, gz=gz)
    return tmp


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_round_trip(tmp_path: Path, gz: bool) -> None:
    _mnist_dir(tmp_path, gz=gz)
    d = load_source("mnist", seed=0, path=tmp_path)
    assert len(d) == 17 and d.input_shape == (1, 28, 28) and d.x.dtype == np.float32
    assert 0.0 <= d.x.min() and d.x.max() <= 1.0
    expected = np.concatenate([np.arange(12) % 10, np.arange(5) % 10])
    assert np.array_equal(d.labels["identity"], expected)
    assert np.array_equal(d.labels["parity"], expected % 2)
    assert np.array_equal(d.labels["ge5"], (expected >= 5).astype(np.int64))
    raw = np.frombuffer(
        (gzip.decompress if gz else bytes)(
            (tmp_path / ("train-images-idx3-ubyte" + (".gz" if gz else ""))).read_bytes()
        )[16:],
        np.uint8,
    ).reshape(12, 28, 28)
    assert np.allclose(d.x[:12, 0], raw / 255.0)
    assert len(load_source("mnist", seed=0, path=tmp_path, split="test")) == 5
    with pytest.raises(ConfigError, match=r"split must be 'train', 'test' or 'all'"):
        load_source("mnist", seed=0, path=tmp_path, split="val")


def test_mnist_missing_directory_says_what_and_never_downloads(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*never downloads"):
        load_source("mnist", seed=0, path=tmp_path / "nope")
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte \(or .*\.gz\) is missing"):
        load_source("mnist", seed=0, path=tmp_path)


def test_mnist_malformed_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    _mnist_dir(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    # images magic in a labels file
    _write_idx(labels, np.arange(12) % 10, 0x00000803)
    with pytest.raises(
        DataError, match=r"train-labels-idx1-ubyte has magic 0x00000803, expected 0x00000801"
    ):
        load_source("mnist", seed=0, path=tmp_path)
    # count mismatch between images and labels
    _write_idx(labels, np.arange(11) % 10, 0x00000801)
    with pytest.raises(DataError, match="11 labels but .*train-images-idx3-ubyte has 12 images"):
        load_source("mnist", seed=0, path=tmp_path)
    # truncated data
    _write_idx(labels, np.arange(12) % 10, 0x00000801)
    labels.write_bytes(labels.read_bytes()[:-3])
    with pytest.raises(
        DataError, match=r"train-labels-idx1-ubyte declares dims \[12\] = 12 bytes.*found 9"
    ):
        load_source("mnist", seed=0, path=tmp_path)
    # wrong image size
    _write_idx(labels, np.arange(12) % 10, 0x00000801)
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((12, 8, 8)), 0x00000803)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte has images of \[8, 8\]"):
        load_source("mnist", seed=0, path=tmp_path)
    # label out of range
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((12, 28, 28)), 0x00000803)
    _write_idx(labels, np.full(12, 11), 0x00000801)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte has label 11 at record 0"):
        load_source("mnist", seed=0, path=tmp_path)
    # header shorter than declared
    labels.write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte is 2 bytes"):
        load_source("mnist", seed=0, path=tmp_path)


# ----------------------------------------------------------------------------------- CIFAR-10


def _cifar_dir(tmp: Path, *, per_batch: int = 4) -> Path:
    rng = np.random.default_rng(1)
    for i, name in enumerate([*(f"data_batch_{j}" for j in range(1, 6)), "test_batch"]):
        batch = {
            b"batch_label": f"batch {i}".encode(),
            b"labels": [int(v) for v in (np.arange(per_batch) + i) % 10],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"img{i}_{j}.png".encode() for j in range(per_batch)],
        }
        with (tmp / name).open("wb") as fh:
            pickle.dump(batch, fh)
    meta = {b"label_names": [n.encode() for n in "abcdefghij"], b"num_vis": 3072}
    with (tmp / "batches.meta").open("wb") as fh:
        pickle.dump(meta, fh)
    return tmp


def test_cifar10_round_trip(tmp_path: Path) -> None:
    _cifar_dir(tmp_path)
    (tmp_path / "readme.html").write_text("<html></html>")
    d = load_source("cifar10", seed=0, path=tmp_path)
    assert len(d) == 24 and d.input_shape == (3, 32, 32) and d.x.dtype == np.float32
    with (tmp_path / "data_batch_2").open("rb") as fh:
        batch = pickle.load(fh)  # trusted: the test wrote it
    assert np.allclose(d.x[4:8].reshape(4, 3072), batch[b"data"] / 255.0)
    assert d.labels["identity"][4:8].tolist() == batch[b"labels"]
    assert d.meta["label_names"] == tuple("abcdefghij")
    assert len(load_source("cifar10", seed=0, path=tmp_path, split="test")) == 4


def test_cifar10_reads_protocol_5_arrays(tmp_path: Path) -> None:
    file = tmp_path / "x.pkl"
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    file.write_bytes(pickle.dumps({b"data": arr}, protocol=5))
    assert np.array_equal(read_pickle(file)[b"data"], arr)


class _Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > PWNED_MARKER",))


def test_malicious_pickle_is_refused_without_executing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _cifar_dir(tmp_path)
    monkeypatch.chdir(tmp_path)
    payload = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0], b"x": _Boom()}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(payload))
    with pytest.raises(DataError, match=r"data_batch_3 refers to (posix|os|nt)\.system"):
        load_source("cifar10", seed=0, path=tmp_path)
    assert not (tmp_path / "PWNED_MARKER").exists()
    # other dangerous globals too, directly through the reader
    for module, name in (("builtins", "eval"), ("subprocess", "Popen"), ("numpy", "load")):
        evil = tmp_path / "evil"
        evil.write_bytes(b"\x80\x02c" + f"{module}\n{name}\n".encode() + b"q\x00.")
        with pytest.raises(DataError, match=f"refers to {module}.{name}"):
            read_pickle(evil)


def test_cifar10_unknown_files_and_bad_shapes_refused(tmp_path: Path) -> None:
    _cifar_dir(tmp_path)
    (tmp_path / "data_batch_6").write_bytes(b"whatever")
    with pytest.raises(DataError, match=r"unknown files \['data_batch_6'\]"):
        load_source("cifar10", seed=0, path=tmp_path)
    (tmp_path / "data_batch_6").unlink()
    bad = {b"data": np.zeros((2, 3000), np.uint8), b"labels": [0, 1]}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(bad))
    with pytest.raises(
        DataError, match=r"data_batch_1: data is uint8 \[2, 3000\], expected uint8 N x 3072"
    ):
        load_source("cifar10", seed=0, path=tmp_path)
    bad = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match=r"data_batch_1: labels must be .* 0\.\.9; record 1 has 10"):
        load_source("cifar10", seed=0, path=tmp_path)
    bad = {b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match=r"data_batch_1: data is float32"):
        load_source("cifar10", seed=0, path=tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="data_batch_1 is not a valid pickle"):
        load_source("cifar10", seed=0, path=tmp_path)
    (tmp_path / "data_batch_1").unlink()
    with pytest.raises(DataError, match="data_batch_1 is missing.*never downloads"):
        load_source("cifar10", seed=0, path=tmp_path)
    with pytest.raises(DataError, match="data_batch_1.*batches.meta.*never downloads"):
        load_source("cifar10", seed=0, path=tmp_path / "absent")


# ---------------------------------------------------------------------------------------- LEAF


def _leaf_femnist(tmp: Path) -> Path:
    rng = np.random.default_rng(2)
    for sub, users in (("train", {"f0": 3, "f1": 2}), ("test", {"f0": 1, "f2": 2})):
        (tmp / sub).mkdir()
        doc = {
            "users": list(users),
            "num_samples": list(users.values()),
            "user_data": {
                u: {
                    "x": rng.random((n, 784)).round(3).tolist(),
                    "y": [int(v) for v in rng.integers(0, 62, n)],
                }
                for u, n in users.items()
            },
        }
        (tmp / sub / f"all_data_{sub}.json").write_text(json.dumps(doc))
    return tmp


def test_leaf_femnist_round_trip(tmp_path: Path) -> None:
    _leaf_femnist(tmp_path)
    d = load_source("leaf", seed=0, path=tmp_path)
    assert len(d) == 8 and d.input_shape == (1, 28, 28) and d.x.dtype == np.float32
    assert dict(d.num_classes) == {"label": 62}
    # files are read in sorted order: test/ before train/
    assert d.meta["users"] == ("f0", "f2", "f1")
    assert d.owner is not None and d.owner.tolist() == [0, 1, 1, 0, 0, 0, 2, 2]
    doc = json.loads((tmp_path / "train" / "all_data_train.json").read_text())
    assert np.allclose(d.x[3].reshape(-1), doc["user_data"]["f0"]["x"][0], atol=1e-6)
    assert d.labels["label"][3] == doc["user_data"]["f0"]["y"][0]


def test_leaf_shakespeare_round_trip(tmp_path: Path) -> None:
    text = "To be, or not to be: that is the question. Whether 'tis nobler in the mind~ to suffer"
    xs = [text[i : i + 80] for i in range(3)]
    ys = [text[i + 80] for i in range(3)]
    doc = {"users": ["HAMLET"], "num_samples": [3], "user_data": {"HAMLET": {"x": xs, "y": ys}}}
    (tmp_path / "s.json").write_text(json.dumps(doc))
    d = load_source("leaf", seed=0, path=tmp_path)
    assert d.x.dtype == np.int64 and d.input_shape == (80,)
    assert d.meta["input_kind"] == "token_ids" and d.meta["vocab"] == LEAF_CHARS
    assert dict(d.num_classes) == {"next": len(LEAF_CHARS) + 1}
    assert "".join(LEAF_CHARS[i] for i in d.x[0] if i < len(LEAF_CHARS)) == xs[0].replace("~", "")
    assert d.x[0, xs[0].index("~")] == len(LEAF_CHARS)  # unknown character id
    assert d.labels["next"].tolist() == encode_chars("".join(ys))
    assert encode_chars("a") == [LEAF_CHARS.index("a")]


def test_leaf_malformed_files_refused_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="LEAF directory .* does not exist.*never downloads"):
        load_source("leaf", seed=0, path=tmp_path / "absent")
    with pytest.raises(DataError, match="no \\*.json files"):
        load_source("leaf", seed=0, path=tmp_path)
    f = tmp_path / "bad.json"
    doc = {"users": ["u"], "num_samples": [2], "user_data": {"u": {"x": [[0.0] * 784], "y": [1]}}}
    f.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"bad.json: user 'u' has num_samples 2 but 1 x and 1 y"):
        load_source("leaf", seed=0, path=tmp_path)
    doc = {"users": ["u"], "num_samples": [1], "user_data": {"u": {"x": [[0.0] * 5], "y": [1]}}}
    f.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"bad.json: user 'u', record 0: x must be a list of 784"):
        load_source("leaf", seed=0, path=tmp_path)
    doc = {"users": ["u"], "num_samples": [1], "user_data": {"u": {"x": [[0.0] * 784], "y": [99]}}}
    f.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"user 'u', record 0: expected y an int in 0\.\.61"):
        load_source("leaf", seed=0, path=tmp_path)
    f.write_text(json.dumps({"users": []}))
    with pytest.raises(DataError, match="bad.json must be an object with keys users"):
        load_source("leaf", seed=0, path=tmp_path)
    f.write_text("{not json")
    with pytest.raises(DataError, match="bad.json is not readable JSON"):
        load_source("leaf", seed=0, path=tmp_path)
    doc = {"users": ["u"], "num_samples": [1], "user_data": {"u": {"x": ["short"], "y": ["a"]}}}
    f.write_text(json.dumps(doc))
    with pytest.raises(DataError, match="expected x an 80-character string"):
        load_source("leaf", seed=0, path=tmp_path)

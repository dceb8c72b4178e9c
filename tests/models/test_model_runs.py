"""Runs with the cnn and the lstm: DP, secure aggregation, several heads, determinism."""

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from shakespeare_excerpt import write_excerpt
from support import tiny

from privfed.cli import main
from privfed.config import from_dict
from privfed.engine import Engine, run_experiment
from privfed.rng import torch_generator


@pytest.fixture(scope="module")
def excerpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shakespeare")
    texts = write_excerpt(root / "texts")
    assert main(["data", "shakespeare", "--texts", str(texts), "--out", str(root / "built")]) == 0
    return root / "built" / "data"


def _config(data_dir: Path, **overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "name": "models",
        "seed": 3,
        "rounds": 2,
        "groups": {
            "image": {
                "source": "digits",
                "tasks": ["identity", "parity", "ge5"],
                "architecture": "shared-trunk",
                "model": "cnn",
                "model_params": {"channels": [4, 8], "hidden": 16, "groups": 4},
                "partition": {"kind": "dirichlet", "alpha": 1.0},
            },
            "text": {
                "source": "leaf",
                "source_params": {"path": str(data_dir)},
                "tasks": ["next"],
                "model": "lstm",
                "model_params": {"embedding": 4, "hidden": 8, "layers": 1},
                "partition": {"kind": "natural"},
                "split_order": "ordered",
            },
        },
        "federation": {"num_clients": 8, "aggregator": "secagg"},
        "train": {"local_steps": 2, "batch_size": 16, "lr": 0.5},
        "dp": {"target_epsilon": 8.0, "delta": 1e-4},
        "eval": {"every": 2},
    }
    cfg.update(overrides)
    return cfg


def test_cnn_and_lstm_train_with_dp_secure_aggregation_and_heads(
    excerpt: Path, tmp_path: Path
) -> None:
    cfg = from_dict(_config(excerpt))
    summary = run_experiment(cfg, tmp_path / "run", progress=False, echo=lambda m: None)
    assert set(summary.tasks) == {"image.identity", "image.parity", "image.ge5", "text.next"}
    for m in summary.tasks.values():
        assert 0.0 <= m["mean_acc"] <= 1.0 and m["clients"] > 0
        assert 0.0 < m["epsilon_max"] <= 8.0 + 1e-6  # record-level DP was spent, within target
    eng = Engine(cfg, tmp_path / "run", progress=False, echo=lambda m: None)
    assert [u.model for u in eng.fed.units] == ["cnn", "lstm"]
    x, _ = eng.fed.tensors("text", "train", 0)
    assert x.dtype == torch.int64 and x.shape[1:] == (80,)  # ids with their shape, no one-hot
    xi, _ = eng.fed.tensors("image", "train", 0)
    assert xi.dtype == torch.float32 and xi.shape[1:] == (1, 8, 8)
    # the same config and seed give the same numbers
    again = run_experiment(cfg, tmp_path / "again", progress=False, echo=lambda m: None)
    assert again.tasks == summary.tasks


def test_ordered_split_tests_on_the_later_windows(excerpt: Path, tmp_path: Path) -> None:
    eng = Engine(from_dict(_config(excerpt)), tmp_path / "r", progress=False, echo=lambda m: None)
    for cg in eng.fed.groups["text"].clients.values():
        assert cg.train.max() < cg.val.min() and cg.val.max() < cg.test.min()


def test_initialization_is_seeded_and_keeps_the_mlp_numbers(excerpt: Path, tmp_path: Path) -> None:
    cfg = from_dict(_config(excerpt))
    fed = Engine(cfg, tmp_path / "a", progress=False, echo=lambda m: None).fed
    state = torch.random.get_rng_state()
    a = fed.initial_vectors()
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is untouched
    torch.manual_seed(12345)  # whatever the caller's global state, the same initialization
    b = Engine(cfg, tmp_path / "b", progress=False, echo=lambda m: None).fed.initial_vectors()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    other = from_dict(_config(excerpt, seed=4))
    c = Engine(other, tmp_path / "c", progress=False, echo=lambda m: None).fed.initial_vectors()
    assert not np.array_equal(a["image"], c["image"])
    # the mlp keeps its initialization: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) weights, zero biases,
    # drawn in parameter order from the unit's "init" stream (as before models were pluggable)
    mlp = tiny()
    fed = Engine(mlp, tmp_path / "m", progress=False, echo=lambda m: None).fed
    vectors = fed.initial_vectors()
    for i, unit in enumerate(fed.units):
        gen = torch_generator(mlp.seed, "init", i)
        expected = []
        for p in unit.build().parameters():
            if p.dim() > 1:
                bound = 1.0 / math.sqrt(p.shape[1])
                expected.append(torch.empty_like(p).uniform_(-bound, bound, generator=gen))
            else:
                expected.append(torch.zeros_like(p))
        flat = torch.cat([e.reshape(-1) for e in expected]).numpy()
        assert np.array_equal(vectors[unit.name], flat)

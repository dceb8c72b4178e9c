"""MOCHA: the closed-form Omega step and the regularizer gradient, and a convex federation."""

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg

from privfed.algorithms import Mocha, MochaParams
from privfed.client import UnitSpec
from privfed.config import from_dict
from privfed.engine import Engine, run_experiment

UNIT = UnitSpec("g.label", "g", ("label",), 5, (), {"label": 3})


def _mocha(m: int, mu: float = 0.3) -> Mocha:
    alg = Mocha(MochaParams(lambda_=mu))
    alg.setup([UNIT], holders={UNIT.name: list(range(m))}, lr=0.1)
    return alg


def test_omega_is_normalized_matrix_square_root():
    rng = np.random.default_rng(0)
    alg = _mocha(4)
    cols = {c: rng.normal(size=18) for c in range(4)}
    alg.server_individual(unit=UNIT.name, vectors=cols)
    w = np.stack([cols[c] for c in range(4)], axis=1)
    root = scipy.linalg.sqrtm(w.T @ w).real
    expect = root / np.trace(root)
    np.testing.assert_allclose(alg.omega(UNIT.name), expect, atol=1e-5)
    assert np.trace(alg.omega(UNIT.name)) == pytest.approx(1.0, abs=1e-5)


def test_local_prox_is_the_regularizer_gradient():
    rng = np.random.default_rng(1)
    alg = _mocha(5, mu=0.3)
    alg.max_weight = np.inf
    cols = {c: rng.normal(size=18).astype(np.float32) for c in range(5)}
    alg.server_individual(unit=UNIT.name, vectors=cols)
    w = np.stack([cols[c] for c in range(5)], axis=1).astype(np.float64)
    oinv = alg.omega_inv[UNIT.name]
    for k in range(5):
        centre, a = alg.server_prox(unit=UNIT.name, client=k, global_vec=cols[k])
        # gradient of mu * tr(W Omega^-1 W^T) in w_k: 2 mu (W Omega^-1)[:, k]
        grad = 2 * 0.3 * (w @ oinv)[:, k]
        np.testing.assert_allclose(a * (w[:, k] - centre), grad, rtol=1e-4, atol=1e-5)


def test_omega_waits_for_every_column():
    alg = _mocha(3)
    alg.server_individual(unit=UNIT.name, vectors={0: np.ones(18)})
    np.testing.assert_allclose(alg.omega_inv[UNIT.name], 3 * np.eye(3))


def _convex_config(algorithm: str, rounds: int = 3):
    return from_dict(
        {
            "name": "convex",
            "seed": 0,
            "rounds": rounds,
            "groups": {
                "convex": {
                    "source": "synthetic",
                    "source_params": {
                        "alpha": 1.0,
                        "beta": 1.0,
                        "num_owners": 6,
                        "samples_per_owner": 60,
                    },
                    "tasks": ["label"],
                    "hidden": [],
                    "partition": {"kind": "natural"},
                }
            },
            "federation": {
                "num_clients": 6,
                "aggregator": "plain",
                "algorithm": algorithm,
                "algorithm_params": {"lambda": 0.05},
            },
            "train": {"local_steps": 3, "batch_size": 16, "lr": 0.1},
            "dp": {"target_epsilon": 8.0, "delta": 1e-3},
            "eval": {"every": 1},
        }
    )


def test_mocha_runs_on_the_convex_group_and_resumes(tmp_path: Path):
    cfg = _convex_config("mocha")
    eng = Engine(cfg, tmp_path / "e", progress=False, echo=lambda m: None)
    assert eng.fed.units[0].hidden == ()
    state = eng.fresh_state()
    record = eng.run_round(0, state)
    # the server received every client's own model, not a sum
    assert set(record.observed) == set(range(6)) and record.aggregate is None
    assert set(eng.algorithm.columns[eng.fed.units[0].name]) == set(range(6))
    summary = run_experiment(cfg, tmp_path / "full", progress=False, echo=lambda m: None)
    assert 0 <= summary.tasks["convex.label"]["mean_acc"] <= 1
    assert summary.epsilon["synthetic"]["max"] <= 8.0
    # interrupted after round 2 and resumed: same numbers (Omega and columns are checkpointed)
    original = Engine.run_round

    def crash(self, r, state, **kw):
        if r == 2:
            raise KeyboardInterrupt
        return original(self, r, state, **kw)

    Engine.run_round = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            run_experiment(cfg, tmp_path / "cut", progress=False, echo=lambda m: None)
    finally:
        Engine.run_round = original
    run_experiment(cfg, tmp_path / "cut", resume=True, progress=False, echo=lambda m: None)
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == (
        tmp_path / "full" / "metrics.jsonl"
    ).read_text()

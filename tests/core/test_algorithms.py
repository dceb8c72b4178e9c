"""Each algorithm on a tiny federation, against hand-checked references."""

from pathlib import Path

import numpy as np
import pytest
from support import tiny_dict

from privfed.algorithms import ALGORITHMS, FedPer
from privfed.algorithms.server import ServerAdam, ServerOptimizer
from privfed.config import from_dict
from privfed.engine import Engine


def _engine(tmp_path: Path, algorithm: str, **params):
    data = tiny_dict(rounds=2)
    data["federation"].update({"algorithm": algorithm, "algorithm_params": params})
    cfg = from_dict(data)
    return Engine(cfg, tmp_path / algorithm, progress=False, echo=lambda m: None)


def test_registry_lists_all_algorithms():
    assert {"fedavg", "fedavg-ft", "fedprox", "fedper", "fedrep", "ditto", "local", "mocha"} <= set(
        ALGORITHMS.names()
    )


def test_fedavg_global_moves_by_mean_of_client_deltas(tmp_path: Path):
    eng = _engine(tmp_path, "fedavg")
    state = eng.fresh_state()
    before = {k: v.copy() for k, v in state.globals.items()}
    ups = eng.play_round(0, state, keep_updates=True).updates
    for ui, unit in enumerate(eng.fed.units):
        lo, hi = eng.fed.offsets[ui], eng.fed.offsets[ui + 1]
        trained = [u for u in ups.values() if u[eng.fed.counter_base + ui] == 1.0]
        expect = before[unit.name] + np.mean([u[lo:hi] for u in trained], axis=0)
        np.testing.assert_allclose(state.globals[unit.name], expect, atol=1e-6)


def test_fedprox_mu_pulls_updates_toward_global(tmp_path: Path):
    norms = {}
    for mu in (0.0, 2.0):
        eng = _engine(tmp_path / str(mu), "fedprox", mu=mu)
        state = eng.fresh_state()
        ups = eng.play_round(0, state, keep_updates=True).updates
        norms[mu] = np.mean([np.linalg.norm(u[: eng.fed.counter_base]) for u in ups.values()])
    assert norms[2.0] < norms[0.0]


def test_fedper_shares_trunk_keeps_heads(tmp_path: Path):
    eng = _engine(tmp_path, "fedper")
    alg = eng.algorithm
    assert isinstance(alg, FedPer)
    state = eng.fresh_state()
    init = {k: v.copy() for k, v in state.globals.items()}
    ups = eng.play_round(0, state, keep_updates=True).updates
    for ui, unit in enumerate(eng.fed.units):
        mask = alg.head_mask(unit.name)
        assert mask.any() and not mask.all()
        lo, hi = eng.fed.offsets[ui], eng.fed.offsets[ui + 1]
        for u in ups.values():
            assert not u[lo:hi][mask].any()  # no head coordinate is ever sent
        # the server's heads never move; its trunk does
        assert np.array_equal(state.globals[unit.name][mask], init[unit.name][mask])
        assert not np.array_equal(state.globals[unit.name][~mask], init[unit.name][~mask])
        heads = [state.personal[(c, unit.name)][mask] for c in eng.fed.clients_of(unit)]
        assert not np.array_equal(heads[0], heads[1])  # personal heads differ


def test_ditto_accounts_personal_training_on_the_same_ledger(tmp_path: Path):
    eng = _engine(tmp_path, "ditto", **{"lambda": 0.5})
    state = eng.fresh_state()
    for r in range(2):
        eng.run_round(r, state)
    lg = state.ledger[(0, "digits")]
    assert lg.steps_by_task == {"image": 4, "image:personal": 4}
    assert lg.epsilon() <= eng.cfg.dp.target_epsilon  # calibrated for both trainings
    # the personal model is not the global one
    assert not np.array_equal(state.personal[(0, "image")], state.globals["image"])


def test_server_adam_matches_hand_computation():
    opt = ServerAdam(lr=0.1, beta1=0.5, beta2=0.75, tau=0.01)
    w = np.zeros(2, dtype=np.float32)
    d1 = np.array([1.0, -2.0])
    w1 = opt.step(unit="u", global_vec=w, mean_update=d1)
    m, v = 0.5 * d1, 0.25 * d1**2
    np.testing.assert_allclose(w1, 0.1 * m / (np.sqrt(v) + 0.01), rtol=1e-6)
    d2 = np.array([0.0, 1.0])
    w2 = opt.step(unit="u", global_vec=w1, mean_update=d2)
    m, v = 0.5 * m + 0.5 * d2, 0.75 * v + 0.25 * d2**2
    np.testing.assert_allclose(w2, w1 + 0.1 * m / (np.sqrt(v) + 0.01), rtol=1e-6)
    restored = ServerAdam(lr=0.1, beta1=0.5, beta2=0.75, tau=0.01)
    restored.load_state_dict(opt.state_dict())
    assert np.array_equal(restored.m["u"], opt.m["u"])
    assert np.array_equal(
        ServerOptimizer(lr=0.5).step(unit="u", global_vec=w, mean_update=d1), 0.5 * d1
    )


@pytest.mark.parametrize("algorithm", ["fedprox", "fedper", "ditto", "fedavg-ft"])
def test_algorithms_resume_identically(tmp_path: Path, algorithm: str):
    from privfed.engine import run_experiment

    data = tiny_dict(rounds=2)
    data["federation"].update(
        {"algorithm": algorithm, "server_optimizer": "adam", "server_lr": 0.05}
    )
    cfg = from_dict(data)
    run_experiment(cfg, tmp_path / "a", progress=False, echo=lambda m: None)
    eng = Engine(cfg, tmp_path / "b", progress=False, echo=lambda m: None)
    # run one round, checkpoint, then resume in a fresh engine
    from privfed.config import dump_config
    from privfed.io import atomic_write_text

    (tmp_path / "b").mkdir()
    atomic_write_text(tmp_path / "b" / "config.toml", dump_config(cfg))
    state = eng.fresh_state()
    eng.run_round(0, state)
    state.next_round = 1
    row = eng.evaluate(0, state)
    from privfed.io import to_json

    (tmp_path / "b" / "metrics.jsonl").write_text(to_json(row) + "\n")
    eng.save_checkpoint(state)
    run_experiment(cfg, tmp_path / "b", resume=True, progress=False, echo=lambda m: None)
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == (
        tmp_path / "b" / "metrics.jsonl"
    ).read_text()


def test_fedrep_trains_heads_then_trunk_and_accounts_both(tmp_path: Path):
    eng = _engine(tmp_path, "fedrep")
    state = eng.fresh_state()
    init = {k: v.copy() for k, v in state.globals.items()}
    ups = eng.play_round(0, state, keep_updates=True).updates
    alg = eng.algorithm
    for ui, unit in enumerate(eng.fed.units):
        mask = alg.head_mask(unit.name)
        lo, hi = eng.fed.offsets[ui], eng.fed.offsets[ui + 1]
        for c, u in ups.items():
            assert not u[lo:hi][mask].any()
            assert u[lo:hi][~mask].any()  # the trunk moved in phase 2
            assert not np.array_equal(state.personal[(c, unit.name)][mask], init[unit.name][mask])
    lg = state.ledger[(0, "digits")]
    assert lg.steps_by_task == {"image": 4}  # 2 phases x 2 local steps, one round
    assert lg.epsilon() <= eng.cfg.dp.target_epsilon


def test_frozen_coordinates_do_not_move():
    import torch

    from privfed.client import UnitSpec, UnitTrainer
    from privfed.models import flat_parameters

    spec = UnitSpec("g", "g", ("a",), 8, (16,), {"a": 3})
    tr = UnitTrainer(
        spec,
        x=torch.randn(40, 8),
        y={"a": torch.randint(0, 3, (40,))},
        batch_size=8,
        lr=0.1,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        seed=0,
        stream=(0, 0),
    )
    start = flat_parameters(spec.build())
    mask = np.zeros_like(start, dtype=bool)
    mask[::3] = True
    out = tr.train(start, steps=5, round_index=0, frozen=mask).vector
    assert np.array_equal(out[mask], start[mask])
    assert not np.array_equal(out[~mask], start[~mask])
    # phases draw different noise
    a = tr.train(start, steps=2, round_index=0, phase=0).vector
    b = tr.train(start, steps=2, round_index=0, phase=1).vector
    assert not np.array_equal(a, b)

import json
import math

import numpy as np
import pytest
import torch
from support import TOY_SPEC, toy_trainer

from privfed.aggregation import PlainSumAggregator, RoundContext
from privfed.client import UnitTrainer, sample_rate_for
from privfed.evaluation.metrics import worst_fraction_mean
from privfed.io import atomic_write_json, read_jsonl, to_json
from privfed.models import MultiHeadMLP, flat_parameters, load_flat_parameters

SPEC = TOY_SPEC


def _trainer(n=40, sigma=1.0, batch=8, seed=1):
    return toy_trainer(n=n, sigma=sigma, batch=batch, seed=seed)


def test_flat_parameters_round_trip():
    m1, m2 = SPEC.build(), SPEC.build()
    v = flat_parameters(m1)
    load_flat_parameters(m2, v)
    assert np.array_equal(flat_parameters(m2), v)
    with pytest.raises(ValueError, match="model needs"):
        load_flat_parameters(m2, v[:-1])


def test_multihead_has_no_batchnorm_and_is_opacus_valid():
    from opacus.validators import ModuleValidator

    assert ModuleValidator.validate(MultiHeadMLP(8, (16, 16), {"a": 3}), strict=False) == []


def test_sample_rate_matches_opacus():
    tr = _trainer(n=40, batch=8)
    assert tr.sample_rate == sample_rate_for(40, 8) == 1 / 5
    assert sample_rate_for(3, 8) == 1.0


def test_training_is_reproducible_per_round_and_differs_across_rounds():
    tr = _trainer()
    start = flat_parameters(SPEC.build())
    a = tr.train(start, steps=5, round_index=0)
    b = tr.train(start, steps=5, round_index=0)
    c = tr.train(start, steps=5, round_index=1)
    assert np.array_equal(a.vector, b.vector)
    assert not np.array_equal(a.vector, c.vector)
    assert a.steps == 5 and a.noise_multiplier == 1.0
    # a second trainer with the same seed and stream gives the same numbers
    assert np.array_equal(_trainer().train(start, steps=5, round_index=0).vector, a.vector)


def test_dp_noise_is_applied_and_clipping_bounds_the_signal():
    start = flat_parameters(SPEC.build())
    quiet = _trainer(sigma=0.0).train(start, steps=1, round_index=0)
    noisy = _trainer(sigma=10.0).train(start, steps=1, round_index=0)
    # sigma=0: the step is lr * (mean of clipped per-sample grads): norm <= lr * max_grad_norm
    assert np.linalg.norm(quiet.vector - start) <= 0.1 * 1.0 + 1e-6
    assert np.linalg.norm(noisy.vector - start) > 5 * np.linalg.norm(quiet.vector - start)


def test_poisson_empty_batches_still_count_as_steps():
    tr = _trainer(n=100, batch=1)  # q = 0.01: most batches are empty
    res = tr.train(flat_parameters(SPEC.build()), steps=30, round_index=0)
    assert res.steps == 30 and res.sample_rate == 0.01
    assert np.isfinite(res.vector).all()
    assert tr.engine.accountant.history == [(1.0, 0.01, 30)]


def test_non_private_trainer_has_no_engine():
    tr = UnitTrainer(
        SPEC,
        x=torch.randn(10, 8),
        y={"a": torch.zeros(10, dtype=torch.long), "b": torch.zeros(10, dtype=torch.long)},
        batch_size=4,
        lr=0.1,
        noise_multiplier=None,
        max_grad_norm=1.0,
        seed=0,
        stream=(0, 0),
    )
    assert tr.engine is None and not tr.private
    assert tr.train(flat_parameters(SPEC.build()), steps=3, round_index=0).noise_multiplier == 0.0


def test_plain_sum_excludes_dropouts():
    ups = {c: np.full(4, c, dtype=np.float32) for c in range(5)}
    res = PlainSumAggregator().aggregate(
        ups, RoundContext(round_index=0, dropouts={"masked_input": (2, 4)})
    )
    assert res.included == (0, 1, 3) and res.dropped == (2, 4)
    assert np.array_equal(res.total, np.full(4, 4.0))


def test_atomic_json_and_torn_jsonl(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"eps": math.inf, "x": np.float32(1.5)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"eps": "inf", "x": 1.5}
    assert not list(tmp_path.glob(".*tmp"))
    p = tmp_path / "m.jsonl"
    p.write_text(to_json({"round": 1}) + "\n" + '{"round": 2, "ta')
    assert read_jsonl(p) == [{"round": 1}]


def test_worst_fraction_hand_computed():
    vals = [0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.6, 0.2, 0.4, 1.0, 0.95, 0.85]
    # 10% of 12 clients -> the 2 worst: (0.1 + 0.2) / 2
    assert worst_fraction_mean(vals, fraction=0.1) == pytest.approx(0.15)
    assert worst_fraction_mean([0.4], fraction=0.1) == 0.4


def test_proximal_term_bounds_the_distance_to_its_centre():
    """Noise-free DP-SGD moves at most lr*C per step and the proximal step contracts the
    distance by (1 - lr*mu), so the distance to the centre never exceeds C / mu."""
    start = flat_parameters(SPEC.build())
    free = _trainer(sigma=0.0).train(start, steps=40, round_index=0)
    prox = _trainer(sigma=0.0).train(start, steps=40, round_index=0, prox_center=start, prox_mu=5.0)
    assert np.linalg.norm(prox.vector - start) <= 1.0 / 5.0 + 1e-5
    assert np.linalg.norm(free.vector - start) > 1.0 / 5.0
    # one step from the centre: the proximal gradient is zero, nothing changes
    a = _trainer().train(start, steps=1, round_index=3)
    b = _trainer().train(start, steps=1, round_index=3, prox_center=start, prox_mu=5.0)
    assert np.array_equal(a.vector, b.vector)

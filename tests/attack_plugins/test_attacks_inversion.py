"""Gradient inversion against what the server observes (Zhu 2019; Geiping 2020)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from support import tiny

from attacks.inversion import first_layer_slices, invert_first_layer
from attacks.runner import run_attack
from privfed.client import UnitSpec
from privfed.engine import run_experiment
from privfed.models import flat_parameters

UNIT = UnitSpec("image", "image", ("identity",), 64, (16,), {"identity": 10})


def test_one_record_gradient_gives_the_record_back() -> None:
    gen = torch.Generator().manual_seed(0)
    model = UNIT.build()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    x = torch.rand(1, 64, generator=gen)
    loss = torch.nn.functional.cross_entropy(model(x)["identity"], torch.tensor([3]))
    model.zero_grad()
    loss.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()
    cand, _ = invert_first_layer(-0.3 * grad, UNIT)  # an SGD update is -lr * gradient
    assert len(cand) > 0
    for row in cand:
        np.testing.assert_allclose(row, x[0].numpy(), rtol=1e-4, atol=1e-5)


def test_first_layer_slices_match_the_flat_layout() -> None:
    model = UNIT.build()
    vec = flat_parameters(model)
    w, b, shape = first_layer_slices(UNIT)
    np.testing.assert_array_equal(vec[w].reshape(shape), model.trunk[1].weight.detach().numpy())
    np.testing.assert_array_equal(vec[b], model.trunk[1].bias.detach().numpy())


def _run(root: Path, name: str, **over: object) -> Path:
    d = root / name
    # one record per client update: batch 1, one local step (the field-notes setting)
    base: dict[str, object] = {
        "train": {"batch_size": 1, "local_steps": 1, "lr": 0.3},
        "dp": {"target_epsilon": float("inf")},
    }
    base.update(over)
    run_experiment(tiny(**base), d, progress=False, echo=lambda _m: None)  # type: ignore[arg-type]
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inv")
    return {
        "plain": _run(root, "plain", federation={"aggregator": "plain"}),
        "secagg": _run(root, "secagg", federation={"aggregator": "secagg"}),
        "dp": _run(
            root,
            "dp",
            federation={"aggregator": "plain"},
            train={"batch_size": 16, "local_steps": 1, "lr": 0.3},
            dp={"target_epsilon": 50.0, "noise_multiplier": 1.0, "delta": 1e-3},
        ),
    }


def test_plain_update_gives_the_clients_digit_back(runs: dict[str, Path]) -> None:
    m = run_attack("inversion-inbox", runs["plain"], seed=0).result.metrics
    assert m["psnr_top_db"] > 60.0  # exact up to float32 rounding
    assert 8.0 < m["psnr_prior_db"] < 20.0


def test_masked_update_under_secagg_falls_below_the_prior(runs: dict[str, Path]) -> None:
    m = run_attack("inversion-inbox", runs["secagg"], seed=0).result.metrics
    assert m["psnr_top_db"] < m["psnr_prior_db"]
    assert m["psnr_best_db"] < m["psnr_prior_db"]  # not even the oracle choice helps


def test_dp_sgd_update_falls_below_the_prior(runs: dict[str, Path]) -> None:
    run = run_attack("inversion-inbox", runs["dp"], seed=0).result
    m = run.metrics
    assert m["psnr_top_db"] < m["psnr_prior_db"]
    # the attack knows the DP noise scale (sigma = 1, clip 1, lr 0.3, batch 16, one step)
    assert m["noise_std"] == pytest.approx(0.3 * 1.0 * 1.0 / 16)
    assert any("DP noise std" in n for n in run.notes)


@pytest.mark.parametrize("agg", ["plain", "secagg"])
def test_aggregate_attack_reports_against_the_prior(runs: dict[str, Path], agg: str) -> None:
    m = run_attack("inversion-aggregate", runs[agg], seed=0).result.metrics
    for key in ("psnr_top_db", "psnr_best_db", "psnr_prior_db", "gain_over_prior_db"):
        assert np.isfinite(m[key])
    assert m["psnr_best_db"] >= m["psnr_top_db"]


def test_gradient_matching_recovers_the_record_without_protection(runs: dict[str, Path]) -> None:
    res = run_attack("inversion-dlg", runs["plain"], seed=0, params={"iterations": "200"}).result
    assert res.metrics["psnr_top_db"] > 40.0
    assert res.metrics["cosine_distance"] < 1e-3


@pytest.mark.parametrize("name", ["secagg", "dp"])
def test_gradient_matching_falls_below_the_prior_under_secagg_or_dp(
    runs: dict[str, Path], name: str
) -> None:
    res = run_attack("inversion-dlg", runs[name], seed=0, params={"iterations": "100"}).result
    assert res.metrics["psnr_top_db"] < res.metrics["psnr_prior_db"]

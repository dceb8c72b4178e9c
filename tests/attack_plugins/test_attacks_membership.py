"""Membership inference: loss threshold (Yeom 2018) and offline LiRA (Carlini 2022)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from support import tiny

from attacks.base import Encoding, GroundTruth, Observation, Records
from attacks.membership import LiRAOffline, LossThreshold, train_shadow
from attacks.runner import run_attack
from privfed.client import UnitSpec
from privfed.engine import run_experiment
from privfed.models import flat_parameters

UNIT = UnitSpec("image.identity", "image", ("identity",), 64, (32,), {"identity": 10})


def _records(x: np.ndarray, y: np.ndarray) -> Records:
    return Records(x.astype(np.float32), {"identity": y.astype(np.int64)})


def _overfit_case(
    *, steps: int, seed: int = 0
) -> tuple[Observation, GroundTruth, Observation, GroundTruth]:
    """A released model trained on 60 members; 60 non-members; 600 public records."""
    digits = load_digits()
    x = digits.data / 16.0
    y = digits.target
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    mem, non, pub = idx[:60], idx[60:120], idx[120:720]
    gen = torch.Generator().manual_seed(seed)
    model = train_shadow(
        UNIT, _records(x[mem], y[mem]), steps=steps, batch_size=16, lr=0.5, generator=gen
    )
    order = rng.permutation(120)
    both = np.concatenate([mem, non])[order]
    member = np.concatenate([np.ones(60, bool), np.zeros(60, bool)])[order]

    def obs(challenge_labels: np.ndarray) -> Observation:
        return Observation(
            threat_model=LiRAOffline.threat_model,
            units=(UNIT,),
            offsets=(0, len(flat_parameters(model))),
            counter_base=len(flat_parameters(model)),
            encoding=Encoding("plain"),
            num_clients=1,
            recipe={"rounds": 1.0, "local_steps": float(steps), "batch_size": 16.0, "lr": 0.5},
            released={UNIT.name: flat_parameters(model)},
            public={"image": _records(x[pub], y[pub])},
            challenge={"image": _records(x[both], challenge_labels)},
        )

    truth = GroundTruth(membership={"image": member})
    # a control: the same challenge with membership labels drawn at random
    control = GroundTruth(membership={"image": rng.permutation(member)})
    return obs(y[both]), truth, obs(y[both]), control


@pytest.fixture(scope="module")
def overfit() -> tuple[Observation, GroundTruth, Observation, GroundTruth]:
    torch.set_num_threads(1)  # as the engine does; the tiny models are slower multi-threaded
    return _overfit_case(steps=150)


def test_loss_threshold_detects_an_overfit_models_members(overfit) -> None:
    obs, truth, _, control = overfit
    attack = LossThreshold()
    raw = attack.run(obs, rng=np.random.default_rng(0))
    m = attack.evaluate(raw, truth).metrics
    assert m["auc.image.identity"] > 0.65
    # the same scores against random membership labels are at chance
    c = attack.evaluate(raw, control).metrics
    assert 0.35 < c["auc.image.identity"] < 0.65
    assert set(m) >= {"tpr@0.001fpr.image.identity", "tpr@0.01fpr.image.identity"}


def test_lira_detects_members_and_is_seeded(overfit) -> None:
    obs, truth, _, _ = overfit
    attack = LiRAOffline(shadows=3)
    a = attack.run(obs, rng=np.random.default_rng(1))
    b = attack.run(obs, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(
        a.outputs["image:image.identity"], b.outputs["image:image.identity"]
    )
    m = attack.evaluate(a, truth).metrics
    assert m["auc.image.identity"] > 0.7
    # calibration per record buys TPR at low FPR, the point of LiRA (Carlini et al. 2022)
    loss = LossThreshold()
    base = loss.evaluate(loss.run(obs, rng=np.random.default_rng(0)), truth).metrics
    assert m["tpr@0.01fpr.image.identity"] > base["tpr@0.01fpr.image.identity"]


def test_lira_needs_the_public_split(overfit) -> None:
    obs, _, _, _ = overfit
    from dataclasses import replace

    with pytest.raises(ValueError, match="public split"):
        LiRAOffline(shadows=2).run(replace(obs, public=None), rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="shadows must be >= 2"):
        LiRAOffline(shadows=1)


def test_membership_attacks_run_on_a_run_directory(tmp_path: Path) -> None:
    run_experiment(tiny(), tmp_path / "run", progress=False, echo=lambda _m: None)
    for name in ("mia-loss", "mia-lira"):
        params = {"shadows": "2"} if name == "mia-lira" else None
        m = run_attack(name, tmp_path / "run", seed=0, params=params).result.metrics
        for task in ("image.identity", "image.parity", "text.next"):
            assert 0.0 <= m[f"auc.{task}"] <= 1.0
            assert 0.0 <= m[f"tpr@0.001fpr.{task}"] <= 1.0

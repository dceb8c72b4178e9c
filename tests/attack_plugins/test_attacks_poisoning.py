"""Backdoor by a malicious client with model replacement (Bagdasaryan et al. 2020)."""

from pathlib import Path

import numpy as np
import pytest
from support import tiny

from attacks.poisoning import DIGITS_TRIGGER, add_trigger, replay_with_backdoor
from privfed.engine import run_experiment


def test_trigger_sets_only_its_pixels() -> None:
    x = np.zeros((2, 64), np.float32)
    t = add_trigger(x, DIGITS_TRIGGER)
    assert t[:, list(DIGITS_TRIGGER)].min() == 1.0 and t.sum() == 2 * len(DIGITS_TRIGGER)
    assert x.sum() == 0.0  # the input is not modified


@pytest.mark.parametrize("agg", ["plain", "secagg"])
def test_one_malicious_client_plants_a_backdoor(tmp_path: Path, agg: str) -> None:
    cfg = tiny(rounds=3, dp={"target_epsilon": float("inf")}, federation={"aggregator": agg})
    run_experiment(cfg, tmp_path / "run", progress=False, echo=lambda _m: None)
    rep = replay_with_backdoor(tmp_path / "run", rounds=3, rng=np.random.default_rng(0))
    assert rep.gamma == 4.0  # model replacement: n / server_lr
    assert rep.backdoor_acc_clean < 0.2  # the honest replay does not map triggers to 0
    assert rep.backdoor_acc_poisoned > 0.8
    with pytest.raises(ValueError, match="unknown unit"):
        replay_with_backdoor(tmp_path / "run", unit="nope", rng=np.random.default_rng(0))

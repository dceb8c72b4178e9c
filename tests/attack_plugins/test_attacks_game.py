"""Online LiRA scoring, the membership game, canaries, audit sizing and noise-aware inversion."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest
from scipy import stats

from attacks.game import GameRun, play
from attacks.inversion import denoised_candidates, first_layer_slices, noise_scale
from attacks.membership import lira_scores
from attacks.metrics import roc_auc
from privfed.attack_api import (
    Adversary,
    Attack,
    AttackResult,
    Encoding,
    Observation,
    Records,
    ThreatModel,
    View,
)
from privfed.client import UnitSpec
from privfed.data.sources import load_source
from privfed.errors import ConfigError
from privfed.evaluation.audit import (
    canaries_needed,
    guesses_needed,
    max_certifiable_epsilon,
    one_run_epsilon_lower_bound,
)


def test_lira_scores_are_the_gaussian_log_likelihood_ratio():
    # two records, 4 shadows: record 0 IN for shadows 0, 1; record 1 IN for shadows 2, 3
    shadows = np.array([[3.0, 0.0], [5.0, 1.0], [1.0, 6.0], [-1.0, 4.0]])
    inn = np.array([[True, False], [True, False], [False, True], [False, True]])
    target = np.array([4.0, 2.0])
    got = lira_scores(target, shadows, inn, online=True)
    # record 0: IN N(4, sd 1.414), OUT N(0, sd 1.414); record 1: IN N(5, 1.414), OUT N(0.5, 0.707)
    ref0 = stats.norm.logpdf(4, 4, math.sqrt(2)) - stats.norm.logpdf(4, 0, math.sqrt(2))
    ref1 = stats.norm.logpdf(2, 5, math.sqrt(2)) - stats.norm.logpdf(2, 0.5, math.sqrt(0.5))
    assert got == pytest.approx([ref0, ref1])
    off = lira_scores(target, shadows, inn, online=False)
    assert off == pytest.approx([(4 - 0) / math.sqrt(2), (2 - 0.5) / math.sqrt(0.5)])
    fixed = lira_scores(target, shadows, inn, online=False, fixed_variance=True)
    pooled = np.array([1.0, -1.0, 0.0, 1.0]).std(ddof=1)  # every OUT value
    assert fixed == pytest.approx([(4 - 0) / pooled, (2 - 0.5) / pooled])
    with pytest.raises(ValueError, match="target \\[N\\]"):
        lira_scores(target[:1], shadows, inn)
    with pytest.raises(ValueError, match="no IN shadow"):
        lira_scores(target, shadows, np.zeros_like(inn))


def test_online_lira_separates_members_on_synthetic_confidences():
    rng = np.random.default_rng(0)
    m, n = 64, 400
    inn = rng.random((m, n)) < 0.5
    easy = rng.normal(0, 1, n)  # each record's own difficulty
    shadows = easy + 1.5 * inn + rng.normal(0, 0.5, (m, n))
    member = rng.random(n) < 0.5
    target = easy + 1.5 * member + rng.normal(0, 0.5, n)
    online = roc_auc(lira_scores(target, shadows, inn), member)
    global_threshold = roc_auc(target, member)
    assert online > 0.9 > global_threshold  # per-record calibration is what LiRA adds


UNIT = UnitSpec(
    name="image.identity",
    group="image",
    tasks=("identity",),
    in_features=3,
    hidden=(4,),
    heads={"identity": 2},
)


class _Leaky(Attack):
    """Scores the target by a membership signal hidden in its released vector (for the test)."""

    name: ClassVar[str] = "leaky"
    threat_model: ClassVar[ThreatModel] = ThreatModel(
        adversary=Adversary.OUTSIDER,
        observes=frozenset({View.RELEASED_MODELS, View.SHADOW_MODELS}),
    )

    def run(self, observation: Observation, *, rng: np.random.Generator) -> AttackResult:
        assert observation.shadows and observation.challenge is not None
        n = len(observation.challenge["image"])
        vec = observation.released["signal"][:n]  # type: ignore[index]
        return AttackResult(attack=self.name, outputs={"image:image.identity": vec})


def _game_runs(k: int, n: int, *, signal: float) -> list[GameRun]:
    rng = np.random.default_rng(1)
    pool = Records(np.zeros((n, 3), np.float32), {"identity": np.zeros(n, np.int64)})
    runs = []
    for s in range(k):
        members = rng.random(n) < 0.5
        runs.append(
            GameRun(
                run_dir=None,  # type: ignore[arg-type]
                seed=s,
                units=(UNIT,),
                offsets=(0, 10),
                counter_base=10,
                num_clients=2,
                released={"signal": signal * members + rng.normal(0, 1, n)},
                members={"image": members},
                pool={"image": pool},
                canaries={"image": np.arange(10)},
                accuracy={},
                epsilon={},
            )
        )
    return runs


def test_the_game_pools_targets_and_its_null_control_sits_at_chance():
    runs = _game_runs(8, 300, signal=2.0)
    res = play(runs, _Leaky(), group="image", rng=np.random.default_rng(0), resamples=50)
    assert res.targets == 8 and res.shadows == 7 and res.decisions == 2400
    assert res.canary_decisions == 80
    auc = res.metrics["online/all/auc"]
    assert auc.low <= auc.value <= auc.high and auc.value > 0.8
    null = res.metrics["null/online/all/auc"]
    assert null.low < 0.5 < null.high
    assert "online/canaries/tpr@0.001fpr" in res.metrics
    nothing = play(
        _game_runs(8, 300, signal=0.0),
        _Leaky(),
        group="image",
        rng=np.random.default_rng(0),
        resamples=50,
    )
    assert abs(nothing.metrics["online/all/auc"].value - 0.5) < 0.03
    with pytest.raises(ValueError, match="at least 3 runs"):
        play(runs[:2], _Leaky(), group="image", rng=np.random.default_rng(0))


def test_canaries_are_the_same_in_every_run_and_mislabeled():
    a = load_source("canaries", seed=0, count=50)
    b = load_source("canaries", seed=7, count=50)
    digits = load_source("digits", seed=0)
    assert a.meta["canaries"] == b.meta["canaries"] and len(a.meta["canaries"]) == 50
    idx = np.array(a.meta["canaries"])
    for col in ("identity", "parity", "ge5"):
        assert (a.labels[col][idx] != digits.labels[col][idx]).all()
        rest = np.setdiff1d(np.arange(len(digits)), idx)
        assert (a.labels[col][rest] == digits.labels[col][rest]).all()
    other = load_source("canaries", seed=0, count=50, canary_seed=1)
    assert other.meta["canaries"] != a.meta["canaries"]
    with pytest.raises(ConfigError, match="count must be at most"):
        load_source("canaries", seed=0, count=10_000)


def test_audit_sizing_known_values():
    assert max_certifiable_epsilon(guesses=40) == pytest.approx(2.5536, abs=1e-3)
    assert max_certifiable_epsilon(guesses=100) == pytest.approx(3.4925, abs=1e-3)
    assert max_certifiable_epsilon(guesses=200) == pytest.approx(4.1941, abs=1e-3)
    for r in (10, 40, 166):  # the closed form is the bisection's all-correct bound
        assert max_certifiable_epsilon(guesses=r) == pytest.approx(
            one_run_epsilon_lower_bound(guesses=r, correct=r), abs=1e-6
        )
    assert guesses_needed(epsilon=1.0) == 10
    assert guesses_needed(epsilon=4.0) == 166  # log(0.05) / log(0.98201) = 165.06
    assert guesses_needed(epsilon=8.0) == 8932
    r = guesses_needed(epsilon=4.0)
    assert max_certifiable_epsilon(guesses=r) >= 4.0 > max_certifiable_epsilon(guesses=r - 1)
    assert canaries_needed(epsilon=4.0) // 4 * 2 >= 166
    assert max_certifiable_epsilon(guesses=0) == 0.0
    with pytest.raises(ValueError, match="positive and finite"):
        guesses_needed(epsilon=math.inf)


def test_noise_aware_inversion_is_exact_without_noise_and_the_prior_with_much():
    rng = np.random.default_rng(0)
    w, b, (h, d) = first_layer_slices(UNIT)
    size = sum(p.numel() for p in UNIT.build().parameters())
    x = rng.random(d)
    a = rng.normal(0, 1, h)
    update = np.zeros(size)
    update[w] = np.outer(a, x).reshape(-1)
    update[b] = a
    m = np.full(d, 0.5)
    exact = denoised_candidates(update, UNIT, noise=0.0, prior_mean=m, prior_var=0.1)
    assert np.allclose(exact, x)  # every row is the record
    noisy = update + rng.normal(0, 1e3, size)
    prior = denoised_candidates(noisy, UNIT, noise=1e3, prior_mean=m, prior_var=0.1)
    ratios = noisy[w].reshape(h, d) / noisy[b][:, None]
    assert np.abs(prior - m).mean() < 0.5 * np.abs(ratios - m).mean()  # shrunk to the prior
    some = update + rng.normal(0, 0.3, size)
    one = denoised_candidates(some, UNIT, noise=0.3, prior_mean=m, prior_var=0.1)
    two = denoised_candidates(some * 1.0, UNIT, noise=0.6, prior_mean=m, prior_var=0.1)
    assert not np.allclose(one, two)  # the noise scale changes the answer


def test_noise_scale_from_the_plan_and_the_recipe():
    obs = Observation(
        threat_model=ThreatModel(
            adversary=Adversary.HONEST_BUT_CURIOUS_SERVER, observes=frozenset({View.AGGREGATE})
        ),
        units=(UNIT,),
        offsets=(0, 10),
        counter_base=10,
        encoding=Encoding("plain"),
        num_clients=2,
        recipe={"lr": 0.1, "max_grad_norm": 1.0, "batch_size": 4.0, "local_steps": 1.0},
        noise_multipliers={0: {"image": 2.0}, 1: {"image": 0.0}},
    )
    assert noise_scale(obs, (0,), "image") == pytest.approx(0.1 * 2.0 / 4.0)
    assert noise_scale(obs, (0, 1), "image") == pytest.approx(0.05)
    assert noise_scale(obs, (1,), "image") == 0.0

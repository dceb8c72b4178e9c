"""Client-level DP for federated averaging (DP-FedAvg), with optional adaptive clipping.

McMahan, Ramage, Talwar, Zhang 2018, "Learning Differentially Private Recurrent Language
Models" (Algorithm 1, the fixed-denominator estimator): each selected client's update is
clipped to L2 norm ``C``; the server adds Gaussian noise ``N(0, (z C)^2)`` to the sum and divides
by the *expected* number of participants ``q N``. With Poisson client sampling at rate ``q``,
each round is a subsampled Gaussian mechanism with noise multiplier ``z`` on the unit "one
client", so the RDP accountant of :mod:`privfed.privacy.accounting` applies unchanged.

Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021, "Differentially Private Learning
with Adaptive Clipping", Algorithm 1 and Theorem 1): each client also sends the centred bit
``b - 1/2`` (``b = 1`` if its update norm was at most ``C``), summed with noise ``N(0,
sigma_b^2)``; the server moves ``C <- C exp(-eta (b_mean - gamma))``. The update is noised with
``z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)`` so that the pair of queries is one Gaussian
mechanism with noise multiplier ``z``.

The noise is simulation randomness drawn from the run seed (like Opacus's noise in privfed):
these guarantees are about the mechanism, and the simulator makes it reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privfed.errors import ConfigError, PrivacyBudgetError
from privfed.privacy.accounting import (
    calibrate_noise,
    calibrate_noise_composed,
    plan_epsilon,
    smallest_feasible_epsilon,
)
from privfed.privacy.ledger import SourceLedger

#: The ledger key of the client-level guarantee (one ledger for the whole population: every
#: client is protected by the same mechanism).
CLIENT_LEVEL_SOURCE = "client-level"


@dataclass(frozen=True)
class ClientDPParams:
    """The resolved parameters of the client-level mechanism.

    Attributes:
        noise_multiplier: z, the noise multiplier of the whole round (update + clip count).
        update_noise_multiplier: z_delta, used on the update sum (= z without adaptivity).
        count_noise_std: sigma_b of the clipped-count query (0 without adaptivity).
        sample_rate: client sampling rate q.
    """

    noise_multiplier: float
    update_noise_multiplier: float
    count_noise_std: float
    sample_rate: float


def central_budget_problems(
    *,
    target_epsilon: float,
    delta: float,
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
) -> list[str]:
    """Why the central client-level budget cannot be met over the planned rounds (empty: it can).

    With a fixed ``noise_multiplier`` the spend of ``rounds`` releases (one Poisson-subsampled
    Gaussian event each, McMahan et al. 2018) must fit in ``target_epsilon``: otherwise the run
    is refused at config load, naming the smallest feasible epsilon (what the fixed noise
    spends), the noise multiplier that would fit and the most rounds that fit. A calibrated
    multiplier fails only for a target below what the accountant can certify at ``delta``.

    Args:
        target_epsilon: ``client_dp.target_epsilon``.
        delta: ``client_dp.delta``.
        noise_multiplier: ``client_dp.noise_multiplier`` (0: calibrated).
        sample_rate: client sampling rate q (``federation.cohort_fraction``).
        rounds: planned rounds.

    Returns:
        One message per problem, each naming the fields to change.
    """
    plan = [(sample_rate, rounds)]
    where = (
        f"over {rounds} rounds (client sampling rate {sample_rate:g}, client_dp.delta = {delta:g})"
    )
    if noise_multiplier <= 0:
        try:
            calibrate_noise_composed(target_epsilon=target_epsilon, delta=delta, plan=plan)
        except PrivacyBudgetError:
            floor = smallest_feasible_epsilon(plan, delta=delta)
            return [
                f"client_dp.target_epsilon = {target_epsilon:g} cannot be met {where} whatever "
                f"the noise: the smallest feasible epsilon is {floor:.4g}; raise "
                "client_dp.target_epsilon or client_dp.delta"
            ]
        return []
    spent = plan_epsilon(plan, noise_multiplier=noise_multiplier, delta=delta)
    if spent <= target_epsilon:
        return []
    fixes = []
    try:
        needed = calibrate_noise_composed(target_epsilon=target_epsilon, delta=delta, plan=plan)
        fixes.append(f"raise client_dp.noise_multiplier to >= {needed:.4g}")
    except PrivacyBudgetError:
        pass
    fitting = _most_rounds_within(
        target_epsilon=target_epsilon,
        delta=delta,
        noise_multiplier=noise_multiplier,
        sample_rate=sample_rate,
        rounds=rounds,
    )
    if fitting >= 1:
        fixes.append(f"lower rounds to <= {fitting}")
    fixes.append(f"raise client_dp.target_epsilon to >= {spent:.4g}")
    return [
        f"client_dp.noise_multiplier = {noise_multiplier:g} cannot meet "
        f"client_dp.target_epsilon = {target_epsilon:g} {where}; the smallest feasible "
        f"epsilon is {spent:.4g}: " + ", or ".join(fixes)
    ]


def _most_rounds_within(
    *, target_epsilon: float, delta: float, noise_multiplier: float, sample_rate: float, rounds: int
) -> int:
    """The largest ``R <= rounds`` whose ``R`` releases fit in the budget (0 if none does)."""
    lo, hi = 0, rounds  # invariant: lo fits (0 always does), hi + 1 does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        eps = plan_epsilon([(sample_rate, mid)], noise_multiplier=noise_multiplier, delta=delta)
        if eps <= target_epsilon:
            lo = mid
        else:
            hi = mid - 1
    return lo


def resolve_params(
    *,
    target_epsilon: float,
    delta: float,
    noise_multiplier: float,
    sample_rate: float,
    rounds: int,
    adaptive: bool,
    count_noise_multiplier: float,
    expected_cohort: float,
) -> ClientDPParams:
    """Calibrate (or take) z and split it between the update and the clip-count queries.

    Raises:
        ConfigError: if adaptive clipping's count noise leaves no budget for the update.
    """
    z = noise_multiplier or calibrate_noise(
        target_epsilon=target_epsilon, delta=delta, sample_rate=sample_rate, steps=rounds
    )
    if not adaptive:
        return ClientDPParams(z, z, 0.0, sample_rate)
    if z == 0.0:  # no privacy asked for (target_epsilon = inf): noiseless adaptive clipping
        return ClientDPParams(0.0, 0.0, count_noise_multiplier, sample_rate)
    sigma_b = count_noise_multiplier or max(expected_cohort / 20.0, 1e-6)
    rest = z**-2 - (2.0 * sigma_b) ** -2
    if rest <= 0:
        raise ConfigError(
            f"client_dp.count_noise_multiplier: the clipped-count noise {sigma_b:g} leaves no "
            f"privacy budget for the update at noise multiplier {z:g} (needs 2*sigma_b > z); "
            "raise count_noise_multiplier or the cohort size"
        )
    return ClientDPParams(z, rest**-0.5, sigma_b, sample_rate)


def clip_update(update: np.ndarray, *, clip: float) -> tuple[np.ndarray, bool]:
    """Scale ``update`` to L2 norm at most ``clip``; also say whether it was within the bound."""
    norm = float(np.linalg.norm(update.astype(np.float64)))
    if norm <= clip:
        return update, True
    return (update * (clip / norm)).astype(update.dtype), False


def add_noise(
    total: np.ndarray, *, params: ClientDPParams, clip: float, rng: np.random.Generator
) -> np.ndarray:
    """The server's noisy sum of clipped updates."""
    std = params.update_noise_multiplier * clip
    return total + rng.normal(0.0, std, size=total.shape)


def next_clip(
    clip: float,
    *,
    centred_bit_sum: float,
    params: ClientDPParams,
    expected_cohort: float,
    target_quantile: float,
    lr: float,
    rng: np.random.Generator,
) -> float:
    """Geometric update of the clip bound from the noisy count of unclipped clients."""
    noisy = centred_bit_sum + rng.normal(0.0, params.count_noise_std)
    fraction = noisy / max(expected_cohort, 1e-12) + 0.5
    return float(clip * math.exp(-lr * (fraction - target_quantile)))


def new_client_ledger(*, delta: float, target_epsilon: float) -> SourceLedger:
    """The population's client-level ledger (one event per released round)."""
    return SourceLedger(-1, CLIENT_LEVEL_SOURCE, delta=delta, target_epsilon=target_epsilon)

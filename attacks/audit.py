"""Empirical privacy audit of record-level DP-SGD with canaries in one training run.

Steinke, Nasr, Jagielski, "Privacy Auditing with One (1) Training Run", NeurIPS 2023: insert
``m`` canary records, each included independently with probability 1/2; after training, an
attacker guesses "in" for the ``k`` canaries it is most confident about and "out" for the ``k``
it is least confident about, abstaining on the rest. Under pure ``epsilon``-DP the number of
correct guesses among ``r = 2k`` is stochastically dominated by
``Binomial(r, e^eps / (1 + e^eps))``, so observing ``v`` correct guesses rejects every epsilon
for which ``P[Binomial(r, p(eps)) >= v] <= 1 - confidence``; the audited lower bound is the
largest rejected epsilon. Canaries are mislabeled records (a wrong label drawn at random), the
easiest records to memorize, as in Jagielski, Ullman, Oprea, "Auditing Differentially Private
Machine Learning: How Private is Private SGD?", NeurIPS 2020.

This module audits one client's DP-SGD trainer (:class:`privfed.client.UnitTrainer`, the code
every run uses for local training) in isolation; it does not insert canaries into a federation
run (that needs a data hook in the engine). The bound is the pure-DP (``delta = 0``) statement;
with ``delta > 0`` the one-run bound is lower by a term that grows with ``m * delta``, so with
small ``delta`` the comparison is tight and a bound above the accountant's epsilon means a bug.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import binom

from attacks.base import Records
from attacks.membership import init_model, per_record_loss
from privfed.client import UnitSpec, UnitTrainer
from privfed.models import flat_parameters
from privfed.privacy.accounting import DPEvent, epsilon_for


def one_run_epsilon_lower_bound(*, guesses: int, correct: int, confidence: float = 0.95) -> float:
    """Largest epsilon rejected at ``confidence`` by ``correct`` right out of ``guesses`` guesses.

    Args:
        guesses: number of non-abstaining guesses ``r``.
        correct: number of correct guesses ``v``.
        confidence: ``1 - beta`` of the test.

    Returns:
        The audited lower bound (0 when nothing can be rejected).
    """
    if not 0 <= correct <= guesses:
        raise ValueError(f"need 0 <= correct <= guesses, got {correct} of {guesses}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    beta = 1.0 - confidence
    if guesses == 0:
        return 0.0

    def tail(eps: float) -> float:
        p = 1.0 / (1.0 + math.exp(-eps))
        return float(binom.sf(correct - 1, guesses, p))  # P[Bin >= correct]

    if tail(0.0) > beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while tail(hi) <= beta and hi < 1e3:
        lo, hi = hi, hi * 2
    for _ in range(100):
        mid = (lo + hi) / 2
        if tail(mid) <= beta:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class AuditResult:
    """Outcome of one canary audit.

    Attributes:
        epsilon_lower: audited lower bound on epsilon.
        confidence: confidence level of the bound.
        epsilon_accountant: the accountant's epsilon for the same training (``inf`` without DP),
            or the claimed epsilon when one was given.
        delta: delta of the accountant's epsilon.
        canaries: canaries inserted (each with probability 1/2).
        guesses: non-abstaining guesses.
        correct: correct guesses.
        flagged: the audited bound exceeds the accountant's epsilon (a bug).
    """

    epsilon_lower: float
    confidence: float
    epsilon_accountant: float
    delta: float
    canaries: int
    guesses: int
    correct: int
    flagged: bool


def audit_dp_sgd(
    unit: UnitSpec,
    data: Records,
    pool: Records,
    *,
    canaries: int,
    guesses: int,
    steps: int,
    batch_size: int,
    lr: float,
    noise_multiplier: float | None,
    max_grad_norm: float,
    delta: float,
    rng: np.random.Generator,
    confidence: float = 0.95,
    claimed_epsilon: float | None = None,
) -> AuditResult:
    """Audit one DP-SGD trainer with mislabeled canaries in one run.

    Args:
        unit: the model unit (its first task is audited).
        data: the client's ordinary training records.
        pool: records the canaries are drawn from (disjoint from ``data``).
        canaries: number of canaries ``m``.
        guesses: guesses on each side (``k`` "in" and ``k`` "out"; ``r = 2k``).
        steps: DP-SGD steps.
        batch_size: expected batch size.
        lr: learning rate.
        noise_multiplier: sigma; None trains without DP (the audit must then find leakage).
        max_grad_norm: per-sample clipping norm.
        delta: delta for the accountant's epsilon.
        rng: every draw (canaries, labels, inclusion, training seed).
        confidence: confidence of the lower bound.
        claimed_epsilon: compare against this epsilon instead of the accountant's (to audit a
            claim, e.g. a config that says it is private).
    """
    if not 0 < 2 * guesses <= canaries:
        raise ValueError(f"need 0 < 2 * guesses <= canaries, got {guesses} and {canaries}")
    if canaries > len(pool):
        raise ValueError(f"canaries ({canaries}) exceeds the pool ({len(pool)} records)")
    task = unit.tasks[0]
    k_classes = unit.heads[task]
    idx = rng.choice(len(pool), size=canaries, replace=False)
    true = np.asarray(pool.labels[task])[idx]
    wrong = (true + rng.integers(1, k_classes, size=canaries)) % k_classes
    cx = np.asarray(pool.x[idx], dtype=np.float32)
    included = rng.random(canaries) < 0.5
    x = np.concatenate([np.asarray(data.x, dtype=np.float32), cx[included]])
    y = np.concatenate([np.asarray(data.labels[task]), wrong[included]]).astype(np.int64)
    seed = int(rng.integers(0, 2**31))
    trainer = UnitTrainer(
        unit,
        x=torch.from_numpy(x),
        y={task: torch.from_numpy(y)},
        batch_size=batch_size,
        lr=lr,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        seed=seed,
        stream=(0, 0),
    )
    start = flat_parameters(init_model(unit, torch.Generator().manual_seed(seed)))
    res = trainer.train(start, steps=steps, round_index=0)
    model = unit.build()
    from privfed.models import load_flat_parameters

    load_flat_parameters(model, res.vector)
    scores = -per_record_loss(model, Records(cx, {task: wrong}), task)
    order = np.argsort(scores)
    guess_in, guess_out = order[-guesses:], order[:guesses]
    correct = int(included[guess_in].sum() + (~included[guess_out]).sum())
    lower = one_run_epsilon_lower_bound(guesses=2 * guesses, correct=correct, confidence=confidence)
    if claimed_epsilon is not None:
        eps = float(claimed_epsilon)
    elif noise_multiplier is None:
        eps = math.inf
    else:
        eps = epsilon_for(
            [
                DPEvent(
                    noise_multiplier=noise_multiplier, sample_rate=res.sample_rate, steps=res.steps
                )
            ],
            delta=delta,
        )
    return AuditResult(
        epsilon_lower=lower,
        confidence=confidence,
        epsilon_accountant=eps,
        delta=delta,
        canaries=canaries,
        guesses=2 * guesses,
        correct=correct,
        flagged=lower > eps,
    )

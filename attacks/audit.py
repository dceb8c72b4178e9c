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
every run uses for local training) in isolation, with the guesses and the bound of
:mod:`privfed.evaluation.audit`, which the audit inside a federated run (``[audit]``, canaries in
one client's data) uses too. The bound is the pure-DP (``delta = 0``) statement; with
``delta > 0`` the one-run bound is lower by a term that grows with ``m * delta``, so with small
``delta`` the comparison is tight and a bound above the accountant's epsilon means a bug.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from attacks.membership import init_model, per_record_loss
from privfed.attack_api import Records
from privfed.client import UnitSpec, UnitTrainer
from privfed.evaluation.audit import guess_canaries, one_run_epsilon_lower_bound
from privfed.models import flat_parameters, load_flat_parameters
from privfed.privacy.accounting import DPEvent, epsilon_for

__all__ = ["AuditResult", "audit_dp_sgd", "one_run_epsilon_lower_bound"]


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
    load_flat_parameters(model, res.vector)
    loss = per_record_loss(model, Records(cx, {task: wrong}), task)
    guessed = guess_canaries(loss, included, k=guesses, confidence=confidence)
    lower = guessed.epsilon_lower_bound
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
        guesses=guessed.guesses,
        correct=guessed.correct,
        flagged=lower > eps,
    )

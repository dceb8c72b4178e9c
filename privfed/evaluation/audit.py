"""The math of the one-run canary audit (Steinke, Nasr, Jagielski 2023).

Insert ``m`` canaries, each included independently with probability 1/2; after training, guess
"in" for the ``k`` canaries of lowest loss and "out" for the ``k`` of highest loss, abstaining on
the rest. Under pure ``epsilon``-DP the number of correct guesses among ``r = 2k`` is
stochastically dominated by ``Binomial(r, e^eps / (1 + e^eps))`` (Thm. 3.1), so ``v`` correct
guesses reject every epsilon for which ``P[Binomial(r, p(eps)) >= v] <= 1 - confidence``; the
audited lower bound is the largest rejected epsilon.

Used by the audit inside a federated run (:meth:`privfed.engine.Engine.run_audit`, canaries in
one client's data) and by the audit of one DP-SGD trainer in isolation
(:func:`attacks.audit.audit_dp_sgd`). The bound is the pure-DP (``delta = 0``) statement; with
``delta > 0`` the true lower bound is slightly smaller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CanaryGuesses",
    "audit_run",
    "canaries_needed",
    "guess_canaries",
    "guesses_needed",
    "max_certifiable_epsilon",
    "one_run_epsilon_lower_bound",
]


def one_run_epsilon_lower_bound(*, guesses: int, correct: int, confidence: float = 0.95) -> float:
    """Largest epsilon rejected at ``confidence`` by ``correct`` right out of ``guesses`` guesses.

    Args:
        guesses: number of non-abstaining guesses ``r``.
        correct: number of correct guesses ``v``.
        confidence: ``1 - beta`` of the test.

    Returns:
        The audited lower bound (0 when nothing can be rejected).

    Raises:
        ValueError: ``correct`` outside ``[0, guesses]`` or ``confidence`` outside ``(0, 1)``.
    """
    from scipy.stats import binom

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


def max_certifiable_epsilon(*, guesses: int, confidence: float = 0.95) -> float:
    """The largest epsilon ``guesses`` guesses can certify: the bound when every one is right.

    ``v = r`` correct guesses reject epsilon iff ``p(eps)^r <= 1 - confidence`` with
    ``p(eps) = e^eps / (1 + e^eps)``, so the bound is ``log(p / (1 - p))`` at
    ``p = (1 - confidence)^(1 / r)``: 2.55 for 40 guesses, 3.49 for 100, 4.19 for 200 at 95%.
    An audit whose maximum is below the accountant's epsilon cannot flag a violation of it.

    Raises:
        ValueError: ``guesses < 0`` or ``confidence`` outside ``(0, 1)``.
    """
    if guesses < 0:
        raise ValueError(f"guesses must be >= 0, got {guesses}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if guesses == 0:
        return 0.0
    p = (1.0 - confidence) ** (1.0 / guesses)
    if p <= 0.5:
        return 0.0
    return math.log(p / (1.0 - p))


def guesses_needed(*, epsilon: float, confidence: float = 0.95) -> int:
    """The fewest guesses whose :func:`max_certifiable_epsilon` reaches ``epsilon``.

    ``r = ceil(log(1 - confidence) / log(p(epsilon)))``: 10 for epsilon 1, 166 for 4 and 8,932
    for 8 at 95% confidence.

    Raises:
        ValueError: ``epsilon`` not positive and finite, or ``confidence`` outside ``(0, 1)``.
    """
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be positive and finite, got {epsilon}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    log_p = -math.log1p(math.exp(-epsilon))  # log(e^eps / (1 + e^eps)), stable
    r = math.ceil(math.log(1.0 - confidence) / log_p - 1e-9)
    while max_certifiable_epsilon(guesses=r, confidence=confidence) < epsilon:
        r += 1
    return r


def canaries_needed(*, epsilon: float, confidence: float = 0.95) -> int:
    """Canaries for an ``[audit]`` with the default guesses (``canaries // 4`` on each side).

    With ``k = m // 4`` guesses on each side an audit makes ``2k ~ m / 2`` guesses, so it needs
    about twice :func:`guesses_needed` canaries.
    """
    r = guesses_needed(epsilon=epsilon, confidence=confidence)
    k = math.ceil(r / 2)
    return 4 * k


@dataclass(frozen=True)
class CanaryGuesses:
    """The auditor's guesses and the bound they give.

    Attributes:
        guesses: non-abstaining guesses (``2k``).
        correct: correct guesses.
        confidence: confidence level of the bound.
        epsilon_lower_bound: the audited lower bound on epsilon.
    """

    guesses: int
    correct: int
    confidence: float
    epsilon_lower_bound: float


def guess_canaries(
    loss: np.ndarray, included: np.ndarray, *, k: int, confidence: float = 0.95
) -> CanaryGuesses:
    """Guess "in" for the ``k`` canaries of lowest loss and "out" for the ``k`` of highest.

    Args:
        loss: each canary's loss under the audited model (lower: more likely trained on).
        included: whether each canary was really in the training data.
        k: guesses on each side (``2k <= len(loss)``).
        confidence: confidence of the lower bound.

    Raises:
        ValueError: ``k`` out of range or ``loss`` and ``included`` of different lengths.
    """
    loss = np.asarray(loss)
    included = np.asarray(included, dtype=bool)
    if loss.shape != included.shape or loss.ndim != 1:
        raise ValueError(f"loss {loss.shape} and included {included.shape} must be equal 1-d")
    if not 0 < 2 * k <= len(loss):
        raise ValueError(f"need 0 < 2k <= canaries, got k = {k} and {len(loss)} canaries")
    order = np.argsort(loss)  # lowest loss first: most likely trained on
    guess_in, guess_out = order[:k], order[-k:]
    correct = int(included[guess_in].sum() + (~included[guess_out]).sum())
    lower = one_run_epsilon_lower_bound(guesses=2 * k, correct=correct, confidence=confidence)
    return CanaryGuesses(
        guesses=2 * k, correct=correct, confidence=confidence, epsilon_lower_bound=lower
    )


def audit_run(
    fed: Any, algorithm: Any, state: Any, *, cfg: Any, models: Mapping[str, Any]
) -> dict[str, Any]:
    """Score the canaries of a run under the audited client's model (the ``[audit]`` result).

    The auditor guesses "in" for the ``k`` canaries of lowest loss (summed over the group's
    tasks, with their wrong labels) and "out" for the ``k`` of highest loss
    (:func:`guess_canaries`); the bound is compared with the accountant's epsilon of the
    client's ledger for that data source.

    Args:
        fed: the federation (:class:`privfed.federation.Federation`, with an audit plan).
        algorithm: which model the client predicts with.
        state: the finished run's state.
        cfg: the experiment.
        models: unit name -> a model of that unit to load vectors into.
    """
    import torch
    from torch import nn

    from privfed.data.inputs import model_inputs
    from privfed.models import load_flat_parameters

    plan = fed.audit
    if plan is None:
        raise ValueError("the federation has no audit plan (audit.canaries = 0)")
    gs = fed.groups[plan.group]
    x = torch.from_numpy(model_inputs(gs.source, plan.canaries))
    loss = np.zeros(len(plan.canaries))
    ce = nn.CrossEntropyLoss(reduction="none")
    for unit in gs.units:
        model = models[unit.name]
        load_flat_parameters(
            model,
            algorithm.eval_vector(
                unit=unit.name,
                global_vec=state.globals[unit.name],
                personal=state.personal.get((plan.client, unit.name)),
            ),
        )
        model.eval()
        with torch.no_grad():
            out = model(x)
        for t in unit.tasks:
            y = torch.from_numpy(gs.source.labels[t][plan.canaries])
            loss += ce(out[t], y).double().numpy()
    k = cfg.audit.guesses or len(plan.canaries) // 4
    guessed = guess_canaries(loss, plan.included, k=k, confidence=cfg.audit.confidence)
    key = (plan.client, gs.ledger_key)
    ledger = state.ledger[key] if key in state.ledger else None
    eps = ledger.epsilon() if ledger is not None and ledger.steps else 0.0
    ceiling = max_certifiable_epsilon(guesses=guessed.guesses, confidence=cfg.audit.confidence)
    reach = ceiling >= eps
    return {
        "method": "one-run audit (Steinke, Nasr, Jagielski 2023), mislabeled canaries",
        "client": plan.client,
        "group": plan.group,
        "source": gs.ledger_key,
        "canaries": len(plan.canaries),
        "canaries_included": int(plan.included.sum()),
        "guesses": guessed.guesses,
        "correct": guessed.correct,
        "confidence": cfg.audit.confidence,
        "epsilon_lower_bound": guessed.epsilon_lower_bound,
        "epsilon_max_certifiable": ceiling,
        "epsilon_accountant": eps,
        "delta": cfg.dp.delta,
        "flagged": bool(guessed.epsilon_lower_bound > eps),
        "can_flag": bool(reach),
        "guesses_to_reach_accountant": (
            guesses_needed(epsilon=eps, confidence=cfg.audit.confidence)
            if math.isfinite(eps) and eps > 0
            else 0
        ),
        "note": "pure-DP bound; with delta > 0 the true lower bound is slightly smaller"
        + (
            ""
            if reach
            else f"; with {guessed.guesses} guesses the bound cannot exceed {ceiling:.2f}, below "
            f"the accountant's {eps:.2f}, so this audit cannot flag a violation of it (use "
            f"audit.canaries >= {canaries_needed(epsilon=eps, confidence=cfg.audit.confidence)}"
            ")"
            if math.isfinite(eps)
            else ""
        ),
    }

"""Generated per-owner Markov-chain language with a computable Bayes-optimal accuracy.

Each owner ``k`` speaks its own first-order Markov chain over a vocabulary of ``V`` tokens::

    P_k = (1 - lam) * G + lam * L_k

where ``G`` is one transition matrix shared by every owner and ``L_k`` is the owner's own. Every
row of ``G`` and of each ``L_k`` is drawn from ``Dirichlet(concentration * 1_V)``. ``lam`` is the
personalization dial: ``lam = 0`` gives one shared language (IID across owners), ``lam = 1``
gives unrelated languages.

A record is one transition ``(previous token, next token)``. Because the chains are known, the
best possible accuracy of a next-token predictor is computable:

* **personal** (a perfect model of the owner's own chain):
  ``mean_k sum_i pi_k(i) max_j P_k(i, j)``;
* **pooled** (the best single predictor for the mixture of all owners, owners weighted by their
  share of the records): ``sum_i max_j sum_k w_k pi_k(i) P_k(i, j)``;

with ``pi_k`` the stationary distribution of ``P_k`` (population values) or the empirical
distribution of contexts in a generated sample. The coarser label ``next_group = next // 4``
gets the same two numbers with the columns of ``P_k`` summed in groups of four.

Calibration (measured on this machine, 40 generator seeds, ``V=16``, 20 owners, ``lam=0.9``):
``concentration=0.3`` gives personal 0.327 +/- 0.006 and pooled 0.114 +/- 0.004;
``concentration=0.32`` gives 0.319 / 0.112; ``concentration=1`` gives 0.197 / 0.090. The field
notes' 0.316 / 0.110 is reproduced by Dirichlet rows with concentration about 0.3, the default.

This module is pure math over a numpy Generator passed in; ``privfed.data.sources`` wraps it as
the ``markov`` data source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from privfed.errors import ConfigError

GROUP_SIZE = 4
"""Tokens per coarse group of the ``next_group`` label (``next_group = next // 4``)."""


@dataclass(frozen=True)
class MarkovLanguage:
    """The transition matrices of every owner.

    Attributes:
        shared: ``G``, float64 [V, V], rows sum to 1.
        own: ``L_k``, float64 [K, V, V].
        lam: mixing weight of the owner's own chain.
    """

    shared: np.ndarray
    own: np.ndarray
    lam: float

    @property
    def vocab(self) -> int:
        """Vocabulary size V."""
        return int(self.shared.shape[0])

    @property
    def num_owners(self) -> int:
        """Number of owners K."""
        return int(self.own.shape[0])

    @property
    def transitions(self) -> np.ndarray:
        """``P_k = (1 - lam) G + lam L_k`` for every owner, float64 [K, V, V]."""
        return (1.0 - self.lam) * self.shared[None, :, :] + self.lam * self.own


@dataclass(frozen=True)
class MarkovSample:
    """Generated transitions of every owner.

    Attributes:
        prev: int64 [N] context token of each record.
        next: int64 [N] token that follows it.
        owner: int64 [N] owner that generated the record.
    """

    prev: np.ndarray
    next: np.ndarray
    owner: np.ndarray


@dataclass(frozen=True)
class BayesAccuracy:
    """Best achievable accuracy for one label column.

    Attributes:
        personal: mean over owners of the accuracy of the owner's own Bayes predictor.
        pooled: accuracy of the best single predictor on the mixture of all owners.
        personal_per_owner: float64 [K], the personal accuracy of each owner.
        pooled_per_owner: float64 [K], the pooled predictor's accuracy on each owner.
    """

    personal: float
    pooled: float
    personal_per_owner: np.ndarray
    pooled_per_owner: np.ndarray


def _check(*, vocab: int, num_owners: int, lam: float, concentration: float) -> None:
    problems = []
    if vocab < GROUP_SIZE or vocab % GROUP_SIZE:
        problems.append(f"vocab must be a multiple of {GROUP_SIZE} >= {GROUP_SIZE}, got {vocab}")
    if num_owners < 1:
        problems.append(f"num_owners must be >= 1, got {num_owners}")
    if not 0.0 <= lam <= 1.0:
        problems.append(f"lam must be in [0, 1], got {lam}")
    if not concentration > 0.0:
        problems.append(f"concentration must be > 0, got {concentration}")
    if problems:
        raise ConfigError(problems)


def make_language(
    *,
    vocab: int,
    num_owners: int,
    lam: float,
    concentration: float,
    rng: np.random.Generator,
) -> MarkovLanguage:
    """Draw the shared chain ``G`` and each owner's ``L_k``.

    Args:
        vocab: vocabulary size V (a multiple of 4, for the ``next_group`` label).
        num_owners: number of owners K.
        lam: weight of the owner's own chain in ``P_k``, in [0, 1].
        concentration: Dirichlet concentration of every row (smaller = peakier rows).
        rng: source of randomness.

    Returns:
        The language.

    Raises:
        ConfigError: a parameter is out of range.
    """
    _check(vocab=vocab, num_owners=num_owners, lam=lam, concentration=concentration)
    alpha = np.full(vocab, concentration)
    shared = rng.dirichlet(alpha, size=vocab)
    own = rng.dirichlet(alpha, size=(num_owners, vocab))
    return MarkovLanguage(shared=shared, own=own, lam=float(lam))


def stationary(transition: np.ndarray) -> np.ndarray:
    """Stationary distribution of a row-stochastic matrix (float64 [V]).

    Solves ``pi P = pi, sum(pi) = 1`` as a least-squares system, which is exact for the
    irreducible chains generated here (every Dirichlet entry is positive almost surely).
    """
    v = transition.shape[0]
    a = np.vstack([transition.T - np.eye(v), np.ones((1, v))])
    b = np.zeros(v + 1)
    b[-1] = 1.0
    pi, *_ = np.linalg.lstsq(a, b, rcond=None)
    pi = np.clip(pi, 0.0, None)
    return np.asarray(pi / pi.sum())


def sample(
    language: MarkovLanguage, *, tokens_per_owner: int, rng: np.random.Generator
) -> MarkovSample:
    """Run every owner's chain for ``tokens_per_owner`` transitions.

    The first token of each chain is drawn from the chain's stationary distribution, so every
    record is a draw from the stationary process.

    Args:
        language: the chains.
        tokens_per_owner: number of records (transitions) per owner, >= 1.
        rng: source of randomness.

    Returns:
        The records, owner by owner.
    """
    if tokens_per_owner < 1:
        raise ConfigError(f"tokens_per_owner must be >= 1, got {tokens_per_owner}")
    transitions = language.transitions
    k_owners, v = language.num_owners, language.vocab
    cdf = np.cumsum(transitions, axis=2)
    cdf[:, :, -1] = 1.0
    seq = np.empty((k_owners, tokens_per_owner + 1), dtype=np.int64)
    for k in range(k_owners):
        seq[k, 0] = rng.choice(v, p=stationary(transitions[k]))
    uniforms = rng.random((k_owners, tokens_per_owner))
    owners = np.arange(k_owners)
    for t in range(tokens_per_owner):
        rows = cdf[owners, seq[:, t]]  # [K, V]
        seq[:, t + 1] = np.minimum((rows < uniforms[:, t : t + 1]).sum(axis=1), v - 1)
    return MarkovSample(
        prev=seq[:, :-1].reshape(-1).copy(),
        next=seq[:, 1:].reshape(-1).copy(),
        owner=np.repeat(np.arange(k_owners, dtype=np.int64), tokens_per_owner),
    )


def group_columns(transitions: np.ndarray, group_size: int = GROUP_SIZE) -> np.ndarray:
    """Sum the last axis in consecutive groups: P(next_group | prev) from P(next | prev)."""
    *lead, v = transitions.shape
    return np.asarray(transitions.reshape(*lead, v // group_size, group_size).sum(axis=-1))


def bayes_accuracy(
    transitions: np.ndarray,
    *,
    context: np.ndarray | None = None,
    owner_weights: np.ndarray | None = None,
) -> BayesAccuracy:
    """Personal and pooled Bayes-optimal accuracy of predicting a label from the context.

    Args:
        transitions: float64 [K, V, C]: P_k(label = c | context = i) for each owner k.
        context: float64 [K, V] context distribution of each owner; None uses the stationary
            distribution of each chain (requires C == V; for a coarser label pass the
            stationary distributions of the full chains).
        owner_weights: share of the records of each owner; None means equal shares.

    Returns:
        The personal (per owner and mean) and pooled accuracies.
    """
    k_owners = transitions.shape[0]
    if context is None:
        context = np.stack([stationary(transitions[k]) for k in range(k_owners)])
    weights = (
        np.full(k_owners, 1.0 / k_owners)
        if owner_weights is None
        else np.asarray(owner_weights, dtype=np.float64) / np.sum(owner_weights)
    )
    per_owner = np.einsum("ki,ki->k", context, transitions.max(axis=2))
    joint = np.einsum("k,ki,kic->ic", weights, context, transitions)
    pooled_pred = joint.argmax(axis=1)  # [V]
    picked = np.take_along_axis(
        transitions, np.broadcast_to(pooled_pred[None, :, None], (k_owners, len(pooled_pred), 1)), 2
    )[:, :, 0]
    pooled_per_owner = np.einsum("ki,ki->k", context, picked)
    return BayesAccuracy(
        personal=float(per_owner @ weights),
        pooled=float(joint.max(axis=1).sum()),
        personal_per_owner=per_owner,
        pooled_per_owner=pooled_per_owner,
    )


def empirical_context(sample_: MarkovSample, *, num_owners: int, vocab: int) -> np.ndarray:
    """Empirical distribution of the context token of each owner, float64 [K, V]."""
    counts = np.zeros((num_owners, vocab))
    np.add.at(counts, (sample_.owner, sample_.prev), 1.0)
    totals = counts.sum(axis=1, keepdims=True)
    return np.asarray(counts / np.maximum(totals, 1.0))

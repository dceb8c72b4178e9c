"""How the server obtains the sum of client updates.

The engine hands every round's client vectors to an :class:`Aggregator` and receives only their
sum (plus which clients made it in). :class:`PlainSumAggregator` adds the float vectors in the
clear; ``privfed.secagg.SecAggAggregator`` runs the secure-aggregation protocol, so the server
side of the engine never holds an individual update.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

#: Protocol phases at which a client can vanish (names shared with ``privfed.secagg``).
PHASES: tuple[str, ...] = ("advertise_keys", "share_keys", "masked_input", "unmask")


@dataclass(frozen=True)
class AggregateResult:
    """What the server learns from one aggregation.

    Attributes:
        total: float64 sum of the vectors of the clients in ``included``.
        included: sorted ids of the clients whose vector is in ``total``.
        dropped: sorted ids of selected clients whose vector is not in ``total``.
        stats: figures about the aggregation (bytes per phase, seconds per phase, clamped
            coordinates, ...), flat name -> number.
        observed: what an observer of the server's inbox saw per client (masked vectors under
            secure aggregation, the plain vector otherwise); kept only when the engine asks for
            it (attacks), else empty.
    """

    total: np.ndarray
    included: tuple[int, ...]
    dropped: tuple[int, ...]
    stats: Mapping[str, float] = field(default_factory=dict)
    observed: Mapping[int, np.ndarray] = field(default_factory=dict)


class Aggregator(Protocol):
    """Computes the sum of one round's client vectors."""

    name: str

    def aggregate(
        self,
        updates: Mapping[int, np.ndarray],
        *,
        round_index: int,
        model_hash: bytes,
        seed: int,
        dropouts: Mapping[str, Collection[int]] | None = None,
        keep_observed: bool = False,
    ) -> AggregateResult:
        """Sum ``updates`` (client id -> float32 vector, all the same length).

        Args:
            updates: each selected client's vector; a client may still drop out.
            round_index: the federated round (bound into the protocol session).
            model_hash: hash of the global model broadcast this round (bound into the session).
            seed: simulation seed for this aggregation (stochastic rounding, dropout draws);
                never used for cryptographic material.
            dropouts: phase name (see :data:`PHASES`) -> ids of clients that vanish before
                sending that phase's message.
            keep_observed: also return what the server saw from each client.
        """
        ...


class PlainSumAggregator:
    """Adds the float vectors in the clear (no secure aggregation)."""

    name = "plain"

    def aggregate(
        self,
        updates: Mapping[int, np.ndarray],
        *,
        round_index: int,
        model_hash: bytes,
        seed: int,
        dropouts: Mapping[str, Collection[int]] | None = None,
        keep_observed: bool = False,
    ) -> AggregateResult:
        """Sum the vectors of the clients that did not drop out."""
        gone: set[int] = set()
        for ids in (dropouts or {}).values():
            gone.update(ids)
        included = tuple(sorted(c for c in updates if c not in gone))
        dropped = tuple(sorted(c for c in updates if c in gone))
        if not updates:
            raise ValueError("aggregate needs at least one update")
        length = len(next(iter(updates.values())))
        total = np.zeros(length, dtype=np.float64)
        for c in included:
            total += updates[c]
        observed = {c: np.asarray(updates[c]).copy() for c in included} if keep_observed else {}
        return AggregateResult(
            total=total,
            included=included,
            dropped=dropped,
            stats={"bytes_up_per_client": float(length * 4)},
            observed=observed,
        )

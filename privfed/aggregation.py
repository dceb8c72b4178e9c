"""How client updates travel and how the server obtains their sum.

An :class:`UpdateEncoding` is a pair: the client encodes its joint float update
(:meth:`UpdateEncoding.encode`, run inside :func:`privfed.participation.participate`), the server
decodes the sum (:meth:`UpdateEncoding.decode`, run by :func:`privfed.server.apply_round`).
Between them the sum is taken in the clear (``plain``) or by secure aggregation, whose client
state machines live with the clients (:mod:`privfed.backends`):

=============  ===========================================  ====================================
encoding       client side                                  server side
=============  ===========================================  ====================================
plain          float32 vector                               float64 sum
secagg         clamp, scale, stochastic rounding into       signed lift, divide by the scale
               Z_(2^bits) (:mod:`privfed.secagg.field`)
secagg+ddg     clip, rotate, round, add discrete Gaussian   inverse rotation and scaling
               noise (Kairouz, Liu, Steinke 2021)           (:mod:`privfed.privacy.distributed`)
=============  ===========================================  ====================================

The :class:`Aggregator` classes (:class:`PlainSumAggregator`,
:class:`privfed.secagg.SecAggAggregator`) put an encoding and a sum together in one process:
float vectors in, float sum out, for tests, benchmarks and attacks that play the whole protocol
in one place. They take one :class:`RoundContext`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

#: Protocol phases at which a client can vanish (names shared with ``privfed.secagg``).
PHASES: tuple[str, ...] = ("advertise_keys", "share_keys", "masked_input", "unmask")


@dataclass(frozen=True, kw_only=True)
class RoundContext:
    """The round an aggregation belongs to.

    Attributes:
        round_index: the federated round (bound into the protocol session).
        model_hash: hash of the global model broadcast this round (bound into the session).
        seed: simulation seed of this aggregation (stochastic rounding); never used for
            cryptographic material.
        dropouts: phase name (see :data:`PHASES`) -> ids of clients that vanish before
            sending that phase's message.
        keep_observed: also return what the server saw from each client.
    """

    round_index: int
    model_hash: bytes = b""
    seed: int = 0
    dropouts: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    keep_observed: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.dropouts) - set(PHASES)
        if unknown:
            raise ValueError(f"unknown dropout phases {sorted(unknown)}; use {', '.join(PHASES)}")


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
            secure aggregation, the plain vector otherwise); kept only when the context asks
            for it, else empty.
    """

    total: np.ndarray
    included: tuple[int, ...]
    dropped: tuple[int, ...]
    stats: Mapping[str, float] = field(default_factory=dict)
    observed: Mapping[int, np.ndarray] = field(default_factory=dict)


class Aggregator(Protocol):
    """Computes the sum of one round's client vectors in one process."""

    name: str

    def aggregate(self, updates: Mapping[int, np.ndarray], ctx: RoundContext) -> AggregateResult:
        """Sum ``updates`` (client id -> float32 vector, all the same length) for round ``ctx``."""
        ...


def aggregation_seed(root_seed: int, round_index: int) -> int:
    """The simulation seed of round ``round_index``'s encodings (stochastic rounding)."""
    from privfed.rng import numpy_rng

    return int(numpy_rng(root_seed, "aggregate", round_index).integers(0, 2**62))


# ------------------------------------------------------------------------------ encodings
class UpdateEncoding(Protocol):
    """How one client's joint update travels: client-side encode, server-side decode."""

    #: ``plain``, ``secagg`` or ``secagg+ddg`` (written into records and manifests).
    name: str
    #: Whether the encoded vectors are summed by secure aggregation (integers mod 2^bits).
    secure: bool

    def encode(self, vector: np.ndarray, *, round_index: int, client: int) -> np.ndarray:
        """The client's message for its joint float update ``vector``."""
        ...

    def decode(self, total: np.ndarray, *, round_index: int, included: int) -> np.ndarray:
        """The float64 sum of the joint updates from the sum of ``included`` clients' messages."""
        ...

    def encoded_length(self, length: int) -> int:
        """Length of the message vector for a joint vector of ``length``."""
        ...


class PlainEncoding:
    """Float32 vectors summed in the clear."""

    name = "plain"
    secure = False

    def encode(self, vector: np.ndarray, *, round_index: int, client: int) -> np.ndarray:
        """The vector as float32 (a copy)."""
        return np.array(vector, dtype=np.float32, copy=True)

    def decode(self, total: np.ndarray, *, round_index: int, included: int) -> np.ndarray:
        """The float64 sum as it is."""
        return np.asarray(total, dtype=np.float64)

    def encoded_length(self, length: int) -> int:
        """The same length."""
        return length


def fixed_point(vector: np.ndarray, *, config: Any, seed: int, client: int) -> Any:
    """Client ``client``'s fixed-point encoding under aggregation seed ``seed``.

    Returns:
        The :class:`privfed.secagg.field.EncodedVector` (values and clamped coordinates).
    """
    from privfed.rng import numpy_rng
    from privfed.secagg.field import encode_fixed_point

    return encode_fixed_point(
        np.asarray(vector),
        clip=config.clip,
        scale_bits=config.scale_bits,
        bits=config.bits,
        rng=numpy_rng(seed, "secagg.stochastic_rounding", client),
    )


class FixedPointEncoding:
    """Fixed point in Z_(2^bits) for secure aggregation (:mod:`privfed.secagg.field`).

    Coordinates are clamped to ``[-clip, clip]``, scaled by ``2**scale_bits`` and rounded
    stochastically with a stream named by (aggregation seed of the round, client). Integer
    coordinates such as participation counters are exact multiples of the scale and decode
    exactly (``clip >= 1`` is enforced by the config).

    Args:
        config: the secure-aggregation parameters (``bits``, ``scale_bits``, ``clip``).
        root_seed: the run seed.
    """

    name = "secagg"
    secure = True

    def __init__(self, config: Any, *, root_seed: int) -> None:
        self.config = config
        self.root_seed = int(root_seed)

    def encode(self, vector: np.ndarray, *, round_index: int, client: int) -> np.ndarray:
        """Clamp, scale and stochastically round into ``[0, 2**bits)``."""
        seed = aggregation_seed(self.root_seed, round_index)
        return fixed_point(vector, config=self.config, seed=seed, client=client).values

    def decode(self, total: np.ndarray, *, round_index: int, included: int) -> np.ndarray:
        """Signed lift of the modular sum, divided by the scale."""
        from privfed.secagg.field import decode_fixed_point

        return decode_fixed_point(total, bits=self.config.bits, scale_bits=self.config.scale_bits)

    def encoded_length(self, length: int) -> int:
        """The same length."""
        return length


class DistributedDPEncoding:
    """Client-level DP whose noise the clients add themselves (distributed discrete Gaussian).

    Kairouz, Liu, Steinke 2021: each client clips the update part of its joint vector (the
    first ``params.dimension`` coordinates; no participation counters are sent under
    client-level DP), rotates it (randomized Hadamard with a public per-round seed), scales and
    conditionally rounds it to integers, adds discrete Gaussian noise and reduces it modulo
    ``2^bits``; the server decodes the modular sum of the survivors. The server never sees an
    un-noised sum.

    Args:
        params: the run's DDG parameters (:func:`privfed.privacy.distributed.ddg_configure`).
        length: the joint vector length the decoded sum is laid into.
        root_seed: the run seed (public rotation seeds, rounding and noise streams).
    """

    name = "secagg+ddg"
    secure = True

    def __init__(self, params: Any, *, length: int, root_seed: int) -> None:
        self.params = params
        self.length = int(length)
        self.root_seed = int(root_seed)

    def rotation_seed(self, round_index: int) -> int:
        """The public rotation seed of round ``round_index``."""
        from privfed.rng import int_seed

        return int_seed(self.root_seed, "ddg-rotation", round_index)

    def encode(self, vector: np.ndarray, *, round_index: int, client: int) -> np.ndarray:
        """Clip, rotate, round and noise the update part (see the class docstring)."""
        from privfed.privacy import distributed as ddg
        from privfed.rng import numpy_rng

        return ddg.encode_report(
            np.asarray(vector[: self.params.dimension], dtype=np.float64),
            params=self.params,
            rotation_seed=self.rotation_seed(round_index),
            rng=numpy_rng(self.root_seed, "ddg-client", round_index, client),
        ).values

    def decode(self, total: np.ndarray, *, round_index: int, included: int) -> np.ndarray:
        """Undo the scaling and rotation of the survivors' noisy sum."""
        from privfed.privacy import distributed as ddg

        out = np.zeros(self.length, dtype=np.float64)
        out[: self.params.dimension] = ddg.decode(
            total,
            params=self.params,
            n_clients=included,
            rotation_seed=self.rotation_seed(round_index),
        )
        return out

    def encoded_length(self, length: int) -> int:
        """The rotation's padded dimension (the update part only; no counters are sent)."""
        return int(self.params.padded_dimension)


def plain_sum(
    vectors: Mapping[int, np.ndarray], ctx: RoundContext
) -> tuple[np.ndarray, tuple[int, ...], tuple[int, ...]]:
    """Sum in the clear the vectors of the clients that did not drop out.

    Returns:
        The float64 total, the included and the dropped clients (sorted).

    Raises:
        ValueError: no vectors.
    """
    if not vectors:
        raise ValueError("aggregate needs at least one update")
    gone: set[int] = set()
    for ids in ctx.dropouts.values():
        gone.update(ids)
    included = tuple(sorted(c for c in vectors if c not in gone))
    dropped = tuple(sorted(c for c in vectors if c in gone))
    length = len(next(iter(vectors.values())))
    total = np.zeros(length, dtype=np.float64)
    for c in included:
        total += vectors[c]
    return total, included, dropped


class PlainSumAggregator:
    """Adds the float vectors in the clear (no secure aggregation)."""

    name = "plain"

    def aggregate(self, updates: Mapping[int, np.ndarray], ctx: RoundContext) -> AggregateResult:
        """Sum the vectors of the clients that did not drop out."""
        total, included, dropped = plain_sum(updates, ctx)
        length = len(total)
        observed = {c: np.asarray(updates[c]).copy() for c in included} if ctx.keep_observed else {}
        return AggregateResult(
            total=total,
            included=included,
            dropped=dropped,
            stats={"bytes_up_per_client": float(length * 4)},
            observed=observed,
        )

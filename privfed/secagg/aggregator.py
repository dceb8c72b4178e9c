"""Engine adapter: :class:`SecAggAggregator` implements :class:`privfed.aggregation.Aggregator`.

Float32 client vectors are fixed-point encoded (clamp to ``[-clip, clip]``, scale by
``2**scale_bits``, stochastic rounding seeded per client from the aggregation's simulation seed
via :func:`privfed.rng.numpy_rng`), summed through the real protocol by
:func:`~privfed.secagg.simulate.secure_sum`, and the sum is decoded (signed lift, divide by the
scale). Integer-valued coordinates such as the engine's 0/1 participation counters are exact
multiples of the scale, never rounded, and decode exactly (``clip >= 1`` is enforced by the
config). A client whose message is corrupt or unauthentic is dropped from the round;
too few survivors raises :class:`~privfed.secagg.errors.SecAggAbort`.

In the malicious setting (the default) every client has a long-term Ed25519 identity: the
aggregator enrols each client the first time it sees it (fresh key from ``os.urandom``, its
public key added to the registry all clients trust) and keeps it for later rounds, which is
the simulated PKI of :mod:`privfed.secagg.identity`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np

from privfed.aggregation import AggregateResult, RoundContext, fixed_point
from privfed.secagg.config import SecAggConfig, check_no_overflow
from privfed.secagg.field import decode_fixed_point
from privfed.secagg.identity import ClientIdentity, KeyRegistry, generate_identity
from privfed.secagg.simulate import PHASES, secure_sum


class SecAggAggregator:
    """Sums client vectors with secure aggregation.

    Args:
        config: protocol and encoding parameters.
    """

    name = "secagg"

    def __init__(self, config: SecAggConfig | None = None) -> None:
        self.config = config if config is not None else SecAggConfig()
        self._identities: dict[int, ClientIdentity] = {}
        self._registry = KeyRegistry({})

    def enrol(self, clients: Collection[int]) -> tuple[dict[int, ClientIdentity], KeyRegistry]:
        """The long-term identities of ``clients`` (created on first sight) and the registry."""
        new = {c: generate_identity(c) for c in clients if c not in self._identities}
        if new:
            self._identities.update(new)
            self._registry = self._registry.with_keys({c: i.public for c, i in new.items()})
        return {c: self._identities[c] for c in clients}, self._registry

    def aggregate(self, updates: Mapping[int, np.ndarray], ctx: RoundContext) -> AggregateResult:
        """Sum ``updates`` (client id -> float32 vector) through secure aggregation.

        Raises:
            ConfigError: ``bits`` is too small for this many clients (see
                :func:`~privfed.secagg.config.check_no_overflow`).
            SecAggAbort: too few clients survived; the engine skips the round.
            ValueError: no updates, vectors of different lengths, or NaN in an update.
        """
        if not updates:
            raise ValueError("aggregate needs at least one update")
        cfg = self.config
        check_no_overflow(cfg, num_clients=len(updates))
        encoded = {}
        clamped = 0
        for cid in sorted(updates):
            enc = fixed_point(updates[cid], config=cfg, seed=ctx.seed, client=cid)
            encoded[cid] = enc.values
            clamped += enc.clamped
        identities, registry = self.enrol(sorted(encoded))
        result = secure_sum(
            encoded,
            config=cfg,
            dropouts=ctx.dropouts,
            round_index=ctx.round_index,
            model_hash=ctx.model_hash,
            keep_observed=ctx.keep_observed,
            identities=identities,
            registry=registry,
        )
        total = decode_fixed_point(result.total, bits=cfg.bits, scale_bits=cfg.scale_bits)
        length = len(next(iter(encoded.values())))
        n = len(updates)
        up = sum(sum(p.values()) for p in result.bytes_sent.values())
        stats: dict[str, float] = {
            "clients": float(n),
            "included": float(len(result.included)),
            "threshold": float(result.threshold),
            "degree": float(result.degree),
            "clamped_coordinates": float(clamped),
            "bytes_up_per_client": up / n,
            "expansion_vs_float32": (up / n) / (4.0 * length) if length else 0.0,
        }
        for phase in PHASES:
            stats[f"bytes.{phase}"] = float(result.bytes_per_phase[phase])
            stats[f"seconds.{phase}"] = float(result.seconds_per_phase[phase])
            stats[f"server_seconds.{phase}"] = float(result.server_seconds[phase])
        return AggregateResult(
            total=total,
            included=result.included,
            dropped=result.dropped,
            stats=stats,
            observed=dict(result.observed) if ctx.keep_observed else {},
        )

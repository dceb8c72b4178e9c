"""Configuration of secure aggregation and the parameter rules derived from it.

Defaults follow the two papers the protocol is built from:

* Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning",
  CCS 2017 (complete graph). Sec. 6 proves security against a server colluding with fewer than
  ``t`` clients and against active adversaries when ``t > 2n/3``; we use the default
  ``t = floor(2n/3) + 1``, which is above the honest-but-curious bound ``t > n/2`` and keeps the
  same value if the signed (active) variant is added later.
* Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020
  (SecAgg+, k-regular graph). Sec. 3-4: each client shares only with ``k = O(log n)``
  neighbours of a Harary graph over a random permutation of the clients, and the threshold is a
  constant fraction of the neighbourhood. We use ``k = 2 * ceil(log2 n)`` (rounded to keep the
  graph k-regular) and ``t = floor(2 (k + 1) / 3) + 1`` over the closed neighbourhood (the client
  and its k neighbours), the same two-thirds rule applied locally.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from privfed.errors import ConfigError

GRAPHS: tuple[str, ...] = ("complete", "harary")


@dataclass(frozen=True, kw_only=True)
class SecAggConfig:
    """Parameters of one secure-aggregation protocol run.

    Attributes:
        threshold: Shamir threshold ``t``: how many holders of shares must survive to unmask.
            For the complete graph it counts clients of the whole cohort, for ``"harary"`` it
            counts the closed neighbourhood (a client and its ``degree`` neighbours). ``None``
            picks the paper default (see the module docstring): ``floor(2n/3) + 1`` or
            ``floor((k+1)/2) + 1``.
        bits: the sum is computed in Z_(2^bits). Masked vectors travel packed in the smallest
            unsigned integer type holding ``bits`` bits (uint32 for 17..32).
        graph: ``"complete"`` (Bonawitz et al. 2017: every pair of clients shares a mask) or
            ``"harary"`` (Bell et al. 2020: a k-regular Harary graph over a random permutation).
        degree: neighbours per client for ``"harary"``; ``None`` picks ``2 * ceil(log2 n)``.
            Must be ``None`` for the complete graph.
        clip: per-coordinate bound of the fixed-point encoding used by
            :class:`~privfed.secagg.aggregator.SecAggAggregator`: every float coordinate is clamped
            to ``[-clip, clip]``. Must be at least 1 so that the engine's 0/1 participation
            counters are encoded exactly.
        scale_bits: fractional bits of the fixed-point encoding (scale ``2**scale_bits``).
        workers: processes the server uses to expand and remove masks: with more than 1 the
            vector is split into ranges and all but one are computed by forked worker
            processes (Linux; elsewhere in this process). Cuts wall time on a multi-core
            server, not CPU time; threads would not help because the AES-CTR call of
            ``cryptography`` holds the GIL. Default 1 (no fork).
    """

    threshold: int | None = None
    bits: int = 32
    graph: str = "complete"
    degree: int | None = None
    clip: float = 1.0
    scale_bits: int = 16
    workers: int = 1

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.threshold is not None and (
            not isinstance(self.threshold, int)
            or isinstance(self.threshold, bool)
            or self.threshold < 2
        ):
            problems.append(f"threshold must be an integer >= 2 or None, got {self.threshold!r}")
        bits_ok = isinstance(self.bits, int) and not isinstance(self.bits, bool)
        if not bits_ok or not 8 <= self.bits <= 62:
            problems.append(f"bits must be between 8 and 62, got {self.bits!r}")
            bits_ok = False
        if self.graph not in GRAPHS:
            problems.append(f"graph must be one of {', '.join(GRAPHS)}, got {self.graph!r}")
        if self.degree is not None:
            if self.graph == "complete":
                problems.append(
                    "degree is only used with graph = 'harary'; remove it or set graph = 'harary'"
                )
            elif (
                not isinstance(self.degree, int)
                or isinstance(self.degree, bool)
                or (self.degree < 2)
            ):
                problems.append(f"degree must be an integer >= 2 or None, got {self.degree!r}")
        clip_ok = isinstance(self.clip, (int, float)) and math.isfinite(self.clip)
        if not clip_ok or self.clip < 1.0:
            problems.append(
                f"clip must be a finite number >= 1 (participation counters are 1), got "
                f"{self.clip!r}"
            )
            clip_ok = False
        sb_ok = isinstance(self.scale_bits, int) and not isinstance(self.scale_bits, bool)
        if not sb_ok or not 0 <= self.scale_bits <= 52:
            problems.append(f"scale_bits must be between 0 and 52, got {self.scale_bits!r}")
            sb_ok = False
        if (
            bits_ok
            and clip_ok
            and sb_ok
            and 2**self.bits <= 2 * max_abs_encoded(self.clip, self.scale_bits) + 1
        ):
            problems.append(
                f"bits must exceed log2(2 * clip * 2**scale_bits + 1) so one client fits, got "
                f"bits={self.bits}, clip={self.clip}, scale_bits={self.scale_bits}; raise bits or "
                "lower scale_bits"
            )
        if not isinstance(self.workers, int) or self.workers < 1:
            problems.append(f"workers must be an integer >= 1, got {self.workers!r}")
        if problems:
            raise ConfigError(problems)


def max_abs_encoded(clip: float, scale_bits: int) -> int:
    """Largest absolute integer one clamped, stochastically rounded coordinate can take."""
    return math.ceil(clip * 2**scale_bits)


def check_no_overflow(config: SecAggConfig, *, num_clients: int) -> None:
    """Refuse parameters under which the sum of ``num_clients`` encoded vectors could wrap.

    Each coordinate of a client lies in ``[-c, c]`` with ``c = ceil(clip * 2**scale_bits)``, so
    the sum of ``n`` clients lies in an interval of ``n * (2c + 1)`` integers; it decodes
    uniquely iff ``2**bits > n * (2c + 1)`` (checked against the number of clients summed, not the
    neighbourhood size).

    Args:
        config: the secure-aggregation parameters.
        num_clients: the largest number of clients whose vectors are summed in one round.

    Raises:
        ConfigError: naming ``bits``, ``scale_bits`` and ``clip`` with the smallest safe ``bits``.
    """
    span = 2 * max_abs_encoded(config.clip, config.scale_bits) + 1
    if 2**config.bits <= num_clients * span:
        need = math.ceil(math.log2(num_clients * span + 1))
        raise ConfigError(
            [
                f"bits={config.bits} can overflow when summing {num_clients} clients with "
                f"clip={config.clip} and scale_bits={config.scale_bits}: raise bits to at least "
                f"{need}, or lower scale_bits or clip",
            ]
        )


def default_degree(num_clients: int) -> int:
    """Bell et al. 2020 (Sec. 3): ``k = O(log n)``; here ``2 * ceil(log2 n)``, at most ``n - 1``."""
    if num_clients <= 2:
        return max(num_clients - 1, 0)
    return min(2 * math.ceil(math.log2(num_clients)), num_clients - 1)


def resolve_degree(config: SecAggConfig, num_clients: int) -> int:
    """Number of neighbours per client for ``num_clients`` advertised clients."""
    if config.graph == "complete":
        return num_clients - 1
    degree = config.degree if config.degree is not None else default_degree(num_clients)
    return min(degree, num_clients - 1)


def resolve_threshold(config: SecAggConfig, *, num_clients: int, degree: int) -> int:
    """The Shamir threshold ``t`` for a cohort of ``num_clients`` and ``degree`` neighbours.

    ``t`` counts holders in a closed neighbourhood of size ``degree + 1`` (the whole cohort for
    the complete graph). Defaults: the two-thirds rule of Bonawitz et al. 2017, Sec. 6 for the
    complete graph; a strict majority of the closed neighbourhood for ``"harary"`` (Bell et al.
    2020, Sec. 4; see the module docstring).
    """
    if config.threshold is not None:
        return config.threshold
    size = degree + 1
    if config.graph == "complete":
        return min(size, max(2, (2 * size) // 3 + 1))
    return min(size, max(2, size // 2 + 1))

"""Configuration of secure aggregation and the parameter rules derived from it.

Defaults follow the two papers the protocol is built from:

* Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning",
  CCS 2017 (complete graph). Against a server that follows the protocol and colludes with
  fewer than ``t`` clients any ``t > n/2`` is safe; against an *active* server (the
  ``security = "malicious"`` variant, Fig. 4 with its signed rosters and ConsistencyCheck
  round) a server colluding with ``n_C`` clients needs ``2t > n + n_C``, which the paper's
  ``t > 2n/3`` meets for ``n_C < n/3``. The default is ``t = floor(2n/3) + 1``.
* Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020
  (SecAgg+, k-regular graph): each client shares only with ``k = O(log n)`` neighbours of a
  Harary graph over a random permutation of the clients, and the threshold is a constant
  fraction of the neighbourhood. We apply the same two-thirds rule to the closed neighbourhood
  (a client and its ``k`` neighbours): ``t = floor(2 (k + 1) / 3) + 1``. Bell et al. choose
  ``k`` for a target failure probability; :func:`default_degree` does the same: the smallest
  even ``k >= 2 ceil(log2 n)`` whose round-failure bound at ``expected_dropout`` is at most
  ``max_failure_probability`` (see :func:`round_failure_bound`).

What the server may not choose. A client derives ``t`` and the graph from this configuration
and the roster it verified, and refuses (:class:`~privfed.secagg.errors.ClientRefusal`) any
roster smaller than ``min_clients``, any neighbourhood smaller than ``min_neighbours`` and any
threshold without a security margin (``2t <= n`` on the complete graph, ``2t <= k + 1`` on the
Harary graph) -- unless ``allow_insecure_threshold`` is set, which exists for experiments and
attacks only and warns when used.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache

from privfed.errors import ConfigError

GRAPHS: tuple[str, ...] = ("complete", "harary")
SECURITY_MODES: tuple[str, ...] = ("semi-honest", "malicious")
#: The smallest roster (and closed neighbourhood) a client accepts unless insecure settings
#: are allowed: with two parties a single colluding client, and with one the server alone,
#: learns the other input.
SAFE_MIN_CLIENTS = 3


class InsecureThresholdWarning(UserWarning):
    """A configuration disables a secure-aggregation safety check (for experiments only)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, kw_only=True)
class SecAggConfig:
    """Parameters of one secure-aggregation protocol run.

    Attributes:
        security: ``"malicious"`` (default): the active-adversary variant of Bonawitz et al.
            2017 (Fig. 4): every client holds a long-term Ed25519 identity registered in a
            key registry the clients trust (a PKI), signs the keys it advertises, verifies
            every roster entry, and before revealing any share signs the survivor set it was
            told and checks enough other clients' signatures over the same set
            (ConsistencyCheck). ``"semi-honest"``: no identities and no consistency round;
            safe against a server that follows the protocol, not against one that lies about
            who dropped out (see docs/threat-model.md).
        threshold: Shamir threshold ``t``: how many holders of shares must survive to unmask.
            For the complete graph it counts clients of the whole cohort, for ``"harary"`` it
            counts the closed neighbourhood (a client and its ``degree`` neighbours). ``None``
            (recommended) picks the two-thirds rule for every roster: ``floor(2n/3) + 1`` or
            ``floor(2(k+1)/3) + 1``. A fixed value is refused by the clients for any roster (or
            neighbourhood) of ``2t`` or more parties, where it would give no security margin.
        min_clients: the smallest roster a client accepts, whatever the server sends; also the
            floor of the threshold (``t > min_clients / 2``). At least 3 unless
            ``allow_insecure_threshold``.
        min_neighbours: the fewest neighbours a client accepts in its own neighbourhood;
            ``None``: ``min_clients - 1``. At least 2 unless ``allow_insecure_threshold``.
        allow_insecure_threshold: accept thresholds with no security margin and rosters or
            neighbourhoods below the safe minimums (3 clients, 2 neighbours). For attack
            experiments and tests of the checks only; a warning is issued when set.
        bits: the sum is computed in Z_(2^bits). Masked vectors travel packed in the smallest
            unsigned integer type holding ``bits`` bits (uint32 for 17..32).
        graph: ``"complete"`` (Bonawitz et al. 2017: every pair of clients shares a mask) or
            ``"harary"`` (Bell et al. 2020: a k-regular Harary graph over a random permutation).
        degree: neighbours per client for ``"harary"``; ``None`` picks the smallest even degree
            of at least ``2 * ceil(log2 n)`` that keeps the round-failure bound at
            ``expected_dropout`` under ``max_failure_probability``. Must be ``None`` for the
            complete graph.
        expected_dropout: fraction of clients assumed to vanish during a round when choosing
            the default Harary degree (it does not simulate any dropout).
        max_failure_probability: the largest acceptable bound on the probability that a round
            aborts at ``expected_dropout`` when choosing the default Harary degree.
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

    security: str = "malicious"
    threshold: int | None = None
    min_clients: int = 4
    min_neighbours: int | None = None
    allow_insecure_threshold: bool = False
    bits: int = 32
    graph: str = "complete"
    degree: int | None = None
    expected_dropout: float = 0.1
    max_failure_probability: float = 0.01
    clip: float = 1.0
    scale_bits: int = 16
    workers: int = 1

    def __post_init__(self) -> None:
        problems: list[str] = []
        insecure = self.allow_insecure_threshold
        if not isinstance(insecure, bool):
            problems.append(f"allow_insecure_threshold must be true or false, got {insecure!r}")
            insecure = False
        if self.security not in SECURITY_MODES:
            problems.append(
                f"security must be one of {', '.join(SECURITY_MODES)}, got {self.security!r}"
            )
        if self.threshold is not None and (not _is_int(self.threshold) or self.threshold < 2):
            problems.append(f"threshold must be an integer >= 2 or None, got {self.threshold!r}")
        min_ok = _is_int(self.min_clients) and self.min_clients >= 1
        if not min_ok:
            problems.append(f"min_clients must be an integer >= 1, got {self.min_clients!r}")
        elif self.min_clients < SAFE_MIN_CLIENTS and not insecure:
            problems.append(
                f"min_clients = {self.min_clients} lets a server isolate one client's input "
                f"(a roster of one, or of two with one colluding client); use at least "
                f"{SAFE_MIN_CLIENTS}, or set allow_insecure_threshold = true for an experiment"
            )
        if self.min_neighbours is not None:
            if not _is_int(self.min_neighbours) or self.min_neighbours < 0:
                problems.append(
                    f"min_neighbours must be an integer >= 0 or None, got {self.min_neighbours!r}"
                )
            elif self.min_neighbours < SAFE_MIN_CLIENTS - 1 and not insecure:
                problems.append(
                    f"min_neighbours = {self.min_neighbours} leaves a neighbourhood the server "
                    f"can isolate; use at least {SAFE_MIN_CLIENTS - 1}, or set "
                    "allow_insecure_threshold = true for an experiment"
                )
        bits_ok = _is_int(self.bits)
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
            elif not _is_int(self.degree) or self.degree < 2:
                problems.append(f"degree must be an integer >= 2 or None, got {self.degree!r}")
            elif min_ok and self.degree < self.neighbour_floor:
                problems.append(
                    f"degree = {self.degree} is below min_neighbours = {self.neighbour_floor}: "
                    "every client would refuse its neighbourhood; raise degree"
                )
        if not isinstance(self.expected_dropout, (int, float)) or not (
            0.0 <= self.expected_dropout < 1.0
        ):
            problems.append(f"expected_dropout must be in [0, 1), got {self.expected_dropout!r}")
        if not isinstance(self.max_failure_probability, (int, float)) or not (
            0.0 < self.max_failure_probability < 1.0
        ):
            problems.append(
                f"max_failure_probability must be in (0, 1), got {self.max_failure_probability!r}"
            )
        t = self.threshold
        if _is_int(t) and t is not None and t >= 2 and min_ok and not insecure:
            if self.graph == "complete" and 2 * t <= self.min_clients:
                problems.append(
                    f"threshold = {t} gives no security margin for any roster the clients "
                    f"accept (a roster of n >= min_clients = {self.min_clients} clients needs "
                    f"t > n/2, or a server that lies about dropouts learns one input); use "
                    "threshold = None (two thirds of each roster), or set "
                    "allow_insecure_threshold = true for an experiment"
                )
            if self.graph == "harary" and _is_int(self.degree) and self.degree is not None:
                if 2 * t <= self.degree + 1:
                    problems.append(
                        f"threshold = {t} is at most half of the closed neighbourhood "
                        f"(degree + 1 = {self.degree + 1}), which gives no security margin; "
                        "use threshold = None (two thirds), or set allow_insecure_threshold = "
                        "true for an experiment"
                    )
        if (
            _is_int(t)
            and t is not None
            and self.graph == "harary"
            and _is_int(self.degree)
            and self.degree is not None
            and t > self.degree + 1
        ):
            problems.append(
                f"threshold = {t} exceeds the closed neighbourhood (degree + 1 = "
                f"{self.degree + 1}): no round could finish; lower threshold or raise degree"
            )
        clip_ok = isinstance(self.clip, (int, float)) and math.isfinite(self.clip)
        if not clip_ok or self.clip < 1.0:
            problems.append(
                f"clip must be a finite number >= 1 (participation counters are 1), got "
                f"{self.clip!r}"
            )
            clip_ok = False
        sb_ok = _is_int(self.scale_bits)
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
        if not _is_int(self.workers) or self.workers < 1:
            problems.append(f"workers must be an integer >= 1, got {self.workers!r}")
        if problems:
            raise ConfigError(problems)
        if insecure:
            warnings.warn(
                "secagg.allow_insecure_threshold = true: clients accept thresholds without a "
                "security margin and rosters below the safe minimum; a server can then learn "
                "individual inputs. Use it for attack experiments only.",
                InsecureThresholdWarning,
                stacklevel=3,
            )

    @property
    def neighbour_floor(self) -> int:
        """The fewest neighbours a client accepts (``min_neighbours`` or ``min_clients - 1``)."""
        if self.min_neighbours is not None:
            return self.min_neighbours
        return max(0, self.min_clients - 1)


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


def cohort_problems(config: SecAggConfig, *, num_clients: int, expected_cohort: float) -> list[str]:
    """Cross-checks of the secure-aggregation settings against a federation's cohort size.

    Args:
        config: the secure-aggregation parameters.
        num_clients: the population size (``federation.num_clients``).
        expected_cohort: the expected clients per round (``num_clients * cohort_fraction``).

    Returns:
        One line per problem, each naming the fields to change (empty if consistent).
    """
    problems = []
    if expected_cohort < config.min_clients:
        problems.append(
            f"secagg.min_clients = {config.min_clients} exceeds the expected cohort "
            f"(federation.num_clients * cohort_fraction = {expected_cohort:g}): clients refuse "
            "rosters that small, so most rounds would abort; raise num_clients or "
            "cohort_fraction, or lower secagg.min_clients (at least 3)"
        )
    t = config.threshold
    if (
        t is not None
        and config.graph == "complete"
        and not config.allow_insecure_threshold
        and num_clients >= 2 * t
        and expected_cohort >= 2 * t
    ):
        problems.append(
            f"secagg.threshold = {t} is at most half of the expected cohort "
            f"({expected_cohort:g} clients): clients refuse rosters of {2 * t} or more, where it "
            "gives no security margin; use secagg.threshold = None (two thirds of each roster)"
        )
    return problems


def two_thirds(size: int) -> int:
    """The two-thirds rule ``floor(2 size / 3) + 1``, capped at ``size`` (and at least 2)."""
    return min(size, max(2, (2 * size) // 3 + 1))


def neighbourhood_failure_probability(*, size: int, threshold: int, dropout: float) -> float:
    """P(fewer than ``threshold`` of ``size`` parties survive), each dropping independently.

    The binomial tail ``sum_(j < t) C(m, j) (1-p)^j p^(m-j)``, summed in log space so that
    large neighbourhoods do not overflow.
    """
    if threshold <= 0:
        return 0.0
    if threshold > size:
        return 1.0
    if dropout <= 0.0:
        return 0.0
    log_p, log_q = math.log(dropout), math.log1p(-dropout)
    total = 0.0
    for j in range(threshold):
        log_term = (
            math.lgamma(size + 1)
            - math.lgamma(j + 1)
            - math.lgamma(size - j + 1)
            + j * log_q
            + (size - j) * log_p
        )
        total += math.exp(log_term)
    return min(1.0, total)


def round_failure_bound(*, num_clients: int, degree: int, threshold: int, dropout: float) -> float:
    """Union bound on the probability that a round aborts because a neighbourhood dies.

    A round aborts if some client's closed neighbourhood (``degree + 1`` parties) keeps fewer
    than ``threshold`` survivors (Bell et al. 2020, Sec. 4). The Harary graph has
    ``num_clients`` distinct neighbourhoods, the complete graph one; the bound is their count
    times :func:`neighbourhood_failure_probability`, capped at 1.
    """
    distinct = 1 if degree >= num_clients - 1 else num_clients
    one = neighbourhood_failure_probability(size=degree + 1, threshold=threshold, dropout=dropout)
    return min(1.0, distinct * one)


@lru_cache(maxsize=256)
def default_degree(
    num_clients: int,
    *,
    dropout: float = 0.1,
    max_failure: float = 0.01,
    threshold: int | None = None,
) -> int:
    """The Harary degree for ``num_clients`` clients (Bell et al. 2020, Sec. 3-4).

    The smallest even ``k >= 2 * ceil(log2 n)`` whose :func:`round_failure_bound` with the
    two-thirds threshold (or the fixed ``threshold``) at ``dropout`` is at most
    ``max_failure``; at most ``n - 1`` (the complete graph).
    """
    if num_clients <= 2:
        return max(num_clients - 1, 0)
    k = min(2 * math.ceil(math.log2(num_clients)), num_clients - 1)
    while k < num_clients - 1:
        t = threshold if threshold is not None else two_thirds(k + 1)
        bound = round_failure_bound(num_clients=num_clients, degree=k, threshold=t, dropout=dropout)
        if bound <= max_failure:
            return k
        k += 2 - (k % 2)  # the next even degree
    return num_clients - 1


def resolve_degree(config: SecAggConfig, num_clients: int) -> int:
    """Number of neighbours per client for ``num_clients`` advertised clients."""
    if config.graph == "complete":
        return num_clients - 1
    degree = (
        config.degree
        if config.degree is not None
        else default_degree(
            num_clients,
            dropout=float(config.expected_dropout),
            max_failure=float(config.max_failure_probability),
            threshold=config.threshold,
        )
    )
    return min(degree, num_clients - 1)


def resolve_threshold(config: SecAggConfig, *, num_clients: int, degree: int) -> int:
    """The Shamir threshold ``t`` for a cohort of ``num_clients`` and ``degree`` neighbours.

    ``t`` counts holders in a closed neighbourhood of size ``degree + 1`` (the whole cohort for
    the complete graph). Default: the two-thirds rule (Bonawitz et al. 2017, Sec. 6 for the
    complete graph; the same rule over the closed neighbourhood for ``"harary"``).
    """
    if config.threshold is not None:
        return config.threshold
    return two_thirds(degree + 1)


def consistency_threshold(config: SecAggConfig, *, num_clients: int, degree: int) -> int:
    """How many valid signatures over one survivor set a client needs before unmasking.

    Honest clients sign one survivor set each, so two different sets can both collect ``T``
    signatures only if ``2T <= n + n_C`` (``n_C`` colluding clients). On the complete graph
    ``T = t`` (Bonawitz et al. 2017, Fig. 4, round 4), which the clients check is above
    ``n/2``. On a sparse graph ``t`` counts a neighbourhood only, so the survivor set is
    made global with ``T = floor(2n/3) + 1`` signatures of the roster: one set per round for
    fewer than ``n/3`` colluding clients.
    """
    t = resolve_threshold(config, num_clients=num_clients, degree=degree)
    if config.graph == "complete" or degree >= num_clients - 1:
        return t
    return two_thirds(num_clients)


@dataclass(frozen=True)
class SessionParameters:
    """The parameters a party derives for one roster size (see :func:`session_parameters`).

    Attributes:
        num_clients: roster size ``n``.
        degree: neighbours per client.
        threshold: Shamir threshold ``t`` over a closed neighbourhood.
        signatures: signatures over one survivor set a client needs (malicious mode).
    """

    num_clients: int
    degree: int
    threshold: int
    signatures: int


def session_parameters(config: SecAggConfig, num_clients: int) -> SessionParameters:
    """Degree, threshold and consistency threshold for a roster of ``num_clients``."""
    degree = resolve_degree(config, num_clients)
    return SessionParameters(
        num_clients=num_clients,
        degree=degree,
        threshold=resolve_threshold(config, num_clients=num_clients, degree=degree),
        signatures=consistency_threshold(config, num_clients=num_clients, degree=degree),
    )


def parameter_problem(config: SecAggConfig, params: SessionParameters) -> str | None:
    """Why a client must refuse a roster with these parameters, or ``None`` if it may accept.

    Checks the roster size against ``min_clients``, the neighbourhood against
    ``min_neighbours`` (always: ``allow_insecure_threshold`` only lets them be configured
    below the safe values) and the threshold's security margin (``2t > n`` on the complete
    graph, ``2t > k + 1`` on the Harary graph; skipped with ``allow_insecure_threshold``).
    """
    n, k, t = params.num_clients, params.degree, params.threshold
    if n < config.min_clients:
        return (
            f"a roster of {n} client(s) is below secagg.min_clients = {config.min_clients}; "
            "refusing (a small roster lets the server isolate an input)"
        )
    if k < config.neighbour_floor:
        return (
            f"a neighbourhood of {k} neighbour(s) is below secagg.min_neighbours = "
            f"{config.neighbour_floor}; refusing"
        )
    if config.allow_insecure_threshold:
        return None
    size = k + 1
    if 2 * t <= size:
        where = "roster" if config.graph == "complete" else "closed neighbourhood"
        return (
            f"threshold t = {t} is at most half of the {where} ({size} parties): no security "
            "margin against a server that lies about dropouts; refusing (use secagg.threshold "
            "= None for the two-thirds rule)"
        )
    return None

"""The distributed discrete Gaussian (DDG) mechanism for secure aggregation, as pure functions.

Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning with
Secure Aggregation", ICML 2021 (arXiv:2102.06387, v4). Numbers checked: Proposition 14 (the RDP
of a sum of discrete Gaussians, the three-term minimum of :func:`ddg_rdp`, stated for
``sigma >= 1/2``) and Theorem 1 (the ``tau`` slack and the norm bound after rounding) as the
authors' reference code cites them (``google-research/federated``,
``distributed_dp/accounting_utils.py``, and an independent implementation in FL4Health);
Section 4.1 (conditional randomized rounding) as TensorFlow Federated's implementation cites
it. The full text was not reachable here, so the section numbers of the flattening (4.2) and of
the granularity trade-off (4.4) are as originally cited and unchecked.

Client (:func:`encode`), for a float update ``x`` of length ``d``:

1. clip ``x`` to L2 norm ``clip``;
2. flatten it with a randomized Hadamard transform (:func:`randomized_hadamard`): zero-pad to
   ``D = 2^ceil(log2 d)``, multiply by a random +-1 diagonal shared by every client of the
   round (derived from a public per-round seed, :func:`rotation_signs`), apply the orthonormal
   Walsh-Hadamard transform (Sec. 4.2 "flattening");
3. scale by ``1 / gamma`` and round to integers with *conditional randomized rounding*
   (:func:`conditional_randomized_rounding`, Sec. 4.1, bound of Theorem 1): unbiased randomized
   rounding, repeated until the rounded vector's L2 norm is at most the bound of
   :func:`rounded_l2_bound`, which is therefore the L2 sensitivity in integer units;
4. add discrete Gaussian noise ``N_Z(0, sigma^2)`` per coordinate (:mod:`.discrete`);
5. reduce modulo ``2^bits`` (the secure-aggregation domain).

Server (:func:`decode`): lift the modular sum to centered signed integers (modular clipping),
multiply by ``gamma``, invert the rotation, drop the padding.

Privacy (:func:`ddg_rdp`, :func:`ddg_epsilon`): the RDP of the sum of ``n`` independent discrete
Gaussians, Proposition 14 with the ``tau`` slack of Theorem 1, composed over rounds; see
:func:`ddg_rdp` for the exact statement and the caveats (survivors, colluders, sampling), and
:func:`plan_distributed` / :func:`noise_shares` for whose noise is counted: only the honest
clients a completed round is guaranteed to hold (``t - 1 - colluders``), never the protected
client's own share.

Everything is a pure function of its arguments; randomness is a ``numpy.random.Generator``
supplied by the caller (simulation randomness, never cryptographic material).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from privfed.errors import ConfigError, PrivfedError
from privfed.privacy.accounting import epsilon_from_rdp
from privfed.privacy.discrete import sample_discrete_gaussian
from privfed.secagg.config import SecAggConfig
from privfed.secagg.field import dtype_for_bits

__all__ = [
    "DDG_ORDERS",
    "DEFAULT_BETA",
    "DDGEncoding",
    "DDGError",
    "DDGParams",
    "DistributedPlan",
    "NoiseShares",
    "RoundingResult",
    "choose_gamma",
    "conditional_randomized_rounding",
    "ddg_calibrate_sigma",
    "ddg_configure",
    "ddg_epsilon",
    "ddg_rdp",
    "ddg_round_rdp",
    "ddg_tau",
    "decode",
    "default_max_colluders",
    "encode",
    "encode_report",
    "fwht",
    "inverse_randomized_hadamard",
    "noise_shares",
    "padded_dimension",
    "plan_distributed",
    "randomized_hadamard",
    "realized_epsilon",
    "rotation_signs",
    "rounded_l1_bound",
    "rounded_l2_bound",
    "secagg_threshold",
    "wrap_probability",
]

DEFAULT_BETA = math.exp(-0.5)
"""The conditional-rounding constant ``beta = e^{-1/2}`` used in the paper's experiments."""

DDG_ORDERS: tuple[float, ...] = (
    1.25,
    1.5,
    1.75,
    *(float(a) for a in range(2, 129)),
    160.0,
    192.0,
    256.0,
    512.0,
)
"""RDP orders for DDG accounting. Integer orders >= 2 are needed for the subsampled bound;
the fractional ones only serve the unamplified case."""

MAX_BITS = 62
"""Largest supported modulus exponent (int64 arithmetic must not overflow in the lift)."""

MIN_SIGMA = 0.5
"""Smallest per-client sigma for which the sum-of-discrete-Gaussians bound is stated."""


class DDGError(PrivfedError):
    """The distributed discrete Gaussian pipeline cannot proceed safely (message says why)."""


# --- flattening: randomized Hadamard transform (Sec. 4.2) --------------------------------


def padded_dimension(dimension: int) -> int:
    """The power of two ``D >= dimension`` the Hadamard transform works in."""
    if dimension < 1:
        raise ValueError(f"dimension must be >= 1, got {dimension}")
    return 1 << (int(dimension) - 1).bit_length()


def rotation_signs(seed: int | np.random.SeedSequence, *, padded_dimension: int) -> np.ndarray:
    """The random +-1 diagonal of the round's rotation, derived from a public per-round seed.

    Every client of a round and the server must use the same seed (e.g.
    ``privfed.rng.seed_sequence(root_seed, "ddg.rotation", round)``). The signs are public:
    they protect utility (flatness, no modular wrap), not privacy.

    Args:
        seed: the round's public seed.
        padded_dimension: ``D``, a power of two.

    Returns:
        A float64 array of +-1 of length ``D``.
    """
    if padded_dimension < 1 or padded_dimension & (padded_dimension - 1):
        raise ValueError(f"padded_dimension must be a power of two, got {padded_dimension}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, size=padded_dimension).astype(np.float64) * 2.0 - 1.0


def fwht(x: np.ndarray) -> np.ndarray:
    """Unnormalized fast Walsh-Hadamard transform along the last axis, O(D log D).

    Equals ``x @ scipy.linalg.hadamard(D)`` (Sylvester ordering; the matrix is symmetric).

    Args:
        x: float array whose last axis has a power-of-two length.
    """
    y = np.array(x, dtype=np.float64, copy=True)
    n = y.shape[-1]
    if n < 1 or n & (n - 1):
        raise ValueError(f"the last axis must have a power-of-two length, got {n}")
    lead = y.shape[:-1]
    h = 1
    while h < n:
        blocks = y.reshape(*lead, n // (2 * h), 2, h)
        a = blocks[..., 0, :]
        b = blocks[..., 1, :]
        y = np.stack((a + b, a - b), axis=-2).reshape(*lead, n)
        h *= 2
    return y


def randomized_hadamard(x: np.ndarray, *, signs: np.ndarray) -> np.ndarray:
    """Flatten ``x``: zero-pad to ``D = len(signs)``, apply ``H diag(signs) / sqrt(D)``.

    The map is orthonormal, so the L2 norm is preserved exactly (up to float rounding), and for
    any fixed ``x`` each output coordinate is sub-Gaussian with variance proxy ``|x|^2 / D``
    over the random signs (Hoeffding), which is what keeps the modular sum from wrapping.

    Args:
        x: float vector of length ``<= D``.
        signs: +-1 vector of power-of-two length ``D`` (:func:`rotation_signs`).

    Returns:
        Float64 vector of length ``D``.
    """
    arr = np.asarray(x, dtype=np.float64)
    big_d = signs.shape[0]
    if arr.ndim != 1 or arr.shape[0] > big_d:
        raise ValueError(f"x must be a vector of length <= {big_d}, got shape {arr.shape}")
    padded = np.zeros(big_d, dtype=np.float64)
    padded[: arr.shape[0]] = arr
    return fwht(padded * signs) / math.sqrt(big_d)


def inverse_randomized_hadamard(y: np.ndarray, *, signs: np.ndarray, dimension: int) -> np.ndarray:
    """Exact inverse of :func:`randomized_hadamard`: ``diag(signs) H y / sqrt(D)``, unpadded.

    Args:
        y: float vector of length ``D = len(signs)``.
        signs: the same +-1 vector used by the forward transform.
        dimension: the original length ``d`` to truncate to.
    """
    arr = np.asarray(y, dtype=np.float64)
    big_d = signs.shape[0]
    if arr.shape != (big_d,):
        raise ValueError(f"y must have shape ({big_d},), got {arr.shape}")
    if not 1 <= dimension <= big_d:
        raise ValueError(f"dimension must be in [1, {big_d}], got {dimension}")
    return (signs * fwht(arr) / math.sqrt(big_d))[:dimension]


# --- conditional randomized rounding (Sec. 4.1, bound of Theorem 1) -----------------------


def rounded_l2_bound(*, norm: float, beta: float, dimension: int) -> float:
    """The L2 norm bound enforced by conditional randomized rounding (integer units).

    For a vector of L2 norm ``<= norm`` in ``R^D`` (already scaled by ``1/gamma``), unbiased
    randomized rounding gives a vector of norm at most ``norm + sqrt(D)`` always, and at most
    ``sqrt(norm^2 + D/4 + sqrt(2 log(1/beta)) (norm + sqrt(D)/2))`` with probability
    ``>= 1 - beta`` (Kairouz et al., Theorem 1). Conditional rounding retries
    until the smaller of the two holds, which makes this value the mechanism's L2 sensitivity.

    Args:
        norm: the L2 norm bound before rounding (``clip / gamma``), > 0.
        beta: in [0, 1); ``0`` means no conditioning (the deterministic bound).
        dimension: ``D``, the length of the rounded vector.
    """
    if not norm > 0:
        raise ValueError(f"norm must be > 0, got {norm}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    bound_1 = norm + math.sqrt(dimension)
    if beta == 0:
        return bound_1
    squared = norm**2 + 0.25 * dimension
    squared += math.sqrt(2.0 * math.log(1.0 / beta)) * (norm + 0.5 * math.sqrt(dimension))
    return min(bound_1, math.sqrt(squared))


def rounded_l1_bound(*, l2_bound: float, dimension: int) -> float:
    """The L1 sensitivity of an integer vector of L2 norm ``<= l2_bound`` in ``Z^D``.

    ``|v|_1 <= sqrt(D) |v|_2`` always, and ``|v|_1 <= |v|_2^2`` for integer vectors
    (every nonzero coordinate has ``|v_i| <= v_i^2``).
    """
    return l2_bound * min(math.sqrt(dimension), l2_bound)


@dataclass(frozen=True, kw_only=True)
class RoundingResult:
    """Outcome of :func:`conditional_randomized_rounding`.

    Attributes:
        values: the rounded int64 vector.
        tries: rounding attempts used (1 = accepted at once).
        norm: L2 norm of ``values``.
        inflation: ``norm / |x / gamma|`` (1.0 for the zero vector): the realized norm
            inflation from rounding.
    """

    values: np.ndarray
    tries: int
    norm: float
    inflation: float


def conditional_randomized_rounding(
    x: np.ndarray, *, gamma: float, bound: float, rng: np.random.Generator, max_tries: int
) -> RoundingResult:
    """Scale by ``1/gamma`` and round randomly to integers until the L2 norm is ``<= bound``.

    Each coordinate ``v`` rounds up to ``ceil(v)`` with probability ``v - floor(v)`` and down
    otherwise (unbiased); the whole vector is redrawn while its norm exceeds ``bound``
    (Kairouz et al., Sec. 4). With ``bound = rounded_l2_bound(norm=clip/gamma, beta=beta,
    ...)`` each attempt is accepted with probability ``>= 1 - beta``.

    Args:
        x: float vector (already clipped and rotated).
        gamma: granularity (> 0): one integer unit equals ``gamma`` float units.
        bound: L2 bound to enforce, in integer units.
        rng: simulation generator.
        max_tries: attempts before giving up (>= 1).

    Returns:
        A :class:`RoundingResult`.

    Raises:
        DDGError: if no attempt met the bound; sending a longer vector would break the
            sensitivity the privacy analysis assumes, so the client must not send it.
    """
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    if max_tries < 1:
        raise ValueError(f"max_tries must be >= 1, got {max_tries}")
    scaled = np.asarray(x, dtype=np.float64) / gamma
    floor = np.floor(scaled)
    frac = scaled - floor
    base = floor.astype(np.int64)
    scaled_norm = float(np.linalg.norm(scaled))
    norm = math.inf
    for tries in range(1, max_tries + 1):
        values = base + (rng.random(scaled.shape) < frac)
        norm = float(np.linalg.norm(values.astype(np.float64)))
        if norm <= bound:
            inflation = norm / scaled_norm if scaled_norm > 0 else 1.0
            return RoundingResult(values=values, tries=tries, norm=norm, inflation=inflation)
    raise DDGError(
        f"conditional randomized rounding failed {max_tries} times (last norm {norm:.4g} > "
        f"bound {bound:.4g}); the input norm {scaled_norm:.4g} (integer units) is too close to "
        "the bound: clip the update first, or raise beta / max_tries"
    )


# --- parameters ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DDGParams:
    """Parameters of one distributed-discrete-Gaussian aggregation (fixed for a run).

    Attributes:
        dimension: length ``d`` of the float update vector.
        clip: L2 clipping norm of a client's update (float units).
        bits: the secure sum is computed in ``Z_(2^bits)`` (2..62).
        gamma: granularity: one integer unit is ``gamma`` float units (scale ``1/gamma``).
        sigma: per-client discrete Gaussian parameter, in integer units; the per-client noise
            std in float units is ``sigma * gamma``. ``0`` disables noise (no privacy; tests).
        beta: conditional-rounding constant in [0, 1) (:func:`rounded_l2_bound`).
        max_rounding_tries: attempts of conditional rounding before a client gives up.
    """

    dimension: int
    clip: float
    bits: int
    gamma: float
    sigma: float
    beta: float = DEFAULT_BETA
    max_rounding_tries: int = 1000

    def __post_init__(self) -> None:
        problems = []
        if self.dimension < 1:
            problems.append(f"dimension must be >= 1, got {self.dimension}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            problems.append(f"clip must be > 0, got {self.clip}")
        if not 2 <= self.bits <= MAX_BITS:
            problems.append(f"bits must be in [2, {MAX_BITS}], got {self.bits}")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            problems.append(f"gamma must be > 0, got {self.gamma}")
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            problems.append(f"sigma must be >= 0, got {self.sigma}")
        if not 0 <= self.beta < 1:
            problems.append(f"beta must be in [0, 1), got {self.beta}")
        if self.max_rounding_tries < 1:
            problems.append(f"max_rounding_tries must be >= 1, got {self.max_rounding_tries}")
        if problems:
            raise ConfigError([f"ddg.{p}" for p in problems])

    @property
    def padded_dimension(self) -> int:
        """``D``: the power of two the rotation, rounding and noise work in."""
        return padded_dimension(self.dimension)

    @property
    def modulus(self) -> int:
        """``2^bits``."""
        return 1 << self.bits

    @property
    def l2_sensitivity(self) -> float:
        """L2 sensitivity of one client's rounded vector, integer units (Theorem 1)."""
        return rounded_l2_bound(
            norm=self.clip / self.gamma, beta=self.beta, dimension=self.padded_dimension
        )

    @property
    def l1_sensitivity(self) -> float:
        """L1 sensitivity of one client's rounded vector, integer units."""
        return rounded_l1_bound(l2_bound=self.l2_sensitivity, dimension=self.padded_dimension)

    @property
    def norm_inflation(self) -> float:
        """Worst-case norm inflation from rounding: ``l2_sensitivity / (clip / gamma)``."""
        return self.l2_sensitivity / (self.clip / self.gamma)

    @property
    def expected_norm_inflation(self) -> float:
        """Upper bound on the RMS norm inflation of a vector at the clip norm.

        Unconditional randomized rounding adds variance ``p(1-p) <= 1/4`` per coordinate, so
        ``E|round(v)|^2 <= |v|^2 + D/4``; conditioning on a norm bound only lowers it. Hence
        ``sqrt(E|round(v)|^2) / |v| <= sqrt(1 + D gamma^2 / (4 clip^2))``.
        """
        return math.sqrt(1.0 + self.padded_dimension * self.gamma**2 / (4.0 * self.clip**2))


# --- modular wrap -------------------------------------------------------------------------


def _wrap_bound(
    *, clip: float, gamma: float, noise_var: float, n_clients: int, big_d: int, bits: int
) -> float:
    margin = float(1 << (bits - 1)) - n_clients
    if margin <= 0:
        return 1.0
    proxy = (n_clients * clip / gamma) ** 2 / big_d + n_clients * noise_var
    if proxy == 0:
        return 0.0
    return min(1.0, 2.0 * big_d * math.exp(-(margin**2) / (2.0 * proxy)))


def wrap_probability(*, params: DDGParams, n_clients: int) -> float:
    """Upper bound on the probability that the modular sum of ``n_clients`` encodings wraps.

    The centered lift in :func:`decode` is correct iff every coordinate ``S_j`` of the integer
    sum lies in ``[-2^(bits-1), 2^(bits-1))``. Write ``S_j = A_j + R_j + N_j`` with

    * ``A_j`` the j-th coordinate of ``H diag(s) (sum_i x_i) / (gamma sqrt(D))``: for update
      vectors chosen independently of the public signs ``s``, Hoeffding gives a sub-Gaussian
      tail with variance proxy ``|sum_i x_i|^2 / (gamma^2 D) <= (n clip / gamma)^2 / D``;
    * ``R_j`` the rounding errors, ``|R_j| < n`` deterministically (each client moves each
      coordinate by less than 1; no independence is assumed, so conditioning does not matter);
    * ``N_j`` the sum of ``n`` independent ``N_Z(0, sigma^2)``, each sigma^2-subgaussian
      (Canonne, Kamath, Steinke 2020), hence ``n sigma^2``-subgaussian.

    With ``L = 2^(bits-1) - n`` and ``v = (n clip/gamma)^2 / D + n sigma^2``:
    ``P(wrap) <= D * 2 exp(-L^2 / (2 v))`` (union bound over the ``D`` coordinates). This is
    rigorous but conservative: the deterministic rounding term and the triangle-inequality norm
    ``n clip`` (rather than the typical ``sqrt(n) clip``) both overstate the risk.

    Args:
        params: the aggregation parameters.
        n_clients: the number of encodings summed (all clients that sent masked input, not only
            those whose noise is counted for privacy).

    Returns:
        The bound, in [0, 1].
    """
    if n_clients < 1:
        raise ValueError(f"n_clients must be >= 1, got {n_clients}")
    return _wrap_bound(
        clip=params.clip,
        gamma=params.gamma,
        noise_var=params.sigma**2,
        n_clients=n_clients,
        big_d=params.padded_dimension,
        bits=params.bits,
    )


def choose_gamma(
    *,
    clip: float,
    bits: int,
    n_clients: int,
    dimension: int,
    noise_std: float,
    max_wrap_probability: float,
) -> float:
    """The smallest granularity ``gamma`` whose :func:`wrap_probability` bound is the target.

    Solves ``2 D exp(-L^2 gamma^2 / (2 ((n clip)^2 / D + n noise_std^2))) = p`` for ``gamma``
    with ``L = 2^(bits-1) - n`` (the bound of :func:`wrap_probability`, written in float units
    so that the per-client noise std ``noise_std = sigma * gamma`` is held fixed).

    Args:
        clip: L2 clipping norm (float units).
        bits: modulus exponent.
        n_clients: most encodings that will be summed (the cohort size).
        dimension: length ``d`` of the float update (padded internally).
        noise_std: per-client noise std in float units (``sigma * gamma``).
        max_wrap_probability: target bound in (0, 1).

    Raises:
        DDGError: if ``2^(bits-1) <= n_clients`` (the rounding errors alone can wrap).
    """
    if not 0 < max_wrap_probability < 1:
        raise ValueError(f"max_wrap_probability must be in (0, 1), got {max_wrap_probability}")
    big_d = padded_dimension(dimension)
    margin = float(1 << (bits - 1)) - n_clients
    if margin <= 0:
        raise DDGError(
            f"bits={bits} cannot hold the sum of {n_clients} clients (2^(bits-1) <= n): "
            "raise bits or lower the cohort size"
        )
    proxy = (n_clients * clip) ** 2 / big_d + n_clients * noise_std**2
    return math.sqrt(2.0 * proxy * math.log(2.0 * big_d / max_wrap_probability)) / margin


# --- privacy (Proposition 14, Theorem 1) -------------------------------------------------


def ddg_tau(*, sigma_per_client: float, n_survivors: int) -> float:
    """``tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k+1))`` (Kairouz et al., Theorem 1).

    The slack by which a sum of ``n`` discrete Gaussians falls short of being a discrete
    Gaussian; ``0`` for ``n = 1`` and negligible once ``sigma >= 1``.
    """
    if n_survivors <= 1:
        return 0.0
    k = np.arange(1, n_survivors, dtype=np.float64)
    terms = np.exp(-2.0 * math.pi**2 * sigma_per_client**2 * k / (k + 1.0))
    return float(10.0 * np.sum(terms))


def _single_round_rdp(
    *, l2: float, l1: float, n: int, sigma: float, big_d: int, orders: np.ndarray
) -> np.ndarray:
    """Proposition 14: the RDP of one release of ``x + sum of n N_Z(0, sigma^2)^D``."""
    tau = ddg_tau(sigma_per_client=sigma, n_survivors=n)
    scale = math.sqrt(n) * sigma
    l2s = l2 / scale
    l1s = l1 / scale
    term_1 = orders / 2.0 * l2s**2 + tau * big_d
    term_2 = orders / 2.0 * (l2s**2 + 2.0 * l1s * tau + tau**2 * big_d)
    term_3 = orders / 2.0 * (l2s + math.sqrt(big_d) * tau) ** 2
    return np.minimum(np.minimum(term_1, term_2), term_3)


def _subsampled_rdp(base: np.ndarray, orders: np.ndarray, q: float) -> np.ndarray:
    """Zhu & Wang 2019 (ICML), Theorem 5: RDP of a Poisson-subsampled mechanism, integer orders.

    ``base`` must hold the mechanism's RDP at every integer order 2..max(orders) (indexed by
    order). Non-integer orders keep the unamplified value (valid, conservative).
    """
    out = base.copy()
    lookup = {int(a): float(e) for a, e in zip(orders, base, strict=True) if float(a).is_integer()}
    log_q, log_1mq = math.log(q), math.log1p(-q)
    for i, a in enumerate(orders):
        if not float(a).is_integer() or a < 2:
            continue
        alpha = int(a)
        if any(ell not in lookup for ell in range(2, alpha + 1)):
            continue
        logs = [(alpha - 1) * log_1mq + math.log(alpha * q - q + 1)]
        weights = [1.0]
        logs.append(
            math.log(special.comb(alpha, 2)) + 2 * log_q + (alpha - 2) * log_1mq + lookup[2]
        )
        weights.append(1.0)
        for ell in range(3, alpha + 1):
            log_comb = (
                special.gammaln(alpha + 1)
                - special.gammaln(ell + 1)
                - special.gammaln(alpha - ell + 1)
            )
            logs.append(
                float(log_comb) + (alpha - ell) * log_1mq + ell * log_q + (ell - 1) * lookup[ell]
            )
            weights.append(3.0)
        amplified = float(special.logsumexp(logs, b=weights)) / (alpha - 1)
        out[i] = min(amplified, float(base[i]))
    return out


def ddg_rdp(
    *,
    l2_sensitivity: float,
    l1_sensitivity: float | None = None,
    n_survivors: int,
    sigma_per_client: float,
    dimension: int,
    sample_rate: float = 1.0,
    steps: int = 1,
    orders: Sequence[float] = DDG_ORDERS,
) -> np.ndarray:
    """RDP curve of ``steps`` rounds of the distributed discrete Gaussian mechanism.

    One round releases ``x + Z`` where ``x in Z^D`` is a sum of client vectors of which the
    protected client's has L2 norm ``<= l2_sensitivity`` and L1 norm ``<= l1_sensitivity``
    (neighbouring inputs: that client's vector versus the zero vector, the paper's relation),
    and ``Z`` is the sum of ``n`` independent ``N_Z(0, sigma^2)^D``. Kairouz et al.,
    Proposition 14 (the RDP form behind Theorem 1), with ``tau`` from :func:`ddg_tau` and
    ``s = sqrt(n) sigma``::

        rdp(a) = min( a/2 (D2/s)^2 + tau D,
                      a/2 ((D2/s)^2 + 2 (D1/s) tau + tau^2 D),
                      a/2 (D2/s + sqrt(D) tau)^2 )

    The bound is stated for ``sigma >= 1/2``. Rounds compose additively (RDP composition).

    Which ``n``: count only noise the adversary does not know. Clients that dropped before
    their masked input was summed add no noise; clients colluding with the server reveal
    theirs; and under add/remove neighbouring the protected client's own share is absent from
    one of the two worlds, so it does not protect it. So ``n_survivors`` = honest clients other
    than the protected one whose noise is in the sum (:class:`NoiseShares`). Fewer shares
    means a larger epsilon.

    Sampling: **by default no amplification by subsampling is claimed** (``sample_rate=1``).
    Amplification needs Poisson sampling of clients *hidden from the adversary*; a server that
    runs secure aggregation sees who participates, so against it the unamplified bound is the
    honest one. If the caller's threat model does hide the sample (e.g. against third parties
    seeing only the model), pass ``sample_rate < 1`` to apply the general Poisson-subsampled
    RDP bound of Zhu & Wang 2019, Theorem 5 (the general upper bound, as the authors' reference
    code applies it), at integer orders only, never above the unamplified value.

    Args:
        l2_sensitivity: L2 sensitivity in integer units (:attr:`DDGParams.l2_sensitivity`).
        l1_sensitivity: L1 sensitivity in integer units; default
            ``rounded_l1_bound(l2_bound=l2_sensitivity, dimension=dimension)``.
        n_survivors: number of independent noise shares in the sum (>= 0; 0 gives ``inf``).
        sigma_per_client: each share's ``sigma`` in integer units (>= 0.5).
        dimension: ``D``, the length of the noised integer vector (the padded dimension).
        sample_rate: Poisson client-sampling rate in (0, 1] (see above).
        steps: number of rounds (>= 0).
        orders: RDP orders (> 1).

    Returns:
        The RDP values, one per order.

    Raises:
        ValueError: if an argument is out of range.
    """
    orders_arr = np.asarray(orders, dtype=np.float64)
    if np.any(orders_arr <= 1):
        raise ValueError("RDP orders must be > 1")
    if dimension < 1:
        raise ValueError(f"dimension must be >= 1, got {dimension}")
    if not l2_sensitivity >= 0:
        raise ValueError(f"l2_sensitivity must be >= 0, got {l2_sensitivity}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if steps < 0 or n_survivors < 0:
        raise ValueError("steps and n_survivors must be >= 0")
    if steps == 0 or l2_sensitivity == 0:
        return np.zeros(orders_arr.shape[0])
    if n_survivors == 0:
        return np.full(orders_arr.shape[0], math.inf)
    if sigma_per_client < MIN_SIGMA:
        raise ValueError(
            f"sigma_per_client must be >= {MIN_SIGMA} (integer units) for the bound of "
            f"Kairouz et al. Theorem 1, got {sigma_per_client}"
        )
    l1 = (
        rounded_l1_bound(l2_bound=l2_sensitivity, dimension=dimension)
        if l1_sensitivity is None
        else float(l1_sensitivity)
    )
    rdp = _single_round_rdp(
        l2=float(l2_sensitivity),
        l1=l1,
        n=int(n_survivors),
        sigma=float(sigma_per_client),
        big_d=int(dimension),
        orders=orders_arr,
    )
    if sample_rate < 1:
        rdp = _subsampled_rdp(rdp, orders_arr, float(sample_rate))
    return rdp * int(steps)


def ddg_epsilon(
    *,
    l2_sensitivity: float,
    l1_sensitivity: float | None = None,
    n_survivors: int,
    sigma_per_client: float,
    dimension: int,
    delta: float,
    sample_rate: float = 1.0,
    steps: int = 1,
    orders: Sequence[float] = DDG_ORDERS,
) -> float:
    """Epsilon at ``delta`` of :func:`ddg_rdp` (same arguments; see its caveats).

    Converted with the improved RDP -> (epsilon, delta) conversion of Balle et al. 2020,
    Theorem 21 (:func:`privfed.privacy.accounting.epsilon_from_rdp`).
    """
    rdp = ddg_rdp(
        l2_sensitivity=l2_sensitivity,
        l1_sensitivity=l1_sensitivity,
        n_survivors=n_survivors,
        sigma_per_client=sigma_per_client,
        dimension=dimension,
        sample_rate=sample_rate,
        steps=steps,
        orders=orders,
    )
    return epsilon_from_rdp(rdp, delta=delta, orders=tuple(float(a) for a in orders))


def realized_epsilon(
    *,
    params: DDGParams,
    survivors_per_round: Sequence[int],
    delta: float,
    sample_rate: float = 1.0,
    orders: Sequence[float] = DDG_ORDERS,
) -> float:
    """Epsilon actually spent by a run, from the survivors counted in each round.

    The noise each client adds was calibrated for an *expected* number of survivors
    (:func:`ddg_calibrate_sigma`); the guarantee is computed from the honest clients whose
    noise really entered each round's sum (see :func:`ddg_rdp` for who counts), composing one
    RDP curve per round.

    Args:
        params: the run's parameters.
        survivors_per_round: honest clients whose noise is in the sum, one entry per round.
        delta: target delta.
        sample_rate: Poisson client-sampling rate; 1 (default) claims no amplification.
        orders: RDP orders.
    """
    if params.sigma < MIN_SIGMA:
        raise DDGError(f"params.sigma={params.sigma} < {MIN_SIGMA}: no DDG guarantee applies")
    orders_t = tuple(float(a) for a in orders)
    total = np.zeros(len(orders_t))
    counts: dict[int, int] = {}
    for n in survivors_per_round:
        counts[int(n)] = counts.get(int(n), 0) + 1
    for n, rounds in counts.items():
        total = total + ddg_rdp(
            l2_sensitivity=params.l2_sensitivity,
            l1_sensitivity=params.l1_sensitivity,
            n_survivors=n,
            sigma_per_client=params.sigma,
            dimension=params.padded_dimension,
            sample_rate=sample_rate,
            steps=rounds,
            orders=orders_t,
        )
    return epsilon_from_rdp(total, delta=delta, orders=orders_t)


@dataclass(frozen=True, kw_only=True)
class NoiseShares:
    """Whose noise protects a client in one round of secure aggregation, worst case first.

    Attributes:
        cohort: clients selected for the round.
        threshold: the Shamir threshold ``t`` secure aggregation resolves for the cohort; a
            round that completes has summed at least ``t`` clients (every surviving
            neighbourhood keeps ``t`` holders, on either graph).
        neighbourhood: the closed neighbourhood ``t`` counts over (the cohort on the complete
            graph, ``degree + 1`` on the SecAgg+ graph).
        colluders: clients whose noise the adversary may know.
        worst: honest noise shares in the sum of a round with ``t`` survivors of which
            ``colluders`` collude, excluding the protected client's own share:
            ``t - 1 - colluders`` (may be <= 0: no guarantee).
    """

    cohort: int
    threshold: int
    neighbourhood: int
    colluders: int
    worst: int

    def realized(self, survivors: int) -> int:
        """Honest noise shares when ``survivors`` clients were summed (own share excluded)."""
        return max(0, int(survivors) - 1 - self.colluders)


def secagg_threshold(secagg: SecAggConfig, *, cohort: int) -> tuple[int, int]:
    """``(t, closed neighbourhood size)`` that secure aggregation resolves for ``cohort`` clients.

    Calls :func:`privfed.secagg.config.resolve_degree` and
    :func:`~privfed.secagg.config.resolve_threshold`, so the accounting follows whatever rule
    secure aggregation applies (never a copy of it).
    """
    from privfed.secagg.config import resolve_degree, resolve_threshold

    if cohort < 1:
        return 0, 0
    degree = resolve_degree(secagg, cohort)
    return int(resolve_threshold(secagg, num_clients=cohort, degree=degree)), degree + 1


def default_max_colluders(secagg: SecAggConfig, *, cohort: int) -> int:
    """The colluders ``client_dp.max_colluders = -1`` stands for: ``max(0, 2t - (k+1) - 1)``.

    A server that lies about dropouts sends "u survived" to some honest holders of u's shares
    and "u dropped" to others; with ``c`` colluding holders it obtains both the self-mask seed
    and the key shares of ``u`` (hence u's individual input) iff each request reaches ``t``
    shares from disjoint honest sets, i.e. iff ``2 (t - c) <= (k + 1) - c`` over u's closed
    neighbourhood of ``k + 1`` holders (Bonawitz et al. 2017's threshold argument; ``k + 1`` is
    the cohort on the complete graph). So ``2t - (k + 1) - 1`` is the largest coalition under
    which secure aggregation still hides every individual input, and the distributed noise is
    calibrated against that many colluders. With the two-thirds threshold on the complete graph
    it is about a third of the cohort; with a majority threshold it is 0.

    Args:
        secagg: the secure-aggregation parameters.
        cohort: clients selected per round (the planned cohort).
    """
    t, nb = secagg_threshold(secagg, cohort=cohort)
    return max(0, 2 * t - nb - 1)


def noise_shares(secagg: SecAggConfig, *, cohort: int, colluders: int) -> NoiseShares:
    """The :class:`NoiseShares` of a round with ``cohort`` selected clients."""
    t, nb = secagg_threshold(secagg, cohort=cohort)
    return NoiseShares(
        cohort=int(cohort),
        threshold=t,
        neighbourhood=nb,
        colluders=int(colluders),
        worst=t - 1 - int(colluders),
    )


def ddg_round_rdp(
    *, params: DDGParams, honest: int, orders: Sequence[float] = DDG_ORDERS
) -> np.ndarray:
    """RDP of one round whose sum holds ``honest`` noise shares the adversary does not know.

    :func:`ddg_rdp` at the run's sensitivities (no amplification); ``inf`` for ``honest <= 0``.
    """
    if params.sigma < MIN_SIGMA:
        raise DDGError(f"params.sigma={params.sigma} < {MIN_SIGMA}: no DDG guarantee applies")
    return ddg_rdp(
        l2_sensitivity=params.l2_sensitivity,
        l1_sensitivity=params.l1_sensitivity,
        n_survivors=max(0, int(honest)),
        sigma_per_client=params.sigma,
        dimension=params.padded_dimension,
        orders=orders,
    )


def ddg_calibrate_sigma(
    *,
    target_epsilon: float,
    delta: float,
    expected_survivors: int,
    clip: float,
    gamma: float,
    dimension: int,
    steps: int,
    beta: float = DEFAULT_BETA,
    sample_rate: float = 1.0,
    rtol: float = 1e-6,
) -> float:
    """The per-client sigma (integer units) that reaches ``target_epsilon`` after ``steps``.

    Bisection (in log sigma) on :func:`ddg_epsilon`, which decreases in sigma, with the
    sensitivities of :class:`DDGParams` (the rounding-inflated L2 bound of Theorem 1).
    Calibrate for the number of honest clients expected to *survive*, not the cohort size;
    report :func:`realized_epsilon` afterwards from the survivors actually counted.

    Args:
        target_epsilon: epsilon to reach (> 0).
        delta: target delta.
        expected_survivors: honest clients expected to contribute noise each round (>= 1).
        clip: L2 clipping norm (float units).
        gamma: granularity.
        dimension: length ``d`` of the float update (padded internally).
        steps: rounds of the whole planned run.
        beta: conditional-rounding constant.
        sample_rate: Poisson client-sampling rate; 1 (default) claims no amplification.
        rtol: relative precision of the returned sigma (the result errs on the large side).

    Returns:
        Sigma per client in integer units (>= 0.5; exactly 0.5 if that already suffices).

    Raises:
        DDGError: if the target is unreachable even with enormous noise (the ``tau D`` term
            cannot vanish only in pathological settings; the message names the values).
    """
    if not target_epsilon > 0:
        raise ValueError(f"target_epsilon must be > 0, got {target_epsilon}")
    if expected_survivors < 1:
        raise ValueError(f"expected_survivors must be >= 1, got {expected_survivors}")
    big_d = padded_dimension(dimension)
    l2 = rounded_l2_bound(norm=clip / gamma, beta=beta, dimension=big_d)
    l1 = rounded_l1_bound(l2_bound=l2, dimension=big_d)

    def eps(sigma: float) -> float:
        return ddg_epsilon(
            l2_sensitivity=l2,
            l1_sensitivity=l1,
            n_survivors=expected_survivors,
            sigma_per_client=sigma,
            dimension=big_d,
            delta=delta,
            sample_rate=sample_rate,
            steps=steps,
        )

    lo = MIN_SIGMA
    if eps(lo) <= target_epsilon:
        return lo
    hi = max(2.0 * lo, l2)
    while eps(hi) > target_epsilon:
        hi *= 2.0
        if hi > 1e15:
            raise DDGError(
                f"target_epsilon={target_epsilon} is unreachable for clip={clip}, "
                f"gamma={gamma}, D={big_d}, steps={steps}, delta={delta}"
            )
    while hi / lo > 1.0 + rtol:
        mid = math.sqrt(lo * hi)
        if eps(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def ddg_configure(
    *,
    dimension: int,
    clip: float,
    bits: int,
    cohort_size: int,
    expected_survivors: int,
    target_epsilon: float,
    delta: float,
    steps: int,
    max_wrap_probability: float = 1e-6,
    beta: float = DEFAULT_BETA,
    sample_rate: float = 1.0,
    max_rounding_tries: int = 1000,
) -> DDGParams:
    """Choose ``gamma`` and the per-client ``sigma`` for a run (Sec. 4.4 trade-off).

    Smaller ``gamma`` means finer quantization (less rounding inflation, which the privacy
    noise must pay for) but a wider integer range (more risk of a modular wrap). This finds the
    smallest ``gamma`` whose :func:`wrap_probability` bound for ``cohort_size`` summed clients
    is at most ``max_wrap_probability``, with ``sigma`` calibrated at that ``gamma`` for
    ``expected_survivors`` (:func:`ddg_calibrate_sigma`). The two depend on each other (the
    float-unit noise ``sigma * gamma`` grows with ``gamma``); a monotone fixed-point iteration
    from below converges to the smallest consistent ``gamma``.

    Args:
        dimension: length ``d`` of the float update.
        clip: L2 clipping norm.
        bits: modulus exponent of the secure sum.
        cohort_size: most clients whose encodings can be summed (for the wrap check).
        expected_survivors: honest clients expected to contribute noise (for privacy).
        target_epsilon: epsilon of the whole run at ``delta``.
        delta: target delta.
        steps: rounds of the whole run.
        max_wrap_probability: target bound on the per-round wrap probability.
        beta: conditional-rounding constant.
        sample_rate: Poisson client-sampling rate; 1 (default) claims no amplification.
        max_rounding_tries: stored in the returned params.

    Raises:
        DDGError: if ``bits`` is too small for the cohort (no consistent ``gamma`` exists or
            it would exceed ``clip``, i.e. the whole update would round to a few units).
    """
    if expected_survivors > cohort_size:
        raise ValueError("expected_survivors cannot exceed cohort_size")

    def gamma_for(gamma: float) -> tuple[float, float]:
        sigma = ddg_calibrate_sigma(
            target_epsilon=target_epsilon,
            delta=delta,
            expected_survivors=expected_survivors,
            clip=clip,
            gamma=gamma,
            dimension=dimension,
            steps=steps,
            beta=beta,
            sample_rate=sample_rate,
        )
        new_gamma = choose_gamma(
            clip=clip,
            bits=bits,
            n_clients=cohort_size,
            dimension=dimension,
            noise_std=sigma * gamma,
            max_wrap_probability=max_wrap_probability,
        )
        return new_gamma, sigma

    # start from below: the noise-free gamma is a lower bound on the fixed point
    gamma = choose_gamma(
        clip=clip,
        bits=bits,
        n_clients=cohort_size,
        dimension=dimension,
        noise_std=0.0,
        max_wrap_probability=max_wrap_probability,
    )
    for _ in range(200):
        if gamma > clip:
            break
        new_gamma, _sigma = gamma_for(gamma)
        if new_gamma <= gamma * (1.0 + 1e-9):
            break
        gamma = new_gamma
    if gamma > clip:
        raise DDGError(
            f"bits={bits} is too small: no granularity keeps the wrap probability of "
            f"{cohort_size} clients below {max_wrap_probability} at epsilon={target_epsilon} "
            f"(gamma would exceed clip={clip}); raise bits or lower the cohort size"
        )
    for _ in range(1000):  # make the final check hold with the sigma calibrated at this gamma
        sigma = gamma_for(gamma)[1]
        params = DDGParams(
            dimension=dimension,
            clip=clip,
            bits=bits,
            gamma=gamma,
            sigma=sigma,
            beta=beta,
            max_rounding_tries=max_rounding_tries,
        )
        if wrap_probability(params=params, n_clients=cohort_size) <= max_wrap_probability:
            return params
        gamma *= 1.0 + 1e-6
    raise DDGError(f"could not satisfy the wrap target {max_wrap_probability} (bits={bits})")


# --- client and server --------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DDGEncoding:
    """A client's encoded update with its diagnostics.

    Attributes:
        values: integers in ``[0, 2^bits)`` in the secure-aggregation packing dtype.
        clipped: whether the update's norm exceeded ``clip`` and was scaled down.
        rounding_tries: conditional-rounding attempts used.
        norm_inflation: rounded norm / scaled norm (:class:`RoundingResult`).
    """

    values: np.ndarray
    clipped: bool
    rounding_tries: int
    norm_inflation: float


def encode_report(
    x: np.ndarray,
    *,
    params: DDGParams,
    rotation_seed: int | np.random.SeedSequence,
    rng: np.random.Generator,
) -> DDGEncoding:
    """Client side: clip, rotate, scale and round, add discrete Gaussian noise, reduce mod 2^bits.

    Args:
        x: the float update, length ``params.dimension``.
        params: aggregation parameters.
        rotation_seed: the round's public rotation seed (same for all clients and the server).
        rng: this client's simulation generator (rounding and noise).

    Returns:
        A :class:`DDGEncoding`; feed ``.values`` to secure aggregation.

    Raises:
        ValueError: if ``x`` has the wrong shape or is not finite.
        DDGError: if conditional rounding fails (see :func:`conditional_randomized_rounding`).
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape != (params.dimension,):
        raise ValueError(f"update must have shape ({params.dimension},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("update contains NaN or inf; fix the client update before encoding")
    norm = float(np.linalg.norm(arr))
    clipped = norm > params.clip
    if clipped:
        arr = arr * (params.clip / norm)
    signs = rotation_signs(rotation_seed, padded_dimension=params.padded_dimension)
    rotated = randomized_hadamard(arr, signs=signs)
    rounded = conditional_randomized_rounding(
        rotated,
        gamma=params.gamma,
        bound=params.l2_sensitivity,
        rng=rng,
        max_tries=params.max_rounding_tries,
    )
    noisy = rounded.values + sample_discrete_gaussian(
        params.padded_dimension, sigma=params.sigma, rng=rng
    )
    wrapped = np.bitwise_and(noisy, np.int64(params.modulus - 1)).astype(np.uint64)
    return DDGEncoding(
        values=wrapped.astype(dtype_for_bits(params.bits)),
        clipped=clipped,
        rounding_tries=rounded.tries,
        norm_inflation=rounded.inflation,
    )


def encode(
    x: np.ndarray,
    *,
    params: DDGParams,
    rotation_seed: int | np.random.SeedSequence,
    rng: np.random.Generator,
) -> np.ndarray:
    """Client side, values only: ``encode_report(...).values`` (see :func:`encode_report`)."""
    return encode_report(x, params=params, rotation_seed=rotation_seed, rng=rng).values


def decode(
    sum_mod: np.ndarray,
    *,
    params: DDGParams,
    n_clients: int,
    rotation_seed: int | np.random.SeedSequence,
    max_wrap_probability: float = 0.01,
) -> np.ndarray:
    """Server side: centered lift of the modular sum, rescale by ``gamma``, inverse rotation.

    The result estimates the sum of the clients' *clipped* float updates plus the summed noise
    (per-coordinate variance ``n_clients * Var(N_Z(0, sigma^2)) * gamma^2``, plus rounding
    variance ``<= n_clients * gamma^2 / 4``).

    Args:
        sum_mod: the secure sum in ``Z_(2^bits)`` (any unsigned or non-negative integer
            dtype; reduced modulo ``2^bits`` here), length ``params.padded_dimension``.
        params: aggregation parameters.
        n_clients: how many encodings were summed.
        rotation_seed: the round's public rotation seed.
        max_wrap_probability: refuse to decode when :func:`wrap_probability` for
            ``n_clients`` exceeds this (a wrap turns coordinates into garbage silently).

    Returns:
        Float64 vector of length ``params.dimension``.

    Raises:
        DDGError: if the wrap-probability bound exceeds ``max_wrap_probability``.
        ValueError: if ``sum_mod`` has the wrong shape or dtype.
    """
    arr = np.asarray(sum_mod)
    if arr.shape != (params.padded_dimension,):
        raise ValueError(f"sum_mod must have shape ({params.padded_dimension},), got {arr.shape}")
    if arr.dtype.kind not in "ui":
        raise ValueError(f"sum_mod must have an integer dtype, got {arr.dtype}")
    bound = wrap_probability(params=params, n_clients=n_clients)
    if bound > max_wrap_probability:
        raise DDGError(
            f"the sum of {n_clients} clients may have wrapped modulo 2^{params.bits} "
            f"(probability bound {bound:.3g} > {max_wrap_probability}): raise bits or gamma"
        )
    reduced = np.bitwise_and(arr.astype(np.uint64), np.uint64(params.modulus - 1))
    signed = reduced.astype(np.int64)
    half = np.int64(1 << (params.bits - 1))
    signed = np.where(signed >= half, signed - np.int64(params.modulus), signed)
    signs = rotation_signs(rotation_seed, padded_dimension=params.padded_dimension)
    return inverse_randomized_hadamard(
        signed.astype(np.float64) * params.gamma, signs=signs, dimension=params.dimension
    )


@dataclass(frozen=True, kw_only=True)
class DistributedPlan:
    """The distributed-DP parameters of a run and the threat model they were calibrated for.

    Attributes:
        params: gamma, per-client sigma and the rest (:func:`ddg_configure`).
        colluders: clients whose noise the adversary may know.
        colluders_derived: whether ``colluders`` came from :func:`default_max_colluders`.
        planned: the noise shares of a round with the planned cohort; ``params.sigma`` is
            calibrated so that ``rounds`` rounds with only ``planned.worst`` honest shares each
            meet the target.
    """

    params: DDGParams
    colluders: int
    colluders_derived: bool
    planned: NoiseShares


def plan_distributed(
    *,
    dimension: int,
    clip: float,
    secagg: SecAggConfig,
    num_clients: int,
    cohort: int,
    max_colluders: int,
    target_epsilon: float,
    delta: float,
    rounds: int,
) -> DistributedPlan:
    """Calibrate the distributed discrete Gaussian for the worst round secure aggregation admits.

    A round completes with as few as ``t`` summed clients (:func:`secagg_threshold`); of those,
    ``max_colluders`` may reveal their noise to the server and the protected client's own share
    does not protect it, leaving ``t - 1 - colluders`` honest shares
    (:func:`noise_shares`). The per-client sigma is calibrated so that ``rounds`` such rounds
    meet ``target_epsilon`` at ``delta`` (Kairouz et al. 2021, Prop. 14 composed over rounds);
    rounds with more survivors spend less.

    Args:
        dimension: length of the float update.
        clip: L2 clip of one client's update.
        secagg: secure-aggregation parameters (``bits``, threshold rule).
        num_clients: the population (most encodings one sum can hold, for the wrap bound).
        cohort: the planned cohort size.
        max_colluders: ``client_dp.max_colluders`` (-1: :func:`default_max_colluders`).
        target_epsilon: ``client_dp.target_epsilon``.
        delta: ``client_dp.delta``.
        rounds: planned rounds.

    Raises:
        ConfigError: if the worst admissible round has no honest noise share, or ``bits`` is
            too small (each message names the fields to change).
    """
    derived = max_colluders < 0
    colluders = default_max_colluders(secagg, cohort=cohort) if derived else int(max_colluders)
    shares = noise_shares(secagg, cohort=cohort, colluders=colluders)
    if shares.worst < 1:
        origin = "derived from the threshold" if derived else "configured"
        raise ConfigError(
            f"client_dp.max_colluders = {colluders} ({origin}) leaves no honest noise share in "
            f"a round that secure aggregation completes with t = {shares.threshold} of the "
            f"planned cohort of {cohort} clients (t - 1 - colluders = {shares.worst}, the "
            "protected client's own share excluded): lower client_dp.max_colluders below "
            f"{shares.threshold - 1}, or raise secagg.threshold or the cohort size"
        )
    try:
        params = ddg_configure(
            dimension=dimension,
            clip=clip,
            bits=secagg.bits,
            cohort_size=num_clients,
            expected_survivors=shares.worst,
            target_epsilon=target_epsilon,
            delta=delta,
            steps=rounds,
        )
    except DDGError as exc:
        raise ConfigError(
            f"client_dp (distributed): {exc}; raise secagg.bits or client_dp.target_epsilon"
        ) from None
    return DistributedPlan(
        params=params, colluders=colluders, colluders_derived=derived, planned=shares
    )

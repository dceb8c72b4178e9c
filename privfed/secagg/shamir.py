"""t-of-n Shamir secret sharing of 32-byte secrets over GF(2^256 + 297).

X25519 accepts any 32 bytes as a private key, so a secret can be any integer below 2^256; the
prime ``P = 2**256 + 297`` is the smallest prime above 2^256 and holds every such secret in one
field element (Bonawitz et al. 2017, Sec. 3: shares of ``s_u^SK`` and ``b_u``). A share is the
pair ``(x, f(x))`` with ``x`` the holder's evaluation point (client id + 1) and ``f(x)`` encoded
in :data:`SHARE_BYTES` big-endian bytes.

The public :func:`share_secret` draws the polynomial's coefficients from ``os.urandom``; the pure
:func:`split` takes them as an argument so tests can pin them. Lagrange coefficients at zero are
cached per responder set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

#: The field prime 2^256 + 297 (prime; checked by a Miller-Rabin test in the test suite).
PRIME = (1 << 256) + 297
#: Bytes of one encoded share value (a field element may exceed 2^256).
SHARE_BYTES = 33
#: Bytes of a secret.
SECRET_BYTES = 32
# Each coefficient is drawn from 40 random bytes reduced mod P: statistical distance < 2^-63.
_COEFF_BYTES = 40


def evaluation_point(client_id: int) -> int:
    """The Shamir x-coordinate of a client (never 0, where the secret sits)."""
    return client_id + 1


def split(secret: int, *, coefficients: Sequence[int], xs: Sequence[int]) -> dict[int, int]:
    """Evaluate ``f(x) = secret + c_1 x + ... + c_(t-1) x^(t-1)`` mod P at each x (pure).

    Args:
        secret: the secret, ``0 <= secret < P``.
        coefficients: the ``t - 1`` random coefficients, each in ``[0, P)``.
        xs: distinct non-zero evaluation points.

    Returns:
        x -> f(x).
    """
    if not 0 <= secret < PRIME:
        raise ValueError("secret must lie in [0, P)")
    poly = [secret, *coefficients]
    out: dict[int, int] = {}
    for x in xs:
        if x % PRIME == 0:
            raise ValueError("evaluation point 0 would reveal the secret")
        acc = 0
        for c in reversed(poly):
            acc = (acc * x + c) % PRIME
        out[x] = acc
    return out


def share_secret(
    secret: bytes,
    *,
    threshold: int,
    xs: Sequence[int],
    random_bytes: Callable[[int], bytes] = os.urandom,
) -> dict[int, int]:
    """Split a 32-byte secret into shares at ``xs``; any ``threshold`` of them reconstruct it.

    Args:
        secret: 32 bytes.
        threshold: ``t >= 1``; ``t - 1`` shares are independent of the secret.
        xs: distinct non-zero evaluation points (at least ``threshold``).
        random_bytes: source of the coefficients (``os.urandom`` except in the test mode).
    """
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if threshold < 1 or threshold > len(xs):
        raise ValueError(f"threshold must be in [1, {len(xs)}], got {threshold}")
    if len(set(xs)) != len(xs):
        raise ValueError("evaluation points must be distinct")
    coeffs = [
        int.from_bytes(random_bytes(_COEFF_BYTES), "big") % PRIME for _ in range(threshold - 1)
    ]
    return split(int.from_bytes(secret, "big"), coefficients=coeffs, xs=xs)


def _prod_mod(values: list[int]) -> int:
    """Product modulo :data:`PRIME`, multiplying small integers in blocks before reducing."""
    acc = 1
    for k in range(0, len(values), 8):
        acc = acc * math.prod(values[k : k + 8]) % PRIME
    return acc


@lru_cache(maxsize=4096)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Lagrange coefficients ``l_i(0) = prod_(j != i) x_j / (x_j - x_i)`` (cached per set).

    The evaluation points are small integers, so numerators (prefix/suffix products) and
    denominators are multiplied as small integers in blocks and reduced modulo the prime once
    per block; the ``t`` denominators are inverted together with one modular inversion
    (Montgomery's batch-inversion trick).
    """
    t = len(xs)
    prefix = [1] * (t + 1)
    suffix = [1] * (t + 1)
    for i in range(t):
        prefix[i + 1] = prefix[i] * xs[i] % PRIME
        suffix[t - 1 - i] = suffix[t - i] * xs[t - 1 - i] % PRIME
    nums = [prefix[i] * suffix[i + 1] % PRIME for i in range(t)]
    dens = [_prod_mod([xj - xi for xj in xs if xj != xi]) for xi in xs]
    running = [1]
    for d in dens:
        running.append(running[-1] * d % PRIME)
    inv = pow(running[-1], -1, PRIME)
    inverses = [0] * t
    for i in range(t - 1, -1, -1):
        inverses[i] = inv * running[i] % PRIME
        inv = inv * dens[i] % PRIME
    return tuple(n * d % PRIME for n, d in zip(nums, inverses, strict=True))


def reconstruct_int(shares: Mapping[int, int], *, threshold: int) -> int:
    """Interpolate ``f(0)`` from at least ``threshold`` shares (uses the ``threshold`` smallest x).

    Raises:
        ValueError: if fewer than ``threshold`` shares are given.
    """
    if len(shares) < threshold:
        raise ValueError(f"need {threshold} shares, got {len(shares)}")
    xs = tuple(sorted(shares)[:threshold])
    lam = lagrange_at_zero(xs)
    return sum(c * shares[x] for c, x in zip(lam, xs, strict=True)) % PRIME


def reconstruct(shares: Mapping[int, int], *, threshold: int) -> bytes:
    """Reconstruct a 32-byte secret from at least ``threshold`` shares.

    Raises:
        ValueError: too few shares, or the interpolated value is not a 32-byte secret (a share
            was corrupted).
    """
    value = reconstruct_int(shares, threshold=threshold)
    if value >= 1 << 256:
        raise ValueError("reconstructed value is not a 32-byte secret; a share is corrupt")
    return value.to_bytes(SECRET_BYTES, "big")


def encode_share(value: int) -> bytes:
    """Encode a share value in :data:`SHARE_BYTES` big-endian bytes."""
    return value.to_bytes(SHARE_BYTES, "big")


def decode_share(data: bytes) -> int:
    """Decode a share value; raise ValueError if it is not a field element."""
    if len(data) != SHARE_BYTES:
        raise ValueError(f"share must be {SHARE_BYTES} bytes")
    value = int.from_bytes(data, "big")
    if value >= PRIME:
        raise ValueError("share is not a field element")
    return value

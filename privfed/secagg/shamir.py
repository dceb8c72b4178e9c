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
import operator
import os
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np

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


@lru_cache(maxsize=4096)
def lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Lagrange coefficients ``l_i(0) = prod_(j != i) x_j / (x_j - x_i)`` (cached per set).

    ``l_i(0) = N / (x_i * D_i)`` with ``N = prod_j x_j`` and ``D_i = prod_(j != i) (x_j - x_i)``.
    The evaluation points are client ids + 1 (below 2^32 + 1), so each ``x_i * D_i`` is an
    exact integer product of the row of differences (with ``x_i`` on the diagonal); the ``t``
    of them are inverted together with one modular inversion (Montgomery's batch-inversion
    trick).
    """
    t = len(xs)
    points = np.asarray(xs, dtype=np.int64)
    rows = points[None, :] - points[:, None]  # rows[i, j] = x_j - x_i, exact in int64
    np.fill_diagonal(rows, points)
    dens = [math.prod(row) % PRIME for row in rows.tolist()]
    running = [1]
    for d in dens:
        running.append(running[-1] * d % PRIME)
    inv = pow(running[-1], -1, PRIME) * (math.prod(xs) % PRIME) % PRIME  # N / prod(dens)
    out = [0] * t
    for i in range(t - 1, -1, -1):
        out[i] = inv * running[i] % PRIME
        inv = inv * dens[i] % PRIME
    return tuple(out)


#: 16-bit limbs of a value below 2^272 (a 33-byte share, or a coefficient below the prime).
_LIMBS = 17


@lru_cache(maxsize=4096)
def _coefficient_limbs(xs: tuple[int, ...]) -> np.ndarray:
    """``lagrange_at_zero(xs)`` as a ``(17, t)`` float64 array of 16-bit limbs (row = limb)."""
    raw = b"".join(c.to_bytes(2 * _LIMBS, "little") for c in lagrange_at_zero(xs))
    limbs = np.frombuffer(raw, dtype="<u2").reshape(len(xs), _LIMBS)
    return np.ascontiguousarray(limbs.T, dtype=np.float64)


def interpolate_many(points: Sequence[tuple[int, ...]], shares: np.ndarray) -> list[int]:
    """``f_g(0) mod P`` for many polynomials at once, from ``t`` shares each (exact).

    Each value is ``sum_i l_i(0) * y_i``, computed with 16-bit limbs: the limb products of
    every coefficient with every share are summed over ``i`` by one batched float64 matrix
    product, which is exact because every term is an integer below 2^32 and every partial sum
    stays below ``t * 2^32 < 2^53`` (``t`` of 2^16 or more falls back to Python integers); the
    limbs are then carried in int64 and each value reduced modulo the prime. Between 3x and 5x
    faster than Python integers for 100 secrets at ``t`` = 24..67.

    Args:
        points: per polynomial, its ``t`` distinct evaluation points (all of length ``t``).
        shares: ``(G, t, 33)`` uint8, the share values (big-endian) at those points.

    Returns:
        ``G`` integers in ``[0, P)`` (a caller checks whether each is a 32-byte secret).
    """
    groups, t, width = shares.shape
    if width != SHARE_BYTES or len(points) != groups or any(len(x) != t for x in points):
        raise ValueError(f"need {groups} point sets of {t} and shares of {SHARE_BYTES} bytes")
    if groups == 0:
        return []
    if t >= 1 << 16:
        return [
            _at_zero(x, [int.from_bytes(v.tobytes(), "big") for v in row])
            for x, row in zip(points, shares, strict=True)
        ]
    padded = np.zeros((groups, t, 2 * _LIMBS), dtype=np.uint8)
    padded[:, :, 1:] = shares
    values = padded.view(">u2")[:, :, ::-1].astype(np.float64)  # (G, t, 17) little-endian
    if all(x == points[0] for x in points):
        coeffs = np.broadcast_to(_coefficient_limbs(points[0]), (groups, _LIMBS, t))
    else:
        coeffs = np.stack([_coefficient_limbs(x) for x in points])
    products = np.matmul(coeffs, values).astype(np.int64)  # [g, a, b] = sum_i c_ia * y_ib
    limbs = np.zeros((groups, 2 * _LIMBS + 2), dtype=np.int64)
    for a in range(_LIMBS):  # limb a of the coefficient times limb b of the share: a + b
        limbs[:, a : a + _LIMBS] += products[:, a, :]
    for k in range(limbs.shape[1] - 1):
        limbs[:, k + 1] += limbs[:, k] >> 16
        limbs[:, k] &= 0xFFFF
    raw = limbs.astype("<u2").tobytes()
    size = 2 * limbs.shape[1]
    return [int.from_bytes(raw[i : i + size], "little") % PRIME for i in range(0, len(raw), size)]


def reconstruct_int(shares: Mapping[int, int], *, threshold: int) -> int:
    """Interpolate ``f(0)`` from at least ``threshold`` shares (uses the ``threshold`` smallest x).

    Raises:
        ValueError: if fewer than ``threshold`` shares are given.
    """
    if len(shares) < threshold:
        raise ValueError(f"need {threshold} shares, got {len(shares)}")
    xs = tuple(sorted(shares)[:threshold])
    return _at_zero(xs, [shares[x] for x in xs])


def _at_zero(xs: tuple[int, ...], values: Sequence[int]) -> int:
    return sum(map(operator.mul, lagrange_at_zero(xs), values)) % PRIME


def interpolate(xs: tuple[int, ...], values: Sequence[int]) -> bytes:
    """The 32-byte secret at ``f(0)`` from the shares ``values`` at the distinct points ``xs``.

    Uses every given share (a caller holding more than the threshold passes the ones it
    chose, e.g. the ``t`` smallest points as :func:`reconstruct` does).

    Raises:
        ValueError: ``xs`` and ``values`` differ in length, or the interpolated value is not a
            32-byte secret (a share was corrupted).
    """
    if len(xs) != len(values):
        raise ValueError(f"{len(xs)} evaluation points for {len(values)} share values")
    value = _at_zero(xs, values)
    if value >= 1 << 256:
        raise ValueError("reconstructed value is not a 32-byte secret; a share is corrupt")
    return value.to_bytes(SECRET_BYTES, "big")


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

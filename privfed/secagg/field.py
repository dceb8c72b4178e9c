"""Integer domain of the protocol: Z_(2^bits), packing dtypes and fixed-point encoding.

The protocol sums integer vectors modulo ``2**bits``. Float updates enter through
:func:`encode_fixed_point` (clamp to ``[-clip, clip]``, scale by ``2**scale_bits``, stochastic
rounding with a caller-supplied simulation generator) and leave through
:func:`decode_fixed_point` (signed lift, divide by the scale). Stochastic rounding is unbiased,
so the decoded sum is an unbiased estimate of the clamped float sum with error at most
``n / 2**scale_bits`` per coordinate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def dtype_for_bits(bits: int) -> np.dtype:
    """The smallest little-endian unsigned dtype that holds ``bits`` bits (uint8..uint64)."""
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be between 1 and 64, got {bits}")
    for size in (8, 16, 32, 64):
        if bits <= size:
            return np.dtype(f"<u{size // 8}")
    raise AssertionError("unreachable")


def modulus(bits: int) -> int:
    """The modulus ``2**bits``."""
    return 1 << bits


def reduce_inplace(values: np.ndarray, bits: int) -> np.ndarray:
    """Reduce an unsigned array of :func:`dtype_for_bits` in place modulo ``2**bits``.

    The container dtype wraps at ``2**(8 * itemsize)``, a multiple of ``2**bits``, so sums taken
    with wraparound in the container and reduced once at the end are correct modulo ``2**bits``.
    """
    if bits < values.dtype.itemsize * 8:
        np.bitwise_and(values, values.dtype.type((1 << bits) - 1), out=values)
    return values


def check_vector(values: np.ndarray, *, bits: int, length: int | None = None) -> np.ndarray:
    """Validate an integer input vector and return it in the packing dtype of ``bits``.

    Raises:
        ValueError: if the vector is not 1-D integer, has the wrong length, or leaves
            ``[0, 2**bits)``.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"input vectors must be 1-D, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"input vector has length {arr.shape[0]}, expected {length}")
    if arr.dtype.kind not in "ui":
        raise ValueError(f"input vectors must have an integer dtype, got {arr.dtype}")
    fits = arr.dtype.kind == "u" and arr.dtype.itemsize * 8 <= bits  # in range by its type
    if arr.size and not fits and (int(arr.min()) < 0 or int(arr.max()) >= (1 << bits)):
        raise ValueError(f"input values must lie in [0, 2**{bits})")
    return arr.astype(dtype_for_bits(bits), copy=False)


@dataclass(frozen=True)
class EncodedVector:
    """A fixed-point encoded vector.

    Attributes:
        values: integers in ``[0, 2**bits)`` in the packing dtype (negatives wrapped).
        clamped: how many coordinates were outside ``[-clip, clip]`` and were clamped.
    """

    values: np.ndarray
    clamped: int


def encode_fixed_point(
    x: np.ndarray, *, clip: float, scale_bits: int, bits: int, rng: np.random.Generator
) -> EncodedVector:
    """Clamp, scale by ``2**scale_bits`` and stochastically round into Z_(2^bits).

    Args:
        x: float vector.
        clip: per-coordinate bound; coordinates are clamped to ``[-clip, clip]``.
        scale_bits: fractional bits.
        bits: modulus exponent.
        rng: simulation generator for the rounding (never used for cryptographic material).

    Raises:
        ValueError: if ``x`` contains NaN or is not 1-D.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"updates must be 1-D, got shape {arr.shape}")
    if np.isnan(arr).any():
        raise ValueError("update contains NaN; fix the client update before aggregation")
    clamped = int(np.count_nonzero(np.abs(arr) > clip))
    scaled = np.clip(arr, -clip, clip) * float(2**scale_bits)
    floor = np.floor(scaled)
    up = rng.random(arr.shape[0]) < (scaled - floor)
    ints = floor.astype(np.int64) + up.astype(np.int64)
    wrapped = (ints & np.int64((1 << bits) - 1)).astype(np.uint64)
    return EncodedVector(values=wrapped.astype(dtype_for_bits(bits)), clamped=clamped)


def decode_fixed_point(total: np.ndarray, *, bits: int, scale_bits: int) -> np.ndarray:
    """Lift a sum in Z_(2^bits) to signed integers and divide by ``2**scale_bits`` (float64)."""
    signed = np.asarray(total).astype(np.uint64).astype(np.int64)
    half = np.int64(1 << (bits - 1))
    signed = np.where(signed >= half, signed - np.int64(1 << bits), signed)
    return signed.astype(np.float64) / float(2**scale_bits)

"""Dettmers et al.'s dynamic 8-bit quantization map and a nearest-code rule that
computes instead of searching.

The map (Dettmers 2016, "8-Bit Approximations for Parallelism in Deep Learning"; the
blockwise optimizers of Dettmers, Lewis, Shleifer & Zettlemoyer 2022) holds 256 values in
[−1, 1]: for each decade ``i = 0..6`` the midpoints of ``K_i`` equal steps of
``[0.1, 1]·10^(i−6)``, with ``K_i = 2^i`` (signed map, mirrored below zero) or
``2^(i+1)`` (unsigned map), plus 0 and 1. A block of 256 values is stored as 256 codes
and its absolute maximum ``a`` (float32): ``x ≈ map[code]·a``, the code the map value
nearest ``x/a``.

Finding the nearest of 256 sorted values is a binary search, 8 dependent table reads per
value, which a step at the memory limit cannot afford (~1.4 cycles a value per core
here). The map's values are spaced at least 0.7% of their size apart, and float32's top
9 mantissa bits cut ``[2^-24, 1]`` into 12,800 buckets of at most 0.2%: no bucket holds
more than one of the 255 midpoints between neighbouring codes. So the code of ``|y|`` is
``FIRST[bucket] + (|y| > MIDPOINT[FIRST[bucket]])`` (``FIRST``: how many midpoints lie
below the bucket): two reads from tables in L1 and one compare, exactly the nearest
code (ties as ``torch.bucketize`` and bitsandbytes: toward the lower code).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from .._jit import inline
from .bits import f32_bits, f32_from_bits, select

#: Values per quantization block (bitsandbytes' blockwise optimizers).
QBLOCK = 256

_MIN_EXP = 127 - 24  # float32 biased exponent of 2**-24: below it, everything is bucket 0
_MANT_BITS = 9  # bucket = (biased exponent - _MIN_EXP, top 9 mantissa bits)
_BUCKETS = (127 - _MIN_EXP + 1) << _MANT_BITS  # through the exponent of 1.0
_ONE_BITS = np.uint32(0x3F800000)


def _linspace32(start: float, end: float, steps: int) -> np.ndarray:
    """``torch.linspace(start, end, steps, dtype=torch.float32)`` to the bit: a float32
    step, the first half counted up from ``start`` and the second down from ``end``, each
    value one fused multiply-add (rounded once: float64 holds the exact product)."""
    step = np.float32((np.float32(end) - np.float32(start)) / np.float32(steps - 1))
    i = np.arange(steps)
    half = steps // 2
    up = np.float64(np.float32(start)) + np.float64(step) * i
    down = np.float64(np.float32(end)) - np.float64(step) * (steps - i - 1)
    return np.where(i < half, up, down).astype(np.float32)


@cache
def dynamic_map(signed: bool) -> np.ndarray:
    """The 256 sorted float32 values of the dynamic map (bitsandbytes'
    ``create_dynamic_map(signed, max_exponent_bits=7, total_bits=8)``, to the bit)."""
    data: list[float] = []
    for i in range(7):
        k = 2 ** i if signed else 2 ** (i + 1)
        bounds = _linspace32(0.1, 1.0, k + 1)
        means = ((bounds[:-1] + bounds[1:]) / np.float32(2.0)).astype(np.float32)
        values = (means * np.float32(10.0 ** (i - 6))).astype(np.float32)
        data += values.tolist()
        if signed:
            data += (-values).tolist()
    data += [0.0, 1.0]
    data += [0.0] * (256 - len(data))
    out = np.array(sorted(data), np.float32)
    out.flags.writeable = False
    return out


@cache
def tables(signed: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(values, first, midpoints, zero)`` for :func:`encode`/:func:`decode`: the map's
    256 values; per bucket of ``|y|`` the number of non-negative midpoints below it; the
    non-negative midpoints (with a sentinel 2.0 after the last); and the code of 0."""
    values = dynamic_map(signed)
    zero = int(np.flatnonzero(values == 0.0)[-1]) if not signed else \
        int(np.flatnonzero(values == 0.0)[0])
    pos = values[zero:]  # 0, the positive values, 1.0
    mids = ((pos[:-1] + pos[1:]) / np.float32(2.0)).astype(np.float32)
    buckets = np.arange(_BUCKETS, dtype=np.uint32)
    lo = ((buckets >> _MANT_BITS) + _MIN_EXP) << 23 | (buckets & ((1 << _MANT_BITS) - 1)) \
        << (23 - _MANT_BITS)
    lo = lo.astype(np.uint32).view(np.float32)
    lo[0] = 0.0  # bucket 0 also holds everything below 2**-24
    first = np.searchsorted(mids, lo, side="left").astype(np.uint8)
    # at most one midpoint in each bucket: what makes one compare exact
    hi = np.append(lo[1:], np.float32(np.inf))
    inside = np.searchsorted(mids, hi, side="left") - first
    assert inside.max() <= 1, "a bucket holds two midpoints"
    mids = np.append(mids, np.float32(2.0)).astype(np.float32)
    for a in (first, mids):
        a.flags.writeable = False
    return values, first, mids, zero


@inline
def _bucket(ay):
    """The bucket of ``ay`` in [0, 1] (float32): its exponent and top mantissa bits."""
    b = f32_bits(ay)
    e = np.int32(b >> np.uint32(23)) - np.int32(_MIN_EXP)
    bucket = (e << np.int32(_MANT_BITS)) | np.int32((b >> np.uint32(23 - _MANT_BITS))
                                                    & np.uint32((1 << _MANT_BITS) - 1))
    return np.int32(select(e >= 0, np.uint32(bucket), np.uint32(0)))


@inline
def encode(y, first, mids, zero, signed):
    """The code of the map value nearest ``y`` in [−1, 1] (ties toward the lower code, as
    ``torch.bucketize``). ``first``, ``mids``, ``zero`` from :func:`tables`."""
    ab = f32_bits(abs(y))
    # past 1 by a rounding, or NaN (whose bits are larger still): the table's last bucket
    ay = f32_from_bits(select(ab <= _ONE_BITS, ab, _ONE_BITS))
    # unsigned indices: Numba adds no negative-index wrap-around, and the loop vectorises
    f = np.int32(first[np.uint32(_bucket(ay))])
    mid = mids[np.uint32(f)]
    up = np.int32(zero) + f + np.int32(ay > mid)
    # mirrored below zero: a tie goes to the lower (more negative) code
    down = np.int32(zero) - min(f + np.int32(ay >= mid), np.int32(zero))
    return np.uint8(select(y >= 0, np.uint32(up),
                           select(signed, np.uint32(down), np.uint32(zero))))

"""Counter-based random numbers: Philox4x32-10 and a Box–Muller normal.

Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3" (SC 2011); the
constants and round structure are Random123's. A counter-based generator makes the noise
added to element ``i`` at step ``t'`` a pure function of ``(seed, t', i)``: the same bits
at any thread count, after a checkpoint restart, and on any backend.

These are plain Python functions on purpose: each backend compiles them (see
``fastopt._jit.bind``). All arithmetic is explicit uint32/uint64 (numba would otherwise
promote mixed integer types to int64 or float64).
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import device

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_LO = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)
_8 = np.uint32(8)
_ONE = np.float32(1.0)
_2POW_M24 = np.float32(2.0**-24)
_MINUS_TWO = np.float32(-2.0)
_TWO_PI = np.float32(2.0 * math.pi)


@device
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds: four uint32 counter words and two key words in, four out."""
    c0 = np.uint64(c0)
    c1 = np.uint64(c1)
    c2 = np.uint64(c2)
    c3 = np.uint64(c3)
    k0 = np.uint64(k0)
    k1 = np.uint64(k1)
    for r in range(10):
        if r > 0:
            k0 = (k0 + _W0) & _LO
            k1 = (k1 + _W1) & _LO
        p0 = _M0 * c0
        p1 = _M1 * c2
        c0, c1, c2, c3 = ((p1 >> _32) ^ c1 ^ k0), p1 & _LO, ((p0 >> _32) ^ c3 ^ k1), p0 & _LO
    return np.uint32(c0), np.uint32(c1), np.uint32(c2), np.uint32(c3)


@device
def standard_normal(index, step, k0, k1):
    """One N(0, 1) float32 for element ``index`` (uint64) at step ``step`` (uint64).

    Counter = (index low, index high, step low, step high), key = (k0, k1). The top 24 bits
    of two output words make u1 in (0, 1] and u2 in [0, 1), exactly representable in
    float32; ``z = sqrt(-2 ln u1) cos(2π u2)`` (Box–Muller). The result is float32 for every
    parameter dtype, so float32 and float64 parameters see the same stream.
    """
    w0, w1, _, _ = philox4x32_10(
        index & _LO, index >> _32, step & _LO, step >> _32, k0, k1
    )
    u1 = (np.float32(w0 >> _8) + _ONE) * _2POW_M24
    u2 = np.float32(w1 >> _8) * _2POW_M24
    return math.sqrt(_MINUS_TWO * math.log(u1)) * math.cos(_TWO_PI * u2)

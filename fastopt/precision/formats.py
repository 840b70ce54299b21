"""16-bit storage formats: bfloat16 and IEEE float16, held as uint16 bits.

Numba has no float16 on the CPU and knows nothing of ``ml_dtypes.bfloat16``, so a 16-bit
array reaches a kernel as a ``uint16`` view of the same memory, and these functions turn
its bits into float32 and back. Arithmetic is float32 throughout; only storage is 16-bit.

- bfloat16 is float32's top half: decoding is a shift; round-to-nearest-even adds
  ``0x7FFF`` plus the kept lowest bit before truncating (a NaN stays a quiet NaN).
- float16 conversions follow F. Giesen's branch-light float32 ↔ half routines
  ("half_to_float_fast5", "float_to_half_fast3_rtne", public domain): subnormals, infinities
  and NaN included, round-to-nearest-even, the same results as NumPy's ``astype``.
- Stochastic rounding (Gupta et al. 2015; Zamirai et al. 2020): a value ``x`` between two
  neighbours ``lo < x < hi`` becomes ``hi`` with probability ``(x − lo)/(hi − lo)``, so
  ``E[round(x)] = x`` and updates below half an ulp still move a value on average.
  For bfloat16 that is adding 16 random bits below the kept half and truncating.
"""

from __future__ import annotations

import numpy as np

from .._jit import inline, overload_inline
from . import bits
from .bits import f32_bits, f32_from_bits, select

_16 = np.uint32(16)
_13 = np.uint32(13)
_ONE = np.uint32(1)
_SIGN32 = np.uint32(0x80000000)
_SIGN16 = np.uint32(0x8000)
_ABS16 = np.uint32(0x7FFF)
_F32_INF = np.uint32(255 << 23)
_F16_MAX = np.uint32((127 + 16) << 23)  # 2**16: from here on a float16 is infinite
_DENORM_MAGIC = np.uint32(((127 - 15) + (23 - 10) + 1) << 23)
_F16_NORMAL_MIN = np.uint32(113 << 23)  # 2**-14
_REBIAS = np.uint32(((15 - 127) << 23) & 0xFFFFFFFF)
_HALF_ROUND = np.uint32(0xFFF)
_F16_INF = np.uint32(0x7C00)
_F16_NAN = np.uint32(0x7E00)
_EXP_MASK = np.uint32(0x0F800000)
_EXP_ADJUST = np.uint32((127 - 15) << 23)
_INF_ADJUST = np.uint32((128 - 16) << 23)
_DENORM_ADJUST = np.uint32(1 << 23)
_MAGIC_113 = np.uint32(113 << 23)
_F32_2POW_M24 = np.float32(2.0**-24)
_8 = np.uint32(8)


# --------------------------------------------------------------------------- bfloat16
# LLVM IR on 32-bit integers (``bits``): Numba's own integer code would widen them to 64.
bf16_to_f32 = bits.bf16_decode
f32_to_bf16 = bits.bf16_round
f32_to_bf16_stochastic = bits.bf16_round_stochastic


# --------------------------------------------------------------------------- float16
def f16_to_f32(u):
    """The float32 value of IEEE half bits ``u`` (exact; subnormals, ±∞ and NaN too).
    Compiled: one conversion instruction (``bits.f16_decode_ir``); this body, selects
    between the three cases (``bits.select``), is what plain Python and the CUDA
    simulator run."""
    h = np.uint32(u)
    o = ((h & _ABS16) << _13) + _EXP_ADJUST
    exp = (h << _13) & _EXP_MASK
    special = o + _INF_ADJUST  # Inf or NaN
    # zero or subnormal: renormalised through a float subtraction
    small = f32_bits(f32_from_bits(o + _DENORM_ADJUST) - f32_from_bits(_MAGIC_113))
    o = select(exp == _EXP_MASK, special, select(exp == 0, small, o))
    return f32_from_bits(o | ((h & _SIGN16) << _16))


def f32_to_f16(x):
    """``x`` rounded to the nearest IEEE half, ties to even, as uint16 bits. Compiled: one
    conversion instruction (``bits.f16_round_ir``); this body is plain Python's."""
    b = f32_bits(x)
    sign = b & _SIGN32
    b ^= sign
    big = select(b > _F32_INF, _F16_NAN, _F16_INF)  # overflow to ∞, or Inf/NaN
    # a subnormal half (or zero): the FPU rounds for us
    small = f32_bits(f32_from_bits(b) + f32_from_bits(_DENORM_MAGIC)) - _DENORM_MAGIC
    with np.errstate(over="ignore"):  # wraps (uint32) where b is too big: not selected
        normal = (b + _REBIAS + _HALF_ROUND + ((b >> _13) & _ONE)) >> _13
    o = select(b >= _F16_MAX, big, select(b < _F16_NORMAL_MIN, small, normal))
    return np.uint16(o | (sign >> _16))


@overload_inline(f16_to_f32)
def _f16_to_f32(u):
    return lambda u: bits.f16_decode_ir(np.uint16(u))


@overload_inline(f32_to_f16)
def _f32_to_f16(x):
    return lambda x: bits.f16_round_ir(np.float32(x))


@inline
def f32_to_f16_stochastic(x, r):
    """``x`` rounded stochastically to IEEE half with the random bits ``r`` (uint32): the
    nearest half ``y`` and its neighbour on ``x``'s other side bracket ``x``; the one
    farther from zero is taken with probability ``(|x| − |lo|)/(|hi| − |lo|)`` (24 random
    bits against that fraction). Past the largest half the value saturates there."""
    y = np.uint32(f32_to_f16(x))
    yf = f16_to_f32(y)
    mag = y & _ABS16
    ax = abs(x)
    above = abs(yf) > ax  # y is the upper neighbour (in magnitude)
    hi = select(above, mag, mag + _ONE)
    lo = select(above, mag - _ONE, mag)
    flo = f16_to_f32(lo)
    frac = (ax - flo) / (f16_to_f32(hi) - flo)
    up = np.float32(r >> _8) * _F32_2POW_M24 < frac
    rounded = select(up, hi, lo) | (y & _SIGN16)
    keep = (yf == x) | (x != x) | (mag >= _F16_INF)
    return np.uint16(select(keep, y, rounded))

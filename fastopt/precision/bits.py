"""Reinterpreting a float32's bits as a uint32 and back, on every backend.

The 16-bit and 8-bit formats are bit arithmetic on a float32's sign, exponent and
mantissa. Numba has no bit cast, so each direction is an ``intrinsic`` (one LLVM
``bitcast``, no instruction on the CPU or the GPU), reached through an ``overload`` whose
Python body is what the CUDA simulator and plain Python run.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from .._jit import overload_inline


def f32_bits(x):
    """The bits of ``float32(x)`` as a uint32."""
    return np.float32(x).view(np.uint32)


def f32_from_bits(u):
    """The float32 whose bits are ``uint32(u)``."""
    return np.uint32(u).view(np.float32)


def select(c, a, b):
    """``a if c else b`` for uint32 ``a`` and ``b``, as bit arithmetic: no branch and no
    phi for Numba's inliner (whose IR check warns on the ones a conditional expression
    makes), and a loop of them vectorises."""
    m = np.uint32(0xFFFFFFFF) * np.uint32(c)
    return np.uint32(b ^ ((a ^ b) & m))


@intrinsic
def _f32_to_u32(typingctx, x):
    if x != types.float32:
        return None
    return types.uint32(types.float32), (
        lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(32)))


@intrinsic
def _u32_to_f32(typingctx, u):
    if u != types.uint32:
        return None
    return types.float32(types.uint32), (
        lambda context, builder, sig, args: builder.bitcast(args[0], ir.FloatType()))


@overload_inline(f32_bits)
def _f32_bits(x):
    return lambda x: _f32_to_u32(np.float32(x))


@overload_inline(f32_from_bits)
def _f32_from_bits(u):
    return lambda u: _u32_to_f32(np.uint32(u))


def _select_impl(c, a, b):
    m = np.uint32(0xFFFFFFFF) * np.uint32(c)
    return np.uint32(np.uint32(b) ^ ((np.uint32(a) ^ np.uint32(b)) & m))


@overload_inline(select)
def _select(c, a, b):
    return _select_impl


# ----------------------------------------------------------------- 32-bit integer code
# Numba widens every integer operation to 64 bits, and LLVM keeps the widening in a
# vectorised loop: 64-bit lanes, and on AMD's Zen a microcoded 64-bit multiply. The hot
# bit-level helpers are therefore written as LLVM IR on i32 (and i16), each with its
# Python body for the simulator and plain Python.
_I32 = ir.IntType(32)
_I16 = ir.IntType(16)


def _c(v: int) -> ir.Constant:
    return ir.Constant(_I32, v)


_GOLDEN, _C1, _C2, _STEP, _STREAM = 0x9E3779B1, 0x85EBCA6B, 0xC2B2AE35, 0x27D4EB2F, 0x165667B1
_M32 = 0xFFFFFFFF


def hash_word(a, b, c, d, e, f):
    """MurmurHash3's finaliser of ``a·G + b·C2 + c + d·S + e·C1 + f·T`` (uint32
    arithmetic, wrapping): the random word of :func:`fastopt.precision.rounding.random_bits`."""
    h = (int(a) * _GOLDEN + int(b) * _C2 + int(c) + int(d) * _STEP + int(e) * _C1
         + int(f) * _STREAM) & _M32
    h ^= h >> 16
    h = (h * _C1) & _M32
    h ^= h >> 13
    h = (h * _C2) & _M32
    h ^= h >> 16
    return np.uint32(h)


@intrinsic
def _hash_word(typingctx, a, b, c, d, e, f):
    if any(t != types.uint32 for t in (a, b, c, d, e, f)):
        return None

    def codegen(context, builder, sig, args):
        a, b, c, d, e, f = args
        h = builder.add(builder.mul(a, _c(_GOLDEN)), builder.mul(b, _c(_C2)))
        h = builder.add(h, c)
        h = builder.add(h, builder.mul(d, _c(_STEP)))
        h = builder.add(h, builder.mul(e, _c(_C1)))
        h = builder.add(h, builder.mul(f, _c(_STREAM)))
        h = builder.xor(h, builder.lshr(h, _c(16)))
        h = builder.mul(h, _c(_C1))
        h = builder.xor(h, builder.lshr(h, _c(13)))
        h = builder.mul(h, _c(_C2))
        return builder.xor(h, builder.lshr(h, _c(16)))

    return types.uint32(a, b, c, d, e, f), codegen


@overload_inline(hash_word)
def _hash_word_ol(a, b, c, d, e, f):
    return lambda a, b, c, d, e, f: _hash_word(np.uint32(a), np.uint32(b), np.uint32(c),
                                               np.uint32(d), np.uint32(e), np.uint32(f))


def bf16_decode(u):
    """The float32 value of bfloat16 bits ``u``."""
    return (np.uint32(u) << np.uint32(16)).view(np.float32)


@intrinsic
def _bf16_decode(typingctx, u):
    if u != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        wide = builder.shl(builder.zext(args[0], _I32), _c(16))
        return builder.bitcast(wide, ir.FloatType())

    return types.float32(u), codegen


@overload_inline(bf16_decode)
def _bf16_decode_ol(u):
    return lambda u: _bf16_decode(np.uint16(u))


def bf16_round(x):
    """float32 ``x`` to the nearest bfloat16, ties to even (a NaN stays a quiet NaN)."""
    b = int(np.float32(x).view(np.uint32))
    if x != x:
        return np.uint16((b >> 16) | 0x40)
    return np.uint16(((b + 0x7FFF + ((b >> 16) & 1)) & _M32) >> 16)


@intrinsic
def _bf16_round(typingctx, x):
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        x = args[0]
        b = builder.bitcast(x, _I32)
        hi = builder.lshr(b, _c(16))
        t = builder.add(builder.add(b, _c(0x7FFF)), builder.and_(hi, _c(1)))
        nearest = builder.lshr(t, _c(16))
        nan = builder.fcmp_unordered("uno", x, x)
        out = builder.select(nan, builder.or_(hi, _c(0x40)), nearest)
        return builder.trunc(out, _I16)

    return types.uint16(x), codegen


@overload_inline(bf16_round)
def _bf16_round_ol(x):
    return lambda x: _bf16_round(np.float32(x))


def bf16_round_stochastic(x, r):
    """float32 ``x`` to bfloat16, stochastically: ``r``'s low 16 bits added below the kept
    half, then truncated; ±∞ and NaN keep their class."""
    b = int(np.float32(x).view(np.uint32))
    if (b & 0x7F800000) == 0x7F800000:
        return np.uint16((b >> 16) | (0x40 if x != x else 0))
    return np.uint16((b + (int(r) & 0xFFFF)) >> 16)


@intrinsic
def _bf16_round_stochastic(typingctx, x, r):
    if x != types.float32 or r != types.uint32:
        return None

    def codegen(context, builder, sig, args):
        x, r = args
        b = builder.bitcast(x, _I32)
        hi = builder.lshr(b, _c(16))
        nan = builder.fcmp_unordered("uno", x, x)
        special = builder.or_(hi, builder.select(nan, _c(0x40), _c(0)))
        rounded = builder.lshr(builder.add(b, builder.and_(r, _c(0xFFFF))), _c(16))
        is_special = builder.icmp_unsigned("==", builder.and_(b, _c(0x7F800000)),
                                           _c(0x7F800000))
        return builder.trunc(builder.select(is_special, special, rounded), _I16)

    return types.uint16(x, r), codegen


@overload_inline(bf16_round_stochastic)
def _bf16_round_stochastic_ol(x, r):
    return lambda x, r: _bf16_round_stochastic(np.float32(x), np.uint32(r))


def magnitude_max(m, x):
    """``max(m, bits of |x|)`` for a uint32 ``m`` and a float32 ``x``: float32 magnitudes
    order as their bits do, so a running maximum of these is the bits of ``max |x|``; a
    NaN's bits exceed infinity's, so a NaN is the maximum. In 32-bit integers, a loop of
    them vectorises at full width (the NumPy-scalar form widens to 64 bits)."""
    return np.uint32(max(int(m), int(np.float32(x).view(np.uint32)) & 0x7FFFFFFF))


@intrinsic
def _magnitude_max(typingctx, m, x):
    if m != types.uint32 or x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        m, x = args
        a = builder.and_(builder.bitcast(x, _I32), _c(0x7FFFFFFF))
        return builder.select(builder.icmp_unsigned(">", a, m), a, m)

    return types.uint32(m, x), codegen


@overload_inline(magnitude_max)
def _magnitude_max_ol(m, x):
    return lambda m, x: _magnitude_max(np.uint32(m), np.float32(x))


# ----------------------------------------------------------------- IEEE half, in hardware
# LLVM's half type: its conversions are single instructions on x86 with F16C (and on GPUs),
# exact, ties to even, as NumPy's astype. The Python bodies are in .formats.
@intrinsic
def f16_decode_ir(typingctx, u):
    """float32 of IEEE half bits ``u`` (uint16)."""
    if u != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(u), codegen


@intrinsic
def f16_round_ir(typingctx, x):
    """float32 ``x`` to the nearest IEEE half (ties to even), as uint16 bits."""
    if x != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), _I16)

    return types.uint16(x), codegen

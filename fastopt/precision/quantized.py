"""Blockwise 8-bit state: per block of :data:`QBLOCK` values, 256 codes and the block's
absolute maximum (float32).

Two code books:

- ``"dynamic"``: the dynamic map of Dettmers et al. (:mod:`.dynamic`), signed for state
  that takes both signs, unsigned for state that never goes below zero, as bitsandbytes'
  8-bit optimizers store them (``state_dtype="int8"``).
- ``"fp8"``: 8-bit floats scaled so the block's maximum is the format's largest value, as
  torchao's FP8 optimizers (``state_dtype="fp8"``): E4M3 (3 mantissa bits, max 448) for
  signed state, E5M2 (2 mantissa bits, 9.6 decades down from the maximum) for
  non-negative state such as second moments, where range matters more than precision.
  Encoding is bit arithmetic, as float32 → float16 rounding is (ties to even).

A step needs a block's new absolute maximum before it can encode any of its new values,
so the kernels step block by block: decode the block's state into float32 scratch rows,
step its elements as the float32 kernel does, then take each row's maximum and encode it.
Parameters and codes are each read and written once.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from .._jit import cpu_jit, inline, overload_inline
from .bits import f32_bits, f32_from_bits, magnitude_max, select
from .dynamic import QBLOCK, encode, tables

#: The code books, by state kind: ``(signed state, non-negative state)``.
BOOKS = {"dynamic": ("dynamic_signed", "dynamic_unsigned"), "fp8": ("e4m3", "e5m2")}
#: ``state_dtype="8bit"``: the 8-bit format measured fastest at the same accuracy
#: (docs/precision.md: fp8 Adam ~5.5 ms at 1e7 on 2 cores against the dynamic map's ~40 ms,
#: the same demo accuracy). "int8" keeps bitsandbytes' dynamic map, for parity.
DEFAULT_8BIT = "fp8"
#: The 8-bit ``state_dtype`` names and their kinds of :data:`BOOKS`.
EIGHT_BIT = {"int8": "dynamic", "fp8": "fp8", "8bit": DEFAULT_8BIT}


def book_for(state_dtype: str, sign: str) -> str:
    """The code book 8-bit state ``state_dtype`` keeps a state of ``State.sign`` in."""
    signed, nonneg = BOOKS[EIGHT_BIT[state_dtype]]
    return nonneg if sign == "nonnegative" else signed

#: (exponent bits, mantissa bits, bias, largest value) of the 8-bit floats.
FP8 = {"e4m3": (4, 3, 7, 448.0), "e5m2": (5, 2, 15, 57344.0)}


# --------------------------------------------------------------------------- fp8
def _fp8_constants(name: str) -> dict[str, int]:
    """The bit patterns of one 8-bit float's encode and decode (all uint32)."""
    e_bits, m_bits, bias, largest = FP8[name]
    return {
        "shift": 23 - m_bits,  # float32 mantissa bits dropped
        "half_minus_one": (1 << (22 - m_bits)) - 1,
        "rebias": (127 - bias) << m_bits,
        "normal_min": (127 - bias + 1) << 23,  # bits of the smallest normal
        "magic": ((127 - bias) + (23 - m_bits) + 1) << 23,
        "top": int(np.float32(largest).view(np.uint32)),
        "e_mask": (1 << e_bits) - 1,
        "m_bits": m_bits,
        "m_mask": (1 << m_bits) - 1,
        "exp_to_f32": 127 - bias,
        "unit": float(2.0 ** (1 - bias - m_bits)),  # a subnormal code's step
    }


def _fp8_functions(name: str) -> tuple[Callable, Callable]:
    """``(encode(y), decode(c))`` for one 8-bit float (``|y|`` at most its largest value:
    the block scale sees to that). Round to nearest, ties to even, as float32 → float16
    rounding: normal values by adding below the kept bits, subnormal ones by a float add
    that lets the FPU round. Python bodies for plain Python and the CUDA simulator; in
    compiled code, the same steps as LLVM IR on 32-bit integers (:func:`_fp8_ir`)."""
    k = _fp8_constants(name)

    def fp8_encode(y):
        b = int(np.float32(y).view(np.uint32))
        sign = (b & 0x80000000) >> 24
        a = min(b & 0x7FFFFFFF, k["top"])  # a rounding past the largest value; NaN too
        if a < k["normal_min"]:
            s = np.float32(np.uint32(a).view(np.float32)) + np.uint32(k["magic"]).view(
                np.float32)
            code = int(np.float32(s).view(np.uint32)) - k["magic"]
        else:
            code = ((a + k["half_minus_one"] + ((a >> k["shift"]) & 1)) >> k["shift"]) \
                - k["rebias"]
        return np.uint8(sign | code)

    def fp8_decode(c):
        c = int(c)
        e = (c >> k["m_bits"]) & k["e_mask"]
        m = c & k["m_mask"]
        sign = (c >> 7) << 31
        if e:
            bits = sign | ((e + k["exp_to_f32"]) << 23) | (m << k["shift"])
        else:
            bits = int(np.float32(np.float32(m) * np.float32(k["unit"])).view(np.uint32)) \
                | sign
        return np.uint32(bits).view(np.float32)

    fp8_encode.__name__ = f"{name}_encode"
    fp8_decode.__name__ = f"{name}_decode"
    return fp8_encode, fp8_decode


def _fp8_ir(name: str, encode_fn: Callable, decode_fn: Callable) -> None:
    """Compile ``encode_fn``/``decode_fn`` as LLVM IR on i32: written with NumPy scalars,
    Numba widens each integer step to 64 bits and a vectorised loop runs at half the lanes
    (measured: 1.3 cycles a decoded value, against 0.3 in 32 bits)."""
    k = _fp8_constants(name)
    i8, i16, i32, f32 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.FloatType()

    def c(v: int) -> ir.Constant:
        return ir.Constant(i32, v)

    @intrinsic
    def encode_ir(typingctx, y):
        if y != types.float32:
            return None

        def codegen(context, builder, sig, args):
            b = builder.bitcast(args[0], i32)
            sign = builder.lshr(builder.and_(b, c(0x80000000)), c(24))
            a = builder.and_(b, c(0x7FFFFFFF))
            a = builder.select(builder.icmp_unsigned(">", a, c(k["top"])), c(k["top"]), a)
            s = builder.fadd(builder.bitcast(a, f32), builder.bitcast(c(k["magic"]), f32))
            small = builder.sub(builder.bitcast(s, i32), c(k["magic"]))
            odd = builder.and_(builder.lshr(a, c(k["shift"])), c(1))
            normal = builder.add(builder.add(a, c(k["half_minus_one"])), odd)
            normal = builder.sub(builder.lshr(normal, c(k["shift"])), c(k["rebias"]))
            out = builder.select(builder.icmp_unsigned("<", a, c(k["normal_min"])), small,
                                 normal)
            return builder.trunc(builder.or_(sign, out), i8)

        return types.uint8(y), codegen

    @intrinsic
    def decode_ir(typingctx, code):
        if code != types.uint8:
            return None

        def codegen(context, builder, sig, args):
            # An 8-bit float is an IEEE half with fewer bits: E5M2 is a half's top byte,
            # E4M3 a half 2^8 times smaller (its exponent field 4 bits of the half's 5,
            # its mantissa the top 3 of 10), subnormals included. One half → float32
            # conversion (F16C on x86, cvt on GPUs) decodes either.
            w = builder.zext(args[0], i32)
            if name == "e5m2":
                half = builder.shl(w, c(8))
            else:
                half = builder.or_(builder.shl(builder.and_(w, c(0x80)), c(8)),
                                   builder.shl(builder.and_(w, c(0x7F)), c(7)))
            x = builder.fpext(builder.bitcast(builder.trunc(half, i16), ir.HalfType()), f32)
            return x if name == "e5m2" else builder.fmul(x, ir.Constant(f32, 256.0))

        return types.float32(code), codegen

    overload_inline(encode_fn)(lambda y: lambda y: encode_ir(np.float32(y)))
    overload_inline(decode_fn)(lambda c: lambda c: decode_ir(np.uint8(c)))


e4m3_encode, e4m3_decode = _fp8_functions("e4m3")
e5m2_encode, e5m2_decode = _fp8_functions("e5m2")
_fp8_ir("e4m3", e4m3_encode, e4m3_decode)
_fp8_ir("e5m2", e5m2_encode, e5m2_decode)


# --------------------------------------------------------------------------- blocks
@inline
def inverse(amax, largest):
    """``largest / amax``, or 0 for a block whose maximum is 0 or not finite (its codes are
    then 0, and its NaN or infinite maximum is what decodes)."""
    ok = (amax > 0) & (amax < np.inf)
    return f32_from_bits(select(ok, f32_bits(np.float32(largest) / amax), np.uint32(0)))


class BookCode(NamedTuple):
    """How compiled code reads and writes one code book: ``decode`` an expression of the
    code ``{c}`` (times the block scale: the value over ``largest``), ``encode`` one of the
    scaled value ``{y}`` in [−largest, largest]; ``table``: whether decoding reads a table
    (a loop of table reads does not vectorise here)."""

    decode: str
    encode: str
    largest: float
    table: bool


def book_code(book: str) -> BookCode:
    """The :class:`BookCode` of a code book (names in :func:`kernel_scope`)."""
    if book.startswith("dynamic"):
        signed = book == "dynamic_signed"
        t = 0 if signed else 3
        zero = "ZERO_S" if signed else "ZERO_U"
        return BookCode(f"qt[{t}][{{c}}]",
                        f"encode({{y}}, qt[{t + 1}], qt[{t + 2}], {zero}, {signed})", 1.0, True)
    return BookCode(f"{book}_decode({{c}})", f"{book}_encode({{y}})", FP8[book][3], False)


def kernel_scope() -> dict[str, object]:
    """The names :func:`book_code`'s expressions and a block loop use."""
    return {"encode": encode, "f32_bits": f32_bits, "f32_from_bits": f32_from_bits,
            "magnitude_max": magnitude_max,
            "inverse": inverse,
            "ZERO_S": np.int32(tables(True)[3]), "ZERO_U": np.int32(tables(False)[3]),
            **{f.__name__: f for f in (e4m3_encode, e4m3_decode, e5m2_encode, e5m2_decode)}}


@cache
def codec_tables() -> tuple[np.ndarray, ...]:
    """The kernels' ``qt``: the signed dynamic map's values, bucket table and midpoints,
    then the unsigned map's (a parallel loop takes a tuple of arrays)."""
    s, u = tables(True), tables(False)
    return (s[0], s[1], s[2], u[0], u[1], u[2])


def blocks(n: int) -> int:
    """Quantization blocks of an ``n``-value array."""
    return -(-n // QBLOCK)


# --------------------------------------------------------------------------- host side
def quantize(x: np.ndarray, book: str) -> tuple[np.ndarray, np.ndarray]:
    """``(codes, absmax)`` of a float32 array, blockwise, as the kernels store them (for
    checkpoints converted between state formats)."""
    x = np.asarray(x, np.float32).reshape(-1)
    codes = np.zeros(x.size, np.uint8)
    absmax = np.zeros(blocks(x.size), np.float32)
    _host_codec(book)[1](x, codes, absmax, codec_tables())
    return codes, absmax


def dequantize(codes: np.ndarray, absmax: np.ndarray, book: str) -> np.ndarray:
    """The float32 values ``codes`` and ``absmax`` stand for."""
    out = np.zeros(codes.size, np.float32)
    _host_codec(book)[0](codes, absmax, out, codec_tables())
    return out


@cache
def _host_codec(book: str) -> tuple[Callable, Callable]:
    """Compiled ``(decode_all(codes, absmax, out, qt), encode_all(x, codes, absmax, qt))``
    for one book, block by block as the kernels store it."""
    code = book_code(book)
    scale = np.float32(1.0 / code.largest)
    src = (
        "def decode_all(codes, absmax, out, qt):\n"
        "    for b in range(absmax.size):\n"
        "        lo = b * QBLOCK\n"
        "        a = absmax[b] * SCALE\n"
        "        for k in range(lo, min(lo + QBLOCK, codes.size)):\n"
        f"            out[k] = {code.decode.format(c='codes[k]')} * a\n"
        "def encode_all(x, codes, absmax, qt):\n"
        "    for b in range(absmax.size):\n"
        "        lo = b * QBLOCK\n"
        "        hi = min(lo + QBLOCK, x.size)\n"
        "        m = np.uint32(0)\n"
        "        for k in range(lo, hi):\n"
        "            m = magnitude_max(m, x[k])\n"
        "        amax = f32_from_bits(m)\n"
        "        inv = inverse(amax, LARGEST)\n"
        "        for k in range(lo, hi):\n"
        f"            codes[k] = {code.encode.format(y='x[k] * inv')}\n"
        "        absmax[b] = amax\n")
    scope = {"np": np, "QBLOCK": QBLOCK, "SCALE": scale,
             "LARGEST": np.float32(code.largest), **kernel_scope()}
    exec(src, scope)  # noqa: S102 - generated from the book's expressions
    return (cpu_jit(scope["decode_all"], cache=False),
            cpu_jit(scope["encode_all"], cache=False))

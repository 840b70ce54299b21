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

import numpy as np

from .._jit import compile_tree, device, device_function, inline
from ..drivers._state import unrolled
from .bits import f32_bits, f32_from_bits, select
from .dynamic import QBLOCK, encode, tables

#: The code books, by state kind: ``(signed state, non-negative state)``.
BOOKS = {"dynamic": ("dynamic_signed", "dynamic_unsigned"), "fp8": ("e4m3", "e5m2")}

#: (exponent bits, mantissa bits, bias, largest value) of the 8-bit floats.
FP8 = {"e4m3": (4, 3, 7, 448.0), "e5m2": (5, 2, 15, 57344.0)}


# --------------------------------------------------------------------------- fp8
def _fp8_functions(name: str) -> tuple[Callable, Callable]:
    """``(encode(y), decode(c))`` for one 8-bit float (``|y|`` at most its largest value:
    the block scale sees to that)."""
    e_bits, m_bits, bias, largest = FP8[name]
    shift = np.uint32(23 - m_bits)
    half_minus_one = np.uint32((1 << (22 - m_bits)) - 1)
    rebias = np.uint32((127 - bias) << m_bits)
    normal_min = np.uint32((127 - bias + 1) << 23)  # bits of the smallest normal
    magic = np.uint32(((127 - bias) + (23 - m_bits) + 1) << 23)
    top = np.uint32(f32_bits(np.float32(largest)))
    one = np.uint32(1)
    sign_shift = np.uint32(24)
    sign_mask = np.uint32(0x80000000)
    abs_mask = np.uint32(0x7FFFFFFF)
    e_mask = np.uint32((1 << e_bits) - 1)
    m_mask = np.uint32((1 << m_bits) - 1)
    m_shift = np.uint32(m_bits)
    unit = np.float32(2.0 ** (1 - bias - m_bits))  # a subnormal code's step
    exp_to_f32 = np.uint32(127 - bias)
    s23 = np.uint32(23)
    s31 = np.uint32(31)
    s7 = np.uint32(7)

    def fp8_encode(y):
        b = f32_bits(y)
        sign = (b & sign_mask) >> sign_shift
        a = b & abs_mask
        a = select(a > top, top, a)  # (a rounding past the largest value; NaN too)
        small = f32_bits(f32_from_bits(a) + f32_from_bits(magic)) - magic
        normal = (a + half_minus_one + ((a >> shift) & one)) >> shift
        normal = normal - rebias
        return np.uint8(sign | select(a < normal_min, small, normal))

    def fp8_decode(c):
        c = np.uint32(c)
        e = (c >> m_shift) & e_mask
        m = c & m_mask
        sign = (c >> s7) << s31
        normal = sign | ((e + exp_to_f32) << s23) | (m << shift)
        sub = f32_bits(np.float32(m) * unit) | sign
        return f32_from_bits(select(e != 0, normal, sub))

    fp8_encode.__name__ = f"{name}_encode"
    fp8_decode.__name__ = f"{name}_decode"
    return fp8_encode, fp8_decode


e4m3_encode, e4m3_decode = _fp8_functions("e4m3")
e5m2_encode, e5m2_decode = _fp8_functions("e5m2")
for _f in (e4m3_encode, e4m3_decode, e5m2_encode, e5m2_decode):
    inline(_f)


# --------------------------------------------------------------------------- blocks
@device
def absmax_bits(row, n):
    """The bits of ``max |row[:n]|``: float32 magnitudes order as their bits do, and an
    integer maximum vectorises where a float one (NaN rules) does not. A NaN's bits exceed
    infinity's, so a block holding a NaN has a NaN maximum, and decodes as NaN, as float32
    state would hold it."""
    m = np.uint32(0)
    for k in range(n):
        m = max(m, f32_bits(row[k]) & np.uint32(0x7FFFFFFF))
    return m


@inline
def inverse(amax, largest):
    """``largest / amax``, or 0 for a block whose maximum is 0 or not finite (its codes are
    then 0, and its NaN or infinite maximum is what decodes)."""
    ok = (amax > 0) & (amax < np.inf)
    return f32_from_bits(select(ok, f32_bits(np.float32(largest) / amax), np.uint32(0)))


def _book_io(book: str) -> tuple[str, str, float]:
    """Source of one state's decode and encode lines, and the book's largest value."""
    if book.startswith("dynamic"):
        signed = book == "dynamic_signed"
        t = "0" if signed else "3"
        dec = "row[k] = qt[" + t + "][st[lo + k]] * a"
        enc = (f"st[lo + k] = encode(row[k] * inv, qt[{int(t) + 1}], qt[{int(t) + 2}], "
               f"ZERO_{'S' if signed else 'U'}, {signed})")
        return dec, enc, 1.0
    return (f"row[k] = {book}_decode(st[lo + k]) * a",
            f"st[lo + k] = {book}_encode(row[k] * inv)", FP8[book][3])


@cache
def block_codec(books: tuple[str, ...]) -> tuple[Callable, Callable]:
    """``(decode(st, absmax, qt, rows, lo, n, b), encode(st, absmax, qt, rows, lo, n, b))``,
    compiled for the CPU, for state arrays stored in ``books`` (one per array): decode
    block ``b`` (its first value at ``lo``, ``n`` values) into the float32 ``rows``; encode
    ``rows`` back, with each row's new absolute maximum. ``qt``: :func:`codec_tables`."""
    lines_dec, lines_enc = [], []
    for j, book in enumerate(books):
        dec, enc, largest = _book_io(book)
        lines_dec.append(
            f"    st = sts[{j}]\n    row = rows[{j}]\n    a = absmax[{j}][b] * "
            f"np.float32({1.0 / largest!r})\n    for k in range(n):\n        {dec}\n")
        lines_enc.append(
            f"    st = sts[{j}]\n    row = rows[{j}]\n    amax = f32_from_bits(absmax_bits(row, n))"
            f"\n    inv = inverse(amax, {largest!r})\n    for k in range(n):\n        {enc}\n"
            f"    absmax[{j}][b] = amax\n")
    _, _, _, zs = tables(True)
    _, _, _, zu = tables(False)
    scope = {"np": np, "encode": encode, "f32_from_bits": f32_from_bits,
             "absmax_bits": absmax_bits, "inverse": inverse, "ZERO_S": np.int32(zs),
             "ZERO_U": np.int32(zu), **{f.__name__: f for f in (
                 e4m3_encode, e4m3_decode, e5m2_encode, e5m2_decode)}}
    params = "sts, absmax, qt, rows, lo, n, b"
    tag = "_".join(books)
    exec(f"def decode_{tag}({params}):\n" + "".join(lines_dec) + "    return\n"  # noqa: S102
         f"def encode_{tag}({params}):\n" + "".join(lines_enc) + "    return\n", scope)
    # Compiled functions, called once a block, not inlined: Numba's inliner loses the
    # value a loop carries (absmax_bits' maximum came out 0).
    return (compile_tree(device(scope[f"decode_{tag}"]), device_function),
            compile_tree(device(scope[f"encode_{tag}"]), device_function))


@cache
def rows_of(n: int) -> Callable:
    """``rows(new)``: the tuple of the ``n`` rows of a 2-D scratch block."""
    f = unrolled(n, "new", "return ({items})", "new[{k}], ")
    f.__name__ = f"rows_{n}"
    return inline(f)


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
    _host_codec(book)[1](x, codes, absmax)
    return codes, absmax


def dequantize(codes: np.ndarray, absmax: np.ndarray, book: str) -> np.ndarray:
    """The float32 values ``codes`` and ``absmax`` stand for."""
    out = np.zeros(codes.size, np.float32)
    _host_codec(book)[0](codes, absmax, out)
    return out


QT = None  # placeholder: the host codecs bind codec_tables() here


@cache
def _host_codec(book: str) -> tuple[Callable, Callable]:
    from .._jit import cpu_jit

    dec, enc = block_codec((book,))
    rows = rows_of(1)
    qt = codec_tables()

    def decode_all(codes, absmax, out):
        for b in range(absmax.size):
            lo = b * QBLOCK
            n = min(QBLOCK, codes.size - lo)
            dec((codes,), (absmax,), QT, rows(out[lo:lo + n].reshape(1, n)), lo, n, b)

    def encode_all(x, codes, absmax):
        for b in range(absmax.size):
            lo = b * QBLOCK
            n = min(QBLOCK, x.size - lo)
            enc((codes,), (absmax,), QT, rows(x[lo:lo + n].reshape(1, n)), lo, n, b)

    ns = {"QT": qt, "QBLOCK": QBLOCK}
    from .._jit import bind

    return (cpu_jit(bind(decode_all, f"decode_all_{book}", dec=dec, rows=rows, **ns),
                    cache=False),
            cpu_jit(bind(encode_all, f"encode_all_{book}", enc=enc, rows=rows, **ns),
                    cache=False))

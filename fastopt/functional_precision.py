"""The functional layer's precision path: 16-bit parameters and gradients, a float32
master copy, stochastic rounding and bfloat16 state, chosen by the arrays' dtypes.

``fastopt.functional``'s functions come here when an array is ``np.float16`` or
``ml_dtypes.bfloat16``, or a ``master`` copy is given: the same CPU kernels as the
optimizer classes (``drivers/cpu_precision.py``), with the same random bits for the same
``(rounding_seed, step, noise_offset + i)``. 8-bit state is a :class:`QuantizedState`
(codes, block maxima and code book) in place of a state array: the classes' blockwise
kernels, and their bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import parallel
from ._checks import half_dtypes
from .drivers import cpu, cpu_precision, is_device_array
from .precision import quantized
from .rules.transforms import direction_then_rule

_F32 = np.dtype(np.float32)
#: The 8-bit code books, and whether each holds negative values.
BOOK_SIGNED = {"e4m3": True, "e5m2": True, "dynamic_signed": True, "dynamic_unsigned": False}


@dataclass(frozen=True, eq=False)
class QuantizedState:
    """One 8-bit state array of the functional layer, stored blockwise as the optimizer
    classes' ``state_dtype="8bit"``/``"int8"`` store it (Dettmers et al. 2022): per block
    of 256 values, its absolute maximum ``a`` (float32) and one code each, value
    ``a · book[code] / largest``.

    ``codes``: uint8, shaped like the parameter; ``absmax``: float32, ``ceil(size / 256)``
    values, one per block of the flattened codes; ``book``: ``"e4m3"`` / ``"e5m2"`` (8-bit
    floats, ``state_dtype="8bit"``: E4M3 for signed state, E5M2 for non-negative), or
    ``"dynamic_signed"`` / ``"dynamic_unsigned"`` (bitsandbytes' dynamic map,
    ``state_dtype="int8"``). A step decodes, steps and re-encodes both arrays in place.
    :func:`fastopt.functional.init_state` makes them with the book each state takes.
    """

    codes: np.ndarray
    absmax: np.ndarray
    book: str

    @classmethod
    def full(cls, shape: int | tuple[int, ...], value: float, book: str) -> QuantizedState:
        """State of ``shape`` holding ``value`` everywhere (0 is exact in every book)."""
        _check_book(book)
        n = math.prod((shape,) if isinstance(shape, (int, np.integer)) else shape)
        return cls.from_values(np.full(n, value, np.float32).reshape(shape), book)

    @classmethod
    def from_values(cls, x: Any, book: str) -> QuantizedState:
        """``x`` (float32 after conversion) quantized: each block's maximum, each value's
        nearest code (ties to even for the 8-bit floats, to the lower code for the
        dynamic map)."""
        _check_book(book)
        x = np.asarray(x, np.float32)
        codes, absmax = quantized.quantize(x, book)
        return cls(codes.reshape(x.shape), absmax, book)

    def values(self) -> np.ndarray:
        """The float32 values the codes stand for, shaped like ``codes`` (a copy)."""
        return quantized.dequantize(np.ascontiguousarray(self.codes).reshape(-1),
                                    np.asarray(self.absmax), self.book).reshape(
                                        np.shape(self.codes))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.codes))

    @property
    def nbytes(self) -> int:
        return int(self.codes.nbytes + self.absmax.nbytes)


def _check_book(book: Any) -> None:
    if book not in BOOK_SIGNED:
        raise ValueError(f"book must be one of {sorted(BOOK_SIGNED)}, got {book!r}")


def wanted(ps: list, gs: list, sts: list, master: Any) -> bool:
    """Whether a call takes the precision path: a 16-bit array, 8-bit state or a master
    copy."""
    if master is not None:
        return True
    half = set(half_dtypes())
    states = [a for st in sts for a in st]
    if any(isinstance(a, QuantizedState) for a in states):
        return True
    return any(np.dtype(getattr(a, "dtype", np.float64)) in half for a in [*ps, *gs, *states])


def _fmt(a: np.ndarray) -> str:
    dt = np.dtype(a.dtype)
    return "plain" if dt == _F32 else dt.name


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16) if a.dtype.itemsize == 2 else a


def check(ps: list, gs: list, sts: list, masters: list, stochastic: bool,
          rounding_seed: Any, signs: tuple[str, ...]) -> None:
    """The arrays of a precision call, or a clear error before anything is written.
    ``signs``: each state array's ``State.sign`` (which 8-bit books can hold it)."""
    half = set(half_dtypes())
    ok_p = half | {_F32}
    many = len(ps) > 1
    if isinstance(rounding_seed, bool) or not isinstance(rounding_seed, (int, np.integer)) \
            or not 0 <= rounding_seed < 2**64:
        raise ValueError(f"rounding_seed must be an int in [0, 2**64), got {rounding_seed!r}")
    if not isinstance(stochastic, bool):
        raise ValueError(f"stochastic_rounding must be True or False, got {stochastic!r}")
    written: list[tuple[str, np.ndarray]] = []
    read: list[tuple[str, np.ndarray]] = []
    for j, (p, g, st, m) in enumerate(zip(ps, gs, sts, masters, strict=True)):
        at = f"[{j}]" if many else ""
        eight = [isinstance(s, QuantizedState) for s in st]
        if any(eight):
            _check_quantized(p, st, eight, signs, at)
        for what, a in (("p", p), ("g", g), *((f"state array {k}", s) for k, s in
                                              enumerate(st) if not eight[k]),
                        ("master", m)):
            if a is None:
                continue
            if type(a) is not np.ndarray:
                raise TypeError(f"{what}{at} must be a numpy.ndarray (16-bit arrays and "
                                f"master copies are host arrays), got {type(a).__name__}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{what}{at} is not C-contiguous; pass a contiguous copy")
            if a.shape != p.shape:
                raise ValueError(f"{what}{at} has shape {a.shape}, p{at} has {p.shape}")
            if what != "g" and not a.flags.writeable:
                raise ValueError(f"{what}{at} is read-only; the step writes it")
        if p.dtype not in ok_p or g.dtype not in ok_p:
            raise TypeError(f"p{at} and g{at} must be float32, float16 or bfloat16 here, got "
                            f"{p.dtype} and {g.dtype} (float64 steps take float64 throughout)")
        kinds = {np.dtype(s.dtype) for s in st if not isinstance(s, QuantizedState)}
        if kinds and not (kinds <= {_F32} or (len(kinds) == 1 and kinds <= half
                                               and next(iter(kinds)).name == "bfloat16")):
            raise TypeError(f"state arrays{at} must all be float32 or all ml_dtypes.bfloat16, "
                            f"got {sorted(k.name for k in kinds)}; 8-bit state is a "
                            "fastopt.functional.QuantizedState (codes and block maxima): "
                            "make it with fastopt.functional.init_state(..., "
                            "state_dtype='8bit')")
        if m is not None:
            if p.dtype not in half:
                raise ValueError(f"master{at}: a master copy is for 16-bit parameters; p{at} "
                                 f"is {p.dtype}")
            if m.dtype != _F32:
                raise TypeError(f"master{at} must be float32, got {m.dtype}")
            if stochastic:
                raise ValueError("stochastic_rounding with a master copy: the parameters are "
                                 "rounded to nearest from the copy; pass one of them")
        if stochastic and p.dtype not in half:
            raise ValueError(f"stochastic_rounding rounds 16-bit parameters; p{at} is {p.dtype}")
        written += [(f"p{at}", p), *((f"state array {k}{at}", s) for k, s in enumerate(st)
                                     if not eight[k]),
                    *((f"state array {k}{at}.{part}", getattr(s, part)) for k, s in
                      enumerate(st) if eight[k] for part in ("codes", "absmax"))]
        if m is not None:
            written.append((f"master{at}", m))
        read.append((f"g{at}", g))
    for i, (na, a) in enumerate(written):
        for nb, b in written[i + 1:] + read:
            if np.shares_memory(a, b):
                raise ValueError(f"{na} shares memory with {nb}; the step writes {na}, so "
                                 "give each array memory of its own")


def _check_quantized(p: np.ndarray, st: tuple, eight: list[bool], signs: tuple[str, ...],
                     at: str) -> None:
    """An entry's :class:`QuantizedState` arrays: all of its state 8-bit, each book able
    to hold its state, codes shaped like ``p`` and one block maximum per 256 of them."""
    if not all(eight):
        raise TypeError(f"state arrays{at}: some are QuantizedState and some are not; 8-bit "
                        "state holds all of a parameter's state (init_state makes it)")
    if type(p) is np.ndarray and p.dtype == np.float64:
        raise TypeError(f"8-bit state needs float32 or 16-bit parameters; p{at} is float64")
    for k, (s, sign) in enumerate(zip(st, signs, strict=True)):
        what = f"state array {k}{at}"
        _check_book(s.book)
        if sign == "exact":
            raise ValueError(f"{what} cannot be held in 8 bits (it keeps an average of the "
                             "parameters); use float32 or bfloat16 state")
        if sign == "signed" and not BOOK_SIGNED[s.book]:
            raise ValueError(f"{what} takes both signs; book {s.book!r} holds only values "
                             ">= 0 (use 'e4m3' or 'dynamic_signed')")
        for part, a, dtype in (("codes", s.codes, np.uint8), ("absmax", s.absmax, _F32)):
            if is_device_array(a) or type(a) is not np.ndarray:
                raise TypeError(f"{what}.{part} must be a numpy.ndarray (8-bit state runs on "
                                f"the CPU in the functional layer), got {type(a).__name__}")
            if a.dtype != dtype:
                raise TypeError(f"{what}.{part} must be {np.dtype(dtype).name}, got {a.dtype}")
            if not a.flags.c_contiguous or not a.flags.writeable:
                raise ValueError(f"{what}.{part} must be C-contiguous and writable (the step "
                                 "rewrites it)")
        if s.codes.shape != np.shape(p):
            raise ValueError(f"{what}.codes has shape {s.codes.shape}, p{at} has "
                             f"{np.shape(p)}")
        if s.absmax.shape != (quantized.blocks(s.codes.size),):
            raise ValueError(f"{what}.absmax has shape {s.absmax.shape}; {s.codes.size} codes "
                             f"take {quantized.blocks(s.codes.size)} block maxima (one per "
                             f"{quantized.QBLOCK})")


def run(rule_element: Any, direction: Any, ratio: Any, ps: list, gs: list, sts: list,
        masters: list, offsets: list, h: tuple, scale, wd, decay, nz, step: int,
        stochastic: bool, rounding_seed: int, noise_at: Any) -> None:
    """One step of each array through the precision kernels (a trust-ratio rule: its
    first pass, the ratio, then its whole step from the state before it)."""
    rnd_key = (int(rounding_seed) & 0xFFFFFFFF, int(rounding_seed) >> 32, step - 1)
    ct = np.empty(0, np.float32)
    step_rule = rule_element if direction is None else direction_then_rule(rule_element,
                                                                           direction)
    for p, g, st, m, off in zip(ps, gs, sts, masters, offsets, strict=True):
        pf, gf = _fmt(p), _fmt(g)
        books = None
        if st and isinstance(st[0], QuantizedState):
            books = tuple(s.book for s in st)
            sfmt, sk, am = "q8", tuple(s.codes.reshape(-1) for s in st), tuple(
                s.absmax for s in st)
        else:
            sfmt = "bfloat16" if st and st[0].dtype != _F32 else "plain"
            sk, am = tuple(_bits(s).reshape(-1) for s in st), ()
        qt = quantized.codec_tables() if books else ()
        pk, gk = _bits(p).reshape(-1), _bits(g).reshape(-1)
        mk = None if m is None else m.reshape(-1)
        nbytes = p.nbytes * 3 + sum(a.nbytes for a in sk) * 2
        par = nbytes >= parallel.PARALLEL_MIN_BYTES and parallel.get_num_threads() > 1
        rnd = (*rnd_key, int(off))
        hk = h
        nzj = noise_at(nz, off)
        if direction is not None:
            first = cpu_precision.trust_pass_kernel(direction, pf, gf, sfmt, len(sk),
                                                    m is not None, par, books)
            partials = np.empty(2 * cpu.blocks(pk.size), np.float64)
            sum_p, sum_u = first(pk, gk, sk, am, qt, mk, h, scale, wd, decay, nzj, rnd, ct,
                                 partials)
            hk = (*h, ratio(math.sqrt(sum_p), math.sqrt(sum_u)))
        kernel = cpu_precision.precision_kernel(step_rule, pf, gf, sfmt, len(sk),
                                                m is not None, stochastic, par, books)
        if books is None:
            kernel(pk, gk, sk, mk, hk, scale, wd, decay, nzj, rnd, ct)
        else:
            kernel(pk, gk, sk, am, qt, mk, hk, scale, wd, decay, nzj, rnd, ct)


__all__ = ["BOOK_SIGNED", "QuantizedState", "check", "run", "wanted"]

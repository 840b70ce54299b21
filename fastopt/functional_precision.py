"""The functional layer's precision path: 16-bit parameters and gradients, a float32
master copy, stochastic rounding and bfloat16 state, chosen by the arrays' dtypes.

``fastopt.functional``'s functions come here when an array is ``np.float16`` or
``ml_dtypes.bfloat16``, or a ``master`` copy is given: the same CPU kernels as the
optimizer classes (``drivers/cpu_precision.py``), with the same random bits for the same
``(rounding_seed, step, noise_offset + i)``. 8-bit state is a :class:`QuantizedState`
(codes, block maxima and code book) in place of a state array: the classes' blockwise
kernels, and their bits. GPU arrays (float32 or float16: CUDA arrays have no bfloat16
type) take the CUDA driver's precision kernels (``drivers/cuda_precision.py``).
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
from .precision.storage import as_kernel_array
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
        """The float32 values the codes stand for, shaped like ``codes`` (a host copy)."""
        codes, absmax = (_host(a) for a in (self.codes, self.absmax))
        return quantized.dequantize(codes.reshape(-1), absmax, self.book).reshape(
            codes.shape)

    @classmethod
    def to_device(cls, state: QuantizedState) -> QuantizedState:
        """A copy of ``state`` in GPU memory (Numba device arrays), for GPU parameters."""
        from numba import cuda

        return cls(cuda.to_device(np.ascontiguousarray(state.codes)),
                   cuda.to_device(np.ascontiguousarray(state.absmax)), state.book)

    @property
    def shape(self) -> tuple[int, ...]:
        """The codes' shape: the parameter's."""
        return tuple(self.codes.shape)

    @property
    def nbytes(self) -> int:
        """Bytes held: one per code, four per block maximum."""
        return int(self.codes.size) + 4 * int(self.absmax.size)


def _host(a: Any) -> np.ndarray:
    """``a`` as a contiguous host array (a GPU array copied back)."""
    if is_device_array(a):
        from .drivers import cuda_driver

        be = cuda_driver()
        return be.to_host(be.as_device_array(a, "QuantizedState"))
    return np.ascontiguousarray(a)


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
    return any(dtype_of(a) in half for a in [*ps, *gs, *states])


def dtype_of(a: Any) -> np.dtype | None:
    """``a``'s dtype as NumPy's, also for a GPU array whose library names its dtypes its
    own way (torch): from ``__cuda_array_interface__``. None where neither says."""
    dt = getattr(a, "dtype", None)
    try:
        return np.dtype(dt) if dt is not None else None
    except TypeError:
        try:
            return np.dtype(a.__cuda_array_interface__["typestr"])
        except Exception:  # noqa: BLE001 - not an array: the checks that follow say so
            return None


def _fmt(a: np.ndarray) -> str:
    dt = np.dtype(a.dtype)
    return "plain" if dt == _F32 else dt.name


class _Arrays:
    """How :func:`check` reads the arrays of one backend: host ndarrays, or (``be`` the
    CUDA driver) anything with ``__cuda_array_interface__``, as Numba device views."""

    def __init__(self, be: Any) -> None:
        self.be = be
        self.device = be is not cpu

    def array(self, a: Any, what: str) -> Any:
        """``a`` checked as a C-contiguous array of this backend (device: its view)."""
        if not self.device:
            if type(a) is not np.ndarray:
                raise TypeError(f"{what} must be a numpy.ndarray like the parameters, got "
                                f"{type(a).__name__}")
            if not a.flags.c_contiguous:
                raise ValueError(f"{what} is not C-contiguous; pass a contiguous copy")
            return a
        if not is_device_array(a):
            raise TypeError(f"{what} must be a GPU array like the parameters, got "
                            f"{type(a).__name__}")
        d = self.be.as_device_array(a, what)
        if not d.is_c_contiguous():
            raise ValueError(f"{what} is not C-contiguous; pass a contiguous copy")
        return d

    def writable(self, a: Any) -> bool:
        return self.device or a.flags.writeable

    def overlap(self, a: Any, b: Any) -> bool:
        return self.be.overlap(a, b) if self.device else np.shares_memory(a, b)


def check(ps: list, gs: list, sts: list, masters: list, stochastic: bool,
          rounding_seed: Any, signs: tuple[str, ...], be: Any = cpu
          ) -> tuple[list, list, list, list]:
    """The arrays of a precision call, or a clear error before anything is written:
    ``(ps, gs, sts, masters)`` as the kernels take them (GPU arrays as Numba views).
    ``signs``: each state array's ``State.sign`` (which 8-bit books can hold it); ``be``
    the driver of the parameters (GPU: float32 and float16 only, no bfloat16 type)."""
    half = set(half_dtypes()) if be is cpu else {np.dtype(np.float16)}
    ok_p = half | {_F32}
    many = len(ps) > 1
    arrays = _Arrays(be)
    if isinstance(rounding_seed, bool) or not isinstance(rounding_seed, (int, np.integer)) \
            or not 0 <= rounding_seed < 2**64:
        raise ValueError(f"rounding_seed must be an int in [0, 2**64), got {rounding_seed!r}")
    if not isinstance(stochastic, bool):
        raise ValueError(f"stochastic_rounding must be True or False, got {stochastic!r}")
    written: list[tuple[str, Any]] = []
    read: list[tuple[str, Any]] = []
    out: tuple[list, list, list, list] = ([], [], [], [])
    for j, (p, g, st, m) in enumerate(zip(ps, gs, sts, masters, strict=True)):
        at = f"[{j}]" if many else ""
        p, g = arrays.array(p, f"p{at}"), arrays.array(g, f"g{at}")
        m = None if m is None else arrays.array(m, f"master{at}")
        eight = [isinstance(s, QuantizedState) for s in st]
        if any(eight):
            st = _check_quantized(p, st, eight, signs, at, arrays)
        else:
            st = tuple(arrays.array(s, f"state array {k}{at}") for k, s in enumerate(st))
        for what, a in (("p", p), ("g", g), ("master", m),
                        *((f"state array {k}", s) for k, s in enumerate(st) if not eight[k])):
            if a is None:
                continue
            if tuple(a.shape) != tuple(p.shape):
                raise ValueError(f"{what}{at} has shape {tuple(a.shape)}, p{at} has "
                                 f"{tuple(p.shape)}")
            if what != "g" and not arrays.writable(a):
                raise ValueError(f"{what}{at} is read-only; the step writes it")
        if p.dtype not in ok_p or g.dtype not in ok_p:
            names = "float32, float16 or bfloat16" if be is cpu else (
                "float32 or float16 on a GPU (CUDA arrays have no bfloat16 type)")
            raise TypeError(f"p{at} and g{at} must be {names} here, got {p.dtype} and "
                            f"{g.dtype} (float64 steps take float64 throughout)")
        kinds = {np.dtype(s.dtype) for k, s in enumerate(st) if not eight[k]}
        if kinds and not (kinds <= {_F32} or (len(kinds) == 1 and kinds <= half
                                               and next(iter(kinds)).name == "bfloat16")):
            bf16 = " or all ml_dtypes.bfloat16" if be is cpu else " (on a GPU)"
            raise TypeError(f"state arrays{at} must all be float32{bf16}, "
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
        for lst, a in zip(out, (p, g, st, m), strict=True):
            lst.append(a)
    for i, (na, a) in enumerate(written):
        for nb, b in written[i + 1:] + read:
            if arrays.overlap(a, b):
                raise ValueError(f"{na} shares memory with {nb}; the step writes {na}, so "
                                 "give each array memory of its own")
    return out


def _check_quantized(p: Any, st: tuple, eight: list[bool], signs: tuple[str, ...],
                     at: str, arrays: _Arrays) -> tuple:
    """An entry's :class:`QuantizedState` arrays: all of its state 8-bit, each book able
    to hold its state, codes shaped like ``p`` and one block maximum per 256 of them.
    Returns them with their arrays as the kernels take them."""
    if not all(eight):
        raise TypeError(f"state arrays{at}: some are QuantizedState and some are not; 8-bit "
                        "state holds all of a parameter's state (init_state makes it)")
    if p.dtype == np.float64:
        raise TypeError(f"8-bit state needs float32 or 16-bit parameters; p{at} is float64")
    out = []
    for k, (s, sign) in enumerate(zip(st, signs, strict=True)):
        what = f"state array {k}{at}"
        _check_book(s.book)
        if sign == "exact":
            raise ValueError(f"{what} cannot be held in 8 bits (it keeps an average of the "
                             "parameters); use float32 or bfloat16 state")
        if sign == "signed" and not BOOK_SIGNED[s.book]:
            raise ValueError(f"{what} takes both signs; book {s.book!r} holds only values "
                             ">= 0 (use 'e4m3' or 'dynamic_signed')")
        parts = {}
        for part, dtype in (("codes", np.uint8), ("absmax", _F32)):
            a = arrays.array(getattr(s, part), f"{what}.{part}")
            if a.dtype != dtype:
                raise TypeError(f"{what}.{part} must be {np.dtype(dtype).name}, got {a.dtype}")
            if not arrays.writable(a):
                raise ValueError(f"{what}.{part} must be writable (the step rewrites it)")
            parts[part] = a
        codes, absmax = parts["codes"], parts["absmax"]
        if tuple(codes.shape) != tuple(p.shape):
            raise ValueError(f"{what}.codes has shape {tuple(codes.shape)}, p{at} has "
                             f"{tuple(p.shape)}")
        if tuple(absmax.shape) != (quantized.blocks(codes.size),):
            raise ValueError(f"{what}.absmax has shape {tuple(absmax.shape)}; {codes.size} "
                             f"codes take {quantized.blocks(codes.size)} block maxima (one "
                             f"per {quantized.QBLOCK})")
        out.append(QuantizedState(codes, absmax, s.book))
    return tuple(out)


def run(rule_element: Any, direction: Any, ratio: Any, ps: list, gs: list, sts: list,
        masters: list, offsets: list, h: tuple, scale, wd, decay, nz, step: int,
        stochastic: bool, rounding_seed: int, noise_at: Any, be: Any = cpu,
        stream: Any = None, dscale: Any = None) -> None:
    """One step of each array through the precision kernels (a trust-ratio rule: its
    first pass, the ratio, then its whole step from the state before it), on the CPU or
    (``be`` the CUDA driver, arrays as :func:`check` returns them) on ``stream``, where
    ``dscale`` may be a clip factor in device memory."""
    rnd_key = (int(rounding_seed) & 0xFFFFFFFF, int(rounding_seed) >> 32, step - 1)
    device = be is not cpu
    if device:
        from .drivers import cuda_precision

        ct, tables = cuda_precision.device_tables()
    else:
        ct, tables = np.empty(0, np.float32), quantized.codec_tables()
    step_rule = rule_element if direction is None else direction_then_rule(rule_element,
                                                                           direction)
    for p, g, st, m, off in zip(ps, gs, sts, masters, offsets, strict=True):
        pf, gf = _fmt(p), _fmt(g)
        books = None
        if st and isinstance(st[0], QuantizedState):
            books = tuple(s.book for s in st)
            sfmt, sk, am = "q8", tuple(_flat(be, s.codes) for s in st), tuple(
                s.absmax for s in st)
        else:
            sfmt = "bfloat16" if st and st[0].dtype != _F32 else "plain"
            sk, am = tuple(as_kernel_array(_flat(be, s)) for s in st), ()
        qt = tables if books else ()
        pk, gk = as_kernel_array(_flat(be, p)), as_kernel_array(_flat(be, g))
        mk = None if m is None else _flat(be, m)
        rnd = (*rnd_key, int(off))
        nzj = noise_at(nz, off)
        # the kernels' arguments after (p, g, state): CUDA's take the device clip factor
        tail = (scale, dscale, wd, decay, nzj, rnd, ct) if device else (
            scale, wd, decay, nzj, rnd, ct)
        hk = h
        if device:
            if direction is not None:
                first = cuda_precision.trust_pass_kernel(direction, pf, gf, sfmt, len(sk),
                                                         m is not None, books)
                sum_p, sum_u = cuda_precision.trust_sums(
                    first, pk.size, (pk, gk, sk, am, qt, mk, h, *tail), stream)
                hk = (*h, ratio(math.sqrt(sum_p), math.sqrt(sum_u)))
            kernel = cuda_precision.precision_kernel(step_rule, pf, gf, sfmt, len(sk),
                                                     m is not None, stochastic, books)
            args = ((pk, gk, sk, mk, hk, *tail) if books is None else
                    (pk, gk, sk, am, qt, mk, hk, *tail))
            cuda_precision.launch(kernel, books is not None, pk.size, args, stream)
            continue
        nbytes = p.nbytes * 3 + sum(a.nbytes for a in sk) * 2
        par = nbytes >= parallel.PARALLEL_MIN_BYTES and parallel.get_num_threads() > 1
        if direction is not None:
            first = cpu_precision.trust_pass_kernel(direction, pf, gf, sfmt, len(sk),
                                                    m is not None, par, books)
            partials = np.empty(2 * cpu.blocks(pk.size), np.float64)
            sum_p, sum_u = first(pk, gk, sk, am, qt, mk, h, *tail, partials)
            hk = (*h, ratio(math.sqrt(sum_p), math.sqrt(sum_u)))
        kernel = cpu_precision.precision_kernel(step_rule, pf, gf, sfmt, len(sk),
                                                m is not None, stochastic, par, books)
        if books is None:
            kernel(pk, gk, sk, mk, hk, *tail)
        else:
            kernel(pk, gk, sk, am, qt, mk, hk, *tail)


def _flat(be: Any, a: Any) -> Any:
    """A 1-D view of a contiguous array of driver ``be``."""
    return be.flat_view(a) if be is not cpu else a.reshape(-1)


__all__ = ["BOOK_SIGNED", "QuantizedState", "check", "dtype_of", "run", "wanted"]

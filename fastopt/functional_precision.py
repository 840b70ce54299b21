"""The functional layer's precision path: 16-bit parameters and gradients, a float32
master copy, stochastic rounding and bfloat16 state, chosen by the arrays' dtypes.

``fastopt.functional``'s functions come here when an array is ``np.float16`` or
``ml_dtypes.bfloat16``, or a ``master`` copy is given: the same CPU kernels as the
optimizer classes (``drivers/cpu_precision.py``), with the same random bits for the same
``(rounding_seed, step, noise_offset + i)``. 8-bit state needs its block maxima kept
beside the codes, which the optimizer classes do (``state_dtype="8bit"``); it is not a
functional call.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import parallel
from ._checks import half_dtypes
from .drivers import cpu, cpu_precision
from .rules.transforms import direction_then_rule

_F32 = np.dtype(np.float32)


def wanted(ps: list, gs: list, sts: list, master: Any) -> bool:
    """Whether a call takes the precision path: a 16-bit array, or a master copy."""
    if master is not None:
        return True
    half = set(half_dtypes())
    arrays = [*ps, *gs, *(a for st in sts for a in st)]
    return any(np.dtype(getattr(a, "dtype", np.float64)) in half for a in arrays)


def _fmt(a: np.ndarray) -> str:
    dt = np.dtype(a.dtype)
    return "plain" if dt == _F32 else dt.name


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16) if a.dtype.itemsize == 2 else a


def check(ps: list, gs: list, sts: list, masters: list, stochastic: bool,
          rounding_seed: Any) -> None:
    """The arrays of a precision call, or a clear error before anything is written."""
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
        for what, a in (("p", p), ("g", g), *((f"state array {k}", s) for k, s in
                                              enumerate(st)), ("master", m)):
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
        kinds = {np.dtype(s.dtype) for s in st}
        if kinds and not (kinds <= {_F32} or (len(kinds) == 1 and kinds <= half
                                               and next(iter(kinds)).name == "bfloat16")):
            raise TypeError(f"state arrays{at} must all be float32 or all ml_dtypes.bfloat16, "
                            f"got {sorted(k.name for k in kinds)}; 8-bit state keeps block "
                            "maxima beside its codes: use an optimizer class with "
                            "state_dtype='8bit'")
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
        written += [(f"p{at}", p), *((f"state array {k}{at}", s) for k, s in enumerate(st))]
        if m is not None:
            written.append((f"master{at}", m))
        read.append((f"g{at}", g))
    for i, (na, a) in enumerate(written):
        for nb, b in written[i + 1:] + read:
            if np.shares_memory(a, b):
                raise ValueError(f"{na} shares memory with {nb}; the step writes {na}, so "
                                 "give each array memory of its own")


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
        sfmt = "bfloat16" if st and st[0].dtype != _F32 else "plain"
        sk = tuple(_bits(s).reshape(-1) for s in st)
        pk, gk = _bits(p).reshape(-1), _bits(g).reshape(-1)
        mk = None if m is None else m.reshape(-1)
        nbytes = p.nbytes * 3 + sum(a.nbytes for a in sk) * 2
        par = nbytes >= parallel.PARALLEL_MIN_BYTES and parallel.get_num_threads() > 1
        rnd = (*rnd_key, int(off))
        hk = h
        nzj = noise_at(nz, off)
        if direction is not None:
            first = cpu_precision.trust_pass_kernel(direction, pf, gf, sfmt, len(sk),
                                                    m is not None, par)
            partials = np.empty(2 * cpu.blocks(pk.size), np.float64)
            sum_p, sum_u = first(pk, gk, sk, (), (), mk, h, scale, wd, decay, nzj, rnd, ct,
                                 partials)
            hk = (*h, ratio(math.sqrt(sum_p), math.sqrt(sum_u)))
        kernel = cpu_precision.precision_kernel(step_rule, pf, gf, sfmt, len(sk),
                                                m is not None, stochastic, par)
        kernel(pk, gk, sk, mk, hk, scale, wd, decay, nzj, rnd, ct)


__all__ = ["check", "run", "wanted"]

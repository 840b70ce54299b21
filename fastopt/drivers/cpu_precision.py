"""The CPU driver's precision kernels: 16-bit parameters and gradients, master weights,
stochastic rounding, bfloat16 and blockwise 8-bit state.

The same fused single pass as :mod:`fastopt.drivers.cpu`, with each read and write bound
to its storage format (:mod:`fastopt.precision.storage`): values are decoded to float32,
the rule (the same compiled element function, transforms included) runs in float32, and
results are rounded back. Random bits for stochastic rounding come from
``(seed, step, layout position, stream)`` (:mod:`fastopt.precision.rounding`): the same
at any thread count.

8-bit state runs block by block (:mod:`fastopt.precision.quantized`): a block's new
absolute maximum is known only once all its values are stepped.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
from numba import prange

from .. import parallel
from .._jit import bind, compile_tree, device_function, inline, source_tag
from ..precision import dynamic, formats, quantized, rounding, storage
from ..rules.transforms import transformed
from ._state import as_dtype_of, noise_args
from ._state import gather as state_gather
from ._state import scatter as state_scatter
from .cpu import _compiled

QBLOCK = dynamic.QBLOCK



def ELEMENT(p, g, s, h, scale, wd, decay, noise, index):  # noqa: N802 - placeholder
    raise NotImplementedError


def PLOAD(p, master, i):  # noqa: N802 - placeholder: storage.param_load, bound
    raise NotImplementedError


def PSTORE(p, master, i, w, r):  # noqa: N802 - placeholder: storage.param_store, bound
    raise NotImplementedError


def GLOAD(g, i):  # noqa: N802 - placeholder: a storage load
    raise NotImplementedError


def GATHER(st, i):  # noqa: N802 - placeholder: storage.state_codec's gather
    raise NotImplementedError


def SCATTER(st, i, s, k0, k1, step, pos):  # noqa: N802 - placeholder
    raise NotImplementedError


def BITS(k0, k1, step, pos, stream):  # noqa: N802 - placeholder: rounding.random_bits
    raise NotImplementedError


def QDECODE(sts, absmax, qt, rows, lo, n, b):  # noqa: N802 - quantized.block_codec's
    raise NotImplementedError


def QENCODE(sts, absmax, qt, rows, lo, n, b):  # noqa: N802 - quantized.block_codec's
    raise NotImplementedError


def ROWS(new):  # noqa: N802 - placeholder: quantized.rows_of
    raise NotImplementedError


def SGATHER(st, i):  # noqa: N802 - placeholder: _state.gather
    raise NotImplementedError


def SSCATTER(st, i, s):  # noqa: N802 - placeholder: _state.scatter
    raise NotImplementedError


def _precision_loop(p, g, st, master, h, scale, wd, decay, noise, rnd, ct):
    """One fused step over 16-bit (or 32-bit) parameters and gradients and plain or
    bfloat16 state; ``rnd = (k0, k1, step, position of element 0)`` for the rounding,
    ``ct`` an empty array of the compute dtype."""
    h_ = as_dtype_of(h, ct)
    scale_ = as_dtype_of(scale, ct)
    wd_ = as_dtype_of(wd, ct)
    decay_ = as_dtype_of(decay, ct)
    noise_ = noise_args(noise, ct)
    k0 = np.uint32(rnd[0])
    k1 = np.uint32(rnd[1])
    step = np.uint64(rnd[2])
    pos0 = np.uint64(rnd[3])
    for i in prange(p.size):
        idx = np.uint64(i)
        pos = pos0 + idx
        w, s = ELEMENT(PLOAD(p, master, i), GLOAD(g, i), GATHER(st, i), h_, scale_, wd_,
                       decay_, noise_, idx)
        PSTORE(p, master, i, w, BITS(k0, k1, step, pos, np.uint32(0)))
        SCATTER(st, i, s, k0, k1, step, pos)


def _quantized_loop(p, g, st, absmax, qt, master, h, scale, wd, decay, noise, rnd, ct):
    """One fused step with blockwise 8-bit state: ``st`` the codes, ``absmax`` each
    block's absolute maximum (both rewritten), ``qt`` the dynamic maps' tables. Per block:
    its state decoded into float32 rows, its elements stepped as in the float32 kernel
    (a loop that vectorises), the rows encoded back."""
    h_ = as_dtype_of(h, ct)
    scale_ = as_dtype_of(scale, ct)
    wd_ = as_dtype_of(wd, ct)
    decay_ = as_dtype_of(decay, ct)
    noise_ = noise_args(noise, ct)
    k0 = np.uint32(rnd[0])
    k1 = np.uint32(rnd[1])
    step = np.uint64(rnd[2])
    pos0 = np.uint64(rnd[3])
    nstate = len(st)
    nblocks = (p.size + QBLOCK - 1) // QBLOCK
    for b in prange(nblocks):
        lo = b * QBLOCK
        n = min(QBLOCK, p.size - lo)
        rows = ROWS(np.empty((nstate, QBLOCK), np.float32))
        QDECODE(st, absmax, qt, rows, lo, n, b)
        pb = p[lo:lo + n]
        gb = g[lo:lo + n]
        mb = master[lo:lo + n] if master is not None else None
        for k in range(n):
            idx = np.uint64(lo + k)
            w, s = ELEMENT(PLOAD(pb, mb, k), GLOAD(gb, k), SGATHER(rows, k), h_, scale_, wd_,
                           decay_, noise_, idx)
            PSTORE(pb, mb, k, w, BITS(k0, k1, step, pos0 + idx, np.uint32(0)))
            SSCATTER(rows, k, s)
        QENCODE(st, absmax, qt, rows, lo, n, b)


@cache
def _tag() -> str:
    """The precision package's and this module's sources, in the kernels' names (Numba
    keys its disk cache on this file alone)."""
    from .. import precision
    from . import cpu_precision

    return source_tag(precision, cpu_precision)


@cache
def _param_io(pfmt: str, gfmt: str, master: bool, rounding_: bool) -> dict[str, Callable]:
    load = storage.LOADS[pfmt]
    store = storage.STORES[(pfmt, rounding_ and pfmt != "plain" and not master)]
    pload, pstore = ((storage.master_load, storage.master_store) if master else
                     (storage.param_load, storage.param_store))
    tag = f"{pfmt}_{int(master)}_{int(rounding_)}"
    return {
        "PLOAD": inline(bind(pload, f"param_load_{tag}", LOAD=load)),
        "PSTORE": inline(bind(pstore, f"param_store_{tag}", STORE=store)),
        "GLOAD": storage.LOADS[gfmt],
        "BITS": rounding.random_bits,
    }


@cache
def precision_kernel(rule: Callable, pfmt: str, gfmt: str, sfmt: str, nstate: int,
                     master: bool, stochastic: bool, par: bool,
                     books: tuple[str, ...] | None = None) -> Callable:
    """The compiled step for ``rule`` with parameters stored as ``pfmt`` and gradients as
    ``gfmt`` (``"plain"``, ``"bfloat16"``, ``"float16"``), ``nstate`` state arrays stored
    as ``sfmt`` (``"plain"`` or ``"bfloat16"``; or 8-bit, one code book per array, as
    ``books`` says: :data:`fastopt.precision.quantized.BOOKS`), with a float32 master copy of
    the parameters or not, the parameter rounded stochastically or not (without a master
    copy); serial or parallel."""
    io = _param_io(pfmt, gfmt, master, stochastic)
    element = compile_tree(transformed(rule), device_function)
    fmt = "_".join(books) if books is not None else f"{sfmt}{nstate}"
    name = f"precision_{rule.__name__}_{pfmt}_{gfmt}_{fmt}_{int(master)}{int(stochastic)}_{_tag()}"
    if books is not None:
        decode, encode = quantized.block_codec(books)
        return _compiled(_quantized_loop, name, par, ELEMENT=element, QDECODE=decode,
                         QENCODE=encode, ROWS=quantized.rows_of(len(books)), SGATHER=state_gather,
                         SSCATTER=state_scatter, **io)
    gather, scatter = storage.state_codec(sfmt, nstate)
    return _compiled(_precision_loop, name, par, ELEMENT=element, GATHER=gather,
                     SCATTER=scatter, **io)


def run(kernel_pair: tuple[Callable, Callable], choice: parallel.Choice | None, args: tuple,
        nbytes: int) -> None:
    """Run a precision kernel, serial or parallel as :mod:`fastopt.parallel` chooses."""
    serial, par = kernel_pair
    if par is None or choice is None:
        serial(*args)
    else:
        parallel.run(choice, serial, par, args, nbytes)


__all__ = ["precision_kernel", "run", "formats"]

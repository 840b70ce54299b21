"""The sharded step's own kernels: the ordered mean of the ranks' gradients, and the
global norm from every rank's block partials.

Both fix the order of their floating-point operations, so their bits do not depend on the
number of threads, on the MPI library, or on how the values were split among ranks.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from numba import prange

from .. import parallel
from .._jit import bind, cpu_jit
from ..drivers import cpu
from ..precision import storage

#: Values summed per task of the mean: a block of each rank's slice stays in L1 cache.
MEAN_BLOCK = 2048


def _mean_loop(recv, own, me, out, divisor):
    """``out[i] = ((x0[i] + x1[i]) + x2[i] + ...) / divisor``: the ranks' values summed in
    rank order, then divided once; ``x_r`` is row r of ``recv``, but this rank's (``me``)
    is ``own``, read where it lies (never copied into ``recv``). Each task sums a block of
    the rows through 1-D slices, which vectorise (2-D indexing in the loops did not: 5x
    slower)."""
    ranks = recv.shape[0]
    n = out.size
    for b in prange((n + MEAN_BLOCK - 1) // MEAN_BLOCK):
        lo = b * MEAN_BLOCK
        hi = min(lo + MEAN_BLOCK, n)
        o = out[lo:hi]
        x = own[lo:hi] if me == 0 else recv[0, lo:hi]
        for i in range(o.size):
            o[i] = x[i]
        for r in range(1, ranks):
            x = own[lo:hi] if r == me else recv[r, lo:hi]
            for i in range(o.size):
                o[i] += x[i]
        for i in range(o.size):
            o[i] = o[i] / divisor


def _coded_mean_loop(recv, own, me, out, divisor):
    """:func:`_mean_loop` for 16-bit values (their uint16 bits): decoded, summed in
    float32 in rank order, divided, and rounded to nearest once."""
    ranks = recv.shape[0]
    n = out.size
    for b in prange((n + MEAN_BLOCK - 1) // MEAN_BLOCK):
        lo = b * MEAN_BLOCK
        hi = min(lo + MEAN_BLOCK, n)
        acc = np.empty(hi - lo, np.float32)
        x = own[lo:hi] if me == 0 else recv[0, lo:hi]
        for i in range(acc.size):
            acc[i] = LOAD(x, i)
        for r in range(1, ranks):
            x = own[lo:hi] if r == me else recv[r, lo:hi]
            for i in range(acc.size):
                acc[i] += LOAD(x, i)
        o = out[lo:hi]
        for i in range(acc.size):
            STORE(o, i, acc[i] / divisor, 0)


def LOAD(a, i):  # noqa: N802 - placeholder, bound to precision.storage.LOADS[format]
    raise NotImplementedError


def STORE(a, i, x, r):  # noqa: N802 - placeholder, bound to precision.storage.STORES
    raise NotImplementedError


@cache
def mean_kernels(fmt: str = "plain") -> tuple:
    """The (serial, parallel) compiled mean for values stored as ``fmt``: ``"plain"``
    (float32, float64: :func:`_mean_loop`), ``"bfloat16"`` or ``"float16"``
    (:func:`_coded_mean_loop`)."""
    if fmt == "plain":
        return tuple(cpu_jit(bind(_mean_loop, f"rank_mean_{'parallel' if p else 'serial'}"),
                             parallel=p) for p in (False, True))
    return tuple(cpu_jit(bind(_coded_mean_loop,
                              f"rank_mean_{fmt}_{'parallel' if p else 'serial'}",
                              LOAD=storage.LOADS[fmt], STORE=storage.STORES[(fmt, False)]),
                         parallel=p) for p in (False, True))


_mean_choice = parallel.Choice()


def ordered_mean(recv: np.ndarray, own: np.ndarray, me: int, out: np.ndarray,
                 divisor: float) -> None:
    """``out`` = the rows of ``recv`` (one per rank; row ``me`` is ``own`` instead) summed
    in rank order, divided by ``divisor`` (in their dtype; 16-bit values in float32, then
    rounded to nearest). ``recv``: C-contiguous ``(ranks, n)``, of ``out``'s dtype."""
    fmt = "plain" if out.dtype.itemsize > 2 else (
        "float16" if out.dtype == np.float16 else "bfloat16")
    serial, par = mean_kernels(fmt)
    if fmt == "plain":
        args = (recv, own, me, out, out.dtype.type(divisor))
    else:
        args = (recv.view(np.uint16), own.view(np.uint16), me, out.view(np.uint16),
                np.float32(divisor))
    parallel.run(_mean_choice, serial, par, args, recv.nbytes + out.nbytes)


def _combine(partials, blocks):
    """The one-process sum of squares from its block partials in layout order:
    ``blocks[i]`` partials per segment, combined as ``drivers.cpu.sum_of_squares``
    combines a segment's, the segments' totals added as ``drivers.cpu.clip_or_skip`` adds
    them (the same compiled functions)."""
    total = 0.0
    b = 0
    for i in range(blocks.size):
        total = ADD_TOTALS(total, COMBINE_BLOCKS(partials, b, b + blocks[i]))
        b += blocks[i]
    return total


def COMBINE_BLOCKS(partials, lo, hi):  # noqa: N802 - placeholder: drivers.cpu's
    raise NotImplementedError


def ADD_TOTALS(a, b):  # noqa: N802 - placeholder: rules.transforms.add_totals, compiled
    raise NotImplementedError


@cache
def combine_kernel():
    """The compiled :func:`_combine`."""
    combine_blocks, add_totals = cpu.combine_functions()
    return cpu_jit(bind(_combine, "combine_partials", COMBINE_BLOCKS=combine_blocks,
                        ADD_TOTALS=add_totals))


def combine(partials: np.ndarray, blocks: np.ndarray) -> float:
    """The reported sum of squares (``rules.transforms.reported``) of the whole model's
    gradient, from its float64 block partials in layout order and the number of blocks
    of each segment."""
    return combine_kernel()(partials, blocks)

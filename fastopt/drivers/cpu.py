"""The CPU driver: one fused pass per step, parallel over elements with ``prange``.

For each element the loop reads the gradient, the parameter and the rule's state once,
applies the common transforms in the order of ``docs/equations.md`` (maximize and clipping as
one scale, then the gradient noise, then L2 weight decay, or the decoupled decay of the
parameter) and the rule, and writes parameter and state once. Nothing else touches memory.

Each rule gets its own compiled copy of :func:`_step_loop` (``fastopt._jit.bind``),
compiled lazily on first use, as a serial kernel and as a parallel one; which of the two a
call runs is :mod:`fastopt.parallel`'s choice, by measured speed (both compute the same
bits). Optional transforms are passed as
``None`` to switch them off: numba prunes ``if x is not None`` at compile time, so the
plain step carries no noise or weight-decay code.

The global gradient norm is a fixed-block reduction: float64 partial sums over blocks of
:data:`BLOCK` elements (computed in parallel), combined serially in block order, so the
result has the same bits at any thread count.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

import numpy as np
from numba import prange

from .. import parallel, philox, rules
from .._checks import check_grad_array, check_param_array
from .._jit import bind, compile_tree, cpu_jit, device_function, source_tag
from .._memory import aligned_empty
from ..rules.transforms import (
    INF_SEEN,
    NAN_SEEN,
    add_totals,
    flags_of,
    nonfinite,
    norm_scale,
    reported,
    transformed,
    trust_direction,
)
from . import _state as _state_module
from ._state import as_dtype_of, gather, noise_args, scatter, state_slice

#: A host driver (``drivers.interface.HostDriver``): launches run to completion.
ON_DEVICE = False

#: Elements per block of the norm reduction (float64 partial per block).
BLOCK = 4096


def ELEMENT(p, g, s, h, scale, wd, decay, noise, index):  # noqa: N802 - placeholder
    raise NotImplementedError  # bound to a compiled rules.transformed(rule) per kernel


def REPORTED(total, flags):  # noqa: N802 - placeholder, bound to rules.transforms.reported
    raise NotImplementedError


def FLAGS_OF(total):  # noqa: N802 - placeholder, bound to rules.transforms.flags_of
    raise NotImplementedError


def _step_loop(p, g, st, h, scale, wd, decay, noise):
    h_ = as_dtype_of(h, p)
    scale_ = as_dtype_of(scale, p)
    wd_ = as_dtype_of(wd, p)
    decay_ = as_dtype_of(decay, p)
    noise_ = noise_args(noise, p)
    for i in prange(p.size):
        pi, s = ELEMENT(p[i], g[i], gather(st, i), h_, scale_, wd_, decay_, noise_,
                        np.uint64(i))
        p[i] = pi
        scatter(st, i, s)


def TRUST(p, g, s, h, scale, wd, decay, noise, index):  # noqa: N802 - placeholder
    raise NotImplementedError  # bound to rules.transforms.trust_direction(rule.direction)


def _trust_loop(p, g, st, h, scale, wd, decay, noise, partials):
    """A trust-ratio rule's first pass: each element's direction u and state after the
    step (written), and ``(Σ w², Σ u²)`` in float64 over fixed blocks, combined in block
    order (``partials``: 2 per block). Per block, through slices (indices Numba knows are
    not negative), the elements' u (and w, where a decoupled decay makes it differ from p)
    go to a scratch block, then :func:`_sumsq_range` sums them: two loops that vectorise,
    where one loop with the sums in it would wait on every add (4-5x the time here)."""
    h_ = as_dtype_of(h, p)
    scale_ = as_dtype_of(scale, p)
    wd_ = as_dtype_of(wd, p)
    decay_ = as_dtype_of(decay, p)
    noise_ = noise_args(noise, p)
    nblocks = partials.size // 2
    for b in prange(nblocks):
        lo = b * BLOCK
        hi = min(lo + BLOCK, p.size)
        pb = p[lo:hi]
        gb = g[lo:hi]
        sb = state_slice(st, lo, hi)
        u = np.empty(hi - lo, p.dtype)
        w = np.empty(hi - lo if decay is not None else 0, p.dtype)
        for k in range(hi - lo):
            wk, uk, s = TRUST(pb[k], gb[k], gather(sb, k), h_, scale_, wd_, decay_, noise_,
                              np.uint64(lo + k))
            scatter(sb, k, s)
            u[k] = uk
            if decay is not None:
                w[k] = wk
        if decay is not None:
            partials[2 * b] = SUMSQ_RANGE(w, 0, hi - lo)
        else:
            partials[2 * b] = SUMSQ_RANGE(p, lo, hi)
        partials[2 * b + 1] = SUMSQ_RANGE(u, 0, hi - lo)
    total_p = 0.0
    total_u = 0.0
    for b in range(nblocks):
        total_p += partials[2 * b]
        total_u += partials[2 * b + 1]
    return total_p, total_u


def _sumsq_range(x, lo, hi):
    """``Σ x[lo:hi]²`` in float64: eight independent chains, then the tail (a fixed order:
    the same bits wherever it runs). Through a slice, whose indices Numba knows are not
    negative: indexing ``x`` from ``lo`` would check each index for wrap-around, and the
    loop would not vectorise (twice the time here)."""
    y = x[lo:hi]
    n = y.size
    n8 = n - n % 8
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    for j in range(0, n8, 8):
        a0 = np.float64(LOAD(y, j))
        a1 = np.float64(LOAD(y, j + 1))
        a2 = np.float64(LOAD(y, j + 2))
        a3 = np.float64(LOAD(y, j + 3))
        a4 = np.float64(LOAD(y, j + 4))
        a5 = np.float64(LOAD(y, j + 5))
        a6 = np.float64(LOAD(y, j + 6))
        a7 = np.float64(LOAD(y, j + 7))
        s0 += a0 * a0
        s1 += a1 * a1
        s2 += a2 * a2
        s3 += a3 * a3
        s4 += a4 * a4
        s5 += a5 * a5
        s6 += a6 * a6
        s7 += a7 * a7
    for j in range(n8, n):
        a0 = np.float64(LOAD(y, j))
        s0 += a0 * a0
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


def SUMSQ_RANGE(x, lo, hi):  # noqa: N802 - placeholder, bound to the compiled _sumsq_range
    raise NotImplementedError


def LOAD(a, i):  # noqa: N802 - placeholder: how an element is read (16-bit: decoded)
    raise NotImplementedError


def _load(a, i):
    """An element as stored (float32, float64)."""
    return a[i]


def _sumsq_loop(x, partials):
    nblocks = partials.size
    for b in prange(nblocks):
        lo = b * BLOCK
        hi = min(lo + BLOCK, x.size)
        s = SUMSQ_RANGE(x, lo, hi)
        flags = 0
        if not math.isfinite(s):
            # Tell a NaN input and an infinite one from a float64 overflow of finite inputs
            # (rules.transforms.reported)
            for k in range(lo, hi):
                xk = LOAD(x, k)
                if math.isnan(xk):
                    flags |= NAN_SEEN
                elif math.isinf(xk):
                    flags |= INF_SEEN
        partials[b] = REPORTED(s, flags)
    return COMBINE_BLOCKS(partials, 0, nblocks)


def _combine_blocks(partials, lo, hi):
    """The reported sum of squares of block partials ``lo`` to ``hi`` (each reported, see
    ``rules.transforms.reported``), added serially in block order: the same bits at any
    thread count, and wherever the partials were computed (``fastopt.distributed``
    combines every rank's with it)."""
    total = 0.0
    flags = 0
    for b in range(lo, hi):
        f = FLAGS_OF(partials[b])
        flags |= f
        if f == 0:
            total += partials[b]
    return REPORTED(total, flags)


def COMBINE_BLOCKS(partials, lo, hi):  # noqa: N802 - placeholder, bound to _combine_blocks
    raise NotImplementedError


@cache
def combine_functions() -> tuple[Callable, Callable]:
    """Compiled ``(combine_blocks(partials, lo, hi), add_totals(a, b))``: how a reduction's
    block partials make one array's total, and how arrays' totals add up
    (:func:`clip_or_skip`)."""
    flags_of_, reported_ = device_function(flags_of), device_function(reported)
    return (device_function(bind(_combine_blocks, FLAGS_OF=flags_of_, REPORTED=reported_)),
            device_function(bind(add_totals, flags_of=flags_of_, reported=reported_)))


@cache
def _tag() -> str:
    return source_tag(rules, philox, _state_module)


def _compiled(template: Callable, name: str, parallel: bool, **binds: Callable) -> Callable:
    """``template`` with ``binds`` compiled for the CPU, serial or parallel, named
    ``<name>_<serial|parallel>_<source tag>`` (what the disk cache is keyed on)."""
    mode = "parallel" if parallel else "serial"
    return cpu_jit(bind(template, f"{name}_{mode}_{_tag()}", **binds), parallel=parallel)


@cache
def step_kernel(rule: Callable, parallel: bool) -> Callable:
    """The compiled step loop for ``rule`` (compiled on first call, then cached on disk)."""
    return _compiled(_step_loop, f"step_{rule.__name__}", parallel,
                     ELEMENT=compile_tree(transformed(rule), device_function))


@cache
def trust_kernel(direction: Callable, parallel: bool) -> Callable:
    """The compiled first pass of a trust-ratio rule (:func:`_trust_loop`)."""
    return _compiled(_trust_loop, f"trust_{direction.__name__}", parallel,
                     TRUST=compile_tree(trust_direction(direction), device_function),
                     SUMSQ_RANGE=sumsq_range())


@cache
def sumsq_kernel(parallel: bool, load: Callable | None = None, name: str = "sumsq"
                 ) -> Callable:
    """The blocked sum of squares; ``load(a, i)``: how an element is read (16-bit
    gradients: decoded to float32; ``name`` then says which, with the source tag of what
    it binds)."""
    return _compiled(_sumsq_loop, name, parallel, REPORTED=device_function(reported),
                     LOAD=device_function(load or _load), SUMSQ_RANGE=sumsq_range(load),
                     COMBINE_BLOCKS=combine_functions()[0])


@cache
def sumsq_range(load: Callable | None = None) -> Callable:
    """The compiled :func:`_sumsq_range`, reading elements with ``load`` (default: as
    stored)."""
    return device_function(bind(_sumsq_range, LOAD=device_function(load or _load)))


def step_bytes(p: np.ndarray, n_state: int) -> int:
    """Bytes a step moves: p, g and the state read, p and the state written."""
    return p.nbytes * (3 + 2 * n_state)


def step(rule, p, g, state, consts, scale, wd, decay, noise) -> None:
    """Run one fused step of ``rule`` over the 1-D arrays ``p``, ``g`` and ``state``.

    Scalars are Python floats (``consts``: a tuple of them; ``wd`` may be None), converted
    to the parameter's dtype inside the kernel; ``noise`` is ``(sigma, offset, step, k0,
    k1)`` (a float and four ints) or None. Serial or parallel: a
    :class:`fastopt.parallel.Choice` per rule and array size.
    """
    args = (p, g, state, consts, scale, wd, decay, noise)
    nbytes = step_bytes(p, len(state))
    if nbytes < parallel.PARALLEL_MIN_BYTES:
        step_kernel(rule, False)(*args)
        return
    parallel.run(parallel.choice_for((rule, p.size, p.dtype.char)), step_kernel(rule, False),
                 step_kernel(rule, True), args, nbytes)


def trust_sums(direction, p, g, state, consts, scale, wd, decay, noise) -> tuple[float, float]:
    """The first pass of a trust-ratio rule over 1-D arrays (scalars as :func:`step`):
    the state after the step is written; returns ``(Σ w², Σ u²)`` in float64, with the
    same bits at any thread count."""
    partials = np.empty(2 * blocks(p.size), np.float64)
    args = (p, g, state, consts, scale, wd, decay, noise, partials)
    nbytes = step_bytes(p, len(state))
    if nbytes < parallel.PARALLEL_MIN_BYTES:
        return trust_kernel(direction, False)(*args)
    return parallel.run(parallel.choice_for(("trust", direction, p.size, p.dtype.char)),
                        trust_kernel(direction, False), trust_kernel(direction, True), args,
                        nbytes)


def blocks(n: int) -> int:
    """Number of reduction blocks for ``n`` elements."""
    return -(-n // BLOCK)


def sum_of_squares(x: np.ndarray, partials: np.ndarray,
                   kernels: tuple[Callable, Callable] | None = None) -> float:
    """``Σ x²`` in float64 over a 1-D array, deterministically; NaN if any x is NaN, else
    −∞ if any is infinite (+∞ only when finite values overflow; see
    ``rules.transforms.norm_of``).

    ``partials`` is a float64 workspace of at least ``blocks(x.size)`` elements.
    ``kernels``: the (serial, parallel) reduction to use (16-bit arrays: one that decodes
    them, ``drivers.cpu_precision.sumsq_kernels``).
    """
    args = (x, partials[:blocks(x.size)])
    serial, par = kernels or (sumsq_kernel(False), sumsq_kernel(True))
    if x.nbytes < parallel.PARALLEL_MIN_BYTES:
        return serial(*args)
    return parallel.run(parallel.choice_for(("sumsq", x.size, x.dtype.char)), serial, par,
                        args, x.nbytes)


# --------------------------------------------------------------------------- arrays
# The same functions as the CUDA driver's, for host arrays: the functional layer and the
# optimizer call whichever driver their arrays belong to.
def check_param(a, what: str, half: bool = False) -> np.ndarray:
    return check_param_array(a, what, half=half)


def check_grad(g, p: np.ndarray, what: str, dtype=None) -> np.ndarray:
    return check_grad_array(g, p, what, dtype)


def span(a: np.ndarray) -> tuple[int, int]:
    """``(first byte address, byte count)`` of a C-contiguous array (1.6 us here: NumPy
    builds the interface dict; a compiled pointer read takes 0.25 us but would compile,
    or load, one more kernel per array type, which start-up cannot afford)."""
    return a.__array_interface__["data"][0], a.nbytes


def byte_span(a: np.ndarray) -> tuple[int, int]:
    """``(first byte, byte count)`` of a's memory, from its lowest to its highest byte, for
    any strides (:func:`span` is the quicker form for C-contiguous arrays)."""
    if a.size == 0:
        return 0, 0
    lo = hi = a.__array_interface__["data"][0]
    for n, step in zip(a.shape, a.strides, strict=True):
        if step < 0:
            lo += (n - 1) * step
        else:
            hi += (n - 1) * step
    return lo, hi + a.itemsize - lo


def overlap(a: np.ndarray, b: np.ndarray) -> bool:
    return np.may_share_memory(a, b)


def owner(a: np.ndarray) -> np.ndarray | None:
    """The ndarray that allocated a's memory (a itself, or its base), or None where the
    memory came from elsewhere: a foreign buffer, a memory map, a subclass (NumPy stops
    collapsing ``.base`` at a subclass, so two views of one ``np.memmap`` can have
    different bases). Arrays with different owners cannot overlap; where an owner is
    None only their byte spans can tell."""
    o = a.base
    if o is None:
        o = a
    return o if type(o) is np.ndarray and o.flags.owndata else None


def flat_view(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 1 else a.reshape(-1)


def empty(shape: int | tuple[int, ...], dtype) -> np.ndarray:
    return np.empty(shape, dtype)


def zeros(n: int, dtype, value: float = 0.0) -> np.ndarray:
    a = aligned_empty(n, dtype)
    a.fill(value)
    return a


def to_host(a: np.ndarray) -> np.ndarray:
    return a.copy()


def copy(dst: np.ndarray, src: np.ndarray) -> None:
    np.copyto(dst, src)


def copy_from_host(dst: np.ndarray, src: np.ndarray) -> None:
    np.copyto(dst, src)


def fill(a: np.ndarray, value: float) -> None:
    a.fill(value)


def origin(a) -> str:
    return "numpy"


def current_stream(kind: str) -> None:
    return None


class NormWorkspace:
    """The float64 partials of the optimizer's clip/skip reduction, allocated once."""

    def __init__(self, sizes, dtype) -> None:
        self.partials = np.empty(max((blocks(n) for n in sizes), default=1), np.float64)


def clip_or_skip(grads, workspace: NormWorkspace, clip_norm, skip_nonfinite,
                 kernels: tuple[Callable, Callable] | None = None) -> tuple[bool, float]:
    """``(skip, clip factor)`` from the gradients' global sum of squares (``kernels``: as
    :func:`sum_of_squares` takes them)."""
    total = 0.0
    for g in grads:
        total = add_totals(total, sum_of_squares(g, workspace.partials, kernels))
    if skip_nonfinite and nonfinite(total):
        return True, 1.0
    return False, (norm_scale(total, clip_norm) if clip_norm is not None else 1.0)

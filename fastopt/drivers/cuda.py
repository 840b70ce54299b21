"""The CUDA driver: the same element functions as the CPU driver, launched as kernels.

A step is one kernel launch per array (a grid-stride loop, one element per thread per
iteration): read ``p``, ``g`` and the state once, apply ``rules.transformed(rule)``, write
``p`` and the state once, exactly the traffic of the CPU loop. Gradient clipping without a
host round trip: a first kernel writes one float64 partial sum of squares per block of
:data:`BLOCK` elements, a one-block kernel adds them in a fixed order and writes the clip
factor to a one-element device array that the step kernels read, so a clipped step
neither synchronises nor depends on launch timing (the same bits every run).

Kernels run on the stream the caller gives (the optimizer passes torch's or CuPy's current
stream). Under ``NUMBA_ENABLE_CUDASIM=1`` every kernel runs in Numba's CUDA simulator, in
Python, which is how CI tests this path without a GPU.

This module imports ``numba.cuda``; ``fastopt.drivers.cuda_driver()`` imports it on first
use only.
"""

from __future__ import annotations

import importlib
import math
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np
from numba import config, cuda, types

from .._checks import FLOAT_DTYPES
from .._jit import bind, compile_tree
from ..rules.transforms import (
    INF_SEEN,
    NAN_SEEN,
    clip_scale,
    flags_of,
    nonfinite,
    norm_of,
    norm_scale,
    reported,
    transformed,
    trust_direction,
)
from ._state import as_dtype_of, gather, noise_args, scatter
from .cuda_pointers import gather_at, load_at, row, scatter_at, store_at
from .cuda_vectors import (
    LANES,
    gather4,
    gather4_at,
    lane,
    load4,
    load4_at,
    misaligned,
    misaligned_at,
    scatter4,
    scatter4_at,
    store4,
    store4_at,
)

#: A device driver (``drivers.interface.DeviceDriver``): launches go to a stream.
ON_DEVICE = True

#: True when Numba's CUDA simulator stands in for a GPU (``NUMBA_ENABLE_CUDASIM=1``).
SIMULATOR: bool = bool(config.ENABLE_CUDASIM)
if not SIMULATOR:
    from numba.cuda.cudadrv.devicearray import DeviceNDArray as _DEVICE_ARRAY

    from .cuda_launch import FastLaunch
else:
    _DEVICE_ARRAY = None

if not SIMULATOR:  # the inlined helpers (precision formats) in numba-cuda's registry too
    from .._jit import register_cuda_overloads

    register_cuda_overloads()

#: Threads per block of every kernel (the simulator runs each thread as a Python thread:
#: there, small blocks and few of them keep the tests fast, and exercise the grid-stride
#: loop and the multi-partial reduction).
TPB = 32 if SIMULATOR else 256
#: Elements per float64 partial of the sum-of-squares reduction.
BLOCK = 4096
#: Blocks per multiprocessor of a grid-stride launch over a large array. Measured on an
#: H200 (132 SMs, numba-cuda 0.30.4), 5e7 float32 elements, one launch: SGD 0.176 ms with
#: 32 x 132 blocks of 256 threads against 0.233 ms with one thread per element, Adam 0.495
#: against 0.560 ms (8 x 132 blocks: 0.176 and 0.537 ms).
BLOCKS_PER_SM = 32


@cache
def check_numpy_support() -> None:
    """An ImportError that says what to do where numba-cuda cannot compile with this NumPy.

    numba-cuda 0.30 (the newest release in November 2026) registers an overload of
    ``np.row_stack``, which NumPy 2.5 removed; there its first kernel compilation fails
    with ``AttributeError: module 'numpy' has no attribute 'row_stack'`` from deep inside
    numba-cuda (seen on an H200 machine with numpy 2.5.2). Checked when the GPU path is
    first used (a pass is cached), and only where NumPy lacks ``row_stack``."""
    if SIMULATOR or hasattr(np, "row_stack"):
        return
    try:
        importlib.import_module("numba.cuda.np.arrayobj")  # where the overload is made
    except AttributeError as exc:
        if "row_stack" not in str(exc):
            raise
        version = getattr(importlib.import_module("numba_cuda"), "__version__", "?")
        raise ImportError(
            f"numba-cuda {version} cannot compile kernels with numpy {np.__version__} (it "
            "uses np.row_stack, which numpy 2.5 removed): install 'numpy<2.5', or a "
            "numba-cuda release that supports this numpy"
        ) from exc


def _device(fn: Callable) -> Callable:
    return cuda.jit(device=True)(fn)


class _NullForNone:
    """Lets a launch pass ``None``. The kernels take optional arrays as ``None`` (typed as
    ``none``; the ``is None`` branch not taken is compiled out), but numba-cuda's launcher
    has no rule for a ``none`` argument (``NotImplementedError: (none, None)`` on a GPU;
    the simulator never packs arguments). Its data model is an opaque pointer, one 64-bit
    kernel parameter, so pass a null pointer: numba-cuda's ``extensions`` hook."""

    def prepare_args(self, ty, val, stream=None, retr=None):
        # Called for every argument of every launch (tuples' items too): the cheap test.
        return (_NULL_TYPE, 0) if val is None else (ty, val)


_NULL_TYPE = types.CPointer(types.uint8)


def kernel(fn: Callable) -> Callable:
    """``cuda.jit(fn)`` as a kernel whose launches may pass ``None`` arguments."""
    return cuda.jit(fn) if SIMULATOR else cuda.jit(fn, extensions=[_NullForNone()])


_launchers: dict[tuple, Any] = {}


def launcher(kern: Any, grid: int | tuple[int, int], stream: Any) -> Any:
    """``kern[grid, TPB, stream]``, made once per (kernel, grid, stream, thread) and kept:
    making it costs a launch-configuration object per call, and numba-cuda warns about
    grids under 128 blocks, which the one-block reductions and small arrays use on
    purpose (the warning would reach the user once per process). On a GPU it launches
    through :class:`~fastopt.drivers.cuda_launch.FastLaunch`. The simulator's ``kern[...]``
    sets the configuration on the kernel itself and returns it, so there nothing is
    kept."""
    if SIMULATOR:
        return kern[grid, TPB, stream]
    key = (kern, grid, stream, threading.get_ident())
    launch = _launchers.get(key)
    if launch is None:
        if len(_launchers) >= 4096:  # many sizes, streams or threads: start over
            _launchers.clear()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*Grid size")  # after ANSI bold
            launch = _launchers[key] = FastLaunch(kern[grid, TPB, stream], kern)
    return launch


# --------------------------------------------------------------------------- kernels
def ELEMENT(p, g, s, h, scale, wd, decay, noise, index):  # noqa: N802 - placeholder
    raise NotImplementedError  # bound to a compiled rules.transformed(rule) per kernel


def _scalars(p, h, scale, dscale, wd, decay, noise):
    """The step's scalars in ``p``'s dtype, the device clip factor ``dscale`` applied."""
    scale_ = as_dtype_of(scale, p)
    if dscale is not None:  # the clip factor, computed on the device
        scale_ = scale_ * dscale[0]
    return (as_dtype_of(h, p), scale_, as_dtype_of(wd, p), as_dtype_of(decay, p),
            noise_args(noise, p))


def SCALARS(p, h, scale, dscale, wd, decay, noise):  # noqa: N802 - placeholder
    raise NotImplementedError  # bound to the compiled _scalars


def _element4(pv, gv, sv, h, scale, wd, decay, noise, k):
    """The element function on four consecutive elements (``pv``, ``gv`` and each of
    ``sv``'s state tuples hold four values; ``k`` the first one's index): the four new
    parameters as a tuple, then each element's new state tuple."""
    p0, s0 = ELEMENT(pv[0], gv[0], lane(sv, 0), h, scale, wd, decay, noise, k)
    p1, s1 = ELEMENT(pv[1], gv[1], lane(sv, 1), h, scale, wd, decay, noise, k + np.uint64(1))
    p2, s2 = ELEMENT(pv[2], gv[2], lane(sv, 2), h, scale, wd, decay, noise, k + np.uint64(2))
    p3, s3 = ELEMENT(pv[3], gv[3], lane(sv, 3), h, scale, wd, decay, noise, k + np.uint64(3))
    return (p0, p1, p2, p3), s0, s1, s2, s3


def ELEMENT4(pv, gv, sv, h, scale, wd, decay, noise, k):  # noqa: N802 - placeholder
    raise NotImplementedError  # bound to the compiled _element4 of the kernel's ELEMENT


def _step_kernel(p, g, st, h, scale, dscale, wd, decay, noise):
    """A grid-stride loop; where every array is 16-byte aligned (as allocated), each thread
    steps four consecutive elements per iteration, read and written with one 16-byte
    load or store per array (:mod:`.cuda_vectors`), and the last ``n % 4`` elements one
    per thread. The element function and its index (the noise counter) are the same."""
    h_, scale_, wd_, decay_, noise_ = SCALARS(p, h, scale, dscale, wd, decay, noise)
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = p.size
    if misaligned(p, g, st) == 0:
        nv = n // 4
        while i < nv:
            j = i * 4
            pv = load4(p, j)
            gv = load4(g, j)
            sv = gather4(st, j)
            pn, s0, s1, s2, s3 = ELEMENT4(pv, gv, sv, h_, scale_, wd_, decay_, noise_,
                                          np.uint64(j))
            store4(p, j, pn)
            scatter4(st, j, s0, s1, s2, s3)
            i += stride
        i = nv * 4 + cuda.grid(1)
    while i < n:  # misaligned arrays: all of them; aligned ones: the last n % 4
        pi, s = ELEMENT(p[i], g[i], gather(st, i), h_, scale_, wd_, decay_, noise_,
                        np.uint64(i))
        p[i] = pi
        scatter(st, i, s)
        i += stride


#: Columns of a multi-array step's table (one int64 row per array): its element count,
#: its noise offset, its first chunk, then the addresses of p, g and its state arrays.
SIZE, OFFSET, FIRST, P_ADDR, G_ADDR, STATE_ADDR = 0, 1, 2, 3, 4, 5
#: Elements per chunk of a multi-array step; each block steps one chunk at a time.
CHUNK = TPB * (2 if SIMULATOR else 16)


def _chunk_of(table, c):
    """``(row, first, stop)``: chunk ``c`` is elements ``first:stop`` of table row
    ``row``, the last row whose first chunk is at most c (a binary search)."""
    lo = 0
    hi = table.shape[0] - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if table[mid, FIRST] <= c:
            lo = mid
        else:
            hi = mid - 1
    first = (c - table[lo, FIRST]) * CHUNK
    return lo, first, min(first + CHUNK, table[lo, SIZE])


def CHUNK_OF(table, c):  # noqa: N802 - placeholder, bound to the compiled _chunk_of
    raise NotImplementedError


def _table_step_kernel(table, nchunks, cols, proto, h, scale, dscale, wd, decay, noise):
    """The step over every array of ``table`` (see :class:`ArrayTable`) in one launch:
    block ``b`` steps chunks ``b, b + gridDim, ...``; a chunk is ``CHUNK`` consecutive
    elements of one array, found by a binary search over the arrays' first chunks. The
    element function, its inputs and its noise counters are those of ``_step_kernel``."""
    h_, scale_, wd_, decay_, noise_ = SCALARS(proto, h, scale, dscale, wd, decay, noise)
    t = cuda.threadIdx.x
    c = cuda.blockIdx.x
    while c < nchunks:
        j, first, stop = CHUNK_OF(table, c)
        pa = table[j, P_ADDR]
        ga = table[j, G_ADDR]
        st = row(table, j, cols)
        offset = table[j, OFFSET]
        i = first + t
        if misaligned_at(pa, ga, st) == 0:  # 16-byte accesses, as _step_kernel's
            vstop = first + (stop - first) // 4 * 4
            i = first + 4 * t
            while i < vstop:
                pv = load4_at(pa, i, proto)
                gv = load4_at(ga, i, proto)
                sv = gather4_at(st, i, proto)
                pn, s0, s1, s2, s3 = ELEMENT4(pv, gv, sv, h_, scale_, wd_, decay_, noise_,
                                              np.uint64(offset + i))
                store4_at(pa, i, pn)
                scatter4_at(st, i, s0, s1, s2, s3)
                i += 4 * TPB
            i = vstop + t
        while i < stop:  # misaligned arrays: all of the chunk; aligned ones: its last n % 4
            pi, s = ELEMENT(load_at(pa, i, proto), load_at(ga, i, proto),
                            gather_at(st, i, proto), h_, scale_, wd_, decay_, noise_,
                            np.uint64(offset + i))
            store_at(pa, i, pi)
            scatter_at(st, i, s)
            i += TPB
        c += cuda.gridDim.x


def _block_sum(t, acc, bad):
    """Fixed-order tree sum of one value per thread (shared memory); thread 0 gets it."""
    sums = cuda.shared.array(TPB, np.float64)
    flags = cuda.shared.array(TPB, np.int32)
    sums[t] = acc
    flags[t] = bad
    cuda.syncthreads()
    width = TPB // 2
    while width > 0:
        if t < width:
            sums[t] += sums[t + width]
            flags[t] |= flags[t + width]
        cuda.syncthreads()
        width //= 2
    return sums[0], flags[0]


def _square_into(v, acc, bad):
    """``(acc + v², bad)`` in float64, ``bad`` raising rules.transforms' flags for an
    infinite or a NaN v."""
    v = np.float64(v)
    if math.isfinite(v):
        return acc + v * v, bad
    return acc, bad | (NAN_SEEN if math.isnan(v) else INF_SEEN)


def _block_partial(t, acc, bad, partials, k):
    """The block's sum of squares into ``partials[k]``, reported (rules.transforms)."""
    total, flag = BLOCK_SUM(t, acc, bad)
    if t == 0:
        partials[k] = REPORTED(total, flag)


def SQUARE_INTO(v, acc, bad):  # noqa: N802 - placeholder, bound to compiled _square_into
    raise NotImplementedError


def REPORTED(total, flag):  # noqa: N802 - placeholder, bound to the compiled reported
    raise NotImplementedError


def FLAGS_OF(total):  # noqa: N802 - placeholder, bound to the compiled flags_of
    raise NotImplementedError


def NORM_OF(total):  # noqa: N802 - placeholder, bound to the compiled norm_of
    raise NotImplementedError


def BLOCK_PARTIAL(t, acc, bad, partials, k):  # noqa: N802 - placeholder
    raise NotImplementedError  # bound to the compiled _block_partial


def _sumsq_kernel(x, partials, first):
    """``partials[first + b] = Σ x²`` over block ``b`` (NaN if it holds a NaN/Inf)."""
    b = cuda.blockIdx.x
    t = cuda.threadIdx.x
    acc = 0.0
    bad = 0
    j = b * BLOCK + t
    hi = min(b * BLOCK + BLOCK, x.size)
    while j < hi:
        acc, bad = SQUARE_INTO(x[j], acc, bad)
        j += TPB
    BLOCK_PARTIAL(t, acc, bad, partials, first + b)


def TRUST(p, g, s, h, scale, wd, decay, noise, index):  # noqa: N802 - placeholder
    raise NotImplementedError  # bound to rules.transforms.trust_direction(rule.direction)


def _trust_kernel(p, g, st, h, scale, dscale, wd, decay, noise, partials):
    """A trust-ratio rule's first pass: block ``b`` (``BLOCK`` elements) writes each
    element's state after the step, and ``partials[2b] = Σ w²``, ``partials[2b + 1] =
    Σ u²`` in float64, summed in a fixed order."""
    h_, scale_, wd_, decay_, noise_ = SCALARS(p, h, scale, dscale, wd, decay, noise)
    b = cuda.blockIdx.x
    t = cuda.threadIdx.x
    acc_p = 0.0
    acc_u = 0.0
    j = b * BLOCK + t
    hi = min(b * BLOCK + BLOCK, p.size)
    while j < hi:
        w, u, s = TRUST(p[j], g[j], gather(st, j), h_, scale_, wd_, decay_, noise_,
                        np.uint64(j))
        scatter(st, j, s)
        acc_p, acc_u = ADD_SQUARES(acc_p, acc_u, w, u)
        j += TPB
    PAIR_PARTIALS(t, acc_p, acc_u, partials, b)


def _add_squares(acc_p, acc_u, w, u):
    """``(acc_p + w², acc_u + u²)``, squared and added in float64."""
    w64 = np.float64(w)
    u64 = np.float64(u)
    return acc_p + w64 * w64, acc_u + u64 * u64


def _pair_partials(t, acc_p, acc_u, partials, b):
    """Block ``b``'s two sums of a trust-ratio first pass, each a fixed-order tree over the
    block's threads, written by thread 0 to ``partials[2b]`` and ``partials[2b + 1]``."""
    total_p, _ = BLOCK_SUM(t, acc_p, 0)
    cuda.syncthreads()  # the shared sums are read before the second sum reuses them
    total_u, _ = BLOCK_SUM(t, acc_u, 0)
    if t == 0:
        partials[2 * b] = total_p
        partials[2 * b + 1] = total_u


def ADD_SQUARES(acc_p, acc_u, w, u):  # noqa: N802 - placeholder, the compiled _add_squares
    raise NotImplementedError


def PAIR_PARTIALS(t, acc_p, acc_u, partials, b):  # noqa: N802 - placeholder
    raise NotImplementedError  # bound to the compiled _pair_partials


def _table_sumsq_kernel(table, nchunks, proto, partials, first):
    """``partials[first + c] = Σ g²`` over chunk ``c`` of the gradients in ``table`` (NaN
    if it holds a NaN/Inf): the reduction of :func:`_sumsq_kernel` for a list of arrays
    in one launch, with the table's chunks as blocks."""
    t = cuda.threadIdx.x
    c = cuda.blockIdx.x
    while c < nchunks:
        j, lo, hi = CHUNK_OF(table, c)
        ga = table[j, G_ADDR]
        acc = 0.0
        bad = 0
        i = lo + t
        while i < hi:
            acc, bad = SQUARE_INTO(load_at(ga, i, proto), acc, bad)
            i += TPB
        BLOCK_PARTIAL(t, acc, bad, partials, first + c)
        c += cuda.gridDim.x


def _finalize_kernel(partials, n, out, max_norm, dscale):
    """``out[0] = Σ partials[:n]`` in a fixed order, reported (rules.transforms);
    ``dscale[0]`` = the clip factor."""
    t = cuda.threadIdx.x
    acc = 0.0
    bad = 0
    j = t
    while j < n:
        f = FLAGS_OF(partials[j])
        bad |= f
        if f == 0:
            acc += partials[j]
        j += TPB
    total, flag = BLOCK_SUM(t, acc, bad)
    if t == 0:
        total = REPORTED(total, flag)
        out[0] = total
        if dscale is not None:
            dscale[0] = CLIP_SCALE(NORM_OF(total), max_norm)


@cache
def _elements(rule: Callable) -> dict[str, Callable]:
    """``ELEMENT`` (one element) and ``ELEMENT4`` (four) of ``rule``, compiled."""
    element = compile_tree(transformed(rule), _device)
    return {"ELEMENT": element, "ELEMENT4": _device(bind(_element4, ELEMENT=element))}


@cache
def step_kernel(rule: Callable) -> Callable:
    return kernel(bind(_step_kernel, f"cuda_step_{rule.__name__}", **_elements(rule),
                       SCALARS=_device_functions()["SCALARS"]))


@cache
def table_step_kernel(rule: Callable) -> Callable:
    return kernel(bind(_table_step_kernel, f"cuda_table_step_{rule.__name__}",
                       **_elements(rule), **_device_functions()))


@cache
def trust_kernel(direction: Callable) -> Callable:
    return kernel(bind(_trust_kernel, f"cuda_trust_{direction.__name__}",
                       TRUST=compile_tree(trust_direction(direction), _device),
                       SCALARS=_device_functions()["SCALARS"], **trust_sum_functions()))


@cache
def trust_sum_functions() -> dict[str, Callable]:
    """``ADD_SQUARES`` and ``PAIR_PARTIALS`` of a trust-ratio first pass, compiled."""
    return {"ADD_SQUARES": _device(_add_squares),
            "PAIR_PARTIALS": _device(bind(_pair_partials, BLOCK_SUM=_device(_block_sum)))}


@cache
def _device_functions() -> dict[str, Callable]:
    return {"SCALARS": _device(_scalars), "CHUNK_OF": _device(_chunk_of)}


@cache
def _reduction_kernels() -> tuple[Callable, Callable, Callable]:
    block_sum = _device(_block_sum)
    reported_ = _device(reported)
    parts = {"SQUARE_INTO": _device(_square_into),
             "BLOCK_PARTIAL": _device(bind(_block_partial, BLOCK_SUM=block_sum,
                                           REPORTED=reported_))}
    sumsq = kernel(bind(_sumsq_kernel, **parts))
    table_sumsq = kernel(bind(_table_sumsq_kernel, CHUNK_OF=_device_functions()["CHUNK_OF"],
                              **parts))
    finalize = kernel(bind(_finalize_kernel, BLOCK_SUM=block_sum, REPORTED=reported_,
                           FLAGS_OF=_device(flags_of), CLIP_SCALE=_device(clip_scale),
                           NORM_OF=_device(norm_of)))
    return sumsq, table_sumsq, finalize


def BLOCK_SUM(t, acc, bad):  # noqa: N802 - placeholder, bound to the compiled _block_sum
    raise NotImplementedError


def CLIP_SCALE(norm, max_norm):  # noqa: N802 - placeholder, bound to compiled clip_scale
    raise NotImplementedError


@cache
def max_blocks() -> int:
    """Grid size cap of the grid-stride kernels: ``BLOCKS_PER_SM`` per multiprocessor of
    the first GPU used (2 in the simulator, to exercise the grid-stride loops)."""
    if SIMULATOR:
        return 2
    return BLOCKS_PER_SM * cuda.get_current_device().MULTIPROCESSOR_COUNT


def grid(n: int) -> int:
    """Blocks of ``TPB`` threads for ``n`` elements, one element per thread up to
    :func:`max_blocks` blocks, a grid-stride loop beyond."""
    return max(1, min(-(-n // TPB), max_blocks()))


def step(rule, p, g, state, consts, scale, wd, decay, noise, stream=None, dscale=None) -> None:
    """One fused step of ``rule`` over 1-D device arrays (scalars as in the CPU driver)."""
    stream = 0 if stream is None else stream
    launcher(step_kernel(rule), grid(-(-p.size // LANES)), stream)(
        p, g, state, consts, scale, dscale, wd, decay, noise
    )


def trust_sums(direction, p, g, state, consts, scale, wd, decay, noise, stream=None,
               dscale=None) -> tuple[float, float]:
    """A trust-ratio rule's first pass over 1-D device arrays: the state written, and
    ``(Σ w², Σ u²)`` read back (the step waits for it), summed over the blocks in order."""
    stream = 0 if stream is None else stream
    nb = blocks(p.size)
    if not nb:  # an empty array: no launch (a grid of 0 blocks is an error)
        return 0.0, 0.0
    partials = cuda.device_array(2 * nb, np.float64, stream=stream)
    launcher(trust_kernel(direction), nb, stream)(
        p, g, state, consts, scale, dscale, wd, decay, noise, partials)
    return pair_sums(partials, nb, stream)


def pair_sums(partials: Any, nb: int, stream: Any) -> tuple[float, float]:
    """``(Σ partials[2b], Σ partials[2b + 1])`` over ``nb`` blocks of a first pass, read
    back and added in block order."""
    host = partials.copy_to_host(stream=stream)
    if stream != 0:
        stream.synchronize()
    total_p = 0.0
    total_u = 0.0
    for b in range(nb):
        total_p += float(host[2 * b])
        total_u += float(host[2 * b + 1])
    return total_p, total_u


class ArrayTable:
    """The arrays of a multi-array step (``ps[j]``, its state arrays ``sts[j]``, its noise
    position ``offsets[j]``) as an int64 device table, one row per non-empty array (columns
    ``SIZE, OFFSET, FIRST, P_ADDR, G_ADDR`` and the state addresses). Made once per list of
    arrays; :meth:`set_grads` writes the gradients' addresses, uploading the table only
    when they changed. The table keeps the arrays it points into alive."""

    def __init__(self, ps: Sequence[Any], sts: Sequence[tuple], offsets: Sequence[int]
                 ) -> None:
        keep = [j for j, p in enumerate(ps) if p.size]
        nstate = len(sts[0]) if sts else 0
        self.arrays = (list(ps), list(sts))
        self.rows = keep
        rows, first = [], 0
        for j in keep:  # rows as tuples, one array at the end: a NumPy row write per
            n = ps[j].size  # array cost a few µs, and functional lists build a table per call
            rows.append((n, offsets[j], first, address(ps[j]), 0, *map(address, sts[j])))
            first += -(-n // CHUNK)
        self.host = (np.array(rows, np.int64) if rows
                     else np.zeros((1, STATE_ADDR + nstate), np.int64))
        self.nchunks = first
        self.cols = tuple(range(STATE_ADDR, STATE_ADDR + nstate))
        self.proto = flat_view(ps[0])  # the kernels' dtype (one compile for any shape)
        self.device = cuda.to_device(self.host)
        self._grads: list[int] | None = None
        self._memo: tuple | None = None
        self._stream: Any = None

    def set_grads(self, gs: Sequence[Any], stream: Any) -> None:
        """Point the table at the gradients ``gs`` (one per array, as ``ps``: device
        arrays, or their addresses from :func:`grad_address`)."""
        if gs is self._memo:  # the optimizer's tuple of last step's addresses: unchanged
            return
        addrs = [g if type(g) is int else address(g) for g in (gs[j] for j in self.rows)]
        if addrs != self._grads:
            if self._stream is not None and stream is not self._stream:
                cuda.synchronize()  # a step queued on the other stream may still read it
            self.host[: len(addrs), G_ADDR] = addrs
            # From pageable memory: staged before this returns, applied in stream order,
            # so a step still queued reads the old addresses.
            self.device.copy_to_device(self.host, stream=stream)
            self._grads = addrs
            self._stream = stream
        # A tuple of addresses (the optimizer's) cannot change: the same object next time
        # needs no compare. A list can be edited in place, so it is compared every time.
        self._memo = gs if type(gs) is tuple and all(type(g) is int for g in gs) else None


def step_table(rule, table: ArrayTable, gs, consts, scale, wd, decay, noise, stream=None,
               dscale=None) -> None:
    """One fused step of ``rule`` over every array of ``table``, in one launch; ``noise``
    as in :func:`step` with its offset 0 (each array's offset is in the table)."""
    if not table.nchunks:
        return
    stream = 0 if stream is None else stream
    table.set_grads(gs, stream)
    launcher(table_step_kernel(rule), max(1, min(table.nchunks, max_blocks())), stream)(
        table.device, table.nchunks, table.cols, table.proto, consts, scale, dscale, wd,
        decay, noise
    )


def blocks(n: int) -> int:
    """Number of reduction blocks (partials) for ``n`` elements."""
    return -(-n // BLOCK)


def sum_of_squares_async(
    arrays: Sequence[Any], partials: Any, out: Any, max_norm: float = 0.0,
    dscale: Any = None, stream: Any = None,
) -> None:
    """Queue ``out[0] = Σ x²`` over all ``arrays`` (contiguous; float64; NaN if any is
    NaN/Inf) and, with ``dscale``, ``dscale[0]`` = the clip factor for ``max_norm``. No
    synchronisation.

    ``partials``: a float64 device workspace of at least ``Σ blocks(x.size)`` elements.
    """
    stream = 0 if stream is None else stream
    sumsq, _, finalize = _reduction_kernels()
    first = 0
    for x in arrays:
        if x.size:
            nb = blocks(x.size)
            launcher(sumsq, nb, stream)(flat_view(x), partials, first)
            first += nb
    launcher(finalize, 1, stream)(partials, first, out, float(max_norm), dscale)


def table_sum_of_squares_async(
    tables: Sequence[ArrayTable], partials: Any, out: Any, max_norm: float = 0.0,
    dscale: Any = None, stream: Any = None,
) -> None:
    """:func:`sum_of_squares_async` over the gradients the ``tables`` point at (set by
    :meth:`ArrayTable.set_grads`): one launch per table, one partial per chunk.

    ``partials``: at least ``Σ table.nchunks`` elements."""
    stream = 0 if stream is None else stream
    _, table_sumsq, finalize = _reduction_kernels()
    first = 0
    for table in tables:
        if table.nchunks:
            launcher(table_sumsq, min(table.nchunks, max_blocks()), stream)(
                table.device, table.nchunks, table.proto, partials, first)
            first += table.nchunks
    launcher(finalize, 1, stream)(partials, first, out, float(max_norm), dscale)


def global_sum_of_squares(arrays: Sequence[Any], workspace: Any = None, stream: Any = None
                          ) -> float:
    """``Σ x²`` over device arrays, reduced on the device; reads back one float64 (NaN for
    a NaN input, −∞ for an infinite one: ``rules.transforms.norm_of``)."""
    for j, x in enumerate(arrays):
        if np.dtype(x.dtype) not in FLOAT_DTYPES:
            raise TypeError(f"grads[{j}] has dtype {x.dtype}; global_norm needs float32 or "
                            "float64")
    need = max(1, sum(blocks(x.size) for x in arrays))
    if workspace is not None:
        workspace = as_device_array(workspace, "global_norm's workspace")
        if np.dtype(workspace.dtype) != np.float64 or len(workspace.shape) != 1:
            raise TypeError("global_norm's workspace must be a 1-D float64 device array (the "
                            f"float64 partial sums), got {workspace.dtype} {workspace.shape}")
        w0, wn = span(workspace)
        for j, x in enumerate(arrays):
            x0, xn = span(x)
            if x0 < w0 + wn and w0 < x0 + xn and wn and xn:
                raise ValueError(f"global_norm's workspace shares memory with grads[{j}]; "
                                 "give it memory of its own")
    if workspace is None or workspace.size < need:
        workspace = cuda.device_array(need, np.float64)
    out = cuda.device_array(1, np.float64)
    sum_of_squares_async(arrays, workspace, out, stream=stream)
    return float(out.copy_to_host()[0])


# --------------------------------------------------------------------------- arrays
def _interface(a: Any) -> dict | None:
    try:
        return a.__cuda_array_interface__
    except AttributeError:
        return None


def as_device_array(a: Any, what: str) -> Any:
    """A Numba device array viewing ``a`` (no copy), or a clear error."""
    if cuda.devicearray.is_cuda_ndarray(a):
        return a
    try:
        cai = a.__cuda_array_interface__
    except AttributeError:
        raise TypeError(
            f"{what} is a {type(a).__name__}, which exposes no __cuda_array_interface__; "
            "pass a Numba device array, a CuPy array or a torch CUDA tensor"
        ) from None
    except RuntimeError as exc:  # torch: a tensor that requires grad
        raise ValueError(
            f"{what} cannot be viewed by fastopt ({exc}); pass tensor.detach(), which shares "
            "its memory"
        ) from None
    if cai["data"][1]:
        raise ValueError(f"{what} is read-only; fastopt updates it in place")
    return cuda.as_cuda_array(a, sync=False)


def all_numba_arrays(arrays: Sequence[Any]) -> bool:
    """True when every item is a Numba device array (the cheap test)."""
    numba_array = cuda.devicearray.is_cuda_ndarray
    return all(numba_array(a) for a in arrays)


def check_param(a: Any, what: str, half: bool = False) -> Any:
    """A float32/float64 C-contiguous device array (a Numba view of ``a``); with ``half``,
    float16 too (the optimizers' precision path: CUDA arrays have no bfloat16 type)."""
    d = as_device_array(a, what)
    dt = np.dtype(d.dtype)
    if dt not in FLOAT_DTYPES and not (half and dt == np.float16):
        raise TypeError(f"{what} has dtype {d.dtype}; fastopt needs float32 or float64"
                        + (" (or float16) on a GPU" if half else ""))
    if not d.is_c_contiguous():
        raise ValueError(f"{what} is not C-contiguous; pass a contiguous copy and keep it")
    return d


def check_grad(g: Any, p: Any, what: str, dtype: Any = None) -> Any:
    """``g`` as a device gradient of ``p``: its shape, and ``dtype`` (default ``p``'s)."""
    d = as_device_array(g, what)
    if tuple(d.shape) != tuple(p.shape):
        raise ValueError(f"{what} has shape {tuple(d.shape)}, its parameter has shape "
                         f"{tuple(p.shape)}")
    want = np.dtype(p.dtype if dtype is None else dtype)
    if np.dtype(d.dtype) != want:
        raise ValueError(f"{what} has dtype {d.dtype}, its parameter has dtype {p.dtype}" + (
            "" if want == np.dtype(p.dtype) else f"; gradients come as {want} (grad_dtype)"))
    if not d.is_c_contiguous():
        raise ValueError(f"{what} is not C-contiguous; pass a contiguous copy")
    return d


def address(a: Any) -> int:
    """The device address of a Numba device array's first element."""
    if SIMULATOR:
        return a._ary.__array_interface__["data"][0]
    return a.device_ctypes_pointer.value or 0


_torch_dtypes: dict[np.dtype, Any] | None = None


def _torch_dtype(dt: np.dtype) -> Any:
    """torch's dtype object for a float NumPy dtype (torch is loaded: a tensor was seen)."""
    global _torch_dtypes
    if _torch_dtypes is None:
        torch = sys.modules["torch"]
        _torch_dtypes = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}
    return _torch_dtypes.get(dt)


def grad_address(g: Any, p: Any, what: str) -> int:
    """The device address of gradient ``g`` of parameter ``p``, with :func:`check_grad`'s
    checks. A Numba device array laid out as ``p`` and a torch CUDA tensor are checked
    through their own attributes (a torch tensor without a Numba view: about 1 µs instead
    of about 30; a list of 161 gradients is checked every step); anything else, or an
    array that fails a check, goes through :func:`check_grad`, which says what is wrong."""
    t = type(g)
    if t is _DEVICE_ARRAY and g.shape == p.shape and g.dtype == p.dtype \
            and g.strides == p.strides:  # laid out as the (C-contiguous) parameter
        return g.device_ctypes_pointer.value or 0
    if t.__name__ == "Tensor" and t.__module__ == "torch" and g.is_cuda \
            and not g.requires_grad and g.is_contiguous() and g.shape == p.shape \
            and g.dtype is _torch_dtype(p.dtype):  # torch.Size is a tuple
        return g.data_ptr()
    return address(check_grad(g, p, what))


def fixed_addresses(arrays: Sequence[Any]) -> bool:
    """True when every item is a Numba device array: its memory, shape, strides and dtype
    are set when it is made, so the same object has the same address and passes the same
    checks at every step (a torch tensor's storage can be swapped in place: never assumed)."""
    return all(type(a) is _DEVICE_ARRAY for a in arrays)


def span(a: Any) -> tuple[int, int]:
    """``(first byte address, byte count)`` of a contiguous device array."""
    if type(a) is _DEVICE_ARRAY:  # its address without building its interface dict
        return a.device_ctypes_pointer.value or 0, a.size * a.dtype.itemsize
    cai = _interface(a)
    first = cai["data"][0] if cai is not None else a._ary.__array_interface__["data"][0]
    return first, a.size * np.dtype(a.dtype).itemsize


def overlap(a: Any, b: Any) -> bool:
    (a0, na), (b0, nb) = span(a), span(b)
    return na > 0 and nb > 0 and a0 < b0 + nb and b0 < a0 + na


_flat_views: dict[int, tuple[Any, Any]] = {}


def flat_view(a: Any) -> Any:
    """A 1-D view of the contiguous device array ``a``, kept while ``a`` lives: numba-cuda's
    reshape builds a new device array object, about 11 µs of Python, and BatchNorm and
    the per-array steps view the same buffers every step."""
    if len(a.shape) == 1:
        return a
    if SIMULATOR:
        return a.reshape(a.size)
    entry = _flat_views.get(id(a))
    if entry is not None and entry[0]() is a:
        return entry[1]
    view = a.reshape(a.size)
    key = id(a)
    try:  # the entry goes when a does (the view would keep a's memory alive)
        ref = weakref.ref(a, lambda _: _flat_views.pop(key, None))
    except TypeError:
        return view
    _flat_views[key] = (ref, view)
    return view


def _fill_kernel(a, value):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < a.size:
        a[i] = value
        i += stride


@cache
def _filler() -> Callable:
    return kernel(_fill_kernel)


def fill(a: Any, value: float, stream: Any = None) -> None:
    """Set every element of the 1-D device array ``a`` to ``value``, on the device."""
    if a.size:
        launcher(_filler(), grid(a.size), stream or 0)(a, np.dtype(a.dtype).type(value))


def empty(shape: int | tuple[int, ...], dtype: Any) -> Any:
    """A new device array of ``shape`` (an element count or a tuple), not initialised."""
    return cuda.device_array(shape, dtype)


def zeros(n: int, dtype: Any, value: float = 0.0) -> Any:
    """A new device array of ``n`` elements, all ``value``."""
    a = cuda.device_array(n, dtype)
    fill(a, value)
    return a


def to_host(a: Any) -> np.ndarray:
    return a.copy_to_host()


def copy(dst: Any, src: Any) -> None:
    """Device-to-device copy of equal-sized arrays."""
    dst.copy_to_device(src)


def copy_from_host(dst: Any, src: np.ndarray) -> None:
    dst.copy_to_device(np.ascontiguousarray(src))


# --------------------------------------------------------------------------- streams
_external_streams: dict[int, Any] = {}


def origin(a: Any) -> str:
    """Which library an array comes from: "torch", "cupy" or "numba"."""
    root = type(a).__module__.split(".")[0]
    return root if root in ("torch", "cupy") else "numba"


def current_stream(kind: str) -> Any:
    """The caller's stream: torch's or CuPy's current stream, else Numba's default."""
    if SIMULATOR:
        return 0
    if kind == "torch":
        import torch

        handle = torch.cuda.current_stream().cuda_stream
    elif kind == "cupy":
        import cupy

        handle = cupy.cuda.get_current_stream().ptr
    else:
        return 0
    if not handle:
        return 0
    stream = _external_streams.get(handle)
    if stream is None:
        stream = _external_streams[handle] = cuda.external_stream(handle)
    return stream


# --------------------------------------------------------------------------- optimizer
class NormWorkspace:
    """Device buffers for the optimizer's clip/skip reduction, allocated once (partials
    for one per block of each array, or one per table chunk, whichever is more)."""

    def __init__(self, sizes: Sequence[int], dtype: Any) -> None:
        n = max(sum(blocks(k) for k in sizes), sum(-(-k // CHUNK) for k in sizes), 1)
        self.partials = cuda.device_array(n, np.float64)
        self.total = cuda.device_array(1, np.float64)
        self.scale = cuda.device_array(1, dtype)


def clip_or_skip(grads, workspace: NormWorkspace, clip_norm, skip_nonfinite, stream,
                 tables=None):
    """``(skip, scale, dscale)``: with ``skip_nonfinite`` one 8-byte read tells whether to
    skip (and gives the clip factor on the host); with clipping alone nothing is read back
    and the factor stays on the device. ``tables``: ``(table, grads)`` per group, when the
    groups step through :class:`ArrayTable` (``grads`` may be addresses): the reduction
    then reads the gradients through the tables, one launch per group."""
    dscale = workspace.scale if (clip_norm is not None and not skip_nonfinite) else None
    if tables is not None:
        for table, gs in tables:
            table.set_grads(gs, 0 if stream is None else stream)
        table_sum_of_squares_async([t for t, _ in tables], workspace.partials,
                                   workspace.total, clip_norm or 0.0, dscale, stream)
    else:
        sum_of_squares_async(grads, workspace.partials, workspace.total,
                             clip_norm or 0.0, dscale, stream)
    if not skip_nonfinite:
        return False, 1.0, dscale
    host = workspace.total.copy_to_host(stream=stream or 0)
    if stream:
        stream.synchronize()
    total = float(host[0])
    if nonfinite(total):
        return True, 1.0, None
    return False, (norm_scale(total, clip_norm) if clip_norm is not None else 1.0), None

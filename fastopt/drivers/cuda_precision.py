"""The CUDA driver's precision kernels: 16-bit parameters and gradients, master weights,
stochastic rounding, bfloat16 and blockwise 8-bit state.

The same element functions, storage reads and writes (:mod:`fastopt.precision.storage`)
and code books (:mod:`fastopt.precision.quantized`) as the CPU's
:mod:`fastopt.drivers.cpu_precision`, launched as kernels:

- plain or bfloat16 state: a grid-stride loop, one element per thread, as
  :func:`fastopt.drivers.cuda._step_kernel`;
- 8-bit state: one CUDA block per quantization block of 256 values at a time. Each
  thread steps its elements, decoding the state where it reads it, keeps the new values
  in shared memory and a running maximum of their magnitudes; a shared-memory tree gives
  the block's maximum; then each thread encodes its elements with it.

Random bits and code choices are the CPU's, so results agree with the CPU driver (to the
last bit in the simulator; within a few ulp on a GPU, whose compiler contracts
multiply-adds).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
from numba import cuda

from .._jit import bind, compile_tree
from ..precision import dynamic, quantized, storage
from ..precision.storage import BITS, GATHER, GLOAD, PLOAD, PSTORE, SCATTER
from ..rules.transforms import transformed, trust_direction
from . import cuda as driver

QBLOCK = dynamic.QBLOCK
BLOCK, TPB = driver.BLOCK, driver.TPB


def ELEMENT(p, g, s, h, scale, wd, decay, noise, index):  # noqa: N802 - placeholder
    raise NotImplementedError


def SCALARS(p, h, scale, dscale, wd, decay, noise):  # noqa: N802 - placeholder
    raise NotImplementedError








def _precision_kernel(p, g, st, master, h, scale, dscale, wd, decay, noise, rnd, ct):
    """One fused step over 16-bit (or float32) parameters and gradients and plain or
    bfloat16 state; ``ct`` a one-element array of the compute dtype (the scalars' type),
    ``rnd = (k0, k1, step, position of element 0)`` for the rounding."""
    h_, scale_, wd_, decay_, noise_ = SCALARS(ct, h, scale, dscale, wd, decay, noise)
    k0 = np.uint32(rnd[0])
    k1 = np.uint32(rnd[1])
    step = np.uint64(rnd[2])
    pos0 = np.uint64(rnd[3])
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    n = p.size
    while i < n:
        idx = np.uint64(i)
        pos = pos0 + idx
        w, s = ELEMENT(PLOAD(p, master, i), GLOAD(g, i), GATHER(st, i), h_, scale_, wd_,
                       decay_, noise_, idx)
        PSTORE(p, master, i, w, BITS(k0, k1, step, pos, np.uint32(0)))
        SCATTER(st, i, s, k0, k1, step, pos)
        i += stride


@cache
def _quantized_template(books: tuple[str, ...]) -> Callable:
    """The 8-bit kernel for state stored in ``books`` (one per state array), generated as
    the CPU's is: one straight line per state array (see the module docstring)."""
    k = len(books)
    dec, post, enc = [], [], []
    for j, book in enumerate(books):
        code = quantized.book_code(book)
        dec.append(f"        a{j} = absmax[{j}][b] * np.float32({1.0 / code.largest!r})\n"
                   f"        x{j} = np.uint32(0)\n")
        post.append(f"            rows[{j}, kk] = s[{j}]\n"
                    f"            x{j} = magnitude_max(x{j}, s[{j}])\n")
        scaled = code.encode.format(y=f"rows[{j}, kk] * inv")
        enc.append(f"        amax = f32_from_bits(red[{j}, 0])\n"
                   f"        inv = inverse(amax, np.float32({code.largest!r}))\n"
                   f"        kk = t\n"
                   f"        while kk < n:\n"
                   f"            st[{j}][lo + kk] = {scaled}\n"
                   f"            kk += TPB\n"
                   f"        if t == 0:\n"
                   f"            absmax[{j}][b] = amax\n")
    state = ", ".join(
        f"{quantized.book_code(book).decode.format(c=f'st[{j}][i]')} * a{j}"
        for j, book in enumerate(books))
    maxima = "".join(f"        red[{j}, t] = x{j}\n" for j in range(k))
    tree = "".join(f"                red[{j}, t] = max(red[{j}, t], red[{j}, t + width])\n"
                   for j in range(k))
    src = (
        "def quantized_kernel(p, g, st, absmax, qt, master, h, scale, dscale, wd, decay, "
        "noise, rnd, ct):\n"
        "    h_, scale_, wd_, decay_, noise_ = SCALARS(ct, h, scale, dscale, wd, decay, "
        "noise)\n"
        "    k0 = np.uint32(rnd[0])\n"
        "    k1 = np.uint32(rnd[1])\n"
        "    step = np.uint64(rnd[2])\n"
        "    pos0 = np.uint64(rnd[3])\n"
        f"    rows = cuda.shared.array(({k}, QBLOCK), np.float32)\n"
        f"    red = cuda.shared.array(({k}, TPB), np.uint32)\n"
        "    t = cuda.threadIdx.x\n"
        "    b = cuda.blockIdx.x\n"
        "    nblocks = (p.size + QBLOCK - 1) // QBLOCK\n"
        "    while b < nblocks:\n"
        "        lo = b * QBLOCK\n"
        "        n = min(QBLOCK, p.size - lo)\n"
        + "".join(dec) +
        "        kk = t\n"
        "        while kk < n:\n"
        "            i = lo + kk\n"
        "            idx = np.uint64(i)\n"
        f"            w, s = ELEMENT(PLOAD(p, master, i), GLOAD(g, i), ({state},), h_, "
        "scale_, wd_, decay_, noise_, idx)\n"
        "            PSTORE(p, master, i, w, BITS(k0, k1, step, pos0 + idx, np.uint32(0)))\n"
        + "".join(post) +
        "            kk += TPB\n"
        + maxima +
        "        cuda.syncthreads()\n"
        "        width = TPB // 2\n"
        "        while width > 0:\n"
        "            if t < width:\n"
        + tree +
        "            cuda.syncthreads()\n"
        "            width //= 2\n"
        + "".join(enc) +
        "        cuda.syncthreads()\n"  # rows and red are reused by the next block
        "        b += cuda.gridDim.x\n")
    scope = {"__name__": __name__, "np": np, "cuda": cuda, "QBLOCK": QBLOCK,
             "TPB": driver.TPB, **quantized.kernel_scope()}
    exec(compile(src, __file__, "exec"), scope)  # noqa: S102 - one line per state array
    fn = scope["quantized_kernel"]
    fn.__name__ = f"quantized_kernel_{'_'.join(books)}"
    return fn


@cache
def precision_kernel(rule: Callable, pfmt: str, gfmt: str, sfmt: str, nstate: int,
                     master: bool, stochastic: bool,
                     books: tuple[str, ...] | None = None) -> Callable:
    """The CUDA kernel of :func:`fastopt.drivers.cpu_precision.precision_kernel`'s step
    (the same arguments, less the serial/parallel choice)."""
    io = {k: v for k, v in storage.param_io(pfmt, gfmt, master, stochastic).items()}
    element = compile_tree(transformed(rule), driver._device)
    fmt = "_".join(books) if books is not None else f"{sfmt}{nstate}"
    name = f"cuda_precision_{rule.__name__}_{pfmt}_{gfmt}_{fmt}_{int(master)}{int(stochastic)}"
    scalars = driver._device_functions()["SCALARS"]
    if books is not None:
        return driver.kernel(bind(_quantized_template(books), name, ELEMENT=element,
                                  SCALARS=scalars, **io))
    gather, scatter = storage.state_codec(sfmt, nstate)
    return driver.kernel(bind(_precision_kernel, name, ELEMENT=element, SCALARS=scalars,
                              GATHER=gather, SCATTER=scatter, **io))


def TRUST(p, g, s, h, scale, wd, decay, noise, index):  # noqa: N802 - placeholder
    raise NotImplementedError  # bound to rules.transforms.trust_direction(direction)


def STATE_AT(st, absmax, qt, i):  # noqa: N802 - placeholder: storage.state_reader
    raise NotImplementedError


def ADD_SQUARES(acc_p, acc_u, w, u):  # noqa: N802 - placeholder: the driver's
    raise NotImplementedError


def PAIR_PARTIALS(t, acc_p, acc_u, partials, b):  # noqa: N802 - placeholder: the driver's
    raise NotImplementedError


def _trust_pass(p, g, st, absmax, qt, master, h, scale, dscale, wd, decay, noise, rnd, ct,
                partials):
    """A trust-ratio rule's first pass over stored values, as the CPU's
    (``cpu_precision._trust_pass``): block ``b`` of ``driver.BLOCK`` elements writes
    ``partials[2b] = Σ w²`` and ``partials[2b + 1] = Σ u²`` in float64 (a fixed-order
    tree), each value decoded where it is read; nothing else is written."""
    h_, scale_, wd_, decay_, noise_ = SCALARS(ct, h, scale, dscale, wd, decay, noise)
    b = cuda.blockIdx.x
    t = cuda.threadIdx.x
    acc_p = 0.0
    acc_u = 0.0
    j = b * BLOCK + t
    hi = min(b * BLOCK + BLOCK, p.size)
    while j < hi:
        w, u, _ = TRUST(PLOAD(p, master, j), GLOAD(g, j), STATE_AT(st, absmax, qt, j), h_,
                        scale_, wd_, decay_, noise_, np.uint64(j))
        acc_p, acc_u = ADD_SQUARES(acc_p, acc_u, w, u)
        j += TPB
    PAIR_PARTIALS(t, acc_p, acc_u, partials, b)


@cache
def trust_pass_kernel(direction: Callable, pfmt: str, gfmt: str, sfmt: str, nstate: int,
                      master: bool, books: tuple[str, ...] | None = None) -> Callable:
    """The CUDA kernel of :func:`fastopt.drivers.cpu_precision.trust_pass_kernel`'s first
    pass (the same arguments, less the serial/parallel choice)."""
    io = storage.param_io(pfmt, gfmt, master, False)
    fmt = "_".join(books) if books is not None else f"{sfmt}{nstate}"
    name = f"cuda_precision_trust_{direction.__name__}_{pfmt}_{gfmt}_{fmt}_{int(master)}"
    return driver.kernel(bind(
        _trust_pass, name, TRUST=compile_tree(trust_direction(direction), driver._device),
        STATE_AT=storage.state_reader(sfmt, nstate, books),
        SCALARS=driver._device_functions()["SCALARS"], **driver.trust_sum_functions(),
        BLOCK=driver.BLOCK, TPB=driver.TPB, PLOAD=io["PLOAD"], GLOAD=io["GLOAD"]))


def trust_sums(kern: Callable, n: int, args: tuple, stream) -> tuple[float, float]:
    """``(Σ w², Σ u²)`` of a first pass (:func:`trust_pass_kernel`) over ``n`` values,
    read back (the step that follows waits for it)."""
    stream = 0 if stream is None else stream
    nb = driver.blocks(n)
    if not nb:  # an empty array: no launch (a grid of 0 blocks is an error)
        return 0.0, 0.0
    partials = cuda.device_array(2 * nb, np.float64, stream=stream)
    driver.launcher(kern, nb, stream)(*args, partials)
    return driver.pair_sums(partials, nb, stream)


_TABLES: dict[int, tuple] = {}


def device_tables() -> tuple[object, tuple]:
    """``(ct, qt)`` on the current GPU, made once per device: the kernels' compute-dtype
    marker (a one-element float32 array) and the dynamic maps' tables (the functional
    layer's precision calls; an optimizer keeps its own in its storage)."""
    key = 0 if driver.SIMULATOR else cuda.get_current_device().id
    if key not in _TABLES:
        _TABLES[key] = (cuda.to_device(np.zeros(1, np.float32)),
                        tuple(cuda.to_device(a) for a in quantized.codec_tables()))
    return _TABLES[key]


def launch(kern: Callable, quantized_state: bool, n: int, args: tuple, stream) -> None:
    """Launch a precision kernel over ``n`` values: the element kernel one thread per
    element (grid-stride beyond :func:`fastopt.drivers.cuda.max_blocks`), the 8-bit one
    a block per quantization block."""
    stream = 0 if stream is None else stream
    blocks = (min(-(-n // QBLOCK), driver.max_blocks()) if quantized_state
              else driver.grid(n))
    driver.launcher(kern, max(1, blocks), stream)(*args)

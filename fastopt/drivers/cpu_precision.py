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

from .._jit import compile_tree, device_function, source_tag
from ..precision import dynamic, quantized, storage
from ..precision.storage import BITS, GATHER, GLOAD, PLOAD, PSTORE, SCATTER
from ..rules.transforms import transformed, trust_direction
from . import cpu
from ._state import as_dtype_of, noise_args
from .cpu import _compiled

QBLOCK = dynamic.QBLOCK
#: Values per float64 partial of the trust-ratio norms: the float32 path's blocks.
NORM_BLOCK = cpu.BLOCK



def ELEMENT(p, g, s, h, scale, wd, decay, noise, index):  # noqa: N802 - placeholder
    raise NotImplementedError








def SCALARS(h, scale, wd, decay, noise, rnd, ct):  # noqa: N802 - placeholder: _scalars
    raise NotImplementedError


def _scalars(h, scale, wd, decay, noise, rnd, ct):
    """The step's scalars in the compute dtype, and the rounding counter's words
    ``(k0, k1, step, position of element 0)``."""
    return (as_dtype_of(h, ct), as_dtype_of(scale, ct), as_dtype_of(wd, ct),
            as_dtype_of(decay, ct), noise_args(noise, ct), np.uint32(rnd[0]),
            np.uint32(rnd[1]), np.uint64(rnd[2]), np.uint64(rnd[3]))


def _precision_loop(p, g, st, master, h, scale, wd, decay, noise, rnd, ct):
    """One fused step over 16-bit (or 32-bit) parameters and gradients and plain or
    bfloat16 state; ``rnd = (k0, k1, step, position of element 0)`` for the rounding,
    ``ct`` an empty array of the compute dtype."""
    h_, scale_, wd_, decay_, noise_, k0, k1, step, pos0 = SCALARS(h, scale, wd, decay, noise,
                                                                  rnd, ct)
    for i in prange(p.size):
        idx = np.uint64(i)
        pos = pos0 + idx
        w, s = ELEMENT(PLOAD(p, master, i), GLOAD(g, i), GATHER(st, i), h_, scale_, wd_,
                       decay_, noise_, idx)
        PSTORE(p, master, i, w, BITS(k0, k1, step, pos, np.uint32(0)))
        SCATTER(st, i, s, k0, k1, step, pos)


#: Quantization blocks per task of the parallel loop: the float32 scratch rows are
#: allocated once a task, not once a block.
CHUNK = 64


@cache
def _quantized_template(books: tuple[str, ...]) -> Callable:
    """The step loop for blockwise 8-bit state stored in ``books`` (one code book per state
    array): ``st`` the codes, ``absmax`` each block's absolute maximum (both rewritten),
    ``qt`` the dynamic maps' tables. Generated, one straight line per state array.

    Per block: the elements stepped as in the float32 kernel, each state value decoded
    where it is read (a table-driven book first decodes the block into float32 scratch:
    a table read in the loop would keep it from vectorising), the new values kept in
    scratch rows with a running maximum of their magnitudes; then each row encoded with
    its new maximum. Loops stay in this function: Numba's inliner lost a loop-carried
    value when they lived in an inlined helper."""
    pre, state, post, enc = [], [], [], []
    for j, book in enumerate(books):
        code = quantized.book_code(book)
        pre.append(f"            c{j} = st[{j}][lo:lo + n]\n"
                   f"            a{j} = absmax[{j}][b] * np.float32({1.0 / code.largest!r})\n"
                   f"            x{j} = np.uint32(0)\n")
        if code.table:
            pre.append(f"            for k in range(n):\n"
                       f"                row{j}[k] = {code.decode.format(c=f'c{j}[k]')} * a{j}\n")
            state.append(f"row{j}[k]")
        else:
            state.append(f"{code.decode.format(c=f'c{j}[k]')} * a{j}")
        post.append(f"                row{j}[k] = s[{j}]\n"
                    f"                x{j} = magnitude_max(x{j}, s[{j}])\n")
        scaled = code.encode.format(y=f"row{j}[k] * inv")
        enc.append(f"            amax = f32_from_bits(x{j})\n"
                   f"            inv = inverse(amax, np.float32({code.largest!r}))\n"
                   f"            for k in range(n):\n"
                   f"                c{j}[k] = {scaled}\n"
                   f"            absmax[{j}][b] = amax\n")
    rows = "".join(f"        row{j} = rows[{j}]\n" for j in range(len(books)))
    src = (
        "def quantized_loop(p, g, st, absmax, qt, master, h, scale, wd, decay, noise, rnd, "
        "ct):\n"
        "    h_, scale_, wd_, decay_, noise_, k0, k1, step, pos0 = SCALARS(h, scale, wd, "
        "decay, noise, rnd, ct)\n"
        "    nblocks = (p.size + QBLOCK - 1) // QBLOCK\n"
        "    for c in prange((nblocks + CHUNK - 1) // CHUNK):\n"
        f"        rows = np.empty(({len(books)}, QBLOCK), np.float32)\n{rows}"
        "        for b in range(c * CHUNK, min(nblocks, (c + 1) * CHUNK)):\n"
        "            lo = b * QBLOCK\n"
        "            n = min(QBLOCK, p.size - lo)\n"
        "            pb = p[lo:lo + n]\n"
        "            gb = g[lo:lo + n]\n"
        "            mb = master[lo:lo + n] if master is not None else None\n"
        + "".join(pre) +
        "            for k in range(n):\n"
        "                idx = np.uint64(lo + k)\n"
        f"                w, s = ELEMENT(PLOAD(pb, mb, k), GLOAD(gb, k), ({', '.join(state)},), "
        "h_, scale_, wd_, decay_, noise_, idx)\n"
        "                PSTORE(pb, mb, k, w, BITS(k0, k1, step, pos0 + idx, np.uint32(0)))\n"
        + "".join(post) + "".join(enc))
    scope = {"__name__": __name__, "np": np, "prange": prange, **quantized.kernel_scope()}
    # compiled with this file's name: Numba's disk cache needs a source file to key on
    exec(compile(src, __file__, "exec"), scope)  # noqa: S102 - one line per state array
    fn = scope["quantized_loop"]
    fn.__name__ = f"quantized_loop_{'_'.join(books)}"
    return fn


def TRUST(p, g, s, h, scale, wd, decay, noise, index):  # noqa: N802 - placeholder
    raise NotImplementedError  # bound to rules.transforms.trust_direction(direction)


def STATE_AT(st, absmax, qt, i):  # noqa: N802 - placeholder: storage.state_reader
    raise NotImplementedError


def SUMSQ_RANGE(x, lo, hi):  # noqa: N802 - placeholder: cpu.sumsq_range()
    raise NotImplementedError


def _trust_pass(p, g, st, absmax, qt, master, h, scale, wd, decay, noise, rnd, ct,
                partials):
    """A trust-ratio rule's first pass over stored values: ``(Σ w², Σ u²)`` in float64
    over the blocks of ``drivers.cpu._trust_loop`` (the same bits as the float32 path on
    the same float32 values), each value decoded where it is read. Nothing is written:
    the second pass (``rules.transforms.direction_then_rule``) updates the state and the
    parameters from the values before the step, so each is rounded once."""
    h_, scale_, wd_, decay_, noise_, k0, k1, step, pos0 = SCALARS(h, scale, wd, decay, noise,
                                                                  rnd, ct)
    nblocks = partials.size // 2
    for b in prange(nblocks):
        lo = b * NORM_BLOCK
        n = min(NORM_BLOCK, p.size - lo)
        u = np.empty(n, np.float32)
        w = np.empty(n, np.float32)
        for k in range(n):
            i = lo + k
            wk, uk, _ = TRUST(PLOAD(p, master, i), GLOAD(g, i), STATE_AT(st, absmax, qt, i),
                              h_, scale_, wd_, decay_, noise_, np.uint64(i))
            w[k] = wk
            u[k] = uk
        partials[2 * b] = SUMSQ_RANGE(w, 0, n)
        partials[2 * b + 1] = SUMSQ_RANGE(u, 0, n)
    total_p = 0.0
    total_u = 0.0
    for b in range(nblocks):
        total_p += partials[2 * b]
        total_u += partials[2 * b + 1]
    return total_p, total_u


@cache
def trust_pass_kernel(direction: Callable, pfmt: str, gfmt: str, sfmt: str, nstate: int,
                      master: bool, par: bool, books: tuple[str, ...] | None = None
                      ) -> Callable:
    """The compiled first pass of a trust-ratio rule (:func:`_trust_pass`) for the storage
    :func:`precision_kernel` describes."""
    io = storage.param_io(pfmt, gfmt, master, False)
    fmt = "_".join(books) if books is not None else f"{sfmt}{nstate}"
    name = f"precision_trust_{direction.__name__}_{pfmt}_{gfmt}_{fmt}_{int(master)}_{_tag()}"
    return _compiled(_trust_pass, name, par,
                     TRUST=compile_tree(trust_direction(direction), device_function),
                     STATE_AT=storage.state_reader(sfmt, nstate, books),
                     SUMSQ_RANGE=cpu.sumsq_range(), SCALARS=device_function(_scalars),
                     **{k: io[k] for k in ("PLOAD", "GLOAD")})


@cache
def _tag() -> str:
    """The precision package's and this module's sources, in the kernels' names (Numba
    keys its disk cache on this file alone)."""
    from .. import precision
    from . import cpu_precision

    return source_tag(precision, cpu_precision)


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
    io = storage.param_io(pfmt, gfmt, master, stochastic)
    element = compile_tree(transformed(rule), device_function)
    fmt = "_".join(books) if books is not None else f"{sfmt}{nstate}"
    name = f"precision_{rule.__name__}_{pfmt}_{gfmt}_{fmt}_{int(master)}{int(stochastic)}_{_tag()}"
    if books is not None:
        return _compiled(_quantized_template(books), name, par, ELEMENT=element,
                         SCALARS=device_function(_scalars), QBLOCK=QBLOCK, CHUNK=CHUNK, **io)
    gather, scatter = storage.state_codec(sfmt, nstate)
    return _compiled(_precision_loop, name, par, ELEMENT=element, GATHER=gather,
                     SCATTER=scatter, SCALARS=device_function(_scalars), **io)


@cache
def sumsq_kernels(fmt: str) -> tuple[Callable, Callable]:
    """(serial, parallel) sums of squares of gradients stored as ``fmt`` (``"bfloat16"``,
    ``"float16"``), decoded to float32 in the loop: no float32 copy per step."""
    load = storage.LOADS[fmt]
    name = f"sumsq_{fmt}_{_tag()}"
    return (cpu.sumsq_kernel(False, load, name), cpu.sumsq_kernel(True, load, name))


__all__ = ["precision_kernel", "sumsq_kernels", "trust_pass_kernel"]

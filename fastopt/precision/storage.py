"""How a kernel reads and writes each storage format, one element at a time.

A precision kernel (``drivers.cpu_precision``) is the plain step loop with its reads and
writes bound to these functions: a 16-bit parameter or gradient is decoded to float32, the
rule runs in float32, and the result is rounded back to the storage format, to nearest
even or stochastically; a master copy, when kept, is read and written in float32 and the
16-bit parameter written from it. Each choice is bound at compile time, so a kernel holds
only the conversions its formats need.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

from .._jit import bind, inline
from ..drivers._state import unrolled
from . import quantized
from .formats import (
    bf16_to_f32,
    f16_to_f32,
    f32_to_bf16,
    f32_to_bf16_stochastic,
    f32_to_f16,
    f32_to_f16_stochastic,
)
from .rounding import random_bits

#: The stream of random bits the parameter's rounding uses; state k uses k + 1.
PARAM_STREAM = np.uint32(0)


def as_kernel_array(a: Any) -> Any:
    """A 16-bit array (host or device) as the uint16 patterns the kernels decode; others
    as they are."""
    return a.view(np.uint16) if np.dtype(a.dtype).itemsize == 2 else a


# --------------------------------------------------------------------- a value's reads
@inline
def load_plain(a, i):
    return a[i]


@inline
def load_bf16(a, i):
    return bf16_to_f32(a[i])


@inline
def load_f16(a, i):
    return f16_to_f32(a[i])


LOADS = {"plain": load_plain, "bfloat16": load_bf16, "float16": load_f16}


# --------------------------------------------------------------------- a value's writes
@inline
def store_plain(a, i, x, r):
    a[i] = x


@inline
def store_bf16(a, i, x, r):
    a[i] = f32_to_bf16(x)


@inline
def store_bf16_stochastic(a, i, x, r):
    a[i] = f32_to_bf16_stochastic(x, r)


@inline
def store_f16(a, i, x, r):
    a[i] = f32_to_f16(x)


@inline
def store_f16_stochastic(a, i, x, r):
    a[i] = f32_to_f16_stochastic(x, r)


STORES = {("plain", False): store_plain, ("bfloat16", False): store_bf16,
          ("bfloat16", True): store_bf16_stochastic, ("float16", False): store_f16,
          ("float16", True): store_f16_stochastic}


# --------------------------------------------------------------------- the parameter
def LOAD(a, i):  # noqa: N802 - placeholder, bound to a load above
    raise NotImplementedError


def STORE(a, i, x, r):  # noqa: N802 - placeholder, bound to a store above
    raise NotImplementedError


def param_load(p, master, i):
    """The parameter's float value, from its storage."""
    return LOAD(p, i)


def param_store(p, master, i, w, r):
    """Write the stepped parameter to its storage."""
    STORE(p, i, w, r)


def master_load(p, master, i):
    """The parameter's float value: the master copy's."""
    return master[i]


def master_store(p, master, i, w, r):
    """Write the stepped parameter: the master copy exactly, then the stored parameter
    rounded from it (to nearest even: a master copy carries what rounding drops)."""
    master[i] = w
    STORE(p, i, w, r)


@cache
def param_io(pfmt: str, gfmt: str, master: bool, rounding_: bool) -> dict[str, Callable]:
    """A kernel's reads and writes of the parameter and the gradient, for each driver:
    ``PLOAD(p, master, i)``, ``PSTORE(p, master, i, w, r)``, ``GLOAD(g, i)`` and the
    random bits ``BITS``, for parameters stored as ``pfmt``, gradients as ``gfmt``, with
    a master copy or not, rounded stochastically (without one) or not."""
    load = LOADS[pfmt]
    store = STORES[(pfmt, rounding_ and pfmt != "plain" and not master)]
    pload, pstore = ((master_load, master_store) if master else (param_load, param_store))
    tag = f"{pfmt}_{int(master)}_{int(rounding_)}"
    return {
        "PLOAD": inline(bind(pload, f"param_load_{tag}", LOAD=load)),
        "PSTORE": inline(bind(pstore, f"param_store_{tag}", STORE=store)),
        "GLOAD": LOADS[gfmt],
        "BITS": random_bits,
    }


# --------------------------------------------------------------------- state
@inline
def random_state_bits(k0, k1, step, pos, k):
    """16 random bits (the low ones) rounding state value ``k`` of element ``pos``: half of
    the word of stream ``1 + k // 2`` (the parameter's rounding uses stream 0)."""
    return random_bits(k0, k1, step, pos, np.uint32(1 + k // 2)) >> np.uint32(16 * (k % 2))


@cache
def state_codec(kind: str, n: int) -> tuple[Callable, Callable]:
    """``(gather(st, i), scatter(st, i, s, k0, k1, step, pos))`` for ``n`` state arrays
    stored as ``kind``: ``"plain"`` (the compute dtype) or ``"bfloat16"`` (read as float32,
    written rounded stochastically). Device functions, straight-line code per ``n``
    (Numba cannot loop over a tuple of arrays), compiled by each backend."""
    if kind == "plain":
        read, write = "st[{k}][i], ", "; st[{k}][i] = s[{k}]"
    elif kind == "bfloat16":
        read = "bf16_to_f32(st[{k}][i]), "
        write = ("; st[{k}][i] = f32_to_bf16_stochastic(s[{k}], "
                 "random_state_bits(k0, k1, step, pos, {k}))")
    else:
        raise ValueError(f"no element-wise codec for state stored as {kind!r}")
    scope = {"bf16_to_f32": bf16_to_f32, "f32_to_bf16_stochastic": f32_to_bf16_stochastic,
             "random_state_bits": random_state_bits}
    gather = unrolled(n, "st, i", "return ({items})", read, scope)
    scatter = unrolled(n, "st, i, s, k0, k1, step, pos", "pass{items}", write, scope)
    gather.__name__ = f"gather_{kind}_{n}"
    scatter.__name__ = f"scatter_{kind}_{n}"
    return inline(gather), inline(scatter)


# ----------------------------------------------------------- the kernels' placeholders
# The names the drivers' precision kernels call, bound per kernel (``_jit.bind``) to
# param_io's and state_codec's functions; defined once, for both drivers' templates.
@cache
def state_reader(sfmt: str, nstate: int, books: tuple[str, ...] | None) -> Callable:
    """``STATE_AT(st, absmax, qt, i)``: element ``i`` of each state array as float32,
    decoded from plain, bfloat16 or 8-bit storage (the block scale as the 8-bit step
    kernel applies it)."""
    if books is None:
        gather, _ = state_codec(sfmt, nstate)
        scope = {"gather": gather}
        src = "def state_at(st, absmax, qt, i):\n    return gather(st, i)\n"
    else:
        items = []
        for j, book in enumerate(books):
            code = quantized.book_code(book)
            items.append(f"{code.decode.format(c=f'st[{j}][i]')} * (absmax[{j}][i // QBLOCK] "
                         f"* np.float32({1.0 / code.largest!r}))")
        scope = {"np": np, "QBLOCK": quantized.QBLOCK, **quantized.kernel_scope()}
        src = f"def state_at(st, absmax, qt, i):\n    return ({', '.join(items)},)\n"
    exec(compile(src, __file__, "exec"), scope)  # noqa: S102 - one item per state array
    fn = scope["state_at"]
    fn.__name__ = f"state_at_{'_'.join(books) if books else sfmt}{nstate}"
    return inline(fn)



def PLOAD(p, master, i):  # noqa: N802 - placeholder: param_io's PLOAD
    raise NotImplementedError


def PSTORE(p, master, i, w, r):  # noqa: N802 - placeholder: param_io's PSTORE
    raise NotImplementedError


def GLOAD(g, i):  # noqa: N802 - placeholder: param_io's GLOAD
    raise NotImplementedError


def GATHER(st, i):  # noqa: N802 - placeholder: state_codec's gather
    raise NotImplementedError


def SCATTER(st, i, s, k0, k1, step, pos):  # noqa: N802 - placeholder: state_codec's scatter
    raise NotImplementedError


def BITS(k0, k1, step, pos, stream):  # noqa: N802 - placeholder: rounding.random_bits
    raise NotImplementedError

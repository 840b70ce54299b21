"""One element of a rule's state arrays, read and written as a tuple, and the per-call
scalars converted to the parameters' dtype, on every backend.

Numba cannot index a heterogeneous tuple of arrays in a loop, so :func:`gather` and
:func:`scatter` are overloaded per tuple length (``numba.extending.overload`` serves both
the CPU and the CUDA target); their Python bodies are what the CUDA simulator runs.
"""

import numpy as np
from numba.extending import overload


def gather(st, i):
    """``(st[0][i], st[1][i], ...)``: one element of each state array."""
    return tuple(a[i] for a in st)  # the Python body: what the CUDA simulator runs


def unrolled(n: int, params: str, body: str, item: str, scope: dict | None = None):
    """``def impl(params): body`` with ``{items}`` in ``body`` replaced by ``item`` for k =
    0..n-1: Numba cannot loop over a heterogeneous tuple of arrays, so each tuple length
    gets its own straight-line code (any number of state arrays)."""
    items = "".join(item.format(k=k) for k in range(n))
    scope = dict(scope or {})
    exec(f"def impl({params}):\n    {body.format(items=items)}", scope)  # noqa: S102
    return scope["impl"]


@overload(gather, inline="always")
def _gather(st, i):
    return unrolled(len(st), "st, i", "return ({items})", "st[{k}][i], ")


def scatter(st, i, s):
    """``st[k][i] = s[k]`` for every state array."""
    for a, x in zip(st, s, strict=True):
        a[i] = x


@overload(scatter, inline="always")
def _scatter(st, i, s):
    return unrolled(len(st), "st, i, s", "pass{items}", "; st[{k}][i] = s[{k}]")


def state_slice(st, lo, hi):
    """``(st[0][lo:hi], st[1][lo:hi], ...)``: views of a block of each state array."""
    return tuple(a[lo:hi] for a in st)


@overload(state_slice, inline="always")
def _state_slice(st, lo, hi):
    return unrolled(len(st), "st, lo, hi", "return ({items})", "st[{k}][lo:hi], ")


# ------------------------------------------------------------------- per-call scalars
# A kernel takes its per-step scalars as Python floats and ints, which Numba's dispatcher
# types in its fast C path (NumPy scalars cost it about 0.3 µs each), and converts them
# once, before the loop, to the parameters' dtype (docs/numba.md: a float64 scalar in a
# float32 loop would promote the whole loop to float64).

_MAX_CONSTANTS = 12


def as_dtype_of(x, p):
    """``x`` (None, a number or a tuple of numbers) in ``p``'s dtype; None stays None."""
    if x is None:
        return None
    to = p.dtype.type
    return tuple(to(v) for v in x) if isinstance(x, tuple) else to(x)


def _tuple_cast(n, to):
    names = ", ".join(f"to(x[{k}])" for k in range(n))
    scope = {"to": to}
    exec(f"def impl(x, p):\n    return ({names}{',' if n == 1 else ''})", scope)  # noqa: S102
    return scope["impl"]


@overload(as_dtype_of, inline="always")
def _as_dtype_of(x, p):
    from numba.core import types

    to = p.dtype
    if isinstance(x, types.NoneType):
        return lambda x, p: None
    if isinstance(x, types.BaseTuple):
        if len(x) > _MAX_CONSTANTS:
            raise NotImplementedError("too many per-step constants")
        return _tuple_cast(len(x), to)
    return lambda x, p: to(x)


def noise_args(noise, p):
    """The noise tuple ``(sigma, offset, step, k0, k1)`` typed for the generator: sigma in
    ``p``'s dtype, offset and step uint64, the key words uint32; None stays None."""
    if noise is None:
        return None
    sigma, offset, step, k0, k1 = noise
    return (p.dtype.type(sigma), np.uint64(offset), np.uint64(step), np.uint32(k0),
            np.uint32(k1))


@overload(noise_args, inline="always")
def _noise_args(noise, p):
    from numba.core import types

    to = p.dtype
    if isinstance(noise, types.NoneType):
        return lambda noise, p: None
    return lambda noise, p: (to(noise[0]), np.uint64(noise[1]), np.uint64(noise[2]),
                             np.uint32(noise[3]), np.uint32(noise[4]))

"""Same-traffic roofline kernels: the bytes a rule moves, with trivial arithmetic.

A rule with ``k`` state arrays reads p, g and k states and writes p and k states. These
kernels do exactly that traffic, one add per value, so no rule can beat them on memory
bandwidth; a rule's time divided by theirs is how close it is to the machine's limit.

The rules that divide by a root (AdaGrad, RMSprop, Adam, Nadam, AMSGrad) meet a second
limit when their arrays sit in cache: the core's divide/square-root unit, one ``√`` and
one ``/`` per value (on the project's Zen 3 cores a vector of 8 float32 takes about 10 cycles
for the root and 5 for the division). :func:`divider_kernel` does the same traffic plus
exactly that work, so it is the floor for those rules at sizes the cache holds.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from numba import prange

from .. import parallel
from .._jit import bind, cpu_jit, device_function


def _traffic0(p, g, st):
    for i in prange(p.size):
        p[i] = p[i] + g[i]


def COMBINE(u, v):  # noqa: N802 - placeholder
    raise NotImplementedError  # bound to _add (roofline) or _divide (divider floor)


# State arrays are indexed through the tuple (st[0][i]); unpacking the tuple first
# (``a, b = st``) made numba 0.68's parfor drop the writes to a and b.
def _traffic1(p, g, st):
    for i in prange(p.size):
        x = st[0][i] + g[i]
        st[0][i] = x
        p[i] = p[i] + COMBINE(g[i], x)


def _traffic2(p, g, st):
    for i in prange(p.size):
        x = st[0][i] + g[i]
        y = st[1][i] + g[i]
        st[0][i] = x
        st[1][i] = y
        p[i] = p[i] + COMBINE(x, y)


def _traffic3(p, g, st):
    for i in prange(p.size):
        x = st[0][i] + g[i]
        y = st[1][i] + g[i]
        z = st[2][i] + g[i]
        st[0][i] = x
        st[1][i] = y
        st[2][i] = z
        p[i] = p[i] + COMBINE(x, y + z)


def _add(u, v):
    return u + v


def _divide(u, v):
    """One square root and one division (|·| keeps the root real whatever v holds)."""
    return u / math.sqrt(abs(v))


_LOOPS = (_traffic0, _traffic1, _traffic2, _traffic3)


@cache
def roofline_kernel(n_state: int, parallel: bool = True):
    """The same-traffic kernel for a rule with ``n_state`` state arrays."""
    mode = "parallel" if parallel else "serial"
    loop = bind(_LOOPS[n_state], f"roofline{n_state}_{mode}", COMBINE=device_function(_add))
    return cpu_jit(loop, parallel=parallel)


@cache
def divider_kernel(n_state: int, parallel: bool = True):
    """The same-traffic kernel with one square root and one division per value, for a rule
    with ``n_state`` (1 to 3) state arrays."""
    if n_state < 1:
        raise ValueError("the divider floor needs at least one state array")
    mode = "parallel" if parallel else "serial"
    loop = bind(_LOOPS[n_state], f"divider{n_state}_{mode}", COMBINE=device_function(_divide))
    return cpu_jit(loop, parallel=parallel)


# ------------------------------------------------------------ fewer bytes per parameter
def _narrow_source(n_state: int, int_param: bool, int_state: bool) -> str:
    """A same-traffic loop over parameters and gradients of any dtype and state arrays
    stored as floats or integers (bfloat16 bits, 8-bit codes): every array read and
    written once, integers as a XOR, the floats combined as in the loops above."""
    lines = ["def narrow(p, g, st):", "    for i in prange(p.size):",
             "        gi = np.float32(g[i])"]
    for k in range(n_state):
        write = f"x{k} ^ ONE_S" if int_state else f"x{k} + gi"
        lines += [f"        x{k} = st[{k}][i]", f"        st[{k}][i] = {write}",
                  f"        u{k} = gi + np.float32(x{k})"]
    u = "u0" if n_state else "gi"
    v = {0: "gi", 1: "gi", 2: "u1", 3: "u1 + u2"}[n_state]
    if int_param:  # 16-bit parameters: a bit that depends on the combined value
        lines.append(f"        p[i] = p[i] ^ TO_P(COMBINE({u}, {v}) > np.float32(0))")
    else:
        lines.append(f"        p[i] = p[i] + COMBINE({u}, {v})")
    return "\n".join(lines) + "\n"


@cache
def narrow_kernel(n_state: int, param_dtype, state_dtype, divide: bool = False,
                  parallel: bool = True):
    """The same-traffic kernel (``divide``: plus one √ and one ÷ per value, the divider
    floor) for a step over ``param_dtype`` parameters and gradients (float32, or a 16-bit
    dtype, taken as its uint16 bits) and ``n_state`` state arrays of ``state_dtype``
    (``np.uint16`` for bfloat16 state, ``np.uint8`` for 8-bit codes, float32 for a
    master copy beside 16-bit parameters). It moves what a low-precision step moves, less
    the 8-bit block maxima (4 bytes per 256 values)."""
    int_param = np.dtype(param_dtype).itemsize == 2
    pt = np.uint16 if int_param else np.dtype(param_dtype).type
    st = np.dtype(state_dtype).type
    int_state = np.dtype(st).kind in "ui"
    scope = {"np": np, "prange": prange, "ONE_S": st(1) if int_state else None,
             "TO_P": np.uint16,
             "COMBINE": device_function(_divide if divide else _add)}
    source = _narrow_source(n_state, int_param, int_state)
    exec(compile(source, __file__, "exec"), scope)  # noqa: S102
    mode = "parallel" if parallel else "serial"
    name = (f"narrow{n_state}_{np.dtype(pt).name}_{np.dtype(st).name}_"
            f"{'divide' if divide else 'add'}_{mode}")
    return cpu_jit(bind(scope["narrow"], name, __name__=__name__), parallel=parallel)


def bytes_moved(n: int, n_state: int, dtype) -> int:
    """Bytes one step moves: read p, g, states; write p, states."""
    return n * np.dtype(dtype).itemsize * (2 + n_state + 1 + n_state)


def parallel_yardstick(n: int, n_state: int, dtype) -> bool:
    """Whether a step's yardsticks run their parallel kernels: wherever fastopt could
    choose its own parallel kernel (two or more threads, at least
    ``fastopt.parallel.PARALLEL_MIN_BYTES`` moved), so they show the best either path
    can do."""
    return (parallel.get_num_threads() > 1
            and bytes_moved(n, n_state, dtype) >= parallel.PARALLEL_MIN_BYTES)

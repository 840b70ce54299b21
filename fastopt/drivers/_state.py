"""One element of a rule's state arrays, read and written as a tuple, on every backend.

Numba cannot index a heterogeneous tuple of arrays in a loop, so :func:`gather` and
:func:`scatter` are overloaded per tuple length (``numba.extending.overload`` serves both
the CPU and the CUDA target); their Python bodies are what the CUDA simulator runs.
"""

from numba.extending import overload


def gather(st, i):
    """``(st[0][i], st[1][i], ...)``: one element of each state array."""
    return tuple(a[i] for a in st)  # the Python body: what the CUDA simulator runs


@overload(gather, inline="always")
def _gather(st, i):
    n = len(st)
    if n == 0:
        return lambda st, i: ()
    if n == 1:
        return lambda st, i: (st[0][i],)
    if n == 2:
        return lambda st, i: (st[0][i], st[1][i])
    if n == 3:
        return lambda st, i: (st[0][i], st[1][i], st[2][i])
    raise NotImplementedError("fastopt rules keep at most three state arrays")


def scatter(st, i, s):
    """``st[k][i] = s[k]`` for every state array."""
    for a, x in zip(st, s, strict=True):
        a[i] = x


@overload(scatter, inline="always")
def _scatter(st, i, s):
    n = len(st)
    if n == 0:
        def impl(st, i, s):
            pass
    elif n == 1:
        def impl(st, i, s):
            st[0][i] = s[0]
    elif n == 2:
        def impl(st, i, s):
            st[0][i] = s[0]
            st[1][i] = s[1]
    elif n == 3:
        def impl(st, i, s):
            st[0][i] = s[0]
            st[1][i] = s[1]
            st[2][i] = s[2]
    else:
        raise NotImplementedError("fastopt rules keep at most three state arrays")
    return impl

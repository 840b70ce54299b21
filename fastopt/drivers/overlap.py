"""The overlap rules of an optimizer step, in one place, for every entry point.

A step writes each parameter and its state arrays in place, so each of those must share no
memory with any other array of the step; a gradient may be its own parameter (the step
then reads each value before writing it), and gradients may share memory with each other
(they are only read). The functional calls (one array or lists), the optimizers (their
parameters once, their gradients at each step, on the host and on a GPU) and the fast
paths all ask here. (BatchNorm's rules are :mod:`fastopt.batchnorm.overlap`, which uses
:func:`first_overlap`.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import cpu


def first_overlap(spans: Sequence[tuple[int, int]],
                  allowed: Callable[[int, int], bool]) -> tuple[int, int] | None:
    """Indices ``(i, j)``, i < j, of two overlapping ``(first byte, byte count)`` spans
    that ``allowed(i, j)`` refuses, or None. One sweep in address order: with no overlap at
    all (the common case) it compares each span with the one open before it."""
    # No overlap at all (the common case) is told in one pass: NumPy's for many spans,
    # Python's for a few (cheaper than NumPy's calls there).
    if len(spans) > 16:
        a = np.array(spans, np.uint64).reshape(-1, 2)
        a = a[a[:, 1] > 0]
        a = a[np.argsort(a[:, 0], kind="stable")]
        if (a[1:, 0] >= np.maximum.accumulate(a[:, 0] + a[:, 1])[:-1]).all():
            return None
    else:
        end = 0
        for a0, na in sorted(spans):
            if na and a0 < end:
                break
            end = max(end, a0 + na)
        else:
            return None
    order = sorted(range(len(spans)), key=spans.__getitem__)
    open_: list[int] = []
    for k in order:
        a0, na = spans[k]
        if na == 0:
            continue
        open_ = [i for i in open_ if spans[i][0] + spans[i][1] > a0]
        for i in open_:
            pair = (i, k) if i < k else (k, i)
            if not allowed(*pair):
                return pair
        open_.append(k)
    return None


def check_entry_apart(be: Any, p: Any, g: Any, state: Sequence[Any], where: str) -> None:
    """One parameter, its gradient and its state arrays (checked arrays of driver ``be``)."""
    if g is not p and be.overlap(g, p) and be.span(g) != be.span(p):
        raise ValueError(f"g{where} overlaps p{where}: the step would read gradients it has "
                         "already overwritten; give the gradient memory of its own")
    for k, s in enumerate(state):
        if be.overlap(s, p) or be.overlap(s, g):
            raise ValueError(f"state array {k}{where} overlaps p or g")
        for j in range(k):
            if be.overlap(s, state[j]):
                raise ValueError(f"state arrays {j} and {k}{where} overlap")


def check_params_apart(spans: Sequence[tuple[int, int]]) -> None:
    """An optimizer's parameters (their spans, in order) share no memory."""
    hit = first_overlap(spans, lambda i, j: False)
    if hit is not None:
        raise ValueError(f"params[{hit[0]}] and params[{hit[1]}] share memory")


def check_grads_apart(spans: list[tuple[int, int]]) -> None:
    """``spans``: an optimizer's parameters' then its gradients', in the params' order. A
    gradient may be exactly its own parameter; gradients may share memory."""
    n = len(spans) // 2

    def allowed(i: int, k: int) -> bool:
        return i >= n or (k - n == i and spans[i] == spans[k])

    hit = first_overlap(spans, allowed)
    if hit is not None:
        i, k = hit
        raise ValueError(f"grads[{k - n}] overlaps params[{i}]: the step would read "
                         "gradients it has already overwritten; give the gradients "
                         "memory of their own")


def host_grads_apart(param_owners: frozenset[int] | None, params: Sequence[np.ndarray],
                     grads: Sequence[np.ndarray]) -> None:
    """Host gradients apart from the parameters: a gradient whose memory's owner
    (``cpu.owner``) holds no parameter cannot overlap one (0.15 us a gradient here;
    ``param_owners``: the ids of the parameters' owners, None where one is foreign);
    otherwise the spans are compared, in one sweep."""
    if param_owners is not None:
        for g in grads:
            o = cpu.owner(g)
            if o is None or id(o) in param_owners:
                break
        else:
            return
    check_grads_apart([cpu.span(a) for a in (*params, *grads)])


def device_grads_apart(param_spans: Sequence[tuple[int, int]], addrs: Sequence[int]) -> None:
    """GPU gradients (their addresses, in the params' order; each has its parameter's byte
    count) apart from every parameter."""
    if len(param_spans) == 1:  # one parameter: one comparison (a GPU step is host-bound)
        (p0, n), a = param_spans[0], addrs[0]
        if a == p0 or a + n <= p0 or p0 + n <= a:
            return
    check_grads_apart([*param_spans, *((a, n) for a, (_, n) in zip(addrs, param_spans,
                                                                   strict=True))])


def check_entries_apart(be: Any, ps: list, gs: list, sts: list,
                         owners: list[int] | None = None) -> None:
    """The overlap checks of a list call, all at once (one span per array): each array a
    step writes (p[j] and its state) apart from every other array, but g[j] may be p[j]
    itself, and gradients may share memory with each other.

    Host arrays whose memory belongs to different NumPy arrays cannot overlap, so only
    those sharing an owner (views of one buffer) have their spans compared: 161 separate
    arrays cost ~0.1 ms here, views of one buffer ~1 ms. ``owners``: the owners' ids, where
    the caller has them."""
    m = 2 + (len(sts[0]) if sts else 0)  # arrays per entry: array i is entry i // m's
    arrays = [a for p, g, st in zip(ps, gs, sts, strict=True) for a in (p, g, *st)]
    suspects: Sequence[int] = range(len(arrays))
    if not be.ON_DEVICE:
        if owners is None:
            found = list(map(cpu.owner, arrays))
            if all(o is not None for o in found):  # all memory allocated by ndarrays
                owners = list(map(id, found))
        if owners is not None:
            if len(set(owners)) == len(owners):
                return
            count = Counter(owners)
            suspects = [i for i, k in enumerate(owners) if count[k] > 1]
    spans = [be.span(arrays[i]) for i in suspects]

    def allowed(a: int, b: int) -> bool:
        (ja, ka), (jb, kb) = divmod(suspects[a], m), divmod(suspects[b], m)
        if ka == 1 and kb == 1:
            return True  # gradients are only read
        return ja == jb and {ka, kb} == {0, 1} and spans[a] == spans[b]  # g[j] is p[j]

    hit = first_overlap(spans, allowed)
    if hit is not None:
        a, b = (_role_name(*divmod(suspects[i], m)) for i in hit)
        raise ValueError(f"{a} and {b} share memory: each array a step writes needs memory "
                         "of its own (the same array twice in the lists?)")


def _role_name(j: int, kind: int) -> str:
    return ("p", "g")[kind] + f"[{j}]" if kind < 2 else f"state array {kind - 2}[{j}]"

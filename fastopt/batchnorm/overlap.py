"""BatchNorm's overlap rules, once for the host's detailed checks and the GPU path.

Each array a call writes must share no memory with any other array of the call: the
forward writes y (``out``), the statistics (``stats_out``) and, in training, the running
statistics; the backward writes dx, dα and dβ. Two exceptions: dx may be dy itself (the
gradient then overwrites dy), and on the host y may be x itself in inference. The two
running statistics are apart even when only read. (The host kernels test the same rules
on spans before writing, ``kernels._forward_apart``/``_backward_apart``; a refusal there
comes here for the message.)

The arrays are ``(array or None, name)`` pairs with the written ones first; each backend
passes its ``span`` (first byte, byte count) and, on the host, ``exact``
(``np.shares_memory``: interleaved strided views whose spans overlap share no byte).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..drivers.overlap import first_overlap

#: Messages for overlapping pairs; any other pair gets the generic one.
MESSAGES = {
    ("out", "x"): "out overlaps x; backward reads x (out=x is allowed with training=False "
                  "only, and then backward cannot run)",
    ("running_mean", "running_var"): "running_mean and running_var share memory",
    ("out (dx)", "the forward's x"): "out (dx) overlaps the forward's x",
    ("out (dx)", "dy"): "out (dx) partly overlaps dy (out=dy itself is allowed)",
    ("out (dgamma)", "out (dbeta)"): "out (dgamma) and out (dbeta) share memory",
}

Span = Callable[[Any], tuple[int, int]]
Pairs = Sequence[tuple[Any, str]]


def check_forward(span: Span, x, gamma, beta, running_mean, running_var, out, stats_out,
                  training: bool, *, out_may_be_x: bool, exact: Callable | None = None,
                  messages: dict = MESSAGES, num_batches_tracked=None) -> None:
    """:func:`fastopt.batchnorm.forward`'s rules (``out``, ``stats_out``: None when not
    given; ``out_may_be_x``: whether y may be written over x itself, in inference;
    ``num_batches_tracked``: the counter when the call increments it, a host array)."""
    arrays = [(out, "out"), (stats_out, "stats_out"),
              (num_batches_tracked, "num_batches_tracked"), (running_mean, "running_mean"),
              (running_var, "running_var"), (x, "x"), (gamma, "gamma"), (beta, "beta")]
    same_ok = (("out", "x"),) if out_may_be_x and not training else ()
    _check(arrays, _spans(span, arrays), 5 if training else 3, same_ok, ((3, 4),), exact,
           messages)


def check_backward(span: Span, dy, cache, dx, dgamma, dbeta, *,
                   exact: Callable | None = None) -> None:
    """:func:`fastopt.batchnorm.backward`'s rules (``dx``, ``dgamma``, ``dbeta``: None
    when not given): the outputs apart from everything the backward reads (x, dy, gamma,
    and in training the saved mean and 1/√(σ² + ε), rows 0 and 2 of the forward's
    statistics) and from each other."""
    arrays = [(dx, "out (dx)"), (dgamma, "out (dgamma)"), (dbeta, "out (dbeta)"),
              (cache.x, "the forward's x"), (dy, "dy"), (cache.gamma, "the forward's gamma")]
    spans = _spans(span, arrays)
    if cache.training:
        stats = cache.stats
        if exact is not None:  # host: the rows themselves (any layout)
            rows = (stats[0], stats[2])
            row_spans = [span(rows[0]), span(rows[1])]
        else:  # GPU: the rows' spans from the contiguous (3, C) array's own (a view of a
            rows = (None, None)  # row of a GPU array costs ~30 us of host time)
            first, n = span(stats)
            row_spans = [(first, n // 3), (first + 2 * (n // 3), n // 3)]
        arrays += [(rows[0], "the forward's mean"), (rows[1], "the forward's inv_std")]
        spans += row_spans
    _check(arrays, spans, 3, (("out (dx)", "dy"),), (), exact, MESSAGES)


def _spans(span: Span, arrays: Pairs) -> list[tuple[int, int]]:
    return [(0, 0) if a is None else span(a) for a, _ in arrays]


def _check(arrays: Pairs, spans: list[tuple[int, int]], written: int, same_ok: tuple,
           also: tuple, exact: Callable | None, messages: dict) -> None:
    """Each of the first ``written`` arrays apart from every other, the index pairs in
    ``also`` apart, except a pair of names in ``same_ok`` that is the very same buffer.
    ``spans[i]`` is array i's; ``exact`` judges the pairs whose spans overlap."""

    def allowed(i: int, j: int) -> bool:
        if i >= written and (i, j) not in also:
            return True  # both only read
        if (arrays[i][1], arrays[j][1]) in same_ok and spans[i] == spans[j]:
            return True
        return exact is not None and not exact(arrays[i][0], arrays[j][0])

    hit = first_overlap(spans, allowed)
    if hit is not None:
        what, other = (arrays[k][1] for k in hit)
        raise ValueError(messages.get(
            (what, other), f"{what} shares memory with {other}; {what} is written, so give it "
                           "memory of its own"))

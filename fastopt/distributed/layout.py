"""Which values each rank steps, and where they travel: the shard layout (no MPI here).

The one-process optimizer steps *segments*: runs of its layout (an array, or neighbouring
arrays of one group of a FlatParams). A sharded optimizer cuts them into *pieces*:

- every cut falls on a multiple of :data:`GRAIN` values from its segment's start. GRAIN is
  the norm reduction's block (``drivers.cpu.BLOCK``, 4096), a multiple of the 8-bit
  state's quantization block (256): a shard's float64 block partials of the gradient norm
  are the one-process partials, and no 8-bit block straddles two ranks;
- a trust-ratio rule's segment (LAMB, LARS: one array, whose norms the ratio takes) is
  never cut;
- rank r takes the grains whose first value falls in ``[ceil(rT/N), ceil((r+1)T/N))`` of
  the T stepped values: contiguous, in layout order, within one grain of an even split.

The gradients and parameters travel through one contiguous *communication buffer* per
kind, split into one contiguous range per rank (``Alltoallv`` and ``Allgatherv`` take one
range per rank). Over a FlatParams whose arrays this optimizer steps all, the buffers are
``flat.grad`` and ``flat.data`` themselves (*direct*: nothing is copied); otherwise (a list
of arrays, or a FlatParams with arrays left out) the segments are packed end to end into
buffers of the wrapper's (*packed*), so nothing outside the stepped values is sent or
written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..drivers import cpu
from ..precision import quantized

#: Values per cut: the norm reduction's block, a multiple of the 8-bit state's block.
GRAIN = cpu.BLOCK
assert GRAIN % quantized.QBLOCK == 0

Piece = tuple[int, int, int]  # (segment, start, stop), values of the segment


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def partition(segments: list[tuple[int, int, bool]], ranks: int) -> list[list[Piece]]:
    """Each rank's pieces of ``segments`` (``(layout offset, size, whole)`` each), in
    layout order; a rank may get none (fewer grains than ranks)."""
    total = sum(n for _, n, _ in segments)
    bounds = [_ceil_div(r * total, ranks) for r in range(ranks + 1)]
    out: list[list[Piece]] = [[] for _ in range(ranks)]
    start = 0  # the segment's first value among the stepped values
    for i, (_, n, whole) in enumerate(segments):
        if whole:
            r = next(q for q in range(ranks) if bounds[q] <= start < bounds[q + 1])
            out[r].append((i, 0, n))
        else:
            grains = _ceil_div(n, GRAIN)

            def first(q: int, start: int = start, grains: int = grains) -> int:
                """The first grain of segment i that rank q (or a later one) takes."""
                if q >= ranks:
                    return grains
                return min(grains, max(0, _ceil_div(bounds[q] - start, GRAIN)))

            for q in range(ranks):
                k0, k1 = first(q), first(q + 1)
                if k1 > k0:
                    out[q].append((i, k0 * GRAIN, min(k1 * GRAIN, n)))
        start += n
    return out


@dataclass(frozen=True)
class CommLayout:
    """Where each rank's values lie in the communication buffers.

    ``ranges[r]``: rank r's ``(first, stop)`` in them; ``offsets[i]``: segment i's first
    value in them; ``size``: their length; ``direct``: the buffers are the FlatParams'."""

    ranges: tuple[tuple[int, int], ...]
    offsets: tuple[int, ...]
    size: int
    direct: bool

    @property
    def counts(self) -> list[int]:
        return [b - a for a, b in self.ranges]

    @property
    def displs(self) -> list[int]:
        return [a for a, _ in self.ranges]

    def piece_offset(self, rank: int, piece: Piece) -> int:
        """Where ``piece`` of ``rank`` starts in that rank's range."""
        i, a, _ = piece
        return self.offsets[i] + a - self.ranges[rank][0]


def comm_layout(segments: list[tuple[int, int, bool]], parts: list[list[Piece]],
                direct: bool) -> CommLayout:
    """The communication layout of ``parts`` (from :func:`partition`). ``direct``: the
    buffers are the layout itself (a FlatParams' ``data`` and ``grad``): offsets are layout
    offsets, and the ranges tile everything from the first segment to the end of the last,
    padding between segments included (zeros, never stepped); else the segments are packed
    end to end."""
    if direct:
        offsets = [lo for lo, _, _ in segments]
    else:
        offsets = list(np.cumsum([0] + [n for _, n, _ in segments[:-1]]).tolist())
    end = offsets[-1] + segments[-1][1]
    ranks = len(parts)
    ranges: list[tuple[int, int]] = [(0, 0)] * ranks
    stop = end
    for r in range(ranks - 1, -1, -1):
        first = offsets[parts[r][0][0]] + parts[r][0][1] if parts[r] else stop
        if r == 0:
            first = offsets[0]
        ranges[r] = (first, stop)
        stop = first
    return CommLayout(tuple(ranges), tuple(int(o) for o in offsets), int(end), direct)

"""BatchNorm's CPU kernels: blocked float64 statistics and single-pass element-wise loops.

**One layout for all inputs.** Every input is read in place (a reshaped view, never a
transposing copy) as ``(N, C, S)`` with channel ``c``'s values at ``(n·C + c)·S + s``:

* ``axis=1``: ``(N, C, *spatial)`` with ``S`` = product of the spatial dims;
* channels-last ``axis=-1`` ``(N, *spatial, C)`` and ``(N, C)``: ``(M, C, 1)``, with ``M``
  = N × spatial rows of C channels.

**Passes over memory** (x and dy being the big arrays):

* training forward: statistics (read x), then normalise (read x, write y);
* training backward: Σdy and Σdy·(x − μ) (read dy, x), then dx (read dy, x, write dx);
* inference forward: one pass (read x, write y); inference backward: one pass (read dy,
  x, write dx), the sums for dα and dβ taken on the way.

A kernel call does one whole forward or backward: its passes, the serial combine of the
per-tile partials and the per-channel constants in between (no NumPy temporaries).

**Two ways to run the training passes.** *Grouped* (most image shapes, see
:func:`group_channels`): each parallel task owns a group of whole channels and does both
passes over it back to back, its statistics and constants in between, so the second pass
reads x (and dy) from cache, not from main memory. *Tiled* (few channels, or channel
groups too big for the cache, e.g. ``(N, C)`` inputs): each pass is a parallel loop over
all tiles, with a serial combine of the partials in between.

**Tiles.** Every pass loops over the same fixed tiles, in one ``prange``: a tile is
(block of ``G`` samples, chunk of ``CC`` channels, piece of ``P`` values of each run).
CC > 1 only with whole runs, so a tile's part of one sample is one contiguous segment of
``W = CC·P`` values, at least :data:`SEGMENT` long when the shape has them; consecutive
tiles follow memory order. Long runs (S > SEGMENT) are cut into equal pieces of at most
:data:`MAX_PIECE` values. Reductions accumulate column-wise over the tile's samples,
``acc[j] += x[base_n + j]``: long vectorised loops whatever S is (1 for channels-last, 49
for 7×7, 3136 for 56×56), then fold each channel's P columns into one float64 partial.
Per-channel constants are spread over the W columns once per tile for the same reason.

Tile boundaries, and the choice between the grouped and the tiled passes, depend on the
shape only, never on the thread count. The partials of each channel are combined serially
in tile order, so every statistic has the same bits at any thread count (and in the
serial kernel).

**Statistics** (forward): per tile and channel, the sum and the centred sum of squares
``M2_q = Σ (x − x̄_q)²`` around the tile's own mean x̄_q, in one sweep over the tile with
the values shifted by the channel's first value there (the shifted-data algorithm, see
:func:`_stats_tile`). The combine uses the exact decomposition
``M2 = Σ_q [M2_q + n_q (x̄_q − μ)²]`` (Chan, Golub & LeVeque 1979), which has no
``Σx² − nμ²`` cancellation. All in float64; y and dx are computed in x's dtype from
per-channel constants rounded once.

**Compilation** is lazy: each kernel is compiled on first use, as a serial kernel and as a
parallel one (which runs is :mod:`fastopt.parallel`'s choice, by measured speed: both give
the same bits), per dtype, and cached on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
from numba import prange

from .. import parallel
from .._jit import announce_compile, bind, compile_tree, cpu_jit, device_function, source_tag
from . import equations
from .equations import backward_coefficients, input_gradient, normalize, running_moments
from .equations import inv_std as inv_std_of

#: Values per tile (64 KB of float32) when its rows are strided pieces of the samples.
BLOCK = 16384

#: Values per tile when a tile's rows are whole samples ((N, C) and channels-last inputs
#: up to 1024 channels): the tile is then one contiguous block. Measured at (256, 1024),
#: 2 threads, four alternating process pairs: the forward kernel took 3.1x the time of a
#: copy pass instead of 3.9x with BLOCK-sized tiles (16 rows), the backward 4.1-4.7x
#: instead of 4.4-4.8x. With strided rows, as in (128, 256, 14, 14), bigger tiles were
#: 8-19% slower, so those keep BLOCK.
CONTIGUOUS_BLOCK = 65536

#: Shortest contiguous stretch (values) a tile reads per sample, when C·S allows.
SEGMENT = 1024

#: Longest piece of one channel's run in a tile (runs longer than SEGMENT are cut into
#: equal pieces of at most this many values).
MAX_PIECE = 4096

#: Grouped training passes: a task takes whole channels (the tiles' channel chunk, all N
#: samples, every piece of the runs), computes their statistics, then normalises them
#: while its part of x is still in cache (L2, or the shared L3); the backward likewise
#: takes the sums and then dx. Main memory then sees x once in the forward instead of
#: twice, and x and dy once in the backward instead of twice: 7 array passes per training
#: step instead of 10. Used when a group holds at most this many values per array (4 MB
#: of float32) and there are at least GROUP_MIN_TASKS groups to share among the threads.
#: Measured here (2 threads, float32, forward/backward time over a copy pass, three
#: alternating process pairs): (64, 64, 56, 56) 1.10-1.16x/1.55-1.64x instead of
#: 1.51-1.58x/2.18-2.35x; (128, 256, 14, 14) 1.29-1.41x/1.79-1.89x instead of
#: 1.50-1.75x/2.33-2.66x; (128, 64, 56, 56), 1.6 MB groups, 1.15-1.20x/1.63-1.68x instead
#: of 1.74-1.97x/2.71-2.81x. With 12.8 MB groups ((1024, 16, 56, 56), more than the cache
#: holds) neither path was faster. Even 8 groups beat the tiled passes here:
#: (64, 8, 112, 112) 1.30-1.35x/1.97x instead of 1.60-1.69x/2.30-2.45x (4 groups did too,
#: on two threads; 8 keeps a bigger machine's threads busy). Fixed numbers, never the
#: thread count, so a shape always takes the same path (same bits at any thread count).
GROUP_MAX_VALUES = 1 << 20
GROUP_MIN_TASKS = 8

#: float64 accumulators of a column fold (see ``_acc_sum``).
LANES = 64


# ----------------------------------------------------------------------------- geometry


def tiles(n: int, c: int, s: int) -> tuple[int, int, int, int, int, int]:
    """``(G, CC, P, sample blocks, channel chunks, pieces per run)`` of the tiling of an
    ``(n, c, s)`` array: a tile is G samples × CC channels × a piece of P values of each
    run (CC > 1 only with whole runs, so a tile's part of one sample is contiguous)."""
    if s <= SEGMENT:
        cc = min(c, -(-SEGMENT // s))
        p = s
        npc = 1
    else:
        cc = 1
        npc = -(-s // MAX_PIECE)
        p = -(-s // npc)
    # A tile of whole samples is one contiguous block: a bigger one keeps its locality and
    # spreads the per-tile work (zeroing, folding the columns) over more rows.
    block = CONTIGUOUS_BLOCK if cc == c and p == s else BLOCK
    g = max(1, block // (cc * p))
    return g, cc, p, -(-n // g), -(-c // cc), npc


_tiles_jit = device_function(tiles)


def group_channels(n: int, c: int, s: int) -> int:
    """Channels per task of the grouped training passes (the tiles' channel chunk), or 0
    where the shape takes the tiled passes (see :data:`GROUP_MAX_VALUES`). Depends on the
    shape only."""
    g, cc, p, nsb, ncc, npc = _tiles_jit(n, c, s)
    if ncc < GROUP_MIN_TASKS or n * cc * s > GROUP_MAX_VALUES:
        return 0
    return cc


_group_channels_jit = device_function(group_channels)


# ------------------------------------------------------------ float64 lane accumulators
# A run of values is folded into LANES float64 accumulators (``acc[k] += x[lo + i·LANES
# + k]``, the tail into acc[:tail]), then the lanes are summed in a fixed tree order. The
# column-wise add has no loop-carried dependency, so LLVM vectorises it without fastmath
# (measured: ~3x faster than eight scalar float64 chains, which it did not vectorise), and
# the order of every addition is fixed by the shape.
#
# Hot loops index with uint64 (``U``): numba then emits no negative-index wraparound,
# which would block vectorisation (5-7x slower loops here), and no slicing code (half the
# compile time of slice-and-reshape views). Keep every operand of index arithmetic uint64:
# uint64 mixed with int64 gives float64 in numba.

U = np.uint64


def _acc_sum(x, lo, hi, acc):
    """``acc[k] += Σ_i x[lo + i·LANES + k]`` in float64 (lo, hi: uint64)."""
    L = U(LANES)
    nr = (hi - lo) // L
    for i in range(nr):
        b = lo + i * L
        for k in range(L):
            acc[k] += np.float64(x[b + k])
    b = lo + nr * L
    for k in range(hi - b):
        acc[k] += np.float64(x[b + k])


def _lanes_total(acc):
    """``Σ_k acc[k]`` as a fixed pairwise tree (vectorises), and the lanes reset to zero."""
    for k in range(32):
        acc[k] += acc[k + 32]
    for k in range(16):
        acc[k] += acc[k + 16]
    for k in range(8):
        acc[k] += acc[k + 8]
    for k in range(4):
        acc[k] += acc[k + 4]
    t = (acc[0] + acc[2]) + (acc[1] + acc[3])
    for k in range(LANES):
        acc[k] = 0.0
    return t


assert LANES == 64, "_lanes_total is written for 64 lanes"

_acc_sum_jit = device_function(_acc_sum)
_lanes_total_jit = device_function(_lanes_total)


# ------------------------------------------------------------------------------ tiles
# x, y, dy, dx are flat 1-D views. Tile t is (sample block sb, channel chunk cb, piece p),
# t = (sb·ncc + cb)·npc + p (memory order). Its part of sample n is the segment of
# W = (c1 − c0)·(s1 − s0) values at (n·C + c0)·S + s0; column j of it belongs to channel
# c0 + j // (s1 − s0). Float64 partials are (Q, C) arrays, row q = sb·npc + p (the
# combine then runs over q in order, vectorised across channels). The tile functions take
# the tile as its box ``(q, n0, n1, c0, c1, s0, s1)``: :func:`_tile` of t, or a whole
# channel group (:func:`group_channels`).


def _tile(t, N, C, S):
    """``(q, n0, n1, c0, c1, s0, s1)`` of tile ``t``."""
    G, CC, P, nsb, ncc, npc = _tiles_jit(N, C, S)
    p = t % npc
    u = t // npc
    cb = u % ncc
    sb = u // ncc
    n0 = sb * G
    c0 = cb * CC
    s0 = p * P
    return sb * npc + p, n0, min(N, n0 + G), c0, min(C, c0 + CC), s0, min(S, s0 + P)


def _group_tile(q, N, c0, c1, S, P):
    """The box of piece ``q`` of channels c0..c1 over all N samples: a grouped task's tile
    (typed as :func:`_tile`'s, so the tile functions compile once)."""
    s0 = q * P
    return q, np.int64(0), N, c0, c1, s0, min(S, s0 + P)


def _count(q, N, C, S):
    """Values behind partial column ``q`` (per channel)."""
    G, CC, P, nsb, ncc, npc = _tiles_jit(N, C, S)
    sb = q // npc
    p = q - sb * npc
    return (min(N, sb * G + G) - sb * G) * (min(S, p * P + P) - p * P)


def _ntiles(size, C, S):
    G, CC, P, nsb, ncc, npc = _tiles_jit(size // (C * S), C, S)
    return nsb * ncc * npc


def _partials(size, C, S):
    """A float64 (Q, C) partials array, Q = sample blocks × pieces."""
    G, CC, P, nsb, ncc, npc = _tiles_jit(size // (C * S), C, S)
    return np.empty((nsb * npc, C))


def _fold_columns(acc, c0, c1, P, out, q):
    """``out[q, c] = Σ_s acc[(c − c0)·P + s]`` per channel (lanes, fixed order)."""
    row = out[q]
    if P == 1:
        b = U(c0)
        for j in range(U(c1 - c0)):
            row[b + j] = acc[j]
        return
    lanes = np.zeros(LANES)
    for c in range(c0, c1):
        off = U((c - c0) * P)
        _acc_sum_jit(acc, off, off + U(P), lanes)
        row[c] = _lanes_total_jit(lanes)


def _columns(v, c0, c1, P):
    """Per-channel values ``v[c0:c1]`` spread over the tile's columns: column
    ``(c − c0)·P + s`` holds ``v[c]`` (with P = 1, channels-last, just a view)."""
    if P == 1:
        return v[c0:c1]
    out = np.empty((c1 - c0) * P, v.dtype)
    for c in range(c0, c1):
        off = U((c - c0) * P)
        val = v[c]
        for j in range(off, off + U(P)):
            out[j] = val
    return out


_tile_jit = device_function(_tile)
_group_tile_jit = device_function(_group_tile)
_count_jit = device_function(_count)
_ntiles_jit = device_function(_ntiles)
_partials_jit = device_function(_partials)
_fold_columns_jit = device_function(_fold_columns)
_columns_jit = device_function(_columns)


def _stats_tile(box, x, C, S, psum, pm2):
    """The tile's per-channel sum and centred sum of squares, in one sweep.

    Each channel's values are shifted by K, the channel's first value in the tile:
    ``d = x − K`` (exact in float64 for float32 x), ``Σd`` and ``Σd²`` accumulate
    together, and ``M2 = Σd² − (Σd)²/n``, ``Σx = Σd + nK``. K lies within the data, so the
    subtraction loses nothing that matters in float64 (the textbook shifted-data
    algorithm; Chan, Golub & LeVeque 1983)."""
    q, n0, n1, c0, c1, s0, s1 = box
    P = s1 - s0
    W = U((c1 - c0) * P)
    step = U(C * S)
    shifts = np.empty(c1 - c0)
    for c in range(c0, c1):
        shifts[c - c0] = np.float64(x[U((n0 * C + c) * S + s0)])
    k = _columns_jit(shifts, 0, c1 - c0, P)  # the shift, per column
    acc1 = np.zeros(W)
    acc2 = np.zeros(W)
    n = n0
    while n + 4 <= n1:  # four samples per accumulator update: a quarter of its loads/stores
        b0 = U((n * C + c0) * S + s0)
        b1 = b0 + step
        b2 = b1 + step
        b3 = b2 + step
        for j in range(W):
            d0 = np.float64(x[b0 + j]) - k[j]
            d1 = np.float64(x[b1 + j]) - k[j]
            d2 = np.float64(x[b2 + j]) - k[j]
            d3 = np.float64(x[b3 + j]) - k[j]
            acc1[j] += (d0 + d1) + (d2 + d3)
            acc2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        n += 4
    while n < n1:  # the last 0-3 samples
        b0 = U((n * C + c0) * S + s0)
        for j in range(W):
            d0 = np.float64(x[b0 + j]) - k[j]
            acc1[j] += d0
            acc2[j] += d0 * d0
        n += 1
    _fold_columns_jit(acc1, c0, c1, P, psum, q)
    _fold_columns_jit(acc2, c0, c1, P, pm2, q)
    cnt = np.float64((n1 - n0) * P)
    rs = psum[q]
    rm = pm2[q]
    b = U(c0)
    for j in range(U(c1 - c0)):  # uint64 indices: this loop vectorises
        sd = rs[b + j]
        rm[b + j] = max(rm[b + j] - sd * sd / cnt, 0.0)
        rs[b + j] = sd + cnt * shifts[j]


def _stats_combine(psum, pm2, counts, total, c0, c1, mean, var):
    """Channels c0..c1: μ = Σ_q sum_q / n;  n σ² = Σ_q [M2_q + n_q (sum_q/n_q − μ)²], q in
    order (n_q = counts[q] values behind partial row q, n = total)."""
    b = U(c0)
    nc = U(c1 - c0)  # uint64 indices: the loops over channels vectorise
    for j in range(nc):
        mean[b + j] = 0.0
        var[b + j] = 0.0
    for q in range(psum.shape[0]):
        ps = psum[q]
        for j in range(nc):
            mean[b + j] += ps[b + j]
    for j in range(nc):
        mean[b + j] = mean[b + j] / total
    for q in range(psum.shape[0]):
        cnt = counts[q]
        inv = 1.0 / cnt
        ps = psum[q]
        pq = pm2[q]
        for j in range(nc):
            d = ps[b + j] * inv - mean[b + j]
            var[b + j] += pq[b + j] + cnt * d * d
    for j in range(nc):
        var[b + j] = var[b + j] / total


def _affine_tile(box, x, C, S, mu, scale, shift, y):
    """``y = (x − mu[c])·scale[c] + shift[c]`` over the tile (x's dtype)."""
    q, n0, n1, c0, c1, s0, s1 = box
    P = s1 - s0
    W = U((c1 - c0) * P)
    if c1 - c0 == 1:  # a piece of one channel's run: scalar constants, nothing to spread
        m, a, z = mu[c0], scale[c0], shift[c0]
        for n in range(n0, n1):
            base = U((n * C + c0) * S + s0)
            for j in range(W):
                y[base + j] = normalize(x[base + j], m, a, z)
        return
    me = _columns_jit(mu, c0, c1, P)
    ae = _columns_jit(scale, c0, c1, P)
    ze = _columns_jit(shift, c0, c1, P)
    step = U(C * S)
    n = n0
    while n + 2 <= n1:  # two samples per load of the constants
        b0 = U((n * C + c0) * S + s0)
        b1 = b0 + step
        for j in range(W):
            m, a, z = me[j], ae[j], ze[j]
            y[b0 + j] = normalize(x[b0 + j], m, a, z)
            y[b1 + j] = normalize(x[b1 + j], m, a, z)
        n += 2
    if n < n1:
        base = U((n * C + c0) * S + s0)
        for j in range(W):
            y[base + j] = normalize(x[base + j], me[j], ae[j], ze[j])


def _dsums_tile(box, dy, x, C, S, mean, psd, psdx, write_dx, k1, dx):
    """The tile's Σdy and Σdy·(x − mean) per channel; with ``write_dx`` also dx = dy·k1."""
    q, n0, n1, c0, c1, s0, s1 = box
    P = s1 - s0
    W = U((c1 - c0) * P)
    step = U(C * S)
    acc_a = np.zeros(W)
    acc_b = np.zeros(W)
    m = _columns_jit(mean, c0, c1, P)
    n = n0
    while n + 4 <= n1:  # four samples per accumulator update, as in _stats_tile
        b0 = U((n * C + c0) * S + s0)
        b1 = b0 + step
        b2 = b1 + step
        b3 = b2 + step
        for j in range(W):
            g0 = np.float64(dy[b0 + j])
            g1 = np.float64(dy[b1 + j])
            g2 = np.float64(dy[b2 + j])
            g3 = np.float64(dy[b3 + j])
            mj = m[j]
            acc_a[j] += (g0 + g1) + (g2 + g3)
            acc_b[j] += ((g0 * (np.float64(x[b0 + j]) - mj) + g1 * (np.float64(x[b1 + j]) - mj))
                         + (g2 * (np.float64(x[b2 + j]) - mj)
                            + g3 * (np.float64(x[b3 + j]) - mj)))
        n += 4
    while n < n1:  # the last 0-3 samples
        b0 = U((n * C + c0) * S + s0)
        for j in range(W):
            g0 = np.float64(dy[b0 + j])
            acc_a[j] += g0
            acc_b[j] += g0 * (np.float64(x[b0 + j]) - m[j])
        n += 1
    if write_dx:
        ke = _columns_jit(k1, c0, c1, P)
        for n in range(n0, n1):
            base = U((n * C + c0) * S + s0)
            for j in range(W):
                dx[base + j] = dy[base + j] * ke[j]
    _fold_columns_jit(acc_a, c0, c1, P, psd, q)
    _fold_columns_jit(acc_b, c0, c1, P, psdx, q)


def _dsums_combine(psd, psdx, c0, c1, sd, sdx):
    """Channels c0..c1: Σdy and Σdy·(x − μ) from the partial rows, in order."""
    b = U(c0)
    nc = U(c1 - c0)  # uint64 indices: the loops vectorise
    for j in range(nc):
        sd[b + j] = 0.0
        sdx[b + j] = 0.0
    for q in range(psd.shape[0]):
        pa = psd[q]
        pb = psdx[q]
        for j in range(nc):
            sd[b + j] += pa[b + j]
            sdx[b + j] += pb[b + j]


def _dx_tile(box, dy, x, C, S, mu, k1, k2, k3, dx):
    """``dx = k1[c]·dy − k3[c]·(x − mu[c]) − k2[c]`` over the tile (x's dtype)."""
    q, n0, n1, c0, c1, s0, s1 = box
    P = s1 - s0
    W = U((c1 - c0) * P)
    if c1 - c0 == 1:  # a piece of one channel's run: scalar constants
        m, a, z, w = mu[c0], k1[c0], k2[c0], k3[c0]
        for n in range(n0, n1):
            base = U((n * C + c0) * S + s0)
            for j in range(W):
                dx[base + j] = input_gradient(dy[base + j], x[base + j], m, a, z, w)
        return
    me = _columns_jit(mu, c0, c1, P)
    ae = _columns_jit(k1, c0, c1, P)
    ze = _columns_jit(k2, c0, c1, P)
    we = _columns_jit(k3, c0, c1, P)
    step = U(C * S)
    n = n0
    while n + 2 <= n1:  # two samples per load of the constants, as in _affine_tile
        b0 = U((n * C + c0) * S + s0)
        b1 = b0 + step
        for j in range(W):
            m, a, z, w = me[j], ae[j], ze[j], we[j]
            dx[b0 + j] = input_gradient(dy[b0 + j], x[b0 + j], m, a, z, w)
            dx[b1 + j] = input_gradient(dy[b1 + j], x[b1 + j], m, a, z, w)
        n += 2
    if n < n1:
        base = U((n * C + c0) * S + s0)
        for j in range(W):
            dx[base + j] = input_gradient(dy[base + j], x[base + j], me[j], ae[j], ze[j],
                                          we[j])


_stats_tile_jit = device_function(_stats_tile)
_stats_combine_jit = device_function(_stats_combine)
_affine_tile_jit = compile_tree(_affine_tile, device_function)
_dsums_tile_jit = device_function(_dsums_tile)
_dsums_combine_jit = device_function(_dsums_combine)
_dx_tile_jit = compile_tree(_dx_tile, device_function)


# ------------------------------------------------------------- per-channel constants
# Small serial loops over the C channels, between the passes (float64 in, x's dtype out).


def _train_constants(gamma, mean, var, eps, inv_std, mu, scale):
    """inv = 1/√(σ² + ε); the normalise pass computes (x − μ)·(α·inv) + β."""
    for c in range(U(mean.size)):  # uint64 indices: vectorises
        inv = inv_std_of(var[c], eps)
        inv_std[c] = inv
        mu[c] = mean[c]
        scale[c] = gamma[c] * inv


def _eval_constants(gamma, rmean, rvar, eps, mu, scale):
    """As :func:`_train_constants` with the running statistics."""
    for c in range(U(mu.size)):  # uint64 indices: vectorises
        mu[c] = rmean[c]
        scale[c] = gamma[c] * inv_std_of(np.float64(rvar[c]), eps)


def _backward_constants(gamma, mean, inv_std, sd, sdx, n, mu, k1, k2, k3, dgamma, dbeta):
    """dβ = Σdy, dα = inv·Σdy(x − μ); dx = k1·dy − k3·(x − μ) − k2 with k1 = α·inv,
    k2 = k1·dβ/n, k3 = k1·inv·dα/n (the backward equation, expanded)."""
    for c in range(U(mean.size)):  # uint64 indices: vectorises
        mu[c] = mean[c]
        k1[c], k2[c], k3[c], dgamma[c], dbeta[c] = backward_coefficients(
            gamma[c], inv_std[c], sd[c], sdx[c], n
        )


def _running_update(rmean, rvar, mean, var, m, n):
    """r_μ ← (1 − m) r_μ + m μ;  r_σ² ← (1 − m) r_σ² + m σ² n/(n − 1) (float64, one
    rounding to the running arrays' dtype)."""
    unbias = n / (n - 1.0)
    for c in range(U(mean.size)):  # uint64 indices: vectorises
        rmean[c], rvar[c] = running_moments(np.float64(rmean[c]), np.float64(rvar[c]),
                                            mean[c], var[c], m, unbias)


_train_constants_jit = compile_tree(_train_constants, device_function)
_eval_constants_jit = compile_tree(_eval_constants, device_function)
_backward_constants_jit = compile_tree(_backward_constants, device_function)
_running_update_jit = compile_tree(_running_update, device_function)


# ------------------------------------------------------------------ overlap checks
# The API's common-form path (``fastopt.batchnorm._plain_call``) checks everything but
# overlap in Python, and the kernels check overlap first, before anything is written:
# eight ``np.shares_memory`` calls cost ~3.5 us a training step here, these nanoseconds.
# On a refusal the API runs its detailed checks (:mod:`.overlap`, the same rules), which
# name the overlap.


def _span(a):
    """``(lo, hi)``: the bytes from a's first to its last, for a 1-D array of any stride or
    a C-contiguous one (int64: pointers fit, and uint64 mixed with int64 is float64)."""
    lo = np.int64(a.ctypes.data)
    if a.ndim != 1:
        return lo, lo + np.int64(a.nbytes)
    reach = np.int64(a.size - 1) * np.int64(a.strides[0])
    if reach < 0:  # a negative stride: ctypes.data is the last element in memory
        return lo + reach, lo + np.int64(a.itemsize)
    return lo, lo + reach + np.int64(a.itemsize)


def _apart(a, b):
    """Whether the spans of a and b are disjoint, so they share no byte (an empty array
    shares none). Interleaved strided arrays count as overlapping: the API's detailed
    checks, run on a refusal, then let them through."""
    if a.size == 0 or b.size == 0:
        return True
    alo, ahi = _span_jit(a)
    blo, bhi = _span_jit(b)
    return ahi <= blo or bhi <= alo


_span_jit = device_function(_span)
_apart_jit = device_function(_apart)


def _forward_apart(x, gamma, beta, running, track, rmean, rvar, stats, y):
    """The forward's overlap rules: each array it writes (y, stats, and the running
    statistics when ``track``) apart from every other array; the running statistics
    (``running``: given, not placeholders) apart from each other."""
    if not (_apart_jit(y, x) and _apart_jit(y, gamma) and _apart_jit(y, beta)
            and _apart_jit(stats, x) and _apart_jit(stats, y) and _apart_jit(stats, gamma)
            and _apart_jit(stats, beta)):
        return False
    if not running:
        return True
    if not (_apart_jit(rmean, rvar) and _apart_jit(stats, rmean) and _apart_jit(stats, rvar)
            and _apart_jit(y, rmean) and _apart_jit(y, rvar)):
        return False
    return not track or (_apart_jit(rmean, x) and _apart_jit(rmean, gamma)
                         and _apart_jit(rmean, beta) and _apart_jit(rvar, x)
                         and _apart_jit(rvar, gamma) and _apart_jit(rvar, beta))


def _backward_apart(dy, x, gamma, mean, inv_std, dgamma, dbeta, dx):
    """The backward's overlap rules: each array it writes (dx, dgamma, dbeta) apart from
    every other array, except that dx may be dy itself."""
    if not (_apart_jit(dx, x) and (_span_jit(dx) == _span_jit(dy) or _apart_jit(dx, dy))
            and _apart_jit(dx, gamma) and _apart_jit(dx, mean) and _apart_jit(dx, inv_std)
            and _apart_jit(dx, dgamma) and _apart_jit(dx, dbeta)
            and _apart_jit(dgamma, dbeta)):
        return False
    # two calls, not a loop over (dgamma, dbeta): a tuple of a strided and a contiguous
    # array has two types, which numba cannot iterate
    return (_apart_from_reads_jit(dgamma, dy, x, gamma, mean, inv_std)
            and _apart_from_reads_jit(dbeta, dy, x, gamma, mean, inv_std))


def _apart_from_reads(w, dy, x, gamma, mean, inv_std):
    return (_apart_jit(w, dy) and _apart_jit(w, x) and _apart_jit(w, gamma)
            and _apart_jit(w, mean) and _apart_jit(w, inv_std))


_forward_apart_jit = device_function(_forward_apart)
_apart_from_reads_jit = device_function(_apart_from_reads)
_backward_apart_jit = device_function(_backward_apart)


# ---------------------------------------------------------------------------- kernels
# x, y, dy, dx: flat 1-D views of the (N, C, S) arrays; gamma, beta: x's dtype; eps:
# float; mean, inv_std (backward): float64 (C,); dgamma, dbeta: x's dtype outputs.
# ``check``: refuse (return False, nothing written) arrays that overlap where they must
# not (see above); True when done.


def _forward(x, C, S, gamma, beta, eps, training, track, factor, rmean, rvar, stats, y,
             check):
    """One BatchNorm forward; y is not written when empty (statistics only).

    Training: the batch statistics into ``stats`` (float64 (3, C): mean, biased variance,
    inv_std = 1/√(σ² + ε)), the running statistics updated with weight ``factor`` when
    ``track``, then y = (x − μ)·α·inv + β. Inference: y = (x − r_μ)·α/√(r_σ² + ε) + β.
    """
    if check and not _forward_apart_jit(x, gamma, beta, track or not training, track, rmean,
                                        rvar, stats, y):
        return False
    N = x.size // (C * S)
    mu = np.empty_like(gamma)
    scale = np.empty_like(gamma)
    cc = _group_channels_jit(N, C, S) if training else 0
    if cc > 0:  # whole channel groups: statistics, constants, y, while x is in cache
        G, CC, P, nsb, ncc, npc = _tiles_jit(N, C, S)
        p1 = np.empty((npc, C))
        p2 = np.empty((npc, C))
        counts = np.empty(npc)  # values behind each piece's partials
        for q in range(npc):
            box = _group_tile_jit(q, N, 0, 1, S, P)
            counts[q] = np.float64(N * (box[6] - box[5]))
        for k in prange(ncc):
            c0 = k * cc
            c1 = min(C, c0 + cc)
            for q in range(npc):
                box = _group_tile_jit(q, N, c0, c1, S, P)
                _stats_tile_jit(box, x, C, S, p1, p2)
            _stats_combine_jit(p1, p2, counts, N * S, c0, c1, stats[0], stats[1])
            _train_constants_jit(gamma[c0:c1], stats[0][c0:c1], stats[1][c0:c1], eps,
                                 stats[2][c0:c1], mu[c0:c1], scale[c0:c1])
            if track:
                _running_update_jit(rmean[c0:c1], rvar[c0:c1], stats[0][c0:c1],
                                    stats[1][c0:c1], factor, N * S)
            if y.size != 0:
                for q in range(npc):
                    box = _group_tile_jit(q, N, c0, c1, S, P)
                    _affine_tile_jit(box, x, C, S, mu, scale, beta, y)
        return True
    nt = _ntiles_jit(x.size, C, S)
    if training:
        p1 = _partials_jit(x.size, C, S)
        p2 = _partials_jit(x.size, C, S)
        for t in prange(nt):
            _stats_tile_jit(_tile_jit(t, N, C, S), x, C, S, p1, p2)
        counts = np.empty(p1.shape[0])
        for q in range(p1.shape[0]):
            counts[q] = np.float64(_count_jit(q, N, C, S))
        _stats_combine_jit(p1, p2, counts, N * S, 0, C, stats[0], stats[1])
        _train_constants_jit(gamma, stats[0], stats[1], eps, stats[2], mu, scale)
        if track:
            _running_update_jit(rmean, rvar, stats[0], stats[1], factor, x.size // C)
    else:
        _eval_constants_jit(gamma, rmean, rvar, eps, mu, scale)
    if y.size != 0:
        for t in prange(nt):
            _affine_tile_jit(_tile_jit(t, N, C, S), x, C, S, mu, scale, beta, y)
    return True


def _backward(dy, x, C, S, gamma, mean, inv_std, training, dgamma, dbeta, dx, check):
    """One BatchNorm backward (writes dx, dgamma, dbeta).

    Training: Σdy and Σdy·(x − μ) (float64, blocked, ordered) in one pass, then dx in a
    second. Inference: dx = dy·α·inv, with the two sums taken in the same single pass.
    """
    if check and not _backward_apart_jit(dy, x, gamma, mean, inv_std, dgamma, dbeta, dx):
        return False
    N = x.size // (C * S)
    write_dx = not training  # inference: dx = dy·k1 in the same pass as the sums
    cc = _group_channels_jit(N, C, S) if training else 0
    if cc > 0:  # whole channel groups: the sums, the constants, dx, while x, dy are in cache
        G, CC, P, nsb, ncc, npc = _tiles_jit(N, C, S)
        p1 = np.empty((npc, C))
        p2 = np.empty((npc, C))
        sd = np.empty(C)
        sdx = np.empty(C)
        mu = np.empty_like(dgamma)
        k1 = np.empty_like(dgamma)
        k2 = np.empty_like(dgamma)
        k3 = np.empty_like(dgamma)
        for k in prange(ncc):
            c0 = k * cc
            c1 = min(C, c0 + cc)
            for q in range(npc):
                box = _group_tile_jit(q, N, c0, c1, S, P)
                _dsums_tile_jit(box, dy, x, C, S, mean, p1, p2, write_dx, k1, dx)
            _dsums_combine_jit(p1, p2, c0, c1, sd, sdx)
            _backward_constants_jit(gamma[c0:c1], mean[c0:c1], inv_std[c0:c1], sd[c0:c1],
                                    sdx[c0:c1], N * S, mu[c0:c1], k1[c0:c1], k2[c0:c1],
                                    k3[c0:c1], dgamma[c0:c1], dbeta[c0:c1])
            for q in range(npc):
                box = _group_tile_jit(q, N, c0, c1, S, P)
                _dx_tile_jit(box, dy, x, C, S, mu, k1, k2, k3, dx)
        return True
    nt = _ntiles_jit(x.size, C, S)
    p1 = _partials_jit(x.size, C, S)
    p2 = _partials_jit(x.size, C, S)
    k1 = np.empty_like(dgamma)
    for c in range(C):
        k1[c] = gamma[c] * inv_std[c]
    for t in prange(nt):
        _dsums_tile_jit(_tile_jit(t, N, C, S), dy, x, C, S, mean, p1, p2, write_dx, k1, dx)
    sd = np.empty(C)
    sdx = np.empty(C)
    _dsums_combine_jit(p1, p2, 0, C, sd, sdx)
    if training:
        mu = np.empty_like(dgamma)
        k2 = np.empty_like(dgamma)
        k3 = np.empty_like(dgamma)
        _backward_constants_jit(gamma, mean, inv_std, sd, sdx, x.size // C, mu, k1, k2, k3,
                                dgamma, dbeta)
        for t in prange(nt):
            _dx_tile_jit(_tile_jit(t, N, C, S), dy, x, C, S, mu, k1, k2, k3, dx)
    else:
        for c in range(C):
            dgamma[c] = inv_std[c] * sdx[c]
            dbeta[c] = sd[c]
    return True


_LOOPS: dict[str, Callable] = {"forward": _forward, "backward": _backward}


@cache
def kernel(name: str, parallel: bool) -> Callable:
    """Kernel ``name`` ("forward" or "backward"), compiled on first call (per dtype), then
    cached on disk."""
    mode = "parallel" if parallel else "serial"
    # The cache is keyed on this file only: tag the name with the equations' source.
    name_tag = f"bn_{name}_{mode}_{source_tag(equations)}"
    return cpu_jit(bind(_LOOPS[name], name_tag), parallel=parallel)


def get(name: str, x: np.ndarray) -> Callable:
    """Kernel ``name`` for input ``x``: a callable that runs the serial or the parallel
    kernel, as :mod:`fastopt.parallel` chooses for this shape and dtype (serial below
    its byte floor). A kernel's first compilation takes 15-25 s (here, per dtype): it is
    announced on stderr."""
    serial = _ready(name, False)
    nbytes = 3 * x.nbytes  # about what a pass pair reads and writes
    if nbytes < parallel.PARALLEL_MIN_BYTES and not parallel.is_forced():
        return serial
    choice = parallel.choice_for((name, x.shape, x.dtype.char))
    par = _ready(name, True)
    return lambda *args: parallel.run(choice, serial, par, args, nbytes)


def _ready(name: str, parallel_: bool) -> Callable:
    k = kernel(name, parallel_)
    if k.overloads:  # compiled or loaded in this process: the common, cheap case
        return k
    return announce_compile(k, f"BatchNorm's {'parallel' if parallel_ else 'serial'} {name} "
                               "kernel")

"""BatchNorm's CPU kernels: blocked float64 statistics and single-pass element-wise loops.

Two memory layouts, both read in place (reshaped views, never a transposing copy):

* **NCS**: ``axis=1`` with spatial dims, ``x`` viewed as ``(N, C, S)`` (``S`` = product of
  the spatial dims). Channel ``c``'s values are ``N`` contiguous runs of ``S`` elements.
* **MC**: channels-last ``(M, C)``: ``axis=-1`` (``M`` = N × spatial) and also ``axis=1``
  on a 2-D ``(N, C)`` input (``S = 1``), where a row holds one value of every channel.

Every kernel loops over the same fixed **tiles**, in one ``prange``:

* NCS: tile = (channel ``c``, block ``b`` of that channel's ``N·S`` values). A block is
  ``BLOCK // S`` whole runs when ``S <= BLOCK``, else a ``BLOCK``-long piece of one run.
* MC: tile = (block of ``R`` rows, chunk of ``CC`` channels) with ``R·CC ≈ TILE_MC``; the
  inner loop runs over contiguous channels, so it vectorises with one accumulator per
  channel.

Tile boundaries depend on the shape only, never on the thread count. A reduction kernel
writes one float64 partial per (tile, channel) and then combines the partials of each
channel serially in tile order (the combine is parallel over channels only), so every
statistic has the same bits at any thread count.

Statistics (forward): per tile, the block sum and the block's centred sum of squares
``M2_b = Σ (x − x̄_b)²``, computed in two sweeps over the tile, the second from cache: one
pass over memory, with the numerics of the two-pass algorithm. The combine uses the exact
decomposition ``M2 = Σ_b [M2_b + n_b (x̄_b − μ)²]`` (Chan, Golub & LeVeque 1979), which
does not suffer the cancellation of ``Σx² − n μ²``. All in float64.

Compilation is lazy: each kernel is compiled on first use, once as a parallel kernel and
once as a serial one (for inputs below :data:`SERIAL_BELOW` elements, where a parallel
launch costs more than the work), and cached on disk.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
from numba import prange

from .._jit import bind, cpu_jit, device_function

#: Values per NCS block (per channel): 16 KB of float32, so the block's second sweep
#: (centred squares) reads L1/L2, not memory.
BLOCK = 4096

#: Elements per MC tile (rows × channels).
TILE_MC = 8192

#: MC tiles keep at least this many rows, so the partials (one per row block and channel)
#: stay small next to the data: their count is size / R.
MIN_ROWS_MC = 16

#: Channels per chunk in the MC combine (parallel over chunks, serial over row blocks).
COMBINE_CHUNK = 16

#: Below this many elements a call runs the serial kernels (a parallel launch costs a few
#: microseconds; same threshold as the optimizer driver, ``fastopt.drivers.cpu``).
SERIAL_BELOW = 32768


# ----------------------------------------------------------------------------- geometry


def ncs_blocks(n: int, s: int) -> int:
    """Blocks per channel for the NCS layout with ``n`` runs of ``s`` values."""
    if s <= BLOCK:
        g = BLOCK // s
        return -(-n // g)
    return n * -(-s // BLOCK)


def mc_tiles(m: int, c: int) -> tuple[int, int, int, int]:
    """``(R, CC, row blocks, channel chunks)`` of the MC tiling of an ``(m, c)`` array."""
    if c * MIN_ROWS_MC >= TILE_MC:
        r = MIN_ROWS_MC
        cc = TILE_MC // MIN_ROWS_MC
    else:
        r = TILE_MC // c
        cc = c
    return r, cc, -(-m // r), -(-c // cc)


def _ncs_block(b, n, s):
    """``(n0, n1, s0, s1)``: block ``b`` of a channel covers runs n0..n1, offsets s0..s1."""
    if s <= BLOCK:
        g = BLOCK // s
        n0 = b * g
        return n0, min(n, n0 + g), 0, s
    p = (s + BLOCK - 1) // BLOCK
    n0 = b // p
    s0 = (b - n0 * p) * BLOCK
    return n0, n0 + 1, s0, min(s, s0 + BLOCK)


_ncs_block_jit = device_function(_ncs_block)


# ------------------------------------------------ float64 run reductions (8 ordered chains)
# Eight independent float64 accumulators: the adds pipeline (one chain would wait on the
# add latency), and the order is fixed, so the result is too.


def _run_sum(x, lo, hi):
    """``Σ x[lo:hi]`` in float64."""
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
    j = lo
    while j + 8 <= hi:
        t0 += np.float64(x[j])
        t1 += np.float64(x[j + 1])
        t2 += np.float64(x[j + 2])
        t3 += np.float64(x[j + 3])
        t4 += np.float64(x[j + 4])
        t5 += np.float64(x[j + 5])
        t6 += np.float64(x[j + 6])
        t7 += np.float64(x[j + 7])
        j += 8
    while j < hi:
        t0 += np.float64(x[j])
        j += 1
    return ((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7))


def _run_sqdev(x, lo, hi, m):
    """``Σ (x[lo:hi] − m)²`` in float64."""
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
    j = lo
    while j + 8 <= hi:
        d0 = np.float64(x[j]) - m
        d1 = np.float64(x[j + 1]) - m
        d2 = np.float64(x[j + 2]) - m
        d3 = np.float64(x[j + 3]) - m
        d4 = np.float64(x[j + 4]) - m
        d5 = np.float64(x[j + 5]) - m
        d6 = np.float64(x[j + 6]) - m
        d7 = np.float64(x[j + 7]) - m
        t0 += d0 * d0
        t1 += d1 * d1
        t2 += d2 * d2
        t3 += d3 * d3
        t4 += d4 * d4
        t5 += d5 * d5
        t6 += d6 * d6
        t7 += d7 * d7
        j += 8
    while j < hi:
        d0 = np.float64(x[j]) - m
        t0 += d0 * d0
        j += 1
    return ((t0 + t1) + (t2 + t3)) + ((t4 + t5) + (t6 + t7))


def _run_dsums(dy, x, lo, hi, m):
    """``(Σ dy, Σ dy·(x − m))`` over ``[lo, hi)`` in float64."""
    a0 = a1 = a2 = a3 = 0.0
    b0 = b1 = b2 = b3 = 0.0
    j = lo
    while j + 4 <= hi:
        g0 = np.float64(dy[j])
        g1 = np.float64(dy[j + 1])
        g2 = np.float64(dy[j + 2])
        g3 = np.float64(dy[j + 3])
        a0 += g0
        a1 += g1
        a2 += g2
        a3 += g3
        b0 += g0 * (np.float64(x[j]) - m)
        b1 += g1 * (np.float64(x[j + 1]) - m)
        b2 += g2 * (np.float64(x[j + 2]) - m)
        b3 += g3 * (np.float64(x[j + 3]) - m)
        j += 4
    while j < hi:
        g0 = np.float64(dy[j])
        a0 += g0
        b0 += g0 * (np.float64(x[j]) - m)
        j += 1
    return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)


_run_sum_jit = device_function(_run_sum)
_run_sqdev_jit = device_function(_run_sqdev)
_run_dsums_jit = device_function(_run_dsums)


# ------------------------------------------------------------------------- NCS kernels
# x, y, dy, dx: flat 1-D views; element (n, c, s) is at (n·C + c)·S + s.
# psum, pm2 (or psd, psdx): float64 (C, blocks) workspaces; mean, var, sd, sdx: float64 (C,).


def _ncs_stats(x, C, S, psum, pm2, mean, var):
    N = x.size // (C * S)
    nb = psum.shape[1]
    for t in prange(C * nb):
        c = t // nb
        b = t - c * nb
        n0, n1, s0, s1 = _ncs_block_jit(b, N, S)
        tot = 0.0
        for n in range(n0, n1):
            base = (n * C + c) * S
            tot += _run_sum_jit(x, base + s0, base + s1)
        mb = tot / ((n1 - n0) * (s1 - s0))
        q = 0.0
        for n in range(n0, n1):
            base = (n * C + c) * S
            q += _run_sqdev_jit(x, base + s0, base + s1, mb)
        psum[c, b] = tot
        pm2[c, b] = q
    total = N * S
    for c in prange(C):
        acc = 0.0
        for b in range(nb):
            acc += psum[c, b]
        mu = acc / total
        q2 = 0.0
        for b in range(nb):
            n0, n1, s0, s1 = _ncs_block_jit(b, N, S)
            cnt = (n1 - n0) * (s1 - s0)
            d = psum[c, b] / cnt - mu
            q2 += pm2[c, b] + cnt * d * d
        mean[c] = mu
        var[c] = q2 / total


def _ncs_affine(x, C, S, mu, scale, shift, y):
    """``y = (x − mu[c])·scale[c] + shift[c]`` (all in x's dtype)."""
    N = x.size // (C * S)
    nb = ncs_blocks_jit(N, S)
    for t in prange(C * nb):
        c = t // nb
        b = t - c * nb
        n0, n1, s0, s1 = _ncs_block_jit(b, N, S)
        m = mu[c]
        a = scale[c]
        z = shift[c]
        for n in range(n0, n1):
            base = (n * C + c) * S
            for j in range(base + s0, base + s1):
                y[j] = (x[j] - m) * a + z


def _ncs_dsums(dy, x, C, S, mean, psd, psdx, sd, sdx, k1, dx):
    """``sd = Σ dy``, ``sdx = Σ dy·(x − mean)`` per channel (float64, blocked, ordered).

    With ``dx`` given (inference backward), also ``dx = dy·k1[c]`` in the same pass.
    """
    N = x.size // (C * S)
    nb = psd.shape[1]
    for t in prange(C * nb):
        c = t // nb
        b = t - c * nb
        n0, n1, s0, s1 = _ncs_block_jit(b, N, S)
        m = mean[c]
        a_acc = 0.0
        b_acc = 0.0
        for n in range(n0, n1):
            base = (n * C + c) * S
            ra, rb = _run_dsums_jit(dy, x, base + s0, base + s1, m)
            a_acc += ra
            b_acc += rb
            if dx is not None:
                k = k1[c]
                for j in range(base + s0, base + s1):
                    dx[j] = dy[j] * k
        psd[c, b] = a_acc
        psdx[c, b] = b_acc
    for c in prange(C):
        a2 = 0.0
        b2 = 0.0
        for b in range(nb):
            a2 += psd[c, b]
            b2 += psdx[c, b]
        sd[c] = a2
        sdx[c] = b2


def _ncs_dx(dy, x, C, S, mu, k1, k2, k3, dx):
    """``dx = k1[c]·dy − k3[c]·(x − mu[c]) − k2[c]`` (all in x's dtype)."""
    N = x.size // (C * S)
    nb = ncs_blocks_jit(N, S)
    for t in prange(C * nb):
        c = t // nb
        b = t - c * nb
        n0, n1, s0, s1 = _ncs_block_jit(b, N, S)
        m = mu[c]
        a = k1[c]
        z = k2[c]
        w = k3[c]
        for n in range(n0, n1):
            base = (n * C + c) * S
            for j in range(base + s0, base + s1):
                dx[j] = a * dy[j] - w * (x[j] - m) - z


# -------------------------------------------------------------------------- MC kernels
# x, y, dy, dx: flat 1-D views; element (r, c) is at r·C + c.
# psum, pm2 (psd, psdx): float64 (row blocks, C) workspaces.


def _mc_stats(x, C, psum, pm2, mean, var):
    M = x.size // C
    R, CC, nrb, ncc = mc_tiles_jit(M, C)
    for t in prange(nrb * ncc):
        rb = t // ncc
        cb = t - rb * ncc
        r0 = rb * R
        r1 = min(M, r0 + R)
        c0 = cb * CC
        c1 = min(C, c0 + CC)
        for c in range(c0, c1):
            psum[rb, c] = 0.0
            pm2[rb, c] = 0.0
        for r in range(r0, r1):
            base = r * C
            for c in range(c0, c1):
                psum[rb, c] += np.float64(x[base + c])
        inv = 1.0 / (r1 - r0)
        for r in range(r0, r1):
            base = r * C
            for c in range(c0, c1):
                d = np.float64(x[base + c]) - psum[rb, c] * inv
                pm2[rb, c] += d * d
    nch = (C + COMBINE_CHUNK - 1) // COMBINE_CHUNK
    for k in prange(nch):
        c0 = k * COMBINE_CHUNK
        c1 = min(C, c0 + COMBINE_CHUNK)
        for c in range(c0, c1):
            mean[c] = 0.0
            var[c] = 0.0
        for rb in range(nrb):
            for c in range(c0, c1):
                mean[c] += psum[rb, c]
        for c in range(c0, c1):
            mean[c] = mean[c] / M
        for rb in range(nrb):
            cnt = min(M, rb * R + R) - rb * R
            for c in range(c0, c1):
                d = psum[rb, c] / cnt - mean[c]
                var[c] += pm2[rb, c] + cnt * d * d
        for c in range(c0, c1):
            var[c] = var[c] / M


def _mc_affine(x, C, mu, scale, shift, y):
    """``y = (x − mu[c])·scale[c] + shift[c]`` (all in x's dtype)."""
    M = x.size // C
    R, CC, nrb, ncc = mc_tiles_jit(M, C)
    for t in prange(nrb * ncc):
        rb = t // ncc
        cb = t - rb * ncc
        r0 = rb * R
        r1 = min(M, r0 + R)
        c0 = cb * CC
        c1 = min(C, c0 + CC)
        for r in range(r0, r1):
            base = r * C
            for c in range(c0, c1):
                y[base + c] = (x[base + c] - mu[c]) * scale[c] + shift[c]


def _mc_dsums(dy, x, C, mean, psd, psdx, sd, sdx, k1, dx):
    """MC twin of :func:`_ncs_dsums`."""
    M = x.size // C
    R, CC, nrb, ncc = mc_tiles_jit(M, C)
    for t in prange(nrb * ncc):
        rb = t // ncc
        cb = t - rb * ncc
        r0 = rb * R
        r1 = min(M, r0 + R)
        c0 = cb * CC
        c1 = min(C, c0 + CC)
        for c in range(c0, c1):
            psd[rb, c] = 0.0
            psdx[rb, c] = 0.0
        for r in range(r0, r1):
            base = r * C
            for c in range(c0, c1):
                g = np.float64(dy[base + c])
                psd[rb, c] += g
                psdx[rb, c] += g * (np.float64(x[base + c]) - mean[c])
            if dx is not None:
                for c in range(c0, c1):
                    dx[base + c] = dy[base + c] * k1[c]
    nch = (C + COMBINE_CHUNK - 1) // COMBINE_CHUNK
    for k in prange(nch):
        c0 = k * COMBINE_CHUNK
        c1 = min(C, c0 + COMBINE_CHUNK)
        for c in range(c0, c1):
            sd[c] = 0.0
            sdx[c] = 0.0
        for rb in range(nrb):
            for c in range(c0, c1):
                sd[c] += psd[rb, c]
                sdx[c] += psdx[rb, c]


def _mc_dx(dy, x, C, mu, k1, k2, k3, dx):
    """``dx = k1[c]·dy − k3[c]·(x − mu[c]) − k2[c]`` (all in x's dtype)."""
    M = x.size // C
    R, CC, nrb, ncc = mc_tiles_jit(M, C)
    for t in prange(nrb * ncc):
        rb = t // ncc
        cb = t - rb * ncc
        r0 = rb * R
        r1 = min(M, r0 + R)
        c0 = cb * CC
        c1 = min(C, c0 + CC)
        for r in range(r0, r1):
            base = r * C
            for c in range(c0, c1):
                dx[base + c] = k1[c] * dy[base + c] - k3[c] * (x[base + c] - mu[c]) - k2[c]


ncs_blocks_jit = device_function(ncs_blocks)
mc_tiles_jit = device_function(mc_tiles)

_LOOPS: dict[str, Callable] = {
    "ncs_stats": _ncs_stats,
    "ncs_affine": _ncs_affine,
    "ncs_dsums": _ncs_dsums,
    "ncs_dx": _ncs_dx,
    "mc_stats": _mc_stats,
    "mc_affine": _mc_affine,
    "mc_dsums": _mc_dsums,
    "mc_dx": _mc_dx,
}


@cache
def kernel(name: str, parallel: bool) -> Callable:
    """The compiled kernel ``name`` (compiled on first call, then cached on disk)."""
    mode = "parallel" if parallel else "serial"
    return cpu_jit(bind(_LOOPS[name], f"bn_{name}_{mode}"), parallel=parallel)


def get(name: str, size: int) -> Callable:
    """Kernel ``name`` for an input of ``size`` elements (serial below SERIAL_BELOW)."""
    return kernel(name, size >= SERIAL_BELOW)

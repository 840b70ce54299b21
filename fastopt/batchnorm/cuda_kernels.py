"""BatchNorm's CUDA kernels: the equations of :mod:`fastopt.batchnorm.equations` on GPU
arrays, both layouts, read in place as ``(N, C, S)`` (channels-last: ``(M, C, 1)``), as the
CPU kernels do.

Passes: statistics (read x; one block per (chunk of :data:`CHUNK` values, channel), each
writing a float64 partial of ``Σ(x − K)`` and ``Σ(x − K)²`` with K the channel's first
value, which keeps the shifted sums free of cancellation for data whose spread is not tiny
against its mean), a one-thread-per-channel combine in chunk order (same bits every run),
then normalise (read x, write y). Backward: the sums Σdy and Σdy·(x − μ) the same way,
the per-channel coefficients, then dx. Imports ``numba.cuda``: loaded on first use only.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
from numba import cuda

from .._jit import bind, compile_tree
from ..drivers.cuda import TPB, _block_sum, _device, grid, kernel, launcher
from .equations import backward_coefficients, input_gradient, inv_std, normalize, running_moments

#: Values of one channel per statistics block (one float64 partial each).
CHUNK = 4096


def BLOCK_SUM(t, acc, bad):  # noqa: N802 - placeholder, bound to drivers.cuda._block_sum
    raise NotImplementedError


def _position(c, j, C, S):
    """Flat index of channel ``c``'s ``j``-th value in the (N, C, S) view."""
    return (j // S * C + c) * S + j % S


def _moments_kernel(a, b, stats, C, S, part1, part2):
    """Per (chunk, channel) block: ``Σ(a − K)`` and ``Σ(a − K)²`` (b is None), or ``Σa``
    and ``Σa·(b − μ)`` with μ = ``stats[0, c]`` (backward: a = dy, b = x); K = the
    channel's first a."""
    chunk = cuda.blockIdx.x
    c = cuda.blockIdx.y
    t = cuda.threadIdx.x
    n = a.size // C
    lo = chunk * CHUNK
    hi = min(lo + CHUNK, n)
    k = np.float64(a[c * S]) if b is None else 0.0
    mu = 0.0 if b is None else stats[0, c]  # read once, not per value
    s1 = 0.0
    s2 = 0.0
    j = lo + t
    while j < hi:
        i = POSITION(c, j, C, S)
        d = np.float64(a[i]) - k
        s1 += d
        if b is None:
            s2 += d * d
        else:
            s2 += d * (np.float64(b[i]) - mu)
        j += TPB
    total1, _ = BLOCK_SUM(t, s1, 0)
    total2, _ = BLOCK_SUM(t, s2, 0)
    if t == 0:
        part1[c, chunk] = total1
        part2[c, chunk] = total2


def _forward_channels(x, C, S, part1, part2, gamma, eps, training, track, factor, rmean,
                      rvar, stats, mu, scale):
    """One thread per channel: statistics, running update, normalise constants."""
    c = cuda.grid(1)
    if c >= C:
        return
    if training:
        n = x.size // C
        s1 = 0.0
        s2 = 0.0
        for q in range(part1.shape[1]):
            s1 += part1[c, q]
            s2 += part2[c, q]
        mean = np.float64(x[c * S]) + s1 / n
        var = max((s2 - s1 * s1 / n) / n, 0.0)
        inv = INV_STD(var, eps)
        stats[0, c] = mean
        stats[1, c] = var
        stats[2, c] = inv
        if track:
            rmean[c], rvar[c] = RUNNING_MOMENTS(np.float64(rmean[c]), np.float64(rvar[c]),
                                                mean, var, factor, n / (n - 1.0))
        mu[c] = mean
        scale[c] = gamma[c] * inv
    else:
        mu[c] = rmean[c]
        scale[c] = gamma[c] * INV_STD(np.float64(rvar[c]), eps)


def _backward_channels(part1, part2, n, gamma, stats, training, mu, k1, k2, k3, dgamma,
                       dbeta):
    """One thread per channel: the sums, then dx's coefficients (μ = ``stats[0]``,
    inv = ``stats[2]``)."""
    c = cuda.grid(1)
    if c >= stats.shape[1]:
        return
    mean = stats[0, c]
    inv = stats[2, c]
    sd = 0.0
    sdx = 0.0
    for q in range(part1.shape[1]):
        sd += part1[c, q]
        sdx += part2[c, q]
    mu[c] = mean
    if training:
        k1[c], k2[c], k3[c], dgamma[c], dbeta[c] = BACKWARD_COEFFICIENTS(
            gamma[c], inv, sd, sdx, n
        )
    else:  # the statistics are constants: dx = dy·α·inv
        k1[c] = gamma[c] * inv
        k2[c] = 0.0
        k3[c] = 0.0
        dgamma[c] = inv * sdx
        dbeta[c] = sd


def _normalize_kernel(x, C, S, mu, scale, shift, y):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < x.size:
        c = i // S % C
        y[i] = NORMALIZE(x[i], mu[c], scale[c], shift[c])
        i += stride


def _dx_kernel(dy, x, C, S, mu, k1, k2, k3, dx):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < x.size:
        c = i // S % C
        dx[i] = INPUT_GRADIENT(dy[i], x[i], mu[c], k1[c], k2[c], k3[c])
        i += stride


def POSITION(c, j, C, S):  # noqa: N802 - placeholder, bound to the compiled _position
    raise NotImplementedError


def INV_STD(var, eps):  # noqa: N802 - placeholders, bound to the compiled equations
    raise NotImplementedError


RUNNING_MOMENTS = BACKWARD_COEFFICIENTS = NORMALIZE = INPUT_GRADIENT = INV_STD


@cache
def kernels() -> dict[str, Callable]:
    """The compiled kernels (each compiles per signature on first launch)."""
    shared = {
        "BLOCK_SUM": _device(_block_sum),
        "POSITION": _device(_position),
        "INV_STD": compile_tree(inv_std, _device),
        "RUNNING_MOMENTS": compile_tree(running_moments, _device),
        "BACKWARD_COEFFICIENTS": compile_tree(backward_coefficients, _device),
        "NORMALIZE": compile_tree(normalize, _device),
        "INPUT_GRADIENT": compile_tree(input_gradient, _device),
    }
    fns = {"moments": _moments_kernel, "forward_channels": _forward_channels,
           "backward_channels": _backward_channels, "normalize": _normalize_kernel,
           "dx": _dx_kernel}
    return {name: kernel(bind(fn, **shared)) for name, fn in fns.items()}


def chunks(n: int) -> int:
    return -(-n // CHUNK)


_workspaces: dict[tuple, tuple] = {}


def _workspace(C: int, n: int, dtype, stream) -> tuple:
    """Per-channel work arrays (two float64 partial tables, four of x's dtype), kept per
    (geometry, dtype, stream): a training loop allocates nothing per call after the first.
    Calls on one stream run in order, so reusing them there is safe."""
    stream_key = stream if isinstance(stream, int) else id(stream)  # streams are cached
    key = (C, chunks(n), np.dtype(dtype).str, stream_key)
    ws = _workspaces.get(key)
    if ws is None:
        parts = tuple(cuda.device_array((C, chunks(n)), np.float64) for _ in range(2))
        ws = _workspaces[key] = parts + tuple(cuda.device_array(C, dtype) for _ in range(4))
    return ws


def forward(x, C, S, gamma, beta, eps, training, track, factor, rmean, rvar, stats, y,
            stream) -> None:
    """One forward on 1-D device views (``stats``: float64 (3, C) device array, written in
    training; None in inference)."""
    k = kernels()
    n = x.size // C
    part1, part2, mu, scale, _, _ = _workspace(C, n, x.dtype, stream)
    if stats is None:  # inference writes no statistics: any float64 2-D array types the call
        stats = part1
    if training:
        launcher(k["moments"], (chunks(n), C), stream)(x, None, stats, C, S, part1, part2)
    launcher(k["forward_channels"], grid(C), stream)(
        x, C, S, part1, part2, gamma, eps, training, track, factor, rmean, rvar, stats, mu,
        scale,
    )
    launcher(k["normalize"], grid(x.size), stream)(x, C, S, mu, scale, beta, y)


def backward(dy, x, C, S, gamma, stats, training, dgamma, dbeta, dx, stream) -> None:
    """One backward on 1-D device views (``stats``: float64 (3, C) device array, rows 0 and
    2 the mean and 1/√(σ² + ε))."""
    k = kernels()
    n = x.size // C
    part1, part2, mu, k1, k2, k3 = _workspace(C, n, x.dtype, stream)
    launcher(k["moments"], (chunks(n), C), stream)(dy, x, stats, C, S, part1, part2)
    launcher(k["backward_channels"], grid(C), stream)(
        part1, part2, float(n), gamma, stats, training, mu, k1, k2, k3, dgamma, dbeta
    )
    launcher(k["dx"], grid(x.size), stream)(dy, x, C, S, mu, k1, k2, k3, dx)


def ptx_cases(dtype) -> list[tuple[str, Callable, tuple]]:
    """Sample arguments for compiling every kernel to PTX (``tests/cuda_ptx_check.py``)."""
    x = np.zeros(8, dtype)
    v = np.zeros(2, dtype)
    p = np.zeros((2, 1))
    stats = np.zeros((3, 2))
    k = kernels()
    return [
        ("bn_moments_stats", k["moments"].py_func, (x, None, stats, 2, 2, p, p)),
        ("bn_moments_grads", k["moments"].py_func, (x, x, stats, 2, 2, p, p)),
        ("bn_forward_channels", k["forward_channels"].py_func,
         (x, 2, 2, p, p, v, 1e-6, True, True, 0.1, v, v, stats, v, v)),
        ("bn_backward_channels", k["backward_channels"].py_func,
         (p, p, 4.0, v, stats, True, v, v, v, v, v, v)),
        ("bn_normalize", k["normalize"].py_func, (x, 2, 2, v, v, v, x)),
        ("bn_dx", k["dx"].py_func, (x, x, 2, 2, v, v, v, v, x)),
    ]


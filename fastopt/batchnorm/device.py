"""BatchNorm's forward and backward on GPU arrays (what :func:`fastopt.batchnorm.forward`
and :func:`~fastopt.batchnorm.backward` call when x is a device array).

Same arguments, conventions and checks as the host functions; every array but the
``num_batches_tracked`` counter (a host integer array) lives on the device. Inference
backward reads the C running statistics back once to form its constants.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from .._checks import FLOAT_DTYPES
from ..drivers import cuda_driver, is_device_array
from . import overlap


def _vector(be, a: Any, what: str, c: int, dtype: np.dtype | None) -> Any:
    if not is_device_array(a):
        raise ValueError(f"{what} must be a GPU array like x (x is on the GPU)")
    d = be.as_device_array(a, what)
    if tuple(d.shape) != (c,):
        raise ValueError(f"{what} has shape {tuple(d.shape)}; x has {c} channels, so it must "
                         f"be ({c},)")
    if dtype is not None and np.dtype(d.dtype) != dtype:
        raise TypeError(f"{what} has dtype {d.dtype}; x has dtype {dtype}, they must match")
    if np.dtype(d.dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{what} has dtype {d.dtype}; it must be float32 or float64")
    return d


def _like(be, out: Any, x: Any, what: str) -> Any:
    if not is_device_array(out):
        raise ValueError(f"{what} must be a GPU array like x")
    d = be.check_param(out, what)
    if tuple(d.shape) != tuple(x.shape) or np.dtype(d.dtype) != np.dtype(x.dtype):
        raise ValueError(f"{what} has shape {tuple(d.shape)} and dtype {d.dtype}; it must be "
                         f"{tuple(x.shape)} {x.dtype}")
    return d


def _output(be, out: Any, x: Any, what: str) -> Any:
    """A buffer like x for a result: ``out`` checked (overlap aside), or a new one."""
    if out is None:
        return be.zeros(x.size, np.dtype(x.dtype)).reshape(x.shape)
    return _like(be, out, x, what)


def _stats_buffer(be, a: Any, c: int) -> Any:
    """``stats_out`` checked (overlap aside): a float64 (3, C) device array."""
    if not is_device_array(a):
        raise ValueError("stats_out must be a GPU array like x")
    d = be.check_param(a, "stats_out")
    if tuple(d.shape) != (3, c) or np.dtype(d.dtype) != np.float64:
        raise ValueError(f"stats_out has shape {tuple(d.shape)} and dtype {d.dtype}; it must "
                         f"be (3, {c}) float64 (rows: mean, variance, 1/sqrt(variance + eps))")
    return d


#: The host's messages, but y over x, which the GPU path never allows.
_MESSAGES = {**overlap.MESSAGES,
             ("out", "x"): "out overlaps x (on the GPU, y needs its own buffer)"}


def forward(x, gamma, beta, *, eps, training, running_mean, running_var, momentum, axis,
            out, num_batches_tracked, stats_out=None):
    """The device forward; arguments already checked where they are not arrays."""
    from . import BatchNormCache, _check_values_per_channel, _geometry, cuda_kernels

    be = cuda_driver()
    x = be.check_param(x, "x")
    if len(x.shape) < 2:
        raise ValueError(f"x must have at least 2 dimensions (N, C, ...), got shape {x.shape}")
    shape = tuple(x.shape)  # a plain tuple (the simulator's shapes refuse shape[-1])
    if x.size == 0:
        raise ValueError(f"x has shape {shape}: no values to normalise")
    c, s = _geometry(SimpleNamespace(shape=shape, ndim=len(shape), size=x.size), axis)
    dt = np.dtype(x.dtype)
    affine = gamma is not None
    if affine:
        gamma = _vector(be, gamma, "gamma", c, dt)
        beta = _vector(be, beta, "beta", c, dt)
    track = running_mean is not None
    if track:
        running_mean = _vector(be, running_mean, "running_mean", c, None)
        running_var = _vector(be, running_var, "running_var", c, None)
    _check_values_per_channel(shape, x.size // c, training)
    out = _output(be, out, x, "out")
    if stats_out is not None:
        stats_out = _stats_buffer(be, stats_out, c)
    overlap.check_forward(be.span, x, gamma, beta, running_mean, running_var, out, stats_out,
                          training, out_may_be_x=False, messages=_MESSAGES)
    # ---- checked: compute
    stream = be.current_stream(be.origin(x))
    if not affine:
        gamma, beta = be.zeros(c, dt, 1.0), be.zeros(c, dt)
    factor = 0.0
    if training and track:
        if num_batches_tracked is not None:
            num_batches_tracked[...] += 1
        factor = (1.0 / float(num_batches_tracked.reshape(-1)[0]) if momentum is None
                  else momentum)
    stats = None
    if training:  # training writes all of it
        stats = be.empty((3, c), np.float64) if stats_out is None else stats_out
    rm = running_mean if track else gamma
    rv = running_var if track else gamma
    cuda_kernels.forward(be.flat_view(x), c, s, gamma, beta, float(eps), bool(training),
                         track, float(factor), rm, rv, stats, be.flat_view(out), stream)
    if training:
        cache = BatchNormCache(x, gamma if affine else None, True, c, s, stats)
    else:
        cache = BatchNormCache(x, gamma if affine else None, False, c, s,
                           running_mean=running_mean, running_var=running_var, eps=eps)
    return out, cache


def backward(dy, cache, out):
    from . import cuda_kernels

    be = cuda_driver()
    x = cache.x
    if not is_device_array(dy):
        raise ValueError("dy must be a GPU array like the forward's x")
    dy = _like(be, dy, x, "dy")
    c, s = cache.channels, cache.spatial
    dt = np.dtype(x.dtype)
    if isinstance(out, tuple) and len(out) != 3:
        raise ValueError("out must be an array (dx) or a tuple (dx, dgamma, dbeta)")
    dx, dgamma, dbeta = out if isinstance(out, tuple) else (out, None, None)
    dx = _output(be, dx, x, "out (dx)")
    affine = cache.gamma is not None
    for buf, what in ((dgamma, "out (dgamma)"), (dbeta, "out (dbeta)")):
        if buf is not None and not affine:
            raise ValueError(f"{what} given, but the forward had no gamma/beta")
    dgamma = be.zeros(c, dt) if dgamma is None else _vector(be, dgamma, "out (dgamma)", c, dt)
    dbeta = be.zeros(c, dt) if dbeta is None else _vector(be, dbeta, "out (dbeta)", c, dt)
    overlap.check_backward(be.span, dy, cache, dx, dgamma, dbeta)
    # ---- checked: compute
    stream = be.current_stream(be.origin(x))
    if cache.training:
        stats = cache.stats
    else:  # the running statistics are constants: one small read-back, one upload
        host = np.zeros((3, c))
        host[0] = be.to_host(cache.running_mean)
        host[2] = 1.0 / np.sqrt(be.to_host(cache.running_var).astype(np.float64) + cache.eps)
        stats = be.empty((3, c), np.float64)
        be.copy_from_host(stats, host)
    gamma = cache.gamma if affine else be.zeros(c, dt, 1.0)
    cuda_kernels.backward(be.flat_view(dy), be.flat_view(x), c, s, gamma, stats,
                          cache.training, dgamma, dbeta, be.flat_view(dx), stream)
    return (dx, dgamma, dbeta) if affine else (dx, None, None)

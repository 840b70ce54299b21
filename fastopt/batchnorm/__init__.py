"""Batch normalisation: forward and backward as JIT kernels, and a :class:`BatchNorm` layer.

The spec's BatchNorm (``docs/equations.md``, section BatchNorm; Ioffe & Szegedy 2015,
"Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate
Shift", Algorithm 1). For each channel ``k``, over the ``n`` values of all other axes
(batch and spatial)::

    training:   μ = (1/n) Σ x                    σ² = (1/n) Σ (x − μ)²   (biased)
                x̂ = (x − μ) / √(σ² + ε)          y = α x̂ + β
                r_μ  ← (1 − m) r_μ  + m μ
                r_σ² ← (1 − m) r_σ² + m σ² n/(n − 1)                      (unbiased)
    inference:  y = α (x − r_μ) / √(r_σ² + ε) + β

α (``gamma``, torch's ``weight``) and β (``beta``, torch's ``bias``) are learned. ε is
the spec's 1e-6 by default (torch's ``BatchNorm`` uses 1e-5). The running statistics
follow torch's convention (momentum ``m = 0.1`` weighs the *new* value; the variance is
stored unbiased); ``momentum=None`` keeps the exact cumulative average, torch's
``momentum=None``: the k-th update uses ``m = 1/k``, counted by ``num_batches_tracked``.

Backward (training), with ``inv = 1/√(σ² + ε)``::

    dβ = Σ dy        dα = Σ dy·x̂        dx = (α·inv/n) (n·dy − dβ − x̂·dα)

In inference the statistics are constants: ``dx = dy·α·inv`` (dα and dβ as above, with
the running statistics in x̂).

Layouts: ``axis=1`` takes ``(N, C)`` or ``(N, C, *spatial)``; ``axis=-1`` takes
channels-last ``(N, *spatial, C)``. Both are read in place (see
:mod:`fastopt.batchnorm.kernels` for the passes, the tiling and the deterministic float64
reductions: same bits at any thread count).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import FLOAT_DTYPES, check_nonneg, plain_ndarray
from ..drivers import cpu, is_device_array
from . import overlap

__all__ = ["BatchNorm", "BatchNormCache", "backward", "batch_stats", "forward"]

_kernels_module = None


def _kernels():
    """The CPU kernels module, imported on first use (it builds ~20 JIT dispatchers)."""
    global _kernels_module
    if _kernels_module is None:
        from . import kernels

        _kernels_module = kernels
    return _kernels_module


#: The spec's ε (``docs/equations.md``); torch's default is 1e-5.
EPS = 1e-6

_NO_STATS = np.empty((3, 0))  # inference: the kernel writes no statistics
_PLACEHOLDER = {dt: np.empty(0, dt) for dt in FLOAT_DTYPES}  # no running statistics


class BatchNormCache(NamedTuple):
    """What :func:`backward` needs from :func:`forward`.

    ``x``, ``gamma`` and, in inference, ``running_mean``/``running_var`` are the forward's
    arrays themselves, not copies: do not modify them before ``backward`` (torch's autograd
    refuses modified saved tensors for the same reason). In training, ``stats`` holds the
    batch's float64 statistics, one row each: the mean, the biased variance and
    ``inv_std = 1/√(σ² + ε)`` (also as the properties ``mean`` and ``inv_std``). x̂ is not
    stored: backward recomputes it from x.
    """

    x: np.ndarray | None
    gamma: np.ndarray | None
    training: bool
    channels: int
    spatial: int
    stats: np.ndarray | None = None
    running_mean: np.ndarray | None = None
    running_var: np.ndarray | None = None
    eps: float = EPS

    # Rows of ``stats`` on demand: the kernels take the (3, C) array itself (on a GPU a
    # row is a new device array object, about 10 µs of Python each).
    @property
    def mean(self) -> np.ndarray | None:
        """The batch mean μ (training), float64 ``(C,)``."""
        return None if self.stats is None else self.stats[0]

    @property
    def inv_std(self) -> np.ndarray | None:
        """``1/√(σ² + ε)`` of the batch (training), float64 ``(C,)``."""
        return None if self.stats is None else self.stats[2]


# ------------------------------------------------------------------------------ checks


def _dtype_hint(dt: np.dtype) -> str:
    return " (numba has no float16 on the CPU: convert to float32)" if dt == np.float16 else ""


def _check_input(x: object, what: str = "x") -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{what} must be a numpy.ndarray, got {type(x).__name__}")
    x = plain_ndarray(x, what)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{what} has dtype {x.dtype}; BatchNorm needs float32 or float64"
            f"{_dtype_hint(x.dtype)}"
        )
    if x.ndim < 2:
        raise ValueError(
            f"{what} has shape {x.shape} (ndim {x.ndim}); BatchNorm needs (N, C), "
            "(N, C, *spatial) with axis=1, or (N, *spatial, C) with axis=-1"
        )
    if not x.flags.c_contiguous:
        raise ValueError(
            f"{what} is not C-contiguous; pass np.ascontiguousarray({what}) (BatchNorm reads "
            "both layouts in place and does not copy)"
        )
    if x.size == 0:
        raise ValueError(f"{what} has shape {x.shape}: no values to normalise")
    return x


def _geometry(x: np.ndarray, axis: object) -> tuple[int, int]:
    """``(C, S)`` of the kernels' ``(N, C, S)`` view: channels-last is ``(M, C, 1)``."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"axis must be 1 or -1, got {axis!r}")
    if axis == -1 or axis == x.ndim - 1:
        return x.shape[-1], 1
    if axis != 1:
        raise ValueError(
            f"axis must be 1 (channels first: (N, C, ...)) or -1 (channels last: "
            f"(N, ..., C)), got {axis} for x of shape {x.shape}"
        )
    c = x.shape[1]
    return c, x.size // (x.shape[0] * c)


def _check_channel_vector(a: object, what: str, c: int, dtype: np.dtype | None,
                          *, writable: bool = False) -> np.ndarray:
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what} must be a numpy.ndarray, got {type(a).__name__}")
    a = plain_ndarray(a, what)
    if a.shape != (c,):
        raise ValueError(f"{what} has shape {a.shape}; x has {c} channels, so it must be ({c},)")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{what} has dtype {a.dtype}; x has dtype {dtype}, they must match")
    if dtype is None and a.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{what} has dtype {a.dtype}; it must be float32 or float64{_dtype_hint(a.dtype)}"
        )
    if writable and not a.flags.writeable:
        raise ValueError(f"{what} is read-only; BatchNorm updates it in place")
    if writable and c > 1 and abs(a.strides[0]) < a.itemsize:
        raise ValueError(f"{what}'s channels share memory (stride {a.strides[0]}): each "
                         "channel's value is written, so each needs memory of its own")
    return a


def _check_out(out: object, like: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{what} must be a numpy.ndarray, got {type(out).__name__}")
    out = plain_ndarray(out, what)
    if out.shape != like.shape or out.dtype != like.dtype:
        raise ValueError(
            f"{what} has shape {out.shape} and dtype {out.dtype}; it must be "
            f"{like.shape} {like.dtype}"
        )
    if not out.flags.c_contiguous:
        raise ValueError(f"{what} is not C-contiguous")
    if not out.flags.writeable:
        raise ValueError(f"{what} is read-only")
    return out


def _check_momentum(momentum: object) -> float | None:
    if momentum is None:
        return None
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float, np.number)):
        raise ValueError(f"momentum must be a number in [0, 1] or None, got {momentum!r}")
    m = float(momentum)
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1] (or None: cumulative average), got {m}")
    return m


def _check_counter(counter: object) -> np.ndarray:
    if (not isinstance(counter, np.ndarray) or counter.size != 1
            or counter.dtype.kind not in "iu" or not counter.flags.writeable):
        raise ValueError(
            "num_batches_tracked must be a writable one-element integer ndarray "
            f"(e.g. np.zeros((), np.int64)), got {counter!r}"
        )
    counter = plain_ndarray(counter, "num_batches_tracked")
    if counter.reshape(-1)[0] < 0:
        raise ValueError(f"num_batches_tracked counts batches: it must be >= 0, got {counter!r}")
    return counter


def batch_stats(x: np.ndarray, axis: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance of ``x`` in float64 (checked, deterministic).

    ``μ = (1/n) Σ x`` and ``σ² = (1/n) Σ (x − μ)²``, with the numerics of a two-pass
    algorithm in one pass over memory (:mod:`.kernels`).
    """
    x = _check_input(x)
    c, s = _geometry(x, axis)
    stats, ones, flat = np.empty((3, c)), np.ones(c, x.dtype), x.reshape(-1)
    # training=True with an empty y: the statistics pass only
    _kernels().get("forward", x)(flat, c, s, ones, ones, 0.0, True, False, 0.0, ones, ones,
                                   stats, flat[:0], False)
    return stats[0], stats[1]


# ------------------------------------------------------------------------------ public


def forward(
    x: np.ndarray,
    gamma: np.ndarray | None,
    beta: np.ndarray | None,
    *,
    eps: float = EPS,
    training: bool = True,
    running_mean: np.ndarray | None = None,
    running_var: np.ndarray | None = None,
    momentum: float | None = 0.1,
    axis: int = 1,
    out: np.ndarray | None = None,
    num_batches_tracked: np.ndarray | None = None,
    stats_out: np.ndarray | None = None,
) -> tuple[np.ndarray, BatchNormCache]:
    """Batch normalisation of ``x`` over every axis but the channel axis: ``(y, cache)``.

    Training (``training=True``): the batch's per-channel statistics, ::

        μ = (1/n) Σ x,   σ² = (1/n) Σ (x − μ)²,   y = α (x − μ)/√(σ² + ε) + β

    and, when ``running_mean``/``running_var`` are given, updated in place (torch's
    convention): ``r_μ ← (1 − m) r_μ + m μ``, ``r_σ² ← (1 − m) r_σ² + m σ² n/(n − 1)``.
    With ``momentum=None`` the k-th update uses ``m = 1/k`` (exact cumulative average);
    ``num_batches_tracked`` (a one-element integer array) counts k and is then required.
    When given, it is incremented by every training call that updates running statistics.
    Inference (``training=False``): ``y = α (x − r_μ)/√(r_σ² + ε) + β``; both running
    statistics are required and left unchanged.

    Args:
        x: C-contiguous float32 or float64, ``(N, C)`` or ``(N, C, *spatial)`` with
            ``axis=1``, or ``(N, *spatial, C)`` with ``axis=-1``. Kept (not copied) in the
            cache: do not modify it before :func:`backward`.
        gamma, beta: α and β, shape ``(C,)`` and x's dtype; both None: α = 1, β = 0.
            gamma is kept (not copied) in the cache, as x.
        eps: ε ≥ 0 (the spec's 1e-6; torch uses 1e-5).
        running_mean, running_var: ``(C,)`` float32 or float64 arrays, or None.
        momentum: m in [0, 1], or None for the cumulative average.
        out: where to write y (shape and dtype of x); allocated when None. ``out=x`` is
            allowed in inference only, and then the cache cannot run :func:`backward`.
        stats_out: where training writes the batch statistics, a float64 ``(3, C)`` array
            (rows: mean, biased variance, 1/√(σ² + ε)) apart from every other argument;
            allocated when None. The cache refers to it: reuse it for the next forward
            only after this one's backward (the :class:`BatchNorm` layer does so).
            Inference writes nothing there.

    Math in float64 for the statistics (blocked, ordered: the same bits at any thread
    count) and in x's dtype for y. Everything is checked before anything is written:
    after an error the running statistics and ``out`` are untouched. Each array the call
    writes (``out``, ``stats_out``, the running statistics in training) must not share
    memory with any other argument (``out=x`` in inference excepted); the two running
    statistics never share memory.

    GPU arrays (x and every other array but ``num_batches_tracked`` on the device): the
    same computation as CUDA kernels (:mod:`fastopt.batchnorm.device`); ``out=x`` is not
    allowed there.

    Source: spec, ``docs/equations.md`` (BatchNorm); Ioffe & Szegedy (2015), Algorithm 1;
    ``torch.nn.functional.batch_norm`` for the running statistics.
    """
    geometry = _plain_call(x, gamma, beta, eps, training, momentum, running_mean, running_var,
                           axis, out, num_batches_tracked, stats_out)
    if geometry is not None:  # valid, in the common form: the checks below would all pass,
        # overlap aside, which the kernel checks before it writes anything
        c, s = geometry
        done = _forward_host(x, c, s, gamma, beta, eps, training, momentum, running_mean,
                             running_var, np.empty_like(x) if out is None else out,
                             num_batches_tracked, stats_out, True, True)
        if done is not None:
            return done
        # refused for overlap: the checks below say which arrays (or allow out=x)
    eps, momentum = _check_options(gamma, beta, eps, training, momentum, running_mean,
                                   running_var, num_batches_tracked)
    if is_device_array(x):
        from . import device

        return device.forward(x, gamma, beta, eps=eps, training=training,
                              running_mean=running_mean, running_var=running_var,
                              momentum=momentum, axis=axis, out=out,
                              num_batches_tracked=num_batches_tracked, stats_out=stats_out)
    a = _check_cpu_arrays(x, gamma, beta, training, running_mean, running_var, axis, out,
                          stats_out, num_batches_tracked)
    return _forward_host(a.x, a.c, a.s, a.gamma, a.beta, eps, training, momentum,
                         a.running_mean, a.running_var, a.out, a.num_batches_tracked,
                         a.stats_out, a.keep_x, False)


def _forward_host(x, c, s, gamma, beta, eps, training, momentum, running_mean, running_var,
                  out, num_batches_tracked, stats_out, keep_x, check):
    """:func:`forward` on checked host arrays (``out`` allocated): ``(y, cache)``, or None
    when ``check`` (overlap, checked by the kernel) refused them, with nothing written."""
    dt = x.dtype
    affine = gamma is not None
    if not affine:
        gamma, beta = np.ones(c, dt), np.zeros(c, dt)
    elif not (gamma.flags.writeable and beta.flags.writeable):
        # only read, but a read-only array is another type to Numba: a copy of C values
        # spares a second compilation of the kernel (15-25 s)
        gamma, beta = gamma.copy(), beta.copy()
    if not training and not (running_mean.flags.writeable and running_var.flags.writeable):
        running_mean, running_var = running_mean.copy(), running_var.copy()
    flat_x, flat_y = x.reshape(-1), out.reshape(-1)
    kernel = _kernels().get("forward", x)
    if not training:
        if not kernel(flat_x, c, s, gamma, beta, eps, False, False, 0.0, running_mean,
                      running_var, _NO_STATS, flat_y, check):
            return None
        return out, BatchNormCache(x if keep_x else None, gamma if affine else None, False,
                                   c, s, None, running_mean, running_var, eps)
    track = running_mean is not None
    nbt = num_batches_tracked
    factor = 0.0
    if not track:  # typed placeholders, never read or written: the same compiled kernel
        running_mean = running_var = _PLACEHOLDER[dt]  # serves both
    elif momentum is None:  # the k-th update weighs 1/k; the counter moves once it is done
        factor = 1.0 / float(int(nbt.reshape(-1)[0]) + 1)
    else:
        factor = momentum
    stats = np.empty((3, c)) if stats_out is None else stats_out
    if not kernel(flat_x, c, s, gamma, beta, eps, True, track, factor, running_mean,
                  running_var, stats, flat_y, check):
        return None
    if track and nbt is not None:
        nbt[...] += 1
    return out, BatchNormCache(x, gamma if affine else None, True, c, s, stats)


def backward(
    dy: np.ndarray,
    cache: BatchNormCache,
    *,
    out: np.ndarray | tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Gradients of :func:`forward`: ``(dx, dgamma, dbeta)`` from ``dy = ∂L/∂y``.

    Training (Ioffe & Szegedy 2015, section 3; ``inv = 1/√(σ² + ε)``, n values per
    channel)::

        dβ = Σ dy,   dα = Σ dy·x̂,   dx = (α·inv/n) (n·dy − dβ − x̂·dα)

    in two passes: one for Σdy and Σdy·(x − μ) (float64, blocked, ordered), one for dx.
    Inference (the running statistics are constants): ``dx = dy·α·inv``, with dα and dβ
    from the same single pass. ``dgamma``/``dbeta`` are None when the forward had no
    gamma/beta; otherwise they have x's dtype and are *written* (not accumulated).

    Args:
        dy: shape and dtype of the forward's x, C-contiguous.
        cache: the second value returned by :func:`forward`.
        out: a buffer for dx (``out=dy`` is allowed: dx then overwrites dy), or a tuple
            ``(dx, dgamma, dbeta)`` of buffers, any of them None (allocated). Apart from
            that, none of them may share memory with another argument, the forward's
            x, gamma or statistics.
    """
    if not isinstance(cache, BatchNormCache):
        raise TypeError(f"cache must be the BatchNormCache from forward, got {type(cache)}")
    x = cache.x
    if x is None:
        raise ValueError("this forward wrote y over x (out=x), so backward cannot run")
    _check_cache(cache)
    bufs = _plain_backward(dy, x, cache, out)
    if bufs is not None:  # valid, in the common form, overlap aside (the kernel checks it)
        done = _backward_host(dy, x, cache, *bufs, True)
        if done is not None:
            return done
    if is_device_array(x):
        from . import device

        return device.backward(dy, cache, out)
    return _backward_host(dy, x, cache, *_check_backward_arrays(dy, x, cache, out), False)


def _vector_ok(a: object, shape: tuple, dtypes: tuple) -> bool:
    """A host or GPU array of ``shape`` and one of ``dtypes``."""
    return (isinstance(a, np.ndarray) or is_device_array(a)) and tuple(a.shape) == shape \
        and np.dtype(a.dtype) in dtypes


def _check_cache(cache: BatchNormCache) -> None:
    """The cache's fields as :func:`forward` made them: its geometry that of its x, its
    arrays of the right shapes and dtypes (a cache edited with ``_replace`` would make the
    kernels read the wrong memory), or a clear error."""
    x, c, s = cache.x, cache.channels, cache.spatial
    if not (isinstance(x, np.ndarray) or is_device_array(x)):
        raise TypeError(f"cache.x must be the forward's x, got {type(x).__name__}")
    shape, dt = tuple(x.shape), np.dtype(x.dtype)
    size = int(np.prod(shape, dtype=object))
    ok = (type(c) is int and type(s) is int and c >= 1 and s >= 1 and len(shape) >= 2
          and size > 0 and dt in FLOAT_DTYPES
          and ((shape[1] == c and s == size // (shape[0] * c))
               or (shape[-1] == c and s == 1)))
    if not ok:
        raise ValueError(f"cache.channels={c!r} and cache.spatial={s!r} do not fit cache.x "
                         f"of shape {shape}: pass the cache forward returned, unchanged")
    if type(cache.training) is not bool:
        raise ValueError(f"cache.training must be True or False, got {cache.training!r}")
    if cache.gamma is not None and not _vector_ok(cache.gamma, (c,), (dt,)):
        raise ValueError(f"cache.gamma must be ({c},) {dt}, as the forward's")
    if cache.training:
        if not _vector_ok(cache.stats, (3, c), (FLOAT_DTYPES[1],)):
            raise ValueError(f"cache.stats must be the forward's (3, {c}) float64 statistics")
        if isinstance(cache.stats, np.ndarray) and not cache.stats.flags.c_contiguous:
            raise ValueError("cache.stats must be C-contiguous, as the forward made it")
    else:
        for name in ("running_mean", "running_var"):
            if not _vector_ok(getattr(cache, name), (c,), FLOAT_DTYPES):
                raise ValueError(f"cache.{name} must be a ({c},) float32 or float64 array")
        if not (type(cache.eps) is float and 0.0 <= cache.eps < _INF):
            raise ValueError(f"cache.eps must be a float >= 0, got {cache.eps!r}")


def _backward_host(dy, x, cache, dx, dgamma, dbeta, check):
    """:func:`backward` on checked host arrays (None: to allocate): ``(dx, dgamma,
    dbeta)``, or None when ``check`` (overlap, checked by the kernel) refused them, with
    nothing written."""
    c, s = cache.channels, cache.spatial
    dt = x.dtype
    if dx is None:
        dx = np.empty_like(x)
    affine = cache.gamma is not None
    if dgamma is None:
        dgamma = np.empty(c, dt)
    if dbeta is None:
        dbeta = np.empty(c, dt)
    if cache.training:
        mean, inv_std = cache.stats[0], cache.stats[2]
    else:
        mean = cache.running_mean.astype(np.float64)
        inv_std = 1.0 / np.sqrt(cache.running_var.astype(np.float64) + cache.eps)
    if not _kernels().get("backward", x)(
        dy.reshape(-1), x.reshape(-1), c, s, cache.gamma if affine else np.ones(c, dt),
        mean, inv_std, cache.training, dgamma, dbeta, dx.reshape(-1), check,
    ):
        return None
    return (dx, dgamma, dbeta) if affine else (dx, None, None)


_INF = float("inf")
_F32, _F64 = FLOAT_DTYPES  # native float dtypes are singletons: compared with ``is`` here

def _plain_call(x, gamma, beta, eps, training, momentum, running_mean, running_var, axis,
                out, num_batches_tracked, stats_out) -> tuple[int, int] | None:
    """``(C, S)`` when a :func:`forward` call is valid and in its common form, else None.

    The common form: x a non-empty C-contiguous float32/float64 ``np.ndarray`` (two or more
    values per channel in training), ``axis`` the int 1 or -1, ``eps`` a float ≥ 0,
    ``momentum`` a float in [0, 1] (or None with a counter), ``training`` a bool; gamma and
    beta both None or both ``(C,)`` arrays of x's dtype; the running statistics both None
    (training only) or ``(C,)`` float arrays, writable in training; ``out`` None or a
    C-contiguous writable array of x's shape and dtype; ``num_batches_tracked`` None or a
    writable one-element integer array; ``stats_out`` None or a C-contiguous writable
    float64 ``(3, C)`` array.

    Every check of :func:`forward` but overlap passes for such a call, so it skips them:
    an inference call at (2, 1024) took 6.6-6.9 us here instead of 9.3 us (the kernel
    alone: 2.7 us). Overlap (out and x, the running statistics, stats_out and every other
    array) is checked by the kernel before it writes anything: eight ``np.shares_memory``
    calls took 3.5 of a training call's 7.7 us of checks here. Any other call, valid or
    not, and any the kernel refuses, goes through the detailed checks (subclasses, NumPy
    scalars and GPU arrays included)."""
    if not (type(x) is np.ndarray and type(training) is bool and type(eps) is float
            and 0.0 <= eps < _INF and type(axis) is int and (axis == 1 or axis == -1)):
        return None
    if momentum is None:
        if training and running_mean is not None and num_batches_tracked is None:
            return None
    elif not (type(momentum) is float and 0.0 <= momentum <= 1.0):
        return None
    n, shape, dt = x.size, x.shape, x.dtype
    if (n == 0 or len(shape) < 2 or (dt is not _F32 and dt is not _F64)
            or not x.flags.c_contiguous):
        return None
    c, s = (shape[1], n // (shape[0] * shape[1])) if axis == 1 else (shape[-1], 1)
    if training and n // c < 2:
        return None
    cs = (c,)
    if gamma is None:
        if beta is not None:
            return None
    elif not (type(gamma) is np.ndarray and type(beta) is np.ndarray and gamma.shape == cs
              and beta.shape == cs and gamma.dtype is dt and beta.dtype is dt):
        return None
    rm, rv = running_mean, running_var
    if rm is None:
        if rv is not None or not training:
            return None
    elif not (type(rm) is np.ndarray and type(rv) is np.ndarray and rm.shape == cs
              and rv.shape == cs and (rm.dtype is _F32 or rm.dtype is _F64)
              and (rv.dtype is _F32 or rv.dtype is _F64)
              and (not training or (rm.flags.writeable and rv.flags.writeable
                                    and rm.flags.c_contiguous and rv.flags.c_contiguous))):
        return None  # (written strided statistics: the detailed checks see their strides)
    if out is not None and not (type(out) is np.ndarray and out.shape == shape
                                and out.dtype is dt and out.flags.c_contiguous
                                and out.flags.writeable):
        return None
    nbt = num_batches_tracked
    if nbt is not None and not (type(nbt) is np.ndarray and nbt.size == 1
                                and nbt.dtype.kind in "iu" and nbt.flags.writeable
                                and nbt.reshape(-1)[0] >= 0
                                and _owned_apart(nbt, (x, gamma, beta, rm, rv, out,
                                                       stats_out))):
        return None  # (the kernel does not see the counter: its overlap is checked here)
    so = stats_out
    if so is not None and not (
            type(so) is np.ndarray and so.shape == (3, c) and so.dtype is _F64
            and so.flags.c_contiguous and so.flags.writeable):
        return None
    return c, s


class _HostArrays(NamedTuple):
    """:func:`forward`'s host arrays, checked (subclasses as their plain views)."""

    x: np.ndarray
    c: int
    s: int
    gamma: np.ndarray | None
    beta: np.ndarray | None
    running_mean: np.ndarray | None
    running_var: np.ndarray | None
    out: np.ndarray  # allocated when not given
    keep_x: bool  # False when out is x (inference only): the cache cannot run backward
    num_batches_tracked: np.ndarray | None
    stats_out: np.ndarray | None


def _owned_apart(a: np.ndarray, others: tuple) -> bool:
    """Whether ``a``'s memory was allocated by an ndarray that holds none of ``others``
    (None entries ignored): then they cannot overlap. False where that cannot be told
    so cheaply (the detailed checks then compare bytes)."""
    mine = cpu.owner(a)
    if mine is None:
        return False
    for b in others:
        if b is not None:
            theirs = cpu.owner(b)
            if theirs is None or theirs is mine:
                return False
    return True


def _check_cpu_arrays(x, gamma, beta, training, running_mean, running_var, axis, out,
                      stats_out=None, num_batches_tracked=None) -> _HostArrays:
    """:func:`forward`'s checks of host arrays, with the overlap rules."""
    x = _check_input(x)
    c, s = _geometry(x, axis)
    dt = x.dtype
    if gamma is not None:
        gamma = _check_channel_vector(gamma, "gamma", c, dt)
        beta = _check_channel_vector(beta, "beta", c, dt)
    if running_mean is not None:
        running_mean = _check_channel_vector(running_mean, "running_mean", c, None,
                                             writable=training)
        running_var = _check_channel_vector(running_var, "running_var", c, None,
                                            writable=training)
    _check_values_per_channel(x.shape, x.size // c, training)
    if out is not None:
        out = _check_out(out, x, "out")
    if stats_out is not None:
        stats_out = _check_stats_out(stats_out, c)
    nbt = num_batches_tracked
    if nbt is not None:
        nbt = plain_ndarray(nbt, "num_batches_tracked")
    written_nbt = nbt if training and running_mean is not None else None
    overlap.check_forward(cpu.byte_span, x, gamma, beta, running_mean, running_var, out,
                          stats_out, training, out_may_be_x=True, exact=np.shares_memory,
                          num_batches_tracked=written_nbt)
    keep_x = out is None or cpu.byte_span(out) != cpu.byte_span(x)  # else y over x
    return _HostArrays(x, c, s, gamma, beta, running_mean, running_var,
                       np.empty_like(x) if out is None else out, keep_x, nbt, stats_out)


def _check_stats_out(stats: object, c: int) -> np.ndarray:
    if not isinstance(stats, np.ndarray):
        raise TypeError(f"stats_out must be a numpy.ndarray, got {type(stats).__name__}")
    stats = plain_ndarray(stats, "stats_out")
    if stats.shape != (3, c) or stats.dtype != np.float64:
        raise ValueError(
            f"stats_out has shape {stats.shape} and dtype {stats.dtype}; it must be (3, {c}) "
            "float64 (rows: mean, variance, 1/sqrt(variance + eps))"
        )
    if not stats.flags.c_contiguous or not stats.flags.writeable:
        raise ValueError("stats_out must be C-contiguous and writable")
    return stats


def _plain_backward(dy, x, cache, out):
    """``(dx, dgamma, dbeta)`` (None: to allocate) when a :func:`backward` call on host
    arrays is valid and in its common form, else None: dy a C-contiguous ``np.ndarray``
    of x's shape and dtype; ``out`` None, a dx array or a 3-tuple; dx C-contiguous,
    writable, of x's shape and dtype; dgamma and dbeta ``(C,)`` writable arrays of x's
    dtype (only when the forward had gamma). Every check of :func:`backward` but overlap
    passes for such a call, so it skips them; the kernel checks overlap (dx apart from x,
    and dy itself or apart from it; dgamma apart from dbeta) before it writes anything, as
    for :func:`_plain_call`."""
    if not (type(dy) is np.ndarray and type(x) is np.ndarray):
        return None
    shape, dt = x.shape, x.dtype
    if not (dy.shape == shape and dy.dtype is dt and dy.flags.c_contiguous):
        return None
    if out is None:
        return None, None, None
    if type(out) is np.ndarray:
        dx, dg, db = out, None, None
    elif type(out) is tuple and len(out) == 3:
        dx, dg, db = out
    else:
        return None
    if dx is not None and not (type(dx) is np.ndarray and dx.shape == shape and dx.dtype is dt
                               and dx.flags.c_contiguous and dx.flags.writeable):
        return None
    if dg is None and db is None:
        return dx, dg, db
    if cache.gamma is None:
        return None
    cs = (cache.channels,)
    for v in (dg, db):
        if v is not None and not (type(v) is np.ndarray and v.shape == cs and v.dtype is dt
                                  and v.flags.writeable and v.flags.c_contiguous):
            return None
    return dx, dg, db


def _check_backward_arrays(dy, x, cache, out):
    """:func:`backward`'s checks of host arrays: ``(dx, dgamma, dbeta)`` (None: to
    allocate)."""
    _check_input(dy, "dy")
    if dy.shape != x.shape or dy.dtype != x.dtype:
        raise ValueError(
            f"dy has shape {dy.shape} and dtype {dy.dtype}; the forward's x was "
            f"{x.shape} {x.dtype}"
        )
    c, dt = cache.channels, x.dtype
    if isinstance(out, tuple) and len(out) != 3:
        raise ValueError("out must be an array (dx) or a tuple (dx, dgamma, dbeta)")
    dx, dgamma, dbeta = out if isinstance(out, tuple) else (out, None, None)
    if dx is not None:
        _check_out(dx, x, "out (dx)")
    for buf, what in ((dgamma, "out (dgamma)"), (dbeta, "out (dbeta)")):
        if buf is not None:
            if cache.gamma is None:
                raise ValueError(f"{what} given, but the forward had no gamma/beta")
            _check_channel_vector(buf, what, c, dt, writable=True)
    overlap.check_backward(cpu.byte_span, dy, cache, dx, dgamma, dbeta, exact=np.shares_memory)
    return dx, dgamma, dbeta


def _check_values_per_channel(shape, n: int, training: bool) -> None:
    if training and n < 2:
        raise ValueError(
            f"training needs more than one value per channel (x of shape {tuple(shape)} has "
            f"{n} per channel, so the batch variance is undefined); use training=False"
        )


def _check_options(gamma, beta, eps, training, momentum, running_mean, running_var,
                   num_batches_tracked) -> tuple[float, float | None]:
    """:func:`forward`'s checks that do not depend on where the arrays live:
    ``(eps, momentum)`` checked."""
    if (gamma is None) != (beta is None):
        raise ValueError("pass both gamma and beta (affine), or neither (α = 1, β = 0)")
    if not (type(eps) is float and 0.0 <= eps < np.inf):
        eps = check_nonneg("eps", eps)
    if not isinstance(training, (bool, np.bool_)):
        raise ValueError(f"training must be True or False, got {training!r}")
    momentum = _check_momentum(momentum)
    if (running_mean is None) != (running_var is None):
        raise ValueError("pass both running_mean and running_var, or neither")
    if running_mean is None and not training:
        raise ValueError("inference (training=False) needs running_mean and running_var")
    if num_batches_tracked is not None:
        _check_counter(num_batches_tracked)
    if (training and running_mean is not None and momentum is None
            and num_batches_tracked is None):
        raise ValueError(
            "momentum=None (cumulative average) needs num_batches_tracked to count the batches"
        )
    return eps, momentum


from .layer import BatchNorm  # noqa: E402  (the layer builds on the functions above)

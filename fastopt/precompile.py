"""Load or compile, ahead of training, every kernel a run will use.

fastopt compiles each kernel on first use and keeps it in Numba's disk cache. A version is
compiled per rule, dtype, serial or parallel, and combination of options (a clip factor,
weight decay, gradient noise each change the argument types): about a second each, paid
by the first training step that needs it, and BatchNorm's kernels take 15-25 s each.
:func:`precompile` runs them all once, with a progress bar, so that a run (or a
benchmark, or a job about to fork workers) starts warm; from the disk cache each takes
milliseconds. ``python -m fastopt compile`` does the same from the command line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import NamedTuple

import numba
import numpy as np

from . import parallel
from ._checks import FLOAT_DTYPES
from ._progress import progress
from .optim import Optimizer


class _Job(NamedTuple):
    label: str
    run: Callable[[], object]

    def __str__(self) -> str:  # what the progress bar shows
        return self.label


def _batchnorm_calls(dtype) -> list[tuple[str, Callable[[], object]]]:
    """BatchNorm's forward (training, with running statistics, and inference) and
    backward, serially and, with two or more threads, in parallel, for ``dtype``."""
    from . import batchnorm

    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"precompile's batchnorm dtypes must be float32 or float64, got {dtype}")
    x = np.linspace(-1.0, 1.0, 4 * 3 * 2).reshape(4, 3, 2).astype(dtype)
    gamma, beta = np.ones(3, dtype), np.zeros(3, dtype)

    def run(mode: str) -> None:
        with parallel.forced(mode):
            rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
            for training in (True, False):
                y, cache = batchnorm.forward(x, gamma, beta, training=training,
                                             running_mean=rm, running_var=rv)
                batchnorm.backward(y, cache)

    modes = ("serial", "parallel") if parallel.get_num_threads() > 1 else ("serial",)
    return [_Job(f"BatchNorm {dtype.name} {mode}", lambda mode=mode: run(mode)) for mode in modes]


def precompile(*optimizers: Optimizer, batchnorm: Iterable = (),
               parallel_kernels: bool | None = None, show_progress: bool = True) -> int:
    """Load from Numba's disk cache, or compile, every kernel the steps of ``optimizers``
    can run, and BatchNorm's kernels for each dtype in ``batchnorm``.

    For each optimizer: every group's rule in the argument types its steps pass (with and
    without a clip factor where ``clip_norm`` is set), serial and, where a step could
    choose it, parallel (``parallel_kernels=True``: parallel too whatever the arrays'
    sizes; ``False``: serial only); the norm reduction where the step clips or skips
    non-finite gradients. Parallel kernels only with two or more threads
    (:func:`fastopt.get_num_threads`). Returns the number of kernel versions visited.

    >>> opt = fastopt.Adam(params, clip_norm=1.0)
    >>> fastopt.precompile(opt, batchnorm=[np.float32])   # doctest: +SKIP
    """
    jobs: dict[tuple, _Job] = {}
    for opt in optimizers:
        if not isinstance(opt, Optimizer):
            raise TypeError(f"precompile takes fastopt optimizers, got {type(opt).__name__}")
        for kernel, args in opt._warm_calls(parallel_kernels):
            key = (id(kernel), tuple(numba.typeof(a) for a in args))
            name = re.sub(r"_[0-9a-f]{10}$", "", kernel.py_func.__name__)  # without its tag
            jobs.setdefault(key, _Job(f"{name} {np.dtype(opt.dtype).name}",
                                      lambda kernel=kernel, args=args: kernel(*args)))
    for dtype in batchnorm:
        for job in _batchnorm_calls(dtype):
            jobs.setdefault(("batchnorm", job.label), job)
    for job in progress(list(jobs.values()), "precompile", enabled=show_progress):
        job.run()
    return len(jobs)

"""After the first step, a step allocates nothing that grows with the parameter count."""

import tracemalloc

import numpy as np
import pytest

import fastopt


def _peak_bytes_per_step(n, cls, **kw):
    p = [np.ones(n, np.float32), np.ones(100, np.float32)]
    g = [np.full(n, 0.1, np.float32), np.full(100, 0.1, np.float32)]
    opt = cls(p, **kw)
    opt.step(g)  # compile and settle
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(5):
        opt.step(g)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize(
    "cls,kw",
    [
        (fastopt.Adam, {}),
        (fastopt.AMSGrad, {"clip_norm": 1.0, "skip_nonfinite": True}),
        (fastopt.RMSprop, {"centered": True, "momentum": 0.5,
                           "grad_noise": fastopt.GradientNoise(0.01)}),
    ],
)
def test_step_allocations_do_not_grow_with_size(cls, kw):
    small = _peak_bytes_per_step(50_000, cls, **kw)
    large = _peak_bytes_per_step(2_000_000, cls, **kw)
    # An array-sized temporary would be >= 200 KB at the small size, 8 MB at the large one.
    assert large < 64 * 1024, large
    assert large < small + 16 * 1024, (small, large)

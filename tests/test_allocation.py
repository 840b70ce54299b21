"""After the first step, a step allocates nothing that grows with the parameter count."""

import tracemalloc

import numpy as np
import pytest

import fastopt


def _peak_bytes_per_step(n, cls, **kw):
    p = [np.ones(n, np.float32), np.ones(100, np.float32)]
    g = [np.full(n, 0.1, np.float32), np.full(100, 0.1, np.float32)]
    opt = cls(p, **kw)
    for _ in range(6):  # compile or load both kernels of each array (fastopt.parallel tries
        opt.step(g)  # its parallel one at the 3rd step), and settle
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


def _batchnorm_peak_bytes(shape):
    """Peak traced bytes of BatchNorm layer training steps (forward and backward into
    buffers made once), after a first step."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    y, dx = np.empty_like(x), np.empty_like(x)
    layer = fastopt.BatchNorm(shape[1])
    for _ in range(4):  # both kernels loaded (fastopt.parallel tries the parallel one 3rd)
        layer.forward(x, out=y)
        layer.backward(dy, out=dx)
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(3):
        layer.forward(x, out=y)
        layer.backward(dy, out=dx)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


@pytest.mark.parametrize("shape", [(512, 1024), (2048, 64), (16, 64, 8, 8)])
def test_batchnorm_training_steps_allocate_no_batch_sized_buffer(shape):
    """With out= buffers a training step allocates no array like x: only the kernels'
    float64 partials (one row of C per tile of 16-64K values), a small fraction of x."""
    x_bytes = int(np.prod(shape)) * 4
    peak = _batchnorm_peak_bytes(shape)
    assert peak < x_bytes / 4, (peak, x_bytes)


def test_the_layer_writes_its_statistics_into_one_buffer():
    """The layer's training forwards reuse one (3, C) statistics buffer (none allocated per
    step), and its backward reads the statistics of the forward just before."""
    rng = np.random.default_rng(1)
    layer = fastopt.BatchNorm(5)
    buffers = set()
    for _ in range(3):
        x = rng.standard_normal((7, 5)).astype(np.float32)
        layer.forward(x)
        buffers.add(id(layer._cache.stats))
        np.testing.assert_allclose(layer._cache.mean, x.mean(axis=0), rtol=1e-6, atol=1e-7)
    assert buffers == {id(layer._stats)}

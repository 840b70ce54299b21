"""Whole-model, step-overhead and BatchNorm benchmarks, each group with its yardsticks.

ResNet-50 (161 arrays, 25.6M float32): fastopt Adam over the list and over one FlatParams,
the same-traffic roofline over one buffer, torch fused and foreach Adam on the list.
BatchNorm training forward+backward and inference on the issue's shapes: fastopt, NumPy,
torch, and a one-read-one-write copy pass for inference.
"""

import numpy as np
import pytest

from fastopt.bench import batchnorm as bn_bench
from fastopt.bench.workloads import after_sweep_candidates, resnet50_candidates


@pytest.fixture(scope="module")
def resnet():
    return resnet50_candidates(with_torch=True)


LABELS = ["fastopt list of 161", "fastopt FlatParams", "roofline, one buffer",
          "torch fused list", "torch foreach list"]


@pytest.mark.parametrize("label", LABELS)
def test_resnet50_adam(benchmark, resnet, label):
    if label not in resnet:
        pytest.skip("torch not installed")
    benchmark.group = "resnet50-adam"
    benchmark(resnet[label])


@pytest.mark.parametrize("label", ["fastopt step", "kernel alone"])
def test_adam_1e3_after_cache_sweep(benchmark, label):
    """The step's Python in a training loop: each timed call right after a 64 MB sweep of
    the caches, against the compiled kernel called alone (the same sweeps)."""
    steps, sweep, _ = after_sweep_candidates(1000)
    benchmark.group = "adam-1e3-after-cache-sweep"
    benchmark.pedantic(steps[label], setup=sweep, rounds=200, warmup_rounds=2)


def _bn_inputs(shape):
    rng = np.random.default_rng(0)
    c = shape[1]
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
    return x, dy, gamma, beta


IDS = ["x".join(map(str, s)) for s in bn_bench.SHAPES]


@pytest.mark.parametrize("shape", bn_bench.SHAPES, ids=IDS)
@pytest.mark.parametrize("impl", ["fastopt", "numpy", "torch", "torch_out"])
def test_batchnorm_train(benchmark, shape, impl):
    from fastopt import batchnorm

    x, dy, gamma, beta = _bn_inputs(shape)
    c = shape[1]
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    benchmark.group = f"batchnorm-train-{'x'.join(map(str, shape))}"
    if impl == "fastopt":
        y, dx = np.empty_like(x), np.empty_like(x)
        dg, db = np.empty(c, np.float32), np.empty(c, np.float32)
        stats = np.empty((3, c))

        def step():
            _, cache = batchnorm.forward(x, gamma, beta, running_mean=rm, running_var=rv, out=y,
                                         stats_out=stats)
            batchnorm.backward(dy, cache, out=(dx, dg, db))

        benchmark(step)
    elif impl == "numpy":
        benchmark(bn_bench.numpy_train_step, x, gamma, beta, dy, rm, rv)
    elif impl == "torch":
        pytest.importorskip("torch")
        benchmark(bn_bench._torch_fns(x, gamma, beta, dy)["train_torch"])
    else:  # torch's kernels alone: out= buffers, no autograd
        pytest.importorskip("torch")
        benchmark(bn_bench.torch_out_train(x, gamma, beta, dy)[0])


@pytest.mark.parametrize("shape", bn_bench.SHAPES, ids=IDS)
@pytest.mark.parametrize("impl", ["fastopt", "copy"])
def test_batchnorm_inference(benchmark, shape, impl):
    from fastopt import batchnorm

    x, _, gamma, beta = _bn_inputs(shape)
    c = shape[1]
    y = np.empty_like(x)
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    benchmark.group = f"batchnorm-infer-{'x'.join(map(str, shape))}"
    if impl == "fastopt":
        benchmark(batchnorm.forward, x, gamma, beta, training=False, running_mean=rm,
                  running_var=rv, out=y)
    else:
        benchmark(bn_bench.copy_kernel(), x.reshape(-1), y.reshape(-1))

"""Every rule at 1e4, 1e6 and 1e7 float32 (Adam also float64) against its yardsticks."""

import numpy as np
import pytest

from fastopt.bench import torch_ref
from fastopt.bench.roofline import divider_kernel, parallel_yardstick, roofline_kernel
from fastopt.bench.run import DIVIDING, RULES
from fastopt.rules.registry import registry

CASES = [(r, n, "float32") for r in RULES for n in (10**4, 10**6, 10**7)]
CASES += [("Adam", n, "float64") for n in (10**4, 10**6, 10**7)]
IDS = [f"{r}-{n:.0e}-{d}" for r, n, d in CASES]


def _arrays(n, dtype, k):
    rng = np.random.default_rng(0)
    g = (rng.standard_normal(n) * 1e-2).astype(dtype)
    return np.ones(n, dtype), g, tuple(np.zeros(n, dtype) for _ in range(k))


@pytest.mark.parametrize("rule,n,dtype", CASES, ids=IDS)
def test_fastopt(benchmark, rule, n, dtype):
    cls, k = RULES[rule]
    p, g, _ = _arrays(n, dtype, k)
    opt = cls(p)
    benchmark.group = f"{rule}-{n:.0e}-{dtype}"
    benchmark(opt.step, g)
    assert np.all(np.isfinite(p)) and not np.all(p == 1.0)


@pytest.mark.parametrize("rule,n,dtype", CASES, ids=IDS)
def test_roofline(benchmark, rule, n, dtype):
    _, k = RULES[rule]
    p, g, st = _arrays(n, dtype, k)
    kernel = roofline_kernel(k, parallel=parallel_yardstick(n, k, dtype))
    benchmark.group = f"{rule}-{n:.0e}-{dtype}"
    benchmark(kernel, p, g, st)


DIVIDING_CASES = [c for c in CASES if c[0] in DIVIDING]


@pytest.mark.parametrize("rule,n,dtype", DIVIDING_CASES,
                         ids=[f"{r}-{n:.0e}-{d}" for r, n, d in DIVIDING_CASES])
def test_divider_floor(benchmark, rule, n, dtype):
    """The same traffic plus one square root and one division per value: the floor of the
    rules that divide while their arrays fit in cache."""
    _, k = RULES[rule]
    p, g, st = _arrays(n, dtype, k)
    kernel = divider_kernel(k, parallel=parallel_yardstick(n, k, dtype))
    benchmark.group = f"{rule}-{n:.0e}-{dtype}"
    benchmark(kernel, p, g, st)


@pytest.mark.parametrize("rule,n,dtype", CASES, ids=IDS)
def test_numpy_reference(benchmark, rule, n, dtype):
    _, k = RULES[rule]
    p, g, st = _arrays(n, dtype, k)
    benchmark.group = f"{rule}-{n:.0e}-{dtype}"
    benchmark(registry()[rule].numpy_step, p, g, st, 10)


TORCH_CASES = [c for c in CASES if registry()[c[0]].torch is not None]


@pytest.mark.skipif(not torch_ref.available(), reason="torch not installed")
@pytest.mark.parametrize("rule,n,dtype", TORCH_CASES,
                         ids=[f"{r}-{n:.0e}-{d}" for r, n, d in TORCH_CASES])
def test_torch(benchmark, rule, n, dtype):
    _, k = RULES[rule]
    p, g, _ = _arrays(n, dtype, k)
    step, _ = torch_ref.make_step(rule, p, g)
    benchmark.group = f"{rule}-{n:.0e}-{dtype}"
    benchmark(step)

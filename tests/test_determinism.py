"""Same inputs, same bits, at any thread count; and an interrupted run resumes exactly."""

import io

import numpy as np
import pytest

import fastopt
from fastopt import parallel

RULES = [getattr(fastopt, name) for name in fastopt.optim.RULE_NAMES]
N = 300_000  # with parallel kernels: several blocks of the norm reduction per thread
MAX = parallel.max_threads()


def _run(cls, threads, mode, steps=3, **kw):
    rng = np.random.default_rng(0)
    p = [rng.standard_normal(N).astype(np.float32), rng.standard_normal(1000).astype(np.float32)]
    grads = [[rng.standard_normal(a.size).astype(np.float32) for a in p] for _ in range(steps)]
    with fastopt.thread_limit(threads), parallel.forced(mode):
        opt = cls(p, clip_norm=50.0, grad_noise=fastopt.GradientNoise(0.01, seed=9), **kw)
        for g in grads:
            opt.step(g)
    return p, opt.state_dict()


@pytest.mark.parametrize("cls", RULES, ids=lambda c: c.__name__)
def test_bit_identical_serial_and_parallel_at_any_thread_count(cls):
    """The serial kernels, and the parallel ones at every thread count: the same bits, so
    fastopt's choice between them (fastopt.parallel.Choice) never changes a result."""
    if MAX < 2:
        pytest.skip("needs at least two threads")
    p1, s1 = _run(cls, 1, "serial")
    for threads in range(2, MAX + 1):
        pn, sn = _run(cls, threads, "parallel")
        for a, b in zip(p1, pn, strict=True):
            assert np.array_equal(a, b)
        for k in s1:
            assert np.array_equal(s1[k], sn[k]), k


def test_global_norm_bits_do_not_depend_on_threads():
    x = np.random.default_rng(1).standard_normal(10**6).astype(np.float32)
    with parallel.forced("serial"):
        one = fastopt.functional.global_norm([x])
    with parallel.forced("parallel"):
        many = fastopt.functional.global_norm([x])
    assert one == many
    assert one == pytest.approx(np.sqrt(np.sum(x.astype(np.float64) ** 2)), rel=1e-12)


def _make(cls, kind, params, **kw):
    opts = dict(clip_norm=1.0, grad_noise=fastopt.GradientNoise(0.05, seed=11), **kw)
    if kind == "flat":
        return cls(params, **opts)
    return cls(params, **opts)


@pytest.mark.parametrize("cls", RULES, ids=lambda c: c.__name__)
def test_checkpoint_mid_run_is_bit_identical(cls):
    """state_dict -> np.savez -> load_state_dict in a fresh optimizer, with noise and
    clipping on, continues exactly like the uninterrupted run."""
    rng = np.random.default_rng(3)
    init = [rng.standard_normal((40, 30)), rng.standard_normal(30)]
    grads = [[rng.standard_normal(a.shape) for a in init] for _ in range(8)]
    kw = {"momentum_decay": 4e-3} if cls is fastopt.Nadam else {}

    ref = [a.copy() for a in init]
    opt = cls(ref, clip_norm=1.0, grad_noise=fastopt.GradientNoise(0.05, seed=11), **kw)
    for g in grads:
        opt.step(g)

    run = [a.copy() for a in init]
    first = cls(run, clip_norm=1.0, grad_noise=fastopt.GradientNoise(0.05, seed=11), **kw)
    for g in grads[:5]:
        first.step(g)
    buf = io.BytesIO()
    np.savez(buf, **first.state_dict())
    saved = [a.copy() for a in run]
    buf.seek(0)
    loaded = dict(np.load(buf))

    resumed = [a.copy() for a in saved]
    second = cls(resumed, clip_norm=1.0, grad_noise=fastopt.GradientNoise(0.05, seed=11), **kw)
    second.load_state_dict(loaded)
    assert second.step_count == 5
    for g in grads[5:]:
        second.step(g)
    for a, b in zip(ref, resumed, strict=True):
        assert np.array_equal(a, b)


def test_skip_nonfinite_skips_everything_and_counts():
    p = np.ones(100, np.float32)
    opt = fastopt.Adam(p, skip_nonfinite=True, grad_noise=fastopt.GradientNoise(0.1))
    opt.step(np.full(100, 0.5, np.float32))
    before_p, before_s = p.copy(), opt.state_dict()
    for bad in (np.nan, np.inf, -np.inf):
        g = np.full(100, 0.5, np.float32)
        g[17] = bad
        opt.step(g)
        assert np.array_equal(p, before_p)
        after = opt.state_dict()
        for k, v in before_s.items():
            if k != "skipped_steps":
                assert np.array_equal(after[k], v), k
    assert opt.skipped_steps == 3
    assert opt.step_count == 1
    # the next good step is step 2 with the noise of t' = 1, as if nothing had happened
    twin_p = np.ones(100, np.float32)
    twin = fastopt.Adam(twin_p, skip_nonfinite=True, grad_noise=fastopt.GradientNoise(0.1))
    for _ in range(2):
        twin.step(np.full(100, 0.5, np.float32))
    opt.step(np.full(100, 0.5, np.float32))
    assert np.array_equal(p, twin_p)


def test_skip_nonfinite_sees_every_array_and_huge_finite_values_are_not_skipped():
    p = [np.ones(10), np.ones(50_000)]
    opt = fastopt.SGD(p, lr=0.1, skip_nonfinite=True)
    g = [np.zeros(10), np.zeros(50_000)]
    g[1][49_999] = np.nan
    opt.step(g)
    assert opt.skipped_steps == 1
    # |g| ~ 1e200: g² overflows float64 but the gradient is finite -> not skipped
    opt.step([np.full(10, 1e200), np.zeros(50_000)])
    assert opt.skipped_steps == 1 and opt.step_count == 1

"""Every rule and transform against an independent float64 NumPy reference (tests/reference.py).

The reference is written from the spec (docs/spec.md) and docs/equations.md in textbook form; the
expected values never come from fastopt's kernels, rules or functional layer. float64
parameters are compared at ~1e-10; float32 parameters (computed in float32 by the package)
against the float64 reference run on the same float32 inputs, at ~1e-5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from layout import layout_offsets
from reference import (
    STEPS,
    RefOptimizer,
    init_state,
    nadam_mu_product,
    noise_draws,
    noise_std,
    resolve_hp,
)

import fastopt
import fastopt.functional as F
from fastopt import parallel
from fastopt.rules.registry import registry

DTYPES = [np.float64, np.float32]

#: Every registered rule's class, by its functional name (the reference's keys).
CLASSES = {rule.function: getattr(fastopt, name) for name, rule in registry().items()}

#: (rule, options): the spec defaults of each class, then every named option.
RULE_CASES = {
    # every rule with its defaults and each variant's options, from the registry
    **{name + "".join(f"-{k}={v}" for k, v in options.items()): (rule.function, dict(options))
       for name, rule in registry().items() for options in rule.variants},
    "AdaGrad-eps_outside": ("adagrad", {"eps_inside_sqrt": False, "eps": 1e-10}),
    "AdaGrad-eps_outside-spec_eps": ("adagrad", {"eps_inside_sqrt": False}),
    "AdaGrad-initial_acc": ("adagrad", {"initial_accumulator_value": 0.1}),
    "RMSprop-eps_outside": ("rmsprop", {"eps_inside_sqrt": False}),
    "RMSprop-centered": ("rmsprop", {"centered": True}),
    "RMSprop-momentum": ("rmsprop", {"momentum": 0.9}),
    "RMSprop-centered-momentum": ("rmsprop", {"centered": True, "momentum": 0.5}),
    "RMSprop-torch": ("rmsprop", {"alpha": 0.99, "eps": 1e-8, "eps_inside_sqrt": False,
                                  "centered": True, "momentum": 0.9}),
    "Adam-betas": ("adam", {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-6}),
    "Adam-no-bias-correction": ("adam", {"bias_correction": False}),
    # a large ε, so that where it is added (to √v, or to √v̂) changes the result
    "Adam-eps-hat": ("adam", {"eps_hat": True, "eps": 1e-3}),
    "Adam-eps-hat-no-bias-correction": ("adam", {"eps_hat": True, "bias_correction": False}),
    "Nadam-momentum_decay": ("nadam", {"momentum_decay": 4e-3}),
    "AMSGrad-bias_correction": ("amsgrad", {"bias_correction": True}),
}

#: The rules (with their defaults) the transform tests run over.
RULES = list(CLASSES)


# ------------------------------------------------------------------------------ helpers


def make_problem(shapes, dtype, steps, seed, *, low=-5.0, high=1.0):
    """Parameters ~ N(0, 1) and gradients N(0, 1)·s with a per-element scale s log-uniform
    in [10^low, 10^high] (fixed over the steps), so that every ε matters somewhere."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    scales = [10.0 ** rng.uniform(low, high, s) for s in shapes]
    grads = [
        [(rng.standard_normal(s) * sc).astype(dtype) for s, sc in zip(shapes, scales, strict=True)]
        for _ in range(steps)
    ]
    return params, grads


def tolerances(dtype, expected, *, noisy=False):
    """(rtol, atol) for comparing a package result of ``dtype`` with the float64 reference.

    float64: a few thousand ulp of the largest value, far below any equation's effect.
    float32: the package rounds every operation to float32 (~6e-8 relative).
    ``noisy``: the noise draws come from the float32 Box–Muller of the compiled generator
    versus the pure-Python one evaluated in float64 (agree to ~1e-7 relative).
    """
    scale = float(np.max(np.abs(expected))) if np.size(expected) else 1.0
    scale = max(scale, 1e-30)
    if dtype == np.float64 and not noisy:
        return 1e-10, 1e-12 * scale
    if dtype == np.float64:
        return 2e-6, 2e-6 * scale
    return 1e-5, 1e-6 * scale


def assert_close(actual, expected, dtype, what="", *, noisy=False):
    actual = np.asarray(actual)
    assert actual.dtype == np.dtype(dtype), f"{what}: dtype {actual.dtype}, expected {dtype}"
    expected = np.asarray(expected, np.float64)
    rtol, atol = tolerances(dtype, expected, noisy=noisy)
    np.testing.assert_allclose(actual.astype(np.float64), expected, rtol=rtol, atol=atol,
                               err_msg=what)


def assert_state(opt, ref, dtype, *, noisy=False, offsets=None):
    """Compare the package's state (via state_dict) with the reference's, per array."""
    sd = opt.state_dict()
    assert sd["step"] == ref.t
    offsets = offsets if offsets is not None else layout_offsets(ref.params, dtype)
    for j, state in enumerate(ref.state):
        for name, expected in state.items():
            buf = sd[f"state.{name}"]
            lo = offsets[j]
            got = buf[lo : lo + expected.size].reshape(expected.shape)
            assert_close(got, expected, dtype, f"state {name} of params[{j}]", noisy=noisy)


def run_both(rule, options, dtype, shapes, steps, seed=0, *, class_kwargs=None, **ref_kwargs):
    """Step fastopt's class and the reference on the same inputs; return both."""
    params, grads = make_problem(shapes, dtype, steps, seed)
    ours = [p.copy() for p in params]
    opt = CLASSES[rule](ours if len(ours) > 1 else ours[0], **options, **(class_kwargs or {}))
    ref = RefOptimizer(rule, params, **options, **ref_kwargs)
    for gs in grads:
        opt.step(gs if len(gs) > 1 else gs[0])
        ref.step(gs)
    return ours, opt, ref


# ------------------------------------------------------------------ every rule and option


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("case", list(RULE_CASES))
def test_class_matches_reference(case, dtype):
    rule, options = RULE_CASES[case]
    ours, opt, ref = run_both(rule, options, dtype, [(203,)], steps=15, seed=1)
    assert_close(ours[0], ref.params[0], dtype, f"{case} params")
    assert_state(opt, ref, dtype)
    if rule == "nadam":
        hp = resolve_hp(rule, **options)
        psi = hp["momentum_decay"]
        expected = 1.0 if psi is None else nadam_mu_product(15, hp["betas"][0], psi)
        assert math.isclose(opt.state_dict()["group.0.mu_product"], expected, rel_tol=1e-12)


@pytest.mark.parametrize("case", ["Adam", "AMSGrad", "RMSprop-centered-momentum"])
def test_class_matches_reference_multi_array(case):
    """Several arrays (1-D, 2-D, 3-D) in one optimizer, float64."""
    rule, options = RULE_CASES[case]
    shapes = [(31,), (6, 5), (2, 3, 4)]
    ours, opt, ref = run_both(rule, options, np.float64, shapes, steps=8, seed=2)
    for j in range(len(shapes)):
        assert_close(ours[j], ref.params[j], np.float64, f"params[{j}]")
    assert_state(opt, ref, np.float64)


# ------------------------------------------------------------------ the common transforms


def _schedule(t):
    """A decaying learning rate t' -> η (t' = completed steps)."""
    return 5e-3 / (1 + t) + 5e-3

TRANSFORMS = {
    "maximize": {"maximize": True},
    "clip_active": {"clip_norm": 0.5},
    "clip_inactive": {"clip_norm": 1e6},
    "weight_decay": {"weight_decay": 0.3},
    "decoupled": {"weight_decay": 0.3, "decoupled_weight_decay": True},
    "schedule": {"lr": _schedule},
    "all": {"maximize": True, "clip_norm": 2.0, "weight_decay": 0.05, "lr": _schedule},
    "all_decoupled": {"maximize": True, "clip_norm": 2.0, "weight_decay": 0.05,
                      "decoupled_weight_decay": True, "lr": _schedule},
}


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("rule", RULES)
def test_transforms_match_reference(rule, transform, dtype):
    options = dict(TRANSFORMS[transform])
    clip = options.pop("clip_norm", None)
    shapes = [(40,), (7, 3), (5,)]
    ours, opt, ref = run_both(rule, options, dtype, shapes, steps=10, seed=3,
                              class_kwargs={"clip_norm": clip}, clip_norm=clip)
    for j in range(len(shapes)):
        assert_close(ours[j], ref.params[j], dtype, f"{rule}/{transform} params[{j}]")
    assert_state(opt, ref, dtype)
    if transform == "clip_active":
        # The clip bites on every step, and only the GLOBAL norm gives these factors.
        assert all(s < 0.5 for s in ref.clipped)
    if transform == "clip_inactive":
        assert all(s == 1.0 for s in ref.clipped)


@pytest.mark.parametrize("rule", ["momentum", "adam"])
def test_schedule_is_called_with_completed_steps(rule):
    calls = []

    def lr(t):
        calls.append(t)
        return 1e-2 / math.sqrt(1 + t)

    params, grads = make_problem([(9,)], np.float64, 6, seed=4)
    p = params[0].copy()
    opt = CLASSES[rule](p, lr=lr)
    ref = RefOptimizer(rule, params, lr=lambda t: 1e-2 / math.sqrt(1 + t))
    for gs in grads:
        opt.step(gs[0])
        ref.step(gs)
    assert calls == [0, 1, 2, 3, 4, 5]
    assert_close(p, ref.params[0], np.float64)


def test_momentum_schedule_is_the_spec_form_not_torch():
    """Under a schedule, spec Momentum (v ← γv + η_t g) differs from torch's (b ← γb + g,
    w ← w − η_t b); fastopt follows the spec."""
    params, grads = make_problem([(16,)], np.float64, 5, seed=5, low=0.0, high=0.0)
    lr = lambda t: 0.1 / (1 + t)  # noqa: E731
    p = params[0].copy()
    opt = fastopt.Momentum(p, lr=lr, momentum=0.9)
    for gs in grads:
        opt.step(gs[0])
    ref = RefOptimizer("momentum", params, lr=lr, momentum=0.9)
    for gs in grads:
        ref.step(gs)
    assert_close(p, ref.params[0], np.float64)
    w, b = params[0].astype(np.float64), np.zeros(16)
    for t, gs in enumerate(grads):
        b = 0.9 * b + gs[0]
        w = w - lr(t) * b
    assert np.max(np.abs(p - w)) > 1e-3


# ------------------------------------------------------------------ gradient noise


#: Every rule in float64; the noise code is shared by all rules, so float32 (whose σ is
#: rounded to float32) runs for a few only, to keep the number of compiled kernels down.
NOISE_CASES = [(rule, np.float64) for rule in RULES] + [
    (rule, np.float32) for rule in ("sgd", "nesterov", "adam")
]


@pytest.mark.parametrize(("rule", "dtype"), NOISE_CASES,
                         ids=[f"{r}-{np.dtype(d).name}" for r, d in NOISE_CASES])
def test_gradient_noise_single_array(rule, dtype):
    noise = fastopt.GradientNoise(0.3, gamma=0.55, seed=2**40 + 12345)
    params, grads = make_problem([(50,)], dtype, 5, seed=6)
    p = params[0].copy()
    opt = CLASSES[rule](p, grad_noise=noise)
    ref = RefOptimizer(rule, params, grad_noise=noise, noise_offsets=[0])
    for gs in grads:
        opt.step(gs[0])
        ref.step(gs)
    assert_close(p, ref.params[0], dtype, f"{rule} with noise", noisy=True)
    assert_state(opt, ref, dtype, noisy=True)


def test_gradient_noise_values_and_schedule():
    """SGD with lr=1 and zero gradients moves p by exactly −σ_t z: the noise itself."""
    noise = fastopt.GradientNoise(0.7, gamma=1.3, seed=99)
    n = 300
    p = np.zeros(n)
    opt = fastopt.SGD(p, lr=1.0, grad_noise=noise)
    before = p.copy()
    for t_prime in range(4):
        opt.step(np.zeros(n))
        sigma = math.sqrt(0.7 / (1 + t_prime) ** 1.3)
        z = noise_draws(n, 0, t_prime, noise.key)
        np.testing.assert_allclose(before - p, sigma * z, rtol=1e-6, atol=1e-6 * sigma)
        assert abs(np.std(z) - 1) < 0.15  # it is noise of unit variance, scaled by σ_t
        before = p.copy()


def test_gradient_noise_with_transforms_order():
    """maximize, clip, noise, weight decay in that order (noise is added after clipping, so
    it is not scaled; L2 decay after the noise)."""
    noise = fastopt.GradientNoise(0.05, seed=7)
    params, grads = make_problem([(30,), (4, 5)], np.float64, 5, seed=8)
    ours = [p.copy() for p in params]
    opt = fastopt.Adam(ours, maximize=True, weight_decay=0.1, clip_norm=0.5, grad_noise=noise)
    ref = RefOptimizer("adam", params, maximize=True, weight_decay=0.1, clip_norm=0.5,
                       grad_noise=noise, noise_offsets=layout_offsets(params, np.float64))
    for gs in grads:
        opt.step(gs)
        ref.step(gs)
    for j in range(2):
        assert_close(ours[j], ref.params[j], np.float64, f"params[{j}]", noisy=True)
    assert all(s < 1 for s in ref.clipped)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_gradient_noise_flatparams_positions(dtype):
    """In a FlatParams the noise counter of an element is its index in flat.data."""
    noise = fastopt.GradientNoise(0.2, seed=3)
    flat = fastopt.FlatParams({"w": (6, 5), "b": (5,), "c": (3,)}, dtype=dtype)
    params, grads = make_problem([(6, 5), (5,), (3,)], dtype, 4, seed=9)
    for name, p in zip(flat.names, params, strict=True):
        flat[name] = p
    opt = fastopt.Adam(flat, grad_noise=noise)
    ref = RefOptimizer("adam", params, grad_noise=noise,
                       noise_offsets=[flat.offset(n) for n in flat.names])
    for gs in grads:
        for name, g in zip(flat.names, gs, strict=True):
            flat.grads[name][...] = g
        opt.step()
        ref.step(gs)
    for j, name in enumerate(flat.names):
        assert_close(flat[name], ref.params[j], dtype, name, noisy=True)


# ------------------------------------------------------------------ the parallel path

BIG = (1 << 20) + 77  # > 1e6 elements: several blocks of the norm reduction per thread


@pytest.fixture
def parallel_kernels():
    """The parallel kernels, whatever fastopt.parallel's measured choice would be."""
    with parallel.forced("parallel"):
        yield

BIG_CASES = {
    "Adam-f32-clip-wd": ("adam", {"weight_decay": 0.01}, 1.0, np.float32),
    "RMSprop-centered-momentum-f64": ("rmsprop", {"centered": True, "momentum": 0.5},
                                      None, np.float64),
    "Nadam-torch-f32-decoupled": ("nadam", {"momentum_decay": 4e-3, "weight_decay": 0.1,
                                            "decoupled_weight_decay": True}, None, np.float32),
}


@pytest.mark.parametrize("case", list(BIG_CASES))
def test_big_array_parallel_path(case, parallel_kernels):
    rule, options, clip, dtype = BIG_CASES[case]
    ours, opt, ref = run_both(rule, options, dtype, [(BIG,)], steps=4, seed=10,
                              class_kwargs={"clip_norm": clip}, clip_norm=clip)
    assert_close(ours[0], ref.params[0], dtype, case)
    assert_state(opt, ref, dtype)
    if clip is not None:
        assert all(s < 1 for s in ref.clipped)


def test_big_array_noise_sampled(parallel_kernels):
    """Parallel kernel with noise: check sampled elements (the pure-Python RNG is slow)."""
    dtype = np.float32
    noise = fastopt.GradientNoise(0.5, seed=2024)
    rng = np.random.default_rng(11)
    p0 = rng.standard_normal(BIG).astype(dtype)
    g = rng.standard_normal(BIG).astype(dtype)
    p = p0.copy()
    opt = fastopt.SGD(p, lr=0.1, grad_noise=noise)
    idx = np.concatenate([np.arange(5), rng.integers(0, BIG, 60), BIG - 1 - np.arange(5)])
    for t_prime in range(2):
        before = p.copy()
        opt.step(g)
        sigma = noise_std(0.5, 0.55, t_prime)
        z = np.array([noise_draws(1, int(i), t_prime, noise.key)[0] for i in idx])
        expected = before[idx].astype(np.float64) - 0.1 * (g[idx].astype(np.float64) + sigma * z)
        assert_close(p[idx], expected, dtype, f"step {t_prime}", noisy=True)


# ------------------------------------------------------------------ the functional layer


def _ref_run_functional(rule, p0, grads, hp, *, offset=0, noise=None, grad_scale=1.0):
    """The reference for a functional call sequence on one array."""
    hp = resolve_hp(rule, **hp)
    w = p0.astype(np.float64)
    state = init_state(rule, hp, w.shape)
    for t, g in enumerate(grads, start=1):
        g = np.asarray(g, np.float64) * (-1.0 if hp["maximize"] else 1.0) * grad_scale
        if noise is not None:
            z = noise_draws(g.size, offset, t - 1, noise.key).reshape(g.shape)
            g = g + noise_std(noise.eta, noise.gamma, t - 1) * z
        if hp["decoupled_weight_decay"]:
            w *= 1 - hp["lr"] * hp["weight_decay"]
        else:
            g = g + hp["weight_decay"] * w
        STEPS[rule](w, g, state, t, hp["lr"], hp)
    return w, state


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_functional_adam_multidim(dtype):
    shape = (6, 7, 5)
    (p0,), grads = make_problem([shape], dtype, 12, seed=12)
    p, m, v = p0.copy(), np.zeros(shape, dtype), np.zeros(shape, dtype)
    for t, (g,) in enumerate(grads, start=1):
        assert F.adam(p, g, m, v, t, 2e-3, (0.85, 0.995), 1e-7) is None
    w, s = _ref_run_functional("adam", p0, [gs[0] for gs in grads],
                               {"lr": 2e-3, "betas": (0.85, 0.995), "eps": 1e-7})
    assert p.shape == shape
    assert_close(p, w, dtype, "p")
    assert_close(m, s["m"], dtype, "m")
    assert_close(v, s["v"], dtype, "v")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_functional_adamw_keywords(dtype):
    shape = (8, 9)
    (p0,), grads = make_problem([shape], dtype, 7, seed=13)
    p, m, v = p0.copy(), np.zeros(shape, dtype), np.zeros(shape, dtype)
    for t, (g,) in enumerate(grads, start=1):
        F.adam(p, g, m, v, t, 1e-2, weight_decay=0.2, decoupled_weight_decay=True,
               maximize=True, grad_scale=0.25)
    w, _ = _ref_run_functional("adam", p0, [gs[0] for gs in grads],
                               {"lr": 1e-2, "weight_decay": 0.2,
                                "decoupled_weight_decay": True, "maximize": True},
                               grad_scale=0.25)
    assert_close(p, w, dtype, "p")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_functional_rmsprop_centered_momentum_multidim(dtype):
    shape = (4, 3, 10)
    (p0,), grads = make_problem([shape], dtype, 10, seed=14)
    p = p0.copy()
    sq, avg, buf = (np.zeros(shape, dtype) for _ in range(3))
    for t, (g,) in enumerate(grads, start=1):
        F.rmsprop(p, g, sq, t, 5e-3, 0.95, 1e-7, eps_inside_sqrt=False, centered=True,
                  momentum=0.7, grad_avg=avg, momentum_buffer=buf, weight_decay=0.1)
    w, s = _ref_run_functional(
        "rmsprop", p0, [gs[0] for gs in grads],
        {"lr": 5e-3, "alpha": 0.95, "eps": 1e-7, "eps_inside_sqrt": False, "centered": True,
         "momentum": 0.7, "weight_decay": 0.1})
    assert_close(p, w, dtype, "p")
    assert_close(sq, s["square_avg"], dtype, "square_avg")
    assert_close(avg, s["grad_avg"], dtype, "grad_avg")
    assert_close(buf, s["momentum_buffer"], dtype, "momentum_buffer")


@pytest.mark.parametrize("momentum_decay", [None, 4e-3])
def test_functional_nadam_threads_mu_product(momentum_decay):
    shape = (5, 11)
    (p0,), grads = make_problem([shape], np.float64, 9, seed=15)
    p, m, v = p0.copy(), np.zeros(shape), np.zeros(shape)
    mu_product = 1.0
    for t, (g,) in enumerate(grads, start=1):
        mu_product = F.nadam(p, g, m, v, t, momentum_decay=momentum_decay,
                             mu_product=mu_product)
        expected = 1.0 if momentum_decay is None else nadam_mu_product(t, 0.9, momentum_decay)
        assert math.isclose(mu_product, expected, rel_tol=1e-12)
    w, _ = _ref_run_functional("nadam", p0, [gs[0] for gs in grads],
                               {"momentum_decay": momentum_decay})
    assert_close(p, w, np.float64, "p")


@pytest.mark.parametrize(("bias_correction", "eps_hat"), [(False, False), (True, True)])
def test_functional_adam_other_forms(bias_correction, eps_hat):
    """Adam without bias correction, and Keras' ε-hat form, against the reference; each
    differs from the default form by far more than the tolerance."""
    shape = (6, 13)
    (p0,), grads = make_problem([shape], np.float64, 10, seed=19)
    hp = {"bias_correction": bias_correction, "eps_hat": eps_hat, "eps": 1e-3}
    p, m, v = p0.copy(), np.zeros(shape), np.zeros(shape)
    for t, (g,) in enumerate(grads, start=1):
        F.adam(p, g, m, v, t, eps=1e-3, bias_correction=bias_correction, eps_hat=eps_hat)
    w, _ = _ref_run_functional("adam", p0, [gs[0] for gs in grads], hp)
    assert_close(p, w, np.float64, "p")
    default, _ = _ref_run_functional("adam", p0, [gs[0] for gs in grads], {"eps": 1e-3})
    assert np.max(np.abs(w - default)) > 1e-4


@pytest.mark.parametrize("bias_correction", [False, True])
def test_functional_amsgrad(bias_correction):
    shape = (3, 17)
    (p0,), grads = make_problem([shape], np.float64, 12, seed=16)
    p, m, v, vmax = p0.copy(), np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for t, (g,) in enumerate(grads, start=1):
        F.amsgrad(p, g, m, v, vmax, t, bias_correction=bias_correction)
    w, s = _ref_run_functional("amsgrad", p0, [gs[0] for gs in grads],
                               {"bias_correction": bias_correction})
    assert_close(p, w, np.float64, "p")
    assert_close(vmax, s["v_max"], np.float64, "v_max")
    assert np.any(s["v_max"] > s["v"])  # the max is doing something in this problem


def test_functional_adagrad_and_momentum_with_noise_offset():
    noise = fastopt.GradientNoise(0.1, seed=5)
    shape = (4, 6)
    (p0,), grads = make_problem([shape], np.float64, 5, seed=17)
    pa, acc = p0.copy(), np.full(shape, 0.5)
    pm, vel = p0.copy(), np.zeros(shape)
    for t, (g,) in enumerate(grads, start=1):
        F.adagrad(pa, g, acc, t, 0.05, 1e-10, eps_inside_sqrt=False, noise=noise,
                  noise_offset=1000)
        F.momentum(pm, g, vel, t, 0.02, 0.8, noise=noise, noise_offset=7)
    gl = [gs[0] for gs in grads]
    hp = {"lr": 0.05, "eps": 1e-10, "eps_inside_sqrt": False, "initial_accumulator_value": 0.5}
    w, s = _ref_run_functional("adagrad", p0, gl, hp, noise=noise, offset=1000)
    assert_close(pa, w, np.float64, "adagrad p", noisy=True)
    assert_close(acc, s["sum_sq"], np.float64, "adagrad G", noisy=True)
    w, s = _ref_run_functional("momentum", p0, gl, {"lr": 0.02, "momentum": 0.8},
                               noise=noise, offset=7)
    assert_close(pm, w, np.float64, "momentum p", noisy=True)
    assert_close(vel, s["velocity"], np.float64, "momentum v", noisy=True)


def test_functional_sgd_nesterov_float32():
    shape = (10, 10)
    (p0,), grads = make_problem([shape], np.float32, 8, seed=18)
    ps, pn, vel = p0.copy(), p0.copy(), np.zeros(shape, np.float32)
    for t, (g,) in enumerate(grads, start=1):
        F.sgd(ps, g, t, 0.03, weight_decay=0.5)
        F.nesterov(pn, g, vel, t, 0.03, 0.95)
    gl = [gs[0] for gs in grads]
    w, _ = _ref_run_functional("sgd", p0, gl, {"lr": 0.03, "weight_decay": 0.5})
    assert_close(ps, w, np.float32, "sgd p")
    w, s = _ref_run_functional("nesterov", p0, gl, {"lr": 0.03, "momentum": 0.95})
    assert_close(pn, w, np.float32, "nesterov p")
    assert_close(vel, s["velocity"], np.float32, "nesterov v")


# ------------------------------------------------------------------ Nesterov, literally


def test_nesterov_reproduces_the_spec_lookahead_sequence_on_a_quadratic():
    """L(w) = ½ wᵀAw − bᵀw. The spec's literal sequence v_t = γ v_{t−1} + η ∇L(w_t − γ v_{t−1}),
    w_{t+1} = w_t − v_t, against fastopt.Nesterov, which holds φ = w − γ v and is handed
    the gradient at φ."""
    rng = np.random.default_rng(19)
    n = 6
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    A = q @ np.diag(np.linspace(1.0, 10.0, n)) @ q.T
    b = rng.standard_normal(n)
    grad = lambda x: A @ x - b  # noqa: E731
    gamma, eta, T = 0.9, 0.05, 400

    w0 = rng.standard_normal(n)
    w, v = w0.copy(), np.zeros(n)
    p = w0.copy()  # v_0 = 0, so φ_0 = w_0
    opt = fastopt.Nesterov(p, lr=eta, momentum=gamma)
    for t in range(1, T + 1):
        v = gamma * v + eta * grad(w - gamma * v)
        w = w - v
        opt.step(grad(p))
        if t in (1, 2, 3, 10, 50):
            np.testing.assert_allclose(p, w - gamma * v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(p, w - gamma * v, rtol=1e-10, atol=1e-12)
    w_star = np.linalg.solve(A, b)
    np.testing.assert_allclose(w, w_star, atol=1e-8)
    np.testing.assert_allclose(p, w_star, atol=1e-8)


# ------------------------------------------------------------------ parameter groups


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("rule", ["adam", "nadam", "momentum", "rmsprop"])
def test_param_groups_list_of_arrays(rule, dtype):
    shapes = [(50, 20), (20,), (20, 3), (3,)]
    params, grads = make_problem(shapes, dtype, 8, seed=20)
    ours = [p.copy() for p in params]
    groups = [
        {"params": [ours[0], ours[2]], "lr": 3e-3},
        {"params": [ours[1], ours[3]], "weight_decay": 0.0, "lr": lambda t: 1e-2 / (1 + t)},
    ]
    extra = {"momentum_decay": 4e-3} if rule == "nadam" else {}
    opt = CLASSES[rule](groups, weight_decay=0.2, clip_norm=5.0, **extra)
    ref = RefOptimizer(
        rule, params,
        [{"params": [0, 2], "lr": 3e-3},
         {"params": [1, 3], "weight_decay": 0.0, "lr": lambda t: 1e-2 / (1 + t)}],
        weight_decay=0.2, clip_norm=5.0, **extra,
    )
    for gs in grads:
        opt.step([gs[0], gs[2], gs[1], gs[3]])  # the order of the params, group by group
        ref.step(gs)
    assert any(s < 1 for s in ref.clipped)
    for j in range(len(shapes)):
        assert_close(ours[j], ref.params[j], dtype, f"params[{j}]")
    order = [0, 2, 1, 3]
    offsets = layout_offsets([params[j] for j in order], dtype)
    assert_state(opt, ref, dtype, offsets=[offsets[order.index(j)] for j in range(4)])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("decoupled", [False, True], ids=["l2", "decoupled"])
def test_param_groups_flatparams(decoupled, dtype):
    flat = fastopt.FlatParams({"w": (50, 20), "b": (20,)}, dtype=dtype)
    params, grads = make_problem([(50, 20), (20,)], dtype, 10, seed=21)
    flat["w"] = params[0]
    flat["b"] = params[1]
    opt = fastopt.Adam(
        [{"params": flat.subset("w")}, {"params": flat.subset("b"), "weight_decay": 0.0}],
        lr=5e-3, weight_decay=0.1, decoupled_weight_decay=decoupled,
    )
    ref = RefOptimizer("adam", params, [{"params": [0]}, {"params": [1], "weight_decay": 0.0}],
                       lr=5e-3, weight_decay=0.1, decoupled_weight_decay=decoupled)
    for gs in grads:
        flat.grads["w"][...] = gs[0]
        flat.grads["b"][...] = gs[1]
        opt.step()  # uses flat.grad
        ref.step(gs)
    assert_close(flat["w"], ref.params[0], dtype, "w")
    assert_close(flat["b"], ref.params[1], dtype, "b")
    assert_state(opt, ref, dtype, offsets=[flat.offset("w"), flat.offset("b")])
    # The groups differ: b alone with λ = 0.1 would have ended elsewhere.
    other = RefOptimizer("adam", [params[1]], lr=5e-3, weight_decay=0.1,
                         decoupled_weight_decay=decoupled)
    for gs in grads:
        other.step([gs[1]])
    assert np.max(np.abs(other.params[0] - ref.params[1])) > 1e-4

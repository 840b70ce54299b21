"""Parity with optax: Lion (Chen et al. 2023), LAMB (You et al. 2019) and LARS (You et al.
2017), which torch.optim has none of, and, as a second yardstick next to torch, Adam.

fastopt and optax step identical initial values with identical (seeded) gradient sequences,
in float32 and in float64; parameters and state must agree within float tolerance. optax
(and jax) are optional: the module is skipped without them, never a runtime dependency.

float64 needs jax's x64 mode, a process-wide switch: it is turned on only around the optax
calls of a float64 run and restored afterwards (``jax_x64``), so no other test sees it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from layout import LIST_SHAPES, SINGLE_SHAPE, STEPS, TOL, fastopt_state

import fastopt

optax = pytest.importorskip("optax")
jax = pytest.importorskip("jax")
jnp = jax.numpy

DTYPES = [np.float32, np.float64]

#: Lion's update is η·sign(c), c = β₁m + (1 − β₁)g: where c is within rounding of 0, a
#: float32 rounding difference between fastopt and optax flips the sign and moves the
#: parameter by 2η — not a bug, but a failed comparison. The Lion data is drawn so that no
#: |c| is below TIE_MARGIN times its element's gradient scale (c, m followed in float64 from
#: the very gradients both sides see): four orders above the float32 roundings (~1e-7 of
#: that scale, a few ulp over 20 steps), so every sign is the same on both sides and the
#: comparison needs no tolerance for flipped elements.
TIE_MARGIN = 1e-3


@contextlib.contextmanager
def jax_x64(dtype) -> Iterator[None]:
    """Within: jax computes in float64 if ``dtype`` is float64 (the old setting restored)."""
    old = bool(jax.config.read("jax_enable_x64"))
    want = old or np.dtype(dtype) == np.float64
    jax.config.update("jax_enable_x64", want)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


# ----------------------------------------------------------------------------- harness


def make_problem(shapes, dtype, *, steps=STEPS, seed=0, low=-9.0, lion_betas=None):
    """Initial values, a gradient sequence (one array per shape, all in ``dtype``) and the
    gradients' scales.

    Each element's gradients have their own scale s, 10^low to 1 (fixed over the steps), so
    that where √v is near ε matters (Adam). ``lion_betas``: redraw the gradient elements
    that would put Lion's c = β₁m + (1 − β₁)g within ``TIE_MARGIN``·s of 0 (see above)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    scales = [10.0 ** rng.uniform(low, 0, s) for s in shapes]
    moments = [np.zeros(s) for s in shapes]
    grads = []
    for _ in range(steps):
        step = []
        for j, (shape, sc) in enumerate(zip(shapes, scales, strict=True)):
            g = (sc * rng.standard_normal(shape)).astype(dtype)
            if lion_betas is not None:
                b1, b2 = lion_betas
                m = moments[j]
                while True:
                    near = np.abs(b1 * m + (1 - b1) * g.astype(np.float64)) < TIE_MARGIN * sc
                    if not near.any():
                        break
                    g[near] = (sc[near] * rng.standard_normal(int(near.sum()))).astype(dtype)
                m[...] = b2 * m + (1 - b2) * g.astype(np.float64)
            step.append(g)
        grads.append(step)
    return params, grads, scales


def run_pair(make_fo: Callable, make_tx: Callable, *, dtype, single=False, **problem):
    """Step fastopt and optax side by side on the same data.

    Returns (fastopt optimizer, its parameter arrays, optax's parameters, optax's state)."""
    shapes = [SINGLE_SHAPE] if single else LIST_SHAPES
    params0, grads, _ = make_problem(shapes, dtype, **problem)
    fo_params = [p.copy() for p in params0]
    fo = make_fo(fo_params[0] if single else fo_params)
    with jax_x64(dtype):
        tx = make_tx()
        ox_params = [jnp.asarray(p) for p in params0]
        assert all(p.dtype == dtype for p in ox_params)
        state = tx.init(ox_params)
        for gs in grads:
            fo.step(gs[0].copy() if single else [g.copy() for g in gs])
            updates, state = tx.update([jnp.asarray(g) for g in gs], state, ox_params)
            ox_params = optax.apply_updates(ox_params, updates)
        ox_params = [np.asarray(p) for p in ox_params]
        state = jax.tree.map(np.asarray, state)
    for p0, p in zip(params0, fo_params, strict=True):  # guard against a vacuous pass
        assert np.abs(p - p0).max() > 0.05
    return fo, fo_params, ox_params, state


def assert_params_close(fo_params, ox_params, dtype):
    for j, (p, q) in enumerate(zip(fo_params, ox_params, strict=True)):
        assert p.dtype == dtype and q.dtype == dtype
        np.testing.assert_allclose(p, q, **TOL[dtype], err_msg=f"parameter {j} differs")


def assert_state_close(fo, fo_params, ox_state, state_map, dtype):
    """``state_map``: ``(fastopt name, optax name)``; the absolute tolerance scales with the
    array's largest element (state spans many magnitudes: v ~ g² down to 1e-18)."""
    for fo_name, ox_name in state_map:
        theirs = optax.tree_utils.tree_get(ox_state, ox_name)
        for j, ours in enumerate(fastopt_state(fo, fo_params, fo_name)):
            scale = float(np.abs(theirs[j]).max()) or 1.0
            np.testing.assert_allclose(
                ours, theirs[j], rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale,
                err_msg=f"state {fo_name!r} of parameter {j} differs from optax {ox_name!r}",
            )


def assert_step_counts(fo, ox_state):
    assert fo.step_count == STEPS
    assert int(optax.tree_utils.tree_get(ox_state, "count")) == STEPS


# --------------------------------------------------------------------------------- Lion

LION_CASES = [
    # optax.lion's weight_decay defaults to 1e-3: no decay must be asked for explicitly
    ("lion", {"lr": 1e-2}, lambda: optax.lion(1e-2, weight_decay=0.0)),
    ("lion-betas", {"lr": 1e-2, "betas": (0.95, 0.98)},
     lambda: optax.lion(1e-2, b1=0.95, b2=0.98, weight_decay=0.0)),
    # fastopt's Lion decays decoupled by default, w ← w(1 − ηλ) before the rule; optax adds
    # λw to the signed update, w ← w − η(sign(c) + λw): the same value up to rounding
    ("lion-weight-decay", {"lr": 1e-2, "weight_decay": 0.5},
     lambda: optax.lion(1e-2, weight_decay=0.5)),
    ("lion-weight-decay-betas", {"lr": 1e-2, "betas": (0.8, 0.999), "weight_decay": 0.1},
     lambda: optax.lion(1e-2, b1=0.8, b2=0.999, weight_decay=0.1)),
]


@pytest.mark.parametrize("layout", ["list", "single"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kwargs, make_tx", [c[1:] for c in LION_CASES],
                         ids=[c[0] for c in LION_CASES])
def test_lion_matches_optax(kwargs, make_tx, dtype, layout):
    betas = kwargs.get("betas", (0.9, 0.99))
    fo, fo_params, ox_params, state = run_pair(
        lambda p: fastopt.Lion(p, **kwargs), make_tx, dtype=dtype, single=layout == "single",
        low=-3.0, lion_betas=betas)
    assert_params_close(fo_params, ox_params, dtype)
    assert_state_close(fo, fo_params, state, [("m", "mu")], dtype)
    assert_step_counts(fo, state)


def test_lion_l2_weight_decay_is_not_optax():
    """Negative control: Lion with L2 decay (g + λw enters c) visibly differs from optax's
    decoupled decay, so the parity above really pins the decoupled default."""
    _, fo_params, ox_params, _ = run_pair(
        lambda p: fastopt.Lion(p, lr=1e-2, weight_decay=0.5, decoupled_weight_decay=False),
        lambda: optax.lion(1e-2, weight_decay=0.5), dtype=np.float32, low=-3.0,
        lion_betas=(0.9, 0.99))
    diff = max(np.abs(p - q).max() for p, q in zip(fo_params, ox_params, strict=True))
    assert diff > 1e-3


def test_lion_data_has_no_near_ties():
    """The precondition the exact comparison rests on, checked on the data itself: every
    |c| is at least ``TIE_MARGIN`` times its element's gradient scale."""
    b1, b2 = 0.9, 0.99
    _, grads, scales = make_problem(LIST_SHAPES, np.float32, low=-3.0, lion_betas=(b1, b2))
    m = [np.zeros(s.shape) for s in scales]
    for gs in grads:
        for j, g in enumerate(gs):
            c = b1 * m[j] + (1 - b1) * g.astype(np.float64)
            assert (np.abs(c) >= TIE_MARGIN * scales[j]).all()
            m[j] = b2 * m[j] + (1 - b2) * g.astype(np.float64)


# --------------------------------------------------------------------------------- Adam


ADAM_CASES = [
    ("adam", {"lr": 1e-2}, lambda: optax.adam(1e-2, eps_root=0.0)),
    ("adam-betas-eps", {"lr": 3e-2, "betas": (0.8, 0.99), "eps": 1e-6},
     lambda: optax.adam(3e-2, b1=0.8, b2=0.99, eps=1e-6, eps_root=0.0)),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kwargs, make_tx", [c[1:] for c in ADAM_CASES],
                         ids=[c[0] for c in ADAM_CASES])
def test_adam_matches_optax(kwargs, make_tx, dtype):
    """optax.adam is the textbook form m̂/(√v̂ + ε) (eps_root = 0), as fastopt.Adam's default."""
    fo, fo_params, ox_params, state = run_pair(
        lambda p: fastopt.Adam(p, **kwargs), make_tx, dtype=dtype)
    assert_params_close(fo_params, ox_params, dtype)
    assert_state_close(fo, fo_params, state, [("m", "mu"), ("v", "nu")], dtype)
    assert_step_counts(fo, state)


# ----------------------------------------------------------------------- LAMB and LARS
#
# Both scale each parameter ARRAY's update by a trust ratio of norms over that array (You et
# al. 2017, 2019: "layer-wise"), which optax.scale_by_trust_ratio computes per leaf: a list
# of arrays is a list of layers. The single-array layout is one layer.


def negated(tree):
    """``tree`` with every array negated (optax's trace is −velocity: optax.lars scales by
    −η before its momentum trace, fastopt's velocity accumulates +η r u and is subtracted)."""
    return jax.tree.map(lambda x: -np.asarray(x), tree)


def lamb_l2(lr, weight_decay, b1=0.9, b2=0.999, eps=1e-6):
    """LAMB with plain L2 decay: g + λw enters the moments and the update has no λw term
    (fastopt.LAMB(decoupled_weight_decay=False)); optax.lamb's own chain, the decay moved
    in front of scale_by_adam."""
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_adam(b1=b1, b2=b2, eps=eps, eps_root=0.0),
        optax.scale_by_trust_ratio(),
        optax.scale_by_learning_rate(lr),
    )


LAMB_CASES = [
    # optax.lamb's weight_decay default is not fastopt's 0: always passed explicitly
    ("lamb", {"lr": 1e-2}, lambda: optax.lamb(1e-2, eps_root=0.0, weight_decay=0.0)),
    ("lamb-betas-eps", {"lr": 3e-2, "betas": (0.8, 0.99), "eps": 1e-4},
     lambda: optax.lamb(3e-2, b1=0.8, b2=0.99, eps=1e-4, eps_root=0.0, weight_decay=0.0)),
    # LAMB's own decay (the default, decoupled): u = m̂/(√v̂ + ε) + λw inside the trust ratio
    ("lamb-weight-decay", {"lr": 1e-2, "weight_decay": 0.1},
     lambda: optax.lamb(1e-2, eps_root=0.0, weight_decay=0.1)),
    ("lamb-weight-decay-betas", {"lr": 2e-2, "betas": (0.85, 0.995), "weight_decay": 1.0},
     lambda: optax.lamb(2e-2, b1=0.85, b2=0.995, eps_root=0.0, weight_decay=1.0)),
    ("lamb-l2", {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": False},
     lambda: lamb_l2(1e-2, 0.1)),
]


@pytest.mark.parametrize("layout", ["list", "single"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kwargs, make_tx", [c[1:] for c in LAMB_CASES],
                         ids=[c[0] for c in LAMB_CASES])
def test_lamb_matches_optax(kwargs, make_tx, dtype, layout):
    fo, fo_params, ox_params, state = run_pair(
        lambda p: fastopt.LAMB(p, **kwargs), make_tx, dtype=dtype, single=layout == "single")
    assert_params_close(fo_params, ox_params, dtype)
    assert_state_close(fo, fo_params, state, [("m", "mu"), ("v", "nu")], dtype)
    assert_step_counts(fo, state)


LARS_CASES = [
    # optax.lars: add_decayed_weights (all leaves), scale_by_trust_ratio (all leaves),
    # scale_by_learning_rate, trace(momentum); nesterov=False is fastopt's LARS
    ("lars", {"lr": 5.0}, lambda: optax.lars(5.0, nesterov=False)),
    ("lars-trust-momentum", {"lr": 1.0, "trust_coefficient": 2e-2, "momentum": 0.5},
     lambda: optax.lars(1.0, trust_coefficient=2e-2, momentum=0.5, nesterov=False)),
    # an ε of the order of ‖u‖ (~5 here), so that it changes the ratio visibly
    ("lars-eps", {"lr": 2.0, "trust_coefficient": 1e-2, "eps": 3.0},
     lambda: optax.lars(2.0, trust_coefficient=1e-2, eps=3.0, nesterov=False)),
    # the common L2 decay, g + λw, is the u whose norm the ratio takes (optax's
    # add_decayed_weights before scale_by_trust_ratio)
    ("lars-weight-decay", {"lr": 5.0, "weight_decay": 1e-2},
     lambda: optax.lars(5.0, weight_decay=1e-2, nesterov=False)),
    ("lars-weight-decay-eps", {"lr": 0.3, "momentum": 0.8, "trust_coefficient": 0.1,
                               "eps": 1.0, "weight_decay": 0.3},
     lambda: optax.lars(0.3, weight_decay=0.3, trust_coefficient=0.1, eps=1.0, momentum=0.8,
                        nesterov=False)),
]


@pytest.mark.parametrize("layout", ["list", "single"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kwargs, make_tx", [c[1:] for c in LARS_CASES],
                         ids=[c[0] for c in LARS_CASES])
def test_lars_matches_optax(kwargs, make_tx, dtype, layout):
    fo, fo_params, ox_params, state = run_pair(
        lambda p: fastopt.LARS(p, **kwargs), make_tx, dtype=dtype, single=layout == "single")
    assert_params_close(fo_params, ox_params, dtype)
    assert_state_close(fo, fo_params, negated(state), [("velocity", "trace")], dtype)
    assert fo.step_count == STEPS  # optax.lars keeps no step count


# ------------------------------------------- LAMB and LARS: the trust ratio is per array

#: Two layers whose parameters differ in scale by 10⁴ (gradients of one scale): the
#: per-array trust ratios ‖w‖/‖u‖ differ by about as much; a single one over both arrays is
#: about the large array's.
TWO_SCALES = [((400,), 1e-2), ((30, 20), 1e2)]


def two_scale_problem(dtype):
    shapes = [shape for shape, _ in TWO_SCALES]
    params, grads, _ = make_problem(shapes, dtype, low=-3.0)
    params = [(scale * p).astype(dtype) for p, (_, scale) in zip(params, TWO_SCALES, strict=True)]
    return params, grads


def run_optax(make_tx, params0, grads, dtype):
    """optax's parameters after ``grads``, from ``params0`` (a list of arrays)."""
    with jax_x64(dtype):
        tx = make_tx()
        params = [jnp.asarray(p) for p in params0]
        state = tx.init(params)
        for gs in grads:
            updates, state = tx.update([jnp.asarray(g) for g in gs], state, params)
            params = optax.apply_updates(params, updates)
        return [np.asarray(p) for p in params]


def run_optax_global(make_tx, params0, grads, dtype):
    """optax on the arrays concatenated into one: one trust ratio over all of them."""
    sizes = np.cumsum([p.size for p in params0])[:-1]
    (flat,) = run_optax(make_tx, [np.concatenate([p.ravel() for p in params0])],
                        [[np.concatenate([g.ravel() for g in gs])] for gs in grads], dtype)
    return [part.reshape(p.shape) for part, p in zip(np.split(flat, sizes), params0, strict=True)]


@pytest.mark.parametrize("make_fo, make_tx", [
    (lambda p: fastopt.LAMB(p, lr=1e-2, weight_decay=0.1),
     lambda: optax.lamb(1e-2, eps_root=0.0, weight_decay=0.1)),
    (lambda p: fastopt.LARS(p, lr=5.0, trust_coefficient=1e-2, weight_decay=1e-2),
     lambda: optax.lars(5.0, trust_coefficient=1e-2, weight_decay=1e-2, nesterov=False)),
], ids=["lamb", "lars"])
def test_trust_ratio_is_per_array_not_global(make_fo, make_tx):
    """Negative control: over two arrays of very different scales, fastopt matches optax's
    per-array (per-leaf) trust ratios and visibly differs from one trust ratio over all the
    parameters, so the parity above really pins the layer-wise norms."""
    dtype = np.float64
    params0, grads = two_scale_problem(dtype)
    ours = [p.copy() for p in params0]
    opt = make_fo(ours)
    for gs in grads:
        opt.step([g.copy() for g in gs])
    per_array = run_optax(make_tx, params0, grads, dtype)
    global_ratio = run_optax_global(make_tx, params0, grads, dtype)
    assert_params_close(ours, per_array, dtype)
    # the small array's own ratio is ~10⁴ below the global one (which the large array
    # dominates): with the global ratio it would have moved orders of magnitude further
    moved = np.abs(ours[0] - params0[0]).max()
    assert moved > 0
    assert np.abs(global_ratio[0] - params0[0]).max() > 100 * moved
    assert np.abs(ours[0] - global_ratio[0]).max() > 100 * moved

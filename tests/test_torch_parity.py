"""Parity with torch.optim for every torch-compatible option named in ``docs/equations.md``.

fastopt and the real ``torch.optim`` step identical initial values with identical (seeded)
gradient sequences; parameters, state and step counts must agree within float tolerance.
torch is an optional extra (``pip install fastopt[torch]``), never a runtime dependency.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pytest
from layout import LIST_SHAPES, SINGLE_SHAPE, STEPS, TOL, fastopt_state

import fastopt
from fastopt.schedules import Cosine, Exponential, LinearWarmup, Step

torch = pytest.importorskip("torch")



# ----------------------------------------------------------------------------- harness


def make_problem(shapes, dtype, steps=STEPS, seed=0, grad_factors=None):
    """Initial values and a gradient sequence, one array per shape, all in ``dtype``.

    Each element's gradients have their own scale, 1e-9 to 1: where √v or √G is near ε,
    where ε sits (inside or outside the square root) changes the update, so the tests can
    tell torch's placement from the spec's. ``grad_factors`` scales whole steps (cyclic)."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    scales = [10.0 ** rng.uniform(-9, 0, s) for s in shapes]
    grads = []
    for t in range(steps):
        f = 1.0 if grad_factors is None else grad_factors[t % len(grad_factors)]
        grads.append([(f * sc * rng.standard_normal(s)).astype(dtype)
                      for s, sc in zip(shapes, scales, strict=True)])
    return params, grads


@contextlib.contextmanager
def torch_scalar_dtype(dtype) -> Iterator[None]:
    """Within: torch's default dtype is float64 when ``dtype`` is.

    torch keeps its per-parameter scalar state (ASGD's η_t and μ_t, NAdam's Π_t, the step
    counts) in the default dtype, float32 unless set: a float64 ASGD would otherwise run
    with an η_t rounded to float32 (~1e-8 relative, far above the float64 tolerance). A
    float64 torch user sets ``torch.set_default_dtype(torch.float64)``; so does a float64 run.
    """
    old = torch.get_default_dtype()
    if np.dtype(dtype) == np.float64:
        torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


@dataclass
class Run:
    fo: fastopt.Optimizer
    fo_params: list[np.ndarray]
    th: torch.optim.Optimizer
    th_params: list[torch.Tensor]

    def torch_state(self, j: int, name: str) -> np.ndarray:
        return self.th.state[self.th_params[j]][name].detach().numpy()


def run_pair(
    make_fo: Callable[[list[np.ndarray]], fastopt.Optimizer],
    make_th: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    *,
    shapes=LIST_SHAPES,
    dtype=np.float32,
    steps=STEPS,
    seed=0,
    grad_factors=None,
    single=False,
    before_torch_step: Callable[[Run, int], None] | None = None,
    make_scheduler: Callable[[torch.optim.Optimizer], object] | None = None,
) -> Run:
    """Step fastopt and torch side by side on the same data; return both for comparison.

    ``single``: hand fastopt one bare ndarray instead of a list (``shapes`` has one entry).
    ``before_torch_step(run, t')`` runs before each torch step (clipping, setting lr);
    ``make_scheduler(torch optimizer)`` builds a torch lr scheduler, stepped after each step.
    """
    params0, grads = make_problem(shapes, dtype, steps, seed, grad_factors)
    fo_params = [p.copy() for p in params0]
    th_params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params0]
    fo = make_fo(fo_params[0] if single else fo_params)
    with torch_scalar_dtype(dtype):
        th = make_th(th_params)
        scheduler = make_scheduler(th) if make_scheduler is not None else None
        run = Run(fo, fo_params, th, th_params)
        for t, gs in enumerate(grads):
            fo.step(gs[0].copy() if single else [g.copy() for g in gs])
            for tp, g in zip(th_params, gs, strict=True):
                tp.grad = torch.from_numpy(g.copy())
            if before_torch_step is not None:
                before_torch_step(run, t)
            th.step()
            if scheduler is not None:
                scheduler.step()
    return run


def assert_params_close(run: Run, dtype=np.float32):
    for j, (p, tp) in enumerate(zip(run.fo_params, run.th_params, strict=True)):
        assert p.dtype == dtype
        np.testing.assert_allclose(
            p, tp.detach().numpy(), **TOL[dtype], err_msg=f"parameter {j} differs from torch"
        )


def assert_state_close(run: Run, state_map, dtype=np.float32):
    """``state_map``: ``(fastopt name, torch name, factor)``, fastopt ≈ factor · torch; a
    factor may be a per-parameter sequence (e.g. each group's lr).

    State spans many magnitudes (v ~ g² down to 1e-18; a momentum buffer of g/√E sums terms
    of ~10, and its elements that pass near zero lose their relative precision to
    cancellation), so the absolute tolerance scales with the array's largest element."""
    for fo_name, th_name, factor in state_map:
        ours = fastopt_state(run.fo, run.fo_params, fo_name)
        for j, s in enumerate(ours):
            f = factor[j] if isinstance(factor, Sequence) else factor
            theirs = f * run.torch_state(j, th_name)
            scale = float(np.abs(theirs).max()) or 1.0
            np.testing.assert_allclose(
                s, theirs, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale,
                err_msg=f"state {fo_name!r} of parameter {j} differs from torch {th_name!r}",
            )


def assert_step_counts(run: Run, steps=STEPS):
    assert run.fo.step_count == steps
    for j, tp in enumerate(run.th_params):
        if "step" in run.th.state[tp]:  # torch's SGD keeps no step count
            assert float(run.torch_state(j, "step")) == steps


# ------------------------------------------------------------------- rule by rule, options

M = [("m", "exp_avg", 1.0), ("v", "exp_avg_sq", 1.0)]
ADAMAX = [("m", "exp_avg", 1.0), ("u", "exp_inf", 1.0)]
ADADELTA = [("square_avg", "square_avg", 1.0), ("acc_delta", "acc_delta", 1.0)]
RPROP = [("prev", "prev", 1.0), ("step_size", "step_size", 1.0)]
ASGD = [("ax", "ax", 1.0)]
T = torch.optim

#: (id, fastopt constructor, torch constructor, state map, dtype)
CASES = [
    ("sgd", lambda p: fastopt.SGD(p, lr=0.05), lambda p: T.SGD(p, lr=0.05), [], np.float32),
    ("sgd-l2-maximize",
     lambda p: fastopt.SGD(p, lr=0.05, weight_decay=0.1, maximize=True),
     lambda p: T.SGD(p, lr=0.05, weight_decay=0.1, maximize=True), [], np.float32),
    ("momentum",
     lambda p: fastopt.Momentum(p, lr=0.05, momentum=0.9),
     lambda p: T.SGD(p, lr=0.05, momentum=0.9),
     [("velocity", "momentum_buffer", 0.05)], np.float32),  # v = η b
    ("momentum-l2",
     lambda p: fastopt.Momentum(p, lr=0.05, momentum=0.8, weight_decay=0.01),
     lambda p: T.SGD(p, lr=0.05, momentum=0.8, weight_decay=0.01),
     [("velocity", "momentum_buffer", 0.05)], np.float32),
    ("momentum-f64",
     lambda p: fastopt.Momentum(p, lr=0.05, momentum=0.9),
     lambda p: T.SGD(p, lr=0.05, momentum=0.9),
     [("velocity", "momentum_buffer", 0.05)], np.float64),
    ("nesterov",
     lambda p: fastopt.Nesterov(p, lr=0.05, momentum=0.9),
     lambda p: T.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
     [("velocity", "momentum_buffer", 0.05)], np.float32),
    ("adagrad",
     lambda p: fastopt.AdaGrad(p, lr=0.1, eps=1e-10, eps_inside_sqrt=False),
     lambda p: T.Adagrad(p, lr=0.1), [("sum_sq", "sum", 1.0)], np.float32),
    ("adagrad-init-l2",
     lambda p: fastopt.AdaGrad(p, lr=0.1, eps=1e-10, eps_inside_sqrt=False,
                               initial_accumulator_value=0.1, weight_decay=0.01),
     lambda p: T.Adagrad(p, lr=0.1, initial_accumulator_value=0.1, weight_decay=0.01),
     [("sum_sq", "sum", 1.0)], np.float32),
    ("rmsprop",
     lambda p: fastopt.RMSprop(p, lr=1e-3, alpha=0.99, eps=1e-8, eps_inside_sqrt=False),
     lambda p: T.RMSprop(p, lr=1e-3), [("square_avg", "square_avg", 1.0)], np.float32),
    ("rmsprop-centered",
     lambda p: fastopt.RMSprop(p, lr=1e-3, alpha=0.99, eps=1e-8, eps_inside_sqrt=False,
                               centered=True),
     lambda p: T.RMSprop(p, lr=1e-3, centered=True),
     [("square_avg", "square_avg", 1.0), ("grad_avg", "grad_avg", 1.0)], np.float32),
    ("rmsprop-momentum",
     lambda p: fastopt.RMSprop(p, lr=1e-3, alpha=0.99, eps=1e-8, eps_inside_sqrt=False,
                               momentum=0.9),
     lambda p: T.RMSprop(p, lr=1e-3, momentum=0.9),
     [("square_avg", "square_avg", 1.0), ("momentum_buffer", "momentum_buffer", 1.0)],
     np.float32),
    ("rmsprop-centered-momentum",
     lambda p: fastopt.RMSprop(p, lr=1e-3, alpha=0.99, eps=1e-8, eps_inside_sqrt=False,
                               centered=True, momentum=0.9),
     lambda p: T.RMSprop(p, lr=1e-3, centered=True, momentum=0.9),
     [("square_avg", "square_avg", 1.0), ("grad_avg", "grad_avg", 1.0),
      ("momentum_buffer", "momentum_buffer", 1.0)], np.float32),
    ("adam", lambda p: fastopt.Adam(p, lr=1e-2),
     lambda p: T.Adam(p, lr=1e-2, foreach=False), M, np.float32),
    ("adam-foreach", lambda p: fastopt.Adam(p, lr=1e-2),
     lambda p: T.Adam(p, lr=1e-2, foreach=True), M, np.float32),
    ("adam-fused", lambda p: fastopt.Adam(p, lr=1e-2),
     lambda p: T.Adam(p, lr=1e-2, fused=True), M, np.float32),
    ("adam-f64", lambda p: fastopt.Adam(p, lr=1e-2, betas=(0.8, 0.99)),
     lambda p: T.Adam(p, lr=1e-2, betas=(0.8, 0.99)), M, np.float64),
    ("adam-l2", lambda p: fastopt.Adam(p, lr=1e-2, weight_decay=0.1),
     lambda p: T.Adam(p, lr=1e-2, weight_decay=0.1), M, np.float32),
    ("adam-maximize", lambda p: fastopt.Adam(p, lr=1e-2, maximize=True),
     lambda p: T.Adam(p, lr=1e-2, maximize=True), M, np.float32),
    ("adamw",
     lambda p: fastopt.Adam(p, lr=1e-2, decoupled_weight_decay=True, weight_decay=0.01),
     lambda p: T.AdamW(p, lr=1e-2, weight_decay=0.01), M, np.float32),
    ("adamw-fused",
     lambda p: fastopt.Adam(p, lr=1e-2, decoupled_weight_decay=True, weight_decay=0.1),
     lambda p: T.AdamW(p, lr=1e-2, weight_decay=0.1, fused=True), M, np.float32),
    ("nadam", lambda p: fastopt.Nadam(p, lr=2e-3, momentum_decay=4e-3),
     lambda p: T.NAdam(p, lr=2e-3), M, np.float32),
    ("nadam-l2", lambda p: fastopt.Nadam(p, lr=2e-3, momentum_decay=4e-3, weight_decay=0.05),
     lambda p: T.NAdam(p, lr=2e-3, weight_decay=0.05), M, np.float32),
    ("nadam-decoupled",
     lambda p: fastopt.Nadam(p, lr=2e-3, momentum_decay=4e-3, weight_decay=0.05,
                             decoupled_weight_decay=True),
     lambda p: T.NAdam(p, lr=2e-3, weight_decay=0.05, decoupled_weight_decay=True),
     M, np.float32),
    ("amsgrad", lambda p: fastopt.AMSGrad(p, lr=1e-2, bias_correction=True),
     lambda p: T.Adam(p, lr=1e-2, amsgrad=True),
     [*M, ("v_max", "max_exp_avg_sq", 1.0)], np.float32),
    # --- Adamax (Kingma & Ba 2015, sec. 7.1): u = max(β₂u, |g| + ε), torch's exp_inf
    ("adamax", lambda p: fastopt.Adamax(p, lr=2e-2),
     lambda p: T.Adamax(p, lr=2e-2), ADAMAX, np.float32),
    ("adamax-l2-maximize",
     lambda p: fastopt.Adamax(p, lr=2e-2, betas=(0.8, 0.99), weight_decay=0.1, maximize=True),
     lambda p: T.Adamax(p, lr=2e-2, betas=(0.8, 0.99), weight_decay=0.1, maximize=True),
     ADAMAX, np.float32),
    ("adamax-f64", lambda p: fastopt.Adamax(p, lr=2e-2, weight_decay=0.1),
     lambda p: T.Adamax(p, lr=2e-2, weight_decay=0.1), ADAMAX, np.float64),
    # --- Adadelta (Zeiler 2012). With ε = 1e-6 the first steps are ~√ε/|g|·g: lr 1 (torch's
    # default) moves little; the larger ε and lr of the second case move ~1.
    ("adadelta", lambda p: fastopt.Adadelta(p, lr=1.0),
     lambda p: T.Adadelta(p, lr=1.0), ADADELTA, np.float32),
    ("adadelta-l2",
     lambda p: fastopt.Adadelta(p, lr=2.0, rho=0.95, eps=1e-4, weight_decay=0.05),
     lambda p: T.Adadelta(p, lr=2.0, rho=0.95, eps=1e-4, weight_decay=0.05),
     ADADELTA, np.float32),
    ("adadelta-maximize-f64",
     lambda p: fastopt.Adadelta(p, lr=2.0, eps=1e-4, weight_decay=0.05, maximize=True),
     lambda p: T.Adadelta(p, lr=2.0, eps=1e-4, weight_decay=0.05, maximize=True),
     ADADELTA, np.float64),
    # --- RAdam (Liu et al. 2020): with β₂ = 0.999, ρ_t > 5 from t = 6, so 20 steps take
    # both the un-adapted and the rectified branch.
    ("radam", lambda p: fastopt.RAdam(p, lr=1e-2),
     lambda p: T.RAdam(p, lr=1e-2), M, np.float32),
    ("radam-l2", lambda p: fastopt.RAdam(p, lr=1e-2, weight_decay=0.1),
     lambda p: T.RAdam(p, lr=1e-2, weight_decay=0.1), M, np.float32),
    ("radam-decoupled",
     lambda p: fastopt.RAdam(p, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
     lambda p: T.RAdam(p, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
     M, np.float32),
    ("radam-decoupled-f64",
     lambda p: fastopt.RAdam(p, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1,
                             decoupled_weight_decay=True),
     lambda p: T.RAdam(p, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1,
                       decoupled_weight_decay=True), M, np.float64),
    # --- Rprop (Riedmiller & Braun 1993). No tolerance is loosened: the sign of g·g_prev of
    # two stored gradients (products here ≳ 1e-30, far above float32's underflow) is the
    # same in any precision, so both sides take every sign decision alike and only the step
    # sizes' roundings differ (no weight decay: torch's Rprop has none, and g + λw could
    # round to either sign near zero).
    ("rprop", lambda p: fastopt.Rprop(p, lr=1e-2),
     lambda p: T.Rprop(p, lr=1e-2), RPROP, np.float32),
    ("rprop-custom-maximize",
     lambda p: fastopt.Rprop(p, lr=5e-2, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2),
                             maximize=True),
     lambda p: T.Rprop(p, lr=5e-2, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2), maximize=True),
     RPROP, np.float32),
    ("rprop-foreach", lambda p: fastopt.Rprop(p, lr=1e-2),
     lambda p: T.Rprop(p, lr=1e-2, foreach=True), RPROP, np.float32),
    ("rprop-custom-f64",
     lambda p: fastopt.Rprop(p, lr=5e-2, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2)),
     lambda p: T.Rprop(p, lr=5e-2, etas=(0.3, 1.5), step_sizes=(1e-3, 0.2)),
     RPROP, np.float64),
    # --- ASGD (Polyak & Juditsky 1992). t0 = 5: μ_t = 1/(t − 1 − t0) < 1 from t = 8, so the
    # running average ax really averages (with the default t0 = 1e6, ax is just w); a large
    # λ makes η_t decay visibly.
    ("asgd", lambda p: fastopt.ASGD(p, lr=5e-2),
     lambda p: T.ASGD(p, lr=5e-2), ASGD, np.float32),
    ("asgd-t0-l2",
     lambda p: fastopt.ASGD(p, lr=5e-2, lambd=0.5, alpha=0.6, t0=5, weight_decay=0.05),
     lambda p: T.ASGD(p, lr=5e-2, lambd=0.5, alpha=0.6, t0=5, weight_decay=0.05),
     ASGD, np.float32),
    ("asgd-t0-maximize-foreach",
     lambda p: fastopt.ASGD(p, lr=5e-2, lambd=0.5, t0=5, maximize=True),
     lambda p: T.ASGD(p, lr=5e-2, lambd=0.5, t0=5, maximize=True, foreach=True),
     ASGD, np.float32),
    ("asgd-t0-l2-f64",
     lambda p: fastopt.ASGD(p, lr=5e-2, lambd=0.5, alpha=0.6, t0=5, weight_decay=0.05),
     lambda p: T.ASGD(p, lr=5e-2, lambd=0.5, alpha=0.6, t0=5, weight_decay=0.05),
     ASGD, np.float64),
]


@pytest.mark.parametrize("layout", ["list", "single"])
@pytest.mark.parametrize(
    "make_fo, make_th, state_map, dtype", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_rule_matches_torch(make_fo, make_th, state_map, dtype, layout):
    shapes = LIST_SHAPES if layout == "list" else [SINGLE_SHAPE]
    run = run_pair(make_fo, make_th, shapes=shapes, dtype=dtype, single=layout == "single")
    assert_params_close(run, dtype)
    assert_state_close(run, state_map, dtype)
    assert_step_counts(run)


def test_asgd_average_really_averages():
    """With t0 = 5 the average ax (compared by the parity cases) is not the iterate w."""
    run = run_pair(lambda p: fastopt.ASGD(p, lr=5e-2, lambd=0.5, alpha=0.6, t0=5),
                   lambda p: T.ASGD(p, lr=5e-2, lambd=0.5, alpha=0.6, t0=5))
    for j, tp in enumerate(run.th_params):
        assert np.abs(run.torch_state(j, "ax") - tp.detach().numpy()).max() > 1e-2
    assert_params_close(run)
    assert_state_close(run, ASGD)


def test_nadam_mu_product_matches_torch():
    run = run_pair(lambda p: fastopt.Nadam(p, lr=2e-3, momentum_decay=4e-3),
                   lambda p: T.NAdam(p, lr=2e-3))
    ours = run.fo.state_dict()["group.0.mu_product"]
    for j in range(len(run.th_params)):
        # torch keeps Π_t as a float32 scalar tensor; fastopt as a Python float
        assert math.isclose(ours, float(run.torch_state(j, "mu_product")), rel_tol=1e-6)
    assert ours < 0.9**STEPS  # Π_t really is the running product, not a constant


def test_parameters_actually_move():
    """Guard against a vacuous pass: both sides must have changed the parameters."""
    params0, _ = make_problem(LIST_SHAPES, np.float32)
    run = run_pair(lambda p: fastopt.Adam(p, lr=1e-2), lambda p: T.Adam(p, lr=1e-2))
    for p0, p in zip(params0, run.fo_params, strict=True):
        assert np.abs(p - p0).max() > 0.05


# ---------------------------------------------------------------------- global clipping

CLIP_FACTORS = [0.05, 0.5, 0.1, 2.0]  # ‖g‖ ≈ 9.5·f over the 3731 elements: clipped or not at 1


@pytest.mark.parametrize(
    "make_fo, make_th, state_map",
    [
        (lambda p: fastopt.SGD(p, lr=0.1, clip_norm=1.0), lambda p: T.SGD(p, lr=0.1), []),
        (lambda p: fastopt.Momentum(p, lr=0.05, momentum=0.9, clip_norm=1.0, maximize=True),
         lambda p: T.SGD(p, lr=0.05, momentum=0.9, maximize=True),
         [("velocity", "momentum_buffer", 0.05)]),
        (lambda p: fastopt.Adam(p, lr=1e-2, clip_norm=1.0), lambda p: T.Adam(p, lr=1e-2), M),
    ],
    ids=["sgd", "momentum-maximize", "adam"],
)
def test_clip_norm_matches_clip_grad_norm(make_fo, make_th, state_map):
    norms = []

    def clip(run, t):
        norms.append(float(torch.nn.utils.clip_grad_norm_(run.th_params, max_norm=1.0)))

    run = run_pair(make_fo, make_th, grad_factors=CLIP_FACTORS, before_torch_step=clip)
    assert any(n > 1.0 for n in norms) and any(n < 1.0 for n in norms)
    assert_params_close(run)
    assert_state_close(run, state_map)


def test_clip_norm_is_global_over_all_parameters():
    """Clipping each array on its own gives a different (wrong) answer: the test can tell."""
    def clip_each(run, t):
        for tp in run.th_params:
            torch.nn.utils.clip_grad_norm_([tp], max_norm=1.0)

    run = run_pair(lambda p: fastopt.SGD(p, lr=0.1, clip_norm=1.0),
                   lambda p: T.SGD(p, lr=0.1), grad_factors=[0.5],
                   before_torch_step=clip_each)
    diff = max(np.abs(p - tp.detach().numpy()).max()
               for p, tp in zip(run.fo_params, run.th_params, strict=True))
    assert diff > 1e-3


# ---------------------------------------------------------------------- parameter groups


def _groups(params, *overrides):
    """``[{"params": [params 0, 1], **o0}, {"params": [params 2], **o1}]``"""
    return [{"params": params[:2], **overrides[0]}, {"params": params[2:], **overrides[1]}]


GROUP_CASES = [
    ("sgd",
     lambda p: fastopt.SGD(_groups(p, {"lr": 0.1}, {"weight_decay": 0.1}), lr=0.02),
     lambda p: T.SGD(_groups(p, {"lr": 0.1}, {"weight_decay": 0.1}), lr=0.02), []),
    ("momentum",
     lambda p: fastopt.Momentum(
         _groups(p, {"lr": 0.05}, {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.01})),
     lambda p: T.SGD(_groups(p, {"lr": 0.05, "momentum": 0.9},
                             {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.01})),
     [("velocity", "momentum_buffer", [0.05, 0.05, 0.01])]),
    ("adam",
     lambda p: fastopt.Adam(_groups(p, {"lr": 0.02}, {"weight_decay": 0.1,
                                                      "betas": (0.8, 0.99)}), lr=1e-2),
     lambda p: T.Adam(_groups(p, {"lr": 0.02}, {"weight_decay": 0.1, "betas": (0.8, 0.99)}),
                      lr=1e-2), M),
    ("adamw",
     lambda p: fastopt.Adam(_groups(p, {"weight_decay": 0.0}, {"lr": 3e-3}), lr=1e-2,
                            weight_decay=0.05, decoupled_weight_decay=True),
     lambda p: T.AdamW(_groups(p, {"weight_decay": 0.0}, {"lr": 3e-3}), lr=1e-2,
                       weight_decay=0.05), M),
    ("nadam",
     lambda p: fastopt.Nadam(_groups(p, {"lr": 1e-3}, {"weight_decay": 0.01}), lr=2e-3,
                             momentum_decay=4e-3),
     lambda p: T.NAdam(_groups(p, {"lr": 1e-3}, {"weight_decay": 0.01}), lr=2e-3), M),
]


@pytest.mark.parametrize(
    "make_fo, make_th, state_map", [c[1:] for c in GROUP_CASES], ids=[c[0] for c in GROUP_CASES]
)
def test_param_groups_match_torch(make_fo, make_th, state_map):
    run = run_pair(make_fo, make_th)
    assert len(run.fo.param_groups) == len(run.th.param_groups) == 2
    for ours, theirs in zip(run.fo.param_groups, run.th.param_groups, strict=True):
        for name in ("lr", "weight_decay"):
            assert ours[name] == theirs[name]
    assert_params_close(run)
    assert_state_close(run, state_map)


# ------------------------------------------------------------------------ lr schedules


def _lambda_lr(schedule, base):
    return lambda opt: T.lr_scheduler.LambdaLR(opt, lambda t: schedule(t) / base)


WARM_COSINE = LinearWarmup(Cosine(1e-2, total_steps=15, min_lr=1e-4), warmup_steps=5,
                           start_factor=0.1)

SCHEDULE_CASES = [
    # SGD + torch StepLR and fastopt.schedules.Step: η_t' = 0.1 · 0.5^(t' // 5)
    ("sgd-steplr", lambda p: fastopt.SGD(p, lr=Step(0.1, step_size=5, gamma=0.5)),
     lambda p: T.SGD(p, lr=0.1),
     lambda opt: T.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5), []),
    ("adam-lambdalr", lambda p: fastopt.Adam(p, lr=WARM_COSINE),
     lambda p: T.Adam(p, lr=1e-2), _lambda_lr(WARM_COSINE, 1e-2), M),
    ("adamw-lambdalr",
     lambda p: fastopt.Adam(p, lr=WARM_COSINE, weight_decay=0.1, decoupled_weight_decay=True),
     lambda p: T.AdamW(p, lr=1e-2, weight_decay=0.1), _lambda_lr(WARM_COSINE, 1e-2), M),
    ("rmsprop-momentum-exponentiallr",
     lambda p: fastopt.RMSprop(p, lr=Exponential(1e-3, 0.9), alpha=0.99, eps=1e-8,
                               eps_inside_sqrt=False, momentum=0.9),
     lambda p: T.RMSprop(p, lr=1e-3, momentum=0.9),
     lambda opt: T.lr_scheduler.ExponentialLR(opt, gamma=0.9),
     [("square_avg", "square_avg", 1.0), ("momentum_buffer", "momentum_buffer", 1.0)]),
    ("adagrad-lambdalr",
     lambda p: fastopt.AdaGrad(p, lr=lambda t: 0.1 / (1 + t), eps=1e-10, eps_inside_sqrt=False),
     lambda p: T.Adagrad(p, lr=0.1),
     lambda opt: T.lr_scheduler.LambdaLR(opt, lambda t: 1 / (1 + t)),
     [("sum_sq", "sum", 1.0)]),
    # the new rules whose step reads this step's lr the way torch's does (Rprop's lr is only
    # its initial step size; ASGD's η_t uses the previous step's lr in torch)
    ("adamax-lambdalr", lambda p: fastopt.Adamax(p, lr=WARM_COSINE),
     lambda p: T.Adamax(p, lr=1e-2), _lambda_lr(WARM_COSINE, 1e-2), ADAMAX),
    ("radam-decoupled-lambdalr",
     lambda p: fastopt.RAdam(p, lr=WARM_COSINE, weight_decay=0.1, decoupled_weight_decay=True),
     lambda p: T.RAdam(p, lr=1e-2, weight_decay=0.1, decoupled_weight_decay=True),
     _lambda_lr(WARM_COSINE, 1e-2), M),
    ("adadelta-exponentiallr",
     lambda p: fastopt.Adadelta(p, lr=Exponential(2.0, 0.9), eps=1e-4),
     lambda p: T.Adadelta(p, lr=2.0, eps=1e-4),
     lambda opt: T.lr_scheduler.ExponentialLR(opt, gamma=0.9), ADADELTA),
]


@pytest.mark.parametrize(
    "make_fo, make_th, make_sched, state_map",
    [c[1:] for c in SCHEDULE_CASES], ids=[c[0] for c in SCHEDULE_CASES],
)
def test_lr_schedule_matches_torch_scheduler(make_fo, make_th, make_sched, state_map):
    lrs = []

    def record(run, t):
        lrs.append(run.th.param_groups[0]["lr"])

    run = run_pair(make_fo, make_th, before_torch_step=record, make_scheduler=make_sched)
    assert len(set(lrs)) > 2  # the rate really changed
    assert_params_close(run)
    assert_state_close(run, state_map)


def test_lr_schedule_matches_manual_torch_lr():
    """Nadam (and AMSGrad) with the lr written into torch's param group before each step."""
    sched = Cosine(3e-3, total_steps=STEPS)

    def set_lr(run, t):
        for group in run.th.param_groups:
            group["lr"] = sched(t)

    for make_fo, make_th, state_map in [
        (lambda p: fastopt.Nadam(p, lr=sched, momentum_decay=4e-3), lambda p: T.NAdam(p), M),
        (lambda p: fastopt.AMSGrad(p, lr=sched, bias_correction=True),
         lambda p: T.Adam(p, amsgrad=True), [*M, ("v_max", "max_exp_avg_sq", 1.0)]),
    ]:
        run = run_pair(make_fo, make_th, before_torch_step=set_lr)
        assert_params_close(run)
        assert_state_close(run, state_map)


def test_momentum_under_a_schedule_is_the_spec_form_not_torchs():
    """docs/equations.md: Momentum keeps v ← γv + ηg, torch b ← γb + g, w ← w − ηb. They agree
    for a constant η (tested above) and must differ under a decaying schedule."""
    sched = Exponential(0.05, 0.7)
    run = run_pair(lambda p: fastopt.Momentum(p, lr=sched, momentum=0.9),
                   lambda p: T.SGD(p, lr=0.05, momentum=0.9),
                   make_scheduler=lambda opt: T.lr_scheduler.ExponentialLR(opt, gamma=0.7))
    diff = max(np.abs(p - tp.detach().numpy()).max()
               for p, tp in zip(run.fo_params, run.th_params, strict=True))
    assert diff > 1e-3


# ------------------------------------------------------- the keywords are what make parity

SPEC_DEFAULTS_DIFFER = [
    # (id, fastopt without the torch keyword, the torch optimizer it then must not match)
    ("adagrad-eps-inside-sqrt",
     lambda p: fastopt.AdaGrad(p, lr=0.1, eps=1e-10), lambda p: T.Adagrad(p, lr=0.1)),
    ("rmsprop-eps-inside-sqrt",
     lambda p: fastopt.RMSprop(p, lr=1e-3, alpha=0.99, eps=1e-8),
     lambda p: T.RMSprop(p, lr=1e-3)),
    ("rmsprop-not-centered",
     lambda p: fastopt.RMSprop(p, lr=1e-3, alpha=0.99, eps=1e-8, eps_inside_sqrt=False),
     lambda p: T.RMSprop(p, lr=1e-3, centered=True)),
    ("nadam-constant-beta1",
     lambda p: fastopt.Nadam(p, lr=2e-3), lambda p: T.NAdam(p, lr=2e-3)),
    ("nadam-l2-not-decoupled",
     lambda p: fastopt.Nadam(p, lr=2e-3, momentum_decay=4e-3, weight_decay=0.5),
     lambda p: T.NAdam(p, lr=2e-3, weight_decay=0.5, decoupled_weight_decay=True)),
    ("adam-l2-not-adamw",
     lambda p: fastopt.Adam(p, lr=1e-2, weight_decay=0.5), lambda p: T.AdamW(p, lr=1e-2,
                                                                            weight_decay=0.5)),
    ("amsgrad-no-bias-correction",
     lambda p: fastopt.AMSGrad(p, lr=1e-2), lambda p: T.Adam(p, lr=1e-2, amsgrad=True)),
    ("radam-l2-not-decoupled",
     lambda p: fastopt.RAdam(p, lr=1e-2, weight_decay=0.5),
     lambda p: T.RAdam(p, lr=1e-2, weight_decay=0.5, decoupled_weight_decay=True)),
]


@pytest.mark.parametrize("make_fo, make_th", [c[1:] for c in SPEC_DEFAULTS_DIFFER],
                         ids=[c[0] for c in SPEC_DEFAULTS_DIFFER])
def test_without_the_torch_keyword_results_differ(make_fo, make_th):
    """Negative controls: the data above is sensitive enough that each torch-compatibility
    keyword visibly matters (so the parity tests really pin it)."""
    run = run_pair(make_fo, make_th)
    diff = max(np.abs(p - tp.detach().numpy()).max()
               for p, tp in zip(run.fo_params, run.th_params, strict=True))
    assert diff > 1e-4

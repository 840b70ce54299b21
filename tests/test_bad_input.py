"""Bad input: a clear error, nothing changed, and the optimizer works on as if it never happened.

Construction refuses bad parameters and hyperparameters with a message that names the
culprit. ``step`` and ``load_state_dict`` check everything before writing anything: after a
refused call the parameters, state and counters are bit-identical to before, and the next
good step gives bit-identical results to a twin optimizer that never saw the bad call. The
functional layer refuses bad arrays before writing, too.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable

import numpy as np
import pytest

import fastopt
from fastopt import functional as F

SHAPES = [(16,), (4, 6), (5,)]
DT = np.float32


def arrays(seed=0, shapes=SHAPES, dtype=DT):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def esc(text: str) -> str:
    return re.escape(text)


# ------------------------------------------------------------------------ snapshots, twins


def snapshot(opt: fastopt.Optimizer, params: list[np.ndarray]) -> dict:
    return {
        "params": [p.copy() for p in params],
        "state": opt.state_dict(),  # copies of the buffers, the counters, group scalars
        "groups": copy.deepcopy(opt.param_groups),
        "step_count": opt.step_count,
        "skipped_steps": opt.skipped_steps,
    }


def assert_same_bits(a, b, what):
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), what
        assert a.dtype == b.dtype and a.shape == b.shape, what
        assert a.tobytes() == b.tobytes(), f"{what} changed"
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


def assert_state_dicts_equal(a: dict, b: dict, ignore=()):
    assert set(a) - set(ignore) == set(b) - set(ignore)
    for key in a:
        if key not in ignore:
            assert_same_bits(a[key], b[key], key)


def assert_unchanged(before: dict, opt: fastopt.Optimizer, params: list[np.ndarray]):
    after = snapshot(opt, params)
    for j, (x, y) in enumerate(zip(before["params"], after["params"], strict=True)):
        assert_same_bits(x, y, f"params[{j}]")
    assert_state_dicts_equal(before["state"], after["state"])
    assert before["groups"] == after["groups"]
    assert before["step_count"] == after["step_count"]
    assert before["skipped_steps"] == after["skipped_steps"]


class Twins:
    """Two optimizers built the same way on equal copies of the same arrays: ``a`` gets the
    bad calls, ``b`` never does."""

    def __init__(self, factory: Callable[[list[np.ndarray]], fastopt.Optimizer], seed=0):
        init = arrays(seed)
        self.pa = [p.copy() for p in init]
        self.pb = [p.copy() for p in init]
        self.a = factory(self.pa)
        self.b = factory(self.pb)
        self.t = 0

    def grads(self, t=None):
        return arrays(100 + (self.t if t is None else t))

    def step_both(self):
        gs = self.grads()
        self.a.step([g.copy() for g in gs])
        self.b.step([g.copy() for g in gs])
        self.t += 1

    def snapshot(self):
        return snapshot(self.a, self.pa)

    def assert_unchanged(self, before):
        assert_unchanged(before, self.a, self.pa)

    def assert_twins(self, ignore=()):
        for j, (x, y) in enumerate(zip(self.pa, self.pb, strict=True)):
            assert_same_bits(x, y, f"params[{j}]")
        assert_state_dicts_equal(self.a.state_dict(), self.b.state_dict(), ignore)
        assert self.a.step_count == self.b.step_count

    def then_works(self, ignore=()):
        """A good step after the refused call: bit-identical to the twin, and it moves."""
        before = [p.copy() for p in self.pa]
        self.step_both()
        self.assert_twins(ignore)
        assert any(not np.array_equal(x, y) for x, y in zip(before, self.pa, strict=True))


def _groups(ps, **second):
    return [{"params": ps[:2]}, {"params": ps[2:], **second}]


#: Optimizers with state, group scalars, groups, clipping: what a bad step could corrupt.
FACTORIES = {
    "adam-clip": lambda ps: fastopt.Adam(ps, lr=1e-2, clip_norm=1.0),
    "nadam-groups": lambda ps: fastopt.Nadam(
        _groups(ps, lr=1e-3), lr=2e-3, momentum_decay=4e-3, weight_decay=0.05,
        decoupled_weight_decay=True,
    ),
    "rmsprop-centered-momentum": lambda ps: fastopt.RMSprop(
        ps, lr=1e-3, alpha=0.99, eps=1e-8, eps_inside_sqrt=False, centered=True, momentum=0.9
    ),
    "momentum-groups": lambda ps: fastopt.Momentum(_groups(ps, lr=0.01, momentum=0.5), lr=0.05),
}


# --------------------------------------------------------------------- bad parameters


def _with_bad_second(bad):
    good = arrays()
    return [good[0], bad, good[2]]


BAD_PARAMS = [
    ("int32", lambda: np.arange(6, dtype=np.int32), TypeError,
     "params[1] has dtype int32; fastopt needs float32 or float64"),
    ("int64", lambda: np.arange(6), TypeError, "params[1] has dtype int64"),
    ("bool", lambda: np.ones(6, bool), TypeError, "params[1] has dtype bool"),
    ("float16", lambda: np.ones(6, np.float16), TypeError,
     "params[1] is float16 but the first parameter is float32; use one optimizer per dtype"),
    ("complex64", lambda: np.ones(6, np.complex64), TypeError, "params[1] has dtype complex64"),
    ("complex128", lambda: np.ones(6, np.complex128), TypeError,
     "params[1] has dtype complex128"),
    ("read-only", lambda: _read_only(np.ones(6, DT)), ValueError,
     "params[1] is read-only; fastopt updates it in place"),
    ("strided", lambda: np.ones((4, 6), DT)[:, ::2], ValueError,
     "params[1] is not C-contiguous; pass np.ascontiguousarray(...)"),
    ("fortran", lambda: np.asfortranarray(np.ones((4, 6), DT)), ValueError,
     "params[1] is not C-contiguous"),
    ("transposed", lambda: np.ones((4, 6), DT).T, ValueError, "params[1] is not C-contiguous"),
    ("python-list", lambda: [1.0, 2.0], TypeError,
     "params[1] must be a numpy.ndarray, got list"),
    ("scalar", lambda: 3.0, TypeError, "params[1] must be a numpy.ndarray, got float"),
]


def _read_only(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("make_bad, exc, message", [c[1:] for c in BAD_PARAMS],
                         ids=[c[0] for c in BAD_PARAMS])
def test_bad_parameter_array_is_named(make_bad, exc, message):
    ps = _with_bad_second(make_bad())
    kept = [copy.deepcopy(p) for p in ps]
    with pytest.raises(exc, match=esc(message)):
        fastopt.Adam(ps)
    for p, k in zip(ps, kept, strict=True):  # nothing was touched
        assert np.array_equal(np.asarray(p), np.asarray(k))


def test_bad_parameter_in_a_group_names_the_group():
    good = arrays()
    groups = [{"params": good[:2]}, {"params": [good[2], np.ones(3, np.float16)]}]
    with pytest.raises(TypeError, match=esc("param_groups[1]['params'][1] is float16 but")):
        fastopt.SGD(groups)


def test_mixed_dtypes():
    ps = [np.ones(4, DT), np.ones(4, np.float32), np.ones(4, np.float64)]
    with pytest.raises(TypeError, match=esc(
        "params[2] is float64 but the first parameter is float32; use one optimizer per dtype"
    )):
        fastopt.Adam(ps)


def test_same_array_twice():
    ps = arrays()
    with pytest.raises(ValueError, match=esc("params[3] is the same array as params[1]")):
        fastopt.SGD([*ps, ps[1]])


def test_same_array_in_two_groups():
    ps = arrays()
    with pytest.raises(ValueError, match=esc(
        "param_groups[1]['params'][0] is the same array as param_groups[0]['params'][0]"
    )):
        fastopt.SGD([{"params": ps[:2]}, {"params": [ps[0]]}])


@pytest.mark.parametrize("views", [
    lambda buf: [buf[:10], buf[5:15]],
    lambda buf: [buf.reshape(4, 5), buf[3:8]],
], ids=["overlapping-slices", "reshape-and-slice"])
def test_arrays_sharing_memory(views):
    buf = np.zeros(20, DT)
    with pytest.raises(ValueError, match="share memory"):
        fastopt.SGD(views(buf))


@pytest.mark.parametrize("params, message", [
    ([], "the optimizer got an empty parameter list"),
    ((), "the optimizer got an empty parameter list"),
    (iter([]), "the optimizer got an empty parameter list"),
    ([{"params": []}], "the optimizer got no parameters"),
    ([{"params": []}, {"params": []}], "the optimizer got no parameters"),
    ([{"lr": 0.1}], "parameter group 0 must be a dict with a 'params' entry"),
])
def test_empty_or_malformed_params(params, message):
    with pytest.raises(ValueError, match=esc(message)):
        fastopt.SGD(params)


def test_dicts_and_arrays_mixed():
    ps = arrays()
    with pytest.raises(TypeError, match=esc("params[1] must be a numpy.ndarray, got dict")):
        fastopt.SGD([ps[0], {"params": [ps[1]]}])


# --------------------------------------------------------------------- bad hyperparameters

A = arrays()
BAD_HYPER = [
    # (id, constructor, message)
    ("lr-negative", lambda: fastopt.SGD(A, lr=-0.1), "lr must be finite and >= 0, got -0.1"),
    ("lr-nan", lambda: fastopt.Adam(A, lr=float("nan")), "lr must not be NaN"),
    ("lr-inf", lambda: fastopt.Adam(A, lr=math.inf), "lr must be finite and >= 0, got inf"),
    ("lr-string", lambda: fastopt.SGD(A, lr="0.1"), "lr must be a real number, got '0.1'"),
    ("lr-bool", lambda: fastopt.SGD(A, lr=True), "lr must be a real number, got True"),
    ("lr-none", lambda: fastopt.SGD(A, lr=None), "lr must be a real number, got None"),
    ("beta1-one", lambda: fastopt.Adam(A, betas=(1.0, 0.999)),
     "betas[0] must be in [0, 1), got 1.0"),
    ("beta1-negative", lambda: fastopt.Nadam(A, betas=(-0.1, 0.999)),
     "betas[0] must be in [0, 1), got -0.1"),
    ("beta2-one", lambda: fastopt.AMSGrad(A, betas=(0.9, 1.0)),
     "betas[1] must be in [0, 1), got 1.0"),
    ("beta2-nan", lambda: fastopt.Adam(A, betas=(0.9, float("nan"))), "betas[1] must not be NaN"),
    ("betas-scalar", lambda: fastopt.Adam(A, betas=0.9), "betas must be a pair (beta1, beta2)"),
    ("betas-triple", lambda: fastopt.Adam(A, betas=(0.9, 0.99, 0.999)),
     "betas must be a pair (beta1, beta2)"),
    ("eps-negative", lambda: fastopt.Adam(A, eps=-1e-8), "eps must be finite and >= 0"),
    ("eps-nan", lambda: fastopt.AdaGrad(A, eps=float("nan")), "eps must not be NaN"),
    ("rmsprop-eps-negative", lambda: fastopt.RMSprop(A, eps=-1.0), "eps must be finite and >= 0"),
    ("momentum-negative", lambda: fastopt.Momentum(A, momentum=-0.9),
     "momentum must be finite and >= 0, got -0.9"),
    ("nesterov-momentum-nan", lambda: fastopt.Nesterov(A, momentum=float("nan")),
     "momentum must not be NaN"),
    ("rmsprop-momentum-negative", lambda: fastopt.RMSprop(A, momentum=-0.5),
     "momentum must be finite and >= 0"),
    ("alpha-one", lambda: fastopt.RMSprop(A, alpha=1.0), "alpha must be in [0, 1), got 1.0"),
    ("alpha-negative", lambda: fastopt.RMSprop(A, alpha=-0.1), "alpha must be in [0, 1)"),
    ("alpha-big", lambda: fastopt.RMSprop(A, alpha=1.5), "alpha must be in [0, 1)"),
    ("weight-decay-negative", lambda: fastopt.SGD(A, weight_decay=-0.01),
     "weight_decay must be finite and >= 0, got -0.01"),
    ("adam-weight-decay-negative", lambda: fastopt.Adam(A, weight_decay=-1.0),
     "weight_decay must be finite and >= 0"),
    ("weight-decay-inf", lambda: fastopt.AdaGrad(A, weight_decay=math.inf),
     "weight_decay must be finite and >= 0"),
    ("initial-accumulator-negative", lambda: fastopt.AdaGrad(A, initial_accumulator_value=-1),
     "initial_accumulator_value must be finite and >= 0"),
    ("momentum-decay-negative", lambda: fastopt.Nadam(A, momentum_decay=-4e-3),
     "momentum_decay must be finite and >= 0"),
    ("maximize-string", lambda: fastopt.Adam(A, maximize="yes"),
     "maximize must be True or False, got 'yes'"),
    ("decoupled-int", lambda: fastopt.Adam(A, decoupled_weight_decay=1),
     "decoupled_weight_decay must be True or False, got 1"),
    ("centered-none", lambda: fastopt.RMSprop(A, centered=None),
     "centered must be True or False"),
    ("eps-inside-sqrt-string", lambda: fastopt.AdaGrad(A, eps_inside_sqrt="no"),
     "eps_inside_sqrt must be True or False"),
    ("bias-correction-int", lambda: fastopt.AMSGrad(A, bias_correction=1),
     "bias_correction must be True or False"),
    ("adam-bias-correction-none", lambda: fastopt.Adam(A, bias_correction=None),
     "bias_correction must be True or False"),
    ("adam-eps-hat-string", lambda: fastopt.Adam(A, eps_hat="yes"),
     "eps_hat must be True or False"),
    ("clip-negative", lambda: fastopt.SGD(A, clip_norm=-1.0),
     "clip_norm must be finite and >= 0, got -1.0"),
    ("clip-nan", lambda: fastopt.Adam(A, clip_norm=float("nan")), "clip_norm must not be NaN"),
    ("clip-inf", lambda: fastopt.Adam(A, clip_norm=math.inf), "clip_norm must be finite"),
    ("clip-string", lambda: fastopt.Adam(A, clip_norm="1"), "clip_norm must be a real number"),
    ("grad-noise-float", lambda: fastopt.SGD(A, grad_noise=0.01),
     "grad_noise must be a fastopt.GradientNoise(eta, gamma, seed), got 0.01"),
    ("grad-noise-dict", lambda: fastopt.Adam(A, grad_noise={"eta": 0.01}),
     "grad_noise must be a fastopt.GradientNoise"),
    ("skip-nonfinite-string", lambda: fastopt.Adam(A, skip_nonfinite="yes"),
     "skip_nonfinite must be True or False"),
    ("noise-eta-negative", lambda: fastopt.GradientNoise(eta=-1),
     "GradientNoise.eta must be finite and >= 0, got -1.0"),
    ("noise-eta-nan", lambda: fastopt.GradientNoise(eta=float("nan")),
     "GradientNoise.eta must not be NaN"),
    ("noise-gamma-negative", lambda: fastopt.GradientNoise(0.01, gamma=-0.55),
     "GradientNoise.gamma must be finite and >= 0"),
    ("noise-seed-negative", lambda: fastopt.GradientNoise(0.01, seed=-1),
     "GradientNoise.seed must be in [0, 2**64)"),
    ("noise-seed-big", lambda: fastopt.GradientNoise(0.01, seed=2**64),
     "GradientNoise.seed must be in [0, 2**64)"),
    ("noise-seed-float", lambda: fastopt.GradientNoise(0.01, seed=1.5),
     "GradientNoise.seed must be an int"),
    # group overrides: the value, and the group, are named
    ("group-lr-negative", lambda: fastopt.SGD(_groups(A, lr=-1.0), lr=0.1),
     "lr must be finite and >= 0, got -1.0 (in parameter group 1)"),
    ("group-betas", lambda: fastopt.Adam(_groups(A, betas=(0.9, 1.0))),
     "betas[1] must be in [0, 1), got 1.0 (in parameter group 1)"),
    ("group-alpha", lambda: fastopt.RMSprop(_groups(A, alpha=2.0)),
     "alpha must be in [0, 1), got 2.0 (in parameter group 1)"),
    ("group-weight-decay", lambda: fastopt.AdaGrad(_groups(A, weight_decay=-0.1)),
     "weight_decay must be finite and >= 0, got -0.1 (in parameter group 1)"),
    ("group-momentum", lambda: fastopt.Momentum(_groups(A, momentum=-0.1)),
     "momentum must be finite and >= 0, got -0.1 (in parameter group 1)"),
    ("group-unknown-name", lambda: fastopt.SGD(_groups(A, lr_decay=0.1)),
     "SGD has no hyperparameter 'lr_decay' (in parameter group 1)"),
    ("group-typo", lambda: fastopt.Adam(_groups(A, beta1=0.8)),
     "Adam has no hyperparameter 'beta1' (in parameter group 1)"),
]


@pytest.mark.parametrize("build, message", [c[1:] for c in BAD_HYPER],
                         ids=[c[0] for c in BAD_HYPER])
def test_bad_hyperparameter(build, message):
    with pytest.raises(ValueError, match=esc(message)):
        build()


@pytest.mark.parametrize("build, name", [
    (lambda: fastopt.SGD(A, momentum=0.9), "momentum"),
    (lambda: fastopt.Adam(A, amsgrad=True), "amsgrad"),
    (lambda: fastopt.AdaGrad(A, lr_decay=0.1), "lr_decay"),
    (lambda: fastopt.Momentum(A, nesterov=True), "nesterov"),
], ids=["sgd-momentum", "adam-amsgrad", "adagrad-lr_decay", "momentum-nesterov"])
def test_unknown_keyword_argument(build, name):
    with pytest.raises(TypeError, match=esc(f"unexpected keyword argument '{name}'")):
        build()


@pytest.mark.parametrize("build, message", [
    (lambda: fastopt.SGD(_groups(A, momentum=0.9)), "SGD has no hyperparameter 'momentum'"),
    (lambda: fastopt.Adam(_groups(A, alpha=0.5)), "Adam has no hyperparameter 'alpha'"),
], ids=["sgd-momentum", "adam-alpha"])
def test_group_override_of_another_rules_hyperparameter(build, message):
    with pytest.raises(ValueError, match=esc(message)):
        build()


# -------------------------------------------------------------------------- bad steps

BAD_GRADS = [
    # (id, grads from good grads, message)
    ("too-few", lambda gs: gs[:2], "got 2 gradients for 3 parameters"),
    ("too-many", lambda gs: [*gs, gs[0].copy()], "got 4 gradients for 3 parameters"),
    ("one-array-for-three", lambda gs: gs[0], "got 1 gradients for 3 parameters"),
    ("none", lambda gs: None, "step() needs the gradients"),
    ("generator", lambda gs: (g for g in gs), "grads must be an ndarray or a list of them"),
    ("dict", lambda gs: dict(enumerate(gs)), "grads must be an ndarray or a list of them"),
    ("transposed-shape", lambda gs: [gs[0], np.ascontiguousarray(gs[1].T), gs[2]],
     "grads[1] has shape (6, 4), its parameter has shape (4, 6)"),
    ("flattened-shape", lambda gs: [gs[0], gs[1].reshape(-1), gs[2]],
     "grads[1] has shape (24,), its parameter has shape (4, 6)"),
    ("short-last", lambda gs: [gs[0], gs[1], gs[2][:4].copy()],
     "grads[2] has shape (4,), its parameter has shape (5,)"),
    ("float64-last", lambda gs: [gs[0], gs[1], gs[2].astype(np.float64)],
     "grads[2] has dtype float64, its parameter has dtype float32"),
    ("float16", lambda gs: [gs[0].astype(np.float16), gs[1], gs[2]],
     "grads[0] has dtype float16, its parameter has dtype float32"),
    ("int", lambda gs: [gs[0], gs[1], np.ones(5, np.int32)],
     "grads[2] has dtype int32, its parameter has dtype float32"),
    ("strided", lambda gs: [gs[0], _strided(gs[1]), gs[2]],
     "grads[1] is not C-contiguous; pass np.ascontiguousarray(...)"),
    ("fortran", lambda gs: [gs[0], np.asfortranarray(gs[1]), gs[2]],
     "grads[1] is not C-contiguous"),
    ("python-list", lambda gs: [gs[0], gs[1], gs[2].tolist()],
     "grads[2] must be a numpy.ndarray, got list"),
]


def _strided(g):
    """``g``'s values in a non-contiguous array of the same shape."""
    big = np.zeros((g.shape[0], 2 * g.shape[1]), g.dtype)
    big[:, ::2] = g
    return big[:, ::2]


@pytest.mark.parametrize("opt_name", list(FACTORIES))
@pytest.mark.parametrize("make_bad, message", [c[1:] for c in BAD_GRADS],
                         ids=[c[0] for c in BAD_GRADS])
def test_bad_gradients_change_nothing(opt_name, make_bad, message):
    tw = Twins(FACTORIES[opt_name])
    tw.step_both()  # non-trivial state first
    before = tw.snapshot()
    with pytest.raises(ValueError, match=esc(message)):
        tw.a.step(make_bad(tw.grads()))
    tw.assert_unchanged(before)
    tw.then_works()
    tw.step_both()
    tw.assert_twins()


@pytest.mark.parametrize("bad, message", [
    (np.zeros(15, DT), "grads[0] has shape (15,), its parameter has shape (16,)"),
    (np.zeros((4, 4), DT), "grads[0] has shape (4, 4)"),
    (np.zeros(16, np.float64), "grads[0] has dtype float64"),
    ([np.zeros(16, DT)] * 2, "got 2 gradients for 1 parameters"),
    (np.zeros(32, DT)[::2], "grads[0] is not C-contiguous"),
], ids=["short", "2d", "float64", "two", "strided"])
def test_bad_gradient_for_a_single_array(bad, message):
    p, q = arrays()[0], arrays()[0]
    a, b = fastopt.AMSGrad(p, lr=1e-2), fastopt.AMSGrad(q, lr=1e-2)
    a.step(arrays(1)[0])
    b.step(arrays(1)[0])
    before = snapshot(a, [p])
    with pytest.raises(ValueError, match=esc(message)):
        a.step(bad)
    assert_unchanged(before, a, [p])
    a.step(arrays(2)[0])
    b.step(arrays(2)[0])
    assert p.tobytes() == q.tobytes()
    assert_state_dicts_equal(a.state_dict(), b.state_dict())


def test_bad_gradients_for_flat_params():
    def build(seed):
        flat = fastopt.FlatParams.from_arrays(
            {f"a{j}": a for j, a in enumerate(arrays(seed))}
        )
        return flat, fastopt.Adam(flat, lr=1e-2)

    fa, a = build(0)
    fb, b = build(0)
    for flat, opt in ((fa, a), (fb, b)):
        flat.grad[...] = np.random.default_rng(1).standard_normal(flat.grad.size)
        opt.step()
    before = snapshot(a, [fa.data])
    for bad, message in [
        (fa.grad[:-1].copy(), "the gradient buffer has shape"),
        (fa.grad.astype(np.float64), "the gradient buffer has dtype float64"),
        (np.zeros(2 * fa.grad.size, DT)[::2], "the gradient buffer is not C-contiguous"),
        ([fa.grad], "the gradient buffer must be a numpy.ndarray, got list"),
    ]:
        with pytest.raises(ValueError, match=esc(message)):
            a.step(bad)
        assert_unchanged(before, a, [fa.data])
    a.step()
    b.step()
    assert fa.data.tobytes() == fb.data.tobytes()
    assert_state_dicts_equal(a.state_dict(), b.state_dict())


@pytest.mark.parametrize("bad_value, message", [
    (-0.5, "the lr schedule returned -0.5 at step t'=1: lr must be finite and >= 0"),
    (float("nan"), "the lr schedule returned nan at step t'=1: lr must not be NaN"),
    (math.inf, "lr must be finite and >= 0, got inf"),
    ("0.1", "the lr schedule returned '0.1' at step t'=1: lr must be a real number"),
    (None, "lr must be a real number, got None"),
])
def test_bad_schedule_value_writes_nothing(bad_value, message):
    """The bad rate comes from group 1's schedule: group 0 (stepped first) is untouched."""
    broken = {"on": False}

    def schedule(t):
        return bad_value if broken["on"] else 1e-3 / (1 + t)

    tw = Twins(lambda ps: fastopt.Adam(_groups(ps, lr=schedule), lr=1e-2))
    tw.step_both()
    broken["on"] = True
    before = tw.snapshot()
    with pytest.raises(ValueError, match=esc(message)):
        tw.a.step(tw.grads())
    tw.assert_unchanged(before)
    broken["on"] = False
    tw.then_works()


def test_schedule_that_raises_writes_nothing():
    def schedule(t):
        if t == 1:
            raise RuntimeError("schedule exploded")
        return 1e-2

    ps = arrays()
    opt = fastopt.SGD(ps, lr=schedule)
    opt.step(arrays(1))
    before = snapshot(opt, ps)
    with pytest.raises(RuntimeError, match="schedule exploded"):
        opt.step(arrays(2))
    assert_unchanged(before, opt, ps)


@pytest.mark.parametrize("edit, message", [
    (lambda g: g[1].__setitem__("lr", -0.1),
     "lr must be finite and >= 0, got -0.1 (in parameter group 1)"),
    (lambda g: g[1].__setitem__("lr", float("nan")), "lr must not be NaN (in parameter group 1)"),
    (lambda g: g[0].__setitem__("betas", (1.0, 0.999)),
     "betas[0] must be in [0, 1), got 1.0 (in parameter group 0)"),
    (lambda g: g[1].__setitem__("weight_decay", -1),
     "weight_decay must be finite and >= 0, got -1.0 (in parameter group 1)"),
    (lambda g: g[1].__setitem__("momentum_decay", -1.0),
     "momentum_decay must be finite and >= 0"),
    (lambda g: g[0].__setitem__("beta1", 0.8),
     "Nadam has no hyperparameter 'beta1' (in parameter group 0)"),
], ids=["lr-negative", "lr-nan", "betas", "weight-decay", "momentum-decay", "unknown-name"])
def test_bad_group_edit_between_steps_writes_nothing(edit, message):
    tw = Twins(FACTORIES["nadam-groups"])
    tw.step_both()
    saved = copy.deepcopy(tw.a.param_groups)
    edit(tw.a.param_groups)
    before = tw.snapshot()
    with pytest.raises(ValueError, match=esc(message)):
        tw.a.step(tw.grads())
    tw.assert_unchanged(before)
    tw.a.param_groups[:] = saved
    tw.then_works()


def test_group_edit_that_removes_a_hyperparameter_writes_nothing():
    tw = Twins(FACTORIES["nadam-groups"])
    tw.step_both()
    del tw.a.param_groups[1]["eps"]
    before = tw.snapshot()
    with pytest.raises(ValueError, match="eps"):
        tw.a.step(tw.grads())
    tw.assert_unchanged(before)


def test_group_edit_that_needs_new_state_is_refused():
    tw = Twins(FACTORIES["rmsprop-centered-momentum"])
    tw.step_both()
    tw.a.param_groups[0]["centered"] = False
    before = tw.snapshot()
    with pytest.raises(ValueError, match="make a new optimizer to change that"):
        tw.a.step(tw.grads())
    tw.assert_unchanged(before)
    tw.a.param_groups[0]["centered"] = True
    tw.then_works()


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_skip_nonfinite_changes_nothing_but_the_counter(poison):
    tw = Twins(lambda ps: fastopt.Adam(ps, lr=1e-2, skip_nonfinite=True))
    tw.step_both()
    before = tw.snapshot()
    gs = tw.grads()
    gs[2][-1] = poison  # in the last array: the others must not have been stepped
    tw.a.step(gs)
    assert tw.a.skipped_steps == 1
    before["skipped_steps"] = 1
    before["state"]["skipped_steps"] = 1
    tw.assert_unchanged(before)
    tw.then_works(ignore=("skipped_steps",))


# --------------------------------------------------------------------- load_state_dict


def _nadam(ps):
    return fastopt.Nadam(_groups(ps, lr=1e-3), lr=2e-3, momentum_decay=4e-3)


def _source_state_dict(rule=_nadam, steps=3):
    """A valid state dict for the same layout, from a run that went further (so a load that
    wrongly went through would show)."""
    src = rule(arrays(7))
    for t in range(steps):
        src.step(arrays(200 + t))
    return src.state_dict()


def _set(key, value):
    def edit(sd):
        sd[key] = value(sd) if callable(value) else value
    return edit


def _delete(key):
    def edit(sd):
        del sd[key]
    return edit


BAD_STATE_DICTS = [
    ("adam-dict", lambda sd: sd.clear() or sd.update(_source_state_dict(
        lambda ps: fastopt.Adam(_groups(ps))
    )), "state dict is for 'Adam', this optimizer is Nadam"),
    ("amsgrad-rule-name", _set("rule", "AMSGrad"), "state dict is for 'AMSGrad'"),
    ("missing-rule", _delete("rule"), "state dict has no 'rule'"),
    ("missing-step", _delete("step"), "state dict has no 'step'"),
    ("missing-skipped", _delete("skipped_steps"), "state dict has no 'skipped_steps'"),
    ("missing-state", _delete("state.v"), "missing ['state.v'], unexpected []"),
    ("missing-group-scalar", _delete("group.1.mu_product"),
     "missing ['group.1.mu_product'], unexpected []"),
    ("extra-state", _set("state.v_max", lambda sd: sd["state.v"].copy()),
     "missing [], unexpected ['state.v_max']"),
    ("extra-group", _set("group.2.mu_product", 0.5),
     "missing [], unexpected ['group.2.mu_product']"),
    ("extra-group-scalar", _set("group.0.lr", 0.5), "unexpected ['group.0.lr']"),
    ("wrong-shape", _set("state.m", lambda sd: sd["state.m"][:-16].copy()),
     "state dict 'state.m' must be a float32 array of shape"),
    ("wrong-ndim", _set("state.v", lambda sd: sd["state.v"].reshape(-1, 16)),
     "state dict 'state.v' must be a float32 array of shape"),
    ("wrong-dtype", _set("state.m", lambda sd: sd["state.m"].astype(np.float64)),
     "state dict 'state.m' must be a float32 array of shape"),
    ("not-an-array", _set("state.v", lambda sd: sd["state.v"].tolist()),
     "state dict 'state.v' must be a float32 array"),
    ("step-negative", _set("step", -1), "state dict 'step' must be an int >= 0, got -1"),
    ("step-float", _set("step", 3.0), "state dict 'step' must be an int >= 0, got 3.0"),
    ("step-bool", _set("step", True), "state dict 'step' must be an int >= 0, got True"),
    ("skipped-negative", _set("skipped_steps", -2),
     "state dict 'skipped_steps' must be an int >= 0"),
    ("step-past-int64", _set("step", 2**63), "state dict 'step' must be at most 2**63 - 1"),
    ("mu-product-above-one", _set("group.1.mu_product", 2.0),
     "state dict 'group.1.mu_product': mu_product is a product of momentum coefficients"),
    ("mu-product-negative", _set("group.0.mu_product", -1.0), "it must be in [0, 1]"),
]


@pytest.mark.parametrize("edit, message", [c[1:] for c in BAD_STATE_DICTS],
                         ids=[c[0] for c in BAD_STATE_DICTS])
def test_bad_state_dict_changes_nothing(edit, message):
    tw = Twins(_nadam)
    tw.step_both()
    sd = _source_state_dict()
    edit(sd)
    before = tw.snapshot()
    with pytest.raises(ValueError, match=esc(message)):
        tw.a.load_state_dict(sd)
    tw.assert_unchanged(before)
    tw.then_works()


def test_good_state_dict_round_trip_through_npz(tmp_path):
    """The positive control for the tests above: a saved and reloaded state dict (0-d arrays
    for the scalars) loads, and the run continues bit-identically."""
    ps = arrays(7)
    src = _nadam(ps)
    for t in range(3):
        src.step(arrays(200 + t))
    np.savez(tmp_path / "ckpt.npz", **src.state_dict())
    qs = [p.copy() for p in ps]
    dst = _nadam(qs)
    dst.load_state_dict(dict(np.load(tmp_path / "ckpt.npz")))
    assert dst.step_count == 3
    src.step(arrays(300))
    dst.step(arrays(300))
    for x, y in zip(ps, qs, strict=True):
        assert x.tobytes() == y.tobytes()
    assert_state_dicts_equal(src.state_dict(), dst.state_dict())


@pytest.mark.parametrize("value", [None, "abc"])
def test_bad_group_scalar_in_state_dict(value):
    opt = _nadam(arrays())
    sd = _source_state_dict()
    sd["group.1.mu_product"] = value
    with pytest.raises(ValueError, match=esc("group.1.mu_product")):
        opt.load_state_dict(sd)


# --------------------------------------------------------------------- functional layer


def _adam_arrays(n=16, dtype=DT):
    rng = np.random.default_rng(3)
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    m = (0.1 * rng.standard_normal(n)).astype(dtype)
    v = (0.1 * rng.standard_normal(n) ** 2).astype(dtype)
    return p, g, m, v


FUNCTIONAL_BAD = [
    # (id, edit (p, g, m, v, kwargs) -> (p, g, m, v, kwargs), exception, message)
    ("g-shape", lambda p, g, m, v, kw: (p, g[:-1].copy(), m, v, kw), ValueError,
     "g has shape (15,), its parameter has shape (16,)"),
    ("g-2d", lambda p, g, m, v, kw: (p, g.reshape(4, 4), m, v, kw), ValueError,
     "g has shape (4, 4)"),
    ("g-dtype", lambda p, g, m, v, kw: (p, g.astype(np.float64), m, v, kw), ValueError,
     "g has dtype float64, its parameter has dtype float32"),
    ("g-strided", lambda p, g, m, v, kw: (p, np.repeat(g, 2)[::2], m, v, kw), ValueError,
     "g is not C-contiguous"),
    ("m-shape", lambda p, g, m, v, kw: (p, g, m.reshape(4, 4), v, kw), ValueError,
     "state array 0 has shape (4, 4) and dtype float32; p has shape (16,) and dtype float32"),
    ("v-dtype", lambda p, g, m, v, kw: (p, g, m, v.astype(np.float64), kw), ValueError,
     "state array 1 has shape (16,) and dtype float64"),
    ("v-strided", lambda p, g, m, v, kw: (p, g, m, np.repeat(v, 2)[::2], kw), ValueError,
     "state array 1 is not C-contiguous"),
    ("p-read-only", lambda p, g, m, v, kw: (_read_only(p), g, m, v, kw), ValueError,
     "p is read-only; fastopt updates it in place"),
    ("m-read-only", lambda p, g, m, v, kw: (p, g, _read_only(m), v, kw), ValueError,
     "state array 0 is read-only"),
    ("p-int", lambda p, g, m, v, kw: (p.astype(np.int32), g, m, v, kw), TypeError,
     "p has dtype int32; fastopt needs float32 or float64"),
    # 16-bit parameters take float32 or bfloat16 state (docs/precision.md), not float64
    ("p-float16", lambda p, g, m, v, kw: (p.astype(np.float16), g.astype(np.float16),
                                         m.astype(np.float64), v.astype(np.float64), kw),
     TypeError, "state arrays must all be float32 or all ml_dtypes.bfloat16"),
    ("p-strided", lambda p, g, m, v, kw: (np.repeat(p, 2)[::2], g, m, v, kw), ValueError,
     "p is not C-contiguous"),
    ("m-is-p", lambda p, g, m, v, kw: (p, g, p, v, kw), ValueError,
     "state array 0 overlaps p or g"),
    ("v-is-g", lambda p, g, m, v, kw: (p, g, m, g, kw), ValueError,
     "state array 1 overlaps p or g"),
    ("step-float", lambda p, g, m, v, kw: (p, g, m, v, {**kw, "step": 1.5}), ValueError,
     "step must be an int >= 1"),
    ("step-bool", lambda p, g, m, v, kw: (p, g, m, v, {**kw, "step": True}), ValueError,
     "step must be an int >= 1"),
    ("lr-negative", lambda p, g, m, v, kw: (p, g, m, v, {**kw, "lr": -1e-3}), ValueError,
     "lr must be finite and >= 0"),
    ("lr-nan", lambda p, g, m, v, kw: (p, g, m, v, {**kw, "lr": float("nan")}), ValueError,
     "lr must not be NaN"),
    ("betas", lambda p, g, m, v, kw: (p, g, m, v, {**kw, "betas": (0.9, 1.0)}), ValueError,
     "betas[1] must be in [0, 1), got 1.0"),
    ("eps", lambda p, g, m, v, kw: (p, g, m, v, {**kw, "eps": -1.0}), ValueError,
     "eps must be finite and >= 0"),
    ("weight-decay", lambda p, g, m, v, kw: (p, g, m, v, {**kw, "weight_decay": -0.1}),
     ValueError, "weight_decay must be finite and >= 0"),
    ("grad-scale", lambda p, g, m, v, kw: (p, g, m, v, {**kw, "grad_scale": float("nan")}),
     ValueError, "grad_scale must not be NaN"),
    ("maximize", lambda p, g, m, v, kw: (p, g, m, v, {**kw, "maximize": "yes"}), ValueError,
     "maximize must be True or False"),
    ("noise", lambda p, g, m, v, kw: (p, g, m, v, {**kw, "noise": 0.1}), ValueError,
     "noise must be a fastopt.GradientNoise or None, got 0.1"),
]


@pytest.mark.parametrize("edit, exc, message", [c[1:] for c in FUNCTIONAL_BAD],
                         ids=[c[0] for c in FUNCTIONAL_BAD])
def test_functional_adam_refuses_before_writing(edit, exc, message):
    p, g, m, v = _adam_arrays()
    twin = [a.copy() for a in (p, g, m, v)]
    kw = {"step": 2, "lr": 1e-2}
    bp, bg, bm, bv, bkw = edit(p, g, m, v, kw)
    kept = [a.copy() for a in (bp, bg, bm, bv)]
    with pytest.raises(exc, match=esc(message)):
        F.adam(bp, bg, bm, bv, **bkw)
    for name, a, k in zip("pgmv", (bp, bg, bm, bv), kept, strict=True):
        assert_same_bits(a, k, name)
    for name, a, k in zip("pgmv", (p, g, m, v), twin, strict=True):
        assert_same_bits(a, k, name)
    # the caller's own arrays still step exactly like untouched copies
    p.flags.writeable = m.flags.writeable = True
    F.adam(p, g, m, v, **kw)
    F.adam(*twin, **kw)
    for name, a, k in zip("pgmv", (p, g, m, v), twin, strict=True):
        assert_same_bits(a, k, name)


def test_functional_other_rules_refuse_before_writing():
    p, g, m, v = _adam_arrays()
    kept = [a.copy() for a in (p, g, m, v)]
    cases = [
        (lambda: F.sgd(p, g[:8].copy(), 1, 0.1), "g has shape (8,)"),
        (lambda: F.momentum(p, g, m, 1, 0.1, momentum=-0.9), "momentum must be finite"),
        (lambda: F.nesterov(p, g, m.astype(np.float64), 1, 0.1), "state array 0 has shape"),
        (lambda: F.adagrad(p, g, m, 1, 0.1, eps_inside_sqrt=1), "eps_inside_sqrt must be True"),
        (lambda: F.rmsprop(p, g, v, 1, 0.1, alpha=1.0), "alpha must be in [0, 1)"),
        (lambda: F.rmsprop(p, g, v, 1, 0.1, centered=True),
         "rmsprop(centered=True) needs the grad_avg state array"),
        (lambda: F.rmsprop(p, g, v, 1, 0.1, momentum=0.9),
         "rmsprop(momentum > 0) needs the momentum_buffer state array"),
        (lambda: F.rmsprop(p, g, v, 1, 0.1, centered=True, momentum=0.9, momentum_buffer=m),
         "rmsprop(centered=True) needs the grad_avg state array"),
        (lambda: F.nadam(p, g, m, v, 1, momentum_decay=-1.0), "momentum_decay must be finite"),
        (lambda: F.nadam(p, g, m, v[:8].copy(), 1), "state array 1 has shape (8,)"),
        (lambda: F.amsgrad(p, g, m, v, g, 1), "state array 2 overlaps p or g"),
        (lambda: F.amsgrad(p, g, m, v, v.copy(), 1, bias_correction="yes"),
         "bias_correction must be True or False"),
        (lambda: F.adam(p, g, m, v, 1, bias_correction=0), "bias_correction must be True"),
        (lambda: F.adam(p, g, m, v, 1, eps_hat=1), "eps_hat must be True or False"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=esc(message)):
            call()
        for name, a, k in zip("pgmv", (p, g, m, v), kept, strict=True):
            assert_same_bits(a, k, name)


@pytest.mark.parametrize("step", [0, -1])
@pytest.mark.parametrize("call", [
    lambda p, g, m, v, t: F.adam(p, g, m, v, t),
    lambda p, g, m, v, t: F.nadam(p, g, m, v, t),
    lambda p, g, m, v, t: F.amsgrad(p, g, m, v, v.copy(), t, bias_correction=True),
], ids=["adam", "nadam", "amsgrad"])
def test_functional_bad_step_is_named(call, step):
    with pytest.raises(ValueError, match=esc(f"step must be an int >= 1 (1 on the first step), "
                                             f"got {step}")):
        call(*_adam_arrays(), step)


def test_functional_state_arrays_must_not_alias_each_other():
    p, g, m, _ = _adam_arrays()
    kept = p.copy()
    with pytest.raises(ValueError, match="overlap"):
        F.adam(p, g, m, m, 1)
    assert_same_bits(p, kept, "p")


def test_state_dict_of_another_model_with_the_same_padded_layout_is_refused():
    a = [np.ones(16, np.float32), np.ones((4, 6), np.float32), np.ones(6, np.float32)]
    b = [np.ones(16, np.float32), np.ones((4, 6), np.float32), np.ones(5, np.float32)]
    sd = fastopt.Adam(a).state_dict()
    opt = fastopt.Adam(b)
    before = opt.state_dict()
    with pytest.raises(ValueError, match="param_sizes"):
        opt.load_state_dict(sd)
    after = opt.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_state_dict_with_an_unknown_key_is_refused():
    opt = fastopt.SGD(np.ones(3))
    sd = opt.state_dict()
    sd["foo"] = 1
    with pytest.raises(ValueError, match="unexpected.*foo"):
        opt.load_state_dict(sd)


@pytest.mark.parametrize("params", [5, np.float32(1.0), None])
def test_params_that_are_not_arrays_say_what_is_accepted(params):
    with pytest.raises(TypeError, match="params must be an ndarray"):
        fastopt.SGD(params)


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.complex64])
def test_global_norm_refuses_non_float_arrays(dtype):
    with pytest.raises(TypeError, match=r"grads\[1\] has dtype"):
        F.global_norm([np.ones(3, np.float32), np.ones(3, dtype)])


# ------------------------------------------------------ memory shared with the parameters


def _overlapping_pair(n=16):
    """A parameter and a gradient of n values, the gradient one value before it in memory."""
    buf = np.random.default_rng(5).standard_normal(n + 1).astype(DT)
    return buf[1:], buf[:-1]


@pytest.mark.parametrize("case", ["shifted", "another-params", "single-array"])
def test_gradients_over_parameters_are_refused_and_change_nothing(case):
    """A gradient sharing memory with a parameter (other than being it) would be read after
    the step overwrote it: wrong results, so refused before anything is written."""
    p, shifted = _overlapping_pair()
    q = np.ones(8, DT)
    params = [p] if case == "single-array" else [p, q]
    twins = [x.copy() for x in params]
    opt, ref = fastopt.Adam(params, lr=0.1), fastopt.Adam(twins, lr=0.1)
    good = [np.full(x.shape, 0.5, DT) for x in params]
    bad = {"shifted": [shifted, good[1]] if len(params) > 1 else [shifted],
           "another-params": [good[0], p[:8]],
           "single-array": shifted}[case]
    before = snapshot(opt, params)
    with pytest.raises(ValueError, match=r"grads\[\d\] overlaps params\[0\]"):
        opt.step(bad)
    assert_unchanged(before, opt, params)
    opt.step(good)
    ref.step([g.copy() for g in good])
    for x, y in zip(params, twins, strict=True):
        assert_same_bits(x, y, "params")


def test_a_gradient_that_is_its_parameter_is_accepted():
    p, q = arrays()[0], np.ones(8, DT)
    p2, q2 = p.copy(), q.copy()
    fastopt.SGD([p, q], lr=0.1).step([p, q])
    fastopt.SGD([p2, q2], lr=0.1).step([p2.copy(), q2.copy()])
    assert_same_bits(p, p2, "p")
    assert_same_bits(q, q2, "q")


def test_a_gradient_buffer_over_the_flat_parameters_is_refused():
    flat = fastopt.FlatParams.from_arrays({"a": arrays()[0], "b": arrays()[1]})
    raw = flat.data.base  # the aligned buffer holds a few spare bytes after the data
    start = flat.data.ctypes.data - raw.ctypes.data
    assert raw.nbytes >= start + flat.data.nbytes + 4
    shifted = np.frombuffer(raw, DT, flat.data.size, start + 4)
    opt = fastopt.Adam(flat, lr=0.1)
    kept = flat.data.copy()
    with pytest.raises(ValueError, match="the gradient buffer overlaps the parameters"):
        opt.step(shifted)
    assert_same_bits(flat.data, kept, "flat.data")
    assert opt.step_count == 0


def test_a_step_changes_every_group_or_none():
    """A group whose constants cannot be computed stops the step before any group moved."""
    tw = Twins(FACTORIES["nadam-groups"])
    tw.step_both()
    real = tw.a._constants

    def failing(t, lr, group, state):
        if group is tw.a.param_groups[1]:
            raise ZeroDivisionError("group 1")
        return real(t, lr, group, state)

    tw.a._constants = failing
    before = tw.snapshot()
    with pytest.raises(ZeroDivisionError):
        tw.a.step(tw.grads())
    tw.assert_unchanged(before)
    del tw.a._constants
    tw.then_works()


def test_removing_a_group_between_steps_is_refused():
    tw = Twins(FACTORIES["nadam-groups"])
    tw.step_both()
    removed = tw.a.param_groups.pop()
    before = tw.snapshot()
    with pytest.raises(ValueError, match="make a new optimizer to add or remove groups"):
        tw.a.step(tw.grads())
    tw.assert_unchanged(before)
    tw.a.param_groups.append(removed)
    tw.then_works()


def test_one_gradient_for_two_parameters_is_refused_even_when_one_is_empty():
    opt = fastopt.SGD([np.ones(5, DT), np.zeros(0, DT)], lr=0.1)
    with pytest.raises(ValueError, match="got 1 gradients for 2 parameters"):
        opt.step(np.ones(5, DT))
    opt.step([np.ones(5, DT), np.zeros(0, DT)])
    assert opt.step_count == 1


# --------------------------------------------------------- functional lists, checked whole


def _lists(n=3):
    ps = [arrays(j)[0] for j in range(n)]
    return ps, [np.full(16, 0.25, DT) for _ in ps], [np.zeros(16, DT) for _ in ps], \
        [np.full(16, 0.01, DT) for _ in ps]


@pytest.mark.parametrize("case, message", [
    ("same-p-twice", "p[0] and p[1] share memory"),
    ("v-over-another-p", "p[0] and state array 1[2] share memory"),
    ("g-over-another-p", "p[0] and g[1] share memory"),
    ("g-over-its-p", "p[1] and g[1] share memory"),
    ("offsets-short", "one int per array (3)"),
    ("offset-negative", "noise_offset[1] must be an int >= 0"),
    ("offset-none", "noise_offset[2] must be an int >= 0"),
    ("offset-past-int64", "that leaves the array's positions below 2**63, got 9223372036854775800"),
])
def test_functional_lists_are_checked_across_entries_before_writing(case, message):
    ps, gs, ms, vs = _lists()
    kw = {"noise_offset": 0}
    if case == "same-p-twice":
        ps[1] = ps[0]
    elif case == "v-over-another-p":
        vs[2] = ps[0]
    elif case == "g-over-another-p":
        gs[1] = ps[0]
    elif case == "g-over-its-p":
        buf = np.zeros(17, DT)
        ps[1], gs[1] = buf[1:], buf[:-1]
    else:
        kw["noise_offset"] = {"offsets-short": [0, 16], "offset-negative": [0, -1, 32],
                              "offset-none": [0, 16, None],
                              "offset-past-int64": [0, 16, 2**63 - 8]}[case]
    kept = [a.copy() for a in (*ps, *gs, *ms, *vs)]
    with pytest.raises(ValueError, match=esc(message)):
        F.adam(ps, gs, ms, vs, 1, noise=fastopt.GradientNoise(0.01), **kw)
    for a, k in zip((*ps, *gs, *ms, *vs), kept, strict=True):
        assert_same_bits(a, k, "array")


def test_functional_lists_may_share_a_gradient_and_pass_a_parameter_as_its_gradient():
    ps, gs, ms, vs = _lists()
    twin = [[a.copy() for a in x] for x in (ps, gs, ms, vs)]
    gs[1] = gs[0]  # one gradient read by two entries
    twin[1][1] = twin[1][0].copy()
    gs[2] = ps[2]  # a parameter as its own gradient
    twin[1][2] = twin[0][2].copy()
    F.adam(ps, gs, ms, vs, 1)
    F.adam(*twin, 1)
    for a, b in zip(ps, twin[0], strict=True):
        assert_same_bits(a, b, "p")


def test_functional_nadam_refuses_a_mu_product_outside_its_range():
    p, g, m, v = _adam_arrays()
    kept = p.copy()
    for bad in (float("nan"), -1e-300, 1.5):
        with pytest.raises(ValueError, match=esc("mu_product is a product")):
            F.nadam(p, g, m, v, 1, momentum_decay=4e-3, mu_product=bad)
    assert_same_bits(p, kept, "p")


@pytest.mark.parametrize("call, exc, message", [
    (lambda: fastopt.SGD([{"params": None}]), ValueError,
     "parameter group 0's 'params' must be an array, a list of arrays or a FlatParams"),
    (lambda: fastopt.FlatParams({"a": 2.5}), ValueError,
     "FlatParams['a'] has an invalid shape 2.5"),
    (lambda: fastopt.FlatParams([("a", 3)]), TypeError,
     "FlatParams takes a mapping of names to shapes"),
    (lambda: fastopt.FlatParams.from_arrays({"a": np.ones(3) + 1j}), TypeError,
     "'a' has dtype complex128; parameters are real numbers"),
    (lambda: fastopt.SGD(np.ones(3, DT)).load_state_dict(None), ValueError,
     "load_state_dict takes the dict state_dict() returned, got NoneType"),
    (lambda: F.adam(*_adam_arrays(), 1, lr="x"), ValueError, "lr must be a real number"),
], ids=["group-params-none", "shape-float", "shapes-list", "complex", "state-none", "lr-str"])
def test_malformed_arguments_say_what_is_expected(call, exc, message):
    with pytest.raises(exc, match=esc(message)):
        call()


def test_data_helpers_name_their_bad_arguments():
    with pytest.raises(ValueError, match="seed must be None, an int >= 0"):
        fastopt.data.minibatches(5, 2, seed=-1)
    with pytest.raises(ValueError, match="seed must be None"):
        fastopt.data.minibatches(5, 2, seed=1.5)
    with pytest.raises(TypeError, match="load_digits: dtype must be a float dtype"):
        fastopt.datasets.load_digits(np.int32)

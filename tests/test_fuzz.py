"""A property-based fuzzer of fastopt's public entry points (hypothesis).

The contract, for every generated call: a refused call raises TypeError or ValueError and
changes nothing (every array byte for byte, the object's state), after which the object
and a twin that never saw the call step on bit-identically; an accepted call computes the
documented result (the independent NumPy reference of ``reference.py``).

The test command runs a bounded, derandomised run (profile ``fuzz-ci``: the same cases
every run). A longer, random run:

    python -m pytest tests/test_fuzz.py --hypothesis-profile=fuzz-long

(``fuzz-long``: 2,000 cases per entry point; ``--hypothesis-seed=N`` repeats one.)
"""

import math

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from layout import layout_offsets
from reference import (
    RefOptimizer,
    bshape,
    ref_backward,
    ref_backward_eval,
    ref_forward,
    ref_running,
    ref_stats,
)
from test_reference import assert_close

import fastopt
import fastopt.batchnorm as bn
import fastopt.functional as F

REFUSED = (TypeError, ValueError)

CLASSES = {"sgd": fastopt.SGD, "momentum": fastopt.Momentum, "nesterov": fastopt.Nesterov,
           "adagrad": fastopt.AdaGrad, "rmsprop": fastopt.RMSprop, "adam": fastopt.Adam,
           "nadam": fastopt.Nadam, "amsgrad": fastopt.AMSGrad}


def snapshot(*objs):
    """Bytes of every array among ``objs`` (lists and dicts walked), for before/after."""
    out = []
    for o in objs:
        if isinstance(o, np.ndarray):
            out.append((o.shape, o.dtype.str, o.tobytes()))
        elif isinstance(o, (list, tuple)):
            out.append(snapshot(*o))
        elif isinstance(o, dict):
            out.append(snapshot(*(o[k] for k in sorted(o))))
        else:
            out.append(repr(o))
    return out


# ------------------------------------------------------------------------- strategies
dtypes = st.sampled_from([np.float32, np.float64])
shapes = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)
finite = st.floats(-3.0, 3.0, allow_nan=False, width=32)


@st.composite
def values(draw, shape, dtype):
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 10.0]))
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def spoil(draw, a: np.ndarray, role: str, half_ok: bool = False):
    """``a`` as given, or made wrong one way (each a documented refusal), or a subclass
    view (accepted: its memory is stepped). ``half_ok``: a float16 copy is a valid call
    (the functional layer's 16-bit parameters and gradients beside float32 ones)."""
    how = draw(st.sampled_from(["ok"] * 8 + ["int", "f16", "noncontig", "readonly", "shape",
                                              "list", "subclass"]))
    if how == "int":
        return a.astype(np.int64), False
    if how == "f16":
        return a.astype(np.float16), half_ok
    if how == "noncontig":  # every other value of a bigger buffer
        big = np.zeros(a.shape + (2,), a.dtype)
        big[..., 0] = a
        return big[..., 0], a.size == 1  # one value: contiguous whatever its stride
    if how == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b, role == "grad"  # a read-only gradient is valid (only read)
    if how == "shape":
        return np.zeros(a.shape + (2,), a.dtype), False
    if how == "list":
        return a.tolist(), False
    if how == "subclass":
        return a.view(Sub), True
    return a, True


class Sub(np.ndarray):
    """An ndarray subclass, as a user's (np.memmap is one too)."""


#: Valid values of each hyperparameter, and values each must refuse.
GOOD = {
    "lr": st.floats(0, 0.5), "momentum": st.floats(0, 0.99), "eps": st.floats(1e-8, 1e-2),
    "betas": st.tuples(st.floats(0, 0.99), st.floats(0, 0.999)), "alpha": st.floats(0.1, 0.99),
    "weight_decay": st.floats(0, 0.1), "decoupled_weight_decay": st.booleans(),
    "maximize": st.booleans(), "centered": st.booleans(), "eps_inside_sqrt": st.booleans(),
    "bias_correction": st.booleans(), "eps_hat": st.booleans(),
    "momentum_decay": st.sampled_from([None, 4e-3]),
}
BAD = {
    "lr": [-0.1, math.nan, math.inf, "0.1"], "momentum": [-0.5, math.nan],
    "eps": [-1e-8, math.inf], "betas": [(1.0, 0.9), (0.9,), "0.9", (math.nan, 0.9)],
    "alpha": [1.0, -0.1], "weight_decay": [-1.0, math.nan], "decoupled_weight_decay": [1],
    "maximize": ["yes"], "centered": [2], "eps_inside_sqrt": [None], "bias_correction": [0],
    "eps_hat": [1.0], "momentum_decay": [-1.0],
}


def hyperparameters(draw, names, fault: bool):
    """Some of ``names`` with valid values; with ``fault``, one of them made invalid."""
    hp = {k: draw(GOOD[k]) for k in names if draw(st.booleans())}
    if fault:
        k = draw(st.sampled_from(names))
        hp[k] = draw(st.sampled_from(BAD[k]))
    return hp


RULE_HP = {"sgd": ["lr"], "momentum": ["lr", "momentum"], "nesterov": ["lr", "momentum"],
           "adagrad": ["lr", "eps", "eps_inside_sqrt"],
           "rmsprop": ["lr", "alpha", "eps", "eps_inside_sqrt", "centered", "momentum"],
           "adam": ["lr", "betas", "eps", "bias_correction", "eps_hat"],
           "nadam": ["lr", "betas", "eps", "momentum_decay"],
           "amsgrad": ["lr", "betas", "eps", "bias_correction"]}
COMMON = ["weight_decay", "decoupled_weight_decay", "maximize"]


def close_step(actual, expected, before, dtype, noisy=False):
    """A step's result against the float64 reference, within the rounding of the step's
    terms (w and its change: where they nearly cancel, a bound relative to the result
    would be too tight). float32 arithmetic inside a rule (e.g. centered RMSprop's
    E − ḡ²) costs a few more ulp than one rounding: 5e-5 relative."""
    rtol, unit = {(np.float32, False): (5e-5, 1e-6), (np.float32, True): (5e-5, 2e-6),
                  (np.float64, False): (1e-10, 1e-12), (np.float64, True): (2e-6, 2e-6)}[
                      (dtype, noisy)]
    terms = max(np.max(np.abs(before)), np.max(np.abs(expected - before)), 1e-30)
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol,
                               atol=unit * terms)


def _step_compare(opt, twin, ref, params, twin_params, grads, dtype, noisy, loose=False):
    """One step of the optimizer, its twin and the reference: the twin bit for bit, the
    reference as :func:`close_step` (``loose``: not compared with the reference: the rule
    itself loses float32 precision there; ``test_reference.py`` checks it on designed
    problems)."""
    before = [r.copy() for r in ref.params]
    opt.step(grads)
    twin.step([g.copy() for g in grads])
    ref.step([np.asarray(g, np.float64) for g in grads])
    for a, b, r, w in zip(params, twin_params, ref.params, before, strict=True):
        assert np.array_equal(np.asarray(a), b, equal_nan=True)  # the twin: bit for bit
        if loose:  # float32 centered RMSprop: E − ḡ² cancels (as in torch); finite, twin
            assert np.all(np.isfinite(a)) or not np.all(np.isfinite(r))
            continue
        close_step(a, r, w, dtype, noisy)


# ---------------------------------------------------------------------- the optimizers
@given(data=st.data(), rule=st.sampled_from(list(CLASSES)), dtype=dtypes,
       shp=st.lists(shapes, min_size=1, max_size=3))
def test_optimizers_refuse_cleanly_and_step_as_the_reference(data, rule, dtype, shp):
    draw = data.draw
    fault = draw(st.sampled_from(["none"] * 4 + ["hp", "param", "twice", "clip"]))
    params = [draw(values(s, dtype)) for s in shp]
    if fault == "param":
        j = draw(st.integers(0, len(params) - 1))
        params[j], _ = spoil(draw, params[j], "param")
    if fault == "twice" and len(params) > 1:
        params[1] = params[0]  # the same array twice: refused
    hp = hyperparameters(draw, RULE_HP[rule] + COMMON, fault == "hp")
    options = {}
    if draw(st.booleans()) or fault == "clip":
        options["clip_norm"] = -1.0 if fault == "clip" else draw(st.floats(0.1, 10))
    if draw(st.booleans()):
        options["grad_noise"] = fastopt.GradientNoise(0.01, seed=draw(st.integers(0, 99)))
    before = snapshot(params)
    try:
        opt = CLASSES[rule](params, **hp, **options)
    except REFUSED as exc:
        event(f"optimizer refused: {type(exc).__name__}")
        assert snapshot(params) == before
        return
    event("optimizer built")
    if any(np.asarray(p).dtype.itemsize == 2 for p in params):
        # a float16 copy of the only array is a valid optimizer over 16-bit parameters,
        # whose steps and refusals tests/test_precision.py and the storage fuzz below cover
        event("16-bit parameters accepted")
        assert all(np.asarray(p).dtype == np.float16 for p in params)
        return
    params = [np.asarray(p) for p in params]  # subclasses: the memory stepped
    twin_params = [p.copy() for p in params]
    twin = CLASSES[rule](twin_params, **hp, **options)
    ref = RefOptimizer(rule, [p.copy() for p in params], clip_norm=options.get("clip_norm"),
                       grad_noise=options.get("grad_noise"),
                       noise_offsets=layout_offsets(params, dtype), **hp)
    noisy = "grad_noise" in options
    for _ in range(draw(st.integers(1, 3))):
        grads = [draw(values(p.shape, dtype)) for p in params]
        if draw(st.booleans()):  # a bad call first
            bad = list(grads)
            j = draw(st.integers(0, len(bad) - 1))
            bad[j], ok = spoil(draw, bad[j], "grad")
            if draw(st.booleans()):
                bad[j], ok = params[j], True  # a gradient may be its parameter itself
            if draw(st.booleans()):
                bad, ok = bad[:-1] or [1.0], False
            state = snapshot(params, bad, opt.state_dict())
            copies = [np.array(g, dtype=dtype) for g in bad]  # as they were before the call
            try:
                opt.step(bad if len(bad) > 1 or draw(st.booleans()) else bad[0])
            except REFUSED:
                event("step refused")
                assert snapshot(params, bad, opt.state_dict()) == state
            else:
                event("odd step accepted")
                assert ok, "a call the contract refuses was accepted"
                twin.step(copies)
                ref.step([c.astype(np.float64) for c in copies])
        loose = rule == "rmsprop" and dtype == np.float32 and hp.get("centered", False)
        _step_compare(opt, twin, ref, params, twin_params, grads, dtype, noisy, loose)


# ------------------------------------------------------------------ the functional layer
@given(data=st.data(), dtype=dtypes, shape=shapes)
def test_functional_adam_refuses_cleanly_and_matches_the_reference(data, dtype, shape):
    draw = data.draw
    p, g = draw(values(shape, dtype)), draw(values(shape, dtype))
    m, v = np.zeros(shape, dtype), np.zeros(shape, dtype)
    arrays = {"p": p, "g": g, "m": m, "v": v}
    name = draw(st.sampled_from(["none", "p", "g", "m", "v", "alias"]))
    call = dict(arrays)
    valid = True
    if name == "alias":
        call[draw(st.sampled_from(["m", "v"]))] = p  # state over the parameter
        valid = False
    elif name != "none":  # float32 p or g may be float16 (docs/precision.md)
        call[name], valid = spoil(draw, arrays[name], "grad" if name == "g" else "param",
                                  half_ok=dtype == np.float32 and name in ("p", "g"))
    hp = hyperparameters(draw, ["lr", "betas", "eps", "weight_decay", "maximize"],
                         draw(st.integers(0, 4)) == 0)
    step = draw(st.sampled_from([1, 2, 7, 0, -1, 2.0]))
    before = snapshot(arrays, call)
    p0, g0 = p.copy(), g.copy()
    try:
        F.adam(call["p"], call["g"], call["m"], call["v"], step, **hp)
    except REFUSED:
        event("functional refused")
        assert snapshot(arrays, call) == before
        return
    event("functional accepted")
    assert valid and step in (1, 2, 7)
    ref = RefOptimizer("adam", [p0], **hp)
    ref.t = step - 1  # zero moments at step t: the reference's first step, numbered t
    ref.step([g0.astype(np.float64)])
    if np.asarray(call[name] if name in ("p", "g") else p).dtype == np.float16:
        # 16-bit p or g: within a float16 rounding of the value and of the step
        got = np.asarray(call["p"], np.float64)
        want = ref.params[0]
        lr = hp.get("lr", 1e-3)
        assert np.all(np.abs(got - want) <= 2.0**-10 * np.abs(want) + 2.0**-14 + 0.02 * lr)
        return
    close_step(call["p"], ref.params[0], p0.astype(np.float64), dtype)


# ----------------------------------------------------------------------- BatchNorm
@given(data=st.data(), dtype=dtypes, n=st.integers(1, 5), c=st.integers(1, 4),
       spatial=st.lists(st.integers(1, 3), max_size=2), axis=st.sampled_from([1, -1]))
def test_batchnorm_refuses_cleanly_and_matches_the_reference(data, dtype, n, c, spatial,
                                                            axis):
    draw = data.draw
    shape = (n, c, *spatial) if axis == 1 else (n, *spatial, c)
    x = draw(values(shape, dtype))
    affine = draw(st.booleans())
    gamma = draw(values((c,), dtype)) if affine else None
    beta = draw(values((c,), dtype)) if affine else None
    track = draw(st.booleans())
    rm = np.zeros(c, dtype) if track else None
    rv = np.ones(c, dtype) if track else None
    training = draw(st.sampled_from([True, True, False]))
    kw = {"eps": draw(st.sampled_from([1e-5, 1e-3])),
          "momentum": draw(st.sampled_from([0.1, 0.5, None]))}
    nbt = np.zeros((), np.int64) if kw["momentum"] is None else None
    fault = draw(st.sampled_from(["none"] * 8 + ["gamma-shape", "rm-alias", "out-x", "nbt-x",
                                                 "rm-stride0", "training", "eps", "momentum"]))
    out = None
    if fault in ("training", "eps", "momentum"):
        training, kw["eps"], kw["momentum"] = {"training": (1, kw["eps"], kw["momentum"]),
                                               "eps": (training, -1.0, kw["momentum"]),
                                               "momentum": (training, kw["eps"], 2.0)}[fault]
    elif fault == "gamma-shape" and affine:
        gamma = np.ones(c + 1, dtype)
    elif fault == "rm-alias" and track:
        rv = rm
    elif fault == "out-x":
        out = x
    elif fault == "nbt-x" and nbt is not None and dtype == np.float64:
        nbt = x.reshape(-1)[:1].view(np.int64)
    elif fault == "rm-stride0" and track and c > 1:
        rm = np.lib.stride_tricks.as_strided(np.zeros(1, dtype), (c,), (0,), writeable=True)
    arrays = [x, gamma, beta, rm, rv, nbt]
    before = snapshot(arrays)
    x0 = x.copy()
    try:
        y, cache = bn.forward(x, gamma, beta, training=training, running_mean=rm,
                              running_var=rv, axis=axis, out=out, num_batches_tracked=nbt,
                              **kw)
    except REFUSED:
        event("forward refused")
        assert snapshot(arrays) == before
        return
    event("forward accepted")
    assert training in (True, False) and kw["eps"] > 0
    g64 = np.ones(c) if gamma is None else gamma.astype(np.float64)
    b64 = np.zeros(c) if beta is None else beta.astype(np.float64)
    rtol, unit = (1e-5, 1e-6) if dtype == np.float32 else (1e-9, 1e-13)

    def close_y(expected, var):
        """y is computed in x's dtype: x − μ rounds at x's scale, then is multiplied by
        α/√(σ² + ε), which a small variance makes large."""
        terms = np.max(np.abs(x0)) * np.max(np.abs(g64) / np.sqrt(var + kw["eps"]))
        np.testing.assert_allclose(y.astype(np.float64), expected, rtol=rtol,
                                   atol=unit * (terms + np.max(np.abs(b64))))

    if training:
        assert x.size // c > 1
        close_y(ref_forward(x0, g64, b64, axis, kw["eps"]), ref_stats(x0, axis)[1])
        if track:
            m = 1.0 if kw["momentum"] is None else kw["momentum"]  # first update: 1/1
            er, ev = ref_running(np.zeros(c), np.ones(c), x0, axis, m)
            assert_close(rm, er, dtype)
            assert_close(rv, ev, dtype)
    else:
        close_y(ref_forward(x0, g64, b64, axis, kw["eps"], rm.astype(np.float64),
                            rv.astype(np.float64)), rv.astype(np.float64))
    if cache.x is None:  # out=x in inference: backward cannot run
        with pytest.raises(ValueError, match="cannot run"):
            bn.backward(np.ones_like(x), cache)
        return
    dy = draw(values(shape, dtype))
    tamper = draw(st.sampled_from(["none"] * 4 + ["channels", "spatial", "training"]))
    use = {"channels": cache._replace(channels=c + 1), "spatial": cache._replace(spatial=2),
           "training": cache._replace(training=not cache.training)}.get(tamper, cache)
    dx = np.full(shape, 7.0, dtype)
    kept = snapshot(dx, dy, x)
    try:
        got, dg, db = bn.backward(dy, use, out=dx)
    except REFUSED:
        assert snapshot(dx, dy, x) == kept
        return
    if tamper != "none":  # accepted: consistent with its x (the cache does not record the
        return  # axis, so (N, S, C) may pass for (N, C, S)); memory-safe, not compared
    if training:
        ex, eg, eb = ref_backward(dy, x0, g64, axis, kw["eps"])
        var = ref_stats(x0, axis)[1]
    else:
        ex, eg, eb = ref_backward_eval(dy, x0, g64, axis, rm.astype(np.float64),
                                       rv.astype(np.float64), kw["eps"])
        var = rv.astype(np.float64)
    # dx = (α·inv/n)(n·dy − Σdy − x̂·Σdy·x̂) cancels: its rounding is that of n·dy's terms
    n_per = x.size // c
    terms = np.max(np.abs(g64 / np.sqrt(var + kw["eps"]))) * np.max(np.abs(dy)) * n_per
    np.testing.assert_allclose(got.astype(np.float64), ex, rtol=rtol, atol=unit * terms)
    if affine:
        sums = np.max(np.abs(dy)) * n_per * max(1.0, np.max(np.abs(x0)) / np.sqrt(
            np.min(var) + kw["eps"]))
        np.testing.assert_allclose(dg.astype(np.float64), eg, rtol=rtol, atol=unit * sums)
        np.testing.assert_allclose(db.astype(np.float64), eb, rtol=rtol, atol=unit * sums)


# ---------------------------------------------------------- the helpers around training
@given(shapes_=st.dictionaries(st.text("abc", min_size=1, max_size=2),
                               st.one_of(shapes, st.integers(-2, 6), st.just((2**40, 2**30)),
                                         st.just("x")), max_size=4),
       dtype=st.sampled_from([np.float32, np.float64, np.int32]))
def test_flatparams_slots_are_apart_and_aligned(shapes_, dtype):
    try:
        flat = fastopt.FlatParams(shapes_, dtype=dtype)
    except REFUSED:
        return
    assert np.dtype(dtype) != np.int32 and shapes_
    views = [flat[k] for k in flat.names]
    for k, v in zip(flat.names, views, strict=True):
        shape = shapes_[k] if isinstance(shapes_[k], tuple) else (shapes_[k],)
        assert v.shape == shape and v.flags.c_contiguous
        assert v.size == 0 or v.__array_interface__["data"][0] % 64 == 0
    for i, a in enumerate(views):
        for b in views[i + 1:]:
            assert not np.shares_memory(a, b)


@given(n=st.integers(-2, 50), bs=st.one_of(st.integers(-1, 60), st.just(2.5)),
       shuffle=st.booleans(), seed=st.integers(0, 5), drop_last=st.booleans())
def test_minibatches_cover_an_epoch(n, bs, shuffle, seed, drop_last):
    try:
        batches = list(fastopt.data.minibatches(n, bs, shuffle=shuffle, seed=seed,
                                                drop_last=drop_last))
    except REFUSED:
        assert n < 0 or not isinstance(bs, int) or bs < 1
        return
    seen = np.concatenate(batches) if batches else np.array([], np.int64)
    full = (n // bs) * bs
    assert len(seen) == (full if drop_last else n)
    assert len(np.unique(seen)) == len(seen) and (len(seen) == 0 or seen.max() < n)
    assert all(len(b) == bs for b in batches[: n // bs])


@given(metrics=st.lists(st.one_of(st.floats(-5, 5), st.sampled_from([math.nan, math.inf])),
                        min_size=1, max_size=12),
       patience=st.integers(0, 3), min_delta=st.sampled_from([0.0, 0.1]))
def test_early_stopping_follows_its_documented_rules(metrics, patience, min_delta):
    stop = fastopt.EarlyStopping(patience=patience, min_delta=min_delta)
    best, bad, stopped_at = None, 0, None
    for i, m in enumerate(metrics):
        got = stop.update(m)
        if not math.isfinite(m):  # check_finite: a NaN/Inf metric stops at once
            expect = True
        elif best is None or m < best - min_delta:
            best, bad, expect = m, 0, False
        else:
            bad += 1
            expect = bad >= max(patience, 1)
        assert got == expect
        if got:
            stopped_at = i
            break
    assert stop.stopped == (stopped_at is not None)


@given(n=st.integers(1, 60), bs=st.one_of(st.integers(1, 200), st.integers(-3, 0)),
       seed=st.integers(0, 9), pacing=st.sampled_from(["exponential", "linear", "step"]))
def test_curriculum_batches_come_from_the_pool_and_a_refusal_changes_nothing(n, bs, seed,
                                                                              pacing):
    kw = {"total_steps": 20} if pacing == "linear" else {}
    difficulty = np.random.default_rng(seed).random(n)
    cur = fastopt.Curriculum(difficulty, pacing=pacing, seed=seed, **kw)
    twin = fastopt.Curriculum(difficulty, pacing=pacing, seed=seed, **kw)
    for _ in range(3):
        pool = set(cur.order[: cur.pool_size()].tolist())
        try:
            batch = cur.batch(bs)
        except REFUSED:
            assert bs < 1
            continue
        assert len(batch) == bs and set(batch.tolist()) <= pool
        assert np.array_equal(batch, twin.batch(bs))


@given(kind=st.sampled_from(["InverseTime", "Power", "Exponential", "Step", "Cosine"]),
       lr0=st.one_of(st.floats(0, 1), st.just(-1.0)), a=st.floats(0, 1e300),
       t=st.integers(0, 2**62))
def test_schedules_give_a_rate_at_any_step(kind, lr0, a, t):
    from fastopt import schedules as S

    make = {"InverseTime": lambda: S.InverseTime(lr0, decay=a),
            "Power": lambda: S.Power(lr0, power=max(a, 1e-3) % 5 + 1e-3, decay=a),
            "Exponential": lambda: S.Exponential(lr0, gamma=min(max(a, 1e-6), 1.0)),
            "Step": lambda: S.Step(lr0, step_size=int(a % 50) + 1),
            "Cosine": lambda: S.Cosine(lr0, total_steps=int(a % 100) + 1)}[kind]
    try:
        sched = make()
    except REFUSED:
        assert lr0 < 0
        return
    rate = sched(t)
    assert 0.0 <= rate <= lr0 and not math.isnan(rate)


def test_the_reference_helpers_agree_with_each_other():
    """The fuzzer's BatchNorm reference, checked once on its own: running statistics of
    one batch with momentum 1 are the batch's mean and unbiased variance."""
    x = np.random.default_rng(0).standard_normal((6, 3, 2))
    mu, var = ref_stats(x, 1)
    rm, rv = ref_running(np.zeros(3), np.ones(3), x, 1, 1.0)
    np.testing.assert_allclose(rm, mu)
    np.testing.assert_allclose(rv, var * 12 / 11)  # 12 values per channel: n/(n - 1)
    assert bshape(3, 1, 3) == (1, 3, 1)


# ----------------------------------------------------------------------- precision
@pytest.mark.parametrize("param", ["float32", "bfloat16"])
@pytest.mark.parametrize("state", [None, "8bit"])  # element-wise, and blocks of 256
@settings(max_examples=5)  # each storage compiles its kernels once: every one, few cases
@given(data=st.data(), sizes=st.lists(st.integers(1, 1300), min_size=1, max_size=3),
       master=st.booleans(), min8=st.sampled_from([0, 256, 4096]))
def test_precision_steps_stay_inside_their_arrays(data, sizes, state, param, master, min8):
    """Any storage over arrays of any size (partial 8-bit blocks, arrays under and over
    ``min_8bit_size``): a refused combination changes nothing; an accepted one writes no
    byte outside its arrays (guard bytes around each, in one buffer), keeps them finite
    and moves the float32 ones."""
    draw = data.draw
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dtype = np.dtype(np.float32 if param == "float32" else ml_dtypes.bfloat16)
    guard = 64
    buf = np.full(sum(sizes) + guard * (len(sizes) + 1), 7, dtype)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    params, outside, at = [], np.ones(buf.size, bool), guard
    for n in sizes:
        params.append(buf[at:at + n])
        params[-1][...] = rng.standard_normal(n).astype(dtype)
        outside[at:at + n] = False
        at += n + guard
    before = buf.copy()
    try:
        opt = fastopt.Adam(params, lr=1e-2, state_dtype=state, master_weights=master,
                           min_8bit_size=min8)
    except REFUSED:
        event("refused")
        assert buf.tobytes() == before.tobytes()
        return
    event(f"accepted {state} {param}")
    for _ in range(draw(st.integers(1, 3))):
        scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
        opt.step([(rng.standard_normal(p.size) * scale).astype(dtype) for p in params])
    bits = np.uint8 if dtype.itemsize == 4 else np.uint16
    assert (buf[outside].view(bits) == before[outside].view(bits)).all()
    assert all(np.isfinite(p.astype(np.float32)).all() for p in params)
    if dtype.itemsize == 4:  # 16-bit values may sit still: a step under half an ulp
        assert (buf[~outside] != before[~outside]).any()


@settings(max_examples=25)
@given(data=st.data(), n=st.integers(1, 700), fmt=st.sampled_from(["8bit", "int8"]),
       fault=st.sampled_from(["none"] * 5 + ["book", "absmax_short", "codes_dtype",
                                              "readonly", "noncontig", "overlap", "mixed",
                                              "shape"]))
def test_functional_8bit_state_refuses_cleanly_and_stays_inside(data, n, fmt, fault):
    """F.adam with QuantizedState moments, their codes and block maxima cut from buffers
    with guard bytes around them: a bad one (a book that cannot hold the state, maxima too
    few, codes of another dtype, read-only, strided, shared, mixed with float32 state,
    misshapen) is refused with nothing written; a good one writes nothing outside its
    arrays and gives the class's bits (state_dtype=fmt, every array 8-bit)."""
    from fastopt.precision import quantized

    draw = data.draw
    guard, nb = 40, quantized.blocks(n)
    codes = np.full(2 * n + 3 * guard, 0x5A, np.uint8)
    amax = np.full(2 * nb + 3 * guard, 7.0, np.float32)
    books = (quantized.book_for(fmt, "signed"), quantized.book_for(fmt, "nonnegative"))
    moments = []
    for k, book in enumerate(books):
        c = codes[guard + k * (n + guard):guard + k * (n + guard) + n]
        a = amax[guard + k * (nb + guard):guard + k * (nb + guard) + nb]
        zero = F.QuantizedState.full(n, 0.0, book)
        c[...], a[...] = zero.codes, zero.absmax
        moments.append(F.QuantizedState(c, a, book))
    m, v = moments
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * draw(st.sampled_from([1e-3, 1.0, 1e3]))).astype(np.float32)
    if fault == "book":
        m = F.QuantizedState(m.codes, m.absmax, books[1] if fmt == "int8" else "nope")
    elif fault == "absmax_short":
        m = F.QuantizedState(m.codes, m.absmax[:-1], m.book)
    elif fault == "codes_dtype":
        m = F.QuantizedState(m.codes.view(np.int8), m.absmax, m.book)
    elif fault == "readonly":
        ro = v.absmax[...]
        ro.flags.writeable = False
        v = F.QuantizedState(v.codes, ro, v.book)
    elif fault == "noncontig":
        m = F.QuantizedState(codes[guard:guard + 2 * n:2], m.absmax, m.book)
    elif fault == "overlap":
        v = F.QuantizedState(v.codes, m.absmax, v.book)
    elif fault == "mixed":
        v = np.zeros(n, np.float32)
    elif fault == "shape":
        m = F.QuantizedState(codes[:n + 1], m.absmax, m.book)
    before = snapshot(codes, amax, p)
    p0 = p.copy()
    try:
        F.adam(p, g, m, v, step=1, lr=1e-2)
    except REFUSED:
        event("8-bit functional refused")
        assert snapshot(codes, amax, p) == before
        return
    event("8-bit functional accepted")
    assert fault == "none" or (fault == "noncontig" and n == 1)
    inside_c = np.zeros(codes.size, bool)
    inside_a = np.zeros(amax.size, bool)
    for k in range(2):
        inside_c[guard + k * (n + guard):guard + k * (n + guard) + n] = True
        inside_a[guard + k * (nb + guard):guard + k * (nb + guard) + nb] = True
    assert (codes[~inside_c] == 0x5A).all() and (amax[~inside_a] == 7.0).all()
    twin = [p0.copy()]
    opt = fastopt.Adam(twin, lr=1e-2, state_dtype=fmt, min_8bit_size=0)
    opt.step([g])
    np.testing.assert_array_equal(p.view(np.uint32), twin[0].view(np.uint32))
    sd = opt.state_dict()
    np.testing.assert_array_equal(m.codes, sd["state.m.codes"][:n])
    np.testing.assert_array_equal(v.absmax, sd["state.v.absmax"][:nb])

"""Embedding fastopt in another framework: pickle and deepcopy, per-parameter state views,
kernels compiled ahead of a run."""

import copy
import pickle

import numpy as np
import pytest

import fastopt
from fastopt import parallel
from fastopt.drivers import cpu


def _model(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((30, 20)), rng.standard_normal(20), rng.standard_normal(7)]


def _grads(seed, params):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.shape) for p in params]


def _adam(params):
    return fastopt.Adam(
        [{"params": params[:2]}, {"params": params[2:], "lr": fastopt.schedules.Step(0.01, 2),
                                  "weight_decay": 0.1, "decoupled_weight_decay": True}],
        clip_norm=3.0, grad_noise=fastopt.GradientNoise(0.05, seed=4))


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_an_optimizer_round_trips_and_steps_on_bit_identically(how):
    params = _model()
    opt = _adam(params)
    for t in range(3):
        opt.step(_grads(t, params))
    opt.param_groups[0]["lr"] = 5e-3  # an edit made between steps travels too
    if how == "pickle":
        params2, opt2 = pickle.loads(pickle.dumps((params, opt)))
    else:
        params2, opt2 = copy.deepcopy((params, opt))
    assert opt2._params[0] is params2[0] and params2[0] is not params[0]  # its own arrays
    assert opt2.step_count == 3 and opt2.param_groups == opt.param_groups
    for t in range(3, 7):
        opt.step(_grads(t, params))
        opt2.step(_grads(t, params2))
    for a, b in zip(params, params2, strict=True):
        assert np.array_equal(a, b)
    sd, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert np.array_equal(sd[k], sd2[k]), k


def test_a_flatparams_optimizer_round_trips_with_its_buffers():
    flat = fastopt.FlatParams({"w": (4, 3), "b": (3,)})
    flat["w"][...] = np.arange(12).reshape(4, 3)
    opt = fastopt.Momentum([{"params": flat.subset("w")},
                            {"params": flat.subset("b"), "lr": 0.5}], lr=0.1)
    flat.grad[...] = 1.0
    opt.step()
    flat2, opt2 = pickle.loads(pickle.dumps((flat, opt)))
    assert opt2._flat is flat2 and np.array_equal(flat2.data, flat.data)
    flat2.grads["w"][...] = 2.0  # the loaded views write the loaded buffers
    flat2.grads["b"][...] = 2.0
    flat.grad[...] = 2.0
    opt.step()
    opt2.step()
    assert np.array_equal(flat2["w"], flat["w"]) and np.array_equal(flat2["b"], flat["b"])
    assert np.shares_memory(flat2["w"], flat2.data)


def test_state_views_name_each_parameters_state_and_write_through():
    params = _model()
    opt = fastopt.RMSprop([{"params": params[:2], "centered": True}, {"params": params[2:]}])
    opt.step(_grads(0, params))
    assert list(opt.state) == [0, 1, 2] and len(opt.state) == 3
    views = opt.state[0]
    assert sorted(views) == ["grad_avg", "square_avg"] and list(opt.state[2]) == ["square_avg"]
    assert views["square_avg"].shape == (30, 20)
    g = _grads(0, params)[0]
    np.testing.assert_allclose(views["square_avg"], 0.1 * g**2)  # (1 − α) g², α = 0.9
    np.testing.assert_allclose(opt.state[-1]["square_avg"], 0.1 * _grads(0, params)[2] ** 2)
    # a write sets the state: a twin given the same state by load_state_dict steps alike
    twin_params = [p.copy() for p in params]
    twin = fastopt.RMSprop([{"params": twin_params[:2], "centered": True},
                            {"params": twin_params[2:]}])
    opt.state[1]["square_avg"][...] = 4.0
    twin.load_state_dict(opt.state_dict())
    assert np.all(twin.state[1]["square_avg"] == 4.0)
    opt.step(_grads(1, params))
    twin.step(_grads(1, twin_params))
    for a, b in zip(params, twin_params, strict=True):
        assert np.array_equal(a, b)
    for bad in (3, -4, "w", 1.0, True):
        with pytest.raises(KeyError, match="index in the params list"):
            opt.state[bad]


def test_state_views_of_a_flatparams_are_by_name():
    flat = fastopt.FlatParams({"w": (4, 3), "b": (3,), "frozen": (2,)})
    opt = fastopt.Adam(flat.subset("w", "b"))
    flat.grad[...] = 1.0
    opt.step()
    assert list(opt.state) == ["w", "b"]
    assert opt.state["w"]["m"].shape == (4, 3)
    np.testing.assert_allclose(opt.state["b"]["m"], 0.1)
    with pytest.raises(KeyError, match="not an array this optimizer steps"):
        opt.state["frozen"]


def _overloads(opt):
    kernels = {cpu.step_kernel(rule, mode) for rule, *_ in opt._group_arrays
               for mode in (False, True)} | {cpu.sumsq_kernel(m) for m in (False, True)}
    return {k: len(k.overloads) for k in kernels}


@pytest.mark.skipif(parallel.max_threads() < 2, reason="needs two threads")
def test_precompile_leaves_nothing_for_the_steps_to_compile(monkeypatch):
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)  # every array may go parallel
    params = [np.zeros((40, 30), np.float32), np.zeros(30, np.float32)]
    opt = fastopt.AMSGrad(params, clip_norm=1.0, weight_decay=0.01,
                          grad_noise=fastopt.GradientNoise(0.1, seed=1))
    assert fastopt.precompile(opt, show_progress=False) >= 4
    before = _overloads(opt)
    for mode in ("serial", "parallel"):
        with parallel.forced(mode):
            opt.step([np.full(p.shape, 1e-3, np.float32) for p in params])  # not clipped
            opt.step([np.full(p.shape, 10.0, np.float32) for p in params])  # clipped
    assert _overloads(opt) == before


@pytest.mark.skipif(parallel.max_threads() < 2, reason="needs two threads")
def test_precompile_covers_the_precision_kernels(monkeypatch):
    """16-bit parameters with a master copy, bfloat16 state, clipping (the reduction that
    decodes 16-bit gradients)."""
    from fastopt.drivers import cpu_precision

    ml_dtypes = pytest.importorskip("ml_dtypes")
    monkeypatch.setattr(parallel, "PARALLEL_MIN_BYTES", 0)
    params = [np.zeros(5000, ml_dtypes.bfloat16)]
    opt = fastopt.Adam(params, clip_norm=1.0, master_weights=True, state_dtype="bfloat16")
    assert fastopt.precompile(opt, show_progress=False) >= 4
    kernels = {k for launchers in opt._precision_launchers
               for serial, par, *_ in launchers for k in (serial, par)}
    kernels |= set(cpu_precision.sumsq_kernels("bfloat16"))  # the decoding reduction
    before = {k: len(k.overloads) for k in kernels}
    for mode in ("serial", "parallel"):
        with parallel.forced(mode):
            for g in (1e-3, 10.0):  # not clipped, clipped
                opt.step([np.full(p.shape, g, p.dtype) for p in params])
    assert {k: len(k.overloads) for k in kernels} == before
    assert all(before.values())


def test_precompile_refuses_what_is_not_an_optimizer():
    with pytest.raises(TypeError, match="precompile takes fastopt optimizers"):
        fastopt.precompile(np.zeros(3))
    with pytest.raises(TypeError, match="float32 or float64"):
        fastopt.precompile(batchnorm=[np.int32])


def test_compile_command(capsys):
    from fastopt.__main__ import main

    assert main(["compile", "--rules", "SGD", "Nesterov", "--clip", "--dtypes", "float64"]) == 0
    assert "kernel versions ready" in capsys.readouterr().out
    for args, message in ((["--rules", "Adamux"], "unknown rule"),
                          (["--weight-decay", "--decoupled"], "pick one")):
        with pytest.raises(SystemExit):
            main(["compile", *args])
        assert message in capsys.readouterr().err

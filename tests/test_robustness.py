"""Regression tests for what a fuzzer of the public API found (one or more per finding):
each failed on the code before the fix. The contract: bad input gets a clear
TypeError/ValueError before anything is written; accepted input gets the documented
result."""

import importlib.util
import math
import tempfile

import numpy as np
import pytest

import fastopt
import fastopt.batchnorm as bn
import fastopt.functional as F

HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _memmap(n, dtype=np.float64):
    mm = np.memmap(tempfile.NamedTemporaryFile(delete=False).name, dtype=dtype, mode="w+",
                   shape=(n,))
    mm[:] = np.arange(n)
    return mm


# ------------------------------------------------------------------ subclasses (1, 3, 6)
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix itself
def test_matrix_parameters_and_gradients_step_as_their_arrays():
    w = np.matrix(np.ones((300, 400)))
    opt = fastopt.SGD(w, lr=0.1)
    opt.step(np.ones((300, 400)))  # wrote out of bounds before
    assert type(w) is np.matrix and np.all(w == 0.9)
    p = np.ones((2, 5))
    fastopt.SGD([p], lr=0.5).step([np.matrix(np.full((2, 5), 2.0))])
    assert np.all(p == 0.0)


def test_a_memory_mapped_parameter_is_stepped_in_its_file():
    mm = _memmap(6)
    fastopt.SGD(mm, lr=1.0).step(np.ones(6))
    mm.flush()
    again = np.memmap(mm.filename, dtype=np.float64, mode="r", shape=(6,))
    assert np.array_equal(again, np.arange(6) - 1.0)


def test_a_masked_array_is_refused_before_anything_is_written():
    a = np.ones(40_000)
    with pytest.raises(TypeError, match="MaskedArray, whose mask fastopt would ignore"):
        fastopt.Adam([a, np.ma.MaskedArray(np.ones(40_000))])
    opt = fastopt.Adam([a, np.ones(3)])
    with pytest.raises(TypeError, match="MaskedArray"):
        opt.step([np.ones(40_000), np.ma.MaskedArray(np.ones(3))])
    assert np.all(a == 1.0) and opt.step_count == 0  # the first array was moved before


def test_views_of_one_memmap_are_one_memory_for_the_overlap_checks():
    mm = _memmap(10)
    p, g = np.asarray(mm)[:9], np.asarray(mm)[1:]  # different .base objects, one buffer
    opt = fastopt.SGD(p, lr=1.0)
    with pytest.raises(ValueError, match="overlaps params"):
        opt.step(g)
    assert np.array_equal(mm, np.arange(10))
    v = np.zeros(9)
    with pytest.raises(ValueError, match="share memory"):
        F.adam([p, np.zeros(3)], [np.ones(9), np.ones(3)], [np.asarray(mm)[1:], np.zeros(3)],
               [v, np.zeros(3)], 1)
    with pytest.raises(ValueError, match="share memory"):
        fastopt.SGD([np.asarray(mm)[:5], np.asarray(mm)[4:]])
    assert np.array_equal(mm, np.arange(10))


# --------------------------------------------------------------------- BatchNorm (2, 7)
def _bn_case(c=64):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, c, 3, 3)).astype(np.float32)
    return x, np.ones(c, np.float32), np.zeros(c, np.float32)


@pytest.mark.parametrize("edit", ["stats", "channels", "spatial", "gamma", "x"])
def test_backward_refuses_a_cache_of_another_geometry(edit):
    x, g, b = _bn_case()
    _, cache = bn.forward(x, g, b)
    x2, g2, b2 = _bn_case(2)
    _, small = bn.forward(x2, g2, b2)
    bad = {"stats": cache._replace(stats=small.stats), "channels": cache._replace(channels=2),
           "spatial": cache._replace(spatial=1), "gamma": cache._replace(gamma=g2),
           "x": cache._replace(x=x2)}[edit]
    dx, dg, db = np.full_like(x, 7.0), np.full(64, 7.0, np.float32), np.full(64, 7.0, np.float32)
    with pytest.raises(ValueError, match="cache"):
        bn.backward(np.ones_like(x), bad, out=(dx, dg, db))
    assert np.all(dx == 7.0) and np.all(dg == 7.0) and np.all(db == 7.0)


def test_a_batch_counter_over_x_is_refused_before_anything_is_written():
    x = np.random.default_rng(1).standard_normal((16, 4))
    before = x.copy()
    counter = x.view(np.int64)[0:1, 0]  # the counter aliases x[0, 0]
    rm, rv = np.zeros(4), np.ones(4)
    with pytest.raises(ValueError, match="num_batches_tracked shares memory with x"):
        bn.forward(x, None, None, running_mean=rm, running_var=rv, momentum=None,
                   num_batches_tracked=counter)
    assert np.array_equal(x, before) and np.all(rm == 0) and np.all(rv == 1)


def test_written_statistics_whose_channels_share_memory_are_refused():
    x = np.random.default_rng(2).standard_normal((16, 4))
    z = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(4,), strides=(0,), writeable=True)
    with pytest.raises(ValueError, match="channels share memory"):
        bn.forward(x, None, None, running_mean=z, running_var=np.ones(4))
    assert z[0] == 0.0
    strided = np.zeros(8)[::2]  # apart, just strided: fine
    bn.forward(x, None, None, running_mean=strided, running_var=np.ones(4))
    np.testing.assert_allclose(strided, 0.1 * x.mean(axis=0))


def test_inference_backward_uses_the_statistics_of_its_forward_after_calibrate():
    rng = np.random.default_rng(3)
    layer = fastopt.BatchNorm(4)
    layer.forward(rng.standard_normal((32, 4)).astype(np.float32))
    layer.eval()
    x = rng.standard_normal((32, 4)).astype(np.float32)
    layer.forward(x)
    expect = layer.backward(np.ones_like(x)).copy()
    layer.forward(x)
    layer.calibrate([rng.standard_normal((64, 4)).astype(np.float32) * 5])
    assert np.array_equal(layer.backward(np.ones_like(x)), expect)


def test_a_read_only_gamma_is_a_valid_training_input():
    x, g, b = _bn_case(4)
    y, _ = bn.forward(x, g, b)
    g.flags.writeable = False
    y2, cache = bn.forward(x, g, b)
    assert np.array_equal(y, y2)
    bn.backward(np.ones_like(x), cache)


# ------------------------------------------------ partial writes and atomicity (4, 5)
def test_early_stopping_restore_into_a_read_only_array_changes_nothing():
    stop = fastopt.EarlyStopping(patience=1)
    a, b = np.zeros(3), np.zeros(3)
    stop.update(1.0, [a, b])
    a += 5.0
    ro = b.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match=r"params\[1\] is read-only"):
        stop.update(2.0, [a, ro])  # this step would stop and restore
    assert np.all(a == 5.0) and stop.num_updates == 1 and not stop.stopped
    with pytest.raises(ValueError, match="read-only"):
        stop.restore([a, ro])
    assert np.all(a == 5.0)


def test_a_curriculum_batch_too_big_to_allocate_leaves_the_generator_as_it_was():
    a = fastopt.Curriculum(np.arange(100.0), seed=3)
    twin = fastopt.Curriculum(np.arange(100.0), seed=3)
    with pytest.raises(MemoryError):
        a.batch(10**13 + 1)
    for _ in range(3):
        assert np.array_equal(a.batch(7), twin.batch(7))
    assert a.step == twin.step


# ------------------------------------------------------- silent wrong results (8-12)
@pytest.mark.parametrize(("make", "error"), [
    (lambda g: g[1:], "shares memory with grads"),
    (lambda g: np.zeros(4, np.float32), "1-D float64"),
    (lambda g: np.zeros(4, np.int64), "1-D float64"),
    (lambda g: [0.0] * 4, "float64 numpy.ndarray"),
    (lambda g: np.zeros((2, 2)), "1-D float64"),
    (lambda g: np.zeros(8)[::2], "contiguous and writable"),
])
def test_global_norm_checks_its_workspace(make, error):
    g = np.arange(5000.0)
    before = g.copy()
    with pytest.raises((TypeError, ValueError), match=error):
        F.global_norm([g], make(g))
    assert np.array_equal(g, before)
    w = np.empty(10)
    assert F.global_norm([g], w) == pytest.approx(np.linalg.norm(before), rel=1e-13)


def test_flatparams_sizes_that_overflow_int64_are_refused():
    for shapes in ({"a": (2**32, 2**32)}, {"a": (2**31, 2**31), "b": 3}):
        with pytest.raises(ValueError, match="more than a process can address"):
            fastopt.FlatParams(shapes)


def test_param_group_edits_are_checked_whatever_their_form():
    p = np.ones(5)
    opt = fastopt.Adam(p, betas=[0.9, 0.999])
    assert opt.param_groups[0]["betas"] == (0.9, 0.999)
    with pytest.raises(TypeError):  # stored as a tuple: no in-place edit behind the checks
        opt.param_groups[0]["betas"][0] = float("nan")
    opt.param_groups[0]["betas"] = np.array([0.8, 0.99])  # was "truth value ... ambiguous"
    opt.step(np.ones(5))
    twin_p = np.ones(5)
    fastopt.Adam(twin_p, betas=(0.8, 0.99)).step(np.ones(5))
    assert np.array_equal(p, twin_p)
    opt.param_groups[0]["betas"] = [float("nan"), 0.9]
    with pytest.raises(ValueError, match="betas"):
        opt.step(np.ones(5))
    assert np.array_equal(p, twin_p) and opt.step_count == 1


def _clip_sgd(grad):
    """SGD(lr=1) after torch's clip_grad_norm_(max_norm=1), written from its definition:
    c = max_norm / (‖g‖ + 1e-6), clamped at 1 (NaN propagating), g ← c·g."""
    norm = np.sqrt(np.sum(np.asarray(grad, np.float64) ** 2))
    c = np.minimum(1.0, 1.0 / (norm + 1e-6))
    with np.errstate(invalid="ignore"):
        return np.ones(len(grad)) - c * np.asarray(grad)


@pytest.mark.parametrize("grad", [[np.inf, 1, 1, 1], [np.nan, 1, 1, 1], [-np.inf, np.nan, 1, 1],
                                  [3.0, 4.0, 0.0, 0.0]], ids=["inf", "nan", "both", "finite"])
def test_clip_norm_with_non_finite_gradients_is_torchs(grad):
    p = np.ones(4)
    with np.errstate(invalid="ignore"):
        fastopt.SGD(p, lr=1.0, clip_norm=1.0).step(np.array(grad, np.float64))
    np.testing.assert_array_equal(p, _clip_sgd(grad))
    if HAVE_TORCH:
        import torch

        t = torch.ones(4, dtype=torch.float64, requires_grad=True)
        t.grad = torch.tensor(grad, dtype=torch.float64)
        torch.nn.utils.clip_grad_norm_([t], 1.0)
        torch.optim.SGD([t], lr=1.0).step()
        np.testing.assert_array_equal(p, t.detach().numpy())


def test_skip_nonfinite_still_skips_infinite_gradients():
    p = np.ones(4)
    opt = fastopt.SGD(p, lr=1.0, clip_norm=1.0, skip_nonfinite=True)
    opt.step(np.array([np.inf, 1, 1, 1]))
    assert np.all(p == 1.0) and opt.skipped_steps == 1
    opt.step(np.array([1e200, 0, 0, 0]))  # finite, its square overflows: not skipped
    assert opt.skipped_steps == 1 and opt.step_count == 1


def test_nadam_with_momentum_decay_and_a_small_beta1_runs_on_and_checkpoints():
    p = np.ones(3)
    opt = fastopt.Nadam(p, betas=(0.5, 0.999), momentum_decay=4e-3)
    for _ in range(1200):
        opt.step(np.full(3, 0.01))
    sd = opt.state_dict()
    assert sd["group.0.mu_product"] == 0.0  # underflowed: a legitimate product
    fastopt.Nadam(np.ones(3), betas=(0.5, 0.999), momentum_decay=4e-3).load_state_dict(sd)
    q, m, v, mu = np.ones(3), np.zeros(3), np.zeros(3), 1.0
    for t in range(1, 1200):
        mu = F.nadam(q, np.full(3, 0.01), m, v, t, betas=(0.5, 0.999), momentum_decay=4e-3,
                     mu_product=mu)
    assert np.all(np.isfinite(q))


# ------------------------------------------------------------------- smaller ones (13)
def test_float32_hyperparameters_mean_their_decimal():
    p1, p2 = np.ones(4), np.ones(4)
    args = [(np.zeros(4), np.zeros(4)), (np.zeros(4), np.zeros(4))]
    for t in range(1, 4):
        F.adam(p1, np.full(4, 0.3), *args[0], t, lr=np.float32(0.01),
               betas=(np.float32(0.9), np.float32(0.99)), eps=np.float32(1e-8))
        F.adam(p2, np.full(4, 0.3), *args[1], t, lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    assert np.array_equal(p1, p2)
    opt = fastopt.Adam(np.ones(4))
    opt.param_groups[0]["betas"] = (np.float32(0.9), np.float32(0.99))
    opt.step(np.ones(4))
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)  # not 0.9900000095367432


def test_amsgrad_keeps_a_nan_second_moment():
    p = np.ones(3)
    opt = fastopt.AMSGrad(p)
    opt.step(np.ones(3))
    opt.step(np.array([np.nan, 1.0, 1.0]))
    v_max = opt.state_dict()["state.v_max"]
    assert math.isnan(v_max[0]) and np.all(np.isfinite(v_max[1:3]))


def test_an_optimizer_at_the_last_step_number_loads_its_own_checkpoint():
    p = np.ones(3)
    opt = fastopt.SGD(p, lr=0.1)
    opt.step(np.ones(3))
    sd = opt.state_dict()
    sd["step"] = 2**63 - 1
    opt.load_state_dict(sd)
    twin = fastopt.SGD(np.ones(3), lr=0.1)
    twin.load_state_dict(opt.state_dict())  # was refused
    before = p.copy()
    with pytest.raises(ValueError, match="2\\*\\*63 - 1 steps"):
        opt.step(np.ones(3))
    assert np.array_equal(p, before)


def test_a_list_of_param_sizes_is_read_like_an_array():
    opt = fastopt.SGD(np.ones(4), lr=0.1)
    sd = opt.state_dict()
    sd["param_sizes"] = [4]
    opt.load_state_dict(sd)
    sd["param_sizes"] = [5]
    with pytest.raises(ValueError, match=r"\[5\] does not match .* \[4\]"):
        opt.load_state_dict(sd)


@pytest.mark.parametrize("make", [
    lambda: fastopt.SGD(np.ones(3), lr=0.1,
                        grad_noise=fastopt.GradientNoise(0.01, gamma=2000, seed=1)),
    lambda: fastopt.SGD(np.ones(3), lr=fastopt.schedules.Power(0.1, power=1000)),
    lambda: fastopt.SGD(np.ones(3), lr=fastopt.schedules.Power(0.1, power=3, decay=1e300)),
], ids=["noise", "power", "power-decay"])
def test_schedules_and_noise_that_decay_below_the_smallest_float_give_zero(make):
    opt = make()
    for _ in range(5):  # OverflowError at step 2 or 3, then at every later step, before
        opt.step(np.ones(3))
    assert opt.step_count == 5

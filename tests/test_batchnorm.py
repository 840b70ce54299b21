"""BatchNorm: an independent NumPy reference, torch parity, finite differences, running and
calibrated statistics, both layouts, reused buffers, thread-count determinism, bad input.

The reference below is written from ``docs/equations.md`` (section BatchNorm) in float64 with
plain NumPy reductions; nothing here calls the package's kernels to get an expected value.
Shapes are small: most calls run the serial kernels, the determinism tests the parallel ones.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numba
import numpy as np
import pytest
from reference import (
    bshape,
    red_axes,
    ref_backward,
    ref_backward_eval,
    ref_forward,
    ref_running,
    ref_stats,
)

import fastopt
from fastopt import batchnorm as bn
from fastopt.batchnorm import kernels as bn_kernels

EPS = 1e-6

# (shape, axis): (N, C); (N, C, H, W); channels-last (N, H, W, C); then shapes that cut
# the kernels' tiles every way: runs longer than a tile's piece (pieces of each run), 7×7
# runs in two uneven channel chunks and two sample blocks, more channels than one chunk,
# 10×10 runs in three uneven blocks of whole samples, 40 channels in two uneven sample
# blocks. The last three take the grouped training passes (whole channel groups per task,
# ``kernels.group_channels``): 19 groups of 11 channels with an uneven last one, 16
# channels whose runs are cut into two pieces, channels-last in 17 groups.
LAYOUTS = [
    ((16, 5), 1),
    ((4, 3, 5, 7), 1),
    ((3, 4, 5, 6), -1),
    ((2, 2, 17000), 1),
    ((20, 40, 7, 7), 1),
    ((40, 1100), 1),
    ((400, 4, 10, 10), 1),
    ((2000, 40), 1),
    ((2, 200, 10, 10), 1),
    ((2, 16, 4500), 1),
    ((2, 3, 16400), -1),
]
LAYOUT_IDS = ["NC", "NCHW", "NHWC", "NCL-long", "NCHW-tiles", "NC-wide", "NCHW-streamed",
              "NC-streamed", "NCHW-groups", "NCL-groups-pieces", "NHWC-groups"]
GROUPED = LAYOUT_IDS.index("NCHW-groups")


def geometry(shape, axis):
    """(N, C, S) as the kernels see the array."""
    if axis == 1:
        return shape[0], shape[1], int(np.prod(shape[2:], dtype=np.int64))
    return int(np.prod(shape[:-1], dtype=np.int64)), shape[-1], 1


def test_layouts_take_both_the_tiled_and_the_grouped_passes():
    """So the reference checks below cover both training paths of the kernels."""
    grouped = [bn_kernels.group_channels(*geometry(s, a)) for s, a in LAYOUTS]
    assert all(g == 0 for g in grouped[:GROUPED])
    assert all(g > 0 for g in grouped[GROUPED:])
    assert bn_kernels.tiles(*geometry(*LAYOUTS[GROUPED + 1]))[5] == 2  # two pieces per run


@pytest.fixture(autouse=True)
def one_kernel_per_dtype(monkeypatch):
    """float32 calls run the parallel kernels, float64 calls the serial ones, whatever the
    size: both paths are checked and each kernel is compiled once per dtype, not twice
    (a cold compile is most of this file's run time)."""

    def get(name, x):
        return lambda *args: bn_kernels.kernel(name, args[0].dtype == np.float32)(*args)

    monkeypatch.setattr(bn_kernels, "get", get)


# -------------------------------------------------------------------------- helpers


def data(shape, axis, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[axis % len(shape)]
    x = (rng.standard_normal(shape) * 2.0 + rng.standard_normal(c).reshape(
        bshape(len(shape), axis, c)) * 3.0).astype(dtype)
    gamma = (1.0 + 0.5 * rng.standard_normal(c)).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return x, gamma, beta, dy


def rel_err(a, b) -> float:
    """max |a − b| relative to max |b| (element-wise ratios blow up near zero)."""
    b = np.asarray(b, np.float64)
    return float(np.max(np.abs(np.asarray(a, np.float64) - b)) / max(np.max(np.abs(b)), 1e-300))


TOL = {np.float32: 2e-6, np.float64: 1e-13}


# ----------------------------------------------------------------- reference checks


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(("shape", "axis"), LAYOUTS, ids=LAYOUT_IDS)
def test_training_forward_backward_match_reference(shape, axis, dtype):
    x, gamma, beta, dy = data(shape, axis, dtype)
    c = gamma.size
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    y, cache = bn.forward(x, gamma, beta, axis=axis, running_mean=rm, running_var=rv)
    assert y.dtype == dtype and y.shape == x.shape
    assert rel_err(y, ref_forward(x, gamma, beta, axis)) < TOL[dtype]
    mu, var = ref_stats(x, axis)
    np.testing.assert_allclose(cache.mean, mu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cache.inv_std, 1 / np.sqrt(var + EPS), rtol=1e-12)
    em, ev = ref_running(np.zeros(c), np.ones(c), x, axis, 0.1)
    np.testing.assert_allclose(rm, em, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_allclose(rv, ev, rtol=TOL[dtype])

    dx, dgamma, dbeta = bn.backward(dy, cache)
    edx, edg, edb = ref_backward(dy, x, gamma, axis)
    assert dx.dtype == dgamma.dtype == dbeta.dtype == dtype
    assert rel_err(dx, edx) < 5 * TOL[dtype]
    assert rel_err(dgamma, edg) < TOL[dtype]
    assert rel_err(dbeta, edb) < TOL[dtype]


@pytest.mark.parametrize(("shape", "axis"), LAYOUTS[:3], ids=LAYOUT_IDS[:3])
def test_eval_mode_uses_running_statistics_as_constants(shape, axis):
    x, gamma, beta, dy = data(shape, axis, np.float64, seed=3)
    c = gamma.size
    rng = np.random.default_rng(4)
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    rm0, rv0 = rm.copy(), rv.copy()
    y, cache = bn.forward(x, gamma, beta, training=False, running_mean=rm, running_var=rv,
                          axis=axis)
    assert rel_err(y, ref_forward(x, gamma, beta, axis, mean=rm, var=rv)) < 1e-13
    assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)
    dx, dgamma, dbeta = bn.backward(dy, cache)
    edx, edg, edb = ref_backward_eval(dy, x, gamma, axis, rm, rv)
    assert rel_err(dx, edx) < 1e-13
    assert rel_err(dgamma, edg) < 1e-13 and rel_err(dbeta, edb) < 1e-13


def test_without_affine_parameters():
    x, gamma, beta, dy = data((6, 3, 4), 1)
    y, cache = bn.forward(x, None, None)
    assert rel_err(y, ref_forward(x, np.ones(3), np.zeros(3), 1)) < 1e-13
    dx, dg, db = bn.backward(dy, cache)
    assert dg is None and db is None
    assert rel_err(dx, ref_backward(dy, x, np.ones(3), 1)[0]) < 1e-12


def test_statistics_are_accurate_with_a_large_mean():
    """Blocked two-pass statistics: no Σx² − nμ² cancellation (mean/std = 1e4)."""
    rng = np.random.default_rng(5)
    x = 1e4 + rng.standard_normal((64, 2, 300))
    y, cache = bn.forward(x, None, None)
    mu, var = ref_stats(x, 1)
    np.testing.assert_allclose(1 / cache.inv_std**2 - EPS, var, rtol=1e-10)
    assert rel_err(y, ref_forward(x, np.ones(2), np.zeros(2), 1)) < 1e-9


# ----------------------------------------------------------------- finite differences


@pytest.mark.parametrize(("shape", "axis"), [((3, 2, 4), 1), ((3, 4, 2), -1)],
                         ids=["NCL", "NLC"])
def test_gradients_match_central_differences(shape, axis):
    x, gamma, beta, _ = data(shape, axis, np.float64, seed=6)
    w = np.random.default_rng(7).standard_normal(shape)

    def loss(x_, g_, b_):
        return float(np.sum(w * bn.forward(x_, g_, b_, axis=axis, eps=1e-3)[0]))

    _, cache = bn.forward(x, gamma, beta, axis=axis, eps=1e-3)
    dx, dgamma, dbeta = bn.backward(w.copy(), cache)
    h = 1e-6
    for arr, grad, args in ((x, dx, 0), (gamma, dgamma, 1), (beta, dbeta, 2)):
        num = np.empty_like(arr)
        for i in np.ndindex(arr.shape):
            vals = []
            for sgn in (1, -1):
                a = arr.copy()
                a[i] += sgn * h
                inputs = [x, gamma, beta]
                inputs[args] = a
                vals.append(loss(*inputs))
            num[i] = (vals[0] - vals[1]) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


# -------------------------------------------------------------------------- torch


def _torch_layout(t, axis):
    return t.permute(0, t.ndim - 1, *range(1, t.ndim - 1)) if axis == -1 else t


def _numpy_layout(t, axis):
    return (t.permute(0, *range(2, t.ndim), 1) if axis == -1 else t).detach().contiguous().numpy()


@pytest.mark.parametrize(("shape", "axis"), LAYOUTS[:3], ids=LAYOUT_IDS[:3])
def test_matches_torch_forward_and_autograd(shape, axis):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    x, gamma, beta, dy = data(shape, axis, np.float32, seed=8)
    c = gamma.size
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    trm, trv = torch.zeros(c), torch.ones(c)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    tg = torch.from_numpy(gamma.copy()).requires_grad_()
    tb = torch.from_numpy(beta.copy()).requires_grad_()
    ty = F.batch_norm(_torch_layout(tx, axis), trm, trv, tg, tb, training=True, momentum=0.1,
                      eps=EPS)
    tdx, tdg, tdb = torch.autograd.grad(ty, (tx, tg, tb), _torch_layout(torch.from_numpy(dy),
                                                                      axis))
    y, cache = bn.forward(x, gamma, beta, axis=axis, running_mean=rm, running_var=rv)
    dx, dg, db = bn.backward(dy, cache)
    assert rel_err(y, _numpy_layout(ty, axis)) < 1e-5
    assert rel_err(dx, tdx.numpy()) < 1e-5
    assert rel_err(dg, tdg.numpy()) < 1e-5 and rel_err(db, tdb.numpy()) < 1e-5
    assert rel_err(rm, trm.numpy()) < 1e-5 and rel_err(rv, trv.numpy()) < 1e-5
    # inference with the updated running statistics
    ty = F.batch_norm(_torch_layout(torch.from_numpy(x), axis), trm, trv, tg.detach(),
                      tb.detach(), training=False, eps=EPS)
    y, _ = bn.forward(x, gamma, beta, axis=axis, training=False, running_mean=rm,
                      running_var=rv)
    assert rel_err(y, _numpy_layout(ty, axis)) < 1e-5


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_running_statistics_over_steps_match_torch(momentum):
    torch = pytest.importorskip("torch")
    layer = fastopt.BatchNorm(3, momentum=momentum)
    tlayer = torch.nn.BatchNorm2d(3, eps=EPS, momentum=momentum)
    batches = [data((4 + k, 3, 2, 3), 1, np.float32, seed=10 + k)[0] for k in range(4)]
    for xb in batches:
        layer.forward(xb)
        tlayer(torch.from_numpy(xb))
    assert layer.num_batches_tracked == int(tlayer.num_batches_tracked) == 4
    assert rel_err(layer.running_mean, tlayer.running_mean.numpy()) < 1e-6
    assert rel_err(layer.running_var, tlayer.running_var.numpy()) < 1e-6


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_over_steps_match_reference(momentum):
    layer = fastopt.BatchNorm(3, momentum=momentum, axis=-1, dtype=np.float64)
    rm, rv = np.zeros(3), np.ones(3)
    batches = [data((5 + k, 2, 3), -1, seed=20 + k)[0] for k in range(5)]
    for k, xb in enumerate(batches, start=1):
        layer.forward(xb)
        rm, rv = ref_running(rm, rv, xb, -1, 1.0 / k if momentum is None else momentum)
    np.testing.assert_allclose(layer.running_mean, rm, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(layer.running_var, rv, rtol=1e-13)
    if momentum is None:  # the cumulative average of the batch statistics
        np.testing.assert_allclose(rm, np.mean([ref_stats(b, -1)[0] for b in batches], 0),
                                   rtol=1e-12)


# ----------------------------------------------------------------------- the layer


@pytest.mark.parametrize(("shape", "axis"), [((6, 4, 3, 3), 1), ((5, 3, 3, 4), -1)],
                         ids=["NCHW", "NHWC"])
def test_calibrate_gives_the_statistics_of_the_concatenation(shape, axis):
    batches = [data((shape[0] + k,) + shape[1:], axis, np.float32, seed=30 + k)[0]
               for k in range(5)]
    layer = fastopt.BatchNorm(4, axis=axis)
    layer.forward(batches[0])  # EMA state that calibrate must replace, not blend
    layer.calibrate(iter(batches))  # an unsized iterable: no progress bar, one pass
    allx = np.concatenate(batches).astype(np.float64)
    ax = red_axes(allx.ndim, axis)
    np.testing.assert_allclose(layer.running_mean, allx.mean(axis=ax), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.running_var, allx.var(axis=ax, ddof=1), rtol=1e-6)
    assert layer.num_batches_tracked == 1

    layer64 = fastopt.BatchNorm(4, axis=axis, dtype=np.float64)
    layer64.calibrate([b.astype(np.float64) for b in batches])
    np.testing.assert_allclose(layer64.running_mean, allx.mean(axis=ax), rtol=1e-13,
                               atol=1e-14)
    np.testing.assert_allclose(layer64.running_var, allx.var(axis=ax, ddof=1), rtol=1e-13)


def test_calibrate_shows_progress_for_long_lists(capsys):
    batches = [data((3, 2), 1, np.float32, seed=k)[0] for k in range(25)]
    fastopt.BatchNorm(2).calibrate(batches)
    err = capsys.readouterr().err
    assert "calibrate" in err and "25" in err
    fastopt.BatchNorm(2).calibrate(batches[:5])
    assert capsys.readouterr().err == ""


def test_layer_train_eval_and_gradients():
    x, _, _, dy = data((8, 3, 2, 2), 1, np.float32, seed=40)
    layer = fastopt.BatchNorm(3)
    assert layer.training
    layer.gamma[...] = [1.0, 2.0, 0.5]
    layer.beta[...] = [0.0, -1.0, 1.0]
    y = layer(x)
    assert rel_err(y, ref_forward(x, layer.gamma, layer.beta, 1)) < 2e-6
    dx = layer.backward(dy)
    edx, edg, edb = ref_backward(dy, x, layer.gamma, 1)
    assert rel_err(dx, edx) < 1e-5
    assert rel_err(layer.grad_gamma, edg) < 2e-6 and rel_err(layer.grad_beta, edb) < 2e-6
    rm, rv = layer.running_mean.copy(), layer.running_var.copy()
    assert layer.eval() is layer and not layer.training
    y = layer(x)
    assert rel_err(y, ref_forward(x, layer.gamma, layer.beta, 1, mean=rm, var=rv)) < 2e-6
    assert np.array_equal(layer.running_mean, rm) and layer.num_batches_tracked == 1
    layer.backward(dy)
    assert rel_err(layer.grad_gamma, ref_backward_eval(dy, x, layer.gamma, 1, rm, rv)[1]) < 2e-6


def test_layer_in_flat_params_is_stepped_by_an_optimizer():
    shapes = {"w": (4, 3), **fastopt.BatchNorm.flat_shapes(3, "bn1")}
    assert shapes["bn1.weight"] == (3,) and shapes["bn1.bias"] == (3,)
    flat = fastopt.FlatParams(shapes)
    layer = fastopt.BatchNorm(3, params=(flat, "bn1"))
    assert np.array_equal(flat["bn1.weight"], np.ones(3)) and not flat["bn1.bias"].any()
    assert np.shares_memory(layer.gamma, flat.data)
    assert np.shares_memory(layer.grad_beta, flat.grad)
    x, _, _, dy = data((8, 3), 1, np.float32, seed=41)
    layer.forward(x)
    layer.backward(dy)
    np.testing.assert_allclose(flat.grads["bn1.bias"], dy.sum(0), rtol=1e-5)
    fastopt.SGD(flat, lr=0.1).step()
    np.testing.assert_allclose(flat["bn1.bias"], -0.1 * dy.sum(0), rtol=1e-5)
    np.testing.assert_allclose(layer.gamma, 1 - 0.1 * flat.grads["bn1.weight"], rtol=1e-6)


def test_state_dict_round_trip():
    layer = fastopt.BatchNorm(3)
    for k in range(3):
        layer.forward(data((5, 3, 2), 1, np.float32, seed=50 + k)[0])
    layer.gamma[...] = [2.0, 3.0, 4.0]
    sd = layer.state_dict()
    assert set(sd) == {"running_mean", "running_var", "num_batches_tracked", "weight", "bias"}
    other = fastopt.BatchNorm(3)
    other.load_state_dict(sd)
    for k, v in other.state_dict().items():
        assert np.array_equal(v, sd[k]), k
    sd["running_mean"][0] = 99.0  # a copy, not a view
    assert layer.running_mean[0] != 99.0


# ---------------------------------------------------------------- buffers and threads


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("shape", "axis"), [((6, 5, 3), 1), ((6, 3, 5), -1)])
def test_common_calls_and_the_detailed_checks_compute_the_same(shape, axis, training):
    """forward skips its detailed checks for calls in the common form (plain floats and
    arrays); NumPy scalars take the detailed path. Both must give the same bits."""
    x, gamma, beta, _ = data(shape, axis, np.float32, seed=7)
    c = shape[axis]
    runs = []
    for eps, m in ((1e-3, 0.2), (np.float64(1e-3), np.float64(0.2))):
        rm, rv = np.full(c, 0.5, np.float32), np.full(c, 2.0, np.float32)
        plain = bn._plain_call(x, gamma, beta, eps, training, m, rm, rv, axis, None, None,
                               None)
        assert (plain is not None) == (type(eps) is float)
        y, _ = bn.forward(x, gamma, beta, eps=eps, training=training, running_mean=rm,
                          running_var=rv, momentum=m, axis=axis)
        runs.append((y, rm, rv))
    for a, b in zip(*runs, strict=True):
        assert np.array_equal(a, b)


def test_out_buffers_are_reused():
    x, gamma, beta, dy = data((6, 3, 4, 4), 1, np.float32, seed=60)
    y_buf, dx_buf = np.empty_like(x), np.empty_like(x)
    dg, db = np.empty(3, np.float32), np.empty(3, np.float32)
    stats = np.full((3, 3), np.nan)
    fresh = bn.forward(x, gamma, beta)[1].stats
    for _ in range(2):
        y, cache = bn.forward(x, gamma, beta, out=y_buf, stats_out=stats)
        dx, g, b = bn.backward(dy, cache, out=(dx_buf, dg, db))
        assert y is y_buf and dx is dx_buf and g is dg and b is db and cache.stats is stats
        assert np.array_equal(stats, fresh)
    assert rel_err(y_buf, ref_forward(x, gamma, beta, 1)) < 2e-6
    edx, edg, _ = ref_backward(dy, x, gamma, 1)
    assert rel_err(dx_buf, edx) < 1e-5 and rel_err(dg, edg) < 2e-6
    # dx over dy, and in-place inference (after which backward refuses)
    dy2 = dy.copy()
    dx, _, _ = bn.backward(dy2, cache, out=dy2)
    assert dx is dy2 and np.array_equal(dx, dx_buf)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    expect = bn.forward(x, gamma, beta, training=False, running_mean=rm, running_var=rv)[0]
    xc = x.copy()
    y, cache = bn.forward(xc, gamma, beta, training=False, running_mean=rm, running_var=rv,
                          out=xc)
    assert y is xc and np.array_equal(y, expect)
    with pytest.raises(ValueError, match="out=x"):
        bn.backward(dy, cache)


def test_host_byte_spans_match_numpys_byte_bounds_for_any_layout():
    from fastopt.drivers import cpu

    bounds = getattr(np.lib, "array_utils", np).byte_bounds  # NumPy 1.x: np.byte_bounds
    b = np.zeros(24)
    for a in (b, b[::2], b[::-1], b[1::3], b.reshape(4, 6)[:, ::-2], b.reshape(4, 6).T,
              b[5:6], b.astype(np.float32)[::-3]):
        lo, n = cpu.byte_span(a)
        assert (lo, lo + n) == tuple(bounds(a))
    assert cpu.byte_span(b[:0]) == (0, 0)


def test_the_kernels_overlap_test_is_conservative():
    """The kernels compare spans (first to last byte): never "apart" for arrays that share
    a byte, and "overlapping" for interleaved strided ones that share none."""
    apart = bn_kernels._apart_jit
    buf = np.zeros(40, np.float32)
    assert apart(buf[:10], buf[10:]) and apart(buf[9::-1], buf[10:]) and apart(buf[:0], buf)
    assert not apart(buf[0:20:2], buf[10:20])  # strided, spanning into the other
    assert not apart(buf[9::-1], buf[9:]) and not apart(buf, buf)
    assert not apart(buf[0::2], buf[1::2])  # no byte shared: the conservative answer
    stats = np.zeros((3, 4))
    assert not apart(stats, stats[2]) and apart(stats, buf)


def test_calls_the_kernel_refuses_run_through_the_detailed_checks(monkeypatch):
    """A call the kernel refuses (say, interleaved running statistics, which share no byte)
    goes through the exact checks and then runs unchecked, with the same results."""
    d = _fresh()
    x, gamma, beta, dy = d["x"], d["gamma"], d["beta"], d["dy"]

    def step():
        rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
        y, cache = bn.forward(x, gamma, beta, running_mean=rm, running_var=rv)
        return (y, rm, rv, *bn.backward(dy, cache))

    expect = step()
    real, checks = bn_kernels.get, []

    def refusing(name, x):  # a kernel that refuses every checked call
        kernel = real(name, x)

        def call(*args):
            checks.append(args[-1])
            return False if args[-1] else kernel(*args)
        return call

    monkeypatch.setattr(bn_kernels, "get", refusing)
    for a, b in zip(step(), expect, strict=True):
        assert np.array_equal(a, b)
    assert checks == [True, False, True, False]


def test_a_refused_forward_leaves_the_batch_counter():
    d = _fresh()
    counter = np.zeros((), np.int64)
    with pytest.raises(ValueError, match="share memory"):
        bn.forward(d["x"], d["gamma"], d["beta"], running_mean=d["rm"], running_var=d["rm"],
                   momentum=None, num_batches_tracked=counter)
    assert counter == 0
    bn.forward(d["x"], d["gamma"], d["beta"], running_mean=d["rm"], running_var=d["rv"],
               momentum=None, num_batches_tracked=counter)
    assert counter == 1


def _run_all(shape, axis, threads):
    x, gamma, beta, dy = data(shape, axis, np.float32, seed=70)
    c = gamma.size
    old = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
        y, cache = bn.forward(x, gamma, beta, axis=axis, running_mean=rm, running_var=rv)
        dx, dg, db = bn.backward(dy, cache)
        ye, ce = bn.forward(x, gamma, beta, axis=axis, training=False, running_mean=rm,
                            running_var=rv)
        dxe, dge, dbe = bn.backward(dy, ce)
    finally:
        numba.set_num_threads(old)
    return y, dx, dg, db, rm, rv, ye, dxe, dge, dbe


@pytest.mark.parametrize(("shape", "axis"), [((8, 16, 40, 40), 1), ((40, 48, 7, 7), 1),
                                             ((3, 2, 9000), 1), ((1024, 96), 1),
                                             ((4, 20, 20, 64), -1), ((2, 3, 40000), 1),
                                             ((400, 4, 10, 10), 1), ((2, 200, 10, 10), 1),
                                             ((2, 16, 9000), 1)],
                         ids=["NCHW-groups", "NCHW-7x7", "NCL-long", "NC", "NHWC",
                              "NCL-pieces", "NCHW-streamed", "NCHW-uneven-groups",
                              "NCL-groups-pieces"])
def test_bit_identical_at_one_and_all_threads(shape, axis, monkeypatch):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs at least two threads")
    monkeypatch.setattr(bn_kernels, "get", lambda name, x: bn_kernels.kernel(name, True))
    one = _run_all(shape, axis, 1)
    many = _run_all(shape, axis, numba.config.NUMBA_NUM_THREADS)
    for a, b in zip(one, many, strict=True):
        assert np.array_equal(a, b)
    x, gamma, beta, dy = data(shape, axis, np.float32, seed=70)
    assert rel_err(one[0], ref_forward(x, gamma, beta, axis)) < 2e-6
    assert rel_err(one[1], ref_backward(dy, x, gamma, axis)[0]) < 1e-5


def test_nothing_is_compiled_at_import():
    code = ("import fastopt, fastopt.batchnorm.kernels as k; "
            "assert k.kernel.cache_info().currsize == 0")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------ bad input


def _fresh():
    x, gamma, beta, dy = data((4, 3, 2), 1, np.float32, seed=80)
    return {"x": x, "gamma": gamma, "beta": beta, "dy": dy,
            "rm": np.zeros(3, np.float32), "rv": np.ones(3, np.float32),
            "out": np.full(x.shape, 7.0, np.float32)}


def _ro(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _overlapping(d, shift):
    """x and out as views of one buffer, out ``shift`` values further on."""
    n, shape = d["x"].size, d["x"].shape
    buf = np.zeros(n + shift, np.float32)
    buf[:n] = d["x"].ravel()
    return {"x": buf[:n].reshape(shape), "out": buf[shift:].reshape(shape)}


BAD_FORWARD = {
    "x not an array": (lambda d: {"x": d["x"].tolist()}, TypeError, "numpy.ndarray"),
    "x 1-D": (lambda d: {"x": d["x"].ravel()}, ValueError, "ndim 1"),
    "x float16": (lambda d: {"x": d["x"].astype(np.float16)}, TypeError, "float16.*float32"),
    "x int": (lambda d: {"x": d["x"].astype(np.int32)}, TypeError, "int32"),
    "x not contiguous": (lambda d: {"x": np.zeros((4, 3, 4), np.float32)[:, :, ::2]},
                         ValueError, "C-contiguous"),
    "x empty": (lambda d: {"x": np.zeros((0, 3, 2), np.float32)}, ValueError, "no values"),
    "gamma shape": (lambda d: {"gamma": d["gamma"][:2]}, ValueError, r"gamma has shape \(2,\)"),
    "beta shape": (lambda d: {"beta": np.zeros(4, np.float32)}, ValueError, "beta has shape"),
    "gamma dtype": (lambda d: {"gamma": d["gamma"].astype(np.float64)}, TypeError,
                    "gamma has dtype float64"),
    "gamma without beta": (lambda d: {"beta": None}, ValueError, "both gamma and beta"),
    "running_mean shape": (lambda d: {"rm": np.zeros(4, np.float32)}, ValueError,
                           "running_mean has shape"),
    "running_var shape": (lambda d: {"rv": np.ones((3, 1), np.float32)}, ValueError,
                          "running_var has shape"),
    "running_var int": (lambda d: {"rv": np.ones(3, np.int64)}, TypeError, "running_var"),
    "running_var read-only": (lambda d: {"rv": _ro(d["rv"])}, ValueError, "read-only"),
    "one running array": (lambda d: {"rv": None}, ValueError, "both running_mean"),
    "out shape": (lambda d: {"out": np.full((4, 3, 3), 7.0, np.float32)}, ValueError, "out has"),
    "out dtype": (lambda d: {"out": np.full((4, 3, 2), 7.0)}, ValueError, "float64"),
    "out read-only": (lambda d: {"out": _ro(d["out"])}, ValueError, "read-only"),
    "out is x in training": (lambda d: {"out": d["x"]}, ValueError, "overlaps x"),
    "one value per channel": (lambda d: {"x": d["x"][:1, :, :1].copy()}, ValueError,
                              "more than one value per channel"),
    "one value per channel NC": (lambda d: {"x": d["x"][:1, :, 0].copy()}, ValueError,
                                 "more than one value per channel"),
    "axis 0": (lambda d: {"axis": 0}, ValueError, "axis must be 1"),
    "momentum > 1": (lambda d: {"momentum": 1.5}, ValueError, "momentum"),
    "momentum None, no counter": (lambda d: {"momentum": None}, ValueError,
                                  "num_batches_tracked"),
    "eps < 0": (lambda d: {"eps": -1.0}, ValueError, "eps"),
    "eval without running stats": (lambda d: {"training": False, "rm": None, "rv": None},
                                   ValueError, "needs running_mean"),
    "running stats share memory": (lambda d: {"rv": d["rm"]}, ValueError, "share memory"),
    "out partly over x": (lambda d: _overlapping(d, 3), ValueError, "overlaps x"),
    "out partly over x, eval": (lambda d: {**_overlapping(d, 1), "training": False},
                                ValueError, "overlaps x"),
    "x a list, eval": (lambda d: {"training": False, "x": d["x"].tolist()}, TypeError,
                       "numpy.ndarray"),
    "eps NaN": (lambda d: {"eps": float("nan")}, ValueError, "eps"),
    "training not a bool": (lambda d: {"training": 1}, ValueError, "training"),
    "counter float": (lambda d: {"num_batches_tracked": np.zeros(1)}, ValueError,
                      "num_batches_tracked"),
    "stats_out shape": (lambda d: {"stats_out": np.zeros((3, 2))}, ValueError,
                        r"stats_out has shape \(3, 2\)"),
    "stats_out float32": (lambda d: {"stats_out": np.zeros((3, 3), np.float32)}, ValueError,
                          "stats_out .* float64"),
    "stats_out a list": (lambda d: {"stats_out": [[0.0] * 3] * 3}, TypeError, "stats_out"),
    "stats_out read-only": (lambda d: {"stats_out": _ro(np.zeros((3, 3)))}, ValueError,
                            "stats_out must be C-contiguous and writable"),
    "stats_out over running_mean": (lambda d: _stats_over_running(d), ValueError,
                                    "stats_out shares memory"),
    "out over running_var": (lambda d: {"rv": d["out"].reshape(-1)[3:6]}, ValueError,
                             "out shares memory with running_var"),
    "out over running_var, eval": (lambda d: {"rv": d["out"].reshape(-1)[3:6],
                                              "training": False}, ValueError,
                                   "out shares memory with running_var"),
    "out over beta": (lambda d: {"beta": d["out"].reshape(-1)[:3]}, ValueError,
                      "out shares memory with beta"),
    "running_mean is gamma": (lambda d: {"rm": d["gamma"]}, ValueError,
                              "running_mean shares memory with gamma"),
    "running_var over x": (lambda d: {"rv": d["x"].reshape(-1)[:3]}, ValueError,
                           "running_var shares memory with x"),
    "counter negative": (lambda d: {"num_batches_tracked": np.array(-3), "momentum": None},
                         ValueError, "num_batches_tracked counts batches: it must be >= 0"),
}


def _stats_over_running(d):
    """A stats_out whose first row holds running_mean (float32 views of one buffer)."""
    stats = np.zeros((3, 3))
    return {"stats_out": stats, "rm": stats[0].view(np.float32)[:3]}


#: Bad only through overlapping memory: forward's fast test for common calls lets these
#: through, and the kernel refuses them before writing anything (then the detailed checks
#: name the overlap).
OVERLAP_FORWARD = {"out is x in training", "running stats share memory", "out partly over x",
                   "out partly over x, eval", "stats_out over running_mean",
                   "out over running_var", "out over running_var, eval", "out over beta",
                   "running_mean is gamma", "running_var over x"}


@pytest.mark.parametrize("case", list(BAD_FORWARD))
def test_bad_forward_input_is_refused_and_changes_nothing(case):
    change, exc, msg = BAD_FORWARD[case]
    d = _fresh()
    kw = {"axis": 1, "eps": EPS, "momentum": 0.1, "training": True,
          "num_batches_tracked": None, "stats_out": None}
    d.update(change(d))
    kw.update({k: d.pop(k) for k in list(d) if k in kw})
    rm, rv, out = d["rm"], d["rv"], d["out"]
    so = kw["stats_out"]
    so = so if isinstance(so, np.ndarray) else None
    before = [None if a is None else a.copy() for a in (rm, rv, out, so)]
    # forward's fast test for common calls sends every other bad call to the detailed checks
    plain = bn._plain_call(d["x"], d["gamma"], d["beta"], kw["eps"], kw["training"],
                           kw["momentum"], rm, rv, kw["axis"], out,
                           kw["num_batches_tracked"], kw["stats_out"])
    assert (plain is not None) == (case in OVERLAP_FORWARD)
    with pytest.raises(exc, match=msg):
        bn.forward(d["x"], d["gamma"], d["beta"], running_mean=rm, running_var=rv, out=out,
                   **kw)
    for a, b in zip((rm, rv, out, so), before, strict=True):
        assert a is None or np.array_equal(a, b)


BAD_BACKWARD = {
    "dy shape": (lambda d, c: ((d["dy"][:2].copy(), c), {}), ValueError, "dy has shape"),
    "dy dtype": (lambda d, c: ((d["dy"].astype(np.float64), c), {}), ValueError,
                 "dy has shape .* float64"),
    "dy not contiguous": (lambda d, c: ((np.zeros((4, 3, 4), np.float32)[:, :, ::2], c), {}),
                          ValueError, "C-contiguous"),
    "dy float16": (lambda d, c: ((d["dy"].astype(np.float16), c), {}), TypeError, "float16"),
    "not a cache": (lambda d, c: ((d["dy"], {}), {}), TypeError, "BatchNormCache"),
    "out shape": (lambda d, c: ((d["dy"], c), {"out": np.empty((4, 3), np.float32)}),
                  ValueError, "out \\(dx\\) has shape"),
    "out is x": (lambda d, c: ((d["dy"], c), {"out": d["x"]}), ValueError, "overlaps"),
    "dgamma shape": (lambda d, c: ((d["dy"], c), {"out": (None, np.empty(2, np.float32),
                                                           None)}), ValueError, "dgamma"),
    "dbeta dtype": (lambda d, c: ((d["dy"], c), {"out": (None, None, np.empty(3))}),
                    TypeError, "dbeta"),
    "out tuple of 2": (lambda d, c: ((d["dy"], c), {"out": (None, None)}), ValueError,
                       "tuple"),
    "out partly over dy": (lambda d, c: (((o := _overlapping({"x": d["dy"]}, 2))["x"], c),
                                         {"out": o["out"]}), ValueError, "partly overlaps dy"),
    "dgamma is dbeta": (lambda d, c: ((d["dy"], c), {"out": (None, e := np.empty(3, np.float32),
                                                             e)}), ValueError, "share memory"),
    "dgamma read-only": (lambda d, c: ((d["dy"], c), {"out": (None, _ro(np.empty(3, np.float32)),
                                                              None)}), ValueError, "read-only"),
    "dgamma over dy": (lambda d, c: ((d["dy"], c), {"out": (None, d["dy"].reshape(-1)[:3],
                                                            None)}),
                       ValueError, r"out \(dgamma\) shares memory with dy"),
    "dbeta over x": (lambda d, c: ((d["dy"], c), {"out": (None, None, d["x"].reshape(-1)[:3])}),
                     ValueError, r"out \(dbeta\) shares memory with the forward's x"),
    "dbeta over dx": (lambda d, c: ((d["dy"], c), {"out": (o := np.empty_like(d["x"]), None,
                                                           o.reshape(-1)[:3])}),
                      ValueError, r"out \(dx\) shares memory with out \(dbeta\)"),
    "dgamma is gamma": (lambda d, c: ((d["dy"], c), {"out": (None, d["gamma"], None)}),
                        ValueError, r"out \(dgamma\) shares memory with the forward's gamma"),
}


#: As OVERLAP_FORWARD, for backward.
OVERLAP_BACKWARD = {"out is x", "out partly over dy", "dgamma is dbeta", "dgamma over dy",
                    "dbeta over x", "dbeta over dx", "dgamma is gamma"}


def test_backward_refuses_dx_over_the_forward_statistics():
    d = _fresh()
    dx = np.empty_like(d["x"])
    stats = dx.reshape(-1).view(np.float64)[:9].reshape(3, 3)  # in dx's memory
    _, cache = bn.forward(d["x"], d["gamma"], d["beta"], stats_out=stats)
    saved = stats.copy()
    with pytest.raises(ValueError, match=r"out \(dx\) shares memory with the forward's mean"):
        bn.backward(d["dy"], cache, out=dx)
    assert np.array_equal(stats, saved)


def test_backward_checks_the_statistics_rows_it_reads_whatever_their_layout():
    """A cache holding statistics whose rows interleave (a transposed (C, 3) array): a
    dgamma over the mean's and inv_std's values is refused by the host's rules. (The rules
    themselves: a backward call would first compile a kernel for strided statistics, ~16 s
    of a cold CI run, only to be refused.)"""
    from fastopt.batchnorm import overlap
    from fastopt.drivers import cpu

    d = _fresh()
    _, cache = bn.forward(d["x"], d["gamma"], d["beta"])
    c = d["gamma"].size
    big = np.zeros(4 * c, np.float64)
    stats = big[:3 * c].reshape(c, 3).T  # rows interleaved in memory
    stats[...] = cache.stats
    over = big.view(np.float32)[2 * c:3 * c]  # within big[c:1.5c]: mean[1], inv_std[0]...
    with pytest.raises(ValueError, match="shares memory with the forward's (mean|inv_std)"):
        overlap.check_backward(cpu.byte_span, d["dy"], cache._replace(stats=stats), None, over,
                               None, exact=np.shares_memory)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_backward_overlap_precheck_takes_one_strided_and_one_contiguous_gradient(dtype):
    """The kernels' overlap pre-check (what backward runs first) with dgamma strided and
    dbeta contiguous: numba typed the pair as a tuple it could not loop over. The check
    itself, not a whole backward: compiling strided-layout kernels costs ~20 s of cold CI
    each."""
    from fastopt.batchnorm import kernels

    x, dy, dx = (np.zeros(30, dtype) for _ in range(3))
    gamma, mean, inv_std = np.ones(3, dtype), np.zeros(3), np.ones(3)
    buf = np.zeros(6, dtype)
    check = kernels._backward_apart_jit
    assert check(dy, x, gamma, mean, inv_std, buf[::2], np.zeros(3, dtype), dx)
    assert not check(dy, x, gamma, mean, inv_std, buf[::2], buf[1:4], dx)  # both hold buf[2]


@pytest.mark.parametrize("case", list(BAD_BACKWARD))
def test_bad_backward_input_is_refused_and_changes_nothing(case):
    change, exc, msg = BAD_BACKWARD[case]
    d = _fresh()
    _, cache = bn.forward(d["x"], d["gamma"], d["beta"])
    args, kw = change(d, cache)
    out = kw.get("out")
    written = [a for a in (d["x"], args[0], *(out if isinstance(out, tuple) else (out,)))
               if isinstance(a, np.ndarray)]
    for a in written:  # values no backward would write, so any write shows
        if a.flags.writeable:
            a.reshape(-1)[:] = np.arange(a.size)
    before = [a.copy() for a in written]
    if isinstance(args[1], bn.BatchNormCache):  # backward's fast test sends the others on
        plain = bn._plain_backward(args[0], d["x"], args[1], out)
        assert (plain is not None) == (case in OVERLAP_BACKWARD)
    with pytest.raises(exc, match=msg):
        bn.backward(*args, **kw)
    for a, b in zip(written, before, strict=True):
        assert np.array_equal(a, b)


def _layer_with_state():
    layer = fastopt.BatchNorm(3)
    layer.forward(_fresh()["x"])
    return layer, layer.state_dict()


def _same_state(layer, sd):
    now = layer.state_dict()
    return all(np.array_equal(now[k], sd[k]) for k in sd)


@pytest.mark.parametrize("case", [
    ("forward float64", lambda L: L.forward(np.zeros((4, 3), np.float64)), TypeError,
     "float64; this BatchNorm is float32"),
    ("forward channels", lambda L: L.forward(np.zeros((4, 5), np.float32)), ValueError,
     "5 channels"),
    ("forward one value", lambda L: L.forward(np.zeros((1, 3), np.float32)), ValueError,
     "more than one value"),
    ("calibrate bad batch", lambda L: L.calibrate([np.ones((4, 3), np.float32),
                                                   np.ones((4, 3), np.float16)]),
     TypeError, "float16"),
    ("calibrate empty", lambda L: L.calibrate([]), ValueError, "no batches"),
    ("calibrate one value", lambda L: L.calibrate([np.ones((1, 3), np.float32)]), ValueError,
     "at least two values"),
    ("load missing key", lambda L: L.load_state_dict({"running_mean": np.zeros(3)}),
     ValueError, "missing"),
    ("load bad shape", lambda L: L.load_state_dict({**L.state_dict(),
                                                    "running_var": np.ones(4)}),
     ValueError, r"running_var.*\(3,\)"),
    ("load negative var", lambda L: L.load_state_dict({**L.state_dict(),
                                                       "running_var": -np.ones(3)}),
     ValueError, "negative"),
    ("load NaN mean", lambda L: L.load_state_dict({**L.state_dict(),
                                                   "running_mean": np.full(3, np.nan)}),
     ValueError, "NaN"),
    ("load bad counter", lambda L: L.load_state_dict({**L.state_dict(),
                                                      "num_batches_tracked": -1}),
     ValueError, "num_batches_tracked"),
    ("load counter past int64", lambda L: L.load_state_dict(
        {**L.state_dict(), "weight": np.full(3, 5.0), "num_batches_tracked": np.uint64(2**63)}),
     ValueError, "num_batches_tracked"),
    ("load weight past float32", lambda L: L.load_state_dict(
        {**L.state_dict(), "weight": np.full(3, 1e300)}), ValueError, "Inf values .*float32"),
    ("backward first", lambda L: fastopt.BatchNorm(3).backward(np.zeros((4, 3), np.float32)),
     RuntimeError, "forward first"),
], ids=lambda c: c[0])
def test_bad_layer_input_is_refused_and_changes_nothing(case):
    _, call, exc, msg = case
    layer, sd = _layer_with_state()
    with pytest.raises(exc, match=msg):
        call(layer)
    assert _same_state(layer, sd)


@pytest.mark.parametrize(("kwargs", "msg"), [
    ({"num_features": 0}, "num_features"),
    ({"num_features": 3, "eps": -1}, "eps"),
    ({"num_features": 3, "momentum": 2.0}, "momentum"),
    ({"num_features": 3, "axis": 2}, "axis"),
    ({"num_features": 3, "dtype": np.float16}, "float16"),
    ({"num_features": 3, "params": "bn1"}, "pair"),
    ({"num_features": 3, "params": (fastopt.FlatParams({"w": 3}), "bn1")},
     re.escape("flat_shapes(3, 'bn1')")),
    ({"num_features": 4, "params": (fastopt.FlatParams(fastopt.BatchNorm.flat_shapes(3, "b")),
                                    "b")}, r"not \(4,\)"),
    ({"num_features": 3, "affine": False,
      "params": (fastopt.FlatParams(fastopt.BatchNorm.flat_shapes(3, "b")), "b")}, "affine"),
])
def test_bad_layer_construction(kwargs, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        fastopt.BatchNorm(**kwargs)

"""BatchNorm on GPU arrays against the CPU path (CUDA simulator in CI; see conftest.py)."""

import numpy as np
import pytest
from cuda_support import host, needs_numba_cuda, to_device

from fastopt import batchnorm as bn

pytestmark = needs_numba_cuda

CASES = [((4, 3, 5), 1), ((6, 3), -1), ((2, 2, 3, 3), -1)]


def _data(shape, axis, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2.0 + 3.0).astype(np.float32)
    c = shape[axis]
    gamma = rng.standard_normal(c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    return x, gamma, beta, dy, c


@pytest.mark.parametrize(("shape", "axis"), CASES)
def test_training_forward_backward_and_running_stats_match_cpu(shape, axis):
    x, gamma, beta, dy, c = _data(shape, axis)
    rm, rv = np.full(c, 0.5, np.float32), np.full(c, 2.0, np.float32)
    drm, drv = to_device(rm), to_device(rv)
    y, cache = bn.forward(x, gamma, beta, running_mean=rm, running_var=rv, axis=axis)
    yd, cached = bn.forward(to_device(x), to_device(gamma), to_device(beta),
                            running_mean=drm, running_var=drv, axis=axis)
    np.testing.assert_allclose(host(yd), y, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(host(drm), rm, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(host(drv), rv, rtol=1e-6, atol=1e-7)
    _assert_backward_matches(dy, cache, cached, rtol=(1e-4, 1e-5), atol=1e-5)



def _assert_backward_matches(dy, cache, cached, rtol, atol):
    """The device backward (from ``cached``) against the CPU one (from ``cache``); ``rtol``
    is (for dx, for dgamma and dbeta)."""
    dx, dg, db = bn.backward(dy, cache)
    dxd, dgd, dbd = bn.backward(to_device(dy), cached)
    np.testing.assert_allclose(host(dxd), dx, rtol=rtol[0], atol=atol)
    np.testing.assert_allclose(host(dgd), dg, rtol=rtol[1], atol=atol)
    np.testing.assert_allclose(host(dbd), db, rtol=rtol[1], atol=atol)

def test_inference_and_cumulative_average_match_cpu():
    x, gamma, beta, dy, c = _data((5, 3, 2), 1, seed=3)
    rm, rv = np.zeros(c, np.float64), np.ones(c, np.float64)
    drm, drv = to_device(rm), to_device(rv)
    count, dcount = np.zeros((), np.int64), np.zeros((), np.int64)
    for k in range(2):  # momentum=None: the exact average of the batches' statistics
        xs = x + k
        bn.forward(xs, None, None, running_mean=rm, running_var=rv, momentum=None,
                   num_batches_tracked=count)
        yd, _ = bn.forward(to_device(xs), None, None, running_mean=drm, running_var=drv,
                           momentum=None, num_batches_tracked=dcount)
    assert int(dcount) == int(count) == 2
    np.testing.assert_allclose(host(drm), rm, rtol=1e-12)
    np.testing.assert_allclose(host(drv), rv, rtol=1e-12)
    y, cache = bn.forward(x, gamma, beta, training=False, running_mean=rm, running_var=rv)
    yd, cached = bn.forward(to_device(x), to_device(gamma), to_device(beta), training=False,
                            running_mean=drm, running_var=drv)
    np.testing.assert_allclose(host(yd), y, rtol=1e-5, atol=1e-6)
    _assert_backward_matches(dy, cache, cached, rtol=(1e-5, 1e-5), atol=1e-6)


def test_bad_device_input_is_refused_and_running_stats_stay():
    x, gamma, beta, dy, c = _data((4, 3, 5), 1)
    drm, drv = to_device(np.zeros(c, np.float32)), to_device(np.ones(c, np.float32))
    dx_ = to_device(x)
    with pytest.raises(ValueError, match="GPU array"):
        bn.forward(dx_, gamma, beta, running_mean=drm, running_var=drv)
    with pytest.raises(ValueError, match="shape"):
        bn.forward(dx_, to_device(gamma[:2]), to_device(beta[:2]),
                   running_mean=drm, running_var=drv)
    with pytest.raises(TypeError, match="dtype"):
        bn.forward(dx_, to_device(gamma.astype(np.float64)), to_device(beta),
                   running_mean=drm, running_var=drv)
    with pytest.raises(ValueError, match="more than one value"):
        bn.forward(to_device(x[:1, :, :1]), to_device(gamma), to_device(beta),
                   running_mean=drm, running_var=drv)
    np.testing.assert_array_equal(host(drm), 0.0)
    np.testing.assert_array_equal(host(drv), 1.0)
    with pytest.raises(ValueError, match="no values to normalise"):
        bn.forward(to_device(np.ones((0, c), np.float32)), None, None, training=False,
                   running_mean=drm, running_var=drv)
    _, cache = bn.forward(dx_, to_device(gamma), to_device(beta))
    with pytest.raises(ValueError, match="GPU array"):
        bn.backward(dy, cache)


def test_overlapping_device_arrays_are_refused_before_anything_is_written():
    """The host path's overlap rules on the device: each array a call writes apart from
    every other (dx may be dy itself)."""
    x, gamma, beta, dy, c = _data((4, 3, 5), 1)
    dxv, dg, db = to_device(x), to_device(gamma), to_device(beta)
    buf = to_device(np.zeros(x.size, np.float32)).reshape(x.shape)  # y's buffer
    flat = buf.reshape(x.size)
    drm, drv = to_device(np.zeros(c, np.float32)), flat[3:6]  # running_var in y's buffer
    with pytest.raises(ValueError, match="out shares memory with running_var"):
        bn.forward(dxv, dg, db, running_mean=drm, running_var=drv, out=buf)
    with pytest.raises(ValueError, match="running_mean shares memory with gamma"):
        bn.forward(dxv, dg, db, running_mean=dg, running_var=to_device(np.ones(c, np.float32)))
    np.testing.assert_array_equal(host(buf), 0.0)
    np.testing.assert_array_equal(host(dg), gamma)
    _, cache = bn.forward(dxv, dg, db)
    ddy = to_device(dy)
    dyflat = ddy.reshape(x.size)
    for out, msg in (((None, dyflat[:3], None), r"out \(dgamma\) shares memory with dy"),
                     ((None, None, dg), r"out \(dbeta\) shares memory with the forward's gamma"),
                     ((None, db := to_device(beta), db),
                      "out .dgamma. and out .dbeta. share memory")):
        with pytest.raises(ValueError, match=msg):
            bn.backward(ddy, cache, out=out)
    np.testing.assert_array_equal(host(ddy), dy)
    big = to_device(np.zeros(x.size + 2, np.float32))
    part = big[1:x.size + 1].reshape(x.shape)
    with pytest.raises(ValueError, match="partly overlaps dy"):
        bn.backward(big[:x.size].reshape(x.shape), cache, out=part)
    dx_over_dy = bn.backward(ddy, cache, out=ddy)[0]  # dx over dy itself is fine
    assert dx_over_dy is ddy


def test_statistics_buffer_on_the_device():
    """stats_out on the device receives the CPU's statistics, the backward reads them
    from there; a wrong one is refused before anything is written."""
    x, gamma, beta, dy, c = _data((4, 3, 5), 1, seed=3)
    _, cache = bn.forward(x, gamma, beta)
    want_dx = bn.backward(dy, cache)[0]
    stats = to_device(np.full((3, c), np.nan))
    dgamma, dbeta = to_device(gamma), to_device(beta)
    drm, drv = to_device(np.zeros(c, np.float32)), to_device(np.ones(c, np.float32))
    _, dcache = bn.forward(to_device(x), dgamma, dbeta, running_mean=drm, running_var=drv,
                           stats_out=stats)
    assert dcache.stats is stats
    np.testing.assert_allclose(host(stats), cache.stats, rtol=1e-6, atol=1e-7)
    dx = bn.backward(to_device(dy), dcache)[0]
    np.testing.assert_allclose(host(dx), want_dx, rtol=1e-4, atol=1e-5)
    rm_before = host(drm)
    for bad, msg in ((to_device(np.zeros((3, c + 1))), "stats_out has shape"),
                     (to_device(np.zeros((3, c), np.float32)), "float64"),
                     (np.zeros((3, c)), "GPU array")):
        with pytest.raises(ValueError, match=msg):
            bn.forward(to_device(x), dgamma, dbeta, running_mean=drm, running_var=drv,
                       stats_out=bad)
    np.testing.assert_array_equal(host(drm), rm_before)


def test_backward_outputs_over_the_device_statistics_rows_it_reads_are_refused():
    """Backward reads rows 0 (mean) and 2 (1/sqrt(var + eps)) of the forward's (3, C)
    statistics: a gradient written over either is refused, naming the row; over row 1
    (the variance, not read) it is allowed, as on the host."""
    x, gamma, beta, dy, c = _data((4, 3, 5), 1, seed=4)
    big = to_device(np.zeros(3 * c + 2 * c))
    stats = big[:3 * c].reshape(3, c)
    _, cache = bn.forward(to_device(x), to_device(gamma), to_device(beta), stats_out=stats)
    saved = host(stats)
    ddy = to_device(dy)
    for row, name in ((0, "mean"), (2, "inv_std")):
        over = big[row * c:(row + 1) * c].view(np.float32)[:c]  # dgamma's bytes in the row
        with pytest.raises(ValueError, match=rf"out \(dgamma\) shares memory with the "
                                             rf"forward's {name}"):
            bn.backward(ddy, cache, out=(None, over, None))
    np.testing.assert_array_equal(host(stats), saved)
    over_var = big[c:2 * c].view(np.float32)[:c]  # in the variance row: fine
    dgamma = bn.backward(ddy, cache, out=(None, over_var, None))[1]
    np.testing.assert_array_equal(host(stats)[[0, 2]], saved[[0, 2]])
    np.testing.assert_allclose(host(dgamma), bn.backward(dy, bn.forward(x, gamma, beta)[1])[1],
                               rtol=1e-4, atol=1e-5)


def test_layer_on_the_device_with_flatparams_matches_the_cpu_layer():
    import fastopt

    rng = np.random.default_rng(5)
    shapes = {"w": (3,), **fastopt.BatchNorm.flat_shapes(3, "bn")}
    layers, flats, opts = {}, {}, {}
    for device in ("cpu", "cuda"):
        flats[device] = fastopt.FlatParams(shapes, device=device)
        layers[device] = fastopt.BatchNorm(3, params=(flats[device], "bn"))
        opts[device] = fastopt.Adam(flats[device], lr=0.05)
    assert layers["cuda"].device == "cuda"
    for _ in range(2):
        x = (rng.standard_normal((4, 3, 5)) + 1.0).astype(np.float32)
        dy = rng.standard_normal((4, 3, 5)).astype(np.float32)
        y_c = layers["cpu"].forward(x)
        y_d = layers["cuda"].forward(to_device(x))
        np.testing.assert_allclose(host(y_d), y_c, rtol=1e-5, atol=1e-5)
        dx_c = layers["cpu"].backward(dy)
        dx_d = layers["cuda"].backward(to_device(dy))
        np.testing.assert_allclose(host(dx_d), dx_c, rtol=1e-4, atol=1e-5)
        for device in ("cpu", "cuda"):
            opts[device].step()
    np.testing.assert_allclose(host(flats["cuda"].data), flats["cpu"].data, rtol=1e-5, atol=1e-6)
    sd_c, sd_d = layers["cpu"].state_dict(), layers["cuda"].state_dict()
    for k, v in sd_c.items():
        assert isinstance(sd_d[k], (np.ndarray, np.integer))
        np.testing.assert_allclose(sd_d[k], v, rtol=1e-5, atol=1e-6)
    batches = [rng.standard_normal((6, 3, 2)).astype(np.float32) for _ in range(3)]
    layers["cpu"].calibrate(batches)
    layers["cuda"].calibrate([to_device(b) for b in batches])
    np.testing.assert_allclose(host(layers["cuda"].running_var), layers["cpu"].running_var,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="host array"):
        layers["cuda"].forward(batches[0])
    fresh = fastopt.BatchNorm(3, device="cuda")
    fresh.load_state_dict(sd_c)
    np.testing.assert_allclose(host(fresh.running_mean), sd_c["running_mean"])

"""FlatParams: layout, views, and one fused pass for many arrays."""

import numpy as np
import pytest

import fastopt


def test_layout_alignment_and_views():
    flat = fastopt.FlatParams({"w1": (784, 256), "b1": (256,), "w2": (3, 5)}, dtype=np.float32)
    assert flat.data.ndim == 1 and flat.data.dtype == np.float32
    for name in flat:
        assert (flat.data.ctypes.data + 4 * flat.offset(name)) % 64 == 0
        assert np.shares_memory(flat[name], flat.data)
        assert np.shares_memory(flat.grads[name], flat.grad)
    assert flat["w1"].shape == (784, 256) and flat.params["b1"].shape == (256,)
    flat["b1"][:] = 2.0
    flat.grads["w2"][...] = 3.0
    lo = flat.offset("b1")
    assert np.all(flat.data[lo : lo + 256] == 2.0)
    assert flat.grad.sum() == 45.0
    assert flat.size == 784 * 256 + 256 + 15


def test_from_arrays_copies_values_and_dtype():
    rng = np.random.default_rng(0)
    arrays = {"a": rng.standard_normal((4, 3)), "b": rng.standard_normal(7)}
    flat = fastopt.FlatParams.from_arrays(arrays)
    assert flat.dtype == np.float64
    for k, v in arrays.items():
        assert np.array_equal(flat[k], v) and not np.shares_memory(flat[k], v)
    assert fastopt.FlatParams.from_arrays({"i": np.arange(3)}).dtype == np.float32


def test_bad_flatparams():
    with pytest.raises(TypeError, match="float32 or float64"):
        fastopt.FlatParams({"a": 3}, dtype=np.int32)
    with pytest.raises(ValueError, match="at least one"):
        fastopt.FlatParams({})
    with pytest.raises(ValueError, match="invalid shape"):
        fastopt.FlatParams({"a": (-1, 2)})
    flat = fastopt.FlatParams({"a": 3})
    with pytest.raises(KeyError, match="no array 'b'"):
        flat["b"]
    with pytest.raises(KeyError):
        flat.subset("a", "zz")


def test_flat_optimizer_matches_separate_arrays():
    """One fused pass over the buffer gives what per-array steps give (no noise)."""
    rng = np.random.default_rng(1)
    shapes = {"w1": (300, 200), "b1": (200,), "w2": (200, 10), "b2": (10,)}
    init = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    flat = fastopt.FlatParams.from_arrays(init)
    sep = [init[k].copy() for k in shapes]
    opt_flat = fastopt.Adam(flat, lr=1e-2, clip_norm=5.0, weight_decay=0.01)
    opt_sep = fastopt.Adam(sep, lr=1e-2, clip_norm=5.0, weight_decay=0.01)
    assert len(opt_flat._segments) == 1  # a single fused pass
    for _ in range(4):
        gs = [rng.standard_normal(s).astype(np.float32) for s in shapes.values()]
        for k, g in zip(shapes, gs, strict=True):
            flat.grads[k][...] = g
        opt_flat.step()
        opt_sep.step(gs)
    for k, a in zip(shapes, sep, strict=True):
        np.testing.assert_allclose(flat[k], a, rtol=1e-6, atol=1e-7)


def test_flat_groups_and_excluded_arrays():
    flat = fastopt.FlatParams({"w": (20, 5), "b": (5,), "frozen": (4,)}, dtype=np.float64)
    flat.data[:] = 1.0
    flat.grad[:] = 0.0  # pure weight decay
    opt = fastopt.SGD(
        [{"params": flat.subset("w")}, {"params": flat.subset("b"), "weight_decay": 0.0}],
        lr=0.1, weight_decay=0.5,
    )
    opt.step()
    assert np.allclose(flat["w"], 1 - 0.1 * 0.5)
    assert np.all(flat["b"] == 1.0)
    assert np.all(flat["frozen"] == 1.0)


def test_step_with_an_explicit_gradient_buffer():
    flat = fastopt.FlatParams({"a": 10})
    opt = fastopt.SGD(flat, lr=1.0)
    g = np.zeros_like(flat.grad)
    g[flat.offset("a") : flat.offset("a") + 10] = 1.0
    opt.step(g)
    assert np.all(flat["a"] == -1.0)


def test_from_arrays_keeps_the_widest_float_dtype():
    flat = fastopt.FlatParams.from_arrays({"a": np.full(2, 0.1), "b": np.zeros(2, np.float32)})
    assert flat.dtype == np.float64 and flat["a"][0] == 0.1  # not rounded to float32
    assert fastopt.FlatParams.from_arrays({"a": np.zeros(2, np.int64)}).dtype == np.float32


def test_a_subset_steps_alone_and_an_empty_one_is_refused():
    flat = fastopt.FlatParams({"a": 3, "b": 5, "c": 0})
    flat.grads["a"][...] = 1.0
    flat.grads["b"][...] = 1.0
    opt = fastopt.SGD(flat.subset("a"), lr=0.5)
    opt.step()
    assert np.array_equal(flat["a"], [-0.5] * 3) and np.array_equal(flat["b"], [0.0] * 5)
    for empty in (flat.subset(), flat.subset("c")):
        with pytest.raises(ValueError, match="the optimizer got no parameters"):
            fastopt.SGD([{"params": empty}])


def test_an_optimizer_over_a_subset_counts_its_own_values():
    flat = fastopt.FlatParams({"a": 3, "b": 5})
    assert repr(fastopt.SGD(flat.subset("a"))) == "SGD(3 parameters, 1 group(s))"
    assert repr(fastopt.SGD(flat)) == "SGD(8 parameters, 1 group(s))"

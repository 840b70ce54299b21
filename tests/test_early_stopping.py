"""fastopt.EarlyStopping: worked examples of the documented semantics, best-parameter copies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastopt.early_stopping import EarlyStopping
from fastopt.flat import FlatParams

NAN, INF = math.nan, math.inf


def run(es: EarlyStopping, metrics, params=None) -> list[bool]:
    return [es.update(m, params) for m in metrics]


def first_stop(flags: list[bool]) -> int | None:
    return flags.index(True) if True in flags else None


# --------------------------------------------------------------- worked examples


def test_worked_example_patience_2():
    es = EarlyStopping(patience=2)
    #        step:  0     1    2    3
    flags = run(es, [1.0, 0.8, 0.9, 0.85])
    assert flags == [False, False, False, True]
    assert es.best == 0.8 and es.best_step == 1
    assert es.num_bad_steps == 2 and es.wait == 2
    assert es.num_updates == 4 and es.stopped


def test_worked_example_improvement_resets_the_count():
    es = EarlyStopping(patience=3)
    #        step:  0    1    2    3     4    5     6     7
    flags = run(es, [1.0, 0.8, 0.9, 0.85, 0.7, 0.75, 0.72, 0.71])
    assert first_stop(flags) == 7
    assert es.best == 0.7 and es.best_step == 4
    bad = []
    es2 = EarlyStopping(patience=3)
    for m in [1.0, 0.8, 0.9, 0.85, 0.7, 0.75, 0.72, 0.71]:
        es2.update(m)
        bad.append(es2.num_bad_steps)
    assert bad == [0, 0, 1, 2, 0, 1, 2, 3]


def test_never_stops_while_improving():
    es = EarlyStopping(patience=1)
    assert not any(run(es, [5.0, 4.0, 3.0, 2.0, 1.0]))
    assert es.best == 1.0 and es.best_step == 4 and not es.stopped


def test_equal_metric_is_not_an_improvement():
    es = EarlyStopping(patience=2)
    assert run(es, [1.0, 1.0, 1.0]) == [False, False, True]
    assert es.best_step == 0


def test_patience_zero_stops_at_the_first_non_improvement():
    es = EarlyStopping(patience=0)
    assert run(es, [1.0, 0.9, 0.95]) == [False, False, True]
    assert es.best == 0.9 and es.best_step == 1
    # patience 0 and 1 behave alike (Keras / Lightning convention)
    assert run(EarlyStopping(patience=1), [1.0, 0.9, 0.95]) == [False, False, True]


def test_patience_zero_first_update_never_stops():
    es = EarlyStopping(patience=0)
    assert es.update(3.0) is False
    assert es.best == 3.0 and es.best_step == 0


def test_mode_max():
    es = EarlyStopping(patience=2, mode="max")
    #        step:  0    1    2    3    4    5
    flags = run(es, [0.5, 0.7, 0.6, 0.8, 0.8, 0.79])
    assert flags == [False, False, False, False, False, True]
    assert es.best == 0.8 and es.best_step == 3


def test_mode_max_a_decrease_is_bad():
    es = EarlyStopping(patience=1, mode="max")
    assert run(es, [1.0, 0.5]) == [False, True]
    assert es.best == 1.0


def test_mode_min_an_increase_is_bad_and_max_would_improve():
    assert run(EarlyStopping(patience=1, mode="min"), [1.0, 2.0]) == [False, True]
    assert run(EarlyStopping(patience=1, mode="max"), [1.0, 2.0]) == [False, False]


# ------------------------------------------------------------------ min_delta


def test_min_delta_boundary_exact_delta_is_not_an_improvement():
    # 1.0 - 0.25 == 0.75 exactly in binary floating point
    es = EarlyStopping(patience=5, min_delta=0.25)
    es.update(1.0)
    es.update(0.75)  # beats the best by exactly min_delta: NOT an improvement
    assert es.best == 1.0 and es.best_step == 0 and es.num_bad_steps == 1
    es.update(0.5)  # beats it by more: an improvement
    assert es.best == 0.5 and es.best_step == 2 and es.num_bad_steps == 0


def test_min_delta_boundary_mode_max():
    es = EarlyStopping(patience=5, min_delta=0.25, mode="max")
    es.update(1.0)
    es.update(1.25)
    assert es.best == 1.0 and es.num_bad_steps == 1
    es.update(1.2500001)
    assert es.best == 1.2500001 and es.best_step == 2


def test_min_delta_is_measured_from_the_best_not_the_previous_value():
    es = EarlyStopping(patience=5, min_delta=0.15)
    #        step:  0    1    2
    run(es, [1.0, 0.9, 0.8])
    # 0.9 does not beat 1.0 by more than 0.15; 0.8 does (its predecessor 0.9 is irrelevant)
    assert es.best == 0.8 and es.best_step == 2


def test_min_delta_does_not_block_the_first_metric():
    es = EarlyStopping(patience=0, min_delta=100.0)
    assert es.update(1.0) is False
    assert es.best == 1.0 and es.best_step == 0


# ------------------------------------------------------------------ start_from


def test_start_from_warmup_never_bad_never_stops():
    es = EarlyStopping(patience=0, start_from=5)
    #        step:  0    1    2    3    4
    assert run(es, [1.0, 2.0, 3.0, 4.0, 5.0]) == [False] * 5
    assert es.num_bad_steps == 0 and not es.stopped
    assert es.update(6.0) is True  # step 5: first counted step, bad, patience 0
    assert es.best == 1.0 and es.best_step == 0


def test_start_from_warmup_records_the_best():
    es = EarlyStopping(patience=1, start_from=2)
    #        step:  0    1    2
    assert run(es, [1.0, 0.5, 0.7]) == [False, False, True]
    assert es.best == 0.5 and es.best_step == 1


def test_start_from_later_improvement():
    es = EarlyStopping(patience=1, start_from=3)
    #        step:  0    1    2    3    4
    flags = run(es, [1.0, 2.0, 3.0, 0.5, 0.6])
    assert flags == [False, False, False, False, True]
    assert es.best == 0.5 and es.best_step == 3


def test_start_from_saves_params_during_warmup():
    es = EarlyStopping(patience=1, start_from=2)
    p = np.array([1.0, 2.0])
    es.update(1.0, p)
    p[:] = 9.0
    es.update(3.0, p)  # warm-up, not an improvement
    p[:] = 7.0
    assert es.update(2.0, p) is True  # step 2: bad -> stop, restore the warm-up best
    np.testing.assert_array_equal(p, [1.0, 2.0])


# ---------------------------------------------------------------- non-finite


@pytest.mark.parametrize("bad", [NAN, INF, -INF, np.float32("nan")])
def test_nonfinite_stops_at_once(bad):
    es = EarlyStopping(patience=100)
    assert run(es, [1.0, 0.9, bad]) == [False, False, True]
    assert es.best == 0.9 and es.best_step == 1
    assert es.num_bad_steps == 0 and es.stopped


@pytest.mark.parametrize("mode", ["min", "max"])
def test_nonfinite_first_metric_stops_and_never_becomes_best(mode):
    es = EarlyStopping(patience=10, mode=mode)
    assert es.update(NAN) is True
    assert es.best is None and es.best_step is None


def test_nonfinite_stops_even_during_warmup():
    es = EarlyStopping(patience=10, start_from=100)
    assert run(es, [1.0, INF]) == [False, True]


def test_check_finite_false_nan_is_just_a_bad_step():
    es = EarlyStopping(patience=2, check_finite=False)
    assert run(es, [1.0, NAN, NAN]) == [False, False, True]
    assert es.best == 1.0 and es.best_step == 0


def test_check_finite_false_infinities_compare_as_numbers():
    es = EarlyStopping(patience=5, check_finite=False)
    run(es, [1.0, INF, -INF])
    assert es.best == -INF and es.best_step == 2
    es = EarlyStopping(patience=5, check_finite=False, mode="max")
    run(es, [NAN, -INF, 1.0])
    assert es.best == 1.0 and es.best_step == 2


@pytest.mark.parametrize(
    "metric", [np.float32(0.5), np.float64(0.5), np.array(0.5), 1, np.int64(2)]
)
def test_metric_types(metric):
    es = EarlyStopping()
    es.update(metric)
    assert es.best == float(metric)


def test_update_after_stop_continues():
    es = EarlyStopping(patience=1)
    assert run(es, [1.0, 2.0, 3.0, 0.5, 0.6]) == [False, True, True, False, True]
    assert es.stopped and es.best == 0.5 and es.best_step == 3


# -------------------------------------------------------------- best parameters


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64).copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_restore_ndarray_exact_bits(dtype):
    rng = np.random.default_rng(0)
    p = np.zeros((4, 5), dtype)
    tiny = np.finfo(dtype).smallest_subnormal
    es = EarlyStopping(patience=3, restore_best=False)
    snapshots = []
    for m in [3.0, 2.0, 2.5, 1.0, 1.5, 1.2]:
        p[...] = rng.standard_normal(p.shape).astype(dtype)
        p[0, :3] = [-0.0, tiny, np.nextafter(dtype(1), dtype(2))]  # bits a cast would lose
        snapshots.append(bits(p))
        es.update(m, p)
    assert es.best_step == 3
    p[...] = 123.0
    es.restore(p)
    np.testing.assert_array_equal(bits(p), snapshots[3])


def test_restore_list_exact_bits():
    rng = np.random.default_rng(1)
    params = [rng.standard_normal((2, 3)), rng.standard_normal(5).astype(np.float32)]
    es = EarlyStopping(patience=10)
    best = None
    for step, m in enumerate([5.0, 4.0, 4.5, 3.0, 3.5]):
        for a in params:
            a[...] = rng.standard_normal(a.shape).astype(a.dtype)
        if step == 3:
            best = [bits(a) for a in params]
        es.update(m, params)
    assert es.best_step == 3
    for a in params:
        a.fill(np.nan)
    es.restore(params)
    for a, ref in zip(params, best, strict=True):
        np.testing.assert_array_equal(bits(a), ref)


def test_restore_tuple_of_arrays():
    params = (np.array([1.0, 2.0]), np.array([[3.0]]))
    es = EarlyStopping()
    es.update(1.0, params)
    params[0][:] = 0.0
    params[1][:] = 0.0
    es.restore(params)
    np.testing.assert_array_equal(params[0], [1.0, 2.0])
    np.testing.assert_array_equal(params[1], [[3.0]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_restore_flatparams_exact_bits(dtype):
    rng = np.random.default_rng(2)
    flat = FlatParams({"w": (3, 4), "b": (4,)}, dtype=dtype)
    es = EarlyStopping(patience=2, restore_best=False)
    best_w = best_b = best_data = None
    for m in [1.0, 0.5, 0.7, 0.6]:
        flat["w"] = rng.standard_normal((3, 4))
        flat["b"] = rng.standard_normal(4)
        if m == 0.5:
            best_w, best_b, best_data = bits(flat["w"]), bits(flat["b"]), bits(flat.data)
        es.update(m, flat)
    assert es.stopped and es.best == 0.5
    data_before = flat.data
    flat.data[:] = -7.0
    es.restore(flat)
    assert flat.data is data_before  # written in place
    np.testing.assert_array_equal(bits(flat["w"]), best_w)
    np.testing.assert_array_equal(bits(flat["b"]), best_b)
    np.testing.assert_array_equal(bits(flat.data), best_data)


def test_flatparams_copy_is_one_buffer_of_the_data():
    flat = FlatParams({"w": (3, 4), "b": (4,)})
    flat.data[:] = np.arange(flat.data.size)
    es = EarlyStopping()
    es.update(1.0, flat)
    saved = es.best_params
    assert isinstance(saved, np.ndarray)
    assert saved.shape == flat.data.shape and saved.dtype == flat.data.dtype
    assert not np.shares_memory(saved, flat.data)
    np.testing.assert_array_equal(saved, flat.data)


@pytest.mark.parametrize("kind", ["flat", "array", "list"])
def test_later_improvements_reuse_the_buffers(kind):
    rng = np.random.default_rng(3)
    if kind == "flat":
        params = FlatParams({"w": (3, 4), "b": (4,)})
        arrays = [params.data]
    elif kind == "array":
        params = np.zeros((3, 4))
        arrays = [params]
    else:
        params = [np.zeros((3, 4)), np.zeros(4, np.float32)]
        arrays = params

    es = EarlyStopping(patience=100)
    es.update(10.0, params)
    first = es.best_params
    first_list = first if kind == "list" else [first]
    ids = [id(b) for b in first_list]
    ptrs = [b.ctypes.data for b in first_list]
    for m in [9.0, 8.0, 8.5, 7.0]:
        for a in arrays:
            a[...] = rng.standard_normal(a.shape)
        snapshot = [a.copy() for a in arrays]
        es.update(m, params)
        now = es.best_params
        now_list = now if kind == "list" else [now]
        if kind != "list":
            assert now is first  # the very same buffer object
        assert [id(b) for b in now_list] == ids
        assert [b.ctypes.data for b in now_list] == ptrs
        if m != 8.5:  # an improvement: the buffer holds the new values
            for b, s in zip(now_list, snapshot, strict=True):
                np.testing.assert_array_equal(b, s)
    assert es.best == 7.0


def test_saved_copy_is_independent_of_later_changes():
    p = np.array([1.0, 2.0, 3.0])
    es = EarlyStopping(patience=5)
    es.update(1.0, p)
    p[:] = 0.0
    es.update(2.0, p)  # not an improvement: the copy must not change
    np.testing.assert_array_equal(es.best_params, [1.0, 2.0, 3.0])


# ---------------------------------------------------------------- restore_best


def test_restore_best_automatic_on_stop():
    p = np.array([1.0, 2.0])
    es = EarlyStopping(patience=1)
    assert es.update(1.0, p) is False
    p[:] = [5.0, 6.0]
    assert es.update(2.0, p) is True
    np.testing.assert_array_equal(p, [1.0, 2.0])


def test_restore_best_automatic_flatparams():
    flat = FlatParams({"w": (3, 4), "b": (4,)})
    flat["w"] = 1.5
    es = EarlyStopping(patience=0)
    es.update(1.0, flat)
    flat["w"] = -3.0
    flat["b"] = 2.0
    assert es.update(1.0, flat) is True
    np.testing.assert_array_equal(flat["w"], np.full((3, 4), 1.5, np.float32))
    np.testing.assert_array_equal(flat["b"], np.zeros(4, np.float32))


def test_restore_best_automatic_on_nan():
    p = np.array([1.0, 2.0])
    es = EarlyStopping(patience=10)
    es.update(1.0, p)
    p[:] = np.nan
    assert es.update(NAN, p) is True
    np.testing.assert_array_equal(p, [1.0, 2.0])


def test_restore_best_false_leaves_params():
    p = np.array([1.0, 2.0])
    es = EarlyStopping(patience=1, restore_best=False)
    es.update(1.0, p)
    p[:] = [5.0, 6.0]
    assert es.update(2.0, p) is True
    np.testing.assert_array_equal(p, [5.0, 6.0])


def test_restore_best_without_params_at_the_stop_touches_nothing():
    p = np.array([1.0, 2.0])
    es = EarlyStopping(patience=1)
    es.update(1.0, p)
    p[:] = [5.0, 6.0]
    assert es.update(2.0) is True
    np.testing.assert_array_equal(p, [5.0, 6.0])


def test_restore_best_with_nothing_saved_is_not_an_error():
    p = np.array([1.0, 2.0])
    es = EarlyStopping(patience=1)
    assert es.update(NAN, p) is True
    np.testing.assert_array_equal(p, [1.0, 2.0])


# ------------------------------------------------------------- restore errors


def test_restore_with_nothing_saved():
    es = EarlyStopping()
    with pytest.raises(ValueError, match="no best parameters"):
        es.restore(np.zeros(3))
    es.update(1.0)  # an improvement without params
    with pytest.raises(ValueError, match="no best parameters"):
        es.restore(np.zeros(3))
    assert es.best_params is None


def test_restore_refuses_a_stale_copy():
    p = np.array([1.0, 2.0])
    es = EarlyStopping()
    es.update(2.0, p)
    es.update(1.0)  # the new best came without params: the kept copy is not the best
    assert es.best_params is None
    with pytest.raises(ValueError, match="best step"):
        es.restore(p)
    p[:] = 4.0
    es.update(0.5, p)  # a later improvement with params makes it valid again
    p[:] = 0.0
    es.restore(p)
    np.testing.assert_array_equal(p, [4.0, 4.0])


@pytest.mark.parametrize(
    "saved, other",
    [
        (np.zeros(3), np.zeros(4)),
        (np.zeros((2, 3)), np.zeros((3, 2))),
        (np.zeros(3), np.zeros(3, np.float32)),
        ([np.zeros(3), np.zeros(2)], [np.zeros(3)]),
        ([np.zeros(3), np.zeros(2)], [np.zeros(3), np.zeros(5)]),
        (np.zeros(3), [np.zeros(3)]),
    ],
)
def test_restore_shape_mismatch(saved, other):
    es = EarlyStopping()
    es.update(1.0, saved)
    with pytest.raises(ValueError, match="restore"):
        es.restore(other)
    with pytest.raises(ValueError, match="params"):
        es.update(0.5, other)


def test_restore_flatparams_layout_mismatch():
    es = EarlyStopping()
    es.update(1.0, FlatParams({"w": (3, 4), "b": (4,)}))
    with pytest.raises(ValueError, match="restore"):
        es.restore(FlatParams({"w": (3, 4), "b": (40,)}))
    with pytest.raises(ValueError, match="restore"):
        es.restore(FlatParams({"w": (3, 4), "b": (4,)}, dtype=np.float64))


@pytest.mark.parametrize("params", [3.0, "abc", [np.zeros(2), 1.0], {"w": np.zeros(2)}])
def test_bad_params_type(params):
    es = EarlyStopping()
    with pytest.raises(TypeError, match="params"):
        es.update(1.0, params)
    with pytest.raises(TypeError, match="params"):
        es.restore(params)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("patience", [-1, -5, 1.5, 2.0, True, None, "3"])
def test_bad_patience(patience):
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=patience)


@pytest.mark.parametrize("min_delta", [-0.1, NAN, INF, "0", None])
def test_bad_min_delta(min_delta):
    with pytest.raises(ValueError, match="min_delta"):
        EarlyStopping(min_delta=min_delta)


@pytest.mark.parametrize("mode", ["minimum", "MIN", "", None, 1])
def test_bad_mode(mode):
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode=mode)


@pytest.mark.parametrize("start_from", [-1, 0.5, True, None])
def test_bad_start_from(start_from):
    with pytest.raises(ValueError, match="start_from"):
        EarlyStopping(start_from=start_from)


@pytest.mark.parametrize("name", ["restore_best", "check_finite"])
def test_bad_bools(name):
    with pytest.raises(ValueError, match=name):
        EarlyStopping(**{name: 1})


@pytest.mark.parametrize("metric", ["0.5", None, True, np.array([1.0, 2.0]), 1 + 2j])
def test_bad_metric(metric):
    es = EarlyStopping()
    with pytest.raises(ValueError, match="metric"):
        es.update(metric)
    assert es.num_updates == 0  # a refused metric is not a step


def test_valid_edge_arguments():
    es = EarlyStopping(patience=0, min_delta=0, mode="max", start_from=0)
    assert es.patience == 0 and es.min_delta == 0.0
    assert EarlyStopping(patience=np.int64(3)).patience == 3

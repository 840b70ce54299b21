"""fastopt.data.minibatches: batch / stochastic / minibatch GD index iterators."""

from __future__ import annotations

import numpy as np
import pytest

from fastopt.data import minibatches


def epoch(*args, **kwargs) -> list[np.ndarray]:
    return list(minibatches(*args, **kwargs))


# ------------------------------------------------------------------------ shapes


@pytest.mark.parametrize(
    "n, batch_size, sizes",
    [
        (10, 3, [3, 3, 3, 1]),  # last partial batch
        (9, 3, [3, 3, 3]),
        (10, 10, [10]),  # batch gradient descent
        (4, 1, [1, 1, 1, 1]),  # stochastic gradient descent
        (3, 8, [3]),  # n smaller than batch_size: one batch of n
        (1, 1, [1]),
        (0, 4, []),
    ],
)
def test_batch_sizes(n, batch_size, sizes):
    got = epoch(n, batch_size, seed=0)
    assert [len(b) for b in got] == sizes


@pytest.mark.parametrize(
    "n, batch_size, sizes",
    [(10, 3, [3, 3, 3]), (9, 3, [3, 3, 3]), (3, 8, []), (0, 2, []), (7, 7, [7])],
)
def test_drop_last(n, batch_size, sizes):
    got = epoch(n, batch_size, seed=0, drop_last=True)
    assert [len(b) for b in got] == sizes


def test_drop_last_drops_exactly_the_tail_of_the_same_permutation():
    full = epoch(10, 3, seed=5)
    dropped = epoch(10, 3, seed=5, drop_last=True)
    assert len(dropped) == 3
    for a, b in zip(full[:3], dropped, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("n, batch_size", [(1, 1), (10, 3), (100, 7), (64, 64), (5, 9)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_every_index_exactly_once(n, batch_size, shuffle):
    got = epoch(n, batch_size, shuffle=shuffle, seed=1)
    all_idx = np.concatenate(got)
    assert all(b.dtype == np.int64 and b.ndim == 1 for b in got)
    np.testing.assert_array_equal(np.sort(all_idx), np.arange(n))


def test_shuffle_false_is_in_order():
    got = epoch(7, 3, shuffle=False)
    assert [b.tolist() for b in got] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [b.tolist() for b in epoch(7, 3, shuffle=False, drop_last=True)] == [
        [0, 1, 2],
        [3, 4, 5],
    ]


def test_shuffle_true_actually_shuffles():
    order = np.concatenate(epoch(1000, 10, seed=0))
    assert not np.array_equal(order, np.arange(1000))


def test_matches_default_rng_permutation():
    order = np.concatenate(epoch(50, 8, seed=123))
    np.testing.assert_array_equal(order, np.random.default_rng(123).permutation(50))


# --------------------------------------------------------------------- seeds


def test_same_seed_same_epoch():
    a, b = epoch(100, 16, seed=42), epoch(100, 16, seed=42)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_different_seeds_differ():
    a = np.concatenate(epoch(100, 16, seed=1))
    b = np.concatenate(epoch(100, 16, seed=2))
    assert not np.array_equal(a, b)


def test_generator_seed_gives_a_new_order_each_epoch():
    rng = np.random.default_rng(0)
    a = np.concatenate(epoch(100, 10, seed=rng))
    b = np.concatenate(epoch(100, 10, seed=rng))
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(np.sort(b), np.arange(100))


def test_batches_do_not_alias_each_other():
    got = epoch(10, 3, seed=0)
    before = [b.copy() for b in got]
    got[0][:] = -1
    for b, ref in zip(got[1:], before[1:], strict=True):
        np.testing.assert_array_equal(b, ref)


def test_numpy_integers_accepted():
    got = epoch(np.int64(10), np.int32(4), seed=0)
    assert [len(b) for b in got] == [4, 4, 2]


# ----------------------------------------------------------------- bad input


@pytest.mark.parametrize("batch_size", [0, -1, -10, 2.0, 1.5, True, None, "4"])
def test_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        minibatches(10, batch_size)


@pytest.mark.parametrize("n", [-1, 3.0, None, True, "10"])
def test_bad_n(n):
    with pytest.raises(ValueError, match=r"\bn\b"):
        minibatches(n, 2)


@pytest.mark.parametrize("name", ["shuffle", "drop_last"])
@pytest.mark.parametrize("value", [0, 1, "yes", None])
def test_bad_bools(name, value):
    with pytest.raises(ValueError, match=name):
        minibatches(10, 2, **{name: value})


def test_bad_input_raises_at_call_not_at_first_next():
    # no iteration at all: the error must come from the call itself
    with pytest.raises(ValueError, match="batch_size"):
        minibatches(5, 0)

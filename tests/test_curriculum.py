"""fastopt.Curriculum: pacing values against formulas, the pool, sampling, bad input."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from fastopt.curriculum import Curriculum


def exact_pool_size(fraction: Fraction, n: int) -> int:
    """clip(ceil(fraction * N), 1, N) in exact rational arithmetic."""
    return min(n, max(1, math.ceil(fraction * n)))


# -------------------------------------------------------------------- pacing values


@pytest.mark.parametrize("i", [0, 1, 99, 100, 101, 199, 200, 299, 300, 301, 1000, 10**9])
def test_exponential_pacing(i):
    n = 1000
    cur = Curriculum(np.arange(n), start=0.2, inc=1.9, step_length=100)
    expected = min(1.0, 0.2 * 1.9 ** math.floor(i / 100)) if i < 10**6 else 1.0
    assert math.isclose(cur.fraction(i), expected, rel_tol=1e-12)
    exact = min(Fraction(1), Fraction("0.2") * Fraction("1.9") ** min(i // 100, 10))
    assert cur.pool_size(i) == exact_pool_size(exact, n)


def test_exponential_pacing_known_pool_sizes():
    cur = Curriculum(np.arange(1000), start=0.2, inc=1.9, step_length=100)
    steps = [0, 99, 100, 199, 200, 299, 300, 5000]
    # 1000 * 0.2 * 1.9**k = 200, 380, 722, 1371.8 -> capped at 1000
    assert [cur.pool_size(i) for i in steps] == [200, 200, 380, 380, 722, 722, 1000, 1000]


def test_exponential_inc_one_stays_at_start():
    cur = Curriculum(np.arange(10), start=0.3, inc=1.0, step_length=1)
    assert {cur.pool_size(i) for i in range(0, 10_000, 97)} == {3}


@pytest.mark.parametrize("i", [0, 1, 10, 25, 49, 50, 51, 1000])
def test_linear_pacing(i):
    n, start, total = 200, Fraction("0.1"), 50
    cur = Curriculum(np.arange(n), pacing="linear", start=0.1, total_steps=total)
    exact = min(Fraction(1), start + (1 - start) * Fraction(i, total))
    assert math.isclose(cur.fraction(i), float(exact), rel_tol=1e-12)
    assert cur.pool_size(i) == exact_pool_size(exact, n)


def test_linear_pacing_known_pool_sizes():
    cur = Curriculum(np.arange(200), pacing="linear", start=0.1, total_steps=50)
    # 200 * (0.1 + 0.9 * i / 50): 20, 56, 110, 196.4 -> 197, 200, 200
    assert [cur.pool_size(i) for i in [0, 10, 25, 49, 50, 1000]] == [20, 56, 110, 197, 200, 200]


@pytest.mark.parametrize("p", [1, 2, 3, 2.5])
@pytest.mark.parametrize("i", [0, 1, 4, 8, 25, 64, 99, 100, 101, 5000])
def test_root_pacing(p, i):
    start, total = 0.1, 100
    cur = Curriculum(
        np.arange(1000), pacing="root", start=start, total_steps=total, root_degree=p
    )
    expected = min(1.0, start + (1 - start) * min(1.0, i / total) ** (1 / p))
    assert math.isclose(cur.fraction(i), expected, rel_tol=1e-12)


def test_root_pacing_known_pool_sizes():
    cur = Curriculum(np.arange(1000), pacing="root", start=0.1, total_steps=100)
    # 1000 * (0.1 + 0.9 * sqrt(i / 100)): sqrt = 0, .1, .2, .5, 1
    assert [cur.pool_size(i) for i in [0, 1, 4, 25, 100, 101]] == [100, 190, 280, 550, 1000, 1000]
    cube = Curriculum(
        np.arange(1000), pacing="root", start=0.1, total_steps=1000, root_degree=3
    )
    assert cube.pool_size(8) == 280  # (8 / 1000) ** (1/3) = 0.2


def test_root_degree_one_is_linear():
    a = Curriculum(np.arange(97), pacing="root", start=0.05, total_steps=33, root_degree=1)
    b = Curriculum(np.arange(97), pacing="linear", start=0.05, total_steps=33)
    assert [a.pool_size(i) for i in range(40)] == [b.pool_size(i) for i in range(40)]


def test_root_grows_faster_than_linear_early():
    r = Curriculum(np.arange(1000), pacing="root", start=0.1, total_steps=100)
    lin = Curriculum(np.arange(1000), pacing="linear", start=0.1, total_steps=100)
    assert all(r.pool_size(i) > lin.pool_size(i) for i in range(1, 100))


def test_step_pacing():
    cur = Curriculum(np.arange(10), pacing="step", start=0.3, step_length=10)
    assert [cur.pool_size(i) for i in [0, 5, 9, 10, 11, 500]] == [3, 3, 3, 10, 10, 10]
    assert cur.fraction(9) == 0.3 and cur.fraction(10) == 1.0


def test_callable_pacing():
    calls = []

    def pacing(i):
        calls.append(i)
        return 0.5 if i < 3 else 1.0

    cur = Curriculum(np.arange(10), pacing=pacing)
    assert [cur.pool_size(i) for i in range(5)] == [5, 5, 5, 10, 10]
    assert calls == [0, 1, 2, 3, 4]


def test_callable_pacing_competence_function():
    # Platanios et al.'s sqrt competence, passed as a callable
    c0, total = 0.01, 100
    cur = Curriculum(
        np.arange(100),
        pacing=lambda i: min(1.0, math.sqrt(i * (1 - c0**2) / total + c0**2)),
    )
    assert cur.pool_size(0) == 1
    assert cur.pool_size(100) == 100


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5, math.nan, math.inf, "0.5", None])
def test_callable_pacing_bad_value(bad):
    cur = Curriculum(np.arange(10), pacing=lambda i: bad)
    with pytest.raises(ValueError, match="pacing"):
        cur.pool_size()
    with pytest.raises(ValueError, match="pacing"):
        cur.batch(2)


# ------------------------------------------------------------------ pool size rules


def test_pool_size_uses_ceil():
    cur = Curriculum(np.arange(7), pacing="step", start=0.5, step_length=10)
    assert cur.pool_size(0) == 4  # 3.5 -> 4


def test_pool_size_at_least_one():
    cur = Curriculum(np.arange(10), start=1e-6, inc=1.0)
    assert cur.pool_size(0) == 1
    assert len(cur.pool()) == 1


def test_pool_size_ignores_float_noise():
    # 0.1 * 3 == 0.30000000000000004 in floating point; 0.3 * 10 examples is exactly 3
    cur = Curriculum(np.arange(10), start=0.1, inc=3.0, step_length=1)
    assert cur.pool_size(1) == 3


def test_single_example():
    cur = Curriculum([5.0], seed=0)
    assert cur.pool_size() == 1
    np.testing.assert_array_equal(cur.batch(3), [0, 0, 0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pacing": "exponential", "start": 0.05, "inc": 2.0, "step_length": 10},
        {"pacing": "linear", "start": 0.05, "total_steps": 200},
        {"pacing": "root", "start": 0.05, "total_steps": 200, "root_degree": 3},
        {"pacing": "step", "start": 0.05, "step_length": 50},
        {"pacing": lambda i: min(1.0, 0.05 + i / 300)},
    ],
)
def test_pacing_reaches_the_whole_set_monotonically(kwargs):
    rng = np.random.default_rng(0)
    d = rng.standard_normal(137)
    cur = Curriculum(d, **kwargs)
    sizes = [cur.pool_size(i) for i in range(400)]
    assert sizes[0] < 137
    assert all(a <= b for a, b in itertools.pairwise(sizes))
    assert sizes[-1] == 137
    np.testing.assert_array_equal(np.sort(cur.pool(399)), np.arange(137))


# ----------------------------------------------------------------------------- pool


def test_pool_is_exactly_the_easiest_examples():
    rng = np.random.default_rng(1)
    d = rng.permutation(500).astype(float)  # distinct scores
    cur = Curriculum(d, pacing="linear", start=0.1, total_steps=100)
    for i in [0, 10, 50, 99, 100]:
        pool = cur.pool(i)
        m = cur.pool_size(i)
        assert len(pool) == m
        assert set(pool.tolist()) == set(np.flatnonzero(d < m).tolist())
        assert np.all(np.diff(d[pool]) > 0)  # easiest first


def test_pool_ties_are_stable():
    cur = Curriculum([1.0, 0.0, 1.0, 0.0, 1.0], pacing="step", start=0.6, step_length=1)
    np.testing.assert_array_equal(cur.pool(0), [1, 3, 0])
    np.testing.assert_array_equal(cur.order, [1, 3, 0, 2, 4])


def test_pool_is_read_only_and_defaults_to_the_current_step():
    cur = Curriculum(np.arange(10), pacing="step", start=0.2, step_length=2, seed=0)
    assert cur.pool().tolist() == [0, 1]
    with pytest.raises(ValueError):
        cur.pool()[0] = 5
    cur.batch(1)
    cur.batch(1)
    assert cur.step == 2 and len(cur.pool()) == 10


def test_any_scores():
    # integer scores, negatives, infinities: only the order matters
    d = np.array([3, -7, 0, 12, -1])
    cur = Curriculum(d, pacing="step", start=0.4, step_length=1)
    assert cur.pool(0).tolist() == [1, 4]
    d = np.array([np.inf, 0.5, -np.inf, 2.0])
    cur = Curriculum(d, pacing="step", start=0.5, step_length=1)
    assert cur.pool(0).tolist() == [2, 1]


def test_scores_are_read_once():
    d = np.array([3.0, 1.0, 2.0])
    cur = Curriculum(d, pacing="step", start=0.3, step_length=1)
    d[:] = [0.0, 9.0, 9.0]  # changing the scores afterwards changes nothing
    assert cur.pool(0).tolist() == [1]


# ------------------------------------------------------------------------ sampling


def test_batches_only_from_the_pool():
    rng = np.random.default_rng(2)
    d = rng.standard_normal(300)
    cur = Curriculum(d, start=0.1, inc=2.0, step_length=7, seed=3)
    for _ in range(60):
        pool = set(cur.pool().tolist())
        b = cur.batch(16)
        assert b.dtype == np.int64 and b.shape == (16,)
        assert set(b.tolist()) <= pool
    assert cur.step == 60


def test_without_replacement_within_a_batch():
    cur = Curriculum(np.arange(100), pacing="step", start=0.2, step_length=10**6, seed=0)
    for _ in range(200):
        b = cur.batch(20)  # pool of exactly 20: the batch is the whole pool
        assert sorted(b.tolist()) == list(range(20))
    for _ in range(200):
        assert len(np.unique(cur.batch(15))) == 15


def test_pool_smaller_than_batch_is_balanced():
    cur = Curriculum(np.arange(100), pacing="step", start=0.03, step_length=10**6, seed=0)
    assert cur.pool_size() == 3
    for _ in range(100):
        b = cur.batch(8)
        counts = np.bincount(b, minlength=3)
        assert counts.sum() == 8 and len(counts) == 3
        assert sorted(counts.tolist()) == [2, 3, 3]


def chi_square(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("batch_size", [1, 4, 9, 25])
def test_uniform_over_the_pool(batch_size):
    # a pool of 10 examples; 9 degrees of freedom: P(chi2 > 40) ~ 7e-6
    cur = Curriculum(np.arange(50), pacing="step", start=0.2, step_length=10**6, seed=4)
    draws = np.concatenate([cur.batch(batch_size) for _ in range(20_000 // batch_size)])
    counts = np.bincount(draws, minlength=50)
    assert counts[10:].sum() == 0
    assert chi_square(counts[:10]) < 40.0


def test_uniformity_check_can_fail():
    # the same statistic flags an obviously non-uniform sampler
    assert chi_square(np.array([1030] + [997] * 9)) < 40.0  # near-uniform passes
    skewed = np.array([1500] + [944] * 9)
    assert chi_square(skewed) > 40.0


def test_each_slot_uniform():
    # without replacement must not favour positions: first slot of each batch is uniform
    cur = Curriculum(np.arange(8), pacing="step", start=1.0, step_length=1, seed=5)
    first = np.array([cur.batch(4)[0] for _ in range(8000)])
    assert chi_square(np.bincount(first, minlength=8)) < 40.0


def test_seed_reproducible_and_different_seeds_differ():
    def draw(seed):
        cur = Curriculum(np.arange(200), start=0.3, inc=1.5, step_length=5, seed=seed)
        return np.concatenate([cur.batch(8) for _ in range(30)])

    np.testing.assert_array_equal(draw(7), draw(7))
    assert not np.array_equal(draw(7), draw(8))


def test_batches_iterator():
    a = Curriculum(np.arange(200), start=0.3, inc=1.5, step_length=5, seed=9)
    b = Curriculum(np.arange(200), start=0.3, inc=1.5, step_length=5, seed=9)
    got = list(a.batches(8, steps=12))
    assert len(got) == 12 and a.step == 12
    for x in got:
        np.testing.assert_array_equal(x, b.batch(8))
    assert list(a.batches(8, steps=0)) == [] and a.step == 12
    endless = a.batches(4)
    assert len(list(itertools.islice(endless, 50))) == 50
    assert a.step == 62


def test_step_setter_resumes():
    cur = Curriculum(np.arange(1000), start=0.2, inc=1.9, step_length=100, seed=0)
    cur.step = 250
    assert cur.pool_size() == 722
    b = cur.batch(10)
    assert b.max() < 722 and cur.step == 251
    with pytest.raises(ValueError, match="step"):
        cur.step = -1
    with pytest.raises(ValueError, match="step"):
        cur.pool_size(-3)


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "difficulty, match",
    [
        ([1.0, np.nan, 2.0], "NaN"),
        (np.zeros((3, 2)), "1-D"),
        (np.float64(3.0), "1-D"),
        ([], "empty"),
        (["a", "b"], "real"),
        ([1 + 1j, 2], "real"),
        ([True, False], "real"),
    ],
)
def test_bad_difficulty(difficulty, match):
    with pytest.raises(ValueError, match=match) as exc:
        Curriculum(difficulty)
    assert "difficulty" in str(exc.value)


def test_difficulty_wrong_length():
    with pytest.raises(ValueError, match=r"difficulty has length 5, expected n=6"):
        Curriculum(np.arange(5.0), n=6)
    assert Curriculum(np.arange(5.0), n=5).n == 5


@pytest.mark.parametrize("n", [0, -1, 2.0, True])
def test_bad_n(n):
    with pytest.raises(ValueError, match=r"\bn\b"):
        Curriculum(np.arange(3.0), n=n)


@pytest.mark.parametrize("pacing", ["cosine", "Exponential", "", None, 3])
def test_bad_pacing(pacing):
    with pytest.raises(ValueError, match="pacing"):
        Curriculum(np.arange(3.0), pacing=pacing)


@pytest.mark.parametrize("start", [0, 0.0, -0.1, 1.01, math.nan, math.inf, "0.2", None])
def test_bad_start(start):
    with pytest.raises(ValueError, match="start"):
        Curriculum(np.arange(3.0), start=start)


@pytest.mark.parametrize("inc", [0.99, 0.0, -2.0, math.nan, math.inf, None])
def test_bad_inc(inc):
    with pytest.raises(ValueError, match="inc"):
        Curriculum(np.arange(3.0), inc=inc)


@pytest.mark.parametrize("step_length", [0, -1, 1.5, 10.0, True, None])
def test_bad_step_length(step_length):
    with pytest.raises(ValueError, match="step_length"):
        Curriculum(np.arange(3.0), step_length=step_length)


@pytest.mark.parametrize("pacing", ["linear", "root"])
def test_total_steps_required(pacing):
    with pytest.raises(ValueError, match="total_steps"):
        Curriculum(np.arange(3.0), pacing=pacing)


@pytest.mark.parametrize("total_steps", [0, -5, 2.5, True])
def test_bad_total_steps(total_steps):
    with pytest.raises(ValueError, match="total_steps"):
        Curriculum(np.arange(3.0), pacing="linear", total_steps=total_steps)


@pytest.mark.parametrize("root_degree", [0, -1.0, math.nan, math.inf])
def test_bad_root_degree(root_degree):
    with pytest.raises(ValueError, match="root_degree"):
        Curriculum(np.arange(3.0), pacing="root", total_steps=10, root_degree=root_degree)


@pytest.mark.parametrize("batch_size", [0, -1, 2.0, None])
def test_bad_batch_size(batch_size):
    cur = Curriculum(np.arange(3.0))
    with pytest.raises(ValueError, match="batch_size"):
        cur.batch(batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        cur.batches(batch_size, steps=3)  # checked at the call, before any next()
    assert cur.step == 0


def test_bad_steps():
    cur = Curriculum(np.arange(3.0))
    with pytest.raises(ValueError, match="steps"):
        cur.batches(2, steps=-1)

"""The counter-based generator and the spec's annealed gradient noise."""

import numpy as np
import pytest

import fastopt
from fastopt import parallel
from fastopt.philox import philox4x32_10

# Random123's known-answer vectors for philox4x32_10 (kat_vectors): counter, key, output.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_philox_known_answers_python(ctr, key, expected):
    assert tuple(int(w) for w in philox4x32_10(*ctr, *key)) == expected


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_philox_known_answers_compiled(ctr, key, expected):
    from fastopt._jit import compile_tree, device_function

    compiled = compile_tree(philox4x32_10, device_function)
    args = [np.uint32(x) for x in (*ctr, *key)]
    assert tuple(int(w) for w in compiled(*args)) == expected


def _noise_draws(n, steps, noise, dtype=np.float32):
    """The noise SGD(lr=1) adds at each step, seen through a zero gradient."""
    p = np.zeros(n, dtype)
    opt = fastopt.SGD(p, lr=1.0, grad_noise=noise)
    out = []
    for _ in range(steps):
        before = p.copy()
        opt.step(np.zeros(n, dtype))
        out.append((before - p).astype(np.float64))  # w <- w - lr * (0 + noise)
    return np.array(out)


def test_noise_variance_follows_the_annealing_schedule():
    eta, gamma, n = 0.3, 0.55, 400_000
    draws = _noise_draws(n, 4, fastopt.GradientNoise(eta, gamma=gamma, seed=7))
    for t_prime, d in enumerate(draws):
        expected_var = eta / (1 + t_prime) ** gamma
        # sample variance of n normals has relative std sqrt(2/n) ~ 0.22%
        assert d.var() == pytest.approx(expected_var, rel=0.015)
        assert abs(d.mean()) < 5 * np.sqrt(expected_var / n)
        z = d / np.sqrt(expected_var)
        assert np.mean(np.abs(z) < 1) == pytest.approx(0.6827, abs=0.004)
        assert np.mean(z**4) == pytest.approx(3.0, rel=0.03)  # Gaussian kurtosis


def test_noise_independent_across_steps_elements_and_seeds():
    n = 200_000
    a = _noise_draws(n, 3, fastopt.GradientNoise(1.0, seed=1))
    b = _noise_draws(n, 1, fastopt.GradientNoise(1.0, seed=2))
    bound = 5 / np.sqrt(n)
    assert abs(np.corrcoef(a[0], a[1])[0, 1]) < bound
    assert abs(np.corrcoef(a[1], a[2])[0, 1]) < bound
    assert abs(np.corrcoef(a[0], b[0])[0, 1]) < bound
    assert abs(np.corrcoef(a[0][:-1], a[0][1:])[0, 1]) < bound  # neighbouring elements


def test_noise_is_reproducible_and_seeded():
    n = 5000
    a = _noise_draws(n, 2, fastopt.GradientNoise(0.01, seed=3))
    b = _noise_draws(n, 2, fastopt.GradientNoise(0.01, seed=3))
    c = _noise_draws(n, 2, fastopt.GradientNoise(0.01, seed=4))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_noise_matches_the_python_generator_and_is_shared_by_dtypes():
    from fastopt.philox import standard_normal

    noise = fastopt.GradientNoise(0.5, gamma=0.55, seed=2**40 + 5)
    n = 64
    d32 = _noise_draws(n, 2, noise, np.float32)
    d64 = _noise_draws(n, 2, noise, np.float64)
    k0, k1 = noise.key
    for t_prime in range(2):
        z = np.array([standard_normal(np.uint64(i), np.uint64(t_prime), k0, k1) for i in range(n)])
        sigma = np.sqrt(0.5 / (1 + t_prime) ** 0.55)
        np.testing.assert_allclose(d64[t_prime], sigma * z, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(d32[t_prime], sigma * z, rtol=1e-5, atol=1e-6)


def test_noise_counter_spans_the_parallel_path():
    """Each element of a parallel kernel draws its own counter (no repeats)."""
    n = 131_072
    with parallel.forced("parallel"):
        d = _noise_draws(n, 1, fastopt.GradientNoise(1.0))[0]
    assert len(np.unique(d)) > 0.999 * n

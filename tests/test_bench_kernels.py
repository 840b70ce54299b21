"""The benchmark's yardsticks must do the work they claim (or every ratio is wrong)."""

import numpy as np
import pytest
from reference import ref_backward, ref_forward

import fastopt
from fastopt.bench import torch_ref
from fastopt.bench.roofline import bytes_moved, divider_kernel, roofline_kernel
from fastopt.rules.registry import registry


def _step_arrays(n, k, seed):
    """A yardstick's arrays (g, p, k states) and the states it must leave (each + g)."""
    rng = np.random.default_rng(seed)
    g, p, *st = (rng.standard_normal(n).astype(np.float32) for _ in range(2 + k))
    return g, p, tuple(st), [s + g for s in st]


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_roofline_kernels_read_and_write_every_array(k, parallel):
    n = 100_003
    g, p, st, new = _step_arrays(n, k, seed=k)
    p0 = p.copy()
    roofline_kernel(k, parallel)(p, g, st)
    added = {0: lambda: g, 1: lambda: g + new[0], 2: lambda: new[0] + new[1],
             3: lambda: new[0] + (new[1] + new[2])}[k]()
    expected_p = p0 + added
    for s, expected in zip(st, new, strict=True):
        np.testing.assert_allclose(s, expected, rtol=1e-6)
    np.testing.assert_allclose(p, expected_p, rtol=1e-5, atol=1e-5)
    assert bytes_moved(n, k, np.float32) == n * 4 * (3 + 2 * k)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_divider_kernels_do_the_traffic_and_one_root_and_division(k, parallel):
    g, p, st, new = _step_arrays(50_001, k, seed=10 + k)
    p0 = p.copy()
    divider_kernel(k, parallel)(p, g, st)
    for s, expected in zip(st, new, strict=True):
        np.testing.assert_allclose(s, expected, rtol=1e-6)
    num, den = (g, new[0]) if k == 1 else (new[0], new[1] if k == 2 else new[1] + new[2])
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_p = p0 + num / np.sqrt(np.abs(den))
    finite = np.isfinite(expected_p) & (np.abs(expected_p) < 1e6)
    assert finite.mean() > 0.99
    np.testing.assert_allclose(p[finite], expected_p[finite], rtol=1e-4, atol=1e-4)


def test_divider_floor_needs_a_state_array():
    with pytest.raises(ValueError, match="state array"):
        divider_kernel(0)


@pytest.mark.parametrize("rule", list(registry()))
def test_numpy_reference_steps_move_the_parameters(rule):
    n = 1000
    k = len(registry()[rule].state_of(registry()[rule].defaults))
    p = np.ones(n, np.float32)
    g = np.full(n, 0.5, np.float32)
    st = tuple(np.zeros(n, np.float32) for _ in range(k))
    registry()[rule].numpy_step(p, g, st, 1)
    assert p.dtype == np.float32
    assert np.all(p < 1.0)  # a descent step on a positive gradient
    for s in st:
        assert np.any(s != 0)


def test_resnet50_workload_matches_the_shared_description():
    from fastopt.bench.workloads import resnet50_shapes

    shapes = resnet50_shapes()
    assert len(shapes) == 161
    assert sum(int(np.prod(s)) for _, s in shapes) == 25_557_032
    assert shapes[0] == ("conv1.weight", (64, 3, 7, 7))


def test_bench_command_json(capsys):
    import json

    from fastopt.__main__ import main

    rc = main(["bench", "--quick", "--sizes", "2000", "--rules", "Adam", "SGD", "--json",
               "--no-resnet", "--no-startup", "--no-threshold", "--no-torch", "--no-batchnorm",
               "--no-loops", "--no-precision"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["rule"] for r in out["rows"]] == ["Adam", "SGD"]
    for r in out["rows"]:
        assert r["n"] == 2000 and r["fastopt_ms"] > 0 and r["roofline_ms"] > 0
        assert r["pct_roofline"] == 100 * r["roofline_ms"] / r["fastopt_ms"]
    adam, sgd = out["rows"]
    # GB/s as the table prints it: bytes moved per step (Adam: p, g, m, v read, p, m, v
    # written; SGD: p, g read, p written; float32) over the median time
    assert adam["gbps"] == pytest.approx(28 * 2000 / (adam["fastopt_ms"] * 1e-3) / 1e9)
    assert sgd["gbps"] == pytest.approx(12 * 2000 / (sgd["fastopt_ms"] * 1e-3) / 1e9)
    assert adam["pct_divider"] == 100 * adam["divider_ms"] / adam["fastopt_ms"]
    assert sgd["divider_ms"] is None and sgd["pct_divider"] is None  # SGD does not divide
    assert out["header"]["threads"] == fastopt.get_num_threads()


@pytest.mark.parametrize("param, state, n_state", [
    (np.float32, np.uint8, 2), ("bfloat16", np.uint16, 2), (np.float16, np.float32, 3)])
def test_narrow_same_traffic_kernels_read_and_write_every_array(param, state, n_state):
    """The yardsticks of the precision rows move what they claim: every array is read and
    written (integers flipped, floats added to) at its own width."""
    from fastopt.bench.roofline import narrow_kernel

    if param == "bfloat16":
        param = pytest.importorskip("ml_dtypes").bfloat16
    n = 1000
    p = np.full(n, 0.5, param)
    g = np.full(n, 0.25, param)
    bits = (lambda a: a.view(np.uint16)) if np.dtype(param).itemsize == 2 else (lambda a: a)
    st = tuple(np.full(n, 2, state) for _ in range(n_state))
    for divide in (False, True):
        p0 = bits(p).copy()
        narrow_kernel(n_state, param, state, divide=divide, parallel=False)(bits(p), bits(g), st)
        assert (bits(p) != p0).all()
    for a in st:  # two calls: integers flipped back, floats moved twice
        if np.dtype(state).kind == "u":
            assert (a == 2).all()
        else:
            assert (a != 2).all()


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (40, 7)])
def test_batchnorm_yardsticks_compute_batchnorm(shape):
    """The NumPy step and torch's allocation-free kernels do the whole training step."""
    from fastopt.bench import batchnorm as bn_bench

    rng = np.random.default_rng(3)
    x, dy = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    c = shape[1]
    gamma = (1 + 0.1 * rng.standard_normal(c)).astype(np.float32)
    beta = (0.1 * rng.standard_normal(c)).astype(np.float32)
    want = (ref_forward(x, gamma, beta, 1, eps=bn_bench.EPS),
            *ref_backward(dy, x, gamma, 1, eps=bn_bench.EPS))
    got = [bn_bench.numpy_train_step(x, gamma, beta, dy, np.zeros(c, np.float32),
                                     np.ones(c, np.float32))]
    if torch_ref.available():
        step, outs = bn_bench.torch_out_train(x, gamma, beta, dy)
        step()
        got.append([t.numpy() for t in outs])
    for outputs in got:
        for a, b in zip(outputs, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)



def test_a_row_whose_times_spread_is_marked(monkeypatch):
    """On a fake clock: a callable whose calls mostly take 10x its fastest marks the row
    (another process on the cores); a steady one does not."""
    from fastopt.bench import run

    clock = [0.0]
    monkeypatch.setattr(run.time, "perf_counter", lambda: clock[0])
    calls = {"steady": 0, "jumpy": 0}

    def make(name, cost):
        def f():
            calls[name] += 1
            clock[0] += cost(calls[name])
        return f

    spread: dict[str, float] = {}
    med = run._interleaved_medians(
        {"steady": make("steady", lambda k: 1e-3),
         "jumpy": make("jumpy", lambda k: 1e-3 if k % 3 == 0 else 1e-2)},
        repeats=6, budget_s=1e9, spread=spread)
    assert med["steady"] == pytest.approx(1.0) and spread["steady"] == pytest.approx(1.0)
    assert med["jumpy"] == pytest.approx(10.0) and spread["jumpy"] == pytest.approx(10.0)

    row = run.Row("Adam", 1000, "float32", 1.0, 0.9, 5.0, None, None, None, spread["jumpy"])
    quiet = run.Row("SGD", 1000, "float32", 1.0, 0.9, 5.0, None, None, None, 1.2)
    assert row.noisy and not quiet.noisy
    lines = run.format_table([row, quiet]).splitlines()
    assert lines[2].startswith("Adam~") and lines[3].startswith("SGD ")


def test_the_after_sweep_yardstick_is_the_same_step():
    """The kernel the bench times alone after a cache sweep takes the optimizer's own first
    step: the same parameters, bit for bit."""
    from fastopt.bench.workloads import after_sweep_candidates, step_after_sweep

    steps, sweep, params = after_sweep_candidates(100)
    for label, step in steps.items():
        sweep()
        step()
        assert not np.array_equal(params[label], np.ones(100, np.float32)), label
    np.testing.assert_array_equal(params["fastopt step"], params["kernel alone"])
    us = step_after_sweep(100, rounds=2)
    assert set(us) == set(steps) and all(0 < t < 1e6 for t in us.values())

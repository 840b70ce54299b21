"""The bench's training loops compute what they claim (a real MLP's gradients; fastopt
stepping torch's tensors is torch's Adam), and the bench can tell a busy machine."""

import importlib.util

import numpy as np
import pytest

from fastopt.bench import loops
from fastopt.bench.load import BusyProcess, OtherLoad


def test_numpy_mlp_gradients_match_finite_differences():
    model = loops.NumpyMLP(np.float64, batch=5, width=6, classes=3, seed=2)
    for p in model.params[1::2]:  # non-zero biases, so their gradients are exercised
        p[...] = np.random.default_rng(0).standard_normal(p.shape) * 0.1
    model.forward_backward()
    grads = [g.copy() for g in model.grads]
    eps = 1e-6
    for p, g in zip(model.params, grads, strict=True):
        flat, gflat = p.reshape(-1), g.reshape(-1)
        for i in range(0, flat.size, max(1, flat.size // 7)):
            old = flat[i]
            flat[i] = old + eps
            up = model.forward_backward()
            flat[i] = old - eps
            down = model.forward_backward()
            flat[i] = old
            assert (up - down) / (2 * eps) == pytest.approx(gflat[i], rel=1e-5, abs=1e-8)


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_fastopt_stepping_numpy_views_of_torch_tensors_is_torch_adam():
    import torch

    model, fwd_bwd = loops.torch_mlp(seed=1)
    twin, twin_fwd_bwd = loops.torch_mlp(seed=1)
    step = loops.fastopt_adam_step([p.detach().numpy() for p in model.parameters()],
                                   [p.grad.numpy() for p in model.parameters()], lr=1e-3)
    ref = torch.optim.Adam(twin.parameters(), lr=1e-3, foreach=False)
    for _ in range(5):
        fwd_bwd()
        step()
        twin_fwd_bwd()
        ref.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-4,
                                   atol=1e-6)
    assert not np.array_equal(model[0].weight.detach().numpy(),
                              loops.torch_mlp(seed=1)[0][0].weight.detach().numpy())


def test_loop_comparison_runs_each_variant_and_reports_its_parts():
    rows = loops.compare_loops("numpy_mlp", steps=3, rounds=1)
    assert [r.variant for r in rows] == list(loops.WORKLOADS["numpy_mlp"][1])
    assert [r.baseline for r in rows] == [True, False]
    for r in rows:
        assert 0 < r.fwd_bwd_s < r.loop_s and r.step_s > 0
    assert "fwd/bwd change" in loops.format_loops(rows)


def test_a_busy_process_is_seen():
    with BusyProcess(), OtherLoad() as load:
        sum(range(3_000_000))
    if load.cores is None:
        pytest.skip("no /proc/stat here")
    assert load.cores > 0.5 and load.busy


def test_steps_beside_a_busy_process_are_timed_three_ways():
    (row,) = loops.steps_beside_busy_process((10_000,), budget_s=0.05)
    assert row["n"] == 10_000
    assert all(row[k] > 0 for k in ("step_us", "one_thread_us", "kernel_us"))

"""Training loops: the whole loop, fastopt's step between a forward and a backward pass,
against the same loop with the NumPy step (NumPy MLP on NumPy's BLAS) and with torch's
fused Adam (torch MLP, fastopt stepping ``.numpy()`` views). A benchmark round is 10
training steps.

Here every variant runs in the pytest process, one after the other: a regression check.
``python -m fastopt bench`` runs each variant in a fresh process, alternating, and also
reports the forward/backward time inside the loop (see ``fastopt.bench.loops``).
"""

import pytest

from fastopt.bench import loops, torch_ref

STEPS = 10

CASES = [(w, v) for w, (_, variants) in loops.WORKLOADS.items() for v in variants]


@pytest.mark.parametrize(("workload", "variant"), CASES, ids=[f"{w}-{v}" for w, v in CASES])
def test_training_loop(benchmark, workload, variant):
    if workload == "torch_mlp" and not torch_ref.available():
        pytest.skip("torch not installed")
    fwd_bwd, step = loops.WORKLOADS[workload][1][variant]()
    loops.time_loop(fwd_bwd, step, 20)  # kernels loaded, fastopt's choices settled
    benchmark.group = f"loop-{workload}"
    benchmark(loops.time_loop, fwd_bwd, step, STEPS)

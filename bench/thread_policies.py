"""The measurements behind fastopt's threading defaults (docs/threads.md), to run again on
another machine:

    python bench/thread_policies.py            # both parts, ~4 minutes on 2 cores
    python bench/thread_policies.py --loop --rounds 5   # steadier medians
    python bench/thread_policies.py --loop     # the training loop under each policy
    python bench/thread_policies.py --sizes    # serial vs parallel kernels, alone and
                                               # right after a BLAS call

Part 1 runs the bench's NumPy MLP loop (fastopt.bench.loops, 100 steps) in fresh processes
under each threading policy, alternating, three rounds, and prints medians of the whole
loop and of its forward/backward pass. Part 2 times fastopt's serial and parallel Adam
kernels on one array, back to back ("alone") and each right after three 256x512x512
matrix products on NumPy's BLAS ("after BLAS"), under fastopt's own settings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

_KEEP_HEAP = {"MALLOC_TRIM_THRESHOLD_": str(256 << 20), "MALLOC_MMAP_THRESHOLD_": str(64 << 20)}

#: name -> (environment, fastopt's kernels: "choice" (its own) or "parallel" (forced))
POLICIES = {
    "NumPy Adam step (baseline)": ({}, None),
    "fastopt as shipped (short spin, choice per array)": ({}, "choice"),
    "parallel kernels, libgomp's own spin (the old default)":
        ({"GOMP_SPINCOUNT": "300000"}, "parallel"),
    "parallel kernels, OMP_WAIT_POLICY=passive": ({"OMP_WAIT_POLICY": "passive"}, "parallel"),
    "parallel kernels, fastopt's short spin": ({}, "parallel"),
    "parallel kernels, workqueue layer": ({"NUMBA_THREADING_LAYER": "workqueue"}, "parallel"),
    "serial kernels (NUMBA_NUM_THREADS=1)": ({"NUMBA_NUM_THREADS": "1"}, "choice"),
    # glibc returns the heap's top to the system when over 2x the largest freed block:
    # with a step that allocates nothing, the forward's temporaries then fault their pages
    # in again every step. These two keep the heap (the allocator, not the threads):
    "NumPy Adam step, glibc heap kept": (_KEEP_HEAP, None),
    "fastopt as shipped, glibc heap kept": (_KEEP_HEAP, "choice"),
}

CHILD = """
import json
from fastopt import parallel
from fastopt.bench import loops
variant = "NumPy Adam step" if {mode!r} is None else "fastopt.Adam"
if {mode!r} == "parallel":
    parallel.PARALLEL_MIN_BYTES = 0
    with parallel.forced("parallel"):
        print(json.dumps(loops.run_variant("numpy_mlp", variant, {steps})))
else:
    print(json.dumps(loops.run_variant("numpy_mlp", variant, {steps})))
"""


def loop_policies(steps: int = 100, rounds: int = 3) -> None:
    runs: dict[str, list[dict]] = {k: [] for k in POLICIES}
    clean = {k: v for k, v in os.environ.items()
             if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER",
                          "NUMBA_NUM_THREADS", *_KEEP_HEAP)}
    for r in range(rounds):
        for name in (list(POLICIES) if r % 2 == 0 else list(POLICIES)[::-1]):
            env, mode = POLICIES[name]
            out = subprocess.run([sys.executable, "-c", CHILD.format(mode=mode, steps=steps)],
                                 env={**clean, **env}, capture_output=True, text=True,
                                 check=True)
            runs[name].append(json.loads(out.stdout.splitlines()[-1]))
            print(f"  round {r + 1}: {name}", file=sys.stderr)
    base = statistics.median(x["loop_s"] for x in runs["NumPy Adam step (baseline)"])
    base_fb = statistics.median(x["fwd_bwd_s"] for x in runs["NumPy Adam step (baseline)"])
    print(f"NumPy MLP loop, {steps} steps, medians of {rounds} fresh processes each")
    print(f"{'policy':<58}{'loop s':>8}{'fwd/bwd s':>11}{'loop vs NumPy':>15}"
          f"{'fwd/bwd change':>16}")
    for name, xs in runs.items():
        loop = statistics.median(x["loop_s"] for x in xs)
        fb = statistics.median(x["fwd_bwd_s"] for x in xs)
        print(f"{name:<58}{loop:>8.3f}{fb:>11.3f}{base / loop:>14.2f}x"
              f"{100 * (fb / base_fb - 1):>+15.0f}%")


def kernel_sizes(sizes=(30_000, 100_000, 300_000, 1_000_000, 3_000_000, 10_000_000)) -> None:
    from fastopt import parallel, rules
    from fastopt.drivers import cpu

    rng = np.random.default_rng(0)
    a, b = rng.random((256, 512)), rng.random((512, 512))
    h = rules.adam_constants(1, 1e-3, (0.9, 0.999), 1e-8)
    kernels = {"serial": cpu.step_kernel(rules.adam, False),
               "parallel": cpu.step_kernel(rules.adam, True)}
    print("Adam float32 kernel, medians in us; after BLAS: each call right after three "
          "256x512x512 matrix products")
    print(f"{'n':>10}{'serial':>10}{'parallel':>10}{'par/ser':>9}   |{'serial':>10}"
          f"{'parallel':>10}{'par/ser':>9}  (after BLAS)")
    for n in sizes:
        arrays = {k: tuple(np.zeros(n, np.float32) for _ in range(3)) for k in kernels}
        g = np.full(n, 1e-3, np.float32)

        def call(k, arrays=arrays, g=g):
            p, m, v = arrays[k]
            if k == "parallel":
                parallel.call_parallel(kernels[k], (p, g, (m, v), h, None, None, None, None),
                                       parallel.get_num_threads())
            else:
                kernels[k](p, g, (m, v), h, None, None, None, None)

        row = []
        for blas in (False, True):
            times: dict[str, list[float]] = {k: [] for k in kernels}
            for k in kernels:
                call(k)
            for _ in range(max(20, min(300, int(3e7 / n)))):
                for k in kernels:
                    if blas:
                        for _ in range(3):
                            a @ b
                    t0 = time.perf_counter()
                    call(k)
                    times[k].append(time.perf_counter() - t0)
            s, p = (1e6 * statistics.median(times[k]) for k in kernels)
            row.append(f"{s:>10.1f}{p:>10.1f}{p / s:>9.2f}")
        print(f"{n:>10.0e}{row[0]}   |{row[1]}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", action="store_true")
    ap.add_argument("--sizes", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per policy")
    args = ap.parse_args()
    if args.loop or not args.sizes:
        loop_policies(rounds=args.rounds)
    if args.sizes or not args.loop:
        kernel_sizes()

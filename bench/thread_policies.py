"""The measurements behind fastopt's threading defaults (docs/threads.md), to run again on
another machine:

    python bench/thread_policies.py            # both parts, ~4 minutes on 2 cores
    python bench/thread_policies.py --loop --rounds 5   # steadier medians
    python bench/thread_policies.py --loop     # the training loop under each policy
    python bench/thread_policies.py --sizes    # serial vs parallel kernels, alone and
                                               # right after a BLAS call
    python bench/thread_policies.py --wake     # what waking idle threads costs

Part 3 times a tiny parallel loop after its threads were idle for a while, under each
wait policy (libgomp's spin counts, passive waiting, the workqueue layer).

Part 1 runs the bench's NumPy MLP loop (fastopt.bench.loops, 100 steps) in fresh processes
under each threading policy, alternating, three rounds, and prints medians of the whole
loop and of its forward/backward pass. Part 2 times fastopt's serial and parallel Adam
kernels on one array, each one's calls back to back ("alone") and alternating, each right
after three 256x512x512 matrix products on NumPy's BLAS ("after BLAS"), under fastopt's
own settings.
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
    # every "alone" row first: after a matrix product OpenBLAS's threads keep polling the
    # cores for a while, which would reach into the next "alone" row
    rows: dict[int, list[str]] = {n: [] for n in sizes}
    for blas in (False, True):
        for n in sizes:
            arrays = {k: tuple(np.zeros(n, np.float32) for _ in range(3)) for k in kernels}
            g = np.full(n, 1e-3, np.float32)

            def call(k, arrays=arrays, g=g):
                p, m, v = arrays[k]
                args = (p, g, (m, v), h, None, None, None, None)
                if k == "parallel":
                    parallel.call_parallel(kernels[k], args, parallel.get_num_threads())
                else:
                    kernels[k](*args)

            reps = max(20, min(300, int(3e7 / n)))
            times: dict[str, list[float]] = {k: [] for k in kernels}
            for k in kernels:
                call(k)
            # alone: each kernel's calls back to back (threads kept awake between them);
            # after BLAS: the kernels alternating, each call right after the products
            order = ([k for k in kernels for _ in range(reps)] if not blas
                     else [k for _ in range(reps) for k in kernels])
            for k in order:
                if blas:
                    for _ in range(3):
                        a @ b
                t0 = time.perf_counter()
                call(k)
                times[k].append(time.perf_counter() - t0)
            s, p = (1e6 * statistics.median(times[k]) for k in kernels)
            rows[n].append(f"{s:>10.1f}{p:>10.1f}{p / s:>9.2f}")
    for n, (alone, after) in rows.items():
        print(f"{n:>10.0e}{alone}   |{after}")

WAKE_CHILD = """
import json, statistics, time, numpy as np
from fastopt import parallel, rules
from fastopt.drivers import cpu
k = cpu.step_kernel(rules.sgd, True)
p = np.zeros(64, np.float32); g = np.ones_like(p)
args = (p, g, (), (0.1,), None, None, None, None)
n = parallel.get_num_threads()
parallel.call_parallel(k, args, n)
out = {}
for gap in (0, 30, 100, 300, 1000, 10000):
    ts = []
    for _ in range(200 if gap < 1000 else 50):
        parallel.call_parallel(k, args, n)
        end = time.perf_counter() + gap * 1e-6
        while time.perf_counter() < end:  # the main thread busy, as with other work
            pass
        t0 = time.perf_counter(); parallel.call_parallel(k, args, n)
        ts.append(time.perf_counter() - t0)
    out[gap] = 1e6 * statistics.median(ts)
print(json.dumps(out))
"""

WAKE_POLICIES = {
    "libgomp's own spin (GOMP_SPINCOUNT=300000)": {"GOMP_SPINCOUNT": "300000"},
    "fastopt's spin (GOMP_SPINCOUNT=3000)": {},
    "GOMP_SPINCOUNT=300": {"GOMP_SPINCOUNT": "300"},
    "OMP_WAIT_POLICY=passive": {"OMP_WAIT_POLICY": "passive"},
    "workqueue layer": {"NUMBA_THREADING_LAYER": "workqueue"},
}


def wake_up() -> None:
    """The time of a tiny parallel loop (64 values) after its threads were left idle for
    a while, under each wait policy: a loop that finds them asleep pays their wake-up."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "NUMBA_THREADING_LAYER")}
    gaps = None
    rows = []
    for name, env in WAKE_POLICIES.items():
        out = subprocess.run([sys.executable, "-c", WAKE_CHILD], env={**clean, **env},
                             capture_output=True, text=True, check=True)
        got = json.loads(out.stdout.splitlines()[-1])
        gaps = list(got)
        rows.append(f"{name:<46}" + "".join(f"{got[k]:>9.1f}" for k in gaps))
    print("a tiny parallel loop, medians in us, after the threads were idle for (us):")
    print(f"{'policy':<46}" + "".join(f"{k:>9}" for k in gaps))
    print("\n".join(rows))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--loop", action="store_true")
    ap.add_argument("--sizes", action="store_true")
    ap.add_argument("--wake", action="store_true")
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per policy")
    args = ap.parse_args()
    every = not (args.loop or args.sizes or args.wake)
    if args.loop or every:
        loop_policies(rounds=args.rounds)
    if args.sizes or every:
        kernel_sizes()
    if args.wake or every:
        wake_up()

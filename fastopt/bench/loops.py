"""Training loops: fastopt's step where it is used, between a forward and a backward pass.

A step that wins alone and slows the code around it is a loss, so these workloads time
the whole loop and, inside it, the forward/backward pass:

* ``numpy_mlp``: a NumPy MLP (:class:`NumpyMLP`) whose matrix products run on NumPy's BLAS
  (OpenBLAS's threads), stepped by the plain NumPy Adam step of the registry
  (``rules.adam.numpy_adam``) or by fastopt's Adam;
* ``torch_mlp``: the same MLP in torch (:func:`torch_mlp`, forward/backward on torch's
  threads), stepped by torch's fused Adam or by fastopt through ``.numpy()`` views of the
  same tensors;
* :func:`steps_beside_busy_process`: Adam steps of 1e4-1e7 values while another process
  spins on a core, against the same step held to one thread and the serial kernel alone.

Each loop variant runs in a fresh process of its own (:func:`compare_loops`).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import optim, parallel, rules
from ..drivers import cpu
from ..rules.adam import numpy_adam as NUMPY_ADAM
from . import torch_ref
from .load import BusyProcess, OtherLoad

#: The MLP of the issue that asked for these loops: a batch of 256 x 512 features, two
#: 512-wide ReLU layers, 10 classes (535K parameters).
BATCH, WIDTH, CLASSES = 256, 512, 10


class NumpyMLP:
    """Linear(W→W), ReLU, Linear(W→W), ReLU, Linear(W→10), softmax cross-entropy, on one
    fixed batch; NumPy matrix products (BLAS); gradients written into :attr:`grads`."""

    def __init__(self, dtype=np.float64, batch: int = BATCH, width: int = WIDTH,
                 classes: int = CLASSES, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((batch, width)).astype(dtype)
        self.y = rng.integers(0, classes, batch)
        shapes = [(width, width), (width,), (width, width), (width,), (width, classes),
                  (classes,)]
        self.params = [(rng.standard_normal(s) * (np.sqrt(2.0 / s[0]) if len(s) == 2 else 0))
                       .astype(dtype) for s in shapes]
        self.grads = [np.zeros(s, dtype) for s in shapes]

    def forward_backward(self) -> float:
        """The mean cross-entropy loss; its gradients into :attr:`grads`."""
        w1, b1, w2, b2, w3, b3 = self.params
        g = self.grads
        h1 = np.maximum(self.x @ w1 + b1, 0)
        h2 = np.maximum(h1 @ w2 + b2, 0)
        z = h2 @ w3 + b3
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        prob = e / e.sum(axis=1, keepdims=True)
        rows = np.arange(len(self.y))
        loss = -np.mean(np.log(prob[rows, self.y]))
        prob[rows, self.y] -= 1
        dz = prob / len(self.y)
        np.matmul(h2.T, dz, out=g[4])
        dz.sum(axis=0, out=g[5])
        dh2 = (dz @ w3.T) * (h2 > 0)
        np.matmul(h1.T, dh2, out=g[2])
        dh2.sum(axis=0, out=g[3])
        dh1 = (dh2 @ w2.T) * (h1 > 0)
        np.matmul(self.x.T, dh1, out=g[0])
        dh1.sum(axis=0, out=g[1])
        return float(loss)


def numpy_adam_step(params: list[np.ndarray], grads: list[np.ndarray],
                    lr: float = 1e-3) -> Callable[[], None]:
    """A step of the registry's NumPy Adam (``rules.adam.numpy_adam``) over every array,
    with its own state."""
    state = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    count = [0]

    def step() -> None:
        count[0] += 1
        for p, g, st in zip(params, grads, state, strict=True):
            NUMPY_ADAM(p, g, st, count[0], lr=lr)

    return step


def fastopt_adam_step(params: list[np.ndarray], grads: list[np.ndarray],
                      lr: float = 1e-3, state_dtype: str | None = None) -> Callable[[], None]:
    opt = optim.Adam(params, lr=lr, state_dtype=state_dtype)
    return lambda: opt.step(grads)


def torch_mlp(seed: int = 0):
    """The MLP in torch, float32, on a fixed batch: ``(model, fwd_bwd)``; the gradients
    are zeroed in place each step, never freed, so views of them stay valid."""
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, WIDTH),
        torch.nn.ReLU(), torch.nn.Linear(WIDTH, CLASSES))
    x = torch.randn(BATCH, WIDTH)
    y = torch.randint(0, CLASSES, (BATCH,))
    loss_fn = torch.nn.CrossEntropyLoss()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)

    def fwd_bwd() -> None:
        for p in model.parameters():
            p.grad.zero_()
        loss_fn(model(x), y).backward()

    return model, fwd_bwd


def _torch_variant(kind: str) -> tuple[Callable, Callable]:
    """The torch MLP's ``(fwd_bwd, step)``: torch's fused Adam, or fastopt over
    ``.numpy()`` views of the same tensors."""
    import torch

    model, fwd_bwd = torch_mlp()
    if kind.startswith("fastopt"):  # "fastopt" or "fastopt:<state_dtype>"
        params = [p.detach().numpy() for p in model.parameters()]
        grads = [p.grad.numpy() for p in model.parameters()]
        state = kind.partition(":")[2] or None
        return fwd_bwd, fastopt_adam_step(params, grads, state_dtype=state)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    def step() -> None:
        with torch.no_grad():
            opt.step()

    return fwd_bwd, step


def _numpy_variant(kind: str) -> tuple[Callable, Callable]:
    model = NumpyMLP(np.float64)
    make = fastopt_adam_step if kind == "fastopt" else numpy_adam_step
    return model.forward_backward, make(model.params, model.grads)


#: Each loop workload: its label and its variants ``name -> (fwd_bwd, step)`` factories,
#: the baseline first.
WORKLOADS: dict[str, tuple[str, dict[str, Callable[[], tuple[Callable, Callable]]]]] = {
    "numpy_mlp": (f"NumPy MLP float64, batch {BATCH}x{WIDTH}, {WIDTH}-{WIDTH}-{CLASSES}", {
        "NumPy Adam step": lambda: _numpy_variant("numpy"),
        "fastopt.Adam": lambda: _numpy_variant("fastopt")}),
    "torch_mlp": (f"torch MLP float32, batch {BATCH}x{WIDTH}, {WIDTH}-{WIDTH}-{CLASSES}", {
        "torch Adam (fused)": lambda: _torch_variant("torch"),
        "fastopt.Adam (.numpy() views)": lambda: _torch_variant("fastopt"),
        "fastopt.Adam, bfloat16 state": lambda: _torch_variant("fastopt:bfloat16"),
        "fastopt.Adam, 8-bit state": lambda: _torch_variant("fastopt:8bit")}),
}


@dataclass
class LoopRow:
    workload: str
    variant: str
    steps: int
    loop_s: float  # median over rounds of the time of `steps` training steps
    fwd_bwd_s: float  # the forward/backward part of it
    other_cores: float | None  # most cores other processes used during a round (None: unknown)
    baseline: bool = False  # the row the others are compared with

    @property
    def step_s(self) -> float:
        return self.loop_s - self.fwd_bwd_s


def time_loop(fwd_bwd: Callable[[], object], step: Callable[[], None],
              steps: int) -> tuple[float, float]:
    """``(seconds for `steps` training steps, the forward/backward part of it)``."""
    inside = 0.0
    start = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        fwd_bwd()
        inside += time.perf_counter() - t0
        step()
    return time.perf_counter() - start, inside


def run_variant(workload: str, variant: str, steps: int, warmup: int = 20) -> dict:
    """One variant's loop in this process: warm-up steps (kernels loaded, fastopt's
    serial/parallel choices settled), then ``steps`` timed steps."""
    fwd_bwd, step = WORKLOADS[workload][1][variant]()
    time_loop(fwd_bwd, step, warmup)
    with OtherLoad() as load:
        loop_s, fwd_bwd_s = time_loop(fwd_bwd, step, steps)
    return {"loop_s": loop_s, "fwd_bwd_s": fwd_bwd_s, "other_cores": load.cores}


def compare_loops(workload: str, steps: int, rounds: int) -> list[LoopRow]:
    """Each variant's loop in a fresh process of its own, as a user runs it, the variants
    alternating (their order reversed every other round), ``rounds`` times; medians per
    variant. (In one process the variants would share the allocator's state: glibc's
    heap, kept large by the NumPy step's temporaries, made the other variant's
    forward/backward 10% slower or faster depending on the run, nothing to do with the
    step itself.)"""
    label, variants = WORKLOADS[workload]
    names = list(variants)
    runs: dict[str, list[dict]] = {k: [] for k in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            out = subprocess.run(
                [sys.executable, "-m", "fastopt.bench.loops", workload, name, str(steps)],
                capture_output=True, text=True, check=True)
            runs[name].append(json.loads(out.stdout.splitlines()[-1]))
    rows = []
    for i, name in enumerate(names):
        loads = [x["other_cores"] for x in runs[name] if x["other_cores"] is not None]
        rows.append(LoopRow(label, name, steps,
                            statistics.median(x["loop_s"] for x in runs[name]),
                            statistics.median(x["fwd_bwd_s"] for x in runs[name]),
                            max(loads) if loads else None, baseline=i == 0))
    return rows


def steps_beside_busy_process(sizes=(10_000, 100_000, 1_000_000, 10_000_000),
                              dtype=np.float32, budget_s: float = 1.0) -> list[dict]:
    """Adam steps while another process spins on a core, timed call by call, alternating:
    fastopt's step (serial or parallel, its choice), the same step held to one thread (the
    same Python work: the yardstick of the choice), and the serial kernel called alone on
    a twin array. Means, which is what a loop pays. Rows: ``{"n", "step_us",
    "one_thread_us", "kernel_us"}``."""
    h = rules.adam_constants(1, 1e-3, (0.9, 0.999), 1e-8)
    serial = cpu.step_kernel(rules.adam, False)
    out = []
    with BusyProcess():
        for n in sizes:
            g = np.full(n, 1e-3, dtype)
            p, p1, p2, m2, v2 = (np.zeros(n, dtype) for _ in range(5))
            opt, opt1 = optim.Adam(p), optim.Adam(p1)

            def one_thread(opt1=opt1, g=g) -> None:
                parallel.set_num_threads(1)
                try:
                    opt1.step(g)
                finally:
                    parallel.set_num_threads(None)

            calls = {"step_us": lambda opt=opt, g=g: opt.step(g),
                     "one_thread_us": one_thread,
                     "kernel_us": lambda p2=p2, g=g, m2=m2, v2=v2: serial(
                         p2, g, (m2, v2), h, None, None, None, None)}
            for _ in range(8):  # past the choice's first tries
                for f in calls.values():
                    f()
            times: dict[str, list[float]] = {k: [] for k in calls}
            deadline = time.perf_counter() + budget_s
            while time.perf_counter() < deadline or len(times["step_us"]) < 20:
                for k, f in calls.items():
                    t0 = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t0)
            out.append({"n": n, **{k: 1e6 * statistics.fmean(v) for k, v in times.items()}})
    return out


def format_loops(rows: list[LoopRow]) -> str:
    """One block per workload: times per ``steps`` steps, and each variant against the
    baseline (loop speed-up; forward/backward time change: interference)."""
    lines = []
    for workload in dict.fromkeys(r.workload for r in rows):
        block = [r for r in rows if r.workload == workload]
        base = next(r for r in block if r.baseline)
        load = block[0].other_cores
        mark = "~" if load is not None and load > 0.25 else ""
        lines.append(f"  {workload}{mark} ({base.steps} steps; other processes: "
                     f"{'unknown' if load is None else f'{load:.2f} cores'})")
        lines.append(f"    {'step':<32}{'loop s':>8}{'fwd/bwd s':>11}{'step s':>9}"
                     f"{'loop speed-up':>15}{'fwd/bwd change':>16}")
        for r in block:
            speed = f"{base.loop_s / r.loop_s:>14.2f}x"
            change = ("-" if r.baseline else
                      f"{100 * (r.fwd_bwd_s / base.fwd_bwd_s - 1):+.0f}%")
            lines.append(f"    {r.variant:<32}{r.loop_s:>8.3f}{r.fwd_bwd_s:>11.3f}"
                         f"{r.step_s:>9.3f}{speed}{change:>16}")
    return "\n".join(lines)


def format_busy(rows: list[dict]) -> str:
    lines = ["  Adam float32 steps while another process spins on a core (means of alternating "
             "calls): fastopt's step, the same step held to one thread, the serial kernel alone",
             f"    {'n':>10}{'step us':>10}{'1 thread us':>13}{'kernel us':>11}"
             f"{'step/1 thread':>15}{'step/kernel':>13}"]
    lines += [f"    {r['n']:>10.0e}{r['step_us']:>10.1f}{r['one_thread_us']:>13.1f}"
              f"{r['kernel_us']:>11.1f}{r['step_us'] / r['one_thread_us']:>15.2f}"
              f"{r['step_us'] / r['kernel_us']:>13.2f}" for r in rows]
    return "\n".join(lines)


def run_all(quick: bool = False, with_torch: bool = True) -> dict:
    """Every loop workload, as the bench command runs them."""
    steps, rounds = (20, 1) if quick else (100, 5)
    out = {"numpy_mlp": compare_loops("numpy_mlp", steps, rounds)}
    out["torch_mlp"] = (compare_loops("torch_mlp", steps, rounds)
                        if with_torch and torch_ref.available() else None)
    out["beside_busy_process"] = steps_beside_busy_process(
        (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000, 10_000_000),
        budget_s=0.2 if quick else 1.0)
    out["threads"] = parallel.threading_info()
    return out


if __name__ == "__main__":  # one variant's loop, for compare_loops: a JSON line
    print(json.dumps(run_variant(sys.argv[1], sys.argv[2], int(sys.argv[3]))))

"""``python -m fastopt bench``: every rule's step time against its yardsticks."""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial

import numba
import numpy as np

from .. import optim
from .. import parallel as fastopt_threads
from .._progress import progress
from ..drivers import cpu
from ..rules.registry import registry
from . import torch_ref
from .load import BUSY_CORES, measured
from .roofline import bytes_moved, divider_kernel, parallel_yardstick, roofline_kernel

#: Each rule's class and number of state arrays with its default options (which sets
#: its traffic), from the registry.
RULES: dict[str, tuple[type[optim.Optimizer], int]] = {
    name: (getattr(optim, name), len(rule.state_of(rule.defaults)))
    for name, rule in registry().items()
}

#: The rules with a square root and a division per value: in cache, the divide unit
#: limits them before memory does (``roofline.divider_kernel``).
DIVIDING = frozenset(name for name, rule in registry().items() if rule.divides)

#: A row whose callables' median time is more than this many times their fastest call is
#: marked, as when another process competes for the cores (on a quiet 2-core machine the
#: ratio stays below about 1.5; with other busy processes, medians of 15-50x were seen).
NOISY_SPREAD = 2.0


@dataclass
class Row:
    rule: str
    n: int
    dtype: str
    fastopt_ms: float
    roofline_ms: float
    numpy_ms: float
    torch_ms: float | None
    torch_kind: str | None
    divider_ms: float | None = None
    #: median over fastest call, the worst of the row's callables (see NOISY_SPREAD)
    spread: float = 1.0
    #: cores other processes used while the row ran (None: unknown; see .load)
    other_cores: float | None = None

    @property
    def noisy(self) -> bool:
        busy = self.other_cores is not None and self.other_cores > BUSY_CORES
        return self.spread > NOISY_SPREAD or busy

    @property
    def pct_roofline(self) -> float:
        return 100.0 * self.roofline_ms / self.fastopt_ms

    @property
    def pct_divider(self) -> float | None:
        """% of the same-traffic kernel that also does one √ and one ÷ per value (the
        rules that divide only): the floor those rules meet while the arrays fit in cache."""
        return None if self.divider_ms is None else 100.0 * self.divider_ms / self.fastopt_ms

    @property
    def x_numpy(self) -> float:
        return self.numpy_ms / self.fastopt_ms

    @property
    def x_torch(self) -> float | None:
        return None if self.torch_ms is None else self.torch_ms / self.fastopt_ms

    def gbps(self) -> float:
        state = RULES[self.rule][1]
        return bytes_moved(self.n, state, self.dtype) / (self.fastopt_ms * 1e-3) / 1e9


def _interleaved_medians(fns: dict[str, Callable[[], None]], repeats: int,
                         budget_s: float, inner: int = 5,
                         spread: dict[str, float] | None = None) -> dict[str, float]:
    """Median ms of each callable over rounds that alternate between them, so drift hits
    all alike. In a round each callable gets an untimed call (its buffers back in cache,
    other libraries' spinning threads settled), then ``inner`` timed calls. The order is
    shuffled (seeded) every round, so no callable always follows the same one: what ran
    just before, e.g. torch with its OpenMP threads still spinning, slows the next
    callable's first calls. ``spread``, when given, receives each callable's median over
    its fastest call."""
    for f in fns.values():  # compile, fault pages in
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    items = list(fns.items())
    order = random.Random(0)
    deadline = time.perf_counter() + budget_s
    for r in range(repeats):
        order.shuffle(items)
        for k, f in items:
            f()
            for _ in range(inner):
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
        if r >= 2 and time.perf_counter() > deadline:
            break
    if spread is not None:
        spread.update({k: statistics.median(v) / max(min(v), 1e-12) for k, v in times.items()})
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def bench_rule(rule: str, n: int, dtype=np.float32, repeats: int = 20,
               budget_s: float = 3.0, with_torch: bool = True) -> Row:
    cls, n_state = RULES[rule]
    rng = np.random.default_rng(0)
    g = (rng.standard_normal(n) * 1e-2).astype(dtype)

    def fresh(k: int) -> tuple[np.ndarray, ...]:
        return tuple(np.zeros(n, dtype) for _ in range(k))

    p_fast = np.ones(n, dtype)
    opt = cls(p_fast)
    (p_roof,), st_roof = fresh(1), fresh(n_state)
    parallel = parallel_yardstick(n, n_state, dtype)
    roof = roofline_kernel(n_state, parallel=parallel)
    p_np, st_np = np.ones(n, dtype), fresh(n_state)
    ref = registry()[rule].numpy_step
    fns: dict[str, Callable[[], None]] = {
        "fastopt": lambda: opt.step(g),
        "roofline": lambda: roof(p_roof, g, st_roof),
        "numpy": lambda: ref(p_np, g, st_np, 10),
    }
    if rule in DIVIDING:
        (p_div,), st_div = fresh(1), fresh(n_state)
        div = divider_kernel(n_state, parallel=parallel)
        fns["divider"] = lambda: div(p_div, g, st_div)
    kind = None
    if with_torch and torch_ref.available() and registry()[rule].torch is not None:
        p_t = np.ones(n, dtype)
        fns["torch"], kind = torch_ref.make_step(rule, p_t, g.copy())
    spread: dict[str, float] = {}
    # measured again once if another process used the cores meanwhile
    med, others = measured(lambda: _interleaved_medians(fns, repeats, budget_s, spread=spread))
    return Row(rule, n, np.dtype(dtype).name, med["fastopt"], med["roofline"], med["numpy"],
               med.get("torch"), kind, med.get("divider"), max(spread.values()), others)


def serial_crossover(dtype=np.float32) -> int | None:
    """The smallest size at which the parallel Adam step beats the serial one, here."""
    from .. import rules

    h = tuple(dtype(c) for c in rules.adam_constants(1, 1e-3, (0.9, 0.999), 1e-8))
    ser, par = cpu.step_kernel(rules.adam, False), cpu.step_kernel(rules.adam, True)
    for n in (2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144):
        p, g, m, v = (np.full(n, x, dtype) for x in (1.0, 0.01, 0.0, 0.0))
        args = (p, g, (m, v), h, dtype(1), None, dtype(1), None)
        med = _interleaved_medians(
            {"s": partial(ser, *args), "p": partial(par, *args)}, 40, 0.3
        )
        if med["p"] < med["s"]:
            return n
    return None


def header() -> dict[str, object]:
    return {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "threading_layer": _threading_layer(),
        "numba": numba.__version__,
        "numpy": np.__version__,
        "threads": fastopt_threads.get_num_threads(),
    }


def _threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not yet initialised"


def format_table(rows: list[Row]) -> str:
    has_torch = any(r.torch_ms is not None for r in rows)
    head = f"{'rule':<9}{'n':>10}{'dtype':>9}{'fastopt ms':>12}{'GB/s':>8}{'% roofline':>12}"
    head += f"{'% div floor':>13}{'x NumPy':>9}" + (f"{'x torch':>9}  torch" if has_torch else "")
    lines = [head, "-" * len(head)]
    for r in rows:
        div = f"{r.pct_divider:>12.0f}%" if r.pct_divider is not None else f"{'-':>13}"
        name = r.rule + ("~" if r.noisy else "")
        line = (f"{name:<9}{r.n:>10.0e}{r.dtype:>9}{r.fastopt_ms:>12.3f}{r.gbps():>8.1f}"
                f"{r.pct_roofline:>11.0f}%{div}{r.x_numpy:>9.1f}")
        if has_torch:
            line += f"{r.x_torch:>9.2f}  {r.torch_kind}" if r.x_torch else f"{'-':>9}"
        lines.append(line)
    return "\n".join(lines)


def main(sizes: list[int], rules: list[str], dtype: str, quick: bool, as_json: bool,
         with_torch: bool, threshold: bool, resnet: bool = True, startup: bool = True,
         batchnorm: bool = True, loops: bool = True, precision: bool = True) -> int:
    from . import batchnorm as bn_bench
    from . import loops as loop_bench
    from . import precision as precision_bench
    from . import workloads

    dt = np.dtype(dtype).type
    repeats, budget = (4, 0.3) if quick else (20, 2.0)
    jobs = [(r, n) for n in sizes for r in rules]
    rows = [bench_rule(r, n, dt, repeats, budget, with_torch)
            for r, n in progress(jobs, "bench", enabled=not as_json)]
    info = header()
    if threshold:
        info["measured_crossover"] = serial_crossover(dt)
        info["adam_1e3_after_sweep_us"] = workloads.step_after_sweep(
            1000, rounds=30 if quick else 100)
    resnet_ms = None
    if resnet:
        if not as_json:
            print("bench: ResNet-50 Adam (161 arrays, 25.6M float32) ...", file=sys.stderr)
        resnet_ms = _interleaved_medians(workloads.resnet50_candidates(with_torch),
                                         repeats // 2 + 2, budget * 2, inner=3)
    bn_rows = None
    if batchnorm:
        bn_rows = [bn_bench.bench_shape(shape, repeats=max(3, repeats // 2), budget_s=budget,
                                        with_torch=with_torch)
                   for shape in progress(bn_bench.SHAPES, "bench BatchNorm",
                                         enabled=not as_json)]
    precision_rows = None
    if precision and dtype == "float32":
        precision_rows = [row for n in progress(sizes, "bench precision", enabled=not as_json)
                          for row in precision_bench.bench_size(
                              n, repeats=max(3, repeats // 3), budget_s=budget,
                              with_torch=with_torch)]
    loop_results = None
    if loops:
        if not as_json:
            print("bench: training loops (NumPy MLP, torch MLP) and steps beside a busy "
                  "process ...", file=sys.stderr)
        loop_results = loop_bench.run_all(quick, with_torch)
    start = None
    if startup:
        if not as_json:
            print("bench: start-up in fresh processes (cold and warm cache) ...",
                  file=sys.stderr)
        start = workloads.startup()
    if as_json:
        print(json.dumps({"header": info, "rows": [
            {**asdict(r), "gbps": r.gbps(), "noisy": r.noisy, "pct_roofline": r.pct_roofline,
             "pct_divider": r.pct_divider,
             "x_numpy": r.x_numpy,
             "x_torch": r.x_torch} for r in rows], "resnet50_adam_ms": resnet_ms,
            "batchnorm": None if bn_rows is None else [
                {**asdict(r), "train_x_numpy": r.train_x_numpy, "train_x_torch": r.train_x_torch,
                 "train_x_torch_out": r.train_x_torch_out,
                 "infer_vs_copy": r.infer_vs_copy} for r in bn_rows],
            "precision": None if precision_rows is None else [
                {**asdict(r), "pct_traffic": r.pct_traffic, "pct_floor": r.pct_floor,
                 "x_fp32": r.x_fp32, "x_bnb": r.x_bnb} for r in precision_rows],
            "loops": None if loop_results is None else {
                k: ([{**asdict(r), "step_s": r.step_s} for r in v]
                    if isinstance(v, list) and v and isinstance(v[0], loop_bench.LoopRow)
                    else v)
                for k, v in loop_results.items()},
            "startup": start}, indent=1))
        return 0
    print(f"fastopt bench: {info['machine']}, {info['cpus']} CPUs, numba {info['numba']} "
          f"({info['numba_threads']} threads, {info['threading_layer']} layer), "
          f"numpy {info['numpy']}")
    line = (f"fastopt: up to {info['threads']} threads; serial or parallel chosen per array by "
            "measured time")
    if threshold:
        line += (f" (the parallel Adam kernel alone first beats the serial one at "
                 f"{info['measured_crossover']} values now)")
    print(line)
    if threshold:
        cold = info["adam_1e3_after_sweep_us"]
        print(f"Adam step over 1e3 values right after a {workloads.SWEEP_BYTES >> 20} MB cache "
              f"sweep (as after a forward/backward): {cold['fastopt step']:.0f} us, its "
              f"kernel called alone {cold['kernel alone']:.0f} us")
    print("medians of interleaved runs; ratios > 1 mean fastopt is faster; "
          "% roofline = same-traffic kernel time / fastopt time; % div floor = the same with "
          "one square root and one division per value added (rules that divide: their "
          "floor while the arrays fit in cache)\n")
    print(format_table(rows))
    if any(r.noisy for r in rows):
        print(f"~ another process used the cores while this row ran (more than {BUSY_CORES:g} "
              f"of a core, measured again once), or its times spread widely (a median over "
              f"{NOISY_SPREAD:g}x the fastest call): do not trust its ratios; run it again on "
              "a quiet machine")
    if resnet_ms:
        print("\nResNet-50, Adam step (161 arrays, 25.6M float32 values)")
        roof = resnet_ms["roofline, one buffer"]
        for label, ms in resnet_ms.items():
            print(f"  {label:<24}{ms:>9.2f} ms   {100 * roof / ms:>5.0f}% of roofline")
        for label in ("fastopt list of 161", "fastopt FlatParams"):
            for other in ("torch fused list", "torch foreach list"):
                if other in resnet_ms:
                    print(f"  {label} vs {other}: "
                          f"{resnet_ms[other] / resnet_ms[label]:.2f}x")
    if bn_rows:
        print("\nBatchNorm float32: training forward+backward and inference forward "
              "(/copy: inference time over one read+write pass of x)")
        print(bn_bench.format_table(bn_rows))
        print(f"  ({bn_bench.ALLOCATION_NOTE})")
    if precision_rows:
        print("\nAdam with fewer bytes per parameter (float32 parameters and gradients "
              "unless the row says; B/value: bytes a step moves)")
        print(precision_bench.format_table(precision_rows))
        print("  (" + precision_bench.NOTE + ")")
    if loop_results:
        print("\nTraining loops: the whole loop and its forward/backward pass (a step that "
              "slows the code around it shows as a fwd/bwd change)")
        print(loop_bench.format_loops(loop_results["numpy_mlp"] +
                                      (loop_results["torch_mlp"] or [])))
        print(loop_bench.format_busy(loop_results["beside_busy_process"]))
    if start:
        print(f"\nstart-up (fresh process: import fastopt + first Adam step): "
              f"cold cache {start['cold_import_and_step_s']:.2f} s, "
              f"warm cache {start['warm_import_and_step_s']:.2f} s; the floor of any Numba "
              f"library here (import numpy + numba, one trivial cached kernel): "
              f"{start['numba_floor_s']:.2f} s")
        if start["numba_imports_scipy"]:
            fastopt_too = ("so does fastopt's" if start["fastopt_imports_scipy"] else
                           "fastopt defers that check, so its figures do not include it")
            print("  (SciPy is installed: a bare Numba library's first kernel load imports "
                  f"scipy.linalg to look for a BLAS, which is in the floor; {fastopt_too})")
    if not torch_ref.available() and with_torch:
        print("\n(torch not installed: pip install 'fastopt[torch]' adds the x torch column)")
    return 0

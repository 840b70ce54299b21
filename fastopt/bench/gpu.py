"""``python -m fastopt bench --device cuda``: the rules on a GPU, against the device's copy
bandwidth and torch's fused CUDA Adam, measured in the same run.

Each case is timed with CUDA events around single steps (the median of ``repeats``, after
warm-up steps that also compile). The yardstick is the device-to-device copy bandwidth
(``cuMemcpyDtoD`` of a 512 MB buffer; read + write bytes over time): an optimizer step
that moves ``B`` bytes per element at that bandwidth is the best the memory allows, so
``% copy BW = B·n / t / copy bandwidth``. torch: ``torch.optim.Adam(fused=True)`` (or the
rule's torch counterpart, foreach where torch has no fused kernel) on CUDA tensors of the
same size, when torch with CUDA is installed.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable

import numpy as np

from .._progress import progress
from .run import RULES


def traffic(rule: str, itemsize: int) -> int:
    """Bytes per element per step: read p, g and each state array, write p and the state."""
    k = RULES[rule][1]
    return itemsize * (2 + k + 1 + k)


def _time_events(fn: Callable[[], None], repeats: int, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` between two CUDA events (default stream)."""
    from numba import cuda

    for _ in range(warmup):
        fn()
    cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = cuda.event(), cuda.event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def copy_bandwidth(nbytes: int = 1 << 29, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + bytes written)."""
    from numba import cuda

    src = cuda.device_array(nbytes // 4, np.float32)
    dst = cuda.device_array(nbytes // 4, np.float32)
    ms = _time_events(lambda: dst.copy_to_device(src), repeats)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def _torch_step(rule: str, n: int, dtype) -> tuple[Callable[[], None], str] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    from .torch_ref import step_for  # the same torch counterparts as the CPU bench

    p = torch.randn(n, device="cuda", dtype=getattr(torch, np.dtype(dtype).name))
    p.grad = torch.randn_like(p)
    return step_for(rule, p)


def bench_rule(rule: str, n: int, dtype, repeats: int) -> dict[str, object]:
    from numba import cuda

    rng = np.random.default_rng(0)
    p = cuda.to_device(rng.standard_normal(n).astype(dtype))
    g = cuda.to_device(rng.standard_normal(n).astype(dtype))
    opt = RULES[rule][0](p)
    ms = _time_events(lambda: opt.step(g), repeats)
    nbytes = traffic(rule, np.dtype(dtype).itemsize) * n
    row: dict[str, object] = {"rule": rule, "n": n, "dtype": np.dtype(dtype).name,
                              "fastopt_ms": ms, "gbps": nbytes / (ms * 1e-3) / 1e9}
    torch_case = _torch_step(rule, n, dtype)
    if torch_case is not None:
        import torch

        step, label = torch_case
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        row["torch_ms"] = statistics.median(times)
        row["torch"] = label
        row["x_torch"] = row["torch_ms"] / ms
    return row


def main(sizes: list[int], rules: list[str], dtype: str, quick: bool, as_json: bool) -> int:
    try:
        from numba import cuda
    except ImportError:
        cuda = None
    if cuda is None or not cuda.is_available() or cuda.__name__.endswith("simulator"):
        print("bench --device cuda needs an NVIDIA GPU and numba-cuda "
              "(pip install 'fastopt[cuda]'); none is usable here.", file=sys.stderr)
        return 2
    from ..drivers import cuda_driver

    if cuda_driver().SIMULATOR:
        print("bench --device cuda cannot time the CUDA simulator; unset "
              "NUMBA_ENABLE_CUDASIM.", file=sys.stderr)
        return 2
    repeats = 5 if quick else 30
    device = cuda.get_current_device()
    header = {"gpu": device.name.decode() if isinstance(device.name, bytes) else device.name,
              "compute_capability": device.compute_capability}
    cases = [(r, n) for n in sizes for r in rules]
    rows = []
    header["copy_gbps"] = copy_bandwidth(repeats=repeats)
    for rule, n in progress(cases, "bench cuda"):
        row = bench_rule(rule, n, np.dtype(dtype).type, repeats)
        row["pct_copy_bw"] = 100.0 * row["gbps"] / header["copy_gbps"]
        rows.append(row)
    if as_json:
        print(json.dumps({"header": header, "rows": rows}, indent=1))
        return 0
    sm = "".join(map(str, header["compute_capability"]))
    print(f"fastopt bench --device cuda: {header['gpu']} (sm_{sm}), device-to-device copy "
          f"{header['copy_gbps']:.0f} GB/s")
    print("medians of CUDA-event timings; % copy BW = step bytes / time / copy bandwidth; "
          "x torch > 1 means fastopt is faster")
    print(f"{'rule':<10}{'n':>10}  {'dtype':<8}{'fastopt ms':>11}{'GB/s':>8}{'% copy BW':>11}"
          f"{'x torch':>9}  torch")
    for r in rows:
        xt = f"{r['x_torch']:.2f}" if "x_torch" in r else "-"
        print(f"{r['rule']:<10}{r['n']:>10.0e}  {r['dtype']:<8}{r['fastopt_ms']:>11.3f}"
              f"{r['gbps']:>8.0f}{r['pct_copy_bw']:>10.0f}%{xt:>9}  {r.get('torch', '-')}")
    return 0

"""``python -m fastopt bench --device cuda``: the rules, the ResNet-50 step and BatchNorm on
a GPU, against the device's copy bandwidth and torch's CUDA kernels, measured in the same
run.

Each callable is timed with CUDA events (its own library's, on the default stream) around
:data:`INNER` back-to-back calls, as a training loop issues steps without waiting for
them: where the GPU work takes longer than the host's launch work, the queue fills and
the time is the GPU's; where it does not (small arrays, many launches), the time is the
host's, which is then the real cost of a step. The callables of a group take turns round
by round (drift hits all alike); the tables give medians per call.

The yardstick is the device-to-device copy bandwidth (512 MB copies, read + write bytes
over time): an optimizer step that moves ``B`` bytes per element at that bandwidth is the
best the memory allows, so ``% copy BW = B·n / t / copy bandwidth``; BatchNorm inference
is compared with one read and one write of x at that bandwidth. torch:
``torch.optim.Adam(fused=True)`` (or the rule's torch counterpart, foreach where torch
has no fused CUDA kernel) on CUDA tensors of the same size; its BatchNorm (cuDNN) with an
autograd backward; when torch with CUDA is installed.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Callable

import numpy as np

from .._progress import progress
from ..rules.registry import registry
from .roofline import bytes_moved
from .run import RULES

#: Back-to-back calls between two events (see the module docstring).
INNER = 10

#: A timed callable and the library whose CUDA events time it ("numba" or "torch").
Timed = tuple[Callable[[], object], str]

#: BatchNorm cases (float32): the CPU bench's three shapes, and the first channels-last.
BN_CASES: tuple[tuple[tuple[int, ...], int], ...] = (
    ((64, 64, 56, 56), 1), ((128, 256, 14, 14), 1), ((256, 1024), 1), ((64, 56, 56, 64), -1))


def traffic(rule: str, itemsize: int) -> int:
    """Bytes per element per step: read p, g and each state array, write p and the state."""
    return bytes_moved(1, RULES[rule][1], np.dtype(f"f{itemsize}"))


def _events(lib: str):
    if lib == "torch":
        import torch

        return (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
    from numba import cuda

    return cuda.event(), cuda.event()


def _sync_all() -> None:
    from numba import cuda

    cuda.synchronize()


def interleaved_medians(fns: dict[str, Timed], repeats: int, warmup: int = 3,
                        inner: int = INNER) -> dict[str, float]:
    """Median milliseconds per call of each callable, timed ``inner`` calls at a time
    between two CUDA events, the callables taking turns round by round. (In Numba's CUDA
    simulator, where timings mean nothing and each call runs every thread in Python, one
    warm-up call and one call a round.)"""
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        warmup, inner = 1, 1
    for fn, _ in fns.values():
        for _ in range(warmup):
            fn()
    _sync_all()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (fn, lib) in fns.items():
            start, stop = _events(lib)
            start.record()
            for _ in range(inner):
                fn()
            stop.record()
            stop.synchronize()
            times[name].append(start.elapsed_time(stop) / inner)
    return {name: statistics.median(t) for name, t in times.items()}


def copy_bandwidth(nbytes: int = 1 << 29, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + bytes written)."""
    from numba import cuda

    src = cuda.device_array(nbytes // 4, np.float32)
    dst = cuda.device_array(nbytes // 4, np.float32)
    ms = interleaved_medians({"copy": (lambda: dst.copy_to_device(src), "numba")}, repeats)
    return 2 * nbytes / (ms["copy"] * 1e-3) / 1e9


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


#: The state storages timed on the GPU besides float32 (``state_dtype``), for Adam.
STATE_ROWS = ("bfloat16", "8bit")


def bench_rule(rule: str, n: int, dtype, repeats: int, state_dtype: str | None = None
               ) -> dict[str, object]:
    """One rule's step at ``n`` values (its state stored as ``state_dtype``: then its
    bytes moved are the stored widths', and torch, which has no such storage, is left
    out)."""
    from numba import cuda

    rng = np.random.default_rng(0)
    p = cuda.to_device(rng.standard_normal(n).astype(dtype))
    g = cuda.to_device(rng.standard_normal(n).astype(dtype))
    opt = RULES[rule][0](p, state_dtype=state_dtype)
    fns: dict[str, Timed] = {"fastopt": (lambda: opt.step(g), "numba")}
    if state_dtype is None:  # the same step one element per access: views one value off
        # a 16-byte boundary take the kernels' one-element loop (drivers/cuda_vectors.py),
        # launched as every step is: n/4 threads below the grid cap (32 blocks of 256 per
        # SM, 4.3M values on an H200); above it both run the capped grid, and the ratio is
        # the two loops' alone
        p1 = cuda.to_device(rng.standard_normal(n + 1).astype(dtype))[1:]
        g1 = cuda.to_device(rng.standard_normal(n + 1).astype(dtype))[1:]
        opt1 = RULES[rule][0](p1)
        fns["one_wide"] = (lambda: opt1.step(g1), "numba")
    torch = _torch_cuda()
    label = None
    if state_dtype is None and torch is not None and registry()[rule].torch is not None:
        from .torch_ref import step_for  # the same torch counterparts as the CPU bench

        tp = torch.randn(n, device="cuda", dtype=getattr(torch, np.dtype(dtype).name))
        tp.grad = torch.randn_like(tp)
        step, label = step_for(rule, tp)
        fns["torch"] = (step, "torch")
    med = interleaved_medians(fns, repeats)
    ms = med["fastopt"]
    nbytes = traffic(rule, np.dtype(dtype).itemsize) * n
    if state_dtype is not None:  # p and g as they are; the state read and written stored
        nbytes = 3 * np.dtype(dtype).itemsize * n + 2 * opt.state_bytes()
    row: dict[str, object] = {"rule": rule + (f" [{state_dtype}]" if state_dtype else ""),
                              "n": n, "dtype": np.dtype(dtype).name,
                              "fastopt_ms": ms, "gbps": nbytes / (ms * 1e-3) / 1e9}
    if "torch" in med:
        row.update(torch_ms=med["torch"], torch=label, x_torch=med["torch"] / ms)
    if "one_wide" in med:  # > 1: 16-byte accesses are that much faster
        row.update(one_wide_ms=med["one_wide"], x_one_wide=med["one_wide"] / ms)
    return row


def bench_resnet(repeats: int, shapes: list[tuple[str, tuple[int, ...]]] | None = None
                 ) -> dict[str, float]:
    """Adam over the 161 ResNet-50 arrays (or ``shapes``) on the GPU: a list of device
    arrays and one FlatParams (fastopt), and torch's fused and foreach Adam on the same
    list (ms; ``values``: the element count)."""
    from numba import cuda

    from .. import optim
    from ..flat import FlatParams
    from .workloads import resnet50_shapes, torch_adam

    shapes = resnet50_shapes() if shapes is None else shapes
    rng = np.random.default_rng(0)
    host_grads = [(rng.standard_normal(s) * 1e-2).astype(np.float32) for _, s in shapes]
    params = [cuda.to_device(np.ones(s, np.float32)) for _, s in shapes]
    grads = [cuda.to_device(g) for g in host_grads]
    opt_list = optim.Adam(params)
    clipped = [cuda.to_device(np.ones(s, np.float32)) for _, s in shapes]
    opt_clip = optim.Adam(clipped, clip_norm=1.0)
    flat = FlatParams({name: s for name, s in shapes}, device="cuda")
    flat.data.copy_to_device(np.ones(flat.data.size, np.float32))
    for (name, _), g in zip(shapes, host_grads, strict=True):
        flat.grads[name].copy_to_device(g)
    opt_flat = optim.Adam(flat)
    fns: dict[str, Timed] = {
        f"fastopt list of {len(shapes)}": (lambda: opt_list.step(grads), "numba"),
        "fastopt list, clip_norm": (lambda: opt_clip.step(grads), "numba"),
        "fastopt FlatParams": (opt_flat.step, "numba"),
    }
    torch = _torch_cuda()
    if torch is not None:
        ones = [np.ones(s, np.float32) for _, s in shapes]
        for kind in ("fused", "foreach"):
            fns[f"torch {kind} list"] = (torch_adam(ones, host_grads, kind, "cuda"), "torch")
        # The same list as torch tensors (what a torch user passes), and torch's clipping.
        tensors = [torch.ones(s, device="cuda") for _, s in shapes]
        tgrads = [torch.from_numpy(g).cuda() for g in host_grads]
        opt_tensors = optim.Adam(tensors)
        fns["fastopt list of tensors"] = (lambda: opt_tensors.step(tgrads), "torch")
        fused = torch_adam(ones, host_grads, "fused", "cuda")
        tps = [p for group in fused.optimizer.param_groups for p in group["params"]]

        def fused_clipped() -> None:
            torch.nn.utils.clip_grad_norm_(tps, 1.0, foreach=True)
            fused()

        fns["torch fused, clip_grad_norm_"] = (fused_clipped, "torch")
    out = interleaved_medians(fns, repeats)
    out["values"] = float(sum(int(np.prod(s)) for _, s in shapes))
    return out


def bench_batchnorm_shape(shape: tuple[int, ...], repeats: int, axis: int = 1
                          ) -> dict[str, object]:
    """BatchNorm float32 on the GPU: training forward + backward (``out=`` buffers, running
    statistics updated) and inference forward for fastopt; torch's cuDNN BatchNorm with an
    autograd backward (channels-last memory format for ``axis=-1``). ``nbytes``: x's size
    (inference's floor is one read and one write of it)."""
    from numba import cuda

    from .. import batchnorm

    rng = np.random.default_rng(0)
    c = shape[axis]
    xh = rng.standard_normal(shape, dtype=np.float32) * 2.0 + 1.0
    dyh = rng.standard_normal(shape, dtype=np.float32)
    gh = (1.0 + 0.1 * rng.standard_normal(c)).astype(np.float32)
    bh = (0.1 * rng.standard_normal(c)).astype(np.float32)
    x, dy, gamma, beta = (cuda.to_device(a) for a in (xh, dyh, gh, bh))
    rm, rv = cuda.to_device(np.zeros(c, np.float32)), cuda.to_device(np.ones(c, np.float32))
    y, dx = cuda.device_array_like(x), cuda.device_array_like(x)
    dg, db = cuda.device_array(c, np.float32), cuda.device_array(c, np.float32)
    stats = cuda.device_array((3, c), np.float64)

    def train() -> None:
        _, cache_ = batchnorm.forward(x, gamma, beta, running_mean=rm, running_var=rv, out=y,
                                    axis=axis, stats_out=stats)
        batchnorm.backward(dy, cache_, out=(dx, dg, db))

    def infer() -> None:
        batchnorm.forward(x, gamma, beta, training=False, running_mean=rm, running_var=rv,
                          out=y, axis=axis)

    fns: dict[str, Timed] = {"train_fastopt": (train, "numba"),
                             "infer_fastopt": (infer, "numba")}
    torch = _torch_cuda()
    if torch is not None:
        from .batchnorm import torch_steps

        def nchw(a):  # channels-last data as torch's NCHW view of it (no copy)
            t = torch.from_numpy(a).cuda()
            return t if axis == 1 else t.movedim(-1, 1)

        ttrain, tinfer = torch_steps(nchw(xh).requires_grad_(),
                                     torch.from_numpy(gh).cuda().requires_grad_(),
                                     torch.from_numpy(bh).cuda().requires_grad_(), nchw(dyh))
        fns.update(train_torch=(ttrain, "torch"), infer_torch=(tinfer, "torch"))
    med = interleaved_medians(fns, repeats)
    return {"shape": list(shape), "axis": axis, "nbytes": xh.nbytes, **med}


def main(sizes: list[int], rules: list[str], dtype: str, quick: bool, as_json: bool,
         resnet: bool = True, batchnorm: bool = True) -> int:
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
    name = device.name.decode() if isinstance(device.name, bytes) else device.name
    header: dict[str, object] = {"gpu": name, "compute_capability": device.compute_capability,
                                 "copy_gbps": copy_bandwidth(repeats=repeats)}
    cases: list[tuple] = [("rule", r, n) for n in sizes for r in rules]
    if "Adam" in rules and dtype == "float32":  # fewer bytes per parameter
        cases += [("rule", "Adam", n, sd) for n in sizes for sd in STATE_ROWS]
    if resnet:
        cases.append(("resnet",))
    if batchnorm:
        cases += [("batchnorm", *case) for case in BN_CASES]
    report: dict[str, object] = {"header": header, "rows": [], "resnet": None,
                                 "batchnorm": []}
    errors: list[str] = []
    for case in progress(cases, "bench cuda"):
        try:
            if case[0] == "rule":
                row = bench_rule(case[1], case[2], np.dtype(dtype).type, repeats, *case[3:])
                row["pct_copy_bw"] = 100.0 * row["gbps"] / header["copy_gbps"]
                report["rows"].append(row)
            elif case[0] == "resnet":
                report["resnet"] = bench_resnet(repeats)
            else:
                report["batchnorm"].append(bench_batchnorm_shape(case[1], repeats, case[2]))
        except Exception as exc:  # noqa: BLE001 - reported, and the other cases still run
            errors.append(f"{case}: {type(exc).__name__}: {exc}")
    report["errors"] = errors
    print(json.dumps(report, indent=1) if as_json else format_report(report))
    return 1 if errors else 0


def _opt(value: float | None, spec: str, width: int) -> str:
    return f"{'-' if value is None else format(value, spec):>{width}}"


def format_report(report: dict) -> str:
    """The tables of :func:`main` (from its JSON form)."""
    header = report["header"]
    copy_gbps = header["copy_gbps"]
    sm = "".join(map(str, header["compute_capability"]))
    lines = [f"fastopt bench --device cuda: {header['gpu']} (sm_{sm}), device-to-device copy "
             f"{copy_gbps:.0f} GB/s",
             f"medians per call of CUDA-event timings over {INNER} back-to-back calls, "
             "callables interleaved; % copy BW = step bytes / time / copy bandwidth; "
             "x 1-wide: the same step on arrays off 16-byte alignment (one element per "
             "access) / this one; x torch > 1 means fastopt is faster", "",
             f"{'rule':<16}{'n':>10}  {'dtype':<8}{'fastopt ms':>11}{'GB/s':>8}"
             f"{'% copy BW':>11}{'x 1-wide':>9}{'x torch':>9}  torch"]
    for r in report["rows"]:
        xt = f"{r['x_torch']:.2f}" if "x_torch" in r else "-"
        xw = f"{r['x_one_wide']:.2f}" if "x_one_wide" in r else "-"
        lines.append(f"{r['rule']:<16}{r['n']:>10.0e}  {r['dtype']:<8}{r['fastopt_ms']:>11.3f}"
                     f"{r['gbps']:>8.0f}{r['pct_copy_bw']:>10.0f}%{xw:>9}{xt:>9}  "
                     f"{r.get('torch', '-')}")
    res = report.get("resnet")
    if res:
        floor = 28 * res["values"] / (copy_gbps * 1e9) * 1e3
        lines += ["", f"ResNet-50 Adam step (161 arrays, {res['values'] / 1e6:.1f}M values; "
                      f"copy-bandwidth floor {floor:.3f} ms)"]
        for label, ms in res.items():
            if label != "values":
                lines.append(f"  {label:<30}{ms:>9.3f} ms  {100 * floor / ms:>5.0f}% of floor")
    if report.get("batchnorm"):
        lines += ["", "BatchNorm float32 (train = forward + backward; /floor = inference over "
                      "one read and one write of x at the copy bandwidth)",
                  f"{'shape':<26}{'train ms':>10}{'torch ms':>10}{'x torch':>9}{'infer ms':>10}"
                  f"{'torch ms':>10}{'x torch':>9}{'/floor':>8}"]
        for b in report["batchnorm"]:
            f = b["train_fastopt"]
            i = b["infer_fastopt"]
            floor = 2 * b["nbytes"] / (copy_gbps * 1e9) * 1e3
            tt, ti = b.get("train_torch"), b.get("infer_torch")
            label = str(tuple(b["shape"])) + (" C-last" if b["axis"] != 1 else "")
            lines.append(
                f"{label:<26}{f:>10.3f}{_opt(tt, '.3f', 10)}"
                f"{_opt(tt and tt / f, '.2f', 9)}{i:>10.3f}{_opt(ti, '.3f', 10)}"
                f"{_opt(ti and ti / i, '.2f', 9)}{i / floor:>8.2f}")
    if report.get("errors"):
        lines += ["", "FAILED cases:"] + [f"  {e}" for e in report["errors"]]
    return "\n".join(lines)


if __name__ == "__main__":  # python -m fastopt.bench.gpu REPORT.json: print its tables
    with open(sys.argv[1]) as fh:
        print(format_report(json.load(fh)))

"""Whole-model workloads and start-up cost, for ``python -m fastopt bench``.

* ResNet-50: the 161 parameter arrays of torchvision's ResNet-50 (25.6M float32 values;
  shapes shipped in ``data/resnet50_shapes.json``), stepped with Adam as a list of separate
  arrays and as one FlatParams, against torch's fused and foreach Adam on the same list
  and the same-traffic roofline kernel over one buffer.
* A step after a cache sweep: an Adam step over a small array right after 64 MB have gone
  through the caches, as after a model's forward and backward pass, against its compiled
  kernel called alone: what the step's Python costs in a training loop.
* Start-up: a fresh process that imports fastopt and takes its first Adam step, with the
  kernel cache warm and cold.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np

from .. import optim, rules
from ..drivers import cpu
from ..flat import FlatParams
from . import torch_ref
from .roofline import roofline_kernel


def resnet50_shapes() -> list[tuple[str, tuple[int, ...]]]:
    text = resources.files(__package__).joinpath("data/resnet50_shapes.json").read_text()
    return [(name, tuple(shape)) for name, shape in json.loads(text)["params"]]


def resnet50_candidates(with_torch: bool = True) -> dict[str, Callable[[], None]]:
    """Zero-argument Adam steps over the ResNet-50 parameters, by label."""
    shapes = resnet50_shapes()
    rng = np.random.default_rng(0)
    grads = [(rng.standard_normal(s) * 1e-2).astype(np.float32) for _, s in shapes]
    params = [np.ones(s, np.float32) for _, s in shapes]
    opt_list = optim.Adam(params)
    flat = FlatParams({name: s for name, s in shapes})
    flat.data[:] = 1.0
    for (name, _), g in zip(shapes, grads, strict=True):
        flat.grads[name][...] = g
    opt_flat = optim.Adam(flat)
    roof = roofline_kernel(2)
    buf = np.ones_like(flat.data)
    state = (np.zeros_like(flat.data), np.zeros_like(flat.data))
    out: dict[str, Callable[[], None]] = {
        "fastopt list of 161": lambda: opt_list.step(grads),
        "fastopt FlatParams": opt_flat.step,
        "roofline, one buffer": lambda: roof(buf, flat.grad, state),
    }
    if with_torch and torch_ref.available():
        for kind in ("fused", "foreach"):
            out[f"torch {kind} list"] = torch_adam([np.ones(s, np.float32) for _, s in shapes],
                                                    grads, kind)
    return out


#: Bytes each sweep moves through the caches (twice the 32 MB L3 of the project's machines).
SWEEP_BYTES = 64 << 20


def after_sweep_candidates(n: int = 1000) -> tuple[dict[str, Callable[[], None]],
                                                     Callable[[], None],
                                                     dict[str, np.ndarray]]:
    """``(steps, sweep, params)``: an Adam step over ``n`` float32 values through the
    optimizer and its compiled kernel called alone with the same arguments, by label; a
    function that sweeps :data:`SWEEP_BYTES` through the caches (a NumPy copy), to run
    before each; and the parameter array each step updates, by label."""
    src = np.ones(SWEEP_BYTES // 16)
    dst = np.empty_like(src)
    g = np.full(n, 1e-2, np.float32)
    params = {"fastopt step": np.ones(n, np.float32), "kernel alone": np.ones(n, np.float32)}
    opt = optim.Adam(params["fastopt step"])
    p, m, v = params["kernel alone"], np.zeros(n, np.float32), np.zeros(n, np.float32)
    kernel = cpu.step_kernel(rules.adam, False)  # what the step runs at this size
    h = rules.adam_constants(1, 1e-3, (0.9, 0.999), 1e-8)
    steps: dict[str, Callable[[], None]] = {
        "fastopt step": lambda: opt.step(g),
        "kernel alone": lambda: kernel(p, g, (m, v), h, None, None, None, None),
    }
    return steps, lambda: np.copyto(dst, src), params


def step_after_sweep(n: int = 1000, rounds: int = 100) -> dict[str, float]:
    """Median microseconds of each of :func:`after_sweep_candidates`' steps, each timed
    call right after a sweep (the two alternate)."""
    steps, sweep, _ = after_sweep_candidates(n)
    times: dict[str, list[float]] = {k: [] for k in steps}
    for f in steps.values():
        f()  # loaded (or compiled) before timing
    for _ in range(rounds):
        for k, f in steps.items():
            sweep()
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: 1e6 * statistics.median(t) for k, t in times.items()}


def torch_adam(params: list[np.ndarray], grads: list[np.ndarray], kind: str,
               device: str = "cpu"):
    """A step of torch's ``kind`` ("fused" or "foreach") Adam over ``params`` with
    ``grads``: views of the arrays on the CPU, copies on another device. The torch
    optimizer is the function's ``optimizer`` attribute."""
    import torch

    tensors = []
    for p, g in zip(params, grads, strict=True):
        t = torch.from_numpy(p).to(device)
        t.grad = torch.from_numpy(g).to(device)
        tensors.append(t)
    opt = torch.optim.Adam(tensors, lr=1e-3, **{kind: True})

    def step() -> None:
        with torch.no_grad():
            opt.step()

    step.optimizer = opt  # its parameters (with their .grad), for clipping yardsticks
    return step


# Each prints whether scipy.linalg was imported on the way, then its seconds.
_STARTUP = (
    "import sys, time; t0 = time.perf_counter()\n"
    "import numpy as np, fastopt\n"
    "p = np.ones(1000, np.float32); opt = fastopt.Adam(p)\n"
    "opt.step(np.full(1000, 0.1, np.float32))\n"
    "t = time.perf_counter() - t0\n"
    "print(int('scipy.linalg' in sys.modules)); print(t)\n"
)


_FLOOR_MODULE = "from numba import njit\n@njit(cache=True)\ndef f(x):\n    return x + 1\n"
# Numba's first kernel load checks for a BLAS by importing scipy.linalg when SciPy is
# installed (0.2-0.5 s on these machines); fastopt defers that check
# (fastopt._numba_startup), a bare Numba library pays it.
_FLOOR = (
    "import sys, time; t0 = time.perf_counter()\n"
    "import numpy as np, numba_floor\n"
    "numba_floor.f(np.float32(1.0))\n"
    "t = time.perf_counter() - t0\n"
    "print(int('scipy.linalg' in sys.modules)); print(t)\n"
)


def _run_fresh(cache_dir: str | None, code: str) -> tuple[float, list[str]]:
    """(wall seconds of a fresh process running ``code``, its output lines)."""
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    # Python's own bytecode cache on, as in a user's environment: where the shell sets
    # PYTHONDONTWRITEBYTECODE (these machines do), every fresh process would recompile
    # fastopt's sources (40-60 ms here) and the warm figure would not be a warm start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=cache_dir)
    return time.perf_counter() - t0, out.stdout.strip().splitlines()


def startup_seconds(cache_dir: str | None, code: str = _STARTUP) -> tuple[float, float]:
    """(wall seconds of the whole fresh process, seconds inside it from before
    ``import fastopt`` to after the first Adam step). ``cache_dir=None``: the default
    cache (warm after a first run); a directory: ``NUMBA_CACHE_DIR`` there."""
    wall, lines = _run_fresh(cache_dir, code)
    return wall, float(lines[-1])


def startup() -> dict[str, float | bool]:
    """Cold (empty cache) and warm (cache filled by the cold run) start-up, and the floor
    any Numba library pays: importing numpy and numba and calling one trivial cached
    kernel in a fresh process (medians of three); ``numba_imports_scipy``: whether that
    floor includes numba's import of scipy.linalg (SciPy installed), and
    ``fastopt_imports_scipy`` whether fastopt's cold process did."""
    with tempfile.TemporaryDirectory() as d:
        Path(d, "numba_floor.py").write_text(_FLOOR_MODULE)
        cold_wall, lines = _run_fresh(d, _STARTUP)
        cold_in, fastopt_scipy = float(lines[-1]), lines[0] == "1"
        _, lines = _run_fresh(d, _FLOOR)  # fills the floor's cache
        scipy = lines[0] == "1"
        warm, floor = [], []
        for _ in range(3):  # alternate, so drift hits both alike
            warm.append(startup_seconds(d))
            floor.append(startup_seconds(d, _FLOOR))
    return {"cold_process_s": cold_wall, "cold_import_and_step_s": cold_in,
            "warm_process_s": sorted(w for w, _ in warm)[1],
            "warm_import_and_step_s": sorted(i for _, i in warm)[1],
            "numba_floor_s": sorted(i for _, i in floor)[1],
            "numba_imports_scipy": scipy, "fastopt_imports_scipy": fastopt_scipy}

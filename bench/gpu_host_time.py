"""Host time of fastopt's GPU path, measured without a GPU.

Where a GPU step is host-bound (small arrays, lists, BatchNorm), its cost is fastopt's and
numba-cuda's Python. This script runs that Python for real on Numba device arrays whose
memory is fake (no GPU, no driver), with the few calls that would reach the driver
replaced: allocations return fake arrays, kernel launches and uploads do nothing, the
current CUDA context is a no-op. What it prints is therefore the Python part only:
launches (about 10-20 us each on an H200 through fastopt's direct launcher) and real
allocations come on top. Compare runs of this script, not its numbers with a GPU's.

Run: ``python bench/gpu_host_time.py [--profile CASE]`` (needs numba-cuda; not under
``NUMBA_ENABLE_CUDASIM``). Cases: BatchNorm training and inference at (256, 1024), an Adam
step over ResNet-50's 161 arrays and over one array of 1e4, and ``functional.adam`` on
the 161 arrays with and without checks.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import inspect
import os
import time
import types

import numpy as np


class _FakeMemory:
    """What a Numba device array needs of its memory: an address, and views of it."""

    def __init__(self, addr: int) -> None:
        self.device_ctypes_pointer = ctypes.c_void_p(addr)
        self._addr = addr

    def view(self, start: int, stop: int | None = None) -> _FakeMemory:
        return _FakeMemory(self._addr + start)


def _stub_the_driver():
    """Numba device arrays on fake memory; every call that would reach the CUDA driver
    stubbed. Returns ``fake(shape, dtype)``."""
    import numba.cuda.dispatcher as dispatcher
    from numba import cuda
    from numba.cuda.cudadrv import devices
    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    from fastopt.batchnorm import cuda_kernels
    from fastopt.drivers import cuda as driver

    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
    devices._runtime.ensure_context = contextlib.nullcontext
    next_addr = [1 << 24]

    def fake(shape, dtype=np.float64, **_):
        dt = np.dtype(dtype)
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        strides = tuple(int(s) for s in np.empty(shape, dt).strides)
        addr = next_addr[0]
        next_addr[0] += (int(np.prod(shape)) * dt.itemsize + 4095) // 4096 * 4096 + 4096
        return DeviceNDArray(shape, strides, dt, gpu_data=_FakeMemory(addr))

    def no_launch(*args, **kwargs):
        return lambda *a: None

    cuda.device_array = fake
    cuda.to_device = lambda a, **kw: fake(a.shape, a.dtype)
    DeviceNDArray.copy_to_device = lambda self, a, stream=0: None
    driver.launcher = cuda_kernels.launcher = no_launch
    driver.fill = lambda a, value, stream=None: None
    driver.current_stream = lambda kind: 0
    driver.max_blocks = lambda: 264
    driver.step_kernel = driver.table_step_kernel = lambda rule: None
    cuda_kernels.kernels = lambda: dict.fromkeys(
        ("moments", "forward_channels", "backward_channels", "normalize", "dx"))
    return fake


def cases(fake) -> dict:
    import fastopt
    from fastopt import batchnorm
    from fastopt import functional as F
    from fastopt.bench.workloads import resnet50_shapes

    n, c = 256, 1024
    x, y, dy, dx = (fake((n, c), np.float32) for _ in range(4))
    g, b, rm, rv, dg, db = (fake(c, np.float32) for _ in range(6))
    # A statistics buffer where this fastopt takes one (so older commits run too).
    keep = ({"stats_out": fake((3, c))}
            if "stats_out" in inspect.signature(batchnorm.forward).parameters else {})

    def bn_train():
        _, cache = batchnorm.forward(x, g, b, running_mean=rm, running_var=rv, out=y, **keep)
        batchnorm.backward(dy, cache, out=(dx, dg, db))

    def bn_infer():
        batchnorm.forward(x, g, b, training=False, running_mean=rm, running_var=rv, out=y)

    shapes = [s for _, s in resnet50_shapes()]
    params, grads, ms, vs = ([fake(s, np.float32) for s in shapes] for _ in range(4))
    opt_list = fastopt.Adam(params)
    p1, g1 = fake(10_000, np.float32), fake(10_000, np.float32)
    opt_one = fastopt.Adam(p1)
    return {
        "batchnorm train (256, 1024)": bn_train,
        "batchnorm inference (256, 1024)": bn_infer,
        "Adam step, ResNet-50 list of 161": lambda: opt_list.step(grads),
        "Adam step, one array of 1e4": lambda: opt_one.step(g1),
        "functional.adam, 161 arrays": lambda: F.adam(params, grads, ms, vs, 1),
        "functional.adam, 161 arrays, check=False":
            lambda: F.adam(params, grads, ms, vs, 1, check=False),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", metavar="CASE", help="cProfile one case (a name's prefix)")
    args = ap.parse_args()
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        ap.error("run without NUMBA_ENABLE_CUDASIM: this measures numba-cuda's real Python")
    fns = cases(_stub_the_driver())
    print("host Python per call, us (fake device memory; no launches, no allocations)")
    for name, fn in fns.items():
        for _ in range(5):
            fn()
        times = []
        for _ in range(15):
            t0 = time.perf_counter()
            for _ in range(20):
                fn()
            times.append((time.perf_counter() - t0) / 20)
        print(f"  {name:<42}{1e6 * float(np.median(times)):>9.1f}")
    if args.profile:
        import cProfile
        import pstats

        fn = next(f for k, f in fns.items() if k.startswith(args.profile))
        with cProfile.Profile() as prof:
            for _ in range(200):
                fn()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

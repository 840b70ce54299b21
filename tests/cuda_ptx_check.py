"""Compile every CUDA kernel of fastopt to PTX for sm_90, without a GPU.

Run by ``test_cuda_ptx.py`` in a subprocess (the CUDA simulator must be off). The
simulator runs kernels as Python; this compiles them for real (Numba-CUDA typing, lowering
and NVVM), which catches what the simulator cannot: untyped code, float64 promotion in a
float32 kernel. Prints one JSON object: kernel name -> facts about its PTX.
"""

import json
import re
import sys
import types

import numba.cuda.dispatcher as dispatcher
import numpy as np
from numba import cuda, typeof

# Typing a call to a device function asks the current GPU for its compute capability;
# there is no GPU here, so answer for the H100 (sm_90) we compile for.
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))

from fastopt.batchnorm import cuda_kernels  # noqa: E402
from fastopt.drivers import cuda as driver  # noqa: E402
from fastopt.rules.registry import registry  # noqa: E402


def _registered() -> dict:
    """Every element function of the registry (each variant once): its state arrays and its
    constants for one step at the default hyperparameters."""
    out = {}
    for rule in registry().values():
        for options in rule.variants:
            hp = {**rule.defaults, **options, **{s.name: s.initial for s in rule.group_state}}
            element = rule.element_for(hp)
            consts = rule.constants(1, 0.1, hp)
            out[element.__name__] = (element, len(rule.state_of(hp)),
                                     consts + ((1.0,) if rule.direction else ()), rule.spec)
    return out


#: element name -> (element, state arrays, constants for one step, whether a spec rule:
#: the multi-array table kernel, whose element code is the step kernel's, is compiled for
#: those, which cover every state count)
RULES = _registered()
#: The trust-ratio rules' first passes: direction name -> (direction, state arrays, constants)
TRUST = {rule.direction.__name__: (rule.direction, len(rule.state),
                                   rule.constants(1, 0.1, {**rule.defaults}))
         for rule in registry().values() if rule.direction is not None}


def facts(ptx: str) -> dict:
    body = "\n".join(line for line in ptx.splitlines() if not line.lstrip().startswith("//"))
    return {
        # float64 arithmetic (conversions of the per-call scalars, once, are not counted)
        "f64_ops": len(re.findall(r"^\s*(?:add|sub|mul|fma|div|sqrt|rcp|neg|abs|min|max)"
                                  r"[\w.]*\.f64\b", body, re.MULTILINE)),
        "calls": len(re.findall(r"\bcall(\.uni)?\b", body)),
        # 16-byte accesses: four float32 or two float64 elements per instruction
        "vector_loads": len(re.findall(r"\bld\.global\.(?:v4\.f32|v2\.f64)\b", body)),
        "vector_stores": len(re.findall(r"\bst\.global\.(?:v4\.f32|v2\.f64)\b", body)),
        "bytes": len(ptx),
    }


def signature(args) -> tuple:
    return tuple(typeof(a) for a in args)


def compile_one(name, fn, args, out):
    ptx, _ = cuda.compile_ptx(fn, signature(args), cc=(9, 0))
    out[name] = facts(ptx)


def _none_probe(a, b):
    if b is None:
        a[0] = 1.0


def u64_params(ptx: str) -> int:
    return len(re.findall(r"\.param \.u64 ", ptx))


def packing_check() -> dict:
    """drivers.cuda_launch.pack against numba-cuda's own packing (``_Kernel._prepare_args``
    with fastopt's None extension) for the kinds of arguments fastopt's kernels take, on
    device arrays made without a GPU: {case: [same parameters, packed at all]}."""
    import ctypes

    from numba.cuda.cudadrv.devicearray import DeviceNDArray
    from numba.cuda.dispatcher import _Kernel

    from fastopt.drivers import cuda_launch

    def fake(shape, dtype, addr, strides=None):
        dt = np.dtype(dtype)
        strides = strides or tuple(int(s) for s in np.empty(shape, dt).strides)
        memory = types.SimpleNamespace(device_ctypes_pointer=ctypes.c_void_p(addr))
        return DeviceNDArray(shape, strides, dt, gpu_data=memory)

    class Numba:  # the parts of a compiled kernel that _prepare_args uses
        extensions = [driver._NullForNone()]
        _prepare_args = _Kernel._prepare_args

    a, b = fake((10,), np.float32, 1 << 20), fake((3, 5), np.float64, 1 << 21)
    cases = {
        "step": (a, a, (a, a), (0.5, 1.25, -3.0), None, None, 0.1, None, None),
        "step_all": (a, a, (a,), (0.5,), 2.0, fake((1,), np.float32, 64), 0.1, 0.9,
                     (0.1, 0, 7, 2**32 - 1, 5)),
        "table": (b, 3, (5, 6), a, (0.5,), None, None, None, None, None),
        "batchnorm": (b, None, b, 5, 7, True, False, 1e-5),
        "non_contiguous": (fake((3, 5), np.float32, 4096, (40, 8)),),
        "numpy_scalar": (a, np.float32(1.0)),
    }
    report = {}
    for name, args in cases.items():
        packed: list = []
        key = cuda_launch.pack(args, packed)
        reference: list = []
        for v in args:
            Numba()._prepare_args(typeof(v), v, 0, [], reference)
        same = cuda_launch.canonical(reference) == cuda_launch.canonical(packed)
        report[name] = [same, key is not None]
    return report


def fast_launch_check() -> list:
    """The paths drivers.cuda_launch.FastLaunch takes over a scripted sequence of launches,
    with numba-cuda's launch, the check and cuda.core's launch replaced by recorders and
    the current CUDA context set by the script: [(launch, path), ...]."""
    import ctypes

    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    from fastopt.drivers import cuda_launch

    memory = types.SimpleNamespace(device_ctypes_pointer=ctypes.c_void_p(4096))
    a = DeviceNDArray((10,), (4,), np.dtype(np.float32), gpu_data=memory)
    path: list = []
    state = {"context": 7, "check": "kernel"}

    class Configured:  # the parts of numba-cuda's launch configuration FastLaunch reads
        griddim, blockdim, sharedmem, stream = (1, 1, 1), (256, 1, 1), 0, "stream"

        def __call__(self, *args):
            path.append("numba")

    cuda_launch.current_context = lambda: state["context"]
    cuda_launch.checked_kernel = lambda disp, args, packed: (
        path.append("check") or (state["check"] and (state["context"], state["check"])))
    cuda_launch.core_launch = lambda stream, config, kernel, *params: path.append(
        ("direct", kernel, len(params)))
    launch = cuda_launch.FastLaunch(Configured(), "dispatcher")
    script = [
        ("first", (a, 1.0, None)), ("again", (a, 2.0, None)),
        ("new key", (a, 1.0, a)), ("new key again", (a, 3.0, a)),
        ("unpackable", (a, np.float32(1.0))),
        ("other device", (a, 1.0, None)), ("other device again", (a, 1.0, None)),
        ("no context", (a, 1.0, None)),
    ]
    out = []
    for name, args in script:
        state["context"] = {"other device": 9, "other device again": 9,
                            "no context": 0}.get(name, 7)
        path.clear()
        launch(*args)
        out.append([name, [p if isinstance(p, str) else list(p) for p in path]])
    state["check"] = None  # a failed check: numba-cuda's path for that key, every time
    state["context"] = 11
    for name in ("failed check", "failed check again"):
        path.clear()
        launch(a, 1.0, None)
        out.append([name, list(path)])
    cuda_launch.ENABLED, enabled = False, cuda_launch.ENABLED  # FASTOPT_CUDA_LAUNCH=numba
    state["check"], state["context"] = "kernel", 7
    off = cuda_launch.FastLaunch(Configured(), "dispatcher")
    for name in ("switched off", "switched off again"):
        path.clear()
        off(a, 1.0, None)
        out.append([name, list(path)])
    cuda_launch.ENABLED = enabled
    return out


def grad_address_check() -> dict:
    """drivers.cuda.grad_address on Numba device arrays made without a GPU: the address of
    a gradient laid out as its parameter, check_grad's message for any other."""
    import ctypes

    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    def fake(shape, dtype, addr, strides=None):
        dt = np.dtype(dtype)
        strides = strides or tuple(int(s) for s in np.empty(shape, dt).strides)
        memory = types.SimpleNamespace(device_ctypes_pointer=ctypes.c_void_p(addr))
        return DeviceNDArray(shape, strides, dt, gpu_data=memory)

    p = fake((6, 3, 7), np.float32, 1 << 20)
    report = {"good": driver.grad_address(fake((6, 3, 7), np.float32, 1 << 22), p, "g")}
    for name, bad in {
        "shape": fake((6, 3, 8), np.float32, 64),
        "dtype": fake((6, 3, 7), np.float64, 64),
        "strides": fake((6, 3, 7), np.float32, 64, (4, 24, 72)),
    }.items():
        try:
            driver.grad_address(bad, p, "grads[3]")
            report[name] = "accepted"
        except (TypeError, ValueError) as exc:
            report[name] = str(exc)
    return report


def flat_view_check() -> dict:
    """drivers.cuda.flat_view on device arrays made without a GPU: the same 1-D view while
    the array lives, its entry gone when the array goes."""
    import ctypes
    import gc

    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    memory = types.SimpleNamespace(device_ctypes_pointer=ctypes.c_void_p(4096))
    a = DeviceNDArray((6, 5), (20, 4), np.dtype(np.float32), gpu_data=memory)
    first = driver.flat_view(a)
    report = {"shape": list(first.shape), "same": driver.flat_view(a) is first,
              "address": driver.address(first), "kept": id(a) in driver._flat_views}
    key = id(a)
    del a, first
    gc.collect()
    report["released"] = key not in driver._flat_views
    return report


def span_check() -> dict:
    """drivers.cuda.span and drivers.is_device_array on device arrays made without a GPU:
    the span read from the array's pointer is the one its __cuda_array_interface__ gives,
    and the array is a device array (a NumPy array is not)."""
    import ctypes

    from numba.cuda.cudadrv.devicearray import DeviceNDArray

    from fastopt.drivers import is_device_array

    memory = types.SimpleNamespace(device_ctypes_pointer=ctypes.c_void_p(8192))
    report = {}
    for shape, strides, dtype in (((6, 5), (40, 8), np.float64), ((7,), (4,), np.float32)):
        a = DeviceNDArray(shape, strides, np.dtype(dtype), gpu_data=memory)
        cai = a.__cuda_array_interface__
        report[str(shape)] = [list(driver.span(a)),
                              [cai["data"][0], a.size * np.dtype(dtype).itemsize],
                              is_device_array(a), is_device_array(a)]
    report["numpy"] = is_device_array(np.zeros(3))
    return report


def precision_cases(out: dict) -> None:
    """Adam's precision kernels (drivers.cuda_precision): 16-bit parameters and gradients
    (rounded to nearest, stochastically, from a master copy), bfloat16 state, and both
    8-bit code books; the 32-bit LLVM IR of the formats (bit casts, half conversions)
    must compile for the GPU too."""
    from fastopt.drivers import cuda_precision
    from fastopt.precision import quantized
    from fastopt.rules.adam import adam, adam_constants

    h = tuple(float(c) for c in adam_constants(1, 1e-3, (0.9, 0.999), 1e-8))
    f32, u16, u8 = np.zeros(8, np.float32), np.zeros(8, np.uint16), np.zeros(8, np.uint8)
    ct = np.zeros(1, np.float32)
    rnd = (1, 2, 3, 4)
    tail = (h, 1.0, None, None, None, None, rnd, ct)
    for name, (pfmt, gfmt, sfmt, master, sr, p, g, st, m) in {
        "bf16all_sr": ("bfloat16", "bfloat16", "bfloat16", False, True, u16, u16, u16, None),
        "f16_master": ("float16", "plain", "plain", True, False, u16, f32, f32, f32),
    }.items():
        kern = cuda_precision.precision_kernel(adam, pfmt, gfmt, sfmt, 2, master, sr)
        compile_one(f"precision_{name}", kern.py_func, (p, g, (st, st), m, *tail), out)
    am = (np.zeros(1, np.float32), np.zeros(1, np.float32))
    for book in ("fp8", "dynamic"):
        kern = cuda_precision.precision_kernel(adam, "plain", "plain", "plain", 2, False, False,
                                               quantized.BOOKS[book])
        compile_one(f"precision_q8_{book}", kern.py_func,
                    (f32, f32, (u8, u8), am, quantized.codec_tables(), None, *tail), out)
    # a trust-ratio rule's first pass over 8-bit and bfloat16 state (LAMB's direction)
    lamb = next(r for r in registry().values() if r.name == "LAMB")
    lamb_tail = (tuple(float(c) for c in lamb.constants(1, 1e-3, lamb.defaults)), *tail[1:])
    for sfmt, books, st in (("plain", quantized.BOOKS["fp8"], (u8, u8)),
                            ("bfloat16", None, (u16, u16))):
        kern = cuda_precision.trust_pass_kernel(lamb.direction, "plain", "plain", sfmt, 2,
                                                False, books)
        compile_one(f"precision_trust_{books[0] if books else sfmt}", kern.py_func,
                    (f32, f32, st, am if books else (), quantized.codec_tables(), None,
                     *lamb_tail, np.zeros(4, np.float64)), out)


def main() -> None:
    out: dict = {}
    for dtype in (np.float32, np.float64):
        dt = np.dtype(dtype).type
        a = np.zeros(8, dtype)
        for rname, (rule, nstate, consts, spec) in RULES.items():
            fn = driver.step_kernel(rule).py_func
            st = tuple(np.zeros(8, dtype) for _ in range(nstate))
            h = tuple(float(c) for c in consts)  # as the functional layer passes them
            noise = (0.1, 0, 0, 1, 2)
            table_fn = driver.table_step_kernel(rule).py_func
            table = np.zeros((3, driver.STATE_ADDR + nstate), np.int64)
            cols = tuple(range(driver.STATE_ADDR, driver.STATE_ADDR + nstate))
            for opts, (dscale, wd, nz) in {
                "plain": (None, None, None),
                "all": (np.ones(1, dtype), 0.1, noise),
            }.items():
                if opts == "all" and dtype is np.float64:
                    continue  # the options' code is the float32 kernels' (time: CI's)
                compile_one(f"step_{rname}_{opts}_{dt.__name__}", fn,
                            (a, a, st, h, 1.0, dscale, wd, 1.0, nz), out)
                out[f"step_{rname}_{opts}_{dt.__name__}"]["state_arrays"] = nstate
                if spec:
                    compile_one(f"tablestep_{rname}_{opts}_{dt.__name__}", table_fn,
                                (table, 5, cols, a, h, 1.0, dscale, wd, 1.0, nz), out)
                    out[f"tablestep_{rname}_{opts}_{dt.__name__}"]["state_arrays"] = nstate
        for dname, (direction, nstate, consts) in TRUST.items():
            st = tuple(np.zeros(8, dtype) for _ in range(nstate))
            h = tuple(float(c) for c in consts)
            compile_one(f"trust_{dname}_plain_{dt.__name__}",
                        driver.trust_kernel(direction).py_func,
                        (a, a, st, h, 1.0, None, None, 1.0, None, np.zeros(4, np.float64)), out)
        compile_one(f"fill_{dt.__name__}", driver._fill_kernel, (a, dt(0)), out)
        sumsq, table_sumsq, finalize = driver._reduction_kernels()
        parts = np.zeros(4, np.float64)
        compile_one(f"sumsq_{dt.__name__}", sumsq.py_func, (a, parts, 0), out)
        compile_one(f"tablesumsq_{dt.__name__}", table_sumsq.py_func,
                    (np.zeros((3, driver.STATE_ADDR), np.int64), 5, a, parts, 0), out)
        compile_one(f"finalize_{dt.__name__}", finalize.py_func,
                    (parts, 4, parts, 1.0, np.ones(1, dtype)), out)
        for kname, fn, args in cuda_kernels.ptx_cases(dtype):
            compile_one(f"{kname}_{dt.__name__}", fn, args, out)
    precision_cases(out)
    # fastopt.drivers.cuda.kernel launches a None argument as one null 64-bit parameter:
    # a none argument must compile to exactly what an int64 one does.
    a32 = np.zeros(8, np.float32)
    none_ptx, _ = cuda.compile_ptx(_none_probe, signature((a32, None)), cc=(9, 0))
    int_ptx, _ = cuda.compile_ptx(_none_probe, signature((a32, 0)), cc=(9, 0))
    params = {"none": u64_params(none_ptx), "int64": u64_params(int_ptx)}
    json.dump({"kernels": out, "params": params, "packing": packing_check(),
               "fast_launch": fast_launch_check(), "grad_address": grad_address_check(),
               "flat_view": flat_view_check(), "span": span_check()},
              sys.stdout)


if __name__ == "__main__":
    main()

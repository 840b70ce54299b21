"""Every CUDA kernel compiles for a real GPU (sm_90 PTX), with no float64 arithmetic in
the float32 steps. Needs numba-cuda and the CUDA compiler libraries (NVVM, NVRTC: the
``numba-cuda[cu12]``/``[cu13]`` extras), not a GPU; skipped where they are missing."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cuda_support import needs_numba_cuda

from fastopt.rules.registry import registry

pytestmark = needs_numba_cuda

MISSING_TOOLKIT = ("libnvvm", "NVVM", "nvrtc", "DynamicLibNotFound", "CUDA_HOME")


@pytest.fixture(scope="module")
def ptx_report():
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}
    script = Path(__file__).with_name("cuda_ptx_check.py")
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=600)
    if run.returncode != 0:
        if any(word in run.stderr for word in MISSING_TOOLKIT):
            pytest.skip("the CUDA compiler libraries (NVVM/NVRTC) are not installed: "
                        "pip install 'numba-cuda[cu13]'")
        pytest.fail(f"compiling the CUDA kernels failed:\n{run.stderr[-4000:]}")
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def ptx_facts(ptx_report):
    return ptx_report["kernels"]


def test_a_none_argument_is_one_64_bit_parameter(ptx_report):
    # drivers.cuda.kernel launches None as a null pointer, which is right only while
    # numba-cuda compiles a none argument to one 64-bit kernel parameter, as an int64.
    assert ptx_report["params"]["none"] == ptx_report["params"]["int64"]


def test_direct_launches_pack_what_numba_cuda_packs(ptx_report):
    # drivers.cuda_launch launches with its own parameter list after checking it once per
    # argument key against numba-cuda's; here that packing is compared without a GPU for
    # every kind of argument fastopt's kernels take, and what it must not pack is refused.
    packing = ptx_report["packing"]
    for case in ("step", "step_all", "table", "batchnorm"):
        assert packing[case] == [True, True], case
    assert packing["non_contiguous"][1] is False  # left to numba-cuda
    assert packing["numpy_scalar"][1] is False


def test_direct_launches_go_through_numba_cuda_until_checked(ptx_report):
    # Per (CUDA context, argument key): numba-cuda launches first and the packing is
    # checked; then launches are direct, with that context's kernel. Unpackable
    # arguments, no current context or a failed check: numba-cuda's path every time.
    direct = lambda ctx, n: [["direct", [ctx, "kernel"], n]]  # noqa: E731
    assert ptx_report["fast_launch"] == [
        ["first", ["numba", "check"]], ["again", direct(7, 9)],
        ["new key", ["numba", "check"]], ["new key again", direct(7, 15)],
        ["unpackable", ["numba"]],
        ["other device", ["numba", "check"]], ["other device again", direct(9, 9)],
        ["no context", ["numba"]],
        ["failed check", ["numba", "check"]], ["failed check again", ["numba"]],
        ["switched off", ["numba"]], ["switched off again", ["numba"]],
    ]


def test_fastopt_cuda_launch_numba_switches_direct_launches_off():
    code = "from fastopt.drivers import cuda_launch; print(cuda_launch.ENABLED)"
    for value, expected in (("numba", "False"), ("fast", "True")):
        env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0", "FASTOPT_CUDA_LAUNCH": value}
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=env, timeout=120)
        assert run.stdout.strip() == expected, run.stderr[-2000:]


def test_gradient_addresses_are_checked_as_check_grad_checks(ptx_report):
    report = ptx_report["grad_address"]
    assert report["good"] == 1 << 22
    assert "has shape (6, 3, 8)" in report["shape"]
    assert "has dtype float64" in report["dtype"]
    assert "not C-contiguous" in report["strides"]


def test_flat_views_are_kept_while_their_array_lives(ptx_report):
    assert ptx_report["flat_view"] == {"shape": [30], "same": True, "address": 4096,
                                       "kept": True, "released": True}


def test_span_and_device_test_read_the_pointer_as_the_interface_gives_it(ptx_report):
    report = ptx_report["span"]
    assert report.pop("numpy") is False
    for shape, (span, from_interface, first, again) in report.items():
        assert span == from_interface, shape
        assert first is True and again is True  # again: known by its type


def test_every_kernel_compiles(ptx_facts):
    names = set(ptx_facts)
    elements = {rule.element_for({**rule.defaults, **options}).__name__: rule.spec
                for rule in registry().values() for options in rule.variants}
    assert {"sgd", "rmsprop_centered_momentum", "adam", "lion", "lamb"} <= set(elements)
    for rule, spec in elements.items():
        # every option (clip factor on the device, decay, noise) in float32; float64 plain
        for opts, dt in (("plain", "float32"), ("all", "float32"), ("plain", "float64")):
            assert f"step_{rule}_{opts}_{dt}" in names
            if spec:  # the multi-array step (its element code is the step's)
                assert f"tablestep_{rule}_{opts}_{dt}" in names
    for rule in registry().values():
        if rule.direction is not None:  # a trust-ratio rule's first pass
            for dt in ("float32", "float64"):
                assert f"trust_{rule.direction.__name__}_plain_{dt}" in names
    for kernel in ("sumsq", "tablesumsq", "finalize", "fill", "bn_moments_stats",
                   "bn_moments_grads", "bn_forward_channels", "bn_backward_channels",
                   "bn_normalize", "bn_dx"):
        assert f"{kernel}_float32" in names and f"{kernel}_float64" in names
    assert all(f["calls"] == 0 for f in ptx_facts.values()), "a device function not inlined"


def test_precision_kernels_compile_without_float64_or_calls(ptx_facts):
    # 16-bit parameters and gradients, master copy, stochastic rounding, bfloat16 state and
    # both 8-bit code books, LAMB's first pass over stored state: the formats' LLVM IR (bit
    # casts, half conversions) and their inlined helpers (registered with numba-cuda too)
    # compile for the GPU.
    names = {"precision_bf16all_sr", "precision_f16_master",
             "precision_q8_fp8", "precision_q8_dynamic", "precision_trust_e4m3",
             "precision_trust_bfloat16"}
    assert names <= set(ptx_facts)
    for name in names:
        # a trust-ratio rule's first pass sums w² and u² in float64, as the float32 path's
        if "trust" not in name:
            assert ptx_facts[name]["f64_ops"] == 0, name
        assert ptx_facts[name]["calls"] == 0, name


def test_float32_steps_do_no_float64_arithmetic(ptx_facts):
    # numba promotes float32 with a Python float literal to float64 (docs/numba.md); the
    # rules are written to avoid it. The noisy variants keep libdevice's cosf argument
    # reduction, which uses a float64 multiply on its slow path.
    for name, facts in ptx_facts.items():
        if name.startswith(("step_", "tablestep_")) and name.endswith("_plain_float32"):
            assert facts["f64_ops"] == 0, name
        if name.startswith(("step_", "tablestep_")) and name.endswith("_all_float32"):
            # five copies of the element: four lanes of 16-byte accesses and the n % 4 tail
            assert facts["f64_ops"] <= 2 * 5, name
    assert ptx_facts["bn_normalize_float32"]["f64_ops"] == 0
    assert ptx_facts["bn_dx_float32"]["f64_ops"] == 0


def test_step_kernels_read_and_write_16_bytes_at_a_time(ptx_facts):
    # drivers/cuda_vectors.py: four float32 (two float64) elements per load and store of
    # p, g and each state array, as torch's fused optimizers move them (a quarter of the
    # memory instructions of one element per access), in the one-array step and in the
    # one-launch step over many arrays
    steps = [name for name in ptx_facts if name.startswith(("step_", "tablestep_"))]
    assert len(steps) >= 3 * 16 + 3 * 8
    trust = {f"step_{rule.element.__name__}_" for rule in registry().values()
             if rule.direction is not None}
    for name in steps:
        facts = ptx_facts[name]
        # a trust-ratio rule's step reads no gradient: its first pass left the update
        # in its state
        reads_g = not name.startswith(tuple(trust))
        assert facts["vector_loads"] >= reads_g + 1 + facts["state_arrays"], (name, facts)
        assert facts["vector_stores"] >= 1 + facts["state_arrays"], (name, facts)


def test_every_kernel_is_made_by_drivers_cuda_kernel():
    # A kernel made with a bare cuda.jit fails its first launch that passes None on a GPU
    # (numba-cuda's launcher has no rule for it), and the simulator, where CI runs the
    # kernels, accepts it: only drivers.cuda.kernel (and _device, for device functions)
    # may call cuda.jit.
    import ast

    import fastopt

    class Sites(ast.NodeVisitor):
        def __init__(self, path):
            self.path, self.stack, self.found = path, ["<module>"], set()

        def visit_FunctionDef(self, node):  # noqa: N802 - ast.NodeVisitor's naming
            self.stack.append(node.name)
            self.generic_visit(node)
            self.stack.pop()

        def visit_Attribute(self, node):  # noqa: N802
            if node.attr == "jit" and isinstance(node.value, ast.Name) and node.value.id == "cuda":
                self.found.add((self.path, self.stack[-1]))
            self.generic_visit(node)

    root = Path(fastopt.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        sites = Sites(path.relative_to(root).as_posix())
        sites.visit(ast.parse(path.read_text()))
        found |= sites.found
    assert found == {("drivers/cuda.py", "kernel"), ("drivers/cuda.py", "_device")}

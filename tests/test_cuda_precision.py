"""The precision options on the GPU path (drivers/cuda_precision.py) against the CPU's:
bfloat16 and 8-bit state over float32 device arrays, with clipping, noise, weight decay
and groups; checkpoints moving between the two; what the GPU path refuses.

Runs in Numba's CUDA simulator (tests/conftest.py); there, without noise and clipping, the
GPU kernels give the CPU's bits. With noise (the simulator's libm) and on a GPU (FMA
contraction) results agree within a few ulp, and an 8-bit code next to a midpoint may
round the other way, hence the tolerances."""

import numpy as np
import pytest
from cuda_support import SIMULATED, host, needs_numba_cuda, to_device

import fastopt

pytestmark = needs_numba_cuda

SHAPES = [(300,), (5, 7)]  # a quantized array (min_8bit_size=256 below) and a small one


def _problem(seed, steps=3):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(np.float32) for s in SHAPES]
    grads = [[(rng.standard_normal(s) * 0.1).astype(np.float32) for s in SHAPES]
             for _ in range(steps)]
    return params, grads


def _both(name, kwargs, seed=0, steps=3):
    params, grads = _problem(seed, steps)
    cls = getattr(fastopt, name)
    cpu_params = [p.copy() for p in params]
    dev_params = [to_device(p) for p in params]
    cpu, dev = cls(cpu_params, **kwargs), cls(dev_params, **kwargs)
    for gs in grads:
        cpu.step(gs)
        dev.step([to_device(g) for g in gs])
    return cpu, dev, cpu_params, dev_params


@pytest.mark.skipif(not SIMULATED, reason="bit equality holds in the simulator only")
@pytest.mark.parametrize("name, state_dtype", [("Adam", "8bit"), ("AdaGrad", "int8")])
# both code books of each 8-bit format (AdaGrad's sum is non-negative); bfloat16 state:
# test_checkpoints_move_between_cpu_and_gpu
def test_same_bits_as_the_cpu(name, state_dtype):
    cpu, dev, cp, dp = _both(name, {"lr": 0.01, "state_dtype": state_dtype,
                                    "min_8bit_size": 256, "weight_decay": 0.01})
    for c, d in zip(cp, dp, strict=True):
        np.testing.assert_array_equal(host(d), c)
    want, got = cpu.state_dict(), dev.state_dict()
    assert set(want) == set(got)
    for key, value in want.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    assert dev.state_bytes() == cpu.state_bytes()


@pytest.mark.parametrize("state_dtype", ["int8"])
def test_with_clipping_noise_and_groups(state_dtype):
    params, grads = _problem(1)
    options = {"lr": 0.01, "state_dtype": state_dtype, "min_8bit_size": 256,
               "clip_norm": 0.5, "grad_noise": fastopt.GradientNoise(0.01, seed=4)}
    cpu_params = [p.copy() for p in params]
    dev_params = [to_device(p) for p in params]
    cpu = fastopt.Adam([{"params": cpu_params[:1]},
                        {"params": cpu_params[1:], "lr": 0.05, "weight_decay": 0.1}], **options)
    dev = fastopt.Adam([{"params": dev_params[:1]},
                        {"params": dev_params[1:], "lr": 0.05, "weight_decay": 0.1}], **options)
    for gs in grads:
        cpu.step(gs)
        dev.step([to_device(g) for g in gs])
    for c, d in zip(cpu_params, dev_params, strict=True):
        np.testing.assert_allclose(host(d), c, rtol=2e-5, atol=2e-6)
    for i in range(2):  # decoded state: a code may sit on the other side of a midpoint
        for key in ("m", "v"):
            np.testing.assert_allclose(dev.state[i][key], cpu.state[i][key], rtol=0.02,
                                       atol=1e-3 * np.abs(cpu.state[i][key]).max())


@pytest.mark.parametrize("state_dtype", ["bfloat16", "8bit"])
def test_checkpoints_move_between_cpu_and_gpu(state_dtype):
    params, grads = _problem(2, steps=4)
    kwargs = {"lr": 0.01, "state_dtype": state_dtype, "min_8bit_size": 256}
    ref = [p.copy() for p in params]
    whole = fastopt.Adam(ref, **kwargs)
    for gs in grads:
        whole.step(gs)
    # two steps on the GPU, two on the CPU from its checkpoint
    dev_params = [to_device(p) for p in params]
    dev = fastopt.Adam(dev_params, **kwargs)
    for gs in grads[:2]:
        dev.step([to_device(g) for g in gs])
    cpu_params = [host(d) for d in dev_params]
    cpu = fastopt.Adam(cpu_params, **kwargs)
    cpu.load_state_dict(dev.state_dict())
    for gs in grads[2:]:
        cpu.step(gs)
    # and back: the CPU's checkpoint onto the GPU
    back_params = [to_device(p) for p in cpu_params]
    back = fastopt.Adam(back_params, **kwargs)
    back.load_state_dict(cpu.state_dict())
    for key, value in cpu.state_dict().items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(back.state_dict()[key], value, err_msg=key)
    for r, c in zip(ref, cpu_params, strict=True):
        np.testing.assert_allclose(c, r, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name, state_dtype", [("LAMB", "8bit"), ("LARS", "bfloat16")])
def test_trust_ratio_rules_take_low_precision_state_on_the_gpu(name, state_dtype):
    """A trust-ratio rule's two passes on the GPU: the first sums ‖w‖² and ‖u‖² over the
    decoded state in float64 block partials and writes nothing, the second is the whole
    step from the state before it. The CPU's results: its norms add the same float64
    values in another order (a tree per block on the GPU), so the ratio may differ in
    its last bits, hence a tolerance; the 8-bit codes agree but for values at a midpoint."""
    kwargs = {"lr": 0.01, "state_dtype": state_dtype, "min_8bit_size": 256,
              "weight_decay": 0.01}
    cpu, dev, cp, dp = _both(name, kwargs)
    for c, d, p0 in zip(cp, dp, _problem(0)[0], strict=True):
        assert not np.array_equal(c, p0)
        np.testing.assert_allclose(host(d), c, rtol=1e-6, atol=1e-7)
    want, got = cpu.state_dict(), dev.state_dict()
    for key, value in want.items():
        if not isinstance(value, np.ndarray) or value.dtype == object:
            continue
        if key.endswith(".codes"):
            diff = np.abs(got[key].astype(int) - value.astype(int))
            assert diff.max() <= 1 and (diff == 0).mean() > 0.99, key
        elif value.dtype.kind == "f":
            np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-7, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], value, err_msg=key)


@pytest.mark.skipif(not SIMULATED, reason="bit equality holds in the simulator only")
@pytest.mark.parametrize("kwargs", [
    {"master_weights": True},
    {"stochastic_rounding": True},
    {"master_weights": True, "grad_dtype": "float32", "state_dtype": "8bit"},
    {"master_weights": True, "clip_norm": 0.5, "state_dtype": "bfloat16"},
])
def test_float16_parameters_on_the_gpu_give_the_cpus_bits(kwargs):
    """float16 device arrays (CUDA's 16-bit float) as parameters: a float32 master copy or
    stochastic rounding, float32 or float16 gradients, low-precision state, clipping over
    the 16-bit gradients on the device; the parameters, the master copy and the state
    are the CPU's to the bit."""
    rng = np.random.default_rng(6)
    p0 = [rng.standard_normal(s).astype(np.float16) for s in SHAPES]
    gdt = np.float32 if kwargs.get("grad_dtype") else np.float16
    grads = [[(rng.standard_normal(s) * 0.3).astype(gdt) for s in SHAPES] for _ in range(3)]
    cp, dp = [p.copy() for p in p0], [to_device(p) for p in p0]
    kwargs = {"lr": 0.01, "min_8bit_size": 256, **kwargs}
    cpu, dev = fastopt.Adam(cp, **kwargs), fastopt.Adam(dp, **kwargs)
    for gs in grads:
        cpu.step(gs)
        dev.step([to_device(g) for g in gs])
    for c, d, p in zip(cp, dp, p0, strict=True):
        assert (c != p).mean() > 0.9  # it moved
        np.testing.assert_array_equal(host(d).view(np.uint16), c.view(np.uint16))
    want, got = cpu.state_dict(), dev.state_dict()
    for key, value in want.items():
        if isinstance(value, np.ndarray) and value.dtype != object:
            np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_16bit_options_the_gpu_cannot_take_are_refused_before_anything_is_written():
    q = to_device(np.ones(10, np.float32))
    with pytest.raises(ValueError, match="no bfloat16 type"):
        fastopt.Adam([q], grad_dtype="bfloat16")
    h = to_device(np.ones(10, np.float16))
    opt = fastopt.Adam([h], master_weights=True)
    with pytest.raises(ValueError, match="float16 gradients.*float32|grad_dtype|dtype"):
        opt.step([to_device(np.ones(10, np.float32))])  # float32 gradients, not asked for
    np.testing.assert_array_equal(host(q), np.ones(10, np.float32))
    np.testing.assert_array_equal(host(h), np.ones(10, np.float16))
    assert opt.step_count == 0
    opt.step([to_device(np.full(10, 0.5, np.float16))])  # and it works on
    assert (host(h) < 1).all()


@pytest.mark.skipif(not SIMULATED, reason="bit equality holds in the simulator only")
@pytest.mark.parametrize("case", ["adam_8bit", "lamb_8bit", "f16_master_8bit",
                                  "f16_stochastic"])  # the dynamic map: the class tests
def test_functional_precision_calls_on_the_gpu_give_the_cpus_bits(case):
    """The functional layer's precision path on device arrays: QuantizedState with device
    codes and maxima (QuantizedState.to_device), float16 parameters with a device master
    copy or stochastic rounding, a trust-ratio rule's two passes; the CPU functional
    call's bits."""
    from fastopt import functional as F

    rng = np.random.default_rng(12)
    n = 700
    p16 = case.startswith("f16")
    dt = np.float16 if p16 else np.float32
    p0 = rng.standard_normal(n).astype(dt)
    grads = [(rng.standard_normal(n) * 0.1).astype(dt) for _ in range(3)]
    fn = F.lamb if case.startswith("lamb") else F.adam
    state_dtype = None if case == "f16_stochastic" else (
        "int8" if case.endswith("int8") else "8bit")
    host_state = F.init_state(fn, p0, state_dtype=state_dtype, min_8bit_size=0)
    dev_state = {k: F.QuantizedState.to_device(s) if isinstance(s, F.QuantizedState)
                 else to_device(s) for k, s in host_state.items()}
    extra_host, extra_dev = {}, {}
    if case == "f16_master_8bit":
        extra_host = {"master": p0.astype(np.float32)}
        extra_dev = {"master": to_device(p0.astype(np.float32))}
    elif case == "f16_stochastic":
        extra_host = extra_dev = {"stochastic_rounding": True, "rounding_seed": 5}
    cp, dp = p0.copy(), to_device(p0)
    for t, g in enumerate(grads, 1):
        # a clip factor: a number on the CPU, a one-element device array on the GPU
        fn(cp, g, step=t, lr=1e-2, grad_scale=0.5, **host_state, **extra_host)
        fn(dp, to_device(g), step=t, lr=1e-2, grad_scale=to_device(np.full(1, 0.5, np.float32)),
           check=t != 3, **dev_state, **extra_dev)
    bits = np.uint16 if p16 else np.uint32
    assert (cp != p0).mean() > 0.9
    np.testing.assert_array_equal(host(dp).view(bits), cp.view(bits))
    for k, s in host_state.items():
        d = dev_state[k]
        if isinstance(s, F.QuantizedState):
            np.testing.assert_array_equal(host(d.codes), s.codes)
            np.testing.assert_array_equal(host(d.absmax), s.absmax)
            np.testing.assert_array_equal(d.values(), s.values())
        else:
            np.testing.assert_array_equal(host(d), s)
    if "master" in extra_host:
        np.testing.assert_array_equal(host(extra_dev["master"]), extra_host["master"])


def test_functional_precision_errors_on_the_gpu_write_nothing():
    from fastopt import functional as F

    n = 300
    p = to_device(np.ones(n, np.float16))
    g = to_device(np.full(n, 0.5, np.float16))
    st = {k: F.QuantizedState.to_device(s) for k, s in
          F.init_state("adam", np.ones(n, np.float32), state_dtype="8bit",
                       min_8bit_size=0).items()}
    host_master = np.ones(n, np.float32)
    with pytest.raises(TypeError, match="GPU array like the parameters"):
        F.adam(p, g, step=1, master=host_master, **st)  # a host master for device p
    bad = dict(st, v=F.QuantizedState(st["v"].codes, to_device(np.zeros(1, np.float32)),
                                      st["v"].book))
    with pytest.raises(ValueError, match="block maxima"):
        F.adam(p, g, step=1, master=to_device(host_master), **bad)
    shared = dict(st, v=F.QuantizedState(st["v"].codes, st["m"].absmax, st["v"].book))
    with pytest.raises(ValueError, match="shares memory"):
        F.adam(p, g, step=1, master=to_device(host_master), **shared)
    with pytest.raises(ValueError, match="one-element float32 device array"):
        F.adam(p, g, step=1, master=to_device(host_master),
               grad_scale=to_device(np.ones(2, np.float32)), **st)
    np.testing.assert_array_equal(host(p), np.ones(n, np.float16))
    np.testing.assert_array_equal(host(st["m"].codes), np.zeros(n, np.uint8))
    assert (host(st["v"].absmax) == 0).all() and np.array_equal(host_master, np.ones(n))

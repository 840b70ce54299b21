"""The GPU path against the CPU path: every rule and option, clipping, noise, groups,
schedules, FlatParams on the device, checkpoints and bad input.

Runs in Numba's CUDA simulator (tests/conftest.py), so the arrays are small; with
``FASTOPT_TEST_GPU=1`` on a GPU machine the same tests run on the device, where libNVVM's
FMA contraction makes results agree within a few ulp, hence tolerances, not bit equality.
"""

import math

import numpy as np
import pytest
from cuda_support import host, needs_numba_cuda, to_device

import fastopt
from fastopt import functional as F
from fastopt.rules.registry import registry

pytestmark = needs_numba_cuda

SHAPES = [(70,), (5, 7)]
RTOL, ATOL = 2e-5, 2e-6

#: Every rule with each of its variants' options (from the registry), then more options.
RULES = [(name, {"lr": rule.demo_lr, **options}) for name, rule in registry().items()
         for options in rule.variants] + [
    ("SGD", {"lr": 0.1}),
    ("Momentum", {"lr": 0.1, "momentum": 0.9}),
    ("Nesterov", {"lr": 0.1}),
    ("AdaGrad", {"lr": 0.1, "initial_accumulator_value": 0.1}),
    ("AdaGrad", {"lr": 0.1, "eps_inside_sqrt": False}),
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.5}),
    ("RMSprop", {"lr": 0.01, "centered": True}),
    ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.9}),
    ("Adam", {"lr": 0.01}),
    ("Nadam", {}),
    ("Nadam", {"momentum_decay": 4e-3}),
    ("AMSGrad", {}),
    ("AMSGrad", {"bias_correction": True}),
]


def _problem(seed, dtype=np.float32, shapes=SHAPES, steps=3):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(steps)]
    return params, grads


def _run_both(name, kwargs, seed=0, dtype=np.float32, steps=3, shapes=SHAPES):
    params, grads = _problem(seed, dtype, shapes, steps)
    cls = getattr(fastopt, name)
    cpu_params = [p.copy() for p in params]
    dev_params = [to_device(p) for p in params]
    cpu, dev = cls(cpu_params, **kwargs), cls(dev_params, **kwargs)
    for gs in grads:
        cpu.step(gs)
        dev.step([to_device(g) for g in gs])
    return cpu, dev, cpu_params, dev_params


@pytest.mark.parametrize(("name", "kwargs"), RULES, ids=lambda x: str(x))
def test_rule_with_options_matches_cpu(name, kwargs):
    options = {"weight_decay": 0.05, "maximize": True,
               "grad_noise": fastopt.GradientNoise(0.01, seed=11)}
    cpu, dev, cp, dp = _run_both(name, {**kwargs, **options})
    for c, d in zip(cp, dp, strict=True):
        np.testing.assert_allclose(host(d), c, rtol=RTOL, atol=ATOL)
    for key, value in cpu.state_dict().items():
        got = dev.state_dict()[key]
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(got, value, rtol=RTOL, atol=ATOL, err_msg=key)
        else:
            assert got == pytest.approx(value), key


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_decoupled_weight_decay_and_float64(name):
    kwargs = {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}
    _, _, cp, dp = _run_both(name, kwargs, seed=3, dtype=np.float64)
    for c, d in zip(cp, dp, strict=True):
        np.testing.assert_allclose(host(d), c, rtol=1e-12, atol=1e-13)


def test_clipping_matches_cpu_without_a_host_read():
    # clip_norm alone: the factor is computed and consumed on the device.
    cpu, dev, cp, dp = _run_both("Adam", {"lr": 0.05, "clip_norm": 0.5}, seed=5, steps=2)
    for c, d in zip(cp, dp, strict=True):
        np.testing.assert_allclose(host(d), c, rtol=RTOL, atol=ATOL)
    assert dev._workspace.scale.copy_to_host()[0] < 0.5  # it did clip


def test_skip_nonfinite_skips_on_the_device_like_the_cpu():
    params, grads = _problem(7, steps=3)
    grads[1][0][3] = np.nan
    cp = [p.copy() for p in params]
    dp = [to_device(p) for p in params]
    cpu = fastopt.SGD(cp, lr=0.1, skip_nonfinite=True, clip_norm=1.0)
    dev = fastopt.SGD(dp, lr=0.1, skip_nonfinite=True, clip_norm=1.0)
    for gs in grads:
        cpu.step(gs)
        dev.step([to_device(g) for g in gs])
    assert dev.skipped_steps == cpu.skipped_steps == 1
    assert dev.step_count == cpu.step_count == 2
    for c, d in zip(cp, dp, strict=True):
        np.testing.assert_allclose(host(d), c, rtol=RTOL, atol=ATOL)


def test_clipping_and_skipping_lists_reduce_through_the_tables(monkeypatch):
    # Two groups of several arrays: the global norm is taken through both groups' address
    # tables (one reduction launch each, none per array), clipped like the CPU, and a NaN
    # in the second group skips the whole step.
    from fastopt.drivers import cuda as driver

    c = driver.CHUNK
    shapes = [(c + 3,), (5, 7), (2 * c,), (1,), (c - 1,), (3, 3)]
    params, grads = _problem(8, shapes=shapes, steps=3)
    grads = [[g * 3.0 for g in gs] for gs in grads]  # norms well above clip_norm
    grads[1][4][7] = np.inf

    def groups(ps):
        return [{"params": ps[:3]}, {"params": ps[3:], "lr": 0.02}]

    cp, dp = [p.copy() for p in params], [to_device(p) for p in params]
    opts = {"lr": 0.05, "clip_norm": 1.0, "skip_nonfinite": True}
    cpu, dev = fastopt.Adam(groups(cp), **opts), fastopt.Adam(groups(dp), **opts)
    calls = {"per_array": 0, "tables": 0}
    per_array, tables = driver.sum_of_squares_async, driver.table_sum_of_squares_async
    monkeypatch.setattr(driver, "sum_of_squares_async", lambda *a, **k: (
        calls.__setitem__("per_array", calls["per_array"] + 1), per_array(*a, **k))[1])
    monkeypatch.setattr(driver, "table_sum_of_squares_async", lambda *a, **k: (
        calls.__setitem__("tables", calls["tables"] + 1), tables(*a, **k))[1])
    for gs in grads:
        cpu.step(gs)
        dev.step([to_device(g) for g in gs])
    assert calls == {"per_array": 0, "tables": 3}
    assert dev.skipped_steps == cpu.skipped_steps == 1
    for a, b in zip(cp, dp, strict=True):
        np.testing.assert_allclose(host(b), a, rtol=RTOL, atol=ATOL)
    # clip_norm alone: the factor stays on the device, and it is the global one.
    cp, dp = [p.copy() for p in params], [to_device(p) for p in params]
    cpu = fastopt.SGD(groups(cp), lr=0.1, clip_norm=1.0)
    dev = fastopt.SGD(groups(dp), lr=0.1, clip_norm=1.0)
    cpu.step(grads[0])
    dev.step([to_device(g) for g in grads[0]])
    for a, b in zip(cp, dp, strict=True):
        np.testing.assert_allclose(host(b), a, rtol=RTOL, atol=ATOL)
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads[0]))
    assert host(dev._workspace.scale)[0] == pytest.approx(1.0 / norm, rel=1e-5)


def _device_gradients(grads):
    """``(step, host gradients, device gradients)`` per step: the same device arrays with
    new contents, except at step 2, new arrays (whose addresses a table must follow)."""
    gs_dev = [to_device(g) for g in grads[0]]
    for step, gs in enumerate(grads):
        if step == 2:
            gs_dev = [to_device(g) for g in gs]
        else:
            for d, g in zip(gs_dev, gs, strict=True):
                d.copy_to_device(g)
        yield step, gs, gs_dev


@pytest.mark.parametrize("name", ["Adam", "AMSGrad", "Nesterov"])
def test_a_list_steps_in_one_launch_with_the_single_array_results(name, monkeypatch):
    # Sizes around the chunk size (and an empty array) put chunk and array boundaries
    # everywhere; the simulator's grid of 2 blocks makes each block step several chunks.
    from fastopt.drivers import cuda as driver

    c = driver.CHUNK
    shapes = [(c - 1,), (0,), (1,), (c,), (3, c // 3 + 1), (2 * c + 5,), (7,)]
    params, grads = _problem(5, shapes=shapes, steps=3)
    cls = getattr(fastopt, name)
    listed = [to_device(p) for p in params]
    alone = [to_device(p) for p in params]
    opt = cls(listed, lr=0.01, weight_decay=0.1)
    singles = [cls(p, lr=0.01, weight_decay=0.1) for p in alone]
    calls = {"table": 0, "single": 0}
    for kind, fn in (("table", "step_table"), ("single", "step")):
        original = getattr(driver, fn)

        def counted(*args, _kind=kind, _original=original, **kw):
            calls[_kind] += 1
            return _original(*args, **kw)

        monkeypatch.setattr(driver, fn, counted)
    for _, gs, gs_dev in _device_gradients(grads):
        opt.step(gs_dev)
        for single, g in zip(singles, gs, strict=True):
            if g.size:
                single.step(to_device(g))
    assert calls["table"] == 3  # one launch per step for the whole list
    assert calls["single"] == sum(1 for s in shapes if np.prod(s)) * 3
    for a, b in zip(listed, alone, strict=True):
        np.testing.assert_array_equal(host(a), host(b))


def test_the_same_numba_gradients_are_checked_once(monkeypatch):
    """On a GPU a Numba device array keeps its address and layout for life, so a list step
    checks the same gradient objects once (their addresses are then reused, and the table
    skips its compare); new objects, or a bad one among them, are checked again."""
    from fastopt.drivers import cuda as driver

    monkeypatch.setattr(driver, "fixed_addresses", lambda arrays: True)  # as on a GPU
    checked = []
    real = driver.grad_address

    def counting(g, p, what):
        checked.append(what)
        return real(g, p, what)

    monkeypatch.setattr(driver, "grad_address", counting)
    shapes = [(70,), (5, 7), (3,)]
    params, grads = _problem(7, shapes=shapes, steps=4)
    listed = [to_device(p) for p in params]
    alone = [to_device(p) for p in params]
    opt = fastopt.Adam(listed, lr=0.01)
    singles = [fastopt.Adam(p, lr=0.01) for p in alone]
    for step, gs, gs_dev in _device_gradients(grads[:3]):
        opt.step(gs_dev)
        for single, g in zip(singles, gs, strict=True):
            single.step(to_device(g))
        assert len(checked) == (3 if step < 2 else 6)  # step 1 checked nothing
    for a, b in zip(listed, alone, strict=True):
        np.testing.assert_array_equal(host(a), host(b))
    before = [host(a) for a in listed]
    bad = [gs_dev[0], to_device(np.ones(4, np.float32)), gs_dev[2]]
    with pytest.raises(ValueError, match="shape"):
        opt.step(bad)
    for a, b in zip(listed, before, strict=True):
        np.testing.assert_array_equal(host(a), b)
    opt.step(gs_dev)  # the memo was of these: nothing checked, the right arrays read
    assert len(checked) == 6 + 2  # the bad list: checked up to its bad array
    for single, g in zip(singles, grads[2], strict=True):
        single.step(to_device(g))
    for a, b in zip(listed, alone, strict=True):
        np.testing.assert_array_equal(host(a), host(b))


def test_torch_gradients_are_checked_through_their_attributes():
    """A torch CUDA tensor's address is read after checks of its own attributes (no Numba
    view); any failed check goes to the full checks, which refuse it with a message. A
    stand-in class with torch's name and the attributes read (no torch CUDA here)."""
    torch = pytest.importorskip("torch")
    from fastopt.drivers import cuda as driver

    p = to_device(np.zeros((5, 7), np.float32))
    tensor = type("Tensor", (), {})
    tensor.__module__ = "torch"

    def fake(shape=(5, 7), dtype=torch.float32, is_cuda=True, requires_grad=False,
             contiguous=True):
        t = tensor()
        t.shape, t.dtype, t.is_cuda, t.requires_grad = torch.Size(shape), dtype, is_cuda, \
            requires_grad
        t.is_contiguous, t.data_ptr = (lambda: contiguous), (lambda: 4096)
        return t

    assert driver.grad_address(fake(), p, "grads[0]") == 4096
    for bad in (fake(shape=(7, 5)), fake(shape=(35,)), fake(dtype=torch.float64),
                fake(dtype=torch.float16), fake(is_cuda=False), fake(requires_grad=True),
                fake(contiguous=False)):
        with pytest.raises(TypeError, match="grads\\[0\\]"):
            driver.grad_address(bad, p, "grads[0]")


def test_functional_lists_on_the_device_match_the_cpu():
    params, grads = _problem(6, shapes=[(40,), (3, 3), (65,)], steps=2)
    cp, dp = [p.copy() for p in params], [to_device(p) for p in params]
    cm = [np.zeros_like(p) for p in params]
    dm = [to_device(np.zeros_like(p)) for p in params]
    noise = fastopt.GradientNoise(0.05, seed=4)
    for t, gs in enumerate(grads, start=1):
        F.momentum(cp, gs, cm, t, 0.1, noise=noise, noise_offset=[0, 100, 200])
        F.momentum(dp, [to_device(g) for g in gs], dm, t, 0.1, noise=noise,
                   noise_offset=[0, 100, 200])
    for c, d in zip(cp + cm, dp + dm, strict=True):
        np.testing.assert_allclose(host(d), c, rtol=RTOL, atol=ATOL)


def test_groups_and_schedules():
    params, grads = _problem(9, steps=3)
    sched = fastopt.schedules.InverseTime(0.1, 0.5)

    def groups(ps):
        return [{"params": [ps[0]], "lr": sched}, {"params": [ps[1]], "momentum": 0.5}]

    cp = [p.copy() for p in params]
    dp = [to_device(p) for p in params]
    cpu, dev = fastopt.Momentum(groups(cp), lr=0.01), fastopt.Momentum(groups(dp), lr=0.01)
    for gs in grads:
        cpu.step(gs)
        dev.step([to_device(g) for g in gs])
    for c, d in zip(cp, dp, strict=True):
        np.testing.assert_allclose(host(d), c, rtol=RTOL, atol=ATOL)


def test_flatparams_on_the_device():
    shapes = {"w": (6, 5), "b": (5,)}
    rng = np.random.default_rng(2)
    init = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    flat_c = fastopt.FlatParams.from_arrays(init)
    flat_d = fastopt.FlatParams.from_arrays(init, device="cuda")
    assert flat_d.device == "cuda"
    np.testing.assert_array_equal(host(flat_d.data), flat_c.data)
    groups = lambda f: [{"params": f.subset("w")}, {"params": f.subset("b"), "lr": 0.5}]  # noqa: E731
    cpu = fastopt.Adam(groups(flat_c), lr=0.05, grad_noise=fastopt.GradientNoise(0.1, seed=1))
    dev = fastopt.Adam(groups(flat_d), lr=0.05, grad_noise=fastopt.GradientNoise(0.1, seed=1))
    for _ in range(2):
        for k, s in shapes.items():
            g = rng.standard_normal(s).astype(np.float32)
            flat_c.grads[k][...] = g
            flat_d.grads[k].copy_to_device(g)
        cpu.step()
        dev.step()
    np.testing.assert_allclose(host(flat_d.data), flat_c.data, rtol=RTOL, atol=ATOL)
    flat_d["b"] = 1.5
    np.testing.assert_array_equal(host(flat_d["b"]), np.full(5, 1.5, np.float32))
    flat_d["b"] = np.arange(5.0).reshape(1, 5)  # NumPy's assignment rules, as on the host
    flat_c["b"] = np.arange(5.0).reshape(1, 5)
    np.testing.assert_array_equal(host(flat_d["b"]), flat_c["b"])
    assert repr(flat_d).endswith("device='cuda')") and "device" not in repr(flat_c)
    flat_d.zero_grad()
    assert not host(flat_d.grad).any()


def test_state_dict_is_host_arrays_and_resumes_on_the_device():
    params, grads = _problem(4, steps=4)
    dp = [to_device(p) for p in params]
    opt = fastopt.Nadam(dp, momentum_decay=4e-3, grad_noise=fastopt.GradientNoise(0.1, seed=2))
    for gs in grads[:2]:
        opt.step([to_device(g) for g in gs])
    sd = opt.state_dict()
    assert all(isinstance(v, np.ndarray) for k, v in sd.items() if k.startswith("state."))
    snapshot = [host(p) for p in dp]
    for gs in grads[2:]:
        opt.step([to_device(g) for g in gs])
    expected = [host(p) for p in dp]
    # A fresh optimizer on fresh device arrays, restored from the host checkpoint.
    dq = [to_device(p) for p in snapshot]
    again = fastopt.Nadam(dq, momentum_decay=4e-3, grad_noise=fastopt.GradientNoise(0.1, seed=2))
    again.load_state_dict(sd)
    for gs in grads[2:]:
        again.step([to_device(g) for g in gs])
    for e, q in zip(expected, dq, strict=True):
        np.testing.assert_array_equal(host(q), e)


def test_noise_stream_matches_the_cpu_stream():
    # SGD with lr=1 and a zero gradient moves each element by -sigma * z(seed, t', i).
    n = 100
    noise = fastopt.GradientNoise(4.0, gamma=0.0, seed=2**40 + 3)
    pc, pd = np.zeros(n, np.float32), to_device(np.zeros(n, np.float32))
    F.sgd(pc, np.zeros(n, np.float32), 1, 1.0, noise=noise, noise_offset=17)
    F.sgd(pd, to_device(np.zeros(n, np.float32)), 1, 1.0, noise=noise, noise_offset=17)
    z = -host(pd) / 2.0
    np.testing.assert_allclose(z, -pc / 2.0, rtol=1e-5, atol=1e-6)
    assert abs(z.mean()) < 0.4 and 0.6 < z.std() < 1.4


def test_global_norm_on_the_device():
    rng = np.random.default_rng(1)
    xs = [rng.standard_normal(s).astype(np.float32) for s in [(100,), (9000,), (3, 4)]]
    expected = math.sqrt(sum(float(np.sum(x.astype(np.float64) ** 2)) for x in xs))
    got = F.global_norm([to_device(x) for x in xs])
    assert got == pytest.approx(expected, rel=1e-12)
    again = F.global_norm([to_device(x) for x in xs])
    assert again == got  # a fixed reduction order: the same bits every run
    xs[1][5] = np.inf  # as np.linalg.norm: an infinite element, an infinite norm
    assert F.global_norm([to_device(x) for x in xs]) == math.inf
    xs[2][1, 1] = np.nan  # and NaN wins
    assert math.isnan(F.global_norm([to_device(x) for x in xs]))


def test_functional_device_grad_scale():
    p, g = np.ones(50, np.float32), np.full(50, 2.0, np.float32)
    pd, gd = to_device(p), to_device(g)
    F.sgd(pd, gd, 1, 0.1, grad_scale=to_device(np.array([0.25], np.float32)))
    np.testing.assert_allclose(host(pd), 1.0 - 0.1 * 0.25 * 2.0, rtol=1e-6)
    with pytest.raises(ValueError, match="grad_scale"):
        F.sgd(pd, gd, 1, 0.1, grad_scale=to_device(np.array([0.25, 1.0], np.float32)))
    with pytest.raises(ValueError, match="grad_scale"):
        F.sgd(p, g, 1, 0.1, grad_scale=np.array([0.25], np.float32))


# ---------------------------------------------------------------------------- bad input
def test_mixing_host_and_device_arrays_is_refused():
    p = np.ones(10, np.float32)
    with pytest.raises(ValueError, match="mix host"):
        fastopt.SGD([to_device(p), p.copy()])
    opt = fastopt.SGD(to_device(p), lr=0.1)
    with pytest.raises(ValueError, match="same device"):
        opt.step(np.ones(10, np.float32))
    with pytest.raises(ValueError, match="mix host"):
        F.adam(to_device(p), np.ones(10, np.float32), to_device(p * 0), to_device(p * 0), 1)


def test_bad_device_arrays_are_refused_and_nothing_changes():
    p = to_device(np.ones(12, np.float32))
    with pytest.raises(TypeError, match="float32 or float64"):
        fastopt.SGD(to_device(np.ones(4, np.int32)))
    with pytest.raises(ValueError, match="C-contiguous"):
        fastopt.SGD(to_device(np.ones((4, 6), np.float32))[:, :3])  # a strided view
    opt = fastopt.Adam(p, lr=0.1)
    before = host(p)
    with pytest.raises(ValueError, match="shape"):
        opt.step(to_device(np.ones(11, np.float32)))
    with pytest.raises(ValueError, match="dtype"):
        opt.step(to_device(np.ones(12, np.float64)))
    with pytest.raises(ValueError, match="same device"):
        opt.step([object()])
    np.testing.assert_array_equal(host(p), before)
    assert opt.step_count == 0
    m = to_device(np.zeros(12, np.float32))
    with pytest.raises(ValueError, match="overlap"):
        F.adam(p, to_device(np.ones(12, np.float32)), m, m, 1)
    opt.step(to_device(np.ones(12, np.float32)))  # still works
    assert opt.step_count == 1 and not np.array_equal(host(p), before)


@pytest.mark.parametrize("case", ["one-array", "shifted", "another-param", "own-param"])
def test_device_gradients_over_parameters_are_refused(case):
    """As on the host: a gradient sharing memory with a parameter (other than being it)
    would be read after the step overwrote it, so it is refused with nothing written."""
    buf = to_device(np.linspace(1.0, 2.0, 17).astype(np.float32))
    p, shifted = buf[1:], buf[:16]
    q = to_device(np.ones(8, np.float32))
    params = [p] if case == "one-array" else [p, q]
    opt = fastopt.SGD(params, lr=0.5)
    before = [host(a) for a in params]
    grads = {"one-array": shifted, "shifted": [shifted, to_device(np.ones(8, np.float32))],
             "another-param": [to_device(np.ones(16, np.float32)), p[:8]],
             "own-param": [p, q]}[case]
    if case == "own-param":  # a gradient may be its own parameter
        opt.step(grads)
        np.testing.assert_allclose(host(p), 0.5 * before[0])
        return
    with pytest.raises(ValueError, match=r"grads\[\d\] overlaps params\[0\]"):
        opt.step(grads)
    for a, b in zip(params, before, strict=True):
        np.testing.assert_array_equal(host(a), b)
    assert opt.step_count == 0


def test_a_host_grad_scale_with_device_arrays_is_refused():
    p, g = to_device(np.ones(4, np.float32)), to_device(np.ones(4, np.float32))
    with pytest.raises(ValueError, match="one-element device array"):
        F.sgd(p, g, 1, 0.1, grad_scale=np.array([0.5], np.float32))
    np.testing.assert_array_equal(host(p), 1.0)


def test_missing_numba_cuda_says_what_to_install(monkeypatch):
    import importlib.util

    from fastopt import drivers

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba_cuda" else real(name, *a))
    monkeypatch.setattr(drivers, "_cuda_module", None)  # as in a process that never had it
    with pytest.raises(ImportError, match=r"fastopt\[cuda\]"):
        drivers.cuda_driver()


def test_numpy_without_row_stack_says_what_to_install(monkeypatch):
    # numba-cuda 0.30 overloads np.row_stack, gone in numpy 2.5: its first compile fails
    # deep inside numba-cuda. The GPU path says why and what to install instead.
    import importlib

    from fastopt.drivers import cuda as driver

    real_import = importlib.import_module

    def numba_cuda_import(name):
        if name == "numba.cuda.np.arrayobj":
            raise AttributeError("module 'numpy' has no attribute 'row_stack'")
        return real_import(name)

    monkeypatch.setattr(driver, "SIMULATOR", False)
    monkeypatch.delattr(np, "row_stack", raising=False)
    monkeypatch.setattr(importlib, "import_module", numba_cuda_import)
    driver.check_numpy_support.cache_clear()
    with pytest.raises(ImportError, match=r"numpy<2\.5"):
        driver.check_numpy_support()


def test_gpu_bench_traffic_and_case_runner():
    from fastopt.bench import gpu

    assert gpu.traffic("Adam", 4) == 28  # p, g, m, v read; p, m, v written
    assert gpu.traffic("SGD", 4) == 12 and gpu.traffic("AMSGrad", 8) == 9 * 8
    row = gpu.bench_rule("Adam", 64, np.float32, repeats=1)  # simulator: timings meaningless
    assert row["rule"] == "Adam" and row["n"] == 64 and row["dtype"] == "float32"
    assert row["x_one_wide"] > 0  # the one-element-per-access step, timed beside it
    bf16 = gpu.bench_rule("Adam", 64, np.float32, repeats=1, state_dtype="bfloat16")
    assert bf16["rule"] == "Adam [bfloat16]" and "x_torch" not in bf16
    # bytes per value: p, g read and p written (12) and m, v read and written as bfloat16
    # (8): the GB/s figure counts 20 bytes a value where float32 state counts 28
    assert bf16["gbps"] * bf16["fastopt_ms"] * 1e6 == pytest.approx(20 * 64)
    resnet = gpu.bench_resnet(1, shapes=[("w", (3, 5)), ("b", (5,))])
    assert resnet["values"] == 20
    assert {"fastopt list of 2", "fastopt list, clip_norm", "fastopt FlatParams"} <= set(resnet)
    bn = gpu.bench_batchnorm_shape((4, 3, 5), repeats=1, axis=-1)
    assert bn["nbytes"] == 240 and {"train_fastopt", "infer_fastopt"} <= set(bn)
    report = {"header": {"gpu": "sim", "compute_capability": (9, 0), "copy_gbps": 1e3},
              "rows": [dict(row, pct_copy_bw=1.0)], "resnet": resnet, "batchnorm": [bn],
              "errors": []}
    text = gpu.format_report(report)
    assert "Adam" in text and "fastopt FlatParams" in text and "(4, 3, 5) C-last" in text
    assert "x 1-wide" in text


def test_early_stopping_keeps_the_best_copy_on_the_device():
    flat = fastopt.FlatParams({"w": (4,)}, device="cuda")
    flat["w"] = 1.0
    stop = fastopt.EarlyStopping(patience=1, restore_best=True)
    assert not stop.update(1.0, flat)  # best so far: w = 1
    flat["w"] = 2.0
    assert stop.update(2.0, flat)  # worse, patience spent: stops and restores
    np.testing.assert_array_equal(host(flat["w"]), np.ones(4, np.float32))
    with pytest.raises(TypeError, match="FlatParams"):
        fastopt.EarlyStopping().update(1.0, [to_device(np.ones(3, np.float32))])


def test_global_norm_checks_a_device_workspace():
    g = to_device(np.arange(100.0))
    with pytest.raises(TypeError, match="1-D float64 device array"):
        F.global_norm([g], to_device(np.zeros(4, np.float32)))
    with pytest.raises(ValueError, match="shares memory with grads"):
        F.global_norm([g], g)
    assert F.global_norm([g], to_device(np.zeros(4))) == pytest.approx(
        np.linalg.norm(np.arange(100.0)), rel=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_aligned_arrays_step_four_at_a_time_and_the_rest_one_at_a_time(dtype):
    """The step kernel reads and writes aligned arrays four elements per 16-byte access
    (drivers/cuda_vectors.py) and steps the last n % 4 one by one; an array that starts
    4 bytes past an aligned address takes the one-element loop. Both give the CPU's
    values, with noise and weight decay (the element index is the noise counter), and the
    alignment test picks the path the arrays allow."""
    from numba import cuda

    from fastopt.drivers.cuda_vectors import misaligned

    @cuda.jit
    def probe(p, g, st, out):
        out[0] = misaligned(p, g, st)

    rng = np.random.default_rng(4)
    noise = fastopt.GradientNoise(eta=0.01, seed=3)
    for n in (4 * 33 + 3, 64, 5):
        for shift in (0, 1):
            p0 = rng.standard_normal(n + 1).astype(dtype)
            g = rng.standard_normal(n + 1).astype(dtype)
            dev = [to_device(a) for a in (p0, g, np.zeros(n + 1, dtype), np.zeros(n + 1, dtype))]
            dp, dg, dm, dv = (a[shift:shift + n] for a in dev)
            out = cuda.to_device(np.full(1, -1, np.int64))
            probe[1, 1](dp, dg, (dm, dv), out)
            assert (host(out)[0] == 0) == (shift == 0)
            cp, cm, cv = p0[shift:shift + n].copy(), np.zeros(n, dtype), np.zeros(n, dtype)
            for t in (1, 2):
                kw = {"step": t, "lr": 0.01, "weight_decay": 0.1, "noise": noise}
                F.adam(cp, g[shift:shift + n], cm, cv, **kw)
                F.adam(dp, dg, dm, dv, **kw)
            got = host(dev[0])[shift:shift + n]
            assert not np.array_equal(got, p0[shift:shift + n])
            np.testing.assert_allclose(got, cp, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(host(dev[3])[shift:shift + n], cv, rtol=RTOL, atol=ATOL)
            # the elements around the view are untouched
            if shift:
                assert host(dev[0])[0] == p0[0]
            else:
                assert host(dev[0])[n] == p0[n]


def test_a_list_with_a_misaligned_array_steps_it_one_element_at_a_time():
    """The one-launch step over many arrays tests each array's alignment: aligned arrays
    four elements per access, a view 4 bytes off one at a time; every array gets the
    CPU's values, including the n % 4 tails at the end of each array."""
    rng = np.random.default_rng(9)
    sizes, shifts = (130, 71, 9), (0, 1, 0)
    bases = [rng.standard_normal(n + 1).astype(np.float32) for n in sizes]
    grads = [rng.standard_normal(n).astype(np.float32) for n in sizes]
    dev = [to_device(b) for b in bases]
    views = [d[s:s + n] for d, s, n in zip(dev, shifts, sizes, strict=True)]
    cpu = [b[s:s + n].copy() for b, s, n in zip(bases, shifts, sizes, strict=True)]
    gpu_opt = fastopt.Adam(views, lr=0.01)
    cpu_opt = fastopt.Adam(cpu, lr=0.01)
    for _ in range(2):
        gpu_opt.step([to_device(g) for g in grads])
        cpu_opt.step(grads)
    for d, c, b, s, n in zip(dev, cpu, bases, shifts, sizes, strict=True):
        got = host(d)
        np.testing.assert_allclose(got[s:s + n], c, rtol=RTOL, atol=ATOL)
        assert not np.array_equal(got[s:s + n], b[s:s + n])
        outside = 0 if s else n
        assert got[outside] == b[outside]  # the element beside the view is untouched


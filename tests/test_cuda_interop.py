"""On a real GPU only: CuPy arrays and torch CUDA tensors stepped in place, on the
caller's stream. Skipped in the simulator (its arrays have no ``__cuda_array_interface__``)
and where CuPy / torch with CUDA are missing. Run with
``FASTOPT_TEST_GPU=1 python -m pytest tests/test_cuda_interop.py`` on a GPU machine.
"""

import numpy as np
import pytest
from cuda_support import SIMULATED, needs_numba_cuda

import fastopt

pytestmark = [
    needs_numba_cuda,
    pytest.mark.skipif(SIMULATED, reason="needs a real GPU (FASTOPT_TEST_GPU=1)"),
]


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device here")
    return torch


def _cupy():
    cupy = pytest.importorskip("cupy")
    try:
        cupy.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001
        pytest.skip("CuPy has no CUDA device here")
    return cupy


def _cpu_adam(p0, grads, **kw):
    p = p0.copy()
    opt = fastopt.Adam(p, **kw)
    for g in grads:
        opt.step(g)
    return p


def test_torch_tensors_in_place_on_a_side_stream():
    torch = _torch_cuda()
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(5000).astype(np.float32)
    grads = [rng.standard_normal(5000).astype(np.float32) for _ in range(3)]
    expected = _cpu_adam(p0, grads, lr=1e-2, clip_norm=1.0)
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        p = torch.from_numpy(p0).cuda()
        opt = fastopt.Adam([p], lr=1e-2, clip_norm=1.0)
        for g in grads:
            opt.step([torch.from_numpy(g).cuda()])
    side.synchronize()
    np.testing.assert_allclose(p.cpu().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_torch_parameter_that_requires_grad_says_detach():
    torch = _torch_cuda()
    w = torch.nn.Parameter(torch.ones(10, device="cuda"))
    with pytest.raises(ValueError, match="detach"):
        fastopt.SGD([w])
    fastopt.SGD([w.detach()])  # the same memory, accepted


def test_cupy_arrays_in_place_on_the_current_stream():
    cupy = _cupy()
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(5000).astype(np.float32)
    grads = [rng.standard_normal(5000).astype(np.float32) for _ in range(3)]
    expected = _cpu_adam(p0, grads, lr=1e-2, grad_noise=fastopt.GradientNoise(0.1, seed=4))
    with cupy.cuda.Stream(non_blocking=True) as stream:
        p = cupy.asarray(p0)
        opt = fastopt.Adam(p, lr=1e-2, grad_noise=fastopt.GradientNoise(0.1, seed=4))
        for g in grads:
            opt.step(cupy.asarray(g))
        stream.synchronize()
    np.testing.assert_allclose(cupy.asnumpy(p), expected, rtol=1e-5, atol=1e-6)


def test_batchnorm_on_torch_tensors_matches_torch():
    torch = _torch_cuda()
    from fastopt import batchnorm as bn

    x = torch.randn(8, 16, 5, 5, device="cuda")
    gamma, beta = torch.randn(16, device="cuda"), torch.randn(16, device="cuda")
    y, _ = bn.forward(x, gamma, beta, eps=1e-5)
    ref = torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5)
    torch.cuda.synchronize()
    np.testing.assert_allclose(y.copy_to_host(), ref.cpu().numpy(), rtol=1e-4, atol=1e-5)


def test_a_list_of_torch_tensors_steps_in_one_launch():
    # A list of tensors goes through the address table, the gradients checked through
    # torch's own attributes; a bad one is still refused with check_grad's message.
    torch = _torch_cuda()
    rng = np.random.default_rng(2)
    shapes = [(300,), (0,), (17, 9), (4, 3, 3, 3)]
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    cp = [p.copy() for p in p0]
    cpu = fastopt.Adam(cp, lr=1e-2, weight_decay=0.1)
    tp = [torch.from_numpy(p).cuda() for p in p0]
    dev = fastopt.Adam(tp, lr=1e-2, weight_decay=0.1)
    for gs in grads:
        cpu.step(gs)
        dev.step([torch.from_numpy(g).cuda() for g in gs])
    torch.cuda.synchronize()
    for c, t in zip(cp, tp, strict=True):
        np.testing.assert_allclose(t.cpu().numpy(), c, rtol=1e-5, atol=1e-6)
    before = [t.clone() for t in tp]
    bad = [torch.from_numpy(g).cuda() for g in grads[0]]
    bad[2] = torch.zeros(9, 17, device="cuda").t()  # the right shape, not contiguous
    with pytest.raises(ValueError, match="contiguous"):
        dev.step(bad)
    bad[2] = torch.zeros(17, 9, device="cuda", dtype=torch.float64)
    with pytest.raises(ValueError, match="dtype"):
        dev.step(bad)
    for b, t in zip(before, tp, strict=True):
        assert torch.equal(b, t)


def test_functional_calls_on_torch_tensors_in_place():
    """The functional layer on torch CUDA tensors (whose dtypes NumPy cannot read): float32
    state, and float16 parameters with a float32 master copy and 8-bit state whose codes
    and block maxima are torch tensors; the CPU's functional results."""
    from fastopt import functional as F

    torch = _torch_cuda()
    rng = np.random.default_rng(3)
    n = 3000
    p0 = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 0.1).astype(np.float32)
    p, m, v = (torch.from_numpy(a).cuda() for a in (p0, np.zeros(n, np.float32),
                                                      np.zeros(n, np.float32)))
    F.adam(p, torch.from_numpy(g).cuda(), m, v, step=1, lr=1e-2)
    cp, cm, cv = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    F.adam(cp, g, cm, cv, step=1, lr=1e-2)
    np.testing.assert_allclose(p.cpu().numpy(), cp, rtol=1e-5, atol=1e-6)

    h16 = p0.astype(np.float16)
    host = F.init_state("adam", h16, state_dtype="8bit", min_8bit_size=0)
    dev = {k: F.QuantizedState(torch.from_numpy(s.codes).cuda(),
                               torch.from_numpy(s.absmax).cuda(), s.book)
           for k, s in host.items()}
    hp, master = torch.from_numpy(h16).cuda(), torch.from_numpy(h16.astype(np.float32)).cuda()
    F.adam(hp, torch.from_numpy(g.astype(np.float16)).cuda(), step=1, lr=1e-2, master=master,
           **dev)
    ch, cmaster = h16.copy(), h16.astype(np.float32)
    F.adam(ch, g.astype(np.float16), step=1, lr=1e-2, master=cmaster, **host)
    np.testing.assert_allclose(master.cpu().numpy(), cmaster, rtol=1e-5, atol=1e-6)
    assert (hp.cpu().numpy() != h16).mean() > 0.9
    for k, s in dev.items():
        codes = s.codes.cpu().numpy().astype(int)
        assert np.abs(codes - host[k].codes.astype(int)).max() <= 1

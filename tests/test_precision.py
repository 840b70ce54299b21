"""16-bit parameters and gradients, master weights, stochastic rounding, bfloat16 and 8-bit
state (docs/precision.md). References are plain NumPy (and ml_dtypes' own conversions);
bitsandbytes is a yardstick where installed."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

import fastopt
from fastopt.precision import dynamic, formats, quantized

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = ml_dtypes.bfloat16


# ------------------------------------------------------------------ formats
@njit
def _convert(x, bf, h, bfx, hx):
    for i in range(x.size):
        bf[i] = formats.f32_to_bf16(x[i])
        h[i] = formats.f32_to_f16(x[i])
        bfx[i] = formats.bf16_to_f32(bf[i])
        hx[i] = formats.f16_to_f32(h[i])


def _awkward_floats(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array([0, -0.0, np.inf, -np.inf, 65504, 65519.99, 65520, 6e-8, 2.98e-8,
                      6.1e-5, 3.4e38, -1e-40], np.float32)
    scaled = (rng.standard_normal(n) * 10.0 ** rng.uniform(-9, 6, n)).astype(np.float32)
    return np.concatenate([bits, edges, scaled])


def test_16bit_rounding_matches_numpy_and_ml_dtypes():
    x = _awkward_floats(200_000)
    bf, h = np.empty(x.size, np.uint16), np.empty(x.size, np.uint16)
    bfx, hx = np.empty(x.size, np.float32), np.empty(x.size, np.float32)
    _convert(x, bf, h, bfx, hx)
    ok = ~np.isnan(x)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(bf[ok], x[ok].astype(BF16).view(np.uint16))
        np.testing.assert_array_equal(h[ok], x[ok].astype(np.float16).view(np.uint16))
    assert np.isnan(bfx[~ok]).all() and np.isnan(hx[~ok]).all()
    # every 16-bit pattern decodes as the libraries decode it
    allbits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    for decode, dtype in ((formats.bf16_to_f32, BF16), (formats.f16_to_f32, np.float16)):
        got = njit(lambda u, f=decode: np.array([f(v) for v in u], np.float32))(allbits)
        want = allbits.view(dtype).astype(np.float32)
        same = (got.view(np.uint32) == want.view(np.uint32)) | (np.isnan(got) & np.isnan(want))
        assert same.all()
    # the Python bodies (plain Python, the CUDA simulator) agree with the compiled code
    sample = x[ok][::50]
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal([formats.f32_to_f16(v) for v in sample],
                                      sample.astype(np.float16).view(np.uint16))
        np.testing.assert_array_equal([formats.f32_to_bf16(v) for v in sample],
                                      sample.astype(BF16).view(np.uint16))
    for decode, dtype in ((formats.bf16_to_f32, BF16), (formats.f16_to_f32, np.float16)):
        some = allbits[::7]
        got = np.array([decode(v) for v in some], np.float32)
        want = some.view(dtype).astype(np.float32)
        assert ((got.view(np.uint32) == want.view(np.uint32))
                | (np.isnan(got) & np.isnan(want))).all()


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_codes_match_ml_dtypes(fmt):
    ref = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}[fmt]
    largest = quantized.FP8[fmt][3]
    rng = np.random.default_rng(1)
    y = np.concatenate([rng.uniform(-largest, largest, 100_000),
                        rng.standard_normal(100_000) * 10.0 ** rng.uniform(-12, 2, 100_000)])
    y = np.clip(y, -largest, largest).astype(np.float32)
    enc = getattr(quantized, f"{fmt}_encode")
    dec = getattr(quantized, f"{fmt}_decode")
    codes = njit(lambda a: np.array([enc(v) for v in a], np.uint8))(y)
    np.testing.assert_array_equal(codes, y.astype(ref).view(np.uint8))
    back = njit(lambda c: np.array([dec(v) for v in c], np.float32))(np.arange(256, dtype=np.uint8))
    want = np.arange(256, dtype=np.uint8).view(ref).astype(np.float32)
    finite = np.isfinite(want)
    np.testing.assert_array_equal(back[finite], want[finite])
    # the Python bodies (plain Python, the CUDA simulator) give the same codes and values
    sample = np.concatenate([y[::97], y[100_000::97]])
    np.testing.assert_array_equal([enc(v) for v in sample], sample.astype(ref).view(np.uint8))
    np.testing.assert_array_equal(np.array([dec(v) for v in range(256)], np.float32)[finite],
                                  want[finite])


# ------------------------------------------------------------------ the dynamic map
def _reference_map(signed: bool) -> np.ndarray:
    """Dettmers' dynamic map from its definition, in float64."""
    values = []
    for i in range(7):
        k = 2**i if signed else 2 ** (i + 1)
        bounds = np.linspace(0.1, 1.0, k + 1)
        means = (bounds[:-1] + bounds[1:]) / 2 * 10.0 ** (i - 6)
        values += list(means) + (list(-means) if signed else [])
    return np.sort(np.array(values + [0.0, 1.0]))


@pytest.mark.parametrize("signed", [True, False])
def test_dynamic_map_and_nearest_code(signed):
    ours = dynamic.dynamic_map(signed)
    np.testing.assert_allclose(ours, _reference_map(signed).astype(np.float32), rtol=1e-6)
    book = "dynamic_signed" if signed else "dynamic_unsigned"
    rng = np.random.default_rng(2)
    x = rng.standard_normal(1 << 15) * 10.0 ** rng.uniform(-9, 1, 1 << 15)
    x = (x if signed else np.abs(x)).astype(np.float32)
    x[:256] = ours  # every code value itself, and the midpoints next
    x[256:511] = ((ours[:-1] + ours[1:]) / np.float32(2)).astype(np.float32)
    codes, absmax = quantized.quantize(x, book)
    blocks = x.reshape(-1, 256)
    np.testing.assert_array_equal(absmax, np.abs(blocks).max(1))
    y = (blocks * (np.float32(1) / absmax[:, None])).astype(np.float32).reshape(-1)
    dist = np.abs(y[:, None].astype(np.float64) - ours[None, :].astype(np.float64))
    nearest = dist.argmin(1)  # ties: the lower code, as torch.bucketize
    np.testing.assert_array_equal(codes, nearest)
    np.testing.assert_array_equal(quantized.dequantize(codes, absmax, book),
                                  ours[codes] * np.repeat(absmax, 256))


def test_dynamic_map_is_bitsandbytes_map():
    F = pytest.importorskip("bitsandbytes.functional")
    for signed in (True, False):
        np.testing.assert_array_equal(dynamic.dynamic_map(signed),
                                      F.create_dynamic_map(signed=signed).numpy())


# ------------------------------------------------------------------ optimizers
def _grads(n, steps, seed=3, scale=0.01):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n) * scale).astype(np.float32) for _ in range(steps)]


def _adam_numpy(p, gs, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    p = p.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(gs, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr / (1 - b1**t) * m / (np.sqrt(v / (1 - b2**t)) + eps)
    return p


@pytest.mark.parametrize("state_dtype, tol", [("bfloat16", 0.02), ("int8", 0.05),
                                              ("fp8", 0.1)])
def test_low_precision_state_follows_float32_adam(state_dtype, tol):
    n, steps = 20_000, 60
    rng = np.random.default_rng(4)
    p0 = rng.standard_normal(n).astype(np.float32)
    gs = _grads(n, steps)
    p = p0.copy()
    opt = fastopt.Adam([p], lr=1e-3, state_dtype=state_dtype)
    for g in gs:
        opt.step([g])
    ref = _adam_numpy(p0, gs)
    moved = np.abs(ref - p0).mean()
    err = np.abs(p - ref).mean()
    assert err < tol * moved, (err, moved)  # close to the float32 trajectory
    assert opt.state_bytes() < 0.6 * 8 * n  # and in less memory than float32 state


def test_master_weights_follow_float32_bit_for_bit():
    n = 5000
    rng = np.random.default_rng(5)
    p16 = rng.standard_normal(n).astype(BF16)
    gs16 = [g.astype(BF16) for g in _grads(n, 20)]
    p32 = p16.astype(np.float32)
    ref = fastopt.Adam([p32], lr=1e-2)
    opt = fastopt.Adam([p16], lr=1e-2, master_weights=True)
    for g in gs16:
        ref.step([g.astype(np.float32)])
        opt.step([g])
    master = opt.state_dict()["master"]
    np.testing.assert_array_equal(master[:n], p32)  # (the layout pads to 64 bytes)
    np.testing.assert_array_equal(p16.view(np.uint16), p32.astype(BF16).view(np.uint16))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_stochastic_rounding_moves_where_nearest_stalls(dtype):
    """Updates below half an ulp: rounding to nearest never moves a 16-bit parameter;
    stochastic rounding follows the float32 trajectory on average."""
    n, steps, lr = 20_000, 100, 1e-4
    dt = BF16 if dtype == "bfloat16" else np.float16
    g = np.ones(n, dt)
    nearest = np.ones(n, dt)
    sr = np.ones(n, dt)
    o1 = fastopt.SGD([nearest], lr=lr)
    o2 = fastopt.SGD([sr], lr=lr, stochastic_rounding=True, rounding_seed=7)
    for _ in range(steps):
        o1.step([g])
        o2.step([g])
    assert (nearest.astype(np.float32) == 1.0).all()  # stalled
    target = 1.0 - steps * lr
    mean = sr.astype(np.float64).mean()
    assert abs(mean - target) < 0.1 * steps * lr, (mean, target)


def test_stochastic_rounding_is_the_same_at_any_thread_count():
    import numba

    n = 300_000
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal(n).astype(BF16)
    gs = [g.astype(BF16) for g in _grads(n, 3)]
    outs = []
    threads = numba.get_num_threads()
    try:
        for k in sorted({1, threads}):
            numba.set_num_threads(k)
            p = p0.copy()
            opt = fastopt.Adam([p], lr=1e-2, stochastic_rounding=True, state_dtype="bfloat16")
            q = p0.astype(np.float32)
            opt8 = fastopt.Adam([q], lr=1e-2, state_dtype="8bit")
            for g in gs:
                opt.step([g])
                opt8.step([g.astype(np.float32)])
            sd8 = opt8.state_dict()
            outs.append((p.view(np.uint16).copy(), opt.state_dict()["state.m"].copy(),
                         q.copy(), sd8["state.v.codes"].copy(), sd8["state.v.absmax"].copy()))
    finally:
        numba.set_num_threads(threads)
    for out in outs[1:]:
        for a, b in zip(out, outs[0], strict=True):
            np.testing.assert_array_equal(a, b)


def test_8bit_names_the_faster_format():
    """``state_dtype="8bit"`` is the format measured fastest (fp8; docs/precision.md), and
    its checkpoints say which it is."""
    rng = np.random.default_rng(8)
    p0 = rng.standard_normal(20_000).astype(np.float32)
    gs = _grads(20_000, 3)
    out = []
    for dtype in ("8bit", "fp8"):
        p = p0.copy()
        opt = fastopt.Adam([p], state_dtype=dtype)
        for g in gs:
            opt.step([g])
        out.append((p, opt.state_dict()))
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1]["state.m.codes"], out[1][1]["state.m.codes"])
    assert '"fp8"' in str(out[0][1]["precision"])


def _ref_quantize(x: np.ndarray, book: str) -> tuple[np.ndarray, np.ndarray]:
    """Blockwise 8-bit codes from the definitions: per 256 values their absolute maximum,
    then each value over it rounded to the nearest code (ml_dtypes' fp8 rounding; the
    nearest dynamic-map value by brute force, ties to the lower code)."""
    pad = -x.size % 256
    blocks = np.concatenate([x, np.zeros(pad, np.float32)]).reshape(-1, 256)
    amax = np.abs(blocks).max(1).astype(np.float32)
    safe = np.where(amax > 0, amax, 1).astype(np.float32)[:, None]
    if book in ("e4m3", "e5m2"):
        fmt = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}[book]
        y = (blocks * (np.float32(quantized.FP8[book][3]) / safe)).astype(np.float32)
        codes = y.astype(fmt).view(np.uint8)
    else:
        table = _reference_map(book == "dynamic_signed").astype(np.float32)
        y = (blocks / safe).astype(np.float64)
        codes = np.abs(y.reshape(-1, 1) - table[None, :]).argmin(1).reshape(y.shape)
    return codes.reshape(-1)[:x.size].astype(np.uint8), amax


def _ref_dequantize(codes: np.ndarray, amax: np.ndarray, book: str) -> np.ndarray:
    if book in ("e4m3", "e5m2"):
        fmt = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}[book]
        unit = codes.view(fmt).astype(np.float32) / np.float32(quantized.FP8[book][3])
    else:
        unit = _reference_map(book == "dynamic_signed").astype(np.float32)[codes]
    return (unit * np.repeat(amax, 256)[:codes.size]).astype(np.float32)


@pytest.mark.parametrize("state_dtype, books", [("fp8", ("e4m3", "e5m2")),
                                                ("int8", ("dynamic_signed",
                                                          "dynamic_unsigned"))])
def test_8bit_adam_steps_as_the_blockwise_definition(state_dtype, books):
    """Each step decodes the state, takes Adam's step in float32 and encodes the new state
    with each block's new maximum. Reference: NumPy from those definitions, the state
    quantized after every step. A size with a partial last block and several parallel
    tasks of blocks."""
    n, steps, lr, b1, b2, eps = 3 * 64 * 256 + 1000 + 37, 4, 1e-3, 0.9, 0.999, 1e-8
    rng = np.random.default_rng(11)
    p0 = rng.standard_normal(n).astype(np.float32)
    gs = [(rng.standard_normal(n) * 10.0 ** rng.uniform(-4, 0, n)).astype(np.float32)
          for _ in range(steps)]
    p = p0.copy()
    opt = fastopt.Adam([p], lr=lr, state_dtype=state_dtype)
    rp = p0.copy()
    mc, ma = _ref_quantize(np.zeros(n, np.float32), books[0])
    vc, va = _ref_quantize(np.zeros(n, np.float32), books[1])
    f = np.float32
    for t, g in enumerate(gs, 1):
        opt.step([g])
        m = f(b1) * _ref_dequantize(mc, ma, books[0]) + f(1 - b1) * g
        v = f(b2) * _ref_dequantize(vc, va, books[1]) + f(1 - b2) * g * g
        step = f(lr) / f(1 - b1**t) * m / (np.sqrt(v / f(1 - b2**t)) + f(eps))
        rp = (rp - step).astype(np.float32)
        mc, ma = _ref_quantize(m.astype(np.float32), books[0])
        vc, va = _ref_quantize(v.astype(np.float32), books[1])
        sd = opt.state_dict()
        for codes, amax, name in ((mc, ma, "m"), (vc, va, "v")):
            np.testing.assert_allclose(sd[f"state.{name}.absmax"], amax, rtol=2e-6)
            got = sd[f"state.{name}.codes"][:n].astype(int)
            # float32 rounding order may put a value on the other side of a midpoint
            assert np.abs(got - codes).max() <= 1, (t, name)
            assert (got == codes).mean() > 0.999, (t, name, (got == codes).mean())
    # an ulp or two, but where a state code flipped, a step's share (a step is ~lr)
    assert np.isclose(p, rp, rtol=4e-7, atol=1e-8).mean() > 0.999
    assert np.abs(p - rp).max() < 0.1 * lr


def test_8bit_state_small_arrays_keep_float32_and_bytes_add_up():
    big, small = np.zeros(10_000, np.float32), np.zeros(100, np.float32)
    opt = fastopt.Adam([big, small], state_dtype="int8", min_8bit_size=4096)
    sd = opt.state_dict()
    assert sd["state.m.codes"].size >= 10_000 and sd["state.m"].size < 200
    assert opt.state_bytes() == sum(v.nbytes for k, v in sd.items() if k.startswith("state."))
    plain = fastopt.Adam([big.copy(), small.copy()])
    assert opt.state_bytes() < 0.3 * plain.state_bytes()


def test_8bit_checkpoint_resumes_bit_identically_and_converts():
    n = 9000
    rng = np.random.default_rng(8)
    p0 = rng.standard_normal(n).astype(np.float32)
    gs = _grads(n, 10)
    a = p0.copy()
    oa = fastopt.Adam([a], state_dtype="int8")
    for g in gs[:5]:
        oa.step([g])
    sd = oa.state_dict()
    b = a.copy()
    ob = fastopt.Adam([b], state_dtype="int8")
    ob.load_state_dict(sd)
    for g in gs[5:]:
        oa.step([g])
        ob.step([g])
    np.testing.assert_array_equal(a, b)
    c = p0.copy()
    oc = fastopt.Adam([c], state_dtype="bfloat16")
    with pytest.warns(UserWarning, match="converted"):
        oc.load_state_dict(sd)
    m8 = quantized.dequantize(sd["state.m.codes"], sd["state.m.absmax"], "dynamic_signed")
    np.testing.assert_allclose(oc.state[0]["m"], m8[:n], rtol=2**-7)


def test_against_bitsandbytes_adam8bit():
    """bitsandbytes' CPU quantizer is an approximate search (its BinSearch): where codes
    differ, ours is the nearest code and theirs is not; parameters stay close."""
    torch = pytest.importorskip("torch")
    bnb = pytest.importorskip("bitsandbytes")
    n = 1 << 14
    rng = np.random.default_rng(9)
    p0 = rng.standard_normal(n).astype(np.float32)
    gs = _grads(n, 100)
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = bnb.optim.Adam8bit([tp], lr=1e-3)
    p = p0.copy()
    opt = fastopt.Adam([p], lr=1e-3, state_dtype="int8")
    for g in gs:
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
        opt.step([g])
    theirs = topt.state[tp]
    sd = opt.state_dict()
    for name, key in (("m", "1"), ("v", "2")):
        ours_c, their_c = sd[f"state.{name}.codes"], theirs[f"state{key}"].numpy()
        assert (ours_c == their_c).mean() > 0.8
    # the difference is their quantizer's: on the same values, ours is the nearest code
    # (test_dynamic_map_and_nearest_code) and theirs often is not
    x = (rng.standard_normal(1 << 14) * 10.0 ** rng.uniform(-6, 0, 1 << 14)).astype(np.float32)
    F = pytest.importorskip("bitsandbytes.functional")
    q, st = F.quantize_blockwise(torch.from_numpy(x), code=F.create_dynamic_map(signed=True),
                                 blocksize=256)
    ours, _ = quantized.quantize(x, "dynamic_signed")
    y = (x.reshape(-1, 256) / st.absmax.numpy()[:, None]).reshape(-1)
    values = dynamic.dynamic_map(True).astype(np.float64)
    err_ours = np.abs(values[ours] - y).mean()
    err_theirs = np.abs(values[q.numpy()] - y).mean()
    assert err_ours <= err_theirs
    moved = np.abs(tp.detach().numpy() - p0).mean()
    assert np.abs(p - tp.detach().numpy()).mean() < 0.05 * moved


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, params, match", [
    ({"state_dtype": "int4"}, "f32", "state_dtype must be"),
    ({"state_dtype": "bfloat16"}, "f64", "needs float32 or 16-bit"),
    ({"master_weights": True}, "f32", "16-bit parameters"),
    ({"stochastic_rounding": True}, "f32", "rounds 16-bit"),
    ({"stochastic_rounding": True, "master_weights": True}, "bf16", "pass one of them"),
    ({"grad_dtype": "bfloat16"}, "f64", "grad_dtype"),
    ({"min_8bit_size": -1}, "f32", "min_8bit_size"),
    ({"rounding_seed": -1}, "f32", "rounding_seed"),
])
def test_bad_precision_options(kwargs, params, match):
    p = {"f32": np.ones(10, np.float32), "f64": np.ones(10), "bf16": np.ones(10, BF16)}[params]
    with pytest.raises(ValueError, match=match):
        fastopt.Adam([p], **kwargs)


def test_rules_that_cannot_take_8bit_state_say_so():
    with pytest.raises(ValueError, match="cannot be held in 8 bits"):
        fastopt.ASGD([np.ones(10, np.float32)], state_dtype="int8")


TRUST_RULES = [("LAMB", {"lr": 1e-2, "weight_decay": 0.01}),
               ("LARS", {"lr": 0.5, "weight_decay": 1e-3})]


def _trust_problem(steps=4):
    rng = np.random.default_rng(13)
    shapes = [(5000,), (300,)]
    p32 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(BF16) for s in shapes] for _ in range(steps)]
    return p32, grads


@pytest.mark.parametrize("name, kwargs", TRUST_RULES)
def test_trust_ratio_rules_with_a_master_copy_follow_float32_bit_for_bit(name, kwargs):
    """LAMB and LARS over bfloat16 parameters and gradients with a master copy: the first
    pass sums the norms over the stored values without writing, the second updates state
    and parameters from the values before the step; the master copy takes the float32
    path's steps to the bit (its norms from the same float64 blocks)."""
    p32, grads = _trust_problem()
    cls = getattr(fastopt, name)
    p16 = [p.astype(BF16) for p in p32]
    ref_params = [p.astype(np.float32) for p in p16]  # the master copy starts here
    ref, opt = cls(ref_params, **kwargs), cls(p16, master_weights=True, **kwargs)
    for gs in grads:
        ref.step([g.astype(np.float32) for g in gs])
        opt.step(gs)
    master = opt.state_dict()["master"]
    for (lo, n), want, got in zip(opt._storage.units, ref_params, p16, strict=True):
        np.testing.assert_array_equal(master[lo:lo + n], want)
        np.testing.assert_array_equal(got.view(np.uint16),
                                      want.astype(BF16).view(np.uint16))


@pytest.mark.parametrize("rule, state_dtype, tol", [
    (0, "bfloat16", 0.01), (1, "8bit", 0.05)])  # (not every pair: suite time)
def test_trust_ratio_rules_with_low_precision_state_follow_float32(rule, state_dtype, tol):
    name, kwargs = TRUST_RULES[rule]
    p32, grads = _trust_problem()
    cls = getattr(fastopt, name)
    got, want = [p.copy() for p in p32], [p.copy() for p in p32]
    opt = cls(got, state_dtype=state_dtype, min_8bit_size=256, **kwargs)
    ref = cls(want, **kwargs)
    for gs in grads:
        wide = [g.astype(np.float32) for g in gs]
        opt.step(wide)
        ref.step(wide)
    moved = np.mean([np.abs(w - p).mean() for w, p in zip(want, p32, strict=True)])
    err = np.mean([np.abs(g - w).mean() for g, w in zip(got, want, strict=True)])
    assert err < tol * moved, (err, moved)
    assert opt.state_bytes() < ref.state_bytes()


def test_16bit_gradients_need_asking_and_nothing_is_written():
    base = np.ones(5001, np.float32)
    p = base[:5000]
    opt = fastopt.Adam([p], state_dtype="int8")
    before = {k: v.copy() for k, v in opt.state_dict().items() if isinstance(v, np.ndarray)}
    with pytest.raises(ValueError, match="grad_dtype='bfloat16'"):
        opt.step([np.ones(5000, BF16)])
    with pytest.raises(ValueError, match="overlap"):
        opt.step([base[1:]])
    assert (p == 1).all()
    after = opt.state_dict()
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v)
    ok = fastopt.Adam([p.copy()], grad_dtype="bfloat16")
    ok.step([np.ones(5000, BF16)])


@pytest.mark.parametrize("dtype", [BF16, np.float16])
def test_clipping_and_skipping_read_16bit_gradients_as_their_values(dtype):
    """The global norm of 16-bit gradients is that of their exact float32 values (one
    decoding reduction, no float32 copy): a master-weight step with clipping equals the
    float32 step on the decoded gradients, scaled by the clip factor computed from the
    definition; a NaN among them skips the step and writes nothing."""
    rng = np.random.default_rng(12)
    shapes = [(3000,), (40,)]
    p16 = [rng.standard_normal(s).astype(dtype) for s in shapes]
    g16 = [(rng.standard_normal(s) * 3).astype(dtype) for s in shapes]
    opt = fastopt.SGD(p16, lr=0.5, master_weights=True, clip_norm=1.0, skip_nonfinite=True)
    wide = [g.astype(np.float32) for g in g16]
    norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in wide))
    factor = min(1.0, 1.0 / (norm + 1e-6))
    want = [(p.astype(np.float32) - np.float32(0.5) * (np.float32(factor) * g)).astype(dtype)
            for p, g in zip(p16, wide, strict=True)]
    opt.step(g16)
    for got, w in zip(p16, want, strict=True):
        np.testing.assert_array_equal(got.view(np.uint16), w.view(np.uint16))
    before = [p.copy() for p in p16]
    bad = [g.copy() for g in g16]
    bad[1][3] = np.nan
    opt.step(bad)
    assert opt.skipped_steps == 1
    for got, b in zip(p16, before, strict=True):
        np.testing.assert_array_equal(got.view(np.uint16), b.view(np.uint16))


# ------------------------------------------------------------------ the functional layer
def test_functional_calls_take_16bit_arrays_and_match_the_classes_to_the_bit():
    """bfloat16 state arrays, 16-bit parameters with a master copy, stochastic rounding and
    a trust-ratio rule, chosen by the arrays' dtypes: the same bits as the optimizer
    classes with the same options (the same random bits from (seed, step, position))."""
    from fastopt import functional as F

    rng = np.random.default_rng(14)
    n = 5000
    p0 = rng.standard_normal(n).astype(np.float32)
    gs = [(rng.standard_normal(n) * 0.1).astype(np.float32) for _ in range(3)]
    cases = []
    p1, m, v = p0.copy(), np.zeros(n, BF16), np.zeros(n, BF16)
    p2 = p0.copy()
    cases.append((lambda t, g: F.adam(p1, g, m, v, step=t, lr=1e-2),
                  fastopt.Adam([p2], lr=1e-2, state_dtype="bfloat16"), p1, p2, gs))
    q1 = p0.astype(BF16)
    master, m2, v2 = q1.astype(np.float32), np.zeros(n, np.float32), np.zeros(n, np.float32)
    q2 = q1.copy()
    g16 = [g.astype(BF16) for g in gs]
    cases.append((lambda t, g: F.adam(q1, g, m2, v2, step=t, lr=1e-2, master=master),
                  fastopt.Adam([q2], lr=1e-2, master_weights=True), q1, q2, g16))
    h1 = p0.astype(np.float16)
    h2 = h1.copy()
    g_half = [g.astype(np.float16) for g in gs]
    cases.append((lambda t, g: F.sgd(h1, g, step=t, lr=1e-3, stochastic_rounding=True,
                                     rounding_seed=7),
                  fastopt.SGD([h2], lr=1e-3, stochastic_rounding=True, rounding_seed=7),
                  h1, h2, g_half))
    l1, lm, lv = p0.copy(), np.zeros(n, BF16), np.zeros(n, BF16)
    l2 = p0.copy()
    cases.append((lambda t, g: F.lamb(l1, g, lm, lv, step=t, lr=1e-2),
                  fastopt.LAMB([l2], lr=1e-2, state_dtype="bfloat16"), l1, l2, gs))
    for call, opt, got, want, grads in cases:
        for t, g in enumerate(grads, 1):
            call(t, g)
            opt.step([g])
        assert not np.array_equal(got, p0.astype(got.dtype))  # it moved
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    # the state and the master copy, too
    np.testing.assert_array_equal(m.view(np.uint16), cases[0][1].state_dict()["state.m"][:n])
    np.testing.assert_array_equal(master, cases[1][1].state_dict()["master"][:n])


@pytest.mark.parametrize("args, kwargs, match", [
    ("f32", {"master": "f32"}, "master copy is for 16-bit"),
    ("bf16", {"master": "f32", "stochastic_rounding": True}, "pass one of them"),
    ("f32", {"stochastic_rounding": True}, "rounds 16-bit parameters"),
    ("bf16_q8", {}, "state_dtype='8bit'"),
    ("bf16", {"rounding_seed": -1}, "rounding_seed"),
    ("bf16_alias", {}, "shares memory"),
])
def test_functional_precision_errors_write_nothing(args, kwargs, match):
    from fastopt import functional as F

    n = 300
    p = np.ones(n, BF16 if args.startswith("bf16") else np.float32)
    g = np.full(n, 0.5, np.float32)
    m = np.zeros(n, np.uint8 if args == "bf16_q8" else BF16)
    v = m[::-1][::-1] if args == "bf16_alias" else np.zeros(n, m.dtype)
    kwargs = {k: (np.zeros(n, np.float32) if val == "f32" else val) for k, val in kwargs.items()}
    before = [a.copy() for a in (p, m, v)]
    with pytest.raises((TypeError, ValueError), match=match):
        F.adam(p, g, m, v, step=1, **kwargs)
    for a, b in zip((p, m, v), before, strict=True):
        np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def test_flatparams_run_of_arrays_gets_state_views_of_its_length():
    """A FlatParams group of neighbouring arrays steps as one run: its kernel's state views
    span the run (they once spanned its first array only, and the kernel wrote past
    them), and the run's state matches the arrays stepped one by one."""
    shapes = {"a": (100,), "b": (50,), "c": (7,)}
    flat = fastopt.FlatParams(shapes)
    rng = np.random.default_rng(3)
    flat.data[:] = rng.standard_normal(flat.data.size).astype(np.float32)
    flat.grad[:] = rng.standard_normal(flat.data.size).astype(np.float32)
    apart = [flat[n].copy() for n in shapes]
    opt = fastopt.Adam(flat, lr=0.1, state_dtype="bfloat16")
    for launchers in opt._precision_launchers:
        for *_, p, _master, st, _am, _pos, _first in launchers:
            assert all(s.size == p.size for s in st)
    ref = fastopt.Adam(apart, lr=0.1, state_dtype="bfloat16")
    for _ in range(3):
        opt.step()
        ref.step([flat.grads[n].copy() for n in shapes])
    for name, p in zip(shapes, apart, strict=True):
        np.testing.assert_array_equal(flat[name], p)


# ------------------------------------------------------------------ 8-bit state, functional
@pytest.mark.parametrize("name, options, state_dtype, param", [
    ("Adam", {"lr": 1e-2}, "8bit", "float32"),
    ("RMSprop", {"lr": 1e-3, "centered": True}, "int8", "float32"),
    ("LAMB", {"lr": 1e-2}, "8bit", "float32"),
    ("Adam", {"lr": 1e-2}, "fp8", "bfloat16"),
])
def test_functional_8bit_state_matches_the_classes_to_the_bit(name, options, state_dtype,
                                                               param):
    """init_state's QuantizedState arrays (and float32 arrays below min_8bit_size) stepped
    through the functional call: the same parameters, codes and block maxima as the class
    with the same state_dtype, over a list of a 2-D array with a partial last block and a
    small one. bfloat16 parameters: with a float32 master copy, as master_weights=True."""
    from fastopt import functional as F

    fn = getattr(F, name.lower())
    rng = np.random.default_rng(21)
    shapes = [(97, 61), (300,)]
    dt = BF16 if param == "bfloat16" else np.float32
    p0 = [rng.standard_normal(s).astype(dt) for s in shapes]
    grads = [[(rng.standard_normal(s) * 0.1).astype(np.float32) for s in shapes]
             for _ in range(4)]
    got = [a.copy() for a in p0]
    state = F.init_state(fn, got, state_dtype=state_dtype, **options)
    kinds = {k: [type(a).__name__ for a in v] for k, v in state.items()}
    assert all(v == ["QuantizedState", "ndarray"] for v in kinds.values()), kinds
    extra = {}
    if param == "bfloat16":
        extra = {"master": [a.astype(np.float32) for a in got], "grad_dtype": np.float32}
    want = [a.copy() for a in p0]
    opt = getattr(fastopt, name)(want, state_dtype=state_dtype, **options,
                                 **({"master_weights": True, "grad_dtype": np.float32}
                                    if param == "bfloat16" else {}))
    extra.pop("grad_dtype", None)
    for t, gs in enumerate(grads, 1):
        fn(got, gs, step=t, **options, **state, **extra)
        opt.step(gs)
    for a, b, a0 in zip(got, want, p0, strict=True):
        assert not np.array_equal(a, a0)  # it moved
        np.testing.assert_array_equal(a.view(np.uint16 if param == "bfloat16" else np.uint32),
                                      b.view(np.uint16 if param == "bfloat16" else np.uint32))
    sd = opt.state_dict()
    n = p0[0].size
    for k, arrays in state.items():
        q = arrays[0]
        np.testing.assert_array_equal(q.codes.reshape(-1), sd[f"state.{k}.codes"][:n])
        np.testing.assert_array_equal(q.absmax, sd[f"state.{k}.absmax"][:q.absmax.size])
        np.testing.assert_array_equal(q.values().reshape(-1), opt.state[0][k].reshape(-1))


@pytest.mark.parametrize("book", ["e4m3", "e5m2", "dynamic_signed", "dynamic_unsigned"])
def test_quantized_state_is_the_blockwise_definition(book):
    """QuantizedState.from_values and values() against the NumPy definitions (block
    maxima, nearest code), on a 2-D array whose size leaves a partial last block; then one
    functional Momentum step on it against decode → step in float32 → encode."""
    from fastopt import functional as F

    rng = np.random.default_rng(5)
    x = (rng.standard_normal((33, 40)) * 10.0 ** rng.uniform(-5, 1, (33, 40))).astype(
        np.float32)
    if book == "dynamic_unsigned":
        x = np.abs(x)
    q = F.QuantizedState.from_values(x, book)
    codes, amax = _ref_quantize(x.reshape(-1), book)
    np.testing.assert_array_equal(q.absmax, amax)
    np.testing.assert_array_equal(q.codes.reshape(-1), codes)
    # a·code/largest and a/largest·code: an ulp apart at most
    np.testing.assert_allclose(q.values().reshape(-1), _ref_dequantize(codes, amax, book),
                               rtol=2.4e-7, atol=0)
    assert q.shape == x.shape and q.nbytes == x.size + 4 * amax.size
    if book == "dynamic_unsigned":
        return  # momentum's velocity takes both signs (refused below)
    p = rng.standard_normal(x.shape).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    want_v = np.float32(0.9) * _ref_dequantize(codes, amax, book).reshape(x.shape) \
        + np.float32(0.1) * g
    want_p = p - want_v
    F.momentum(p, g, q, step=1, lr=0.1, momentum=0.9)
    want_codes, want_amax = _ref_quantize(want_v.astype(np.float32).reshape(-1), book)
    np.testing.assert_allclose(q.absmax, want_amax, rtol=2e-7)
    got = q.codes.reshape(-1).astype(int)
    assert np.abs(got - want_codes).max() <= 1 and (got == want_codes).mean() > 0.999
    np.testing.assert_allclose(p, want_p, rtol=2e-6, atol=1e-7)


def _bad_8bit(case: str):
    """(call, arrays that must not change, error match) for one bad functional 8-bit call."""
    from fastopt import functional as F

    n = 1000
    p = np.ones(n, np.float32)
    g = np.full(n, 0.5, np.float32)
    st = F.init_state("adam", p, state_dtype="8bit", min_8bit_size=0)
    m, v = st["m"], st["v"]
    kw = {"step": 1, "lr": 0.1}
    if case == "mixed":
        return lambda: F.adam(p, g, m, np.zeros(n, np.float32), **kw), (p, m.codes), \
            "some are QuantizedState"
    if case == "unsigned_book":
        bad = F.QuantizedState.full(n, 0.0, "dynamic_unsigned")
        return lambda: F.adam(p, g, bad, v, **kw), (p, bad.codes, v.codes), "both signs"
    if case == "absmax_size":
        bad = F.QuantizedState(m.codes, np.zeros(2, np.float32), "e4m3")
        return lambda: F.adam(p, g, bad, v, **kw), (p, m.codes, v.codes), "block maxima"
    if case == "codes_dtype":
        bad = F.QuantizedState(np.zeros(n, np.int8), m.absmax, "e4m3")
        return lambda: F.adam(p, g, bad, v, **kw), (p, v.codes, m.absmax), "uint8"
    if case == "float64":
        p64 = np.ones(n)
        return lambda: F.adam(p64, g.astype(np.float64), m, v, **kw), (p64, m.codes), \
            "float64"
    if case == "overlap":
        shared = F.QuantizedState(m.codes, v.absmax, "e4m3")
        return lambda: F.adam(p, g, shared, v, **kw), (p, m.codes, v.codes, v.absmax), \
            "shares memory"
    if case == "read_only":
        m.codes.flags.writeable = False
        return lambda: F.adam(p, g, m, v, **kw), (p, v.codes), "writable"
    if case == "asgd":
        return lambda: F.init_state("asgd", p, state_dtype="8bit"), (p,), "8 bits"
    if case == "unknown_hp":
        return lambda: F.init_state("adam", p, centred=True), (p,), "unknown hyperparameters"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["mixed", "unsigned_book", "absmax_size", "codes_dtype",
                                  "float64", "overlap", "read_only", "asgd", "unknown_hp"])
def test_functional_8bit_errors_write_nothing(case):
    call, arrays, match = _bad_8bit(case)
    before = [a.copy() for a in arrays]
    with pytest.raises((TypeError, ValueError), match=match):
        call()
    for a, b in zip(arrays, before, strict=True):
        np.testing.assert_array_equal(a, b)


class _TorchLikeArray:
    """A GPU array as torch hands one over: a dtype object NumPy cannot interpret, the
    element type in ``__cuda_array_interface__``."""

    def __init__(self, typestr: str) -> None:
        self.dtype = object()
        self.shape = (3,)
        self.__cuda_array_interface__ = {"typestr": typestr, "shape": (3,), "version": 3,
                                         "data": (0, False), "strides": None}


def test_the_precision_probe_reads_dtypes_numpy_cannot():
    """Every functional call first asks whether it takes the precision path; for torch CUDA
    tensors it raised TypeError (np.dtype(torch.float32)), so no functional call could
    step them. It reads the CUDA array interface's type instead."""
    from fastopt import functional_precision as FP

    f32, f16 = _TorchLikeArray("<f4"), _TorchLikeArray("<f2")
    assert FP.wanted([f32], [f32], [(f32, f32)], None) is False
    assert FP.wanted([f16], [f32], [()], None) is True
    assert FP.wanted([object()], [f32], [()], None) is False  # refused later, clearly

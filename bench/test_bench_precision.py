"""Adam with fewer bytes per parameter (bfloat16 and 8-bit state, 16-bit parameters) at
1e6 and 1e7: each storage choice in a group with the kernel moving the same bytes, the
codec floor (fastopt's kernel for that storage with one root and one division for Adam)
and, for 8-bit state, bitsandbytes' CPU Adam8bit when installed."""

import numpy as np
import pytest

from fastopt import optim
from fastopt.bench import precision as pb
from fastopt.bench.roofline import narrow_kernel
from fastopt.precision.storage import as_kernel_array

CASES = [(label, pname, state, n) for label, pname, state in pb.CASES[1:]
         for n in (10**6, 10**7)]
IDS = [f"{label.replace(' ', '_').replace(',', '')}-{n:.0e}" for label, _, _, n in CASES]


def _group(label, n):
    return f"Adam-{label}-{n:.0e}"


@pytest.mark.parametrize("label,pname,state,n", CASES, ids=IDS)
def test_fastopt(benchmark, label, pname, state, n):
    pdt, _, _ = pb._storage(n, pname, state)
    p = np.full(n, 0.1, pdt)  # where a step of lr=1e-3 moves a 16-bit value
    g = np.full(n, 0.01, pdt)
    opt = optim.Adam([p], state_dtype=state, master_weights=pdt.itemsize == 2 and not state)
    benchmark.group = _group(label, n)
    benchmark(opt.step, [g])
    assert np.isfinite(p.astype(np.float32)).all() and (p != pdt.type(0.1)).all()


@pytest.mark.parametrize("label,pname,state,n", CASES, ids=IDS)
def test_same_traffic(benchmark, label, pname, state, n):
    pdt, sdt, nbytes = pb._storage(n, pname, state)
    master = pdt.itemsize == 2 and not state
    st = (np.zeros(n, sdt), np.zeros(n, sdt)) + ((np.zeros(n, np.float32),) if master else ())
    kernel = narrow_kernel(len(st), pdt, sdt, parallel=pb._parallel(nbytes))
    p, g = as_kernel_array(np.ones(n, pdt)), as_kernel_array(np.full(n, 0.01, pdt))
    benchmark.group = _group(label, n)
    benchmark(kernel, p, g, st)


@pytest.mark.parametrize("label,pname,state,n", CASES, ids=IDS)
def test_codec_floor(benchmark, label, pname, state, n):
    benchmark.group = _group(label, n)
    benchmark(pb._floor_call(n, pname, state))


EIGHT = [c for c in CASES if c[2] in ("fp8", "int8") and c[3] == 10**6]


@pytest.mark.parametrize("label,pname,state,n", EIGHT, ids=[f"{c[2]}-{c[3]:.0e}" for c in EIGHT])
def test_bitsandbytes_adam8bit(benchmark, label, pname, state, n):
    bnb = pytest.importorskip("bitsandbytes")
    torch = pytest.importorskip("torch")
    tp = torch.ones(n)
    tp.grad = torch.full((n,), 0.01)
    opt = bnb.optim.Adam8bit([tp], lr=1e-3, min_8bit_size=0)
    benchmark.group = _group(label, n)
    benchmark(opt.step)

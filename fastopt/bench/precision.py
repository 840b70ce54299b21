"""Adam with fewer bytes per parameter: bfloat16 and 8-bit state, 16-bit parameters.

Each row times fastopt's Adam step storing its state (and parameters) one way against
yardsticks run interleaved in the same process:

- **same traffic**: a kernel that reads and writes exactly the bytes the step moves
  (parameters, gradients, state at their storage widths) with trivial arithmetic
  (:func:`fastopt.bench.roofline.narrow_kernel`): the memory limit;
- **codec floor**: fastopt's own precision kernel with Adam replaced by trivial arithmetic
  plus one square root and one division per value (the divider floor's work): the same
  decoding, block maxima, encoding and rounding. What Adam cannot get below once
  the format's arithmetic, not memory, is the limit (the floor measured as the divider
  floor is for float32);
- fastopt's float32-state Adam on the same values (``x fp32``), and, where installed,
  bitsandbytes' CPU ``Adam8bit`` (``x bnb``, its 8-bit rows) and torch's fused float32 Adam.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import optim
from .. import parallel as fastopt_threads
from .._jit import device
from ..drivers import cpu_precision
from ..precision import quantized
from ..precision.storage import as_kernel_array
from . import torch_ref
from .roofline import divider_kernel, narrow_kernel, roofline_kernel

#: (label, parameter dtype, state_dtype) of each row.
CASES: list[tuple[str, str, str | None]] = [
    ("fp32 state", "float32", None),
    ("bf16 state", "float32", "bfloat16"),
    ("fp8 state", "float32", "fp8"),
    ("int8 state (bnb map)", "float32", "int8"),
    ("bf16 p, g, state", "bfloat16", "bfloat16"),
    ("fp16 p, g + master", "float16", None),
]


@device
def codec_floor_rule(p, g, s, h):
    """The divider floor's work inside a precision kernel: one √ and one ÷ per value, the
    state updated by adds (a rule's signature: ``(p, g, state, constants)``)."""
    m, v = s
    m = m + g
    v = v + g * g
    return p - m / math.sqrt(abs(v) + h[0]), (m, v)


@dataclass
class PrecisionRow:
    label: str
    n: int
    bytes_per_value: float
    fastopt_ms: float
    traffic_ms: float
    floor_ms: float
    fp32_ms: float
    bnb_ms: float | None = None
    torch_ms: float | None = None
    #: another process used the cores, or times spread widely (as the main table's ~)
    noisy: bool = False

    @property
    def pct_traffic(self) -> float:
        return 100.0 * self.traffic_ms / self.fastopt_ms

    @property
    def pct_floor(self) -> float:
        return 100.0 * self.floor_ms / self.fastopt_ms

    @property
    def x_fp32(self) -> float:
        return self.fp32_ms / self.fastopt_ms

    @property
    def x_bnb(self) -> float | None:
        return None if self.bnb_ms is None else self.bnb_ms / self.fastopt_ms


def _half(name: str) -> np.dtype:
    if name == "float16":
        return np.dtype(np.float16)
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


def _medians(fns: dict[str, Callable[[], None]], repeats: int, budget_s: float
             ) -> tuple[dict[str, float], bool]:
    """Interleaved medians (measured again once if another process used the cores), and
    whether the run is to be distrusted, as the main table marks its rows."""
    from .load import BUSY_CORES, measured
    from .run import NOISY_SPREAD, _interleaved_medians

    spread: dict[str, float] = {}
    med, others = measured(lambda: _interleaved_medians(fns, repeats, budget_s, inner=3,
                                                        spread=spread))
    noisy = max(spread.values()) > NOISY_SPREAD or (others is not None and others > BUSY_CORES)
    return med, noisy


def _storage(n: int, pname: str, state: str | None) -> tuple[np.dtype, type, int]:
    """(parameter dtype, state storage dtype, bytes a step moves) of a row."""
    pdt = np.dtype(np.float32) if pname == "float32" else _half(pname)
    eight = state in ("fp8", "int8")
    sdt = np.uint8 if eight else (np.uint16 if state == "bfloat16" else np.float32)
    master = pdt.itemsize == 2 and state is None
    nbytes = n * (3 * pdt.itemsize + 2 * 2 * np.dtype(sdt).itemsize + (8 if master else 0))
    if eight:  # each block's maximum, read and written, per state array
        nbytes += 2 * 2 * 4 * quantized.blocks(n)
    return pdt, sdt, nbytes


def _floor_call(n: int, pname: str, state: str | None) -> Callable[[], None]:
    """The codec floor of a 16-bit or low-precision-state row: fastopt's kernel for that
    storage with :func:`codec_floor_rule` for Adam."""
    pdt, sdt, nbytes = _storage(n, pname, state)
    # real values (1.0 and 0.01): uint16 ones read as bfloat16 are subnormal floats, whose
    # arithmetic takes microcode assists
    pk = as_kernel_array(np.ones(n, pdt))
    gk = as_kernel_array(np.full(n, 0.01, pdt))
    pfmt = "plain" if pdt.itemsize == 4 else pname
    eight = state in ("fp8", "int8")
    master = pdt.itemsize == 2 and state is None
    books = quantized.BOOKS["fp8" if state == "fp8" else "dynamic"] if eight else None
    sfmt = "bfloat16" if state == "bfloat16" else "plain"
    st = (np.zeros(n, sdt), np.zeros(n, sdt))
    par = _parallel(nbytes)
    kernel = cpu_precision.precision_kernel(codec_floor_rule, pfmt, pfmt, sfmt, 2, master,
                                            False, par, books)
    h = (np.float32(1e-8),)
    ct = np.empty(0, np.float32)
    rnd = (1, 2, 0, 0)
    mst = np.ones(n, np.float32) if master else None
    if eight:
        am = (np.ones(quantized.blocks(n), np.float32), np.ones(quantized.blocks(n), np.float32))
        qt = quantized.codec_tables()
        return lambda: kernel(pk, gk, st, am, qt, mst, h, None, None, None, None, rnd, ct)
    return lambda: kernel(pk, gk, st, mst, h, None, None, None, None, rnd, ct)


def _parallel(nbytes: int) -> bool:
    """Whether yardsticks run parallel: where fastopt could choose its parallel kernel."""
    return (fastopt_threads.get_num_threads() > 1
            and nbytes >= fastopt_threads.PARALLEL_MIN_BYTES)


def _bnb_ms(n: int, calls: int) -> float | None:
    """Median ms of bitsandbytes' CPU ``Adam8bit`` step at ``n``, or None without it."""
    try:
        import bitsandbytes as bnb
        import torch
    except ImportError:
        return None
    tp = torch.ones(n)
    tp.grad = torch.full((n,), 0.01)
    opt = bnb.optim.Adam8bit([tp], lr=1e-3, min_8bit_size=0)
    opt.step()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def bench_size(n: int, repeats: int = 6, budget_s: float = 2.0, with_torch: bool = True,
               with_bnb: bool = True) -> list[PrecisionRow]:
    """Every :data:`CASES` row at ``n`` values, interleaved in one run."""
    rng = np.random.default_rng(0)
    g32 = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    fns: dict[str, Callable[[], None]] = {}
    bytes_of: dict[str, int] = {}
    for label, pname, state in CASES:
        pdt, sdt, nbytes = _storage(n, pname, state)
        bytes_of[label] = nbytes
        par = _parallel(nbytes)
        p, g = np.ones(n, pdt), g32.astype(pdt)
        master = pdt.itemsize == 2 and state is None
        opt = optim.Adam([p], lr=1e-3, state_dtype=state, master_weights=master)
        fns[label] = lambda opt=opt, g=g: opt.step([g])
        pk, gk = as_kernel_array(np.ones(n, pdt)), as_kernel_array(g.copy())
        st = (np.zeros(n, sdt), np.zeros(n, sdt)) + ((np.zeros(n, np.float32),) if master
                                                      else ())
        if pname == "float32" and state is None:  # the float32 kernels of the main table
            traffic, floor = roofline_kernel(2, parallel=par), divider_kernel(2, parallel=par)
            pf, sf = np.ones(n, np.float32), (np.zeros(n, np.float32), np.zeros(n, np.float32))
            fns[f"{label}|floor"] = lambda f=floor, sf=sf, pf=pf: f(pf, g32, sf)
        else:
            traffic = narrow_kernel(len(st), pdt, sdt, parallel=par)
            fns[f"{label}|floor"] = _floor_call(n, pname, state)
        fns[f"{label}|traffic"] = lambda t=traffic, st=st, pk=pk, gk=gk: t(pk, gk, st)
    if with_torch and torch_ref.available():
        fns["torch"], _ = torch_ref.make_step("Adam", np.ones(n, np.float32), g32.copy())
    med, noisy = _medians(fns, repeats, budget_s)
    bnb = _bnb_ms(n, 3 if n >= 10**7 else 7) if with_bnb else None
    rows = []
    for label, _, state in CASES:
        eight = state in ("fp8", "int8")
        rows.append(PrecisionRow(label, n, bytes_of[label] / n, med[label],
                                 med[f"{label}|traffic"], med[f"{label}|floor"],
                                 med["fp32 state"], bnb if eight else None,
                                 med.get("torch") if label == "fp32 state" else None, noisy))
    return rows


def format_table(rows: list[PrecisionRow]) -> str:
    head = (f"{'Adam':<22}{'n':>8}{'B/value':>9}{'ms':>9}{'% traffic':>11}"
            f"{'% codec floor':>15}{'x fp32':>8}{'x bnb':>8}{'x torch':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        bnb = f"{r.x_bnb:>8.1f}" if r.x_bnb else f"{'-':>8}"
        tor = f"{r.torch_ms / r.fastopt_ms:>9.2f}" if r.torch_ms else f"{'-':>9}"
        name = r.label + ("~" if r.noisy else "")
        lines.append(f"{name:<22}{r.n:>8.0e}{r.bytes_per_value:>9.1f}{r.fastopt_ms:>9.2f}"
                     f"{r.pct_traffic:>10.0f}%{r.pct_floor:>14.0f}%{r.x_fp32:>8.2f}{bnb}{tor}")
    return "\n".join(lines)


NOTE = ("~: as in the table above, do not trust the row's ratios; % traffic: a kernel "
        "moving the same bytes with trivial arithmetic / fastopt; "
        "% codec floor: fastopt's kernel for that storage with Adam replaced by one root and "
        "one division per value (the same decoding, block maxima, encoding, rounding) / "
        "fastopt; x fp32: fastopt's float32-state Adam time / this row's; x bnb: "
        "bitsandbytes' CPU Adam8bit / this row's; x torch: torch's fused float32 Adam")

"""An optimizer's precision: 16-bit parameters and gradients, master weights, stochastic
rounding, and bfloat16 or 8-bit state (``docs/precision.md``).

:func:`plan` checks the options against the parameters and says, once, how each buffer
is stored. :class:`Storage` holds the state in those formats, per parameter array ("unit":
an array of a list, or of a FlatParams), and launches the precision kernels of
:mod:`fastopt.drivers.cpu_precision`; it converts a checkpoint written in another format.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .. import parallel
from .._checks import half_dtypes
from .._memory import ALIGNMENT
from ..drivers import cpu, cpu_precision
from ..precision import quantized
from ..precision.host import bf16_decode, bf16_round_nearest
from ..precision.storage import as_kernel_array
from ..rules.transforms import direction_then_rule

#: The names ``state_dtype`` takes (None: the parameters' compute dtype).
STATE_DTYPES = ("float32", "bfloat16", "int8", "fp8", "8bit")
DEFAULT_8BIT, EIGHT_BIT = quantized.DEFAULT_8BIT, quantized.EIGHT_BIT
HALF = ("float16", "bfloat16")


@dataclass(frozen=True)
class Precision:
    """How an optimizer stores things: ``param``/``grad`` dtype names, ``state`` one of
    ``"plain"`` (the compute dtype), ``"bfloat16"``, ``"int8"``, ``"fp8"``."""

    param: str
    grad: str
    state: str = "plain"
    master: bool = False
    stochastic: bool = False
    min_8bit_size: int = 4096
    seed: int = 0

    @property
    def active(self) -> bool:
        """Whether any of it differs from a plain float32/float64 step."""
        return (self.param in HALF or self.grad != self.param or self.state != "plain"
                or self.master or self.stochastic)

    @property
    def compute(self) -> np.dtype:
        return np.dtype(np.float64 if self.param == "float64" else np.float32)

    @property
    def state_dtype(self) -> str:
        """The ``state_dtype`` the user would pass for this storage."""
        return self.compute.name if self.state == "plain" else self.state

    def options(self) -> dict[str, Any]:
        """The constructor keywords that make this storage."""
        return {"state_dtype": self.state_dtype, "master_weights": self.master,
                "stochastic_rounding": self.stochastic, "grad_dtype": self.grad,
                "min_8bit_size": self.min_8bit_size, "rounding_seed": self.seed}


def _name(dtype: Any) -> str:
    return np.dtype(dtype).name


def plan(param_dtype: np.dtype, *, state_dtype: Any, master_weights: Any,
         stochastic_rounding: Any, grad_dtype: Any, min_8bit_size: Any, rounding_seed: Any,
         rule_name: str, signs: tuple[str, ...], on_device: bool) -> Precision:
    """The checked :class:`Precision` of an optimizer over parameters of ``param_dtype``
    whose rule keeps state of ``signs`` (``State.sign``), or a ValueError that says what to
    change."""
    param = _name(param_dtype)
    for name, value in (("master_weights", master_weights),
                        ("stochastic_rounding", stochastic_rounding)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, (int, np.integer)) \
            or min_8bit_size < 0:
        raise ValueError(f"min_8bit_size must be an int >= 0, got {min_8bit_size!r}")
    if isinstance(rounding_seed, bool) or not isinstance(rounding_seed, (int, np.integer)) \
            or not 0 <= rounding_seed < 2**64:
        raise ValueError(f"rounding_seed must be an int in [0, 2**64), got {rounding_seed!r}")
    if state_dtype is None:
        state = "plain"
    else:
        try:
            state = _name(state_dtype) if not isinstance(state_dtype, str) else state_dtype
        except TypeError:
            state = repr(state_dtype)
        if state not in STATE_DTYPES and state != "float64":
            raise ValueError(f"state_dtype must be None, 'float32', 'bfloat16', '8bit' (the "
                             f"faster 8-bit format, now 'fp8'), 'int8' (8-bit, the dynamic "
                             f"map of bitsandbytes) or 'fp8' (8-bit floats, E4M3/E5M2), got "
                             f"{state_dtype!r}")
        state = DEFAULT_8BIT if state == "8bit" else state
        if state == np.dtype(np.float64 if param == "float64" else np.float32).name:
            state = "plain"
        elif state in ("float32", "float64"):
            raise ValueError(f"state_dtype={state!r} with {param} parameters: their state is "
                             f"{'float64' if param == 'float64' else 'float32'}; leave "
                             "state_dtype=None")
    if state != "plain" and param == "float64":
        raise ValueError(f"state_dtype={state!r} needs float32 or 16-bit parameters; float64 "
                         "parameters keep float64 state")
    grad = param if grad_dtype is None else _name(grad_dtype) if not isinstance(
        grad_dtype, str) else grad_dtype
    if grad != param and not ({grad, param} <= {"float32", *HALF}):
        raise ValueError(f"grad_dtype={grad!r} with {param} parameters: gradients may be "
                         "float32, float16 or bfloat16 for float32 or 16-bit parameters, "
                         "and must match float64 parameters")
    if param in HALF or grad in HALF:
        names = [d.name for d in half_dtypes()]
        for what in {param, grad} & set(HALF):
            if what not in names:
                raise ValueError(f"{what} needs ml_dtypes: pip install 'fastopt[bf16]'")
    if master_weights and param not in HALF:
        raise ValueError(f"master_weights=True keeps a float32 copy of 16-bit parameters; "
                         f"these are {param}")
    if stochastic_rounding and param not in HALF:
        raise ValueError(f"stochastic_rounding=True rounds 16-bit parameters; these are {param}"
                         " (bfloat16 state is always rounded stochastically)")
    if stochastic_rounding and master_weights:
        raise ValueError("stochastic_rounding=True and master_weights=True: with a float32 "
                         "master copy the stored parameters are rounded from it to nearest, "
                         "and nothing is lost; pass one of them")
    out = Precision(param, grad, state, master_weights, stochastic_rounding,
                    int(min_8bit_size), int(rounding_seed))
    if not out.active:
        return out
    if on_device and "bfloat16" in (param, grad):
        raise ValueError("bfloat16 parameters and gradients run on the CPU: GPU arrays have "
                         "no bfloat16 type to hand them over in (torch does not export "
                         "one); on a GPU use float16 or float32 (state_dtype='bfloat16' "
                         "works there)")
    if state in EIGHT_BIT and "exact" in signs:
        raise ValueError(f"{rule_name}'s state cannot be held in 8 bits (it keeps an "
                         "average of the parameters); use state_dtype='bfloat16'")
    return out


def _kernel_format(name: str, compute: np.dtype) -> str:
    return "plain" if name == compute.name else name


def sumsq_kernels(grad: str) -> tuple[Any, Any]:
    """The (serial, parallel) norm reduction over gradients stored as 16-bit ``grad``."""
    return cpu_precision.sumsq_kernels(grad)


def _kernel_dtype(name: str, compute: np.dtype) -> np.dtype:
    """The dtype a kernel sees for arrays stored as ``name``: 16-bit ones as uint16."""
    return np.dtype(np.uint16) if name in HALF else np.dtype(compute)


@dataclass(frozen=True)
class StoredLayout:
    """Where each unit's state lies in an optimizer's stored buffers, without the
    buffers: ``specs`` gives each buffer's ``(size, dtype)`` by its state-dict key;
    ``kinds``, ``offsets``, ``block_offsets``: per unit, as :class:`Storage` has them."""

    units: list[tuple[int, int]]
    specs: dict[str, tuple[int, np.dtype]]
    eight: bool
    kinds: list[str]
    offsets: list[int]
    block_offsets: list[int]

    def slices(self, u: int, start: int, n: int) -> dict[str, slice]:
        """Per buffer key, the stored values of unit ``u``'s values ``start`` to
        ``start + n`` (8-bit: ``start`` a multiple of the quantization block)."""
        lo = self.units[u][0]
        out = {}
        for key in self.specs:
            if key == "master" or not self.eight:
                out[key] = slice(lo + start, lo + start + n)
                continue
            a = self.offsets[u] + start
            q8 = self.kinds[u] == "q8"
            if key.endswith(".absmax"):
                if q8:
                    b = self.block_offsets[u] + start // quantized.QBLOCK
                    out[key] = slice(b, b + quantized.blocks(n))
            elif q8 == key.endswith(".codes"):
                out[key] = slice(a, a + n)
        return out


def stored_layout(prec: Precision | None, names: tuple[str, ...] | list[str],
                  units: list[tuple[int, int]], layout_size: int, dtype: Any,
                  whole: list[int] | None = None) -> StoredLayout:
    """The :class:`StoredLayout` of an optimizer's state: ``prec`` None for a plain one
    (``dtype``: its parameters'), else as its :class:`Storage` keeps it (``whole``: as
    there)."""
    step = ALIGNMENT // 4
    eight = prec is not None and prec.state in EIGHT_BIT and bool(names)
    kinds: list[str] = []
    offsets: list[int] = []
    block_offsets: list[int] = []
    packed = {"q8": 0, "flat": 0}
    blocks = 0
    # ``whole``: the size of the parameter array each unit is (a shard's units are pieces
    # of them): an array at least ``min_8bit_size`` long is 8-bit in every piece
    for (lo, n), size in zip(units, whole or [n for _, n in units], strict=True):
        kind = "q8" if eight and size >= prec.min_8bit_size else "flat"
        kinds.append(kind)
        if not eight:
            offsets.append(lo)
            block_offsets.append(0)
            continue
        offsets.append(packed[kind])
        packed[kind] += -(-n // step) * step
        block_offsets.append(blocks)
        blocks += quantized.blocks(n) if kind == "q8" else 0
    specs: dict[str, tuple[int, np.dtype]] = {}
    if prec is None:
        specs = {f"state.{name}": (layout_size, np.dtype(dtype)) for name in names}
    elif not eight:
        dt = np.dtype(np.uint16) if prec.state == "bfloat16" else np.dtype(prec.compute)
        specs = {f"state.{name}": (layout_size, dt) for name in names}
    else:
        for name in names:
            specs[f"state.{name}"] = (packed["flat"], np.dtype(np.float32))
            specs[f"state.{name}.codes"] = (packed["q8"], np.dtype(np.uint8))
            specs[f"state.{name}.absmax"] = (blocks, np.dtype(np.float32))
    if prec is not None and prec.master:
        specs["master"] = (layout_size, np.dtype(np.float32))
    return StoredLayout(units, specs, eight, kinds, offsets, block_offsets)


class Storage:
    """The state of a precision optimizer, per unit (parameter array): plain or bfloat16
    buffers over the optimizer's layout, or for 8-bit state, codes and block maxima of the
    units at least ``min_8bit_size`` long and float32 buffers of the others, each packed
    in unit order. Also the float32 master copy."""

    def __init__(self, prec: Precision, names: tuple[str, ...], signs: tuple[str, ...],
                 units: list[tuple[int, int]], layout_size: int,
                 initial: dict[str, float], be: Any = cpu,
                 whole: list[int] | None = None,
                 fill: list[tuple[int, int, int]] | None = None) -> None:
        """``fill``: the ``(unit, start, size)`` ranges that start at ``initial`` (default:
        every unit whole; a shard's pieces of a FlatParams run also hold the padding between
        arrays, which one process's units, the arrays, leave at 0)."""
        self.prec = prec
        self.be = be  # the driver whose memory holds the buffers (the CPU's or a GPU's)
        self.names = names
        self.signs = dict(zip(names, signs, strict=True))
        self.units = units
        self.layout_size = layout_size
        ct = prec.compute
        layout = stored_layout(prec, names, units, layout_size, ct, whole)
        self.eight = layout.eight
        self.kind: list[str] = layout.kinds  # per unit: "q8" or "flat"
        self.offsets: list[int] = layout.offsets  # per unit: offset in its packed buffer
        self.block_offsets: list[int] = layout.block_offsets
        self.buffers: dict[str, np.ndarray] = {
            key: be.zeros(size, dt) for key, (size, dt) in layout.specs.items()}
        #: the kernels' compute-dtype marker and the dynamic maps' tables, made once (on
        #: the device for a GPU's kernels)
        self.ct = np.empty(0, ct) if not be.ON_DEVICE else be.zeros(1, ct)
        self.qt = quantized.codec_tables() if self.eight else ()
        if be.ON_DEVICE and self.qt:
            self.qt = tuple(be.zeros(a.size, a.dtype) for a in self.qt)
            for dst, src in zip(self.qt, quantized.codec_tables(), strict=True):
                be.copy_from_host(dst, src)
        self.master = self.buffers.get("master")
        for name in names:
            if initial.get(name):
                for u, start, n in fill if fill is not None else [
                        (u, 0, n) for u, (_, n) in enumerate(units)]:
                    self.write_unit(name, u, np.full(n, initial[name], np.float32), start)

    # -------------------------------------------------------------- per-unit views
    def book(self, name: str) -> str:
        return quantized.book_for(self.prec.state, self.signs[name])

    def views(self, u: int, n: int | None = None) -> tuple[str, tuple, tuple]:
        """``(kind, state arrays, block maxima)`` of unit ``u`` for its kernel; ``n``: the
        values its segment steps (a FlatParams segment over several arrays, which 8-bit
        state never has, runs past its first unit)."""
        lo, size = self.units[u]
        n = size if n is None else n
        off = self.offsets[u]
        if self.kind[u] == "q8":
            b0, nb = self.block_offsets[u], quantized.blocks(n)
            return ("q8", tuple(self.buffers[f"state.{m}.codes"][off:off + n] for m in self.names),
                    tuple(self.buffers[f"state.{m}.absmax"][b0:b0 + nb] for m in self.names))
        return ("flat", tuple(self.buffers[f"state.{m}"][off:off + n] for m in self.names), ())

    def read_unit(self, name: str, u: int) -> np.ndarray:
        """Unit ``u``'s state ``name`` as float32 (float64 for float64 parameters)."""
        lo, n = self.units[u]
        off = self.offsets[u]
        host = self.be.to_host
        if self.kind[u] == "q8":
            b0 = self.block_offsets[u]
            return quantized.dequantize(host(self.buffers[f"state.{name}.codes"][off:off + n]),
                                        host(self.buffers[f"state.{name}.absmax"][
                                            b0:b0 + quantized.blocks(n)]), self.book(name))
        a = host(self.buffers[f"state.{name}"][off:off + n])
        return bf16_decode(a) if self.prec.state == "bfloat16" else a.copy()

    def write_unit(self, name: str, u: int, x: np.ndarray, start: int = 0) -> None:
        """Set unit ``u``'s state ``name`` from float values (rounded to nearest): all of
        it, or (not 8-bit) its values from ``start`` on, as many as ``x`` has."""
        n = x.size
        off = self.offsets[u] + start
        put = self.be.copy_from_host
        if self.kind[u] == "q8":
            assert start == 0 and n == self.units[u][1], "8-bit units are written whole"
            b0 = self.block_offsets[u]
            codes, absmax = quantized.quantize(x, self.book(name))
            put(self.buffers[f"state.{name}.codes"][off:off + n], codes)
            put(self.buffers[f"state.{name}.absmax"][b0:b0 + quantized.blocks(n)], absmax)
        elif self.prec.state == "bfloat16":
            put(self.buffers[f"state.{name}"][off:off + n], bf16_round_nearest(x))
        else:
            put(self.buffers[f"state.{name}"][off:off + n],
                np.asarray(x, self.buffers[f"state.{name}"].dtype))

    def nbytes(self) -> int:
        return sum(int(b.size) * np.dtype(b.dtype).itemsize for b in self.buffers.values())

    def to_host(self) -> dict[str, np.ndarray]:
        """Copies of the stored buffers (codes, block maxima, master copy) on the host."""
        return {k: self.be.to_host(v) for k, v in self.buffers.items()}

    def from_host(self, arrays: dict[str, np.ndarray]) -> None:
        """Set the stored buffers from host arrays of their dtypes and shapes."""
        for key, buf in self.buffers.items():
            self.be.copy_from_host(buf, np.ascontiguousarray(arrays[key]))

    # -------------------------------------------------------------- kernels
    def launchers(self, rule, p_arrays: list[np.ndarray], unit_of_segment: list[int],
                  direction: Any = None, positions: list[int] | None = None) -> list:
        """Per segment ``(serial, parallel or None, Choice, bytes, p, master, state,
        absmax, position, first pass)``, where ``position`` (``positions``, default the
        unit's layout offset) is what noise and rounding count from. A trust-ratio rule
        (``direction``: its first pass) steps in two passes: the first sums the norms and
        writes nothing (``first pass``: its serial and parallel kernels, their Choice and a
        float64 workspace), the second is the whole step from the state before it
        (``rules.transforms.direction_then_rule``): each stored value rounded once."""
        prec = self.prec
        ct = prec.compute
        pfmt = _kernel_format(prec.param, ct)
        gfmt = _kernel_format(prec.grad, ct)
        if positions is None:
            positions = [self.units[u][0] for u in unit_of_segment]
        step_rule = rule if direction is None else direction_then_rule(rule, direction)
        if self.be.ON_DEVICE:
            return self._device_launchers(step_rule, p_arrays, unit_of_segment, pfmt, gfmt,
                                          positions, direction)
        out = []
        for p, u, pos in zip(p_arrays, unit_of_segment, positions, strict=True):
            lo, n = self.units[u][0], p.size
            kind, st, am = self.views(u, n)
            books = tuple(self.book(m) for m in self.names) if kind == "q8" else None
            sfmt = "bfloat16" if prec.state == "bfloat16" else ("q8" if kind == "q8" else "plain")

            def kernel(par: bool, books=books, sfmt=sfmt, st=st):
                return cpu_precision.precision_kernel(step_rule, pfmt, gfmt, sfmt, len(st),
                                                      prec.master, prec.stochastic, par,
                                                      books)
            nbytes = p.nbytes * 3 + sum(a.nbytes for a in st) * 2
            use_par = nbytes >= parallel.PARALLEL_MIN_BYTES
            master = self.master[lo:lo + n] if self.master is not None else None
            first = None
            if direction is not None:
                def first_pass(par: bool, books=books, sfmt=sfmt, st=st):
                    return cpu_precision.trust_pass_kernel(direction, pfmt, gfmt, sfmt, len(st),
                                                           prec.master, par, books)
                first = (first_pass(False), first_pass(True) if use_par else None,
                         parallel.Choice(), np.empty(2 * cpu.blocks(n), np.float64))
            out.append((kernel(False), kernel(True) if use_par else None, parallel.Choice(),
                        nbytes, as_kernel_array(p), master, st, am, pos, first))
        return out

    def _device_launchers(self, rule, p_arrays: list, unit_of_segment: list[int], pfmt: str,
                          gfmt: str, positions: list[int], direction: Any = None) -> list:
        """Per segment ``(kernel, 8-bit, p, master, state, absmax, layout offset, first
        pass)`` for the CUDA driver (:mod:`fastopt.drivers.cuda_precision`); ``rule`` the
        whole step of a trust-ratio rule, whose ``direction`` the first pass takes."""
        from ..drivers import cuda_precision

        prec = self.prec
        out = []
        for p, u, pos in zip(p_arrays, unit_of_segment, positions, strict=True):
            lo, n = self.units[u][0], p.size
            kind, st, am = self.views(u, n)
            books = tuple(self.book(m) for m in self.names) if kind == "q8" else None
            sfmt = "bfloat16" if prec.state == "bfloat16" else "plain"
            kern = cuda_precision.precision_kernel(rule, pfmt, gfmt, sfmt, len(st),
                                                   prec.master, prec.stochastic, books)
            first = None if direction is None else cuda_precision.trust_pass_kernel(
                direction, pfmt, gfmt, sfmt, len(st), prec.master, books)
            master = self.master[lo:lo + n] if self.master is not None else None
            out.append((kern, books is not None, as_kernel_array(self.be.flat_view(p)), master, st,
                        am, pos, first))
        return out

    def warm_calls(self, launchers: list, scalars: list[tuple], threads: bool
                   ) -> list[tuple[Callable, tuple]]:
        """``(kernel, arguments)`` compiling each of ``launchers``' kernels (serial, and
        parallel with ``threads``) for each of ``scalars``' ``(h, sc, wd, decay, noise)``,
        on scratch arrays of the types a step passes (for :func:`fastopt.precompile`)."""
        calls = []
        for serial, par, _, _, p, master, st, am, _, first in launchers:
            kernels = [serial] + ([par] if par is not None and threads else [])
            passes = [] if first is None else (
                [first[0]] + ([first[1]] if first[1] is not None and threads else []))
            size = quantized.QBLOCK if am else 1
            for h, sc, wd, decay, nz in scalars:
                pk = np.zeros(size, p.dtype)
                g = np.zeros(size, _kernel_dtype(self.prec.grad, self.prec.compute))
                sts = tuple(np.zeros(size, a.dtype) for a in st)
                mst = None if master is None else np.zeros(size, np.float32)
                ams = tuple(np.zeros(1, np.float32) for _ in am)
                if passes:  # a trust-ratio rule: its first pass, then the step with the ratio
                    args = (pk, g, sts, ams, self.qt, mst, h, sc, wd, decay, nz,
                            self.rounding(1, 0), self.ct, np.zeros(2))
                    calls += [(k, args) for k in passes]
                    h = (*h, 1.0)
                if am:
                    args = (pk, g, sts, ams, self.qt, mst, h, sc, wd, decay, nz,
                            self.rounding(1, 0), self.ct)
                else:
                    args = (pk, g, sts, mst, h, sc, wd, decay, nz, self.rounding(1, 0),
                            self.ct)
                calls += [(k, args) for k in kernels]
        return calls

    def rounding(self, t: int, lo: int) -> tuple[int, int, int, int]:
        seed = self.prec.seed
        return (seed & 0xFFFFFFFF, seed >> 32, t - 1, lo)

    def text(self) -> str:
        return json.dumps(asdict(self.prec))


def launch(storage: Storage, launchers: list, grads: list, h, sc, wd, decay, noise_of,
           t: int, ratio: Any = None) -> None:
    """One step of each segment's kernel (``noise_of(offset)``: its noise argument). A
    trust-ratio rule (``ratio(‖w‖, ‖u‖)``): each segment's first pass, then its step with
    the ratio appended to ``h``."""
    ct, qt = storage.ct, storage.qt
    for (serial, par, choice, nbytes, p, master, st, am, lo, first), g in zip(
            launchers, grads, strict=True):
        g = as_kernel_array(g)
        rnd = storage.rounding(t, lo)
        hk = h
        if first is not None:
            pass_serial, pass_par, pass_choice, partials = first
            pargs = (p, g, st, am, qt, master, h, sc, wd, decay, noise_of(lo), rnd, ct,
                     partials)
            sum_p, sum_u = (pass_serial(*pargs) if pass_par is None else
                            parallel.run(pass_choice, pass_serial, pass_par, pargs, nbytes))
            hk = (*h, ratio(math.sqrt(sum_p), math.sqrt(sum_u)))
        if am:
            args = (p, g, st, am, qt, master, hk, sc, wd, decay, noise_of(lo), rnd, ct)
        else:
            args = (p, g, st, master, hk, sc, wd, decay, noise_of(lo), rnd, ct)
        if par is None:
            serial(*args)
        else:
            parallel.run(choice, serial, par, args, nbytes)


def launch_device(storage: Storage, launchers: list, grads: list, h, sc, dscale, wd, decay,
                  noise_of, t: int, stream: Any, ratio: Any = None) -> None:
    """:func:`launch` for a GPU's arrays, on ``stream``; ``dscale``: the device clip factor
    (a one-element device array) or None. A trust-ratio rule's first pass reads its two
    sums back before the step."""
    from ..drivers import cuda_precision

    ct, qt = storage.ct, storage.qt
    for (kern, eight, p, master, st, am, lo, first), g in zip(launchers, grads, strict=True):
        g = as_kernel_array(storage.be.flat_view(g))
        rnd = storage.rounding(t, lo)
        hk = h
        if first is not None:
            sum_p, sum_u = cuda_precision.trust_sums(
                first, p.size, (p, g, st, am, qt, master, h, sc, dscale, wd, decay,
                                noise_of(lo), rnd, ct), stream)
            hk = (*h, ratio(math.sqrt(sum_p), math.sqrt(sum_u)))
        if eight:
            args = (p, g, st, am, qt, master, hk, sc, dscale, wd, decay, noise_of(lo), rnd,
                    ct)
        else:
            args = (p, g, st, master, hk, sc, dscale, wd, decay, noise_of(lo), rnd, ct)
        cuda_precision.launch(kern, eight, p.size, args, stream)


def loaded_precision(text: Any) -> Precision | None:
    """The :class:`Precision` a checkpoint's ``precision`` entry names, or a ValueError."""
    if isinstance(text, np.ndarray) and text.ndim == 0:
        text = text.item()
    try:
        data = json.loads(text)
        return Precision(**data)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"state dict 'precision' is not what state_dict() writes: {exc}"
                         ) from None


def convert_warning(src: Precision, dst: Precision) -> None:
    warnings.warn(f"fastopt: the checkpoint's state is stored as {src.state_dtype}; it was "
                  f"converted to this optimizer's {dst.state_dtype} (values rounded to the "
                  "new format)", UserWarning, stacklevel=4)


def check_buffers(sd: Any, buffers: dict[str, np.ndarray]) -> None:
    """Each stored buffer of a checkpoint has the dtype and shape of ours, or ValueError."""
    for key, buf in buffers.items():
        a = sd[key]
        if not isinstance(a, np.ndarray) or a.shape != buf.shape or a.dtype != buf.dtype:
            raise ValueError(f"state dict {key!r} must be a {buf.dtype} array of shape "
                             f"{buf.shape}, got {getattr(a, 'dtype', type(a))} "
                             f"{getattr(a, 'shape', '')}")


def stored_keys(stored: Precision | None, names: list[str], ours: Storage | None) -> set[str]:
    """The state keys a checkpoint written with ``stored`` holds (None: a plain one)."""
    if stored is None or stored.state not in EIGHT_BIT:
        keys = {f"state.{n}" for n in names}
    else:
        keys = {f"state.{n}{suffix}" for n in names for suffix in ("", ".codes", ".absmax")}
    if stored is not None and stored.master:
        keys.add("master")
    return keys


def converted_state(sd: Any, stored: Precision | None, ours: Precision, names: list[str],
                    units: list[tuple[int, int]], layout_size: int,
                    signs: tuple[str, ...], whole: list[int] | None = None) -> dict[str, Any]:
    """A checkpoint's state, written in another storage, as float arrays per unit (and its
    master copy, where it kept one): what :func:`store_converted` rounds into ours."""
    if stored is None:  # a plain float32/float64 checkpoint
        out: dict[str, Any] = {}
        for n in names:
            a = sd[f"state.{n}"]
            if not isinstance(a, np.ndarray) or a.shape != (layout_size,) or \
                    a.dtype.kind != "f":
                raise ValueError(f"state dict 'state.{n}' must be a float array of shape "
                                 f"({layout_size},), got {getattr(a, 'dtype', type(a))}")
            out[n] = [a[lo:lo + k].astype(ours.compute) for lo, k in units]
        out["master"] = None
        return out
    if stored.param != ours.param:
        raise ValueError(f"state dict was written for {stored.param} parameters; these are "
                         f"{ours.param}")
    source = Storage(stored, tuple(names), signs, units, layout_size, {}, whole=whole)
    check_buffers(sd, source.buffers)
    for key, buf in source.buffers.items():
        np.copyto(buf, sd[key])
    out = {n: [source.read_unit(n, u) for u in range(len(units))] for n in names}
    out["master"] = source.master
    return out


def store_converted(converted: dict[str, Any], storage: Storage | None,
                    plain: dict[str, np.ndarray], units: list[tuple[int, int]]) -> None:
    """Round :func:`converted_state`'s values into this optimizer's storage (``plain``: a
    plain optimizer's state buffers)."""
    names = [n for n in converted if n != "master"]
    if storage is None:
        for n in names:
            for (lo, k), x in zip(units, converted[n], strict=True):
                plain[n][lo:lo + k] = x
        return
    for n in names:
        for u, x in enumerate(converted[n]):
            storage.write_unit(n, u, x)
    if storage.master is not None and converted["master"] is not None:
        storage.be.copy_from_host(storage.master, np.asarray(converted["master"], np.float32))


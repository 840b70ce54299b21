"""The functional layer: one in-place function per rule on flat arrays.

This is the interface for frameworks that keep their own optimizer objects (and what the
classes in ``fastopt.optim`` call). Each function updates the parameter and the state
arrays in place, in one fused pass, and returns None (``nadam`` returns the running
momentum product it needs next time).

Every function takes the step number ``step`` (t = 1 on the first step; bias corrections
use t, the noise schedule uses t' = t − 1) and the common transforms, applied in this order
before the rule (``docs/equations.md``):

* ``maximize``: ``g ← −g``;
* ``grad_scale``: ``g ← s·g`` (the clip factor from :func:`clip_scale`);
* ``noise``: ``g ← g + N(0, σ²)``, a :class:`fastopt.GradientNoise`; element ``i`` of this
  array draws counter ``(noise_offset + i, t')``;
* ``weight_decay=λ``: ``g ← g + λ w`` (L2), or with ``decoupled_weight_decay=True``
  ``w ← w (1 − ηλ)`` before the rule (AdamW).

Arrays: C-contiguous float32 or float64; a parameter, its gradient and its state arrays
share shape and dtype, and the math runs in that dtype. Every array argument may also be a
list of arrays (one entry per parameter, like torch's ``foreach`` functions): the step's
constants are then computed once for all of them. With lists, ``noise_offset`` is the
position of the first array (the others follow consecutively) or one offset per array.
The arrays a step writes (parameters and state) must not share memory with any other
array of the call; a gradient may be its own parameter, and gradients may be shared.
``check=False`` skips the argument checks (for callers that validated once).

:func:`init_state` makes a rule's state arrays, in any storage the classes offer (float32,
bfloat16, 8-bit :class:`QuantizedState`).

GPU arrays (Numba device arrays, CuPy arrays, detached torch CUDA tensors: anything with
``__cuda_array_interface__``) are stepped in place by the CUDA driver, with the same
equations. Kernels go to ``stream`` (a Numba stream), by default the current stream of the
arrays' library (torch's or CuPy's) or Numba's default stream. There ``grad_scale`` may
also be a one-element device array of the parameters' dtype, read by the kernel, so a clip
factor computed on the GPU needs no host round trip.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import functional_precision
from ._checks import FLOAT_DTYPES, MAX_STEP, check_nonneg, check_step, half_dtypes
from .drivers import backend_of, check_step_arrays, cpu, is_device_array
from .drivers.overlap import check_entries_apart
from .functional_precision import QuantizedState
from .noise import GradientNoise
from .precision import quantized
from .rules.registry import Rule, annotation, hyperparameter_doc, registry, signature_order
from .rules.transforms import add_totals, clip_scale, norm_of

__all__ = ["QuantizedState", "clip_scale", "global_norm", "init_state",
           *(r.function for r in registry().values())]  # noqa: PLE0604


Arrays = np.ndarray | Sequence[np.ndarray]
#: A trust-ratio rule's first pass and its ratio: ``(direction, (‖w‖, ‖u‖) -> r)``.
Trust = tuple[Callable, Callable[[float, float], float]]
Offsets = int | Sequence[int]


def _as_lists(p: Arrays, g: Arrays, state: tuple[Arrays, ...], noise_offset: Offsets):
    """The single-array and the multi-array (list) forms as parallel lists."""
    if not isinstance(p, (list, tuple)):
        return [p], [g], [state], [noise_offset]
    ps, gs = list(p), list(g)
    n = len(ps)
    lengths_ok = len(gs) == n
    for s in state:
        lengths_ok = lengths_ok and len(s) == n
    if not lengths_ok:
        raise ValueError(
            f"got {n} parameter arrays, {len(gs)} gradients and state lists of "
            f"lengths {[len(s) for s in state]}"
        )
    sts = list(zip(*state, strict=True)) if state else [()] * n
    if isinstance(noise_offset, (int, np.integer)):  # consecutive positions
        offsets, pos = [], int(noise_offset)
        for a in ps:
            offsets.append(pos)
            pos += getattr(a, "size", 0)  # not an array: refused by the checks that follow
    elif isinstance(noise_offset, (list, tuple)) and len(noise_offset) == n:
        offsets = list(noise_offset)
    else:
        raise ValueError(
            f"noise_offset must be an int (the first array's position in the noise stream, "
            f"the others following) or one int per array ({n}), got {noise_offset!r}"
        )
    return ps, gs, sts, offsets


def _plain_host_arrays(ps: list, gs: list, sts: list) -> tuple[bool, list[int] | None]:
    """``(plain, owners)``. ``plain``: every array of the call passes the per-array checks,
    told cheaply: plain C-contiguous ndarrays of p[0]'s float dtype, each shaped like its
    parameter, those a step writes writable (the checks that say what is wrong run when
    this says no). ``owners``: where plain, the ids of the ndarrays that allocated each
    array's memory (``cpu.owner``), in the order p, g, state of each entry, or None where
    some memory came from elsewhere. 6 entries of Adam: 9 us here; the whole checked call
    took 50 us with it, 61 us with the per-array checks (30 us unchecked)."""
    if type(ps[0]) is not np.ndarray or ps[0].dtype not in FLOAT_DTYPES:
        return False, None
    dt = ps[0].dtype
    owners: list[int] | None = []
    for p, g, st in zip(ps, gs, sts, strict=True):
        shape = p.shape
        for k, a in enumerate((p, g, *st)):
            if type(a) is not np.ndarray or a.dtype is not dt or a.shape != shape:
                return False, None
            flags = a.flags  # one flags object per array: each access makes one
            if not flags.c_contiguous or (k != 1 and not flags.writeable):  # k = 1: g
                return False, None
            if owners is not None:
                o = a.base
                if o is None and flags.owndata:
                    owners.append(id(a))
                elif o is not None and type(o) is np.ndarray and o.flags.owndata:
                    owners.append(id(o))
                else:
                    owners = None
    return True, owners


def _run(
    rule: Callable,
    p: Arrays,
    g: Arrays,
    state: tuple[Arrays, ...],
    consts: tuple[float, ...],
    step: int,
    lr: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    maximize: bool,
    grad_scale: Any,
    noise: GradientNoise | None,
    noise_offset: Offsets,
    check: bool,
    stream: Any = None,
    trust: Trust | None = None,
    master: Arrays | None = None,
    stochastic_rounding: bool = False,
    rounding_seed: int = 0,
    kept: tuple = (),
) -> None:
    """One functional call of ``rule``'s element function; ``kept``: the ``State`` specs of
    the state arrays given (their signs pick which 8-bit books may hold them)."""
    ps, gs, sts, offsets = _as_lists(p, g, state, noise_offset)
    if not ps:
        return
    if functional_precision.wanted(ps, gs, sts, master):
        _run_precision(rule, ps, gs, sts, offsets, master, consts, step, lr, weight_decay,
                       decoupled_weight_decay, maximize, grad_scale, noise, check, trust,
                       stochastic_rounding, rounding_seed, kept, stream)
        return
    if stochastic_rounding:
        raise ValueError("stochastic_rounding rounds 16-bit parameters (np.float16, "
                         "ml_dtypes.bfloat16); these are float32/float64")
    plain, owners = _plain_host_arrays(ps, gs, sts) if check else (False, None)
    if plain or (not check and isinstance(ps[0], np.ndarray)):
        be = cpu  # plain host arrays, or the optimizer's per-step call (validated then)
    else:
        be = backend_of([*ps, *gs, *(s for st in sts for s in st)] if check else ps[:1])
    device = be is not cpu
    if device and stream is None:
        stream = be.current_stream(be.origin(ps[0]))
    if check:
        many = len(ps) > 1
        if not plain:  # the per-array checks, which say what is wrong
            checked = [check_step_arrays(be, pj, gj, sj, f"[{j}]" if many else "", not many)
                       for j, (pj, gj, sj) in enumerate(zip(ps, gs, sts, strict=True))]
            ps, gs, sts = ([c[k] for c in checked] for k in range(3))
        elif not many:
            check_step_arrays(be, ps[0], gs[0], sts[0], "")  # its overlap checks
        if many:
            check_entries_apart(be, ps, gs, sts, owners)
        for j, off in enumerate(offsets):
            if (isinstance(off, bool) or not isinstance(off, (int, np.integer))
                    or not 0 <= off <= MAX_STEP - ps[j].size):
                raise ValueError(f"noise_offset{f'[{j}]' if many else ''} must be an int >= "
                                 "0 (a position in the noise stream) that leaves the array's "
                                 f"positions below 2**63, got {off!r}")
    elif device:  # trusted arrays (the optimizer's per-step call): only view them
        ps = [be.as_device_array(a, "p") for a in ps]
        gs = [be.as_device_array(a, "g") for a in gs]
        sts = [tuple(be.as_device_array(a, "state") for a in st) for st in sts]
    if check:
        for j, pj in enumerate(ps):
            if pj.dtype != ps[0].dtype:
                raise ValueError(f"p[{j}] is {pj.dtype} but p[0] is {ps[0].dtype}")
        if noise is not None and not isinstance(noise, GradientNoise):
            raise ValueError(f"noise must be a fastopt.GradientNoise or None, got {noise!r}")
    if type(grad_scale) is float or isinstance(grad_scale, numbers.Real):
        if check:
            grad_scale = check_nonneg("grad_scale", grad_scale)
        dscale = None
    else:  # a clip factor that lives on the device (optimizer.step with clip_norm)
        dscale, grad_scale = grad_scale, 1.0
        if check and not (device and is_device_array(dscale)
                          and getattr(dscale, "size", 0) == 1
                          and np.dtype(dscale.dtype) == np.dtype(ps[0].dtype)):
            raise ValueError(
                "grad_scale must be a number >= 0 (or, for GPU arrays, a one-element device "
                f"array of the parameters' dtype), got {type(dscale).__name__}"
            )
    launch(be, rule, ps, gs, sts, offsets, consts, step, lr, weight_decay,
           decoupled_weight_decay, maximize, grad_scale, dscale, noise, stream, trust=trust)


def _run_precision(rule: Callable, ps: list, gs: list, sts: list, offsets: list,
                   master: Arrays | None, consts: tuple[float, ...], step: int, lr: float,
                   weight_decay: float, decoupled_weight_decay: bool, maximize: bool,
                   grad_scale: Any, noise: GradientNoise | None, check: bool,
                   trust: Trust | None, stochastic_rounding: bool, rounding_seed: int,
                   kept: tuple, stream: Any) -> None:
    """16-bit parameters or gradients, bfloat16 or 8-bit state or a master copy
    (:mod:`fastopt.functional_precision`), on the CPU or (GPU parameters) the GPU."""
    many = len(ps) > 1
    if master is None:
        masters = [None] * len(ps)
    elif isinstance(master, (list, tuple)):
        masters = list(master)
        if len(masters) != len(ps):
            raise ValueError(f"got {len(ps)} parameter arrays and {len(masters)} master copies")
    elif many:
        raise ValueError("with lists of arrays, master is a list of float32 copies too")
    else:
        masters = [master]
    be = backend_of(ps[:1]) if is_device_array(ps[0]) else cpu
    if be is not cpu and stream is None:
        stream = be.current_stream(be.origin(ps[0]))
    if check or be is not cpu:  # (a GPU call's checks also make its Numba views)
        ps, gs, sts, masters = functional_precision.check(
            ps, gs, sts, masters, stochastic_rounding, rounding_seed,
            tuple(st.sign for st in kept), be)
    if check:
        for j, off in enumerate(offsets):
            if (isinstance(off, bool) or not isinstance(off, (int, np.integer))
                    or not 0 <= off <= MAX_STEP - ps[j].size):
                raise ValueError(f"noise_offset{f'[{j}]' if many else ''} must be an int >= 0 "
                                 "(a position in the noise and rounding streams) that leaves "
                                 f"the array's positions below 2**63, got {off!r}")
        if noise is not None and not isinstance(noise, GradientNoise):
            raise ValueError(f"noise must be a fastopt.GradientNoise or None, got {noise!r}")
    dscale = None
    if type(grad_scale) is not float and not isinstance(grad_scale, numbers.Real):
        # a clip factor on the GPU: a one-element float32 device array (the kernels' math)
        if not (be is not cpu and is_device_array(grad_scale)
                and getattr(grad_scale, "size", 0) == 1
                and functional_precision.dtype_of(grad_scale) == np.float32):
            raise ValueError(
                "grad_scale must be a number >= 0 (or, for GPU arrays, a one-element float32 "
                f"device array), got {type(grad_scale).__name__}")
        dscale, grad_scale = be.as_device_array(grad_scale, "grad_scale"), 1.0
    elif check:
        grad_scale = check_nonneg("grad_scale", grad_scale)
    h, scale, wd, decay, nz = step_scalars(consts, step, lr, weight_decay,
                                           decoupled_weight_decay, maximize, grad_scale,
                                           dscale, noise)
    direction, ratio = trust if trust is not None else (None, None)
    functional_precision.run(rule, direction, ratio, ps, gs, sts, masters, offsets, h, scale,
                             wd, decay, nz, step, stochastic_rounding, rounding_seed,
                             noise_at, be, stream, dscale)


def step_scalars(
    consts: tuple[float, ...], step: int, lr: float, weight_decay: float,
    decoupled_weight_decay: bool, maximize: bool, grad_scale: float, dscale: Any,
    noise: GradientNoise | None,
) -> tuple[tuple[float, ...], float | None, float | None, float | None, tuple | None]:
    """The step kernels' scalar arguments, once per step: ``(h, scale, wd, decay, nz)``.

    ``h``: the rule's constants as Python floats (the kernel converts them to the
    parameters' dtype: one rounding, as ``np.float32(c)`` would do here). A scale or decay
    of exactly 1, and a zero L2 decay, are None: the kernel then skips the multiply (numba
    prunes the branch). ``nz``: ``(σ, t', k0, k1)`` of the gradient noise, or None; an
    array's kernel takes ``noise_at(nz, offset)``."""
    h = tuple(map(float, consts))
    scale: float | None = float(-grad_scale if maximize else grad_scale)
    if scale == 1.0 and dscale is None:
        scale = None
    if decoupled_weight_decay:
        wd, decay = None, 1.0 - lr * weight_decay
    else:
        wd, decay = (float(weight_decay) if weight_decay else None), 1.0
    if decay == 1.0:
        decay = None
    nz = None
    if noise is not None and noise.eta > 0.0:
        k0, k1 = (int(k) for k in noise.key)
        nz = (noise.std(step - 1), step - 1, k0, k1)
    return h, scale, wd, decay, nz


def noise_at(nz: tuple | None, offset: int) -> tuple | None:
    """The noise argument of the kernel for an array at noise position ``offset``:
    ``(σ, offset, t', k0, k1)``, or None without noise."""
    return None if nz is None else (nz[0], int(offset), nz[1], nz[2], nz[3])


def launch(
    be: Any, rule: Callable, ps: list, gs: list, sts: list, offsets: list,
    consts: tuple[float, ...], step: int, lr: float, weight_decay: float,
    decoupled_weight_decay: bool, maximize: bool, grad_scale: float, dscale: Any,
    noise: GradientNoise | None, stream: Any, table: Any = None, trust: Trust | None = None,
) -> None:
    """Run ``rule`` on validated arrays of driver ``be``: the step's scalars once
    (:func:`step_scalars`), then one kernel per array (``ps[j]``, ``gs[j]``, state tuple
    ``sts[j]``, noise position ``offsets[j]``), or, on a GPU with several arrays, one
    kernel over all of them through ``table`` (a ``be.ArrayTable`` of ``ps, sts,
    offsets``; made here when not given). The functional calls end here, and so do the
    optimizers' steps on a GPU."""
    h, scale, wd, decay, nz = step_scalars(consts, step, lr, weight_decay,
                                           decoupled_weight_decay, maximize, grad_scale,
                                           dscale, noise)
    if trust is not None:  # two passes over each array, its trust ratio between them
        direction, ratio = trust
        launch_args = () if not be.ON_DEVICE else (stream, dscale)
        for pj, gj, sj, off in zip(ps, gs, sts, offsets, strict=True):
            pj, gj, sj = be.flat_view(pj), be.flat_view(gj), tuple(map(be.flat_view, sj))
            nz_j = noise_at(nz, off)
            sum_p, sum_u = be.trust_sums(direction, pj, gj, sj, h, scale, wd, decay, nz_j,
                                         *launch_args)
            r = ratio(math.sqrt(sum_p), math.sqrt(sum_u))
            be.step(rule, pj, gj, sj, (*h, r), scale, wd, decay, nz_j, *launch_args)
        return
    if not be.ON_DEVICE:
        for pj, gj, sj, off in zip(ps, gs, sts, offsets, strict=True):
            if len(pj.shape) != 1 or len(gj.shape) != 1:
                pj, gj, sj = be.flat_view(pj), be.flat_view(gj), tuple(map(be.flat_view, sj))
            be.step(rule, pj, gj, sj, h, scale, wd, decay, noise_at(nz, off))
        return
    if len(ps) > 1:  # a GPU: one launch for all arrays
        if table is None:
            table = be.ArrayTable(ps, sts, offsets)
        be.step_table(rule, table, gs, h, scale, wd, decay, noise_at(nz, 0), stream, dscale)
        return
    for pj, gj, sj, off in zip(ps, gs, sts, offsets, strict=True):
        if len(pj.shape) != 1 or len(gj.shape) != 1:
            pj, gj, sj = be.flat_view(pj), be.flat_view(gj), tuple(map(be.flat_view, sj))
        be.step(rule, pj, gj, sj, h, scale, wd, decay, noise_at(nz, off), stream, dscale)


# ------------------------------------------------------------------ one function per rule
#: The common keywords of every rule's function, documented once.
COMMON_DOC = """weight_decay : float, default 0.0
    λ: L2 decay ``g ← g + λw``, or with ``decoupled_weight_decay`` ``w ← w(1 − ηλ)``.
decoupled_weight_decay : bool
    Decay the weights directly (AdamW) instead of adding ``λw`` to the gradient.
maximize : bool, default False
    ``g ← −g``.
grad_scale : float, default 1.0
    ``g ← s·g`` (the clip factor from :func:`clip_scale`); for GPU arrays also a
    one-element device array of the parameters' dtype.
noise : GradientNoise | None, default None
    Gradient noise ``g ← g + N(0, σ²)``; element ``i`` draws counter
    ``(noise_offset + i, t')``.
noise_offset : int | Sequence[int], default 0
    The array's position in the noise stream (lists: the first array's, or one per array).
check : bool, default True
    False skips the argument checks (for callers that validated once).
stream : numba stream, optional
    GPU arrays: the stream to launch on (default: the arrays' library's current stream).
master : ndarray or list of ndarrays, optional
    A float32 copy of 16-bit parameters (``np.float16``, ``ml_dtypes.bfloat16``): the step
    updates it and writes the parameters rounded to nearest from it.
stochastic_rounding : bool, default False
    16-bit parameters without a master copy: round each stepped value up or down with
    probability by its distance; random bits from ``(rounding_seed, step, noise_offset +
    i)``, as the optimizer classes draw them.
rounding_seed : int, default 0
    The seed of those bits (and of bfloat16 state's rounding).

16-bit parameters and gradients and bfloat16 state arrays (``ml_dtypes.bfloat16``) are
chosen by their dtypes: arithmetic is float32, results are rounded to the storage
dtype, bfloat16 state stochastically (docs/precision.md). 8-bit state: a
:class:`QuantizedState` in place of each state array (:func:`init_state` makes them). On a
GPU: float16 and float32 (CUDA arrays have no bfloat16 type), a device master copy and
``QuantizedState.to_device``; their arrays are always checked (the checks make the
kernels' views)."""


def _step(rule: Rule, p: Arrays, g: Arrays, states: tuple, hp: dict[str, Any],
          group: dict[str, float], step: int, grad_scale: Any, noise: GradientNoise | None,
          noise_offset: Offsets, check: bool, stream: Any, **precision: Any) -> Any:
    """A rule's functional call: the hyperparameters checked (``check``), the state its
    options keep picked from ``states`` (one entry per :attr:`Rule.state`, None where not
    given), the constants of this step, then :func:`_run`. Returns the group scalars after
    the step: one value, or None for a rule without them."""
    if check:
        step = check_step(step)
        hp = {name: (check_nonneg if name == "lr" else _CHECKS[rule.name][name])(name, value)
              for name, value in hp.items()}
        group = {s.name: s.check(s.name, group[s.name]) for s in rule.group_state}
    kept = rule.state_of(hp)
    if len(kept) == len(states) and all(a is not None for a in states):
        arrays = states
    else:
        arrays = tuple(states[rule.state.index(s)] for s in kept)
        for s, a in zip(kept, arrays, strict=True):
            if a is None:
                raise ValueError(f"{rule.function}({s.option}) needs the {s.name} state "
                                 f"array ({s.doc})")
    lr = hp["lr"]
    wd, decoupled = rule.transform_decay(hp)
    trust = None
    if rule.direction is not None:
        trust = (rule.direction, lambda pn, un: rule.trust_ratio(pn, un, hp))
    if rule.advance is not None:
        group = rule.advance(step, {**hp, **group})
        consts = rule.constants(step, lr, {**hp, **group})
    else:
        consts = rule.constants(step, lr, hp)
    _run(rule.element_for(hp), p, g, arrays, consts, step, lr, wd, decoupled, hp["maximize"],
         grad_scale, noise, noise_offset, check, stream, trust, **precision,
         kept=kept)
    return next(iter(group.values())) if group else None


_CHECKS: dict[str, dict[str, Callable[[str, Any], Any]]] = {}


def rule_function(rule: Rule) -> Callable:
    """The in-place function of ``rule``: ``(p, g, *state, step, lr, ..., *, options)``."""
    positional, keyword = signature_order(rule.all_hyperparameters)
    always = [s for s in rule.state if s.when is None]
    optional = [s for s in rule.state if s.when is not None]
    _CHECKS[rule.name] = {h.name: h.check for h in rule.all_hyperparameters}
    ns: dict[str, Any] = {"_step": _step, "_rule": rule, "_defaults": rule.defaults,
                          "_group": {s.name: s.initial for s in rule.group_state}}

    def param(h: Any) -> str:
        return f"{h.name}=_defaults[{h.name!r}]"

    params = ["p", "g", *(s.name for s in always), "step", *map(param, positional), "*",
              *map(param, keyword), *(f"{s.name}=None" for s in optional),
              *(f"{s.name}=_group[{s.name!r}]" for s in rule.group_state),
              "grad_scale=1.0", "noise=None", "noise_offset=0", "check=True", "stream=None",
              "master=None", "stochastic_rounding=False", "rounding_seed=0"]
    hp = ", ".join(f"{h.name!r}: {h.name}" for h in rule.all_hyperparameters)
    group = ", ".join(f"{s.name!r}: {s.name}" for s in rule.group_state)
    states = "".join(f"{s.name}, " for s in rule.state)
    source = (f"def {rule.function}({', '.join(params)}):\n"
              f"    return _step(_rule, p, g, ({states}), {{{hp}}}, {{{group}}}, step, "
              "grad_scale, noise, noise_offset, check, stream, master=master, "
              "stochastic_rounding=stochastic_rounding, rounding_seed=rounding_seed)\n")
    exec(source, ns)  # noqa: S102 - a signature written from the registry
    fn = ns[rule.function]
    fn.__module__ = __name__
    fn.__qualname__ = rule.function
    fn.__annotations__ = {
        "p": Arrays, "g": Arrays, **{s.name: Arrays for s in always}, "step": int,
        **{h.name: annotation(h) for h in rule.all_hyperparameters}, "lr": float,
        **{s.name: Arrays | None for s in optional},
        **{s.name: float for s in rule.group_state}, "grad_scale": Any,
        "noise": GradientNoise | None, "noise_offset": Offsets, "check": bool, "stream": Any,
        "master": Arrays | None, "stochastic_rounding": bool, "rounding_seed": int,
        "return": float if rule.group_state else None,
    }
    fn.__doc__ = _function_doc(rule, always, optional)
    return fn


def _function_doc(rule: Rule, always: list, optional: list) -> str:
    arrays = "\n".join(f"{s.name} : ndarray or list of ndarrays\n    {s.doc}" for s in always)
    extra = "\n".join(f"{s.name} : ndarray or list of ndarrays, optional\n    {s.doc}"
                      for s in optional)
    group = "\n".join(f"{s.name} : float, default {s.initial!r}\n    {s.doc} Pass back "
                      "what the previous call returned." for s in rule.group_state)
    hps = [h for h in rule.all_hyperparameters if h.name not in
           ("weight_decay", "decoupled_weight_decay", "maximize")]
    body = "\n".join(x for x in (
        "p : ndarray or list of ndarrays\n    The parameters, updated in place.",
        "g : ndarray or list of ndarrays\n    The gradients (read only).",
        arrays, "step : int\n    t, 1 on the first step.",
        hyperparameter_doc(tuple(hps)).replace(
            "a number >= 0, or a schedule ``t' -> η`` (t' = completed steps, 0 on the first "
            "step; see :mod:`fastopt.schedules`).", "a number >= 0 (this step's)."),
        extra, group, COMMON_DOC) if x)
    returns = (f"\n\nReturns\n-------\nfloat\n    {rule.group_state[0].doc}"
               if rule.group_state else "")
    details = f"\n\n{rule.details}" if rule.details else ""
    return (f"{rule.summary}{details}\n\nUpdates ``p`` and the state arrays in place, in one "
            f"fused pass.\n\nParameters\n----------\n{body}{returns}")


_functions = {rule.function: rule_function(rule) for rule in registry().values()}
globals().update(_functions)


def init_state(rule: str | Callable, p: Arrays, *, state_dtype: str | None = None,
               min_8bit_size: int = 4096, **hyperparameters: Any) -> dict[str, Any]:
    """The state of ``rule``'s functional call for parameters ``p``, at its values before
    the first step: ``{name: array}`` (a list per name for a list of parameters), to pass
    as keywords::

        state = F.init_state("adam", p, state_dtype="8bit")
        for t in range(1, steps + 1):
            F.adam(p, grad(p), step=t, lr=1e-3, **state)

    ``rule``: the function (``F.adam``), its name or the class name (``"Adam"``).
    ``hyperparameters``: those that decide which state is kept (``centered=True``) or
    where it starts (Rprop's step sizes start at ``lr``); the rule's defaults otherwise.
    ``state_dtype``: as the optimizer classes take it. None: the parameters' dtype
    (float32 for 16-bit parameters); ``"bfloat16"``: ``ml_dtypes.bfloat16`` arrays;
    ``"8bit"`` (8-bit floats), ``"fp8"`` or ``"int8"`` (bitsandbytes' dynamic map):
    a :class:`QuantizedState` per array of at least ``min_8bit_size`` values, in the book
    its state takes (signed or non-negative), float32 arrays for smaller ones. Host
    (NumPy) arrays, made from host parameters; for GPU parameters move them to the
    device (``QuantizedState.to_device``, or your array library for plain arrays).
    """
    r = _rule_of(rule)
    unknown = set(hyperparameters) - set(r.defaults)
    if unknown:
        raise TypeError(f"init_state({r.function!r}): unknown hyperparameters "
                        f"{sorted(unknown)}; it takes {sorted(r.defaults)}")
    if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, (int, np.integer)) \
            or min_8bit_size < 0:
        raise ValueError(f"min_8bit_size must be an int >= 0, got {min_8bit_size!r}")
    names = (None, "float32", "bfloat16", *quantized.EIGHT_BIT)
    if state_dtype not in names:
        raise ValueError(f"state_dtype must be one of {names}, got {state_dtype!r}")
    hp = {**r.defaults, **hyperparameters}
    kept = r.state_of(hp)
    many = isinstance(p, (list, tuple))
    ps = list(p) if many else [p]
    for j, a in enumerate(ps):
        at = f"[{j}]" if many else ""
        if type(a) is not np.ndarray or a.dtype not in (*FLOAT_DTYPES, *half_dtypes()):
            raise TypeError(f"init_state: p{at} must be a float numpy.ndarray (host arrays; "
                            f"on a GPU allocate state with the arrays' library), got "
                            f"{getattr(a, 'dtype', type(a).__name__)}")
        if a.dtype == np.float64 and state_dtype not in (None, "float64"):
            raise ValueError(f"state_dtype={state_dtype!r} needs float32 or 16-bit "
                             f"parameters; p{at} is float64 and keeps float64 state")
    if state_dtype in quantized.EIGHT_BIT:
        for s in kept:
            if s.sign == "exact":
                raise ValueError(f"{r.name}'s {s.name} cannot be held in 8 bits (it keeps "
                                 "an average of the parameters); use state_dtype='bfloat16'")
    lr = hp["lr"] if isinstance(hp["lr"], numbers.Real) else 0.0

    def one(a: np.ndarray, s: Any) -> Any:
        value = r.initial_value(s, hp, lr)
        if state_dtype in quantized.EIGHT_BIT and a.size >= min_8bit_size:
            book = quantized.book_for(state_dtype, s.sign)
            return functional_precision.QuantizedState.full(a.shape, value, book)
        if state_dtype == "bfloat16":
            return np.full(a.shape, value, np.float32).astype(half_dtypes()[-1])
        dt = a.dtype if a.dtype in FLOAT_DTYPES and state_dtype is None else np.float32
        return np.full(a.shape, value, dt)

    if state_dtype == "bfloat16" and half_dtypes()[-1].name != "bfloat16":
        raise ValueError("state_dtype='bfloat16' needs ml_dtypes: pip install 'fastopt[bf16]'")
    return {s.name: [one(a, s) for a in ps] if many else one(ps[0], s) for s in kept}


def _rule_of(rule: str | Callable) -> Rule:
    """The registered rule of a functional call, its name or its class's name."""
    name = getattr(rule, "__name__", rule)
    for r in registry().values():
        if name in (r.name, r.function):
            return r
    raise ValueError(f"no rule {rule!r}; the rules are "
                     f"{sorted(r.function for r in registry().values())}")


def global_norm(grads: Sequence[Any], workspace: Any = None) -> float:
    """``‖g‖₂`` over all arrays, in float64, with the same bits at any thread count.

    NaN if any element is NaN, else ∞ if any is infinite (as ``np.linalg.norm`` and
    torch). ``workspace``: an optional writable, contiguous 1-D float64 array of at least
    ``ceil(max size / 4096)`` elements (GPU arrays: ``Σ ceil(size / 4096)``) that shares
    no memory with the gradients, reused to avoid an allocation per call (a smaller one is
    not used). GPU arrays: reduced on the device in a fixed order; the one float is read
    back.
    """
    grads = list(grads)
    be = backend_of(grads, "gradients")
    if be is not cpu:
        arrays = [be.flat_view(be.as_device_array(g, f"grads[{j}]")) for j, g in enumerate(grads)]
        return norm_of(be.global_sum_of_squares(arrays, workspace))
    arrays = [np.ascontiguousarray(g).reshape(-1) for g in grads]
    for j, a in enumerate(arrays):
        if a.dtype not in FLOAT_DTYPES:
            raise TypeError(f"grads[{j}] has dtype {a.dtype}; global_norm needs float32 or "
                            "float64")
    if workspace is not None:
        _check_workspace(workspace, arrays)
    need = max((cpu.blocks(a.size) for a in arrays), default=0)
    if workspace is None or workspace.size < need:
        workspace = np.empty(need, np.float64)
    total = 0.0
    for a in arrays:
        if a.size:
            total = add_totals(total, cpu.sum_of_squares(a, workspace))
    return norm_of(total)


def _check_workspace(w: Any, arrays: list[np.ndarray]) -> None:
    """:func:`global_norm`'s host workspace: a writable, contiguous 1-D float64 ndarray
    apart from every gradient, or a clear error before anything is written."""
    if not isinstance(w, np.ndarray) or is_device_array(w):
        raise TypeError(f"global_norm's workspace must be a float64 numpy.ndarray, got "
                        f"{type(w).__name__}")
    if w.dtype != np.float64 or w.ndim != 1:
        raise TypeError(f"global_norm's workspace must be a 1-D float64 array (the float64 "
                        f"partial sums), got {w.ndim}-D {w.dtype}")
    if not w.flags.c_contiguous or not w.flags.writeable:
        raise ValueError("global_norm's workspace must be contiguous and writable")
    for j, a in enumerate(arrays):
        if np.shares_memory(w, a):
            raise ValueError(f"global_norm's workspace shares memory with grads[{j}]; give it "
                             "memory of its own")

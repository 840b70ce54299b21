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

GPU arrays (Numba device arrays, CuPy arrays, detached torch CUDA tensors: anything with
``__cuda_array_interface__``) are stepped in place by the CUDA driver, with the same
equations. Kernels go to ``stream`` (a Numba stream), by default the current stream of the
arrays' library (torch's or CuPy's) or Numba's default stream. There ``grad_scale`` may
also be a one-element device array of the parameters' dtype, read by the kernel, so a clip
factor computed on the GPU needs no host round trip.
"""

from __future__ import annotations

import numbers
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import rules
from ._checks import (
    FLOAT_DTYPES,
    MAX_STEP,
    check_betas,
    check_bool,
    check_mu_product,
    check_nonneg,
    check_optional_nonneg,
    check_step,
    check_unit,
)
from .drivers import backend_of, check_step_arrays, cpu, is_device_array
from .drivers import first_overlap as _first_overlap
from .noise import GradientNoise
from .rules.transforms import add_totals, clip_scale, norm_of

__all__ = [
    "adagrad", "adam", "amsgrad", "clip_scale", "global_norm", "momentum", "nadam",
    "nesterov", "rmsprop", "sgd",
]


Arrays = np.ndarray | Sequence[np.ndarray]
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


def _lr(lr: Any, check: bool) -> Any:
    """``lr`` checked (a number >= 0, as a Python float) where ``check``: before the rule's
    constants use it."""
    return check_nonneg("lr", lr) if check else lr


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


def _check_entries_apart(be: Any, ps: list, gs: list, sts: list,
                         owners: list[int] | None = None) -> None:
    """The overlap checks of a list call, all at once (one span per array): each array a
    step writes (p[j] and its state) apart from every other array, but g[j] may be p[j]
    itself, and gradients may share memory with each other.

    Host arrays whose memory belongs to different NumPy arrays cannot overlap, so only
    those sharing an owner (views of one buffer) have their spans compared: 161 separate
    arrays cost ~0.1 ms here, views of one buffer ~1 ms. ``owners``: the owners' ids, where
    the caller has them."""
    m = 2 + (len(sts[0]) if sts else 0)  # arrays per entry: array i is entry i // m's
    arrays = [a for p, g, st in zip(ps, gs, sts, strict=True) for a in (p, g, *st)]
    suspects: Sequence[int] = range(len(arrays))
    if be is cpu:
        if owners is None:
            found = list(map(cpu.owner, arrays))
            if all(o is not None for o in found):  # all memory allocated by ndarrays
                owners = list(map(id, found))
        if owners is not None:
            if len(set(owners)) == len(owners):
                return
            count = Counter(owners)
            suspects = [i for i, k in enumerate(owners) if count[k] > 1]
    spans = [be.span(arrays[i]) for i in suspects]

    def allowed(a: int, b: int) -> bool:
        (ja, ka), (jb, kb) = divmod(suspects[a], m), divmod(suspects[b], m)
        if ka == 1 and kb == 1:
            return True  # gradients are only read
        return ja == jb and {ka, kb} == {0, 1} and spans[a] == spans[b]  # g[j] is p[j]

    hit = _first_overlap(spans, allowed)
    if hit is not None:
        a, b = (_role_name(*divmod(suspects[i], m)) for i in hit)
        raise ValueError(f"{a} and {b} share memory: each array a step writes needs memory "
                         "of its own (the same array twice in the lists?)")


def _role_name(j: int, kind: int) -> str:
    return ("p", "g")[kind] + f"[{j}]" if kind < 2 else f"state array {kind - 2}[{j}]"


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
) -> None:
    ps, gs, sts, offsets = _as_lists(p, g, state, noise_offset)
    if not ps:
        return
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
            _check_entries_apart(be, ps, gs, sts, owners)
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
        check_step(step)
        lr = check_nonneg("lr", lr)
        weight_decay = check_nonneg("weight_decay", weight_decay)
        check_bool("decoupled_weight_decay", decoupled_weight_decay)
        check_bool("maximize", maximize)
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
           decoupled_weight_decay, maximize, grad_scale, dscale, noise, stream)


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
    noise: GradientNoise | None, stream: Any, table: Any = None,
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
    if len(ps) > 1 and hasattr(be, "ArrayTable"):  # a GPU: one launch for all arrays
        if table is None:
            table = be.ArrayTable(ps, sts, offsets)
        be.step_table(rule, table, gs, h, scale, wd, decay, noise_at(nz, 0), stream, dscale)
        return
    for pj, gj, sj, off in zip(ps, gs, sts, offsets, strict=True):
        if len(pj.shape) != 1 or len(gj.shape) != 1:
            pj, gj, sj = be.flat_view(pj), be.flat_view(gj), tuple(map(be.flat_view, sj))
        be.step(rule, pj, gj, sj, h, scale, wd, decay, noise_at(nz, off), stream, dscale)


_COMMON_DOC = """
    Common keywords: ``weight_decay``, ``decoupled_weight_decay``, ``maximize``,
    ``grad_scale``, ``noise``, ``noise_offset``, ``check`` (see the module docstring)."""


def sgd(
    p: Arrays, g: Arrays, step: int, lr: float, *,
    weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False,
    grad_scale: float = 1.0, noise: GradientNoise | None = None, noise_offset: Offsets = 0,
    check: bool = True, stream: Any = None,
) -> None:
    """Gradient descent, ``w ← w − η g`` (spec: batch/stochastic/minibatch GD)."""
    _run(rules.sgd, p, g, (), rules.sgd_constants(_lr(lr, check)), step, lr, weight_decay,
         decoupled_weight_decay, maximize, grad_scale, noise, noise_offset, check, stream)


def momentum(
    p: Arrays, g: Arrays, v: Arrays, step: int, lr: float,
    momentum: float = 0.9, *,
    weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False,
    grad_scale: float = 1.0, noise: GradientNoise | None = None, noise_offset: Offsets = 0,
    check: bool = True, stream: Any = None,
) -> None:
    """Momentum (spec): ``v ← γ v + η g;  w ← w − v`` with ``γ = momentum``."""
    if check:
        momentum = check_nonneg("momentum", momentum)
    _run(rules.momentum, p, g, (v,), rules.momentum_constants(_lr(lr, check), momentum), step, lr,
         weight_decay, decoupled_weight_decay, maximize, grad_scale, noise, noise_offset,
         check, stream)


def nesterov(
    p: Arrays, g: Arrays, v: Arrays, step: int, lr: float,
    momentum: float = 0.9, *,
    weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False,
    grad_scale: float = 1.0, noise: GradientNoise | None = None, noise_offset: Offsets = 0,
    check: bool = True, stream: Any = None,
) -> None:
    """Nesterov momentum (spec), holding the look-ahead point ``φ = w − γ v`` in ``p``:
    ``v' = γ v + η g(φ);  φ ← φ − v' − γ (v' − v);  v ← v'``."""
    if check:
        momentum = check_nonneg("momentum", momentum)
    _run(rules.nesterov, p, g, (v,), rules.nesterov_constants(_lr(lr, check), momentum), step, lr,
         weight_decay, decoupled_weight_decay, maximize, grad_scale, noise, noise_offset,
         check, stream)


def adagrad(
    p: Arrays, g: Arrays, acc: Arrays, step: int, lr: float,
    eps: float = 1e-6, *, eps_inside_sqrt: bool = True,
    weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False,
    grad_scale: float = 1.0, noise: GradientNoise | None = None, noise_offset: Offsets = 0,
    check: bool = True, stream: Any = None,
) -> None:
    """AdaGrad (spec): ``G ← G + g²;  w ← w − η g / √(G + ε)``
    (``eps_inside_sqrt=False``: torch's ``/(√G + ε)``)."""
    if check:
        eps = check_nonneg("eps", eps)
        check_bool("eps_inside_sqrt", eps_inside_sqrt)
    _run(rules.adagrad, p, g, (acc,),
         rules.adagrad_constants(_lr(lr, check), eps, eps_inside_sqrt), step, lr, weight_decay,
         decoupled_weight_decay, maximize, grad_scale, noise, noise_offset, check, stream)


def rmsprop(
    p: Arrays, g: Arrays, square_avg: Arrays, step: int, lr: float,
    alpha: float = 0.9, eps: float = 1e-6, *, eps_inside_sqrt: bool = True,
    centered: bool = False, momentum: float = 0.0,
    grad_avg: Arrays | None = None, momentum_buffer: Arrays | None = None,
    weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False,
    grad_scale: float = 1.0, noise: GradientNoise | None = None, noise_offset: Offsets = 0,
    check: bool = True, stream: Any = None,
) -> None:
    """RMSprop (spec): ``E ← α E + (1 − α) g²;  w ← w − η g / √(E + ε)``.

    torch options: ``eps_inside_sqrt=False``; ``centered=True`` (needs ``grad_avg``);
    ``momentum > 0`` (needs ``momentum_buffer``).
    """
    if check:
        alpha = check_unit("alpha", alpha)
        eps = check_nonneg("eps", eps)
        momentum = check_nonneg("momentum", momentum)
        check_bool("eps_inside_sqrt", eps_inside_sqrt)
        check_bool("centered", centered)
        if centered and grad_avg is None:
            raise ValueError("rmsprop(centered=True) needs the grad_avg state array")
        if momentum > 0 and momentum_buffer is None:
            raise ValueError("rmsprop(momentum > 0) needs the momentum_buffer state array")
    state = (square_avg,)
    if centered:
        state += (grad_avg,)
    if momentum > 0:
        state += (momentum_buffer,)
    rule = rules.rmsprop_variant(centered, momentum)
    consts = rules.rmsprop_constants(_lr(lr, check), alpha, eps, eps_inside_sqrt, momentum)
    _run(rule, p, g, state, consts, step, lr, weight_decay, decoupled_weight_decay, maximize,
         grad_scale, noise, noise_offset, check, stream)


def adam(
    p: Arrays, g: Arrays, m: Arrays, v: Arrays, step: int,
    lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, *,
    bias_correction: bool = True, eps_hat: bool = False,
    weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False,
    grad_scale: float = 1.0, noise: GradientNoise | None = None, noise_offset: Offsets = 0,
    check: bool = True, stream: Any = None,
) -> None:
    """Adam (spec; Kingma & Ba 2015): ``m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
    w ← w − η m̂ / (√v̂ + ε)`` with ``m̂ = m/(1−β₁ᵗ)``, ``v̂ = v/(1−β₂ᵗ)``.
    ``decoupled_weight_decay=True`` makes it AdamW. ``bias_correction=False``:
    ``w ← w − η m / (√v + ε)``; ``eps_hat=True``: Keras' and TensorFlow's form,
    ``η_t = η √(1 − β₂ᵗ) / (1 − β₁ᵗ);  w ← w − η_t m / (√v + ε̂)``."""
    if check:
        check_step(step)
        betas = check_betas(betas)
        eps = check_nonneg("eps", eps)
        check_bool("bias_correction", bias_correction)
        check_bool("eps_hat", eps_hat)
    consts = rules.adam_constants(step, _lr(lr, check), betas, eps, bias_correction, eps_hat)
    _run(rules.adam, p, g, (m, v), consts, step, lr, weight_decay, decoupled_weight_decay,
         maximize, grad_scale, noise, noise_offset, check, stream)


def nadam(
    p: Arrays, g: Arrays, m: Arrays, v: Arrays, step: int,
    lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, *,
    momentum_decay: float | None = None, mu_product: float = 1.0,
    weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False,
    grad_scale: float = 1.0, noise: GradientNoise | None = None, noise_offset: Offsets = 0,
    check: bool = True, stream: Any = None,
) -> float:
    """Nadam (spec: Adam + Nesterov; Dozat 2016), constant β₁ by default;
    ``momentum_decay=ψ`` gives torch's NAdam schedule.

    Returns ``Π_t`` (the running product of μ; pass it back as ``mu_product`` next step,
    starting from 1.0). Without ``momentum_decay`` it is returned unchanged.
    """
    if check:
        check_step(step)
        betas = check_betas(betas)
        eps = check_nonneg("eps", eps)
        momentum_decay = check_optional_nonneg("momentum_decay", momentum_decay)
        mu_product = check_mu_product(mu_product)
    consts, mu_product = rules.nadam_constants(step, _lr(lr, check), betas, eps, momentum_decay,
                                               mu_product)
    _run(rules.nadam, p, g, (m, v), consts, step, lr, weight_decay, decoupled_weight_decay,
         maximize, grad_scale, noise, noise_offset, check, stream)
    return mu_product


def amsgrad(
    p: Arrays, g: Arrays, m: Arrays, v: Arrays, v_max: Arrays, step: int,
    lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, *,
    bias_correction: bool = False,
    weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False,
    grad_scale: float = 1.0, noise: GradientNoise | None = None, noise_offset: Offsets = 0,
    check: bool = True, stream: Any = None,
) -> None:
    """AMSGrad (spec; Reddi et al. 2018): Adam's m, v, ``v̂ ← max(v̂, v);
    w ← w − η m / (√v̂ + ε)``; ``bias_correction=True`` is torch's ``Adam(amsgrad=True)``."""
    if check:
        check_step(step)
        betas = check_betas(betas)
        eps = check_nonneg("eps", eps)
        check_bool("bias_correction", bias_correction)
    consts = rules.amsgrad_constants(step, _lr(lr, check), betas, eps, bias_correction)
    _run(rules.amsgrad, p, g, (m, v, v_max), consts, step, lr, weight_decay,
         decoupled_weight_decay, maximize, grad_scale, noise, noise_offset, check, stream)


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

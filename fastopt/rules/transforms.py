"""The common transforms around every rule, written once for every backend.

``docs/equations.md`` fixes their order before the rule: maximize and clipping as one scale
``g ← s·g``, then the annealed gradient noise ``g ← g + σ·N(0, 1)``, then L2 weight decay
``g ← g + λ w`` or the decoupled decay ``w ← w (1 − ηλ)`` (AdamW, passed as ``decay``).
:func:`transformed` builds, for one rule, the element function a driver calls for each
element; the CPU driver calls it from its ``prange`` loop, the CUDA driver from its kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache

from .._jit import bind, device
from ..philox import standard_normal


def RULE(p, g, s, h):  # noqa: N802 - placeholder, bound to a rule by transformed()
    raise NotImplementedError


@device
def _element(p, g, s, h, scale, wd, decay, noise, index):
    """One element's step: the transforms, then the rule. ``scale``, ``noise``, ``wd`` and
    ``decay`` are None when switched off (a scale or decay of exactly 1 changes no bit), and
    the compilers prune those branches, so a plain step does the rule's arithmetic only;
    ``index`` is the element's uint64 position within the array, ``noise[1]`` the array's
    position in the layout."""
    if scale is not None:
        g = g * scale
    if noise is not None:
        sigma, offset, step, k0, k1 = noise
        g += sigma * standard_normal(offset + index, step, k0, k1)
    if wd is not None:
        g += wd * p
    if decay is not None:
        p = p * decay
    return RULE(p, g, s, h)


def transformed(rule: Callable) -> Callable:
    """``element(p, g, s, h, scale, wd, decay, noise, index) -> (p, s)`` for ``rule``."""
    return device(bind(_element, f"element_{rule.__name__}", RULE=rule))


def DIRECTION(p, g, s, h, scale, wd, decay, noise, index):  # noqa: N802 - placeholder
    raise NotImplementedError  # bound to transformed(rule.direction) by trust_direction()


@device
def _trust_element(p, g, s, h, scale, wd, decay, noise, index):
    """A trust-ratio rule's first pass for one element: ``(w, u, s)``, the parameter as
    the rule sees it (after the decoupled decay), its direction and its state after the
    step. The drivers sum w² and u² over each array."""
    if decay is not None:
        p = p * decay
    u, s = DIRECTION(p, g, s, h, scale, wd, None, noise, index)
    return p, u, s


def TRUST_RULE(p, g, s, h):  # noqa: N802 - placeholder: a trust-ratio rule's element
    raise NotImplementedError


def TRUST_DIRECTION(p, g, s, h):  # noqa: N802 - placeholder: its first pass
    raise NotImplementedError


@device
def _direction_then_rule(p, g, s, h):
    """A trust-ratio rule's whole step in one pass, from the state before the step: the
    first pass's state update (``h`` less the trust ratio, its last constant), then the
    rule's second pass with the ratio. For storage that is rounded when written (16-bit,
    8-bit), where the first pass then only sums norms and writes nothing."""
    _, s = TRUST_DIRECTION(p, g, s, h[:-1])
    return TRUST_RULE(p, g, s, h)


@cache
def direction_then_rule(rule: Callable, direction: Callable) -> Callable:
    """:func:`_direction_then_rule` for a trust-ratio rule (``rule``, ``direction``)."""
    return device(bind(_direction_then_rule, f"{rule.__name__}_in_one_pass",
                       TRUST_RULE=rule, TRUST_DIRECTION=direction))


def trust_direction(direction: Callable) -> Callable:
    """:func:`_trust_element` for a trust-ratio rule's ``direction``, with the transforms."""
    return device(bind(_trust_element, f"trust_{direction.__name__}",
                       DIRECTION=transformed(direction)))


@device
def clip_scale(norm, max_norm):
    """torch's ``clip_grad_norm_`` factor ``min(1, max_norm / (norm + 1e-6))``, NaN
    propagating as torch's clamp does: an infinite norm gives 0 (so an infinite gradient
    element becomes NaN, ∞·0, and the others 0), a NaN norm gives NaN. ``skip_nonfinite``
    is the way to skip such steps instead.

    Written as a plain comparison so the host and a GPU kernel agree."""
    r = max_norm / (norm + 1e-6)
    return 1.0 if r >= 1.0 else r


#: Flags a reduction raises for what its inputs held: an infinity, a NaN.
INF_SEEN = 1
NAN_SEEN = 2


@device
def reported(total, flags):
    """A sum of squares as the reductions report it, from the flags its inputs raised: NaN
    for a NaN input, −∞ for an infinite one (no NaN), else the sum (+∞ only when finite
    values overflow). Each block partial is reported so, and so is the total."""
    if flags & NAN_SEEN:
        return math.nan
    if flags & INF_SEEN:
        return -math.inf
    return total


@device
def flags_of(reported_total):
    """The flags a reported sum of squares stands for (the inverse of :func:`reported`)."""
    if math.isnan(reported_total):
        return NAN_SEEN
    if reported_total == -math.inf:
        return INF_SEEN
    return 0


@device
def norm_of(total):
    """``‖g‖₂`` from a sum of squares as the reductions report it (``drivers.cpu.
    sum_of_squares``): NaN for a NaN gradient, ∞ for an infinite one (reported as −∞)."""
    if total >= 0.0:
        return math.sqrt(total)
    if total == -math.inf:
        return math.inf
    return math.nan


def add_totals(a: float, b: float) -> float:
    """Two reported sums of squares added: NaN wins, then −∞ (an infinite gradient), even
    beside a +∞ that finite values overflowed to."""
    return reported(a + b, flags_of(a) | flags_of(b))


def nonfinite(total: float) -> bool:
    """Whether a reported sum of squares says a gradient held a NaN or an infinity (a +∞
    from finite values too large to square in float64 is not that)."""
    return flags_of(total) != 0


def norm_scale(total: float, max_norm: float) -> float:
    """The clip factor from a reported sum of squares ``total``."""
    return clip_scale(norm_of(total), max_norm)

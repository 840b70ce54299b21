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


@device
def clip_scale(norm, max_norm):
    """torch's ``clip_grad_norm_`` factor ``min(1, max_norm / (norm + 1e-6))``.

    Written as a plain comparison so the host and a GPU kernel agree, NaN included: a NaN
    norm gives 1 (Python's ``min(1.0, nan)``)."""
    r = max_norm / (norm + 1e-6)
    return r if r < 1.0 else 1.0


def norm_scale(total: float, max_norm: float) -> float:
    """The clip factor from a sum of squares ``total``."""
    return clip_scale(math.sqrt(total), max_norm)

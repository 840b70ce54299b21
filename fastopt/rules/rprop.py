"""Rprop (Riedmiller & Braun 1993): per-element step sizes from the gradient's sign changes.

``s = g·g_prev;  Δ ← clamp(Δ·(η₊ if s > 0, η₋ if s < 0, else 1), Δ_min, Δ_max);
g ← 0 where s < 0;  w ← w − sign(g)·Δ;  g_prev ← g``, as torch.optim.Rprop. The step sizes
start at ``lr``; ``lr`` sets nothing else (so a schedule only sets their start).
"""

from typing import Any

import numpy as np

from .._checks import check_nonneg, check_pair, check_positive
from .._jit import device
from .registry import LR, Counterpart, Hyper, Rule, State


@device
def rprop(p, g, s, h):
    prev, step_size = s
    eta_minus, eta_plus, step_min, step_max = h
    zero = eta_plus - eta_plus
    sign = g * prev
    if sign > zero:
        step_size = step_size * eta_plus
    elif sign < zero:
        step_size = step_size * eta_minus
        g = zero
    elif sign != sign:  # a NaN product: NaN step, as torch
        step_size = sign
    # clamp with NaN kept, as torch.clamp
    if step_size < step_min:
        step_size = step_min
    if step_size > step_max:
        step_size = step_max
    if g > zero:
        p = p - step_size
    elif g < zero:
        p = p + step_size
    else:  # g = 0 moves nothing; a NaN g makes p NaN, as torch's sign(NaN)
        p = p + g * zero
    return p, (g, step_size)


def check_etas(name: str, value: Any) -> tuple[float, float]:
    minus, plus = check_pair(name, value, "eta_minus", "eta_plus")
    minus, plus = check_positive(f"{name}[0]", minus), check_positive(f"{name}[1]", plus)
    if not minus < 1.0 < plus:
        raise ValueError(f"{name} must be (eta_minus, eta_plus) with 0 < eta_minus < 1 < "
                         f"eta_plus, got {value!r}")
    return minus, plus


def check_step_sizes(name: str, value: Any) -> tuple[float, float]:
    lo, hi = check_pair(name, value, "min", "max")
    lo, hi = check_nonneg(f"{name}[0]", lo), check_nonneg(f"{name}[1]", hi)
    if lo > hi:
        raise ValueError(f"{name} must be (min, max) with min <= max, got {value!r}")
    return lo, hi


def numpy_rprop(p, g, st, t, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0)):
    prev, step_size = st
    sign = np.sign(g * prev)
    step_size *= np.where(sign > 0, etas[1], np.where(sign < 0, etas[0], 1.0))
    np.clip(step_size, *step_sizes, out=step_size)
    g = np.where(sign < 0, 0.0, g)
    p -= np.sign(g) * step_size
    prev[...] = g


RULE = Rule(
    name="Rprop",
    summary="Rprop (Riedmiller & Braun 1993): each element's step size grows by η₊ while "
            "its gradient keeps its sign and shrinks by η₋ when it flips; "
            "``w ← w − sign(g)·Δ``, as torch.optim.Rprop.",
    details="The step sizes start at ``lr`` (with a schedule, its value at the first step); "
            "after that ``lr`` changes nothing.",
    element=rprop,
    constants=lambda t, lr, hp: (*hp["etas"], *hp["step_sizes"]),
    constants_names=("eta_minus", "eta_plus", "step_min", "step_max"),
    hyperparameters=(
        LR(1e-2),
        Hyper("etas", (0.5, 1.2), check_etas,
              "(η₋, η₊): the step size's factors on a sign flip and on a kept sign, "
              "0 < η₋ < 1 < η₊.", "tuple[float, float]"),
        Hyper("step_sizes", (1e-6, 50.0), check_step_sizes,
              "(Δ_min, Δ_max): the bounds of the step sizes.", "tuple[float, float]"),
    ),
    state=(State("prev", "the previous step's gradient (0 where its sign flipped)."),
           State("step_size", "Δ, each element's step size.", initial="lr",
                 sign="nonnegative")),
    torch=Counterpart("torch.optim.Rprop", {"lr": 1e-2}),
    demo_lr=1e-3, rosenbrock_lr=1e-3, divides=False, numpy_step=numpy_rprop, rank=23,
)

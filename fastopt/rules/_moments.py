"""Pieces shared by the adaptive rules: moving averages and the ε-guarded denominator."""

import math

from .._jit import device


@device
def ema(avg, x, beta, one_minus_beta):
    """Exponential moving average ``beta·avg + (1 − beta)·x``."""
    return beta * avg + one_minus_beta * x


@device
def rms_denominator(mean_square, eps_in, eps_out):
    """``√(s + eps_in) + eps_out``: the spec's ``√(s + ε)`` is ``(ε, 0)``, torch's
    ``√s + ε`` is ``(0, ε)``. Adding an exact zero changes no bit, so one form serves both."""
    return math.sqrt(mean_square + eps_in) + eps_out


@device
def adam_moments(m, v, g, beta1, one_minus_beta1, beta2, one_minus_beta2):
    """Adam's moments after a step: ``(β₁m + (1 − β₁)g, β₂v + (1 − β₂)g²)``."""
    return ema(m, g, beta1, one_minus_beta1), ema(v, g * g, beta2, one_minus_beta2)


def numpy_moments(m, v, g, b1, b2) -> None:
    """:func:`adam_moments` in place on NumPy arrays (the bench's NumPy yardsticks)."""
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * g * g


def eps_split(eps: float, eps_inside_sqrt: bool) -> tuple[float, float]:
    """The ``(eps_in, eps_out)`` pair for :func:`rms_denominator`."""
    return (eps, 0.0) if eps_inside_sqrt else (0.0, eps)

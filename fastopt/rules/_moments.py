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


def eps_split(eps: float, eps_inside_sqrt: bool) -> tuple[float, float]:
    """The ``(eps_in, eps_out)`` pair for :func:`rms_denominator`."""
    return (eps, 0.0) if eps_inside_sqrt else (0.0, eps)

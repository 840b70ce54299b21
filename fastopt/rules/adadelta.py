"""Adadelta (Zeiler 2012): step sizes from the ratio of two running RMS values.

``E ← ρE + (1 − ρ)g²;  Δ = √(D + ε) / √(E + ε) · g;  D ← ρD + (1 − ρ)Δ²;  w ← w − ηΔ``,
as torch.optim.Adadelta (``η = 1``, ``ρ = 0.9``, ``ε = 1e-6``; the paper has no η).
"""

import math

import numpy as np

from .._checks import check_unit
from .._jit import device
from ._moments import ema
from .registry import EPS, LR, Counterpart, Hyper, Rule, State
from .rmsprop import SQUARE_AVG


@device
def adadelta(p, g, s, h):
    square_avg, acc_delta = s
    lr, rho, one_minus_rho, eps = h
    square_avg = ema(square_avg, g * g, rho, one_minus_rho)
    delta = math.sqrt(acc_delta + eps) / math.sqrt(square_avg + eps) * g
    acc_delta = ema(acc_delta, delta * delta, rho, one_minus_rho)
    return p - lr * delta, (square_avg, acc_delta)


def numpy_adadelta(p, g, st, t, lr=1.0, rho=0.9, eps=1e-6):
    square_avg, acc_delta = st
    square_avg *= rho
    square_avg += (1 - rho) * g * g
    delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
    acc_delta *= rho
    acc_delta += (1 - rho) * delta * delta
    p -= lr * delta


RULE = Rule(
    name="Adadelta",
    summary="Adadelta (Zeiler 2012): ``E ← ρE + (1−ρ)g²;  Δ = √(D + ε)/√(E + ε)·g;  "
            "D ← ρD + (1−ρ)Δ²;  w ← w − ηΔ``, as torch.optim.Adadelta.",
    element=adadelta,
    constants=lambda t, lr, hp: (lr, hp["rho"], 1.0 - hp["rho"], hp["eps"]),
    constants_names=("lr", "rho", "one_minus_rho", "eps"),
    hyperparameters=(LR(1.0), Hyper("rho", 0.9, check_unit, "ρ, the decay of both means."),
                     EPS(1e-6, "ε, inside both square roots.")),
    state=(SQUARE_AVG, State("acc_delta", "D, the moving mean of Δ².", sign="nonnegative")),
    torch=Counterpart("torch.optim.Adadelta", {"lr": 1.0}),
    optax=Counterpart("optax.adadelta", {"learning_rate": 1.0}),
    demo_lr=1.0, rosenbrock_lr=1.0, numpy_step=numpy_adadelta, rank=21,
)

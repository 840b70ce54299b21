"""RMSprop (spec; Tieleman & Hinton 2012), with torch's centered and momentum options.

Spec: ``E ← α E + (1 − α) g²;  w ← w − η g / √(E + ε)`` (the spec's γ is ``alpha``).
``eps_inside_sqrt=False``: torch's ``η g / (√E + ε)``. ``centered`` (Graves 2013) also
tracks ``ḡ ← α ḡ + (1 − α) g`` and divides by ``√(E − ḡ² + ε)``. ``momentum=μ``:
``b ← μ b + g / denom;  w ← w − η b``. The state tuple holds ``(E[, ḡ][, b])``.
"""

import numpy as np

from .._checks import check_bool, check_nonneg
from .._jit import device
from ._moments import ema, eps_split, rms_denominator
from .registry import ALPHA, EPS, EPS_INSIDE_SQRT, LR, Counterpart, Hyper, Rule, State


@device
def rmsprop(p, g, s, h):
    (square_avg,) = s
    lr, alpha, one_minus_alpha, eps_in, eps_out, mu = h
    square_avg = ema(square_avg, g * g, alpha, one_minus_alpha)
    return p - lr * g / rms_denominator(square_avg, eps_in, eps_out), (square_avg,)


@device
def rmsprop_centered(p, g, s, h):
    square_avg, grad_avg = s
    lr, alpha, one_minus_alpha, eps_in, eps_out, mu = h
    square_avg = ema(square_avg, g * g, alpha, one_minus_alpha)
    grad_avg = ema(grad_avg, g, alpha, one_minus_alpha)
    return (p - lr * g / rms_denominator(square_avg - grad_avg * grad_avg, eps_in, eps_out),
            (square_avg, grad_avg))


@device
def rmsprop_momentum(p, g, s, h):
    square_avg, momentum_buffer = s
    lr, alpha, one_minus_alpha, eps_in, eps_out, mu = h
    square_avg = ema(square_avg, g * g, alpha, one_minus_alpha)
    momentum_buffer = mu * momentum_buffer + g / rms_denominator(square_avg, eps_in, eps_out)
    return p - lr * momentum_buffer, (square_avg, momentum_buffer)


@device
def rmsprop_centered_momentum(p, g, s, h):
    square_avg, grad_avg, momentum_buffer = s
    lr, alpha, one_minus_alpha, eps_in, eps_out, mu = h
    square_avg = ema(square_avg, g * g, alpha, one_minus_alpha)
    grad_avg = ema(grad_avg, g, alpha, one_minus_alpha)
    denom = rms_denominator(square_avg - grad_avg * grad_avg, eps_in, eps_out)
    momentum_buffer = mu * momentum_buffer + g / denom
    return p - lr * momentum_buffer, (square_avg, grad_avg, momentum_buffer)


def rmsprop_constants(
    lr: float, alpha: float, eps: float, eps_inside_sqrt: bool, momentum: float
) -> tuple[float, ...]:
    return (lr, alpha, 1.0 - alpha, *eps_split(eps, eps_inside_sqrt), momentum)


def rmsprop_variant(centered: bool, momentum: float):
    """The rule for these options; its state tuple is ``(E[, ḡ][, b])``."""
    if centered:
        return rmsprop_centered_momentum if momentum > 0 else rmsprop_centered
    return rmsprop_momentum if momentum > 0 else rmsprop


def numpy_rmsprop(p, g, st, t, lr=1e-2, alpha=0.9, eps=1e-6):
    (square_avg,) = st
    square_avg *= alpha
    square_avg += (1 - alpha) * g * g
    p -= lr * g / np.sqrt(square_avg + eps)


#: The moving mean of g² (shared with Adadelta).
SQUARE_AVG = State("square_avg", "E, the moving mean of g².", sign="nonnegative")


def _momentum_kept(hp):
    return hp["momentum"] > 0


def _centered(hp):
    return hp["centered"]


RULE = Rule(
    name="RMSprop",
    summary="RMSprop (spec; Tieleman & Hinton 2012): ``E ← α E + (1 − α) g²;  "
            "w ← w − η g / √(E + ε)``, ``alpha = 0.9`` (the spec's γ), ``ε = 1e-6``.",
    details="torch.optim.RMSprop (``alpha=0.99, eps=1e-8``): ``eps_inside_sqrt=False``; "
            "``centered=True`` divides by ``√(E − ḡ²)``; ``momentum=μ`` adds a buffer "
            "``b ← μ b + g / denom;  w ← w − η b``.",
    element=rmsprop,
    variant=lambda hp: rmsprop_variant(hp["centered"], hp["momentum"]),
    constants=lambda t, lr, hp: rmsprop_constants(lr, hp["alpha"], hp["eps"],
                                                  hp["eps_inside_sqrt"], hp["momentum"]),
    constants_names=("lr", "alpha", "one_minus_alpha", "eps_in", "eps_out", "mu"),
    hyperparameters=(
        LR(1e-2), ALPHA, EPS(1e-6), EPS_INSIDE_SQRT,
        Hyper("centered", False, check_bool,
              "Divide by the centred ``√(E − ḡ² + ε)`` (Graves 2013).", "bool", True),
        Hyper("momentum", 0.0, check_nonneg,
              "μ > 0 keeps a buffer ``b ← μ b + g / denom;  w ← w − η b``.", "float", True),
    ),
    state=(
        SQUARE_AVG,
        State("grad_avg", "ḡ, the moving mean of g (centered only).", when=_centered,
              option="centered=True"),
        State("momentum_buffer", "b, the momentum buffer (momentum > 0 only).",
              when=_momentum_kept, option="momentum > 0"),
    ),
    variants=({}, {"centered": True}, {"momentum": 0.9}, {"centered": True, "momentum": 0.9}),
    torch=Counterpart("torch.optim.RMSprop", {"lr": 1e-2},
                      "torch: alpha=0.99, eps=1e-8, eps_inside_sqrt=False"),
    optax=Counterpart("optax.rmsprop"),
    demo_lr=1e-3, rosenbrock_lr=0.01, numpy_step=numpy_rmsprop, rank=5, spec=True,
)

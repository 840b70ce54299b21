"""AdaGrad (spec; Duchi, Hazan & Singer 2011).

``G ← G + g²;  w ← w − η g / √(G + ε)`` with the spec's ``ε = 1e-6``.
``eps_inside_sqrt=False`` gives torch.optim.Adagrad's ``η g / (√G + ε)``.
"""

import numpy as np

from .._checks import check_nonneg
from .._jit import device
from ._moments import eps_split, rms_denominator
from .registry import EPS, EPS_INSIDE_SQRT, LR, Counterpart, Hyper, Rule, State


@device
def adagrad(p, g, s, h):
    (sum_sq,) = s
    lr, eps_in, eps_out = h
    sum_sq = sum_sq + g * g
    return p - lr * g / rms_denominator(sum_sq, eps_in, eps_out), (sum_sq,)


def adagrad_constants(lr: float, eps: float, eps_inside_sqrt: bool) -> tuple[float, ...]:
    return (lr, *eps_split(eps, eps_inside_sqrt))


def numpy_adagrad(p, g, st, t, lr=1e-2, eps=1e-6):
    (sum_sq,) = st
    sum_sq += g * g
    p -= lr * g / np.sqrt(sum_sq + eps)


RULE = Rule(
    name="AdaGrad",
    summary="AdaGrad (spec; Duchi et al. 2011): ``G ← G + g²;  w ← w − η g / √(G + ε)``, "
            "``ε = 1e-6``.",
    details="torch.optim.Adagrad: ``eps_inside_sqrt=False, eps=1e-10`` (``/(√G + ε)``); "
            "``initial_accumulator_value`` sets ``G₀``.",
    element=adagrad,
    constants=lambda t, lr, hp: adagrad_constants(lr, hp["eps"], hp["eps_inside_sqrt"]),
    constants_names=("lr", "eps_in", "eps_out"),
    hyperparameters=(
        LR(1e-2), EPS(1e-6), EPS_INSIDE_SQRT,
        Hyper("initial_accumulator_value", 0.0, check_nonneg, "G₀, the sum's start.",
              keyword_only=True),
    ),
    state=(State("sum_sq", "G, the sum of squared gradients.",
                 initial="initial_accumulator_value", sign="nonnegative"),),
    torch=Counterpart("torch.optim.Adagrad", {"lr": 1e-2},
                      "torch adds ε outside the root: eps_inside_sqrt=False, eps=1e-10"),
    optax=Counterpart("optax.adagrad"),
    demo_lr=0.05, rosenbrock_lr=0.3, numpy_step=numpy_adagrad, rank=4, spec=True,
)

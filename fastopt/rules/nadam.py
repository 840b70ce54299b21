"""Nadam (spec: "Adam + Nesterov accelerated gradient"; Dozat 2016).

Default, Dozat with a constant β₁ (as ``optax.nadam``): m, v as Adam,
``m̂ = β₁ m / (1 − β₁^(t+1)) + (1 − β₁) g / (1 − β₁ᵗ);  v̂ = v / (1 − β₂ᵗ);
w ← w − η m̂ / (√v̂ + ε)``.

``momentum_decay=ψ`` gives torch.optim.NAdam (ψ = 4e-3 there), Dozat's warming schedule
``μ_t = β₁ (1 − ½·0.96^(tψ))`` with ``Π_t = ∏_{i≤t} μ_i`` carried between steps:
``D = √(v / (1 − β₂ᵗ)) + ε;  w ← w − η (1 − μ_t)/(1 − Π_t) · g/D
− η μ_{t+1}/(1 − Π_t μ_{t+1}) · m/D``.

Both are ``w ← w − (a·g + b·m) / D`` with per-step constants a and b (one division per
element; torch divides twice, the results agree to an ulp).
"""

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._checks import check_mu_product, check_optional_nonneg
from .._jit import device
from ._moments import adam_moments, numpy_moments
from .adam import M, V
from .registry import BETAS, EPS, LR, Counterpart, GroupScalar, Hyper, Rule


@device
def nadam(p, g, s, h):
    m, v = s
    a, b, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bc2, eps = h
    m, v = adam_moments(m, v, g, beta1, one_minus_beta1, beta2, one_minus_beta2)
    return p - (a * g + b * m) / (math.sqrt(v * inv_bc2) + eps), (m, v)


def nadam_mu(step: int, beta1: float, momentum_decay: float) -> float:
    """Dozat's ``μ_t = β₁ (1 − ½·0.96^(tψ))``."""
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


def nadam_advance(step: int, hp: Mapping[str, Any]) -> dict[str, float]:
    """``Π_t = Π_{t−1} μ_t`` (unchanged without ``momentum_decay``)."""
    mu_product = hp["mu_product"]
    if hp["momentum_decay"] is not None:
        mu_product = mu_product * nadam_mu(step, hp["betas"][0], hp["momentum_decay"])
    return {"mu_product": mu_product}


def nadam_constants(
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    momentum_decay: float | None,
    mu_product: float,
) -> tuple[float, ...]:
    """Host constants for step ``t = step``; ``mu_product`` is ``Π_t`` (this step's,
    :func:`nadam_advance`)."""
    b1, b2 = betas
    if momentum_decay is None:
        a = lr * (1.0 - b1) / (1.0 - b1**step)
        b = lr * b1 / (1.0 - b1 ** (step + 1))
    else:
        mu = nadam_mu(step, b1, momentum_decay)
        mu_next = nadam_mu(step + 1, b1, momentum_decay)
        a = lr * (1.0 - mu) / (1.0 - mu_product)
        b = lr * mu_next / (1.0 - mu_product * mu_next)
    return (a, b, b1, 1.0 - b1, b2, 1.0 - b2, 1.0 / (1.0 - b2**step), eps)


def numpy_nadam(p, g, st, t, lr=2e-3, b1=0.9, b2=0.999, eps=1e-8):
    m, v = st
    numpy_moments(m, v, g, b1, b2)
    m_hat = (b1 / (1 - b1 ** (t + 1))) * m + ((1 - b1) / (1 - b1**t)) * g
    p -= lr * m_hat / (np.sqrt(v / (1 - b2**t)) + eps)


def _mu_product(name: str, value: Any) -> float:
    return check_mu_product(value)


RULE = Rule(
    name="Nadam",
    summary="Nadam (spec: Adam + Nesterov; Dozat 2016) with a constant β₁ (as optax.nadam): "
            "``m̂ = β₁ m/(1 − β₁^(t+1)) + (1 − β₁) g/(1 − β₁ᵗ)``, "
            "``w ← w − η m̂ / (√v̂ + ε)``.",
    details="``momentum_decay=4e-3`` gives torch.optim.NAdam (Dozat's μ_t warming schedule).",
    element=nadam,
    constants=lambda t, lr, hp: nadam_constants(t, lr, hp["betas"], hp["eps"],
                                                hp["momentum_decay"], hp["mu_product"]),
    constants_names=("a", "b", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2",
                     "inv_bc2", "eps"),
    hyperparameters=(
        LR(2e-3), BETAS((0.9, 0.999)), EPS(1e-8),
        Hyper("momentum_decay", None, check_optional_nonneg,
              "ψ: Dozat's warming schedule ``μ_t = β₁(1 − ½·0.96^(tψ))`` (torch: 4e-3); "
              "None: a constant β₁.", "float | None", True),
    ),
    state=(M, V),
    group_state=(GroupScalar("mu_product", 1.0, _mu_product,
                             "Π_t, the running product of μ (1.0 before the first step)."),),
    advance=nadam_advance,
    torch=Counterpart("torch.optim.NAdam", {"lr": 2e-3},
                      "torch warms β₁ up: momentum_decay=4e-3"),
    optax=Counterpart("optax.nadam"),
    demo_lr=2e-3, rosenbrock_lr=0.05, numpy_step=numpy_nadam, rank=7, spec=True,
)

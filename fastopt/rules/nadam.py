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

from .._jit import device
from ._moments import ema


@device
def nadam(p, g, s, h):
    m, v = s
    a, b, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bc2, eps = h
    m = ema(m, g, beta1, one_minus_beta1)
    v = ema(v, g * g, beta2, one_minus_beta2)
    return p - (a * g + b * m) / (math.sqrt(v * inv_bc2) + eps), (m, v)


def nadam_constants(
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    momentum_decay: float | None,
    mu_product: float,
) -> tuple[tuple[float, ...], float]:
    """Host constants for step ``t = step``, and ``Π_t`` (``mu_product`` is ``Π_{t−1}``)."""
    b1, b2 = betas
    if momentum_decay is None:
        a = lr * (1.0 - b1) / (1.0 - b1**step)
        b = lr * b1 / (1.0 - b1 ** (step + 1))
    else:
        mu = b1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
        mu_product = mu_product * mu
        a = lr * (1.0 - mu) / (1.0 - mu_product)
        b = lr * mu_next / (1.0 - mu_product * mu_next)
    return (a, b, b1, 1.0 - b1, b2, 1.0 - b2, 1.0 / (1.0 - b2**step), eps), mu_product

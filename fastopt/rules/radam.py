"""RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond").

Adam's m and v; while the variance of the adaptive rate is intractable (``ρ_t ≤ 5``) the
step is momentum SGD, after that Adam's step times the rectification ``r_t``:

``ρ∞ = 2/(1 − β₂) − 1;  ρ_t = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ);
r_t = √((ρ_t − 4)(ρ_t − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_t));
w ← w − η r_t m̂ √(1 − β₂ᵗ)/(√v + ε)`` if ``ρ_t > 5``, else ``w ← w − η m̂``,
with ``m̂ = m/(1 − β₁ᵗ)``, as torch.optim.RAdam. Which branch a step takes is a per-step
constant, so the element function branches on it uniformly.
"""

import math

import numpy as np

from .._jit import device
from ._moments import adam_moments, numpy_moments
from .adam import M, V
from .registry import BETAS, EPS, LR, Counterpart, Rule


@device
def radam(p, g, s, h):
    m, v = s
    step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, rectified, sqrt_bc2, eps = h
    m, v = adam_moments(m, v, g, beta1, one_minus_beta1, beta2, one_minus_beta2)
    if rectified:
        return p - step_size * m * (sqrt_bc2 / (math.sqrt(v) + eps)), (m, v)
    return p - step_size * m, (m, v)


def radam_rectification(step: int, beta2: float) -> float | None:
    """``r_t``, or None while ``ρ_t ≤ 5`` (the unrectified steps)."""
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2**step / (1.0 - beta2**step)
    if not rho_t > 5.0:
        return None
    return math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                     / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))


def radam_constants(step: int, lr: float, betas: tuple[float, float],
                    eps: float) -> tuple[float, ...]:
    b1, b2 = betas
    r = radam_rectification(step, b2)
    bc1 = 1.0 - b1**step
    if r is None:
        return (lr / bc1, b1, 1.0 - b1, b2, 1.0 - b2, 0.0, 1.0, eps)
    return (lr * r / bc1, b1, 1.0 - b1, b2, 1.0 - b2, 1.0, math.sqrt(1.0 - b2**step), eps)


def numpy_radam(p, g, st, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    m, v = st
    numpy_moments(m, v, g, b1, b2)
    r = radam_rectification(t, b2)
    if r is None:
        p -= (lr / (1 - b1**t)) * m
    else:
        p -= (lr * r / (1 - b1**t)) * m * (np.sqrt(1 - b2**t) / (np.sqrt(v) + eps))


RULE = Rule(
    name="RAdam",
    summary="RAdam (Liu et al. 2020): Adam with its adaptive rate switched on as its "
            "variance becomes tractable and rectified by ``r_t``, as torch.optim.RAdam.",
    details="``decoupled_weight_decay=True`` is torch's RAdam(decoupled_weight_decay=True).",
    element=radam,
    constants=lambda t, lr, hp: radam_constants(t, lr, hp["betas"], hp["eps"]),
    constants_names=("step_size", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2",
                     "rectified", "sqrt_bc2", "eps"),
    hyperparameters=(LR(1e-3), BETAS((0.9, 0.999)), EPS(1e-8)),
    state=(M, V),
    torch=Counterpart("torch.optim.RAdam", {"lr": 1e-3}),
    optax=Counterpart("optax.radam"),
    demo_lr=5e-3, rosenbrock_lr=0.05, numpy_step=numpy_radam, rank=22,
)

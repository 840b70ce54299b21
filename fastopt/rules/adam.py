"""Adam (spec; Kingma & Ba 2015) = RMSprop + momentum, with bias correction.

``m ← β₁ m + (1 − β₁) g;  v ← β₂ v + (1 − β₂) g²;  m̂ = m / (1 − β₁ᵗ);  v̂ = v / (1 − β₂ᵗ);
w ← w − η m̂ / (√v̂ + ε)``, ``betas=(0.9, 0.999)``, ``ε = 1e-8`` (the spec's ``g₁`` is a
typo for ``g_t``). Evaluated as torch.optim.Adam does, ``w ← w − (η / (1 − β₁ᵗ)) m /
(√v / √(1 − β₂ᵗ) + ε)``: the same quantity with the bias corrections folded into
per-step constants (the second one as a reciprocal: a multiply where torch divides, one
division fewer per element; results agree to an ulp).
"""

import math

import numpy as np

from .._checks import check_bool
from .._jit import device
from ._moments import adam_moments, numpy_moments
from .registry import BETAS, BIAS_CORRECTION, EPS, LR, Counterpart, Hyper, Rule, State


@device
def adam_update(p, m, v, step_size, inv_bc2_sqrt, eps):
    """``w − step_size · m / (√v · inv_bc2_sqrt + ε)``; shared with AMSGrad."""
    return p - step_size * m / (math.sqrt(v) * inv_bc2_sqrt + eps)


@device
def adam(p, g, s, h):
    m, v = s
    step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bc2_sqrt, eps = h
    m, v = adam_moments(m, v, g, beta1, one_minus_beta1, beta2, one_minus_beta2)
    return adam_update(p, m, v, step_size, inv_bc2_sqrt, eps), (m, v)


def adam_constants(
    step: int, lr: float, betas: tuple[float, float], eps: float, bias_correction: bool = True,
    eps_hat: bool = False,
) -> tuple[float, ...]:
    """Host constants for step ``t = step`` (1 on the first step).

    ``bias_correction=False``: ``w ← w − η m / (√v + ε)``. ``eps_hat=True``: the form at
    the end of Kingma & Ba's section 2, used by Keras and TensorFlow,
    ``η_t = η √(1 − β₂ᵗ) / (1 − β₁ᵗ);  w ← w − η_t m / (√v + ε̂)``: the same step except
    that ε̂ is added to the uncorrected √v (ε̂ = ε √(1 − β₂ᵗ) gives the default form).
    Without bias correction the two forms are one."""
    b1, b2 = betas
    if bias_correction and eps_hat:
        step_size = lr * math.sqrt(1.0 - b2**step) / (1.0 - b1**step)
        inv_bc2_sqrt = 1.0
    elif bias_correction:
        step_size = lr / (1.0 - b1**step)
        inv_bc2_sqrt = 1.0 / math.sqrt(1.0 - b2**step)
    else:
        step_size, inv_bc2_sqrt = lr, 1.0
    return (step_size, b1, 1.0 - b1, b2, 1.0 - b2, inv_bc2_sqrt, eps)


def numpy_adam(p, g, st, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    m, v = st
    numpy_moments(m, v, g, b1, b2)
    p -= (lr / (1 - b1**t)) * m / (np.sqrt(v / (1 - b2**t)) + eps)


#: Adam's moment buffers (shared with Nadam, AMSGrad, RAdam).
M = State("m", "m, the moving mean of g (first moment).")
V = State("v", "v, the moving mean of g² (second moment).", sign="nonnegative")

RULE = Rule(
    name="Adam",
    summary="Adam (spec; Kingma & Ba 2015): ``m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;  "
            "w ← w − η m̂ / (√v̂ + ε)`` with bias-corrected ``m̂, v̂``; "
            "``betas=(0.9, 0.999)``, ``ε = 1e-8`` (as torch.optim.Adam).",
    details="``decoupled_weight_decay=True`` is AdamW. ``bias_correction=False``: "
            "``w ← w − η m / (√v + ε)``. ``eps_hat=True``: the form of Keras, TensorFlow "
            "and many NumPy trainers (Kingma & Ba, end of section 2): "
            "``η_t = η √(1 − β₂ᵗ) / (1 − β₁ᵗ);  w ← w − η_t m / (√v + ε̂)``.",
    element=adam,
    constants=lambda t, lr, hp: adam_constants(t, lr, hp["betas"], hp["eps"],
                                               hp["bias_correction"], hp["eps_hat"]),
    constants_names=("step_size", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2",
                     "inv_bc2_sqrt", "eps"),
    hyperparameters=(
        LR(1e-3), BETAS((0.9, 0.999)), EPS(1e-8), BIAS_CORRECTION,
        Hyper("eps_hat", False, check_bool,
              "Keras' form: ε added to the uncorrected √v.", "bool", True),
    ),
    state=(M, V),
    torch=Counterpart("torch.optim.Adam", {"lr": 1e-3}),
    optax=Counterpart("optax.adam", {"eps_root": 0.0}),
    demo_lr=2e-3, rosenbrock_lr=0.05, numpy_step=numpy_adam, rank=6, spec=True,
)

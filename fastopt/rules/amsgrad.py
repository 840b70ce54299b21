"""AMSGrad (spec; Reddi, Kale & Kumar 2018).

Spec (no bias correction): m, v as Adam, ``v̂ ← max(v̂, v);  w ← w − η m / (√v̂ + ε)``.
``bias_correction=True`` gives torch.optim.Adam(amsgrad=True): the max of the raw v, then
``w ← w − (η / (1 − β₁ᵗ)) m / (√v̂ / √(1 − β₂ᵗ) + ε)``.
"""

import numpy as np

from .._checks import check_bool
from .._jit import device
from ._moments import adam_moments, numpy_moments
from .adam import M, V, adam_constants, adam_update
from .registry import BETAS, EPS, LR, Counterpart, Hyper, Rule, State


@device
def amsgrad(p, g, s, h):
    m, v, v_max = s
    step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bc2_sqrt, eps = h
    m, v = adam_moments(m, v, g, beta1, one_minus_beta1, beta2, one_minus_beta2)
    # max(v̂, v) with NaN kept, as np.maximum and torch.maximum (Python's max drops a NaN v)
    v_max = v_max if (v_max >= v or v_max != v_max) else v
    return adam_update(p, m, v_max, step_size, inv_bc2_sqrt, eps), (m, v, v_max)


def amsgrad_constants(
    step: int, lr: float, betas: tuple[float, float], eps: float, bias_correction: bool
) -> tuple[float, ...]:
    return adam_constants(step, lr, betas, eps, bias_correction)


def numpy_amsgrad(p, g, st, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    m, v, v_max = st
    numpy_moments(m, v, g, b1, b2)
    np.maximum(v_max, v, out=v_max)
    p -= lr * m / (np.sqrt(v_max) + eps)


RULE = Rule(
    name="AMSGrad",
    summary="AMSGrad (spec; Reddi et al. 2018): Adam's m and v, ``v̂ ← max(v̂, v);  "
            "w ← w − η m / (√v̂ + ε)`` without bias correction.",
    details="``bias_correction=True`` gives torch.optim.Adam(amsgrad=True).",
    element=amsgrad,
    constants=lambda t, lr, hp: amsgrad_constants(t, lr, hp["betas"], hp["eps"],
                                                  hp["bias_correction"]),
    constants_names=("step_size", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2",
                     "inv_bc2_sqrt", "eps"),
    hyperparameters=(
        LR(1e-3), BETAS((0.9, 0.999)), EPS(1e-8),
        Hyper("bias_correction", False, check_bool,
              "Bias-correct m and the running max (torch's amsgrad=True).", "bool", True),
    ),
    state=(M, V, State("v_max", "v̂, the running maximum of v.", sign="nonnegative")),
    torch=Counterpart("torch.optim.Adam", {"lr": 1e-3, "amsgrad": True},
                      "torch bias-corrects: bias_correction=True"),
    optax=Counterpart("optax.amsgrad"),
    demo_lr=1e-3, rosenbrock_lr=0.05, numpy_step=numpy_amsgrad, rank=8, spec=True,
)

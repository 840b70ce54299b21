"""LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning"): Adam's update with
a layer-wise trust ratio.

Per parameter array: m, v as Adam; ``u = m̂ / (√v̂ + ε) + λw`` (λ: ``weight_decay``, the
paper's decoupled decay, inside the ratio); ``r = ‖w‖ / ‖u‖`` (1 where either norm is 0);
``w ← w − η r u``, as optax.lamb. Two passes over each array: the first updates m and v
and sums ``w²`` and ``u²``, the second takes the step from the new m and v.
``decoupled_weight_decay=False`` makes ``weight_decay`` plain L2 on the gradient instead.
"""

import math

import numpy as np

from .._jit import device
from ._moments import adam_moments, numpy_moments
from .adam import M, V
from .registry import BETAS, EPS, LR, Counterpart, Rule, safe_trust_ratio


@device
def lamb_update(p, m, v, inv_bc1, inv_bc2_sqrt, eps, wd):
    """``u = m̂ / (√v̂ + ε) + λw``."""
    return (m * inv_bc1) / (math.sqrt(v) * inv_bc2_sqrt + eps) + wd * p


@device
def lamb_direction(p, g, s, h):
    m, v = s
    lr, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bc1, inv_bc2_sqrt, eps, wd = h
    m, v = adam_moments(m, v, g, beta1, one_minus_beta1, beta2, one_minus_beta2)
    return lamb_update(p, m, v, inv_bc1, inv_bc2_sqrt, eps, wd), (m, v)


@device
def lamb(p, g, s, h):
    m, v = s
    (lr, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bc1, inv_bc2_sqrt, eps, wd,
     trust_ratio) = h
    return p - (lr * trust_ratio) * lamb_update(p, m, v, inv_bc1, inv_bc2_sqrt, eps, wd), (m, v)


def lamb_constants(step: int, lr: float, hp) -> tuple[float, ...]:
    b1, b2 = hp["betas"]
    wd = hp["weight_decay"] if hp["decoupled_weight_decay"] else 0.0
    return (lr, b1, 1.0 - b1, b2, 1.0 - b2, 1.0 / (1.0 - b1**step),
            1.0 / math.sqrt(1.0 - b2**step), hp["eps"], wd)


def numpy_lamb(p, g, st, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-6):
    m, v = st
    numpy_moments(m, v, g, b1, b2)
    u = (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
    pn, un = np.linalg.norm(p), np.linalg.norm(u)
    p -= lr * (pn / un if pn > 0 and un > 0 else 1.0) * u


RULE = Rule(
    name="LAMB",
    summary="LAMB (You et al. 2019): per array, ``u = m̂/(√v̂ + ε) + λw`` from Adam's "
            "moments, ``w ← w − η (‖w‖/‖u‖) u``, as optax.lamb.",
    details="The trust ratio ``‖w‖/‖u‖`` is each parameter array's (each array of a list, "
            "each named array of a FlatParams), 1 where either norm is 0. "
            "``weight_decay`` is LAMB's decoupled decay, inside the ratio; with "
            "``decoupled_weight_decay=False`` it is L2 on the gradient instead.",
    element=lamb,
    direction=lamb_direction,
    trust_ratio=lambda pn, un, hp: safe_trust_ratio(pn, un, pn / un if un else 1.0),
    decay_in_update=True,
    constants=lamb_constants,
    constants_names=("lr", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2", "inv_bc1",
                     "inv_bc2_sqrt", "eps", "wd"),
    hyperparameters=(LR(1e-3), BETAS((0.9, 0.999)), EPS(1e-6)),
    state=(M, V),
    common_defaults={"decoupled_weight_decay": True},
    optax=Counterpart("optax.lamb", {"eps_root": 0.0, "weight_decay": 0.0}),
    demo_lr=5e-3, rosenbrock_lr=0.05, numpy_step=numpy_lamb, rank=26,
)

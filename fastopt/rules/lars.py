"""LARS (You, Gitman & Ginsburg 2017, "Large Batch Training of Convolutional Networks"):
momentum SGD with a layer-wise trust ratio.

Per parameter array: ``u = g + λw`` (λ: ``weight_decay``, the common L2 decay);
``r = c ‖w‖ / (‖u‖ + ε)`` (c: ``trust_coefficient``; 1 where either norm is 0);
``v ← μ v + η r u;  w ← w − v``, as optax.lars (without Nesterov). Two passes over each
array: the first sums ``w²`` and ``u²``, the second takes the step.
"""

import numpy as np

from .._checks import check_nonneg
from .._jit import device
from .registry import LR, MOMENTUM, VELOCITY, Counterpart, Hyper, Rule, safe_trust_ratio


@device
def lars_direction(p, g, s, h):
    (velocity,) = s
    lr, mu = h
    return g, (velocity,)


@device
def lars(p, g, s, h):
    (velocity,) = s
    lr, mu, trust_ratio = h
    velocity = mu * velocity + (lr * trust_ratio) * g
    return p - velocity, (velocity,)


def lars_ratio(param_norm: float, update_norm: float, hp) -> float:
    return safe_trust_ratio(param_norm, update_norm, hp["trust_coefficient"] * param_norm
                            / (update_norm + hp["eps"]))


def numpy_lars(p, g, st, t, lr=1.0, mu=0.9, c=1e-3, eps=0.0):
    (velocity,) = st
    pn, un = np.linalg.norm(p), np.linalg.norm(g)
    r = c * pn / (un + eps) if pn > 0 and un > 0 else 1.0
    velocity *= mu
    velocity += (lr * r) * g
    p -= velocity


RULE = Rule(
    name="LARS",
    summary="LARS (You et al. 2017): per array, ``r = c‖w‖/(‖u‖ + ε)`` with "
            "``u = g + λw``, ``v ← μv + η r u;  w ← w − v``, as optax.lars.",
    details="The trust ratio is each parameter array's (each array of a list, each named "
            "array of a FlatParams), 1 where either norm is 0; ``weight_decay`` (L2) is in "
            "``u``, as in the paper.",
    element=lars,
    direction=lars_direction,
    trust_ratio=lars_ratio,
    constants=lambda t, lr, hp: (lr, hp["momentum"]),
    constants_names=("lr", "mu"),
    hyperparameters=(
        LR(1.0), MOMENTUM,
        Hyper("trust_coefficient", 1e-3, check_nonneg, "c, the trust ratio's scale."),
        Hyper("eps", 0.0, check_nonneg, "ε, added to ‖u‖ in the ratio."),
    ),
    state=(VELOCITY,),
    optax=Counterpart("optax.lars", {"momentum": 0.9}),
    demo_lr=1.0, rosenbrock_lr=0.1, divides=False, numpy_step=numpy_lars, rank=27,
)

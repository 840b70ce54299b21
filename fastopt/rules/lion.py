"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

``c = β₁ m + (1 − β₁) g;  w ← w − η sign(c);  m ← β₂ m + (1 − β₂) g``, with decoupled
weight decay ``w ← w(1 − ηλ)`` (the paper's, so ``decoupled_weight_decay`` defaults to
True here), as optax.lion. ``betas=(0.9, 0.99)``; the paper's η is 3-10x smaller than
AdamW's.
"""

import numpy as np

from .._jit import device
from ._moments import ema
from .adam import M
from .registry import BETAS, LR, Counterpart, Rule


@device
def lion(p, g, s, h):
    (m,) = s
    lr, beta1, one_minus_beta1, beta2, one_minus_beta2 = h
    c = ema(m, g, beta1, one_minus_beta1)
    if c > lr - lr:
        p = p - lr
    elif c < lr - lr:
        p = p + lr
    elif c != c:  # a NaN gradient: NaN, as sign(NaN)
        p = c
    return p, (ema(m, g, beta2, one_minus_beta2),)


def numpy_lion(p, g, st, t, lr=1e-4, b1=0.9, b2=0.99):
    (m,) = st
    p -= lr * np.sign(b1 * m + (1 - b1) * g)
    m *= b2
    m += (1 - b2) * g


RULE = Rule(
    name="Lion",
    summary="Lion (Chen et al. 2023): ``c = β₁m + (1−β₁)g;  w ← w − η sign(c);  "
            "m ← β₂m + (1−β₂)g``, with decoupled weight decay, as optax.lion.",
    details="Weight decay is decoupled by default, as in the paper: ``weight_decay=λ`` "
            "gives ``w ← w(1 − ηλ)`` before the step.",
    element=lion,
    constants=lambda t, lr, hp: (lr, hp["betas"][0], 1.0 - hp["betas"][0], hp["betas"][1],
                                 1.0 - hp["betas"][1]),
    constants_names=("lr", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2"),
    hyperparameters=(LR(1e-4), BETAS((0.9, 0.99), "(β₁, β₂): the interpolation for the "
                                                  "sign and the momentum's decay.")),
    state=(M,),
    common_defaults={"decoupled_weight_decay": True},
    optax=Counterpart("optax.lion", {"weight_decay": 0.0}),
    demo_lr=1e-3, rosenbrock_lr=0.01, divides=False, numpy_step=numpy_lion, rank=25,
)

"""Adamax (Kingma & Ba 2015, section 7.1): Adam with the infinity norm.

``m ← β₁ m + (1 − β₁) g;  u ← max(β₂ u, |g| + ε);  w ← w − (η / (1 − β₁ᵗ)) m / u``, as
torch.optim.Adamax (whose ε inside the max keeps u > 0). ``betas=(0.9, 0.999)``,
``ε = 1e-8``, ``η = 2e-3`` (the paper's).
"""

import numpy as np

from .._jit import device
from ._moments import ema
from .adam import M
from .registry import BETAS, EPS, LR, Counterpart, Rule, State


@device
def adamax(p, g, s, h):
    m, u = s
    step_size, beta1, one_minus_beta1, beta2, eps = h
    m = ema(m, g, beta1, one_minus_beta1)
    decayed = beta2 * u
    bound = abs(g) + eps
    # max with NaN kept, as torch.maximum (Python's max drops a NaN)
    u = decayed if (decayed >= bound or decayed != decayed) else bound
    return p - step_size * m / u, (m, u)


def adamax_constants(step: int, lr: float, betas: tuple[float, float],
                     eps: float) -> tuple[float, ...]:
    b1, b2 = betas
    return (lr / (1.0 - b1**step), b1, 1.0 - b1, b2, eps)


def numpy_adamax(p, g, st, t, lr=2e-3, b1=0.9, b2=0.999, eps=1e-8):
    m, u = st
    m *= b1
    m += (1 - b1) * g
    u *= b2
    np.maximum(u, np.abs(g) + eps, out=u)
    p -= (lr / (1 - b1**t)) * m / u


RULE = Rule(
    name="Adamax",
    summary="Adamax (Kingma & Ba 2015, §7.1): ``m ← β₁m + (1−β₁)g;  u ← max(β₂u, |g| + ε);  "
            "w ← w − (η/(1 − β₁ᵗ)) m/u``, as torch.optim.Adamax.",
    element=adamax,
    constants=lambda t, lr, hp: adamax_constants(t, lr, hp["betas"], hp["eps"]),
    constants_names=("step_size", "beta1", "one_minus_beta1", "beta2", "eps"),
    hyperparameters=(LR(2e-3), BETAS((0.9, 0.999)),
                     EPS(1e-8, "ε, added to ``|g|`` inside the max (keeps u > 0).")),
    state=(M, State("u", "u, the exponentially weighted infinity norm of g.",
                         sign="nonnegative")),
    torch=Counterpart("torch.optim.Adamax", {"lr": 2e-3}),
    optax=Counterpart("optax.adamax", {}, "optax adds ε to u instead"),
    demo_lr=5e-3, rosenbrock_lr=0.05, numpy_step=numpy_adamax, rank=20,
)

"""Momentum (spec; Polyak 1964).

``v ← γ v + η g;  w ← w − v``. torch.optim.SGD(momentum=γ) keeps ``b ← γ b + g;
w ← w − η b``: the same for a constant η (``v = η b``), different under a schedule.
"""

from .._jit import device
from .registry import LR, MOMENTUM, VELOCITY, Counterpart, Rule


@device
def momentum(p, g, s, h):
    (velocity,) = s
    lr, gamma = h
    velocity = gamma * velocity + lr * g
    return p - velocity, (velocity,)


def momentum_constants(lr: float, momentum: float) -> tuple[float, ...]:
    return (lr, momentum)


def numpy_momentum(p, g, st, t, lr=1e-2, gamma=0.9):
    (v,) = st
    v *= gamma
    v += lr * g
    p -= v


RULE = Rule(
    name="Momentum",
    summary="Momentum (spec): ``v ← γ v + η g;  w ← w − v``, ``γ = momentum = 0.9``.",
    details="torch.optim.SGD(momentum=γ) keeps ``b = v/η``: identical for a constant η.",
    element=momentum,
    constants=lambda t, lr, hp: momentum_constants(lr, hp["momentum"]),
    constants_names=("lr", "gamma"),
    hyperparameters=(LR(1e-2), MOMENTUM),
    state=(VELOCITY,),
    torch=Counterpart("torch.optim.SGD", {"lr": 1e-2, "momentum": 0.9},
                      "torch keeps b = v/η (the same steps for a constant η)"),
    optax=Counterpart("optax.sgd", {"momentum": 0.9}),
    demo_lr=0.01, rosenbrock_lr=4e-4, divides=False, numpy_step=numpy_momentum, rank=2, spec=True,
)

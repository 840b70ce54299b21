"""Nesterov accelerated gradient (spec; Nesterov 1983).

The spec: ``v_t = γ v_{t−1} + η ∇L(w_t − γ v_{t−1});  w_{t+1} = w_t − v_t``. A caller hands
the gradient at the point the optimizer holds, so the optimizer holds the look-ahead point
``φ = w − γ v`` (Sutskever et al. 2013; Bengio et al. 2013):

    v' = γ v + η g(φ);   φ ← φ − v' − γ (v' − v);   v ← v'

which reproduces the spec's sequence exactly (``φ_t = w_t − γ v_t``) and equals
``torch.optim.SGD(momentum=γ, nesterov=True)`` for a constant η.
"""

from .._jit import device
from .registry import LR, MOMENTUM, VELOCITY, Counterpart, Rule


@device
def nesterov(p, g, s, h):
    (velocity,) = s
    lr, gamma = h
    v_new = gamma * velocity + lr * g
    return p - v_new - gamma * (v_new - velocity), (v_new,)


def nesterov_constants(lr: float, momentum: float) -> tuple[float, ...]:
    return (lr, momentum)


def numpy_nesterov(p, g, st, t, lr=1e-2, gamma=0.9):
    (v,) = st
    v_new = gamma * v + lr * g
    p -= v_new + gamma * (v_new - v)
    v[...] = v_new


RULE = Rule(
    name="Nesterov",
    summary="Nesterov accelerated gradient (spec): ``v ← γ v + η ∇L(w − γ v);  w ← w − v``.",
    details="The parameters hold the look-ahead point ``w − γ v`` (where the caller "
            "evaluates the gradient); equals torch.optim.SGD(momentum=γ, nesterov=True) for "
            "a constant η.",
    element=nesterov,
    constants=lambda t, lr, hp: nesterov_constants(lr, hp["momentum"]),
    constants_names=("lr", "gamma"),
    hyperparameters=(LR(1e-2), MOMENTUM),
    state=(VELOCITY,),
    torch=Counterpart("torch.optim.SGD", {"lr": 1e-2, "momentum": 0.9, "nesterov": True}),
    optax=Counterpart("optax.sgd", {"momentum": 0.9, "nesterov": True}),
    demo_lr=0.01, rosenbrock_lr=4e-4, divides=False, numpy_step=numpy_nesterov, rank=3, spec=True,
)

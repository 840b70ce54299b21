"""Gradient descent (spec: batch, stochastic and minibatch GD).

``w ← w − η g``. The three variants share this update and differ in which examples make
``g`` (all of them, one, or a minibatch of K). Stochastic variants need ``η_t → 0``: pair
them with a Robbins–Monro schedule from ``fastopt.schedules``.
"""

from .._jit import device
from .registry import LR, Counterpart, Rule


@device
def sgd(p, g, s, h):
    (lr,) = h
    return p - lr * g, s


def sgd_constants(lr: float) -> tuple[float, ...]:
    return (lr,)


def numpy_sgd(p, g, st, t, lr=1e-2):
    p -= lr * g


RULE = Rule(
    name="SGD",
    summary="Gradient descent ``w ← w − η g`` (spec: batch, stochastic and minibatch GD "
            "differ in which examples make ``g``).",
    details="The stochastic forms need ``η_t → 0``: pass a schedule from "
            ":mod:`fastopt.schedules` that satisfies Robbins–Monro as ``lr``.",
    element=sgd,
    constants=lambda t, lr, hp: sgd_constants(lr),
    constants_names=("lr",),
    hyperparameters=(LR(1e-2),),
    torch=Counterpart("torch.optim.SGD", {"lr": 1e-2}),
    optax=Counterpart("optax.sgd"),
    demo_lr=0.1, rosenbrock_lr=1e-3, divides=False, numpy_step=numpy_sgd, rank=1, spec=True,
)

"""Momentum (spec; Polyak 1964).

``v ← γ v + η g;  w ← w − v``. torch.optim.SGD(momentum=γ) keeps ``b ← γ b + g;
w ← w − η b``: the same for a constant η (``v = η b``), different under a schedule.
"""

from .._jit import device


@device
def momentum(p, g, s, h):
    (v,) = s
    lr, gamma = h
    v = gamma * v + lr * g
    return p - v, (v,)


def momentum_constants(lr: float, momentum: float) -> tuple[float, ...]:
    return (lr, momentum)

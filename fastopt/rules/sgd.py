"""Gradient descent (spec: batch, stochastic and minibatch GD).

``w ← w − η g``. The three variants share this update and differ in which examples make
``g`` (all of them, one, or a minibatch of K). Stochastic variants need ``η_t → 0``: pair
them with a Robbins–Monro schedule from ``fastopt.schedules``.
"""

from .._jit import device


@device
def sgd(p, g, s, h):
    (lr,) = h
    return p - lr * g, s


def sgd_constants(lr: float) -> tuple[float, ...]:
    return (lr,)

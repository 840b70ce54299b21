"""Plain NumPy steps, as a careful user writes them (in-place where NumPy allows).

The speed yardstick for ``python -m fastopt bench``. (The tests keep their own independent
reference, written from the spec; nothing in the package checks results against this.)
"""

from __future__ import annotations

import numpy as np


def sgd(p, g, st, t, lr=1e-2):
    p -= lr * g


def momentum(p, g, st, t, lr=1e-2, gamma=0.9):
    (v,) = st
    v *= gamma
    v += lr * g
    p -= v


def nesterov(p, g, st, t, lr=1e-2, gamma=0.9):
    (v,) = st
    v_new = gamma * v + lr * g
    p -= v_new + gamma * (v_new - v)
    v[...] = v_new


def adagrad(p, g, st, t, lr=1e-2, eps=1e-6):
    (acc,) = st
    acc += g * g
    p -= lr * g / np.sqrt(acc + eps)


def rmsprop(p, g, st, t, lr=1e-2, alpha=0.9, eps=1e-6):
    (sq,) = st
    sq *= alpha
    sq += (1 - alpha) * g * g
    p -= lr * g / np.sqrt(sq + eps)


def adam(p, g, st, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    m, v = st
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * g * g
    p -= (lr / (1 - b1**t)) * m / (np.sqrt(v / (1 - b2**t)) + eps)


def nadam(p, g, st, t, lr=2e-3, b1=0.9, b2=0.999, eps=1e-8):
    m, v = st
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * g * g
    m_hat = (b1 / (1 - b1 ** (t + 1))) * m + ((1 - b1) / (1 - b1**t)) * g
    p -= lr * m_hat / (np.sqrt(v / (1 - b2**t)) + eps)


def amsgrad(p, g, st, t, lr=1e-3, b1=0.9, b2=0.999, eps=1e-8):
    m, v, v_max = st
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * g * g
    np.maximum(v_max, v, out=v_max)
    p -= lr * m / (np.sqrt(v_max) + eps)


STEPS = {
    "SGD": sgd, "Momentum": momentum, "Nesterov": nesterov, "AdaGrad": adagrad,
    "RMSprop": rmsprop, "Adam": adam, "Nadam": nadam, "AMSGrad": amsgrad,
}

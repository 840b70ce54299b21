"""The rules on a 2-D test function: Rosenbrock's banana valley, from one start point.

``f(x, y) = (1 − x)² + 100 (y − x²)²`` (Rosenbrock 1960), minimum 0 at (1, 1). The classic
picture of why adaptive and momentum methods help: plain gradient descent crawls along the
curved valley floor.
"""

from __future__ import annotations

import numpy as np

from .. import optim
from ..rules.registry import registry

START = (-1.5, 2.0)

#: Learning rates that keep every rule stable on this function from START.
LR_2D = {name: rule.rosenbrock_lr for name, rule in registry().items()}


def rosenbrock(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def rosenbrock_grad(w: np.ndarray) -> np.ndarray:
    x, y = w
    return np.array([-2 * (1 - x) - 400 * x * (y - x**2), 200 * (y - x**2)])


def trajectory(rule: str, steps: int = 600) -> np.ndarray:
    """The points a rule visits from START, shape (steps + 1, 2)."""
    w = np.array(START, np.float64)
    opt = getattr(optim, rule)(w, lr=LR_2D[rule])
    path = [w.copy()]
    for _ in range(steps):
        opt.step(rosenbrock_grad(w))
        path.append(w.copy())
    return np.array(path)

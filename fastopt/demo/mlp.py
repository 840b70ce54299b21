"""A small NumPy MLP with BatchNorm: Linear → BatchNorm → ReLU → Linear → softmax CE.

Its parameters live in one :class:`fastopt.FlatParams` (so any fastopt optimizer steps
them in one pass) and its backward pass writes straight into ``flat.grads``.
"""

from __future__ import annotations

import numpy as np

from ..batchnorm import BatchNorm
from ..flat import FlatParams


class MLP:
    def __init__(self, n_in: int, hidden: int, n_out: int, seed: int = 0) -> None:
        shapes = {"w1": (n_in, hidden), "w2": (hidden, n_out), "b2": (n_out,),
                  **BatchNorm.flat_shapes(hidden, "bn")}
        self.flat = FlatParams(shapes, dtype=np.float32)
        rng = np.random.default_rng(seed)
        f = self.flat
        f["w1"][...] = rng.standard_normal((n_in, hidden)) * np.sqrt(2.0 / n_in)
        f["w2"][...] = rng.standard_normal((hidden, n_out)) * np.sqrt(1.0 / hidden)
        self.bn = BatchNorm(hidden, params=(self.flat, "bn"))

    def train(self) -> None:
        self.bn.train()

    def eval(self) -> None:
        self.bn.eval()

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray) -> float:
        """Mean cross-entropy on (x, y); fills ``flat.grads`` (training mode)."""
        f, g = self.flat, self.flat.grads
        h = x @ f["w1"]
        z = self.bn.forward(h)
        a = np.maximum(z, 0)
        logits = a @ f["w2"] + f["b2"]
        p, loss = _softmax_xent(logits, y)
        p[np.arange(len(y)), y] -= 1  # d loss / d logits = (softmax − onehot) / B
        p /= len(y)
        np.matmul(a.T, p, out=g["w2"])
        np.sum(p, axis=0, out=g["b2"])
        da = p @ f["w2"].T
        da *= z > 0
        dh = self.bn.backward(da)
        np.matmul(x.T, dh, out=g["w1"])
        return loss

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """(mean loss, accuracy) in inference mode."""
        f = self.flat
        self.eval()
        logits = np.maximum(self.bn.forward(x @ f["w1"]), 0) @ f["w2"] + f["b2"]
        self.train()
        _, loss = _softmax_xent(logits, y)
        return loss, float(np.mean(np.argmax(logits, axis=1) == y))


def _softmax_xent(logits: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(len(y)), y]))
    return e / s, loss

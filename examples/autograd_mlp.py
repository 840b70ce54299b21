"""Train with gradients from HIPS autograd and steps from fastopt.

autograd differentiates plain NumPy code; fastopt updates the arrays in place. autograd may
return non-contiguous gradients (transposes), so they are made contiguous first: fastopt
refuses strided arrays rather than copying behind your back.

    pip install autograd && python examples/autograd_mlp.py
"""

import autograd.numpy as anp
import numpy as np
from autograd import grad

import fastopt
from fastopt.datasets import load_digits

images, labels = load_digits(dtype=np.float64)
x = images.reshape(len(images), -1)
onehot = np.eye(10)[labels]


def loss(params, x, t):
    w1, b1, w2, b2 = params
    h = anp.tanh(anp.dot(x, w1) + b1)
    logits = anp.dot(h, w2) + b2
    logits = logits - anp.max(logits, axis=1, keepdims=True)
    log_p = logits - anp.log(anp.sum(anp.exp(logits), axis=1, keepdims=True))
    return -anp.mean(anp.sum(t * log_p, axis=1))


rng = np.random.default_rng(0)
params = [rng.standard_normal((64, 32)) * 0.1, np.zeros(32),
          rng.standard_normal((32, 10)) * 0.1, np.zeros(10)]
opt = fastopt.Nadam(params, lr=1e-2)
loss_grad = grad(loss)

for _ in range(200):
    gs = [np.ascontiguousarray(g) for g in loss_grad(params, x, onehot)]
    opt.step(gs)

w1, b1, w2, b2 = params
accuracy = np.mean(np.argmax(np.tanh(x @ w1 + b1) @ w2 + b2, axis=1) == labels)
print(f"loss {loss(params, x, onehot):.4f}  training accuracy {accuracy:.3f}")

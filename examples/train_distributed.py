"""Data-parallel training over MPI with sharded optimizer state (fastopt.distributed).

Every rank runs this same script on the same minibatches: it computes the gradients of its
slice of each minibatch, and ShardedOptimizer averages them over the ranks, steps its 1/N
of the values (each rank holds only 1/N of Adam's state) and shares the new parameters, so
every rank ends each step with the same model.

    pip install "fastopt[mpi]" && mpiexec -n 4 python examples/train_distributed.py
"""

import os

import numpy as np
from mpi4py import MPI

import fastopt
from fastopt.data import minibatches
from fastopt.datasets import load_digits
from fastopt.distributed import ShardedOptimizer

comm = MPI.COMM_WORLD
rank, world = comm.Get_rank(), comm.Get_size()
if "NUMBA_NUM_THREADS" not in os.environ:
    fastopt.set_num_threads(1)  # the ranks share the machine's cores

images, labels = load_digits()  # every rank loads all 1797; the slices are index ranges
x = images.reshape(len(images), -1)
order = np.random.default_rng(0).permutation(len(x))
train, test = order[:1500], order[1500:]

flat = fastopt.FlatParams({"w1": (64, 64), "b1": (64,), "w2": (64, 10), "b2": (10,)})
rng = np.random.default_rng(0)  # the same seed on every rank: the same starting model
flat["w1"][...] = rng.standard_normal((64, 64)) * np.sqrt(2 / 64)
flat["w2"][...] = rng.standard_normal((64, 10)) * np.sqrt(1 / 64)
opt = ShardedOptimizer(fastopt.Adam, flat, lr=3e-3)  # one process: fastopt.Adam(flat, ...)


def forward(xb):
    h = np.maximum(xb @ flat["w1"] + flat["b1"], 0)
    return h, h @ flat["w2"] + flat["b2"]


def loss_and_accuracy(idx):
    logits = forward(x[idx])[1]
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -log_p[np.arange(len(idx)), labels[idx]].mean(), np.mean(z.argmax(1) == labels[idx])


def gradients(xb, yb, scale):
    """flat.grads = scale x the sum over (xb, yb) of the cross-entropy's gradients."""
    h, logits = forward(xb)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(yb)), yb] -= 1
    p *= scale
    g = flat.grads
    np.matmul(h.T, p, out=g["w2"])
    np.sum(p, axis=0, out=g["b2"])
    dh = (p @ flat["w2"].T) * (h > 0)
    np.matmul(xb.T, dh, out=g["w1"])
    np.sum(dh, axis=0, out=g["b1"])


for epoch in range(20):
    for batch in minibatches(len(train), 64, seed=epoch):  # the same order on every rank
        mine = train[np.array_split(batch, world)[rank]]  # this rank's slice
        # This slice's share of the minibatch's mean gradient, times N: the optimizer
        # averages the N ranks' gradients, which gives the minibatch's mean gradient.
        gradients(x[mine], labels[mine], world / len(batch))
        opt.step()  # every rank calls it; afterwards every rank holds the same parameters
    if rank == 0 and (epoch + 1) % 5 == 0:
        loss, acc = loss_and_accuracy(train)
        print(f"epoch {epoch + 1:2d}  loss {loss:.4f}  accuracy {acc:.3f}")

if rank == 0:
    loss, acc = loss_and_accuracy(train)
    print(f"{world} ranks: loss {loss:.4f}  training accuracy {acc:.3f}  "
          f"test accuracy {loss_and_accuracy(test)[1]:.3f}")

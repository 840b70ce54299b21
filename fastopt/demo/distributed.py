"""``mpiexec -n N python -m fastopt demo --distributed``: the demo, data-parallel over MPI.

Every rank holds the network and trains on the one-process demo's minibatches, in its
order: rank r takes the r-th of N equal consecutive slices of each (a ragged last batch
of an epoch is split as evenly as it goes), computes its gradients on that slice with the
demo's network, and a :class:`fastopt.distributed.ShardedOptimizer` wrapping the same
rule and options averages the ranks' gradients and steps, each rank its 1/N of the state.

BatchNorm is synchronised: its batch mean and variance (forward) and its two channel sums
(backward) are summed over the ranks, so it normalises with the statistics of the whole
minibatch, as one process does. Per-slice statistics (each rank normalising its own slice,
as torch's DDP does without SyncBatchNorm) would give a different averaged gradient: a
slice's mean and variance are not the batch's. The ranks' sums are gathered and added in
rank order, so every rank gets the same bits: the same running statistics, hence the same
model and the same early-stopping decisions on every rank. Each rank's gradient is its
slice's share of the batch's mean gradient times N, so the ranks' average is the one-process
gradient up to float rounding (the sums are grouped differently): the demo reaches the
one-process accuracy, not its bits.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

from .. import parallel
from .mlp import MLP

MPI_HINT = 'pip install "fastopt[mpi]"'


def setup(args: Any, error: Callable[[str], NoReturn]) -> Any:
    """``--distributed``: MPI's world communicator, after the checks (``error``, the
    parser's, on rank 0; the other ranks exit with status 2 without a word). Sets one
    fastopt thread per rank unless ``NUMBA_NUM_THREADS`` is set, and (with threadpoolctl)
    one BLAS thread unless the environment sets their number: the ranks share the cores."""
    try:
        from mpi4py import MPI
    except ImportError:
        error(f"--distributed needs mpi4py and an MPI library: {MPI_HINT} (or mpi4py "
              "built against your MPI), then run it under MPI: mpiexec -n 2 python -m "
              "fastopt demo --distributed")
    comm = MPI.COMM_WORLD
    world = comm.Get_size()
    if args.batch_size % world:
        if comm.Get_rank() == 0:
            error(f"--batch-size {args.batch_size} does not divide among {world} ranks: with "
                  "--distributed each rank takes an equal 1/N slice of every minibatch, so "
                  f"pick a multiple of {world} (e.g. "
                  f"{max(world, args.batch_size - args.batch_size % world)})")
        sys.exit(2)
    if "NUMBA_NUM_THREADS" not in os.environ:
        parallel.set_num_threads(1)
    if _blas_env() is None:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass  # the run's header line says how to limit them
        else:
            threadpool_limits(1, user_api="blas")
    return comm


#: What sets the number of NumPy's BLAS threads (OpenBLAS reads them in this order).
BLAS_ENV = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _blas_env() -> str | None:
    return next((v for v in BLAS_ENV if os.environ.get(v)), None)


def blas_note() -> str:
    """How many BLAS threads each rank's matrix products use, for the run's header: one
    (threadpoolctl, by :func:`setup`), the environment's, or a hint. Ranks that share
    cores and each run a full BLAS pool (OpenBLAS's idle threads poll, as MPI's waits do)
    made a 2-rank run ten times slower on a 2-core machine."""
    env = _blas_env()
    if env is not None:
        return f"BLAS threads per rank: {env}={os.environ[env]}"
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return ("tip: one BLAS thread per rank is much faster where ranks share cores: "
                "OPENBLAS_NUM_THREADS=1 mpiexec ..., or pip install threadpoolctl")
    return "1 BLAS thread per rank"


def my_slice(idx: np.ndarray, comm: Any) -> np.ndarray:
    """This rank's consecutive slice of the minibatch ``idx`` (N equal ones when N divides
    it; otherwise their sizes differ by one)."""
    return np.array_split(idx, comm.Get_size())[comm.Get_rank()]


def rank0_done(comm: Any) -> None:
    """Rank 0: let the ranks waiting in :func:`wait_for_rank0` go on."""
    comm.Ibarrier().Wait()  # a blocking Barrier would not match their Ibarrier


def wait_for_rank0(comm: Any) -> None:
    """Wait until rank 0 calls :func:`rank0_done`, sleeping: a blocking MPI call spins
    and would take the cores rank 0 works on."""
    req = comm.Ibarrier()
    while not req.Test():
        time.sleep(0.005)


class SyncMLP(MLP):
    """The demo's network (:class:`.mlp.MLP`, same parameters and initialisation) whose
    BatchNorm uses the statistics of the whole minibatch, summed over ``comm``'s ranks.

    :meth:`loss_and_grad` takes this rank's slice and the minibatch's size and writes
    ``flat.grads`` = N × this slice's share of the minibatch's mean gradient (the
    ShardedOptimizer averages the N ranks'). The running statistics are updated as
    :func:`fastopt.batchnorm.forward` updates them, from the minibatch's statistics.
    """

    def __init__(self, n_in: int, hidden: int, n_out: int, seed: int, comm: Any) -> None:
        super().__init__(n_in, hidden, n_out, seed=seed)
        if self.bn.momentum is None:  # pragma: no cover - the demo's BatchNorm has 0.1
            raise ValueError("SyncMLP updates the running statistics with a momentum")
        self.comm = comm

    def _sum(self, local: np.ndarray) -> np.ndarray:
        """``local`` (float64) summed over the ranks in rank order: the same bits on
        every rank."""
        parts = np.empty((self.comm.Get_size(), local.size))
        self.comm.Allgather(np.ascontiguousarray(local), parts)
        return parts.sum(axis=0)

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray, batch: int) -> float:
        """The minibatch's mean cross-entropy; fills ``flat.grads`` from this rank's
        slice ``(x, y)`` of a minibatch of ``batch`` examples (collective)."""
        f, g, bn = self.flat, self.flat.grads, self.bn
        c = bn.num_features
        h = x @ f["w1"]
        mean = self._sum(h.sum(axis=0, dtype=np.float64)) / batch
        centred = h - mean
        var = self._sum(np.einsum("ij,ij->j", centred, centred)) / batch
        inv = 1.0 / np.sqrt(var + bn.eps)
        xhat = centred * inv
        z = (xhat * f["bn.weight"] + f["bn.bias"]).astype(np.float32)
        m = bn.momentum
        bn.running_mean[...] = (1 - m) * bn.running_mean + m * mean
        bn.running_var[...] = (1 - m) * bn.running_var + m * var * (batch / (batch - 1))
        a = np.maximum(z, 0)
        logits = a @ f["w2"] + f["b2"]
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        rows = np.arange(len(y))
        loss_sum = float(np.sum(np.log(s[:, 0]) - shifted[rows, y], dtype=np.float64))
        p = e / s
        p[rows, y] -= 1  # d loss / d logits, times N / batch: this rank's share, times N
        p *= np.float32(self.comm.Get_size() / batch)
        np.matmul(a.T, p, out=g["w2"])
        np.sum(p, axis=0, out=g["b2"])
        da = p @ f["w2"].T
        da *= z > 0
        dy = da.astype(np.float64)
        local = np.empty(2 * c + 1)
        local[:c] = dy.sum(axis=0)
        local[c:2 * c] = np.einsum("ij,ij->j", dy, xhat)
        local[2 * c] = loss_sum
        g["bn.bias"][...] = local[:c]
        g["bn.weight"][...] = local[c:2 * c]
        total = self._sum(local) / batch  # every rank's dy carries the same factor N
        dh = (f["bn.weight"] * inv) * (dy - total[:c] - xhat * total[c:2 * c])
        np.matmul(x.T, dh.astype(np.float32), out=g["w1"])
        return float(total[2 * c])

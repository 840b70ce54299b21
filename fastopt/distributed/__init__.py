"""Data-parallel training with sharded optimizer state (ZeRO stages 1 and 2) over MPI.

>>> from fastopt.distributed import ShardedOptimizer
>>> opt = ShardedOptimizer(fastopt.Adam, flat, lr=1e-3)  # was: fastopt.Adam(flat, lr=1e-3)

Run under ``mpiexec -n 4 python train.py``: every rank holds the parameters and computes
its gradients; each keeps 1/N of the optimizer state and steps 1/N of the values; the
parameters after each step are, to the bit, those of one process stepping on the ranks'
gradients summed in rank order and averaged (``docs/distributed.md``). Needs mpi4py and an
MPI library: ``pip install "fastopt[mpi]"``; mpi4py is imported when an optimizer is made.
"""

from .checkpoint import consolidate
from .layout import GRAIN, partition
from .optimizer import DEFAULT_BUCKET, ShardedOptimizer

__all__ = ["DEFAULT_BUCKET", "GRAIN", "ShardedOptimizer", "consolidate", "partition"]

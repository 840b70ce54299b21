"""The distributed tests' MPI side: ``mpiexec -n N python -m mpi4py tests/mpi_worker.py
OUT``. Every rank runs every case of tests/distributed_cases.py through a
ShardedOptimizer; rank 0 writes what the ranks ended with to OUT (an .npz file), which
tests/test_distributed.py compares with one process's steps."""

from __future__ import annotations

import sys

import distributed_cases as dc
import numpy as np
from mpi4py import MPI

import fastopt
from fastopt.distributed import ShardedOptimizer

comm = MPI.COMM_WORLD
rank, world = comm.rank, comm.size
out: dict[str, np.ndarray] = {}


def make(case: str, on=comm, **extra):
    params = dc.make_params(case)
    cls_name, stage = dc.CASES[case]
    arg, kw = dc.options(case, params)
    if case in dc.BUCKETS:
        extra.setdefault("bucket_size", dc.BUCKETS[case])
    opt = ShardedOptimizer(getattr(fastopt, cls_name), arg, comm=on, stage=stage, **kw,
                           **extra)
    return params, opt


def step(case: str, params, opt, t: int, r: int) -> list[np.ndarray]:
    grads = dc.rank_grads(case, t, r)
    opt.step(dc.set_grads(case, params, grads))
    return grads


def raised_everywhere(fn) -> str:
    """Run ``fn`` on every rank; each must raise. Returns this rank's message."""
    try:
        fn()
    except (ValueError, TypeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"


for case in dc.CASES:
    params, opt = make(case)
    for t in range(dc.STEPS):
        grads = step(case, params, opt, t, rank)
    out[f"{case}.params"] = dc.values(case, params)
    out[f"{case}.skipped"] = np.array(opt.skipped_steps)
    if dc.CASES[case][1] == 1:  # stage 1: the gradients now hold the average
        held = [params.grads[k] for k in dc.SHAPES[case]] if dc.is_flat(case) else grads
        out[f"{case}.last_grads"] = np.concatenate([g.reshape(-1) for g in held])
    full = opt.consolidated_state_dict(to=0)
    if rank == 0:
        for k, v in full.items():
            out[f"{case}.state.{k}"] = np.asarray(v)
    # every rank ends with the same parameters
    same = comm.allgather(dc.values(case, params).tobytes())
    out[f"{case}.ranks_agree"] = np.array(len(set(same)) == 1)

# Resharding: two steps on all ranks, the shards joined and cut for M ranks, two more
case = "flat_groups"
params, opt = make(case)
for t in range(2):
    step(case, params, opt, t, rank)
shards = comm.allgather(opt.state_dict())
# each rank its own shard, on as many ranks: two more steps
params3, opt3 = make(case)
params3.data[:] = params.data
opt3.load_state_dict(shards[rank])
for t in range(2, 4):
    step(case, params3, opt3, t, rank)
out["own_shard.params"] = dc.values(case, params3)
# a checkpoint with another state storage: refused on every rank (convert it in one process)
one = dc.make_params(case)
arg, kw = dc.options(case, one)
other = fastopt.Adam(arg, **kw, state_dtype="bfloat16").state_dict()
out["convert.messages"] = np.array(comm.gather(raised_everywhere(
    lambda: opt3.load_state_dict(other)), root=0) or [])
m = max(1, world - 1) if world > 1 else 1
sub = comm.Split(0 if rank < m else MPI.UNDEFINED, rank)
if sub != MPI.COMM_NULL:
    params2, opt2 = make(case, on=sub)
    params2.data[:] = params.data  # the parameters, saved beside the optimizer's state
    opt2.load_state_dict(shards)  # written by `world` ranks, loaded on m
    for t in range(2, 4):
        step(case, params2, opt2, t, sub.rank)
    if rank == 0:
        out["reshard.params"] = dc.values(case, params2)
        out["reshard.ranks"] = np.array(m)
    sub.Free()

# A bad gradient on the last rank: every rank refuses, nothing changes, then it goes on
case = "list_skip"
params, opt = make(case)
step(case, params, opt, 0, rank)
before = dc.values(case, params)
state_before = opt.state_dict()


def bad_step():
    grads = dc.rank_grads(case, 1, rank)
    if rank == world - 1:
        grads[3] = grads[3].reshape(-1)  # the wrong shape
    opt.step(grads)


out["bad.messages"] = np.array(comm.gather(raised_everywhere(bad_step), root=0) or [])
if world > 1:  # ranks that edit a group differently: refused on every rank
    lr = opt.param_groups[0]["lr"]
    opt.param_groups[0]["lr"] = lr if rank else lr * 2
    out["differ.messages"] = np.array(comm.gather(raised_everywhere(
        lambda: opt.step(dc.rank_grads(case, 1, rank))), root=0) or [])
    opt.param_groups[0]["lr"] = lr
after = opt.state_dict()
unchanged = np.array_equal(before, dc.values(case, params)) and all(
    np.array_equal(state_before[k], after[k]) for k in after if isinstance(after[k], np.ndarray))
out["bad.unchanged"] = np.array(comm.allreduce(int(unchanged), op=MPI.MIN))
for t in range(1, dc.STEPS):
    step(case, params, opt, t, rank)
out["bad.params"] = dc.values(case, params)

# Ranks that disagree on the options: refused on every rank
out["mismatch.messages"] = np.array(comm.gather(raised_everywhere(
    lambda: make("lamb") if rank else ShardedOptimizer(
        fastopt.LAMB, dc.make_params("lamb"), lr=0.5)), root=0) or [])

# Per-rank state: 1/N of one process's, plus the layout's alignment (and the rounding of
# the split to 4096-value grains: 0.16% of a quarter of 1e7 values)
n = 10_000_003
big = ShardedOptimizer(fastopt.Adam, [np.zeros(n, np.float32)], lr=0.1)
out["memory.state"] = np.array(comm.gather(big.state_bytes(), root=0) or [])
del big
if rank == 0:
    out["memory.one_process"] = np.array(fastopt.Adam(np.zeros(n, np.float32)).state_bytes())

if rank == 0:
    np.savez(sys.argv[1], **out)

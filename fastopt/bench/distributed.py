"""``python -m fastopt bench --distributed``: the sharded Adam step against the collectives
that move its bytes and the one-process step over its share of the values.

Run under MPI, e.g. ``mpiexec -n 2 python -m fastopt bench --distributed``. For each size
``n`` (float32, one array in a :class:`fastopt.FlatParams`, Adam) every rank of
``MPI.COMM_WORLD`` times, in one interleaved run (:func:`fastopt.bench.run.
_interleaved_medians`, the main table's helper):

- **sharded**: :class:`fastopt.distributed.ShardedOptimizer`'s ``step()`` on a gradient
  filled with random values once (each rank its own): ZeRO stage 2 with the default
  bucket, stage 2 with one bucket (``bucket_size=N*n``: the whole gradient exchange in one
  round, nothing to overlap) and stage 1 with the default bucket;
- **collectives**: the bare MPI calls that move the same bytes,
  ``Reduce_scatter_block`` (sum) of the full float32 gradient and ``Allgather`` of the
  float32 parameter shard into a full-size buffer (both padded up to a multiple of the
  number of ranks); ``Allgather`` alone is timed too, the extra call of stage 1 (its
  gradient is shared as well);
- **1/N step**: a plain :class:`fastopt.Adam` step over ``ceil(n/N)`` values, on every rank
  at once: that is what the sharded step's own update does (each rank steps its shard
  while the others step theirs, sharing the memory bandwidth), so timing all ranks at once
  is the fair yardstick; one rank alone would have the machine to itself.

Lockstep timing: every call, timed or not, is the operation followed by
``comm.Barrier()``. All ranks run the same calls in the same (seeded) order, and the run
has no time budget (a per-rank deadline could stop the ranks after different rounds), so
each timed call starts as the ranks leave the previous call's barrier and ends when the
slowest rank has finished: **the times reported are rank 0's medians, and each of rank 0's
timings is the maximum over the ranks of that repeat** (plus one barrier's latency, timed
alone as the ``barrier`` entry and printed under the table).

``ratio`` = sharded / (collectives + 1/N step): the cost of the sharded step beyond the
bytes it must move and the arithmetic it must do (target: at most 1.2). Memory: the largest
per-rank optimizer state (``state_bytes()``) against one process's (8 bytes per value for
float32 Adam: m and v), and the largest per-rank ``buffer_bytes()``.

Each variant has its own FlatParams (stage 1 writes the averaged gradient into
``flat.grad``), so a rank holds about 70 bytes per value of ``n`` while a size runs: 3.6 GB
per rank at 5e7. On glibc the run keeps freed memory in the heap (:func:`_keep_freed_memory`):
MPICH's ``Reduce_scatter_block`` allocates and frees a temporary buffer in every call (100 MB
over 5e7 float32 on 2 ranks), which glibc otherwise hands back to the OS and faults in
again, page by page, each time;
the page faults per call of any callable that still has them are printed under the table.
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .. import optim
from .. import parallel as fastopt_threads
from ..flat import FlatParams
from .load import OtherLoad

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows: no page fault counts
    resource = None

#: The sizes timed when ``--sizes`` is not given.
DEFAULT_SIZES = (10**7, 5 * 10**7)

#: Bytes of one process's float32 Adam state per value (m and v).
ADAM_STATE_BYTES = 8


@dataclass
class DistributedRow:
    variant: str
    n: int
    ranks: int
    stage: int
    #: values per destination rank in each round of the gradient exchange (as the
    #: optimizer clamps it), and the number of rounds
    bucket: int
    rounds: int
    sharded_ms: float
    #: the bare collectives moving the same bytes (stage 1: one more Allgather)
    collectives_ms: float
    #: one process's Adam step over ceil(n / ranks) values, every rank at once
    shard_step_ms: float
    #: the largest rank's optimizer state and communication buffers
    state_bytes: int
    buffer_bytes: int
    #: the largest median over fastest call of the size's callables (any rank's), and
    #: the cores processes outside the MPI job used meanwhile (None: unknown)
    spread: float = 1.0
    outside_cores: float | None = None

    @property
    def noisy(self) -> bool:
        """Times spread widely, or processes outside the MPI job used the cores."""
        from .load import BUSY_CORES
        from .run import NOISY_SPREAD

        busy = self.outside_cores is not None and self.outside_cores > BUSY_CORES
        return self.spread > NOISY_SPREAD or busy

    @property
    def yardstick_ms(self) -> float:
        return self.collectives_ms + self.shard_step_ms

    @property
    def ratio(self) -> float:
        return self.sharded_ms / self.yardstick_ms

    @property
    def one_process_state_bytes(self) -> int:
        return ADAM_STATE_BYTES * self.n

    @property
    def state_ratio(self) -> float:
        return self.state_bytes / self.one_process_state_bytes


def _flat(n: int, seed: int) -> FlatParams:
    """One float32 array of ``n`` values, its gradient random (seeded per rank)."""
    flat = FlatParams({"w": n}, dtype=np.float32)
    flat["w"][:] = 1.0
    rng = np.random.default_rng(seed)
    flat.grads["w"][:] = (rng.standard_normal(n) * 1e-2).astype(np.float32)
    return flat


def _minor_faults() -> int:
    return 0 if resource is None else resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class _Faults:
    """Calls and minor page faults of one callable, the first (warm-up) call's apart: it
    touches the optimizer's state and buffers for the first time."""

    def __init__(self) -> None:
        self.calls, self.first, self.later = 0, 0, 0

    @property
    def per_call(self) -> float:
        """Page faults per call after the first."""
        return self.later / max(1, self.calls - 1)


def _lockstep(comm: Any, fn: Callable[[], None], faults: _Faults) -> Callable[[], None]:
    """``fn`` then a barrier (see the module docstring), its page faults counted: memory
    fresh from the OS, as an MPI library's temporary buffer above glibc's mmap threshold
    is in every call."""

    def call() -> None:
        before = _minor_faults()
        fn()
        comm.Barrier()
        got = _minor_faults() - before
        if faults.calls:
            faults.later += got
        else:
            faults.first = got
        faults.calls += 1

    return call


def bench_size(comm: Any, n: int, repeats: int = 5, inner: int = 3
               ) -> tuple[list[DistributedRow], dict[str, float]]:
    """The rows at ``n`` values (every rank must call it), and rank 0's other medians (ms:
    ``barrier``, ``allgather``, ``reduce_scatter+allgather``) with each callable's page
    faults per call (``<name> faults``, the most on any rank)."""
    from mpi4py import MPI

    from ..distributed import DEFAULT_BUCKET, ShardedOptimizer
    from .run import _interleaved_medians

    rank, world = comm.Get_rank(), comm.Get_size()
    variants = [("stage 2", 2, DEFAULT_BUCKET), ("stage 2, one bucket", 2, world * n),
                ("stage 1", 1, DEFAULT_BUCKET)]
    opts = {}
    for label, stage, bucket in variants:
        flat = _flat(n, seed=rank)
        opts[label] = ShardedOptimizer(optim.Adam, flat, comm=comm, lr=1e-3, stage=stage,
                                       bucket_size=bucket)
    share = -(-n // world)  # ceil(n / world): the padded shard of the collectives
    rng = np.random.default_rng(1000 + rank)
    send = np.zeros(share * world, np.float32)
    send[:n] = rng.standard_normal(n).astype(np.float32) * 1e-2
    recv = np.empty(share, np.float32)
    shard = np.ones(share, np.float32)
    full = np.empty(share * world, np.float32)
    one = _flat(share, seed=rank)
    one_opt = optim.Adam(one, lr=1e-3)

    def collectives() -> None:
        comm.Reduce_scatter_block(send, recv, op=MPI.SUM)
        comm.Allgather(shard, full)

    fns = {label: opt.step for label, opt in opts.items()}
    fns.update({"reduce_scatter+allgather": collectives,
                "allgather": lambda: comm.Allgather(shard, full),
                "1/N step": one_opt.step,
                "barrier": lambda: None})
    faults = {k: _Faults() for k in fns}
    fns = {k: _lockstep(comm, f, faults[k]) for k, f in fns.items()}
    spread: dict[str, float] = {}
    own, wall = time.process_time(), time.perf_counter()
    with OtherLoad() as load:
        med = _interleaved_medians(fns, repeats, math.inf, inner=inner, spread=spread)
    own, wall = time.process_time() - own, time.perf_counter() - wall
    # OtherLoad counts the other ranks as other processes: take their CPU time off
    others = comm.allreduce(own, op=MPI.SUM) - own
    outside = None if load.cores is None else load.cores - others / wall
    # the barrier's few microseconds spread widely on their own: not a row's callable
    worst = comm.allreduce(max(v for k, v in spread.items() if k != "barrier"), op=MPI.MAX)
    outside = comm.bcast(None if outside is None else max(0.0, outside), root=0)
    rows = []
    for label, stage, _ in variants:
        opt = opts[label]
        coll = med["reduce_scatter+allgather"] + (med["allgather"] if stage == 1 else 0.0)
        counts = opt._layout.counts
        rows.append(DistributedRow(
            label, n, world, stage, opt._bucket, max(-(-c // opt._bucket) for c in counts),
            med[label], coll, med["1/N step"],
            comm.allreduce(opt.state_bytes(), op=MPI.MAX),
            comm.allreduce(opt.buffer_bytes(), op=MPI.MAX), worst, outside))
    extra = {k: med[k] for k in ("barrier", "allgather", "reduce_scatter+allgather")}
    # page faults per call after the first (warm-up) one, the most on any rank
    extra.update({f"{k} faults": comm.allreduce(f.per_call, op=MPI.MAX)
                  for k, f in faults.items()})
    return rows, extra


def format_table(rows: list[DistributedRow]) -> str:
    head = (f"{'Adam float32':<22}{'n':>8}{'sharded ms':>12}{'collect. ms':>13}"
            f"{'1/N step ms':>13}{'ratio':>7}{'state MB/rank':>15}{'1-proc MB':>11}"
            f"{'state x':>9}{'buffers MB':>12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        name = r.variant + ("~" if r.noisy else "")
        lines.append(f"{name:<22}{r.n:>8.0e}{r.sharded_ms:>12.2f}{r.collectives_ms:>13.2f}"
                     f"{r.shard_step_ms:>13.2f}{r.ratio:>7.2f}{r.state_bytes / 1e6:>15.1f}"
                     f"{r.one_process_state_bytes / 1e6:>11.1f}{r.state_ratio:>9.3f}"
                     f"{r.buffer_bytes / 1e6:>12.1f}")
    return "\n".join(lines)


NOTE = ("ratio: sharded / (collectives + 1/N step), target <= 1.2; collect.: "
        "Reduce_scatter_block of the gradient + Allgather of the parameter shard (stage 1: "
        "+ one more Allgather, its shared gradient); 1/N step: one process's Adam over "
        "ceil(n/N) values, every rank at once; state MB/rank and buffers MB: the largest "
        "rank's state_bytes() and buffer_bytes(); 1-proc MB: one process's Adam state "
        "(8 B/value); state x: their ratio; ~: times spread widely or other processes used "
        "the cores, do not trust the row")


def _mpi_name(mpi: Any) -> str:
    """The MPI library's name and version, on one line."""
    return " ".join(mpi.Get_library_version().splitlines()[0].split())


#: mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def _keep_freed_memory() -> bool:
    """On glibc: blocks up to 2 GiB come from the heap and stay there when freed, so a
    temporary buffer that an MPI collective allocates and frees in every call (MPICH's
    ``Reduce_scatter_block`` does: 100 MB over 5e7 float32 on 2 ranks) is not fresh memory,
    faulted in page by page, every call: glibc's default gives blocks above 32 MB back to
    the OS as they are freed, and ``Reduce_scatter_block`` over 5e7 float32 took twice its
    time in page faults (80 ms; 35 ms with the memory kept). The yardstick is the bytes
    moved, not the allocator; fastopt's step allocates nothing per call either way. True
    if applied."""
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
                    and libc.mallopt(M_MMAP_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def main(sizes: list[int], quick: bool = False, as_json: bool = False, comm: Any = None
         ) -> int:
    """Every size's rows (collective: every rank calls it); rank 0 prints."""
    from mpi4py import MPI

    from ..distributed import DEFAULT_BUCKET

    comm = MPI.COMM_WORLD if comm is None else comm
    if "NUMBA_NUM_THREADS" not in os.environ:  # one thread per rank: the ranks share cores
        fastopt_threads.set_num_threads(1)
    kept = _keep_freed_memory()
    rank, world = comm.Get_rank(), comm.Get_size()
    repeats, inner = (2, 2) if quick else (5, 3)
    rows: list[DistributedRow] = []
    extras: dict[int, dict[str, float]] = {}
    try:
        for n in sizes:
            if rank == 0 and not as_json:
                print(f"bench: sharded Adam over {world} ranks, n = {n:.0e} ...",
                      file=sys.stderr, flush=True)
            got, extras[n] = bench_size(comm, n, repeats, inner)
            rows += got
    except BaseException:
        if world > 1:  # the other ranks would wait in a collective for ever
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            comm.Abort(1)
        raise
    if rank != 0:
        return 0
    threads = fastopt_threads.get_num_threads()
    if as_json:
        print(json.dumps({
            "ranks": world, "threads_per_rank": threads, "default_bucket": DEFAULT_BUCKET,
            "malloc_keeps_freed_memory": kept,
            "mpi": _mpi_name(MPI),
            "rows": [{**asdict(r), "noisy": r.noisy, "ratio": r.ratio,
                      "state_ratio": r.state_ratio,
                      "one_process_state_bytes": r.one_process_state_bytes} for r in rows],
            "other": {str(n): e for n, e in extras.items()}}, indent=1))
        return 0
    print(f"fastopt bench --distributed: {world} rank{'s' * (world != 1)} of MPI.COMM_WORLD, "
          f"{threads} fastopt thread(s) per rank, {_mpi_name(MPI)}")
    if world == 1:
        print("(one rank: run it under mpiexec, e.g. mpiexec -n 2 python -m fastopt bench "
              "--distributed)")
    print(textwrap.fill(
        "rank 0's medians; each timing is the slowest rank's (each call ends in a barrier); "
        f"default bucket {DEFAULT_BUCKET} values received per round"
        + ("; glibc malloc keeps freed blocks up to 2 GiB (MPI temporaries are not faulted "
           "in again in each call)" if kept else ""), 100) + "\n")
    print(format_table(rows))
    print(textwrap.fill(NOTE, 100, initial_indent="  (", subsequent_indent="   ") + ")")
    for n, e in extras.items():
        r = next(r for r in rows if r.n == n)
        others = "unknown" if r.outside_cores is None else f"{r.outside_cores:.2f}"
        print(f"  n = {n:.0e}: barrier alone {1e3 * e['barrier']:.1f} us; Allgather alone "
              f"{e['allgather']:.2f} ms, so Reduce_scatter_block "
              f"{e['reduce_scatter+allgather'] - e['allgather']:.2f} ms; widest spread "
              f"(median / fastest) {r.spread:.1f}x; cores used outside the job {others}")
        faulting = {k[:-len(" faults")]: v for k, v in e.items()
                    if k.endswith(" faults") and v >= 1}
        if faulting:
            print(textwrap.fill(
                "page faults per call (fresh memory from the OS in every call, as an MPI "
                "temporary buffer the allocator gives back each time; the times include "
                "them): " +
                ", ".join(f"{k} {v:.0f}" for k, v in faulting.items()), 100,
                initial_indent="    ", subsequent_indent="    "))
    print("\nbucketing: the stage 2 rows with the default bucket and with one bucket")
    for n in extras:
        by = {r.variant: r for r in rows if r.n == n}
        a, b = by["stage 2"], by["stage 2, one bucket"]
        print(f"  n = {n:.0e}: {a.rounds} rounds of {a.bucket} values {a.sharded_ms:.2f} ms, "
              f"one round of {b.bucket} {b.sharded_ms:.2f} ms "
              f"(bucketed / one bucket {a.sharded_ms / b.sharded_ms:.2f}; buffers "
              f"{a.buffer_bytes / 1e6:.0f} MB against {b.buffer_bytes / 1e6:.0f} MB)")
    return 0

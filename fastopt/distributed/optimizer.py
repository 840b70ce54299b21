"""The sharded optimizer: ZeRO stages 1 and 2 over an mpi4py communicator.

Each rank holds all the parameters and computes its own gradients. A step:

1. checks this rank's call, and agrees with every rank that all calls are good (one
   small ``Allreduce``): a call refused on any rank is refused on all, before anything
   is sent or written;
2. exchanges the gradients with ``Alltoallv`` (in buckets), so each rank receives every
   rank's gradient of its own shard, and sums them in rank order, 0, 1, 2, ..., then
   divides by the number of ranks (:func:`.kernels.ordered_mean`): the bits of the
   average never depend on an MPI reduction's order;
3. stage 1 only: shares the averaged gradient (point to point), so every rank's gradient
   buffers hold all of it (stage 2 keeps only the shard's average);
4. with clipping or ``skip_nonfinite``: gathers every shard's float64 block partials of
   the gradient norm and combines them in layout order, the one-process reduction's
   order (:func:`.kernels.combine`), so all ranks take the same decision with the same
   bits as one process;
5. steps its shard with the rule's fused kernel, state and all, counting noise and
   stochastic rounding from each value's place in the whole model;
6. shares the updated parameters, point to point (each rank's range to every other).
"""

from __future__ import annotations

import builtins
import json
import sys
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..drivers import cpu
from ..optim import precision, saved
from ..optim.base import SHARD_CUT, Optimizer
from ..rules.transforms import nonfinite, norm_scale
from . import layout
from .checkpoint import consolidate, shard_info, shard_of
from .kernels import combine, ordered_mean

#: Values received per round of the gradient exchange, from all ranks together: the
#: receive buffers hold two rounds, not a whole gradient. Rounds of 1M values per rank
#: exchanged 5e7 values in 6 ms on 2 ranks here, one round of 25M in 13-15 ms: the
#: receive buffer stays in cache.
DEFAULT_BUCKET = 1 << 21
#: The tag of the parameters' (and stage 1's gradients') point-to-point all-gather.
_GATHER = 1


def _mpi() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - the extra is installed in CI
        raise ImportError(
            "fastopt.distributed needs mpi4py and an MPI library: pip install "
            "'fastopt[mpi]' (mpi4py with MPICH from PyPI), or mpi4py built against your "
            "cluster's MPI") from exc
    return MPI


def _abort_on_uncaught_error(MPI: Any) -> None:  # noqa: N803 - the module's name
    """Make an uncaught exception on this rank abort the MPI job after it is printed."""
    hook = sys.excepthook
    if getattr(hook, "_fastopt_aborts", False) or hasattr(sys, "ps1") or sys.flags.interactive:
        return  # set already; or an interactive session, which an error must not end

    def aborting_hook(kind, value, tb):
        hook(kind, value, tb)
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(1)

    aborting_hook._fastopt_aborts = True  # type: ignore[attr-defined]
    sys.excepthook = aborting_hook


class ShardedOptimizer:
    """A fastopt optimizer whose state is split among the ranks of an MPI communicator
    (ZeRO stage 1 or 2; Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward
    Training Trillion Parameter Models"; torch's ``ZeroRedundancyOptimizer``).

    >>> opt = ShardedOptimizer(fastopt.Adam, flat, lr=1e-3)   # was: fastopt.Adam(flat, ...)

    Every rank makes it with the same parameters' shapes and options, and calls
    :meth:`step` with its own gradients; after the step every rank holds the same
    parameters: those one process gets by stepping on the ranks' gradients summed in rank
    order and divided by their number, to the bit (noise, clipping, weight decay, groups,
    schedules, bfloat16 and 8-bit state included).

    Parameters
    ----------
    optimizer_class : type
        A fastopt optimizer class (``fastopt.Adam``, ...).
    params :
        What ``optimizer_class`` takes: a :class:`fastopt.FlatParams` (fastest: its
        buffers are sent as they are), arrays, or group dicts.
    comm : mpi4py.MPI.Comm, optional
        The ranks that share the state (default ``MPI.COMM_WORLD``).
    stage : {1, 2}
        2 (default): each rank keeps only its shard of the averaged gradient. 1: the
        averaged gradient is also shared, so every rank's gradient buffers hold it after
        the step (for logging or a rule of your own), at the cost of one more all-gather.
    average : bool
        Divide the summed gradients by the number of ranks (default), or step on the sum.
    bucket_size : int
        Values each rank receives per round of the gradient exchange, from all ranks
        together (its receive buffers hold two rounds).
    abort_on_error : bool
        True (default): an exception that ends this rank's script calls
        ``MPI_Abort``, after Python prints it, so the other ranks do not wait for it
        forever in their next collective (what ``python -m mpi4py script.py`` does; set by
        the first ShardedOptimizer of the process, for uncaught exceptions only; not in an
        interactive session).
    options :
        Keyword arguments: ``optimizer_class``'s hyperparameters and options (``lr``, ``clip_norm``,
        ``grad_noise``, ``state_dtype``, ...).
    """

    def __init__(self, optimizer_class: type[Optimizer], params: Any, *, comm: Any = None,
                 stage: int = 2, average: bool = True, bucket_size: int = DEFAULT_BUCKET,
                 abort_on_error: bool = True, **options: Any) -> None:
        MPI = _mpi()  # noqa: N806 - the module's name
        self._MPI = MPI
        if abort_on_error:
            _abort_on_uncaught_error(MPI)
        self.comm = MPI.COMM_WORLD if comm is None else comm
        if not isinstance(self.comm, MPI.Intracomm):
            raise TypeError(f"comm must be an mpi4py intracommunicator (MPI.COMM_WORLD, or one "
                            f"split from it), got {type(comm).__name__}")
        self.rank, self.world = self.comm.Get_rank(), self.comm.Get_size()
        # fastopt's own messages travel on a copy of the communicator: they never match a
        # receive of the caller's, whatever its tag
        self._comm = self.comm.Dup()
        error = None
        try:
            self._check_options(optimizer_class, stage, average, bucket_size)
            self.optimizer = self._make(optimizer_class, params, options)
        except Exception as exc:  # noqa: BLE001 - agreed on below, then raised
            error = exc
        try:
            self._agree(error)
            self.stage, self.average = stage, average
            self._fingerprint_agreed(int(bucket_size))
            self._setup(int(bucket_size))
        except Exception:
            self._comm.Free()
            raise

    # ----------------------------------------------------------------- construction
    @staticmethod
    def _check_options(cls: Any, stage: Any, average: Any, bucket_size: Any) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Optimizer)):
            raise TypeError(f"optimizer_class must be a fastopt optimizer class such as "
                            f"fastopt.Adam, got {cls!r}")
        if stage not in (1, 2) or isinstance(stage, bool):
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        if not isinstance(average, bool):
            raise ValueError(f"average must be True or False, got {average!r}")
        if isinstance(bucket_size, bool) or not isinstance(bucket_size, (int, np.integer)) \
                or bucket_size < 1:
            raise ValueError(f"bucket_size must be an int >= 1, got {bucket_size!r}")

    def _make(self, cls: type[Optimizer], params: Any, options: dict) -> Optimizer:
        parts: list = []

        def cut(segments: list[tuple[int, int, bool]]) -> list[layout.Piece]:
            parts.extend(layout.partition(segments, self.world))
            self._segments = segments
            return parts[self.rank]

        token = SHARD_CUT.set(cut)
        try:
            opt = cls(params, **options)
        finally:
            SHARD_CUT.reset(token)
        if opt._be is not cpu:
            raise TypeError("ShardedOptimizer steps host (NumPy) parameters; GPU arrays are "
                            "not sharded yet")
        self._parts = parts
        return opt

    def _fingerprint_agreed(self, bucket_size: int) -> None:
        """Every rank built the same model and options, or ValueError on every rank."""
        opt = self.optimizer
        try:  # a callable schedule of the user's cannot be compared: its type can
            groups = saved.groups_text(opt.param_groups)
        except (TypeError, ValueError):
            groups = [sorted((k, type(v).__name__) for k, v in g.items() if k != "params")
                      for g in opt.param_groups]
        mine = json.dumps([type(opt).__name__, str(opt.dtype), self._segments,
                           opt._param_sizes().tolist(), self.stage, self.average, groups,
                           bucket_size,
                           saved.options_text(opt.clip_norm, opt.grad_noise,
                                              opt.skip_nonfinite),
                           opt._precision.options()], default=str)
        prints = self._comm.allgather(mine)
        if len(set(prints)) != 1:
            odd = [q for q, p in enumerate(prints) if p != prints[0]]
            raise ValueError(
                f"ShardedOptimizer: ranks {odd} made it with other parameter shapes, groups, "
                "rule or options than rank 0; every rank must make the same optimizer")

    def _setup(self, bucket_size: int) -> None:
        opt = self.optimizer
        flat = opt._flat
        direct = flat is not None and set(opt._group_members_of) == set(flat.names)
        self._layout = layout.comm_layout(self._segments, self._parts, direct)
        if self._layout.size > 2**31 - 1 and self._MPI.Get_version() < (4, 0):
            raise ValueError(
                f"{self._layout.size} values need MPI-4's large counts; this MPI library is "
                f"MPI-{self._MPI.Get_version()[0]}: use an MPI-4 library (MPICH >= 4, Open MPI "
                ">= 5), or fewer values per optimizer")
        full = opt._full_segments
        self._full = full
        gdtype = opt._gdtype  # the gradients' dtype: the parameters' unless grad_dtype
        lay = self._layout
        if direct:
            self._gsend = None  # flat.grad (or the buffer step() is given)
            self._pbuf = flat.data
        else:
            self._gsend = np.zeros(lay.size, gdtype)
            self._pbuf = np.zeros(lay.size, opt.dtype)
        first, stop = lay.ranges[self.rank]
        self._avg = np.zeros(stop - first, gdtype)
        self._bucket = max(1, min(bucket_size // self.world, max(lay.counts)))
        self._rounds = max(-(-c // self._bucket) for c in lay.counts)
        # one receive buffer per round in flight: two while a bucket is summed
        self._recv = np.empty((min(2, self._rounds), self.world * self._bucket), gdtype)
        # 16-bit gradients: their norm is reduced by a kernel that decodes them
        self._sumsq = (precision.sumsq_kernels(opt._precision.grad)
                       if np.dtype(gdtype).itemsize == 2 else None)
        self._piece_grads = [
            self._avg[lay.piece_offset(self.rank, pc):][:pc[2] - pc[1]]
            for pc in self._parts[self.rank]]
        # the gradient norm's block partials: this rank's, and every rank's in layout order
        nblocks = [sum(cpu.blocks(b - a) for _, a, b in part) for part in self._parts]
        self._block_counts = nblocks
        self._block_displs = list(np.cumsum([0] + nblocks[:-1]).tolist())
        self._partials = np.empty(sum(nblocks), np.float64)
        self._segment_blocks = np.array([cpu.blocks(n) for _, n, _ in self._segments],
                                        np.int64)

    # ----------------------------------------------------------------- agreement
    def _agree(self, error: BaseException | None, digest: int = 0) -> None:
        """Raise on every rank if ``error`` is set on any (each rank its own error where
        it has one; elsewhere the first failing rank's, named, as the same built-in
        exception type, else RuntimeError), or if the ranks' ``digest`` differ (one
        ``Allreduce`` of three numbers when all is well)."""
        MPI = self._MPI  # noqa: N806
        flag = np.array([0 if error is None else 1, digest, -digest], np.int64)
        self._comm.Allreduce(MPI.IN_PLACE, flag, op=MPI.MAX)
        if not flag[0]:
            if flag[1] == -flag[2]:
                return
            raise ValueError(
                "the ranks' optimizers no longer agree (step count, clipping, noise, "
                "skip_nonfinite, learning rates or group hyperparameters differ): every rank "
                "must make the same calls with the same values")
        said = self._comm.allgather(
            None if error is None else (type(error).__name__, str(error)))
        if error is not None:
            raise error
        q, (name, text) = next((q, s) for q, s in enumerate(said) if s is not None)
        message = f"rank {q} refused this call, so every rank did ({name}): {text}"
        kind = getattr(builtins, name, None)
        try:
            exc = kind(message) if isinstance(kind, type) and issubclass(kind, Exception) \
                else RuntimeError(message)
        except Exception:  # noqa: BLE001 - a built-in that takes other arguments
            exc = RuntimeError(message)
        raise exc

    def _digest(self, lrs: list[float] | None = None) -> int:
        """A checksum of what every rank's optimizer must agree on before a step: its step
        count, options, learning rates ``lrs`` and group hyperparameters (a schedule by
        its values: a callable's repr names its address)."""
        opt = self.optimizer
        noise = opt.grad_noise
        key = (opt.step_count, opt.skipped_steps, opt.clip_norm, opt.skip_nonfinite,
               None if noise is None else (noise.eta, noise.gamma, int(noise.seed)), lrs,
               [[(k, v) for k, v in sorted(g.items()) if not callable(v)]
                for g in opt.param_groups], opt._group_state)
        return zlib.crc32(repr(key).encode())

    # ----------------------------------------------------------------- the step
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The wrapped optimizer's groups (edit them alike on every rank)."""
        return self.optimizer.param_groups

    @property
    def step_count(self) -> int:
        return self.optimizer.step_count

    @property
    def skipped_steps(self) -> int:
        return self.optimizer.skipped_steps

    def state_bytes(self) -> int:
        """Bytes of optimizer state this rank holds (its shard's)."""
        return self.optimizer.state_bytes()

    def buffer_bytes(self) -> int:
        """Bytes of this rank's communication buffers (the averaged gradient of its shard,
        the exchange's receive buckets, and, unless the parameters are a FlatParams that
        this optimizer steps all of, a packed copy of the gradients and parameters)."""
        extra = 0 if self._gsend is None else self._gsend.nbytes + self._pbuf.nbytes
        return int(self._avg.nbytes + self._recv.nbytes + extra)

    def _checked(self, grads: Any) -> tuple[Any, tuple[int, list[float]]]:
        """This rank's call checked as the one-process step checks it (nothing written):
        ``(gradients, prepared)``, the gradients' buffer to send (1-D, in the communication
        layout) or the list of gradients to pack, and the wrapped optimizer's
        ``_prepare()`` (the groups checked, the step's learning rates)."""
        opt = self.optimizer
        opt._gradients(grads)
        prepared = opt._prepare()
        if opt._flat is not None:
            source = opt._flat.grad if grads is None else opt._be.flat_view(grads)
        else:
            source = [grads] if isinstance(grads, np.ndarray) else list(grads)
        if self.stage == 1 and not all(
                a.flags.writeable for a in ([source] if isinstance(source, np.ndarray)
                                            else source)):
            raise ValueError("stage=1 writes the averaged gradient into the gradient buffers, "
                             "and these are read-only: pass writable arrays, or use stage=2")
        return source, prepared

    def step(self, grads: Any = None) -> None:
        """One data-parallel step: ``grads`` are this rank's gradients, as the wrapped
        optimizer's ``step`` takes them (for a FlatParams, leave them out to use
        ``flat.grad``). Every rank must call it."""
        error, source, prepared = None, None, None
        try:
            source, prepared = self._checked(grads)
        except Exception as exc:  # noqa: BLE001 - agreed on, then raised everywhere
            error = exc
        self._agree(error, 0 if error is not None else self._digest(prepared[1]))
        send = self._pack_gradients(source)
        self._exchange(send)
        if self.stage == 1:
            self._share_gradient(send, source)
        opt = self.optimizer
        decided = None
        if opt.clip_norm is not None or opt.skip_nonfinite:
            total = self._norm_total()
            skip = opt.skip_nonfinite and nonfinite(total)
            decided = (skip, norm_scale(total, opt.clip_norm)
                       if opt.clip_norm is not None and not skip else 1.0)
        before = opt.step_count
        opt._step(self._piece_grads, prepared, decided)
        if opt.step_count != before:
            self._share_parameters()

    def _pack_gradients(self, source: Any) -> np.ndarray:
        if self._gsend is None:
            return source
        lay = self._layout
        if isinstance(source, np.ndarray):  # a FlatParams' gradient buffer
            for (lo, n, _), off in zip(self._segments, lay.offsets, strict=True):
                self._gsend[off:off + n] = source[lo:lo + n]
        else:
            for s, off in zip(self._full, lay.offsets, strict=True):
                self._gsend[off:off + s.p.size] = source[s.param].reshape(-1)
        return self._gsend

    def _message(self, a: np.ndarray, counts: list[int] | None = None,
                  displs: list[int] | None = None) -> list:
        """An mpi4py buffer spec of ``a`` (or of its ranges; 16-bit values as their uint16
        bits)."""
        MPI = self._MPI  # noqa: N806
        kind = {2: MPI.UINT16_T, 4: MPI.FLOAT, 8: MPI.DOUBLE}[a.dtype.itemsize]
        data = a.view(np.uint16) if a.dtype.itemsize == 2 else a
        return [data, kind] if counts is None else [data, (counts, displs), kind]

    def _exchange(self, send: np.ndarray) -> None:
        """``self._avg`` = this rank's range of every rank's ``send``, summed in rank order
        (and divided by their number): bucket by bucket, the next bucket's exchange in
        flight while the last one is summed."""
        lay, world, me, B = self._layout, self.world, self.rank, self._bucket  # noqa: N806
        counts, displs = lay.counts, lay.displs
        mine = counts[me]
        divisor = float(world) if self.average else 1.0
        pending = None  # (request, receive buffer, this rank's values, first value)
        for k in range(self._rounds):
            # this rank's own values are not sent to itself: the mean reads them in place
            sc = [0 if q == me else max(0, min(B, c - k * B)) for q, c in enumerate(counts)]
            sd = [d + k * B if n else 0 for d, n in zip(displs, sc, strict=True)]
            n = max(0, min(B, mine - k * B))
            recv = self._recv[k % len(self._recv)][:world * n]
            rc = [0 if q == me else n for q in range(world)]
            req = self._comm.Ialltoallv(self._message(send, sc, sd), self._message(
                recv, rc, [q * n for q in range(world)]))
            own = send[displs[me] + k * B:][:n]
            if pending is not None:
                self._sum(*pending, divisor)
            pending = (req, recv, own, k * B)
        if pending is not None:
            self._sum(*pending, divisor)

    def _sum(self, req: Any, recv: np.ndarray, own: np.ndarray, first: int,
             divisor: float) -> None:
        req.Wait()
        n = own.size
        if n:
            ordered_mean(recv.reshape(self.world, n), own, self.rank,
                         self._avg[first:first + n], divisor)

    def _share_gradient(self, send: np.ndarray, source: Any) -> None:
        """Stage 1: every rank's gradient buffers get the whole averaged gradient."""
        lay = self._layout
        first, stop = lay.ranges[self.rank]
        send[first:stop] = self._avg
        self._allgather(send)
        if send is self._gsend:
            self._unpack(send, source)

    def _norm_total(self) -> float:
        """The reported sum of squares of the whole averaged gradient, as one process
        reduces it (``drivers.cpu.clip_or_skip``)."""
        me = self.rank
        mine = self._partials[self._block_displs[me]:][:self._block_counts[me]]
        b = 0
        for g in self._piece_grads:
            k = cpu.blocks(g.size)
            if self._sumsq is None:
                cpu.sum_of_squares(g, mine[b:b + k])
            else:
                cpu.sum_of_squares(g.view(np.uint16), mine[b:b + k], self._sumsq)
            b += k
        self._comm.Allgatherv(self._MPI.IN_PLACE, [self._partials, (
            self._block_counts, self._block_displs), self._MPI.DOUBLE])
        return combine(self._partials, self._segment_blocks)

    def _share_parameters(self) -> None:
        lay = self._layout
        if self._gsend is not None:
            first = lay.ranges[self.rank][0]
            for pc, s in zip(self._parts[self.rank], self.optimizer._segments, strict=True):
                off = lay.piece_offset(self.rank, pc) + first
                self._pbuf[off:off + s.p.size] = s.p
        self._allgather(self._pbuf)
        if self._gsend is not None:
            self._unpack(self._pbuf, None, others_only=True)

    def _allgather(self, buf: np.ndarray) -> None:
        """Every rank's range of ``buf`` to every rank, in place: this rank's range sent to
        each other rank, theirs received, point to point. (MPICH's in-place
        ``Allgatherv`` took 2.5x as long here: 29 ms against 12 ms at 5e7 values on 2
        ranks; ``Allgather`` 10 ms, but it needs equal ranges.)"""
        lay, me = self._layout, self.rank
        reqs = []
        for q, (a, b) in enumerate(lay.ranges):
            if q != me and b > a:
                reqs.append(self._comm.Irecv(self._message(buf[a:b]), source=q, tag=_GATHER))
        a, b = lay.ranges[me]
        if b > a:
            reqs += [self._comm.Isend(self._message(buf[a:b]), dest=q, tag=_GATHER)
                     for q in range(self.world) if q != me]
        self._MPI.Request.Waitall(reqs)

    def _unpack(self, buf: np.ndarray, grads: Any, others_only: bool = False) -> None:
        """Copy the packed ``buf`` back: into the parameters (``grads`` None; with
        ``others_only``, the values other ranks stepped) or into ``grads``."""
        lay = self._layout
        for q, part in enumerate(self._parts):
            if others_only and q == self.rank:
                continue
            for pc in part:
                i, a, b = pc
                off = lay.offsets[i] + a
                s = self._full[i]
                if grads is None:
                    dst = s.p
                elif isinstance(grads, np.ndarray):  # a FlatParams' gradient buffer
                    dst = grads[self._segments[i][0]:][:s.p.size]
                else:
                    dst = grads[s.param].reshape(-1)
                dst[a:b] = buf[off:off + b - a]

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """This rank's shard: the wrapped optimizer's state dict over its pieces, and
        ``shard`` (a JSON string): the rank, the number of ranks and the layout, which
        :func:`fastopt.distributed.consolidate` needs to join the shards."""
        sd = self.optimizer.state_dict()
        sd["shard"] = shard_info(self.optimizer, self.rank, self.world, self._segments,
                                 self._parts)
        return sd

    def consolidated_state_dict(self, to: int | None = 0) -> dict[str, Any] | None:
        """The one-process state dict, joined from every rank's shard (collective):
        returned on rank ``to`` (None elsewhere), or on every rank with ``to=None``."""
        sd = self.state_dict()
        if to is None:
            return consolidate(self._comm.allgather(sd))
        shards = self._comm.gather(sd, root=to)
        return consolidate(shards) if self.rank == to else None

    def load_state_dict(self, sd: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> None:
        """Restore a checkpoint (collective): a one-process state dict (what
        :meth:`consolidated_state_dict` or a one-process optimizer writes), the list of
        every rank's shard dicts from any number of ranks (resharded here), or this rank's
        own shard from the same number of ranks. A checkpoint refused on one rank, or
        loading other steps or options than another rank's, is refused on all: a rank
        that had loaded it goes back to its state before the call."""
        opt = self.optimizer
        error, backup = None, None
        try:
            shard = shard_of(sd, opt, self.rank, self.world, self._segments, self._parts)
            backup = opt.state_dict()
            opt.load_state_dict(shard)
        except Exception as exc:  # noqa: BLE001 - agreed on below
            error = exc
        try:  # the ranks loaded the same step, options and groups, or none keeps its load
            self._agree(error, 0 if error is not None else self._digest())
        except Exception:
            if error is None:  # another rank refused: undo this rank's load
                opt.load_state_dict(backup)
            raise

    def close(self) -> None:
        """Free the communicator the optimizer made for its messages (collective; also on
        leaving a ``with`` block). The optimizer cannot step after it."""
        if self._comm is not None and self._comm != self._MPI.COMM_NULL:
            self._comm.Free()

    def __enter__(self) -> ShardedOptimizer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ShardedOptimizer({self.optimizer!r}, rank {self.rank} of {self.world}, "
                f"stage {self.stage})")

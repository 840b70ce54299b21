"""How fastopt uses threads: how many, when a kernel runs on them, and how they behave next
to other libraries' threads.

In a training loop fastopt's step alternates with a forward and backward pass whose matrix
products run on the BLAS's own threads (OpenBLAS's, under NumPy). Measured on the
project's 2-core machines (``docs/threads.md`` has the tables and the commands):

* **Idle threads spin only briefly.** Numba's default threading layer on Linux is GNU
  OpenMP, whose idle threads spin for milliseconds after each parallel loop, on the cores
  the BLAS needs next: a NumPy MLP loop's forward/backward took 1.8-2x as long. When
  fastopt starts that layer itself, and neither ``OMP_WAIT_POLICY`` nor
  ``GOMP_SPINCOUNT`` is set, libgomp spins :data:`SPIN_COUNT` times (30-100 µs here)
  before it sleeps: long enough to go from one array of a step to the next without a
  wake-up, short enough to hand the cores back. Sleeping at once (``OMP_WAIT_POLICY=
  passive``) costs a 50-70 µs wake-up at every parallel loop.
* **Parallel only where it is faster, here and now.** After a BLAS call OpenBLAS's idle
  threads keep polling the cores, and a parallel step waits for its second thread: an Adam
  step over 1e5 float32 took 3.8x its serial time there, over 1e6 1.2x, while alone it
  takes 0.56-0.70x. Under another process's load a parallel loop waits out time slices. No size
  threshold is right in all three places, so each call site (an optimizer's array, a
  BatchNorm shape, ...) holds a :class:`Choice`: it times its serial and its parallel
  kernel as they run, uses whichever has been faster there lately, and tries the other one
  again now and then. Both compute the same bits, so a choice never changes a result.
* **Fork.** A child made with ``fork`` cannot use a GNU OpenMP that ran in its parent
  (Numba kills it: "fork() called from a process already using GNU OpenMP"). In such a
  child fastopt runs every kernel serially: same results, no crash.

How many threads: :func:`set_num_threads` (globally), :func:`thread_limit` (a block of
code, in the calling thread), threadpoolctl's ``threadpool_limits`` (fastopt registers
with it as ``internal_api="fastopt"``, ``user_api="openmp"``), and by default
``NUMBA_NUM_THREADS`` capped by ``OMP_NUM_THREADS``. :func:`threading_info` says what
applies and why.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from numba import config as _numba_config

from ._import_hooks import around_import

#: libgomp's spin count when fastopt starts Numba's OpenMP layer (see the module docstring;
#: libgomp's own default is 300,000).
SPIN_COUNT = 3000

#: A kernel call that moves fewer bytes than this always runs serially: below it a parallel
#: loop cannot win back a sleeping thread's wake-up (alone, parallel Adam won from ~0.8 MB
#: with awake threads; a wake-up costs 25-130 µs: docs/threads.md).
PARALLEL_MIN_BYTES = 1 << 20

#: Parallel is chosen when its time is below this fraction of the serial time: it occupies
#: every core for the call, so it must win clearly. It is dropped as soon as its running
#: time is no better than serial's.
PARALLEL_GAIN = 0.9

#: Calls between two tries of the kernel not in use: PROBE_FIRST after a change of mind,
#: then doubling up to PROBE_MAX while the choice holds.
PROBE_FIRST = 4
PROBE_MAX = 1024

#: Weight of a new timing in the running time of the kernel in use.
EWMA = 0.25

_perf_counter = time.perf_counter


def _env_threads(name: str) -> int | None:
    """A thread count from the environment (OMP_NUM_THREADS may be a list: its first
    entry), or None where unset or not a positive int."""
    value = os.environ.get(name, "").split(",")[0].strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def max_threads() -> int:
    """The size of Numba's thread pool, ``NUMBA_NUM_THREADS`` (fixed when Numba starts;
    by default the CPUs this process may run on)."""
    return _numba_config.NUMBA_NUM_THREADS


def _default_threads() -> int:
    omp = _env_threads("OMP_NUM_THREADS")
    return max_threads() if omp is None else min(omp, max_threads())


_default = _default_threads()  # read once, when fastopt is imported
_global: int | None = None  # set_num_threads; None: the default
_local = threading.local()  # .limit: thread_limit's value in this thread
_forked = False  # a fork of a process whose GNU OpenMP had started: serial only


def get_num_threads() -> int:
    """The number of threads fastopt's kernels may use in the calling thread now.

    By default ``NUMBA_NUM_THREADS`` (the CPUs this process may run on), capped by
    ``OMP_NUM_THREADS`` where set; :func:`set_num_threads`, :func:`thread_limit` and
    threadpoolctl's ``threadpool_limits`` change it. 1 in a forked child whose parent had
    started GNU OpenMP (see the module docstring). Whether a given call uses more than one
    thread is decided per call site, by measured speed (:class:`Choice`).
    """
    if _forked:
        return 1
    n = getattr(_local, "limit", None)
    if n is None:
        n = _default if _global is None else _global
    return n


def _checked_count(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= max_threads():
        raise ValueError(
            f"{what} takes a number of threads from 1 to {max_threads()} (NUMBA_NUM_THREADS, "
            f"the size of Numba's thread pool, set before Python starts), got {n!r}"
        )
    return n


def set_num_threads(n: int | None) -> None:
    """Let fastopt's kernels use at most ``n`` threads, in every Python thread (``None``:
    back to the default, see :func:`get_num_threads`). ``n = 1`` runs every kernel
    serially; a :func:`thread_limit` block still applies inside it."""
    global _global
    _global = None if n is None else _checked_count(n, "fastopt.set_num_threads")


@contextlib.contextmanager
def thread_limit(n: int) -> Iterator[None]:
    """``with fastopt.thread_limit(n):`` fastopt's kernels called from this Python thread
    inside the block use at most ``n`` threads (other Python threads are not affected)."""
    n = _checked_count(n, "fastopt.thread_limit")
    previous = getattr(_local, "limit", None)
    _local.limit = n
    try:
        yield
    finally:
        _local.limit = previous


# --------------------------------------------------------------------- Numba's thread pool
_parallel_module: ModuleType | None = None  # numba.np.ufunc.parallel, once started
_start_lock = threading.Lock()
_spin = "not started"  # what threading_info says about libgomp's spin
_one_at_a_time: threading.Lock | None = None  # the workqueue layer: one parallel loop at once


def _libgomp_loaded() -> str | None:
    """The path of the GNU OpenMP runtime already loaded in this process, or None."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                if "libgomp" in line:
                    return line.split()[-1]
    except OSError:  # not Linux: ask the loader
        try:
            ctypes.CDLL("libgomp.so.1", mode=getattr(os, "RTLD_NOLOAD", 4))
            return "libgomp.so.1"
        except OSError:
            return None
    return None


def _start() -> ModuleType:
    """Start Numba's threading layer (once), with a short libgomp spin where fastopt may
    choose it (see the module docstring)."""
    global _parallel_module, _spin, _one_at_a_time
    with _start_lock:
        if _parallel_module is not None:
            return _parallel_module
        from numba.np.ufunc import parallel

        if parallel._is_initialized:
            _spin = "Numba's threading layer was started before fastopt's first parallel loop"
            parallel._launch_threads()
        elif any(k in os.environ for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")):
            _spin = ("as set in the environment (OMP_WAIT_POLICY / GOMP_SPINCOUNT = "
                     f"{os.environ.get('OMP_WAIT_POLICY')} / {os.environ.get('GOMP_SPINCOUNT')})")
            parallel._launch_threads()
        elif (loaded := _libgomp_loaded()) is not None:
            _spin = (f"as set by the library that loaded GNU OpenMP first ({loaded}); fastopt "
                     "shares its threads")
            parallel._launch_threads()
        else:  # libgomp reads its environment once, when it is loaded: now
            os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
            try:
                parallel._launch_threads()
            finally:
                del os.environ["GOMP_SPINCOUNT"]
            _spin = f"GOMP_SPINCOUNT={SPIN_COUNT}, set by fastopt when it started the layer"
        layer = parallel.threading_layer()
        if layer != "omp":
            _spin = f"not GNU OpenMP: Numba's {layer} layer"
        if layer == "workqueue":  # it aborts on concurrent parallel loops
            _one_at_a_time = threading.Lock()
        _parallel_module = parallel
        return parallel


def call_parallel(kernel: Callable, args: tuple, threads: int) -> Any:
    """``kernel(*args)`` (a parallel kernel) on ``threads`` threads; Numba's own per-thread
    count is restored afterwards."""
    par = _parallel_module or _start()
    old = par._get_num_threads()
    if old != threads:
        par._set_num_threads(threads)
    try:
        return kernel(*args)
    finally:
        if old != threads:
            par._set_num_threads(old)


# ------------------------------------------------------------------ serial or parallel
class Choice:
    """Serial or parallel for one call site: whichever has been faster there lately.

    It starts serial. The first call of each kernel is not timed (it may compile or load
    it, and finds cold caches); after that the kernel in use is timed at every call (a
    running average), and every ``interval`` calls the other one is tried once: parallel
    is taken when it beats serial by :data:`PARALLEL_GAIN`, and dropped as soon as its
    running time is no better than serial's last one. The interval doubles (up to
    :data:`PROBE_MAX`) whenever a try confirms the choice or parallel is dropped, so a
    loaded machine, where parallel keeps losing, pays for few tries.
    """

    __slots__ = ("parallel", "seconds", "warm", "countdown", "interval")

    def __init__(self) -> None:
        self.parallel = False
        self.seconds = [math.inf, math.inf]  # serial, parallel
        self.warm = [False, False]
        self.countdown = 3  # a warm-up call and a timed serial call, then a try
        self.interval = PROBE_FIRST

    def pick(self) -> tuple[bool, bool]:
        """``(run parallel, is a try of the kernel not in use)`` for the next call."""
        trying = self.countdown <= 1
        return self.parallel != trying, trying

    def record(self, parallel: bool, trying: bool, seconds: float) -> None:
        i = int(parallel)
        if not self.warm[i]:
            self.warm[i] = True
            self.countdown = 1 if trying else self.countdown - 1  # a try: again, timed
            return
        if trying:
            self.seconds[i] = seconds
            want = self.seconds[1] < PARALLEL_GAIN * self.seconds[0]
            if want == self.parallel:  # the choice holds: try the other less often
                self.interval = min(2 * self.interval, PROBE_MAX)
            else:
                self.parallel = want
            self.countdown = self.interval
            return
        old = self.seconds[i]
        self.seconds[i] = seconds if old == math.inf else old + EWMA * (seconds - old)
        self.countdown -= 1
        if parallel and self.seconds[1] >= self.seconds[0]:
            # lost its lead (as under another process's load, where a lucky try can win):
            # serial now, and parallel tried less often
            self.parallel = False
            self.interval = self.countdown = min(2 * self.interval, PROBE_MAX)


_forced: bool | None = None  # see forced()


@contextlib.contextmanager
def forced(mode: str) -> Iterator[None]:
    """For tests and benchmarks: inside the block every call site that has a parallel
    kernel runs the kernel named, ``"serial"`` or ``"parallel"`` (this one on
    :func:`get_num_threads` threads, so still serial with one), whatever its
    :class:`Choice` and the byte floor say. Process-wide; not for concurrent use."""
    global _forced
    if mode not in ("serial", "parallel"):
        raise ValueError(f"forced() takes 'serial' or 'parallel', got {mode!r}")
    previous, _forced = _forced, mode == "parallel"
    try:
        yield
    finally:
        _forced = previous


def is_forced() -> bool:
    """Whether a :func:`forced` block is in effect."""
    return _forced is not None


def run(choice: Choice, serial: Callable, parallel: Callable, args: tuple, nbytes: int) -> Any:
    """``serial(*args)`` or ``parallel(*args)``, as ``choice`` says (always serial with one
    thread or below :data:`PARALLEL_MIN_BYTES`); the call is timed for ``choice``."""
    threads = get_num_threads()
    if threads < 2:
        return serial(*args)
    if _forced is not None:
        use, trying = _forced, None
    elif nbytes < PARALLEL_MIN_BYTES:
        return serial(*args)
    else:
        use, trying = choice.pick()
    lock = None
    if use:
        if _parallel_module is None:
            _start()
        lock = _one_at_a_time
        if lock is not None and not lock.acquire(blocking=False):
            return serial(*args)  # another Python thread is in a workqueue loop: not now
    start = _perf_counter()
    try:
        out = call_parallel(parallel, args, threads) if use else serial(*args)
    finally:
        if lock is not None:
            lock.release()
    if trying is not None:
        choice.record(use, trying, _perf_counter() - start)
    return out


_choices: dict[Any, Choice] = {}


def choice_for(key: Any) -> Choice:
    """The :class:`Choice` of a call site known by ``key`` (the functional layer's arrays,
    a BatchNorm shape); at most 4096 are kept."""
    c = _choices.get(key)
    if c is None:
        if len(_choices) >= 4096:
            _choices.clear()
        c = _choices[key] = Choice()
    return c


# ------------------------------------------------------------------------------ fork
def _after_fork_in_child() -> None:
    """In a forked child: serial only, if the parent had started GNU OpenMP (Numba's layer,
    or another library's: its thread pool is not in the child)."""
    global _forked
    if _forked:
        return
    par = sys.modules.get("numba.np.ufunc.parallel")
    started = par is not None and par._is_initialized and par.threading_layer() == "omp"
    if started or _libgomp_loaded() is not None:
        _forked = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ------------------------------------------------------------------------ threadpoolctl
def _register_with_threadpoolctl(tpc: ModuleType) -> None:
    """Make ``threadpoolctl.threadpool_limits`` limit fastopt too (:func:`set_num_threads`).

    threadpoolctl finds the libraries it controls among the loaded shared objects; fastopt
    has none of its own, so its controller is matched to Numba's runtime helper library
    (``_helperlib``), which is loaded whenever fastopt is."""

    class FastoptController(tpc.LibController):
        user_api = "openmp"  # its threads are OpenMP threads (Numba's default layer)
        internal_api = "fastopt"
        filename_prefixes = ("_helperlib",)

        def get_num_threads(self) -> int:
            return _default if _global is None else _global

        def set_num_threads(self, num_threads: int) -> None:
            set_num_threads(max(1, min(int(num_threads), max_threads())))

        def get_version(self) -> str:
            from . import __version__

            return __version__

    tpc.register(FastoptController)


def _register_after_import(module: ModuleType, exec_module: Callable) -> None:
    exec_module(module)
    try:
        _register_with_threadpoolctl(module)
    except Exception as exc:  # noqa: BLE001 - a threadpoolctl without this API
        sys.stderr.write(f"fastopt: could not register with threadpoolctl ({exc}); use "
                         "fastopt.set_num_threads to limit fastopt's threads\n")


if "threadpoolctl" in sys.modules:
    try:
        _register_with_threadpoolctl(sys.modules["threadpoolctl"])
    except Exception:  # noqa: BLE001
        pass
else:
    around_import("threadpoolctl", _register_after_import)


def threading_info() -> dict[str, Any]:
    """What decides fastopt's threads in this process: a plain dict, for logs and bug
    reports."""
    par = sys.modules.get("numba.np.ufunc.parallel")
    started = par is not None and par._is_initialized
    return {
        "num_threads": get_num_threads(),
        "max_threads": max_threads(),
        "default_threads": _default,
        "set_num_threads": _global,
        "thread_limit": getattr(_local, "limit", None),
        "threading_layer": par.threading_layer() if started else "not started",
        "openmp_spin": _spin,
        "forked_child_serial": _forked,
        "parallel_min_bytes": PARALLEL_MIN_BYTES,
        "serial_or_parallel": "per call site, by measured time (fastopt.parallel.Choice)",
    }

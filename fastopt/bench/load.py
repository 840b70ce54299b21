"""Is another process competing for the cores? Read off the kernel's CPU accounting.

A benchmark row measured while other processes (or, on a virtual machine, other guests:
the "steal" time) used the cores is not a measurement of fastopt. :class:`OtherLoad`
tells how many cores everything but this process used during a block: the machine's busy
time from ``/proc/stat`` minus this process's own CPU time, over the wall time. On a
system without ``/proc/stat`` it reports None (unknown).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import TracebackType

#: Cores used by others during a row above which the row is re-run, then marked.
BUSY_CORES = 0.25


def _busy_seconds() -> float | None:
    """CPU seconds all CPUs have spent busy (user, nice, system, irq, softirq, steal)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """``with OtherLoad() as load: ...``; then ``load.cores``: the cores other processes
    used on average during the block (None where unknown)."""

    def __enter__(self) -> OtherLoad:
        self.cores: float | None = None
        self._busy = _busy_seconds()
        self._own = time.process_time()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        busy = _busy_seconds()
        if busy is None or self._busy is None:
            return
        wall = time.perf_counter() - self._wall
        own = time.process_time() - self._own
        # /proc/stat counts in clock ticks (10 ms): short blocks read 0 or a tick more
        self.cores = max(0.0, (busy - self._busy - own) / max(wall, 1e-9))

    @property
    def busy(self) -> bool:
        return self.cores is not None and self.cores > BUSY_CORES


def measured(fn, retries: int = 1):
    """``(fn(), other cores)``: run ``fn`` under :class:`OtherLoad`, again (up to
    ``retries`` times) while other processes used more than :data:`BUSY_CORES` cores; the
    last result, with the load it saw."""
    for attempt in range(retries + 1):
        with OtherLoad() as load:
            out = fn()
        if not load.busy or attempt == retries:
            return out, load.cores
    raise AssertionError("unreachable")


class BusyProcess:
    """``with BusyProcess():`` another Python process spinning on one core (a CPU-bound
    neighbour, for timings under load)."""

    def __enter__(self) -> BusyProcess:
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.2)  # let it reach the scheduler's steady state
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.kill()
        self.proc.wait()

"""fastopt's threads: how many (set_num_threads, thread_limit, OMP_NUM_THREADS,
threadpoolctl), serial or parallel per call site (Choice), a short OpenMP spin, forked
children and concurrent Python threads."""

import json
import os
import subprocess
import sys
import textwrap
import threading

import numba
import numpy as np
import pytest

import fastopt
from fastopt import parallel

MAX = parallel.max_threads()
needs_two = pytest.mark.skipif(MAX < 2, reason="needs at least two threads")


def _python(code: str, env: dict | None = None) -> str:
    """Run ``code`` in a fresh interpreter; its stdout."""
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS",
                             "NUMBA_THREADING_LAYER")}
    full_env.update(env or {})
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, env=full_env, timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


# ---------------------------------------------------------------------- how many threads
def test_thread_counts_set_globally_and_for_a_block():
    assert fastopt.get_num_threads() == parallel._default
    fastopt.set_num_threads(1)
    try:
        assert fastopt.get_num_threads() == 1
        with fastopt.thread_limit(MAX):
            assert fastopt.get_num_threads() == MAX
            with fastopt.thread_limit(1):
                assert fastopt.get_num_threads() == 1
            assert fastopt.get_num_threads() == MAX
        assert fastopt.get_num_threads() == 1
    finally:
        fastopt.set_num_threads(None)
    assert fastopt.get_num_threads() == parallel._default


def test_a_block_limit_holds_in_its_own_python_thread_only():
    seen = []
    inside, done = threading.Event(), threading.Event()

    def other():
        inside.wait()
        seen.append(fastopt.get_num_threads())
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with fastopt.thread_limit(1):
        inside.set()
        done.wait()
        assert fastopt.get_num_threads() == 1
    t.join()
    assert seen == [parallel._default]


@pytest.mark.parametrize("bad", [0, -1, MAX + 1, 1.5, "2", True, None])
def test_bad_thread_counts_are_refused_and_change_nothing(bad):
    if bad is not None:
        with pytest.raises(ValueError, match="NUMBA_NUM_THREADS"):
            fastopt.set_num_threads(bad)
        assert fastopt.get_num_threads() == parallel._default
    with pytest.raises(ValueError, match="from 1 to"), fastopt.thread_limit(bad):
        pass
    assert fastopt.get_num_threads() == parallel._default


def test_omp_num_threads_caps_the_default():
    got = _python("import fastopt; print(fastopt.get_num_threads())",
                  {"OMP_NUM_THREADS": "1,1"})
    assert got.split() == ["1"]
    got = _python("import fastopt; print(fastopt.get_num_threads())",
                  {"OMP_NUM_THREADS": "64"})
    assert got.split() == [str(MAX)]  # capped by the pool's size


THREADPOOLCTL = """
import json
{first}
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits
out = {{"before": fastopt.get_num_threads()}}
with threadpool_limits(limits=1):
    out["inside"] = fastopt.get_num_threads()
with threadpool_limits(limits=1, user_api="blas"):
    out["blas only"] = fastopt.get_num_threads()
out["after"] = fastopt.get_num_threads()
out["listed"] = [i["internal_api"] for i in threadpool_info() if i["internal_api"] == "fastopt"]
print(json.dumps(out))
"""


@pytest.mark.parametrize("first", ["import fastopt; import threadpoolctl",
                                   "import threadpoolctl; import fastopt"],
                         ids=["fastopt-first", "threadpoolctl-first"])
def test_threadpool_limits_reach_fastopt(first):
    pytest.importorskip("threadpoolctl")
    got = json.loads(_python(THREADPOOLCTL.format(first=first)))
    assert got == {"before": MAX, "inside": 1, "blas only": MAX, "after": MAX,
                   "listed": ["fastopt"]}


# --------------------------------------------------------------------- serial or parallel
class FakeKernels:
    """A serial and a parallel "kernel" that advance a fake clock by set amounts."""

    def __init__(self, monkeypatch, serial_s, parallel_s):
        self.now = 0.0
        self.cost = {"serial": serial_s, "parallel": parallel_s}
        self.calls = []
        monkeypatch.setattr(parallel, "_perf_counter", lambda: self.now)

    def kernel(self, mode):
        def run(*args):
            self.calls.append(mode)
            self.now += self.cost[mode]
        return run

    def run(self, choice, n=1, nbytes=parallel.PARALLEL_MIN_BYTES):
        for _ in range(n):
            parallel.run(choice, self.kernel("serial"), self.kernel("parallel"), (), nbytes)


@needs_two
def test_a_choice_starts_serial_then_takes_the_faster_parallel_kernel(monkeypatch):
    k = FakeKernels(monkeypatch, serial_s=1.0, parallel_s=0.5)
    c = parallel.Choice()
    k.run(c, 4)
    # a warm-up call and a timed serial call, then parallel twice (warm-up, timed)
    assert k.calls == ["serial", "serial", "parallel", "parallel"]
    assert c.parallel
    k.calls.clear()
    k.run(c, 40)
    # serial is tried again after 4 calls, then after 8, 16: the choice holds
    tries = [i for i, m in enumerate(k.calls) if m == "serial"]
    assert tries == [3, 11, 27]


@needs_two
def test_a_choice_stays_serial_when_parallel_is_slower_and_drops_a_slowing_one(monkeypatch):
    k = FakeKernels(monkeypatch, serial_s=1.0, parallel_s=2.0)
    c = parallel.Choice()
    k.run(c, 30)
    assert not c.parallel
    # warm-up, then tries at calls 4, 12 and 28: the interval doubles while serial wins
    assert [i + 1 for i, m in enumerate(k.calls) if m == "parallel"] == [3, 4, 12, 28]
    # parallel fast: taken at the next try (call 60); slower than serial: dropped at once
    k.cost["parallel"] = 0.5
    k.run(c, 29)
    assert not c.parallel
    k.run(c, 1)
    assert c.parallel
    k.calls.clear()
    k.cost["parallel"] = 1.5
    k.run(c, 8)
    assert not c.parallel
    # its running time passes serial's at the 3rd call; tried again only 64 calls later
    # (the interval, 32 then, doubles when parallel is dropped)
    assert k.calls == ["parallel"] * 3 + ["serial"] * 5
    assert c.interval == 64 and c.countdown == 64 - 5


@needs_two
def test_parallel_needs_two_threads_and_enough_bytes(monkeypatch):
    k = FakeKernels(monkeypatch, serial_s=1.0, parallel_s=0.1)
    c = parallel.Choice()
    k.run(c, 20, nbytes=parallel.PARALLEL_MIN_BYTES - 1)
    with fastopt.thread_limit(1):
        k.run(c, 20)
    assert set(k.calls) == {"serial"}
    with parallel.forced("parallel"):
        k.run(c, 3, nbytes=1)
    assert k.calls[-3:] == ["parallel"] * 3
    with pytest.raises(ValueError, match="'serial' or 'parallel'"), parallel.forced("fast"):
        pass


@needs_two
def test_numba_own_thread_count_is_left_as_it_was():
    """fastopt runs its parallel kernels on its own count and restores Numba's per-thread
    count afterwards, so a user's own Numba code keeps its setting."""
    p = np.zeros(300_000)
    opt = fastopt.Adam(p)
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with parallel.forced("parallel"):
            opt.step(np.ones_like(p))
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(old)
    assert opt.step_count == 1


# ------------------------------------------------------------ good neighbours: the spin
SPIN = """
import time, numpy as np, fastopt
from fastopt import parallel, rules
from fastopt.drivers import cpu
{before}
p = np.zeros(1 << 20, np.float32); g = np.ones_like(p)
args = (p, g, (), (0.1,), None, None, None, None)
k = cpu.step_kernel(rules.sgd, True)
burned = []
for _ in range(12):
    parallel.call_parallel(k, args, 2)
    c0 = time.process_time(); time.sleep(0.03); burned.append(time.process_time() - c0)
import os, json
print(json.dumps({{"burned_ms": 1e3 * sorted(burned)[6], "env": os.environ.get("GOMP_SPINCOUNT"),
                  "spin": fastopt.threading_info()["openmp_spin"]}}))
"""


@needs_two
def test_idle_threads_stop_spinning_soon_after_a_parallel_step():
    """CPU time the process burns while its main thread sleeps 30 ms right after a
    parallel step: fastopt's short libgomp spin (~0.1 ms here), against libgomp's own
    default (~8 ms here), the control that shows the measure can tell them apart."""
    mine = json.loads(_python(SPIN.format(before="")))
    if mine["spin"].startswith("not GNU OpenMP"):
        pytest.skip(mine["spin"])
    assert mine["spin"].startswith(f"GOMP_SPINCOUNT={parallel.SPIN_COUNT}")
    assert mine["env"] is None  # the environment is as it was
    default = json.loads(_python(SPIN.format(before=""), {"GOMP_SPINCOUNT": "300000"}))
    assert "as set in the environment" in default["spin"]
    assert mine["burned_ms"] < 2.0 < default["burned_ms"]


def test_an_openmp_loaded_by_another_library_keeps_its_settings():
    got = json.loads(_python(SPIN.format(
        before="import ctypes; ctypes.CDLL('libgomp.so.1')")))
    assert "loaded GNU OpenMP first" in got["spin"] and got["env"] is None


# --------------------------------------------------------- fork and concurrent threads
FORK = """
import multiprocessing as mp, numpy as np, fastopt
from fastopt import parallel
parallel.PARALLEL_MIN_BYTES = 0
rng = np.random.default_rng(5)
p = rng.standard_normal(200_000).astype(np.float32)
grads = [rng.standard_normal(p.size).astype(np.float32) for _ in range(4)]
opt = fastopt.Adam(p, clip_norm=10.0, grad_noise=fastopt.GradientNoise(0.01, seed=3))
with parallel.forced("parallel"):
    opt.step(grads[0])  # the parent's GNU OpenMP threads are running now

def child(conn):
    for g in grads[1:]:
        opt.step(g)  # Numba would kill a forked child at its first parallel loop
    conn.send((p.copy(), fastopt.threading_info()["forked_child_serial"]))

ctx = mp.get_context("fork")
here, there = ctx.Pipe()
proc = ctx.Process(target=child, args=(there,))
proc.start()
got, serial = here.recv() if here.poll(120) else (None, False)  # None: it died
proc.join(30)
with parallel.forced("parallel"):
    for g in grads[1:]:
        opt.step(g)
print(proc.exitcode, int(serial), int(np.array_equal(got, p)),
      int(fastopt.threading_info()["forked_child_serial"]))
"""


@needs_two
def test_a_forked_child_steps_serially_and_bit_identically():
    assert _python(FORK).split() == ["0", "1", "1", "0"]


def _two_optimizers(n=300_000):
    rng = np.random.default_rng(8)
    made = []
    for cls in (fastopt.Adam, fastopt.RMSprop):
        p = rng.standard_normal(n).astype(np.float32)
        grads = [rng.standard_normal(n).astype(np.float32) for _ in range(5)]
        made.append((p, cls(p, clip_norm=100.0), grads))
    return made


@needs_two
def test_python_threads_stepping_at_once_match_stepping_one_after_the_other():
    one_by_one = _two_optimizers()
    with parallel.forced("parallel"):
        for _, opt, grads in one_by_one:
            for g in grads:
                opt.step(g)
        together = _two_optimizers()
        start = threading.Barrier(2)

        def train(opt, grads):
            start.wait()
            for g in grads:
                opt.step(g)

        threads = [threading.Thread(target=train, args=(o, gs)) for _, o, gs in together]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for (a, _, _), (b, _, _) in zip(one_by_one, together, strict=True):
        assert np.array_equal(a, b)


WORKQUEUE = """
import threading, numpy as np, fastopt
from fastopt import parallel
def make():
    rng = np.random.default_rng(1)
    return [(rng.standard_normal(400_000), rng.standard_normal((6, 400_000))) for _ in range(2)]
ref = make()
for p, gs in ref:
    opt = fastopt.Adam(p)
    for g in gs:
        opt.step(g)
runs = make()
with parallel.forced("parallel"):
    ts = [threading.Thread(target=lambda p=p, gs=gs: [o.step(g) for o in [fastopt.Adam(p)]
                                                       for g in gs]) for p, gs in runs]
    [t.start() for t in ts]; [t.join() for t in ts]
print(fastopt.threading_info()["threading_layer"],
      int(all(np.array_equal(a, b) for (a, _), (b, _) in zip(ref, runs))))
"""


@needs_two
def test_workqueue_layer_takes_one_parallel_loop_at_a_time():
    """Numba's workqueue layer aborts the process on concurrent parallel loops: fastopt
    runs one at a time there (the others serially)."""
    assert _python(WORKQUEUE, {"NUMBA_THREADING_LAYER": "workqueue"}).split() == [
        "workqueue", "1"]

"""fastopt.distributed: the shard layout (in process), and ShardedOptimizer under
``mpiexec -n 1..4`` (oversubscribed on this machine's cores, one Numba thread per rank)
against one process stepping on the same averaged gradients, to the bit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import distributed_cases as dc  # tests/ is on the path (pytest puts it there)
import numpy as np
import pytest

import fastopt
from fastopt.distributed import GRAIN, partition
from fastopt.distributed.layout import comm_layout

HERE = Path(__file__).parent


# ----------------------------------------------------------------- layout (no MPI)
@pytest.mark.parametrize("ranks", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("sizes", [[1], [3, 1, 2], [GRAIN * 5 + 17, 9, GRAIN - 1],
                                   [10 * GRAIN, GRAIN, 1, 3 * GRAIN + 5]])
def test_partition_covers_each_value_once_on_grain_boundaries(ranks, sizes):
    offsets = np.cumsum([0] + [-(-n // 16) * 16 for n in sizes[:-1]]).tolist()
    segments = [(lo, n, False) for lo, n in zip(offsets, sizes, strict=True)]
    parts = partition(segments, ranks)
    seen = [np.zeros(n, int) for n in sizes]
    order = []
    for part in parts:
        for i, a, b in part:
            assert a % GRAIN == 0 and (b % GRAIN == 0 or b == sizes[i]) and a < b
            seen[i][a:b] += 1
            order.append((i, a))
    assert all((s == 1).all() for s in seen)
    assert order == sorted(order)  # rank after rank, in layout order
    total = sum(sizes)
    for part in parts:  # within a grain of an even split
        assert sum(b - a for _, a, b in part) <= -(-total // ranks) + GRAIN


def test_partition_keeps_whole_segments_whole():
    segments = [(0, 3 * GRAIN, True), (3 * GRAIN, 7, True), (4 * GRAIN, 2 * GRAIN, False)]
    parts = partition(segments, 3)
    pieces = [p for part in parts for p in part]
    assert (0, 0, 3 * GRAIN) in pieces and (1, 0, 7) in pieces


def test_comm_layout_ranges_tile_the_buffers():
    segments = [(0, 2 * GRAIN + 3, False), (2 * GRAIN + 16, 5, False)]
    parts = partition(segments, 3)
    for direct in (True, False):
        lay = comm_layout(segments, parts, direct)
        assert lay.ranges[0][0] == 0 and lay.ranges[-1][1] == lay.size
        assert all(a[1] == b[0] for a, b in zip(lay.ranges, lay.ranges[1:], strict=False))
        assert lay.size == (2 * GRAIN + 21 if direct else 2 * GRAIN + 8)


# ----------------------------------------------------------------- under mpiexec
def _mpi_available() -> bool:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return False
    return shutil.which("mpiexec") is not None


needs_mpi = pytest.mark.skipif(not _mpi_available(), reason="mpi4py/mpiexec not installed")


def mpiexec(ranks: int, *args: str, timeout: float = 240,
            launcher: tuple[str, ...] = ("-m", "mpi4py")) -> subprocess.CompletedProcess:
    """``mpiexec -n ranks python -m mpi4py ARGS``, oversubscribed, one Numba thread per
    rank (an uncaught error on a rank aborts the whole job: ``-m mpi4py``)."""
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE), *filter(None, [
               os.environ.get("PYTHONPATH")])])}
    return subprocess.run(["mpiexec", "-n", str(ranks), sys.executable, *launcher, *args],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=HERE.parent)


def reference(case: str, steps: range, ranks_per_step, start=None):
    """One process: the case's optimizer stepping on the averaged gradients."""
    params = dc.make_params(case) if start is None else start
    arg, kw = dc.options(case, params)
    opt = getattr(fastopt, dc.CASES[case][0])(arg, **kw)
    for t in steps:
        opt.step(dc.set_grads(case, params, dc.averaged(case, t, ranks_per_step(t))))
    return params, opt


@pytest.fixture(scope="module", params=[1, 2, 3, 4])
def run(request, tmp_path_factory):
    if not _mpi_available():
        pytest.skip("mpi4py/mpiexec not installed")
    ranks = request.param
    path = tmp_path_factory.mktemp("mpi") / f"n{ranks}.npz"
    done = mpiexec(ranks, str(HERE / "mpi_worker.py"), str(path))
    assert done.returncode == 0, done.stderr[-4000:]
    return ranks, dict(np.load(path))


@needs_mpi
@pytest.mark.parametrize("case", list(dc.CASES))
def test_sharded_steps_are_one_process_steps_to_the_bit(run, case):
    ranks, got = run
    params, opt = reference(case, range(dc.STEPS), lambda t: ranks)
    assert bool(got[f"{case}.ranks_agree"])
    np.testing.assert_array_equal(got[f"{case}.params"], dc.values(case, params))
    assert int(got[f"{case}.skipped"]) == opt.skipped_steps
    # the joined shards are the one-process state dict, stored values and all
    sd = opt.state_dict()
    saved = {k[len(case) + 7:]: v for k, v in got.items() if k.startswith(f"{case}.state.")}
    assert set(saved) == set(sd)
    for k, v in sd.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(saved[k], v, err_msg=k)
        else:
            assert saved[k].item() == v, k


def test_same_everywhere_averages_exactly():
    """The case behind the across-N claim: its average is the same bits for every N, so
    each N's run is held to one and the same one-process run."""
    for t in range(dc.STEPS):
        one = dc.averaged("same_everywhere", t, 1)
        for n in (2, 3, 4):
            for a, b in zip(one, dc.averaged("same_everywhere", t, n), strict=True):
                np.testing.assert_array_equal(a, b)


@needs_mpi
@pytest.mark.parametrize("case", [c for c, (_, stage) in dc.CASES.items() if stage == 1])
def test_skip_is_collective_and_stage_1_shares_the_average(run, case):
    ranks, got = run
    assert int(got["list_skip.skipped"]) == 1  # the NaN was on rank 0 only
    last = dc.averaged(case, dc.STEPS - 1, ranks)
    np.testing.assert_array_equal(got[f"{case}.last_grads"],
                                  np.concatenate([g.reshape(-1) for g in last]))


@needs_mpi
def test_reshard_checkpoint_resumes_to_the_bit(run):
    ranks, got = run
    m = int(got["reshard.ranks"])
    params, _ = reference("flat_groups", range(4), lambda t: ranks if t < 2 else m)
    np.testing.assert_array_equal(got["reshard.params"], params.data)
    params, _ = reference("flat_groups", range(4), lambda t: ranks)  # each its own shard
    np.testing.assert_array_equal(got["own_shard.params"], params.data)
    assert all(m.startswith("ValueError") and "convert it in one process" in m
               for m in got["convert.messages"])


@needs_mpi
def test_consolidated_state_loads_into_one_process(run):
    ranks, got = run
    case = "eight_bit"
    sd = {k[len(case) + 7:]: v for k, v in got.items() if k.startswith(f"{case}.state.")}
    sd = {k: (v.item() if v.ndim == 0 and v.dtype.kind in "UiO" else v) for k, v in sd.items()}
    params, _ = reference(case, range(dc.STEPS), lambda t: ranks)
    one = dc.make_params(case)
    one.data[:] = params.data
    arg, kw = dc.options(case, one)
    opt = fastopt.Adam(arg, **kw)
    opt.load_state_dict(sd)
    ref_params, _ = reference(case, range(dc.STEPS + 1), lambda t: ranks)
    opt.step(dc.set_grads(case, one, dc.averaged(case, dc.STEPS, ranks)))
    np.testing.assert_array_equal(one.data, ref_params.data)


@needs_mpi
def test_a_refused_call_is_refused_on_every_rank_and_changes_nothing(run):
    ranks, got = run
    messages = list(got["bad.messages"])
    assert len(messages) == ranks and all(m.startswith("ValueError") for m in messages)
    assert all("grads[3]" in m for m in messages)
    if ranks > 1:
        assert all(f"rank {ranks - 1} refused" in m for m in messages[:-1])
    assert bool(got["bad.unchanged"])
    params, _ = reference("list_skip", range(dc.STEPS), lambda t: ranks)
    np.testing.assert_array_equal(got["bad.params"], dc.values("list_skip", params))
    if ranks > 1:
        assert all(m.startswith("ValueError") and "other parameter shapes" in m
                   for m in got["mismatch.messages"])
        assert all(m.startswith("ValueError") and "no longer agree" in m
                   for m in got["differ.messages"])


@needs_mpi
def test_state_per_rank_is_a_shard(run):
    ranks, got = run
    one = int(got["memory.one_process"])
    assert all(int(b) <= one / ranks * 1.01 for b in got["memory.state"])
    assert int(sum(got["memory.state"])) <= one * 1.01


@needs_mpi
@pytest.mark.parametrize("launcher", [("-m", "mpi4py"), ()], ids=["mpi4py", "plain"])
def test_a_failing_rank_ends_the_job(tmp_path, launcher):
    """Under ``python -m mpi4py``, and under plain ``python`` too: the ShardedOptimizer
    made the uncaught exception abort the job (else rank 0 would wait forever). Each
    rank's stderr goes to its own file, line-buffered: mpiexec's forwarding of the ranks'
    output may be cut off by the abort (about one run in six lost the traceback)."""
    script = tmp_path / "fail.py"
    script.write_text(
        "import sys\nimport numpy as np, fastopt\nfrom mpi4py import MPI\n"
        f"sys.stderr = open(r'{tmp_path}' + f'/err{{MPI.COMM_WORLD.rank}}.txt', 'w', "
        "buffering=1)\n"
        "from fastopt.distributed import ShardedOptimizer\n"
        "opt = ShardedOptimizer(fastopt.SGD, [np.zeros(10, np.float32)], lr=0.1)\n"
        "if MPI.COMM_WORLD.rank == 1:\n    raise RuntimeError('rank 1 fails outside a step')\n"
        "opt.step([np.ones(10, np.float32)])\n")
    done = mpiexec(2, str(script), timeout=120, launcher=launcher)
    assert done.returncode != 0
    assert "rank 1 fails outside a step" in (tmp_path / "err1.txt").read_text()

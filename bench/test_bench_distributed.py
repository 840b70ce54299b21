"""``python -m fastopt bench --distributed`` as a smoke test: the section run under
``mpiexec -n 2`` at a tiny size must print its table, every row with finite, positive
times and ratios. No timing is checked (a subprocess of two ranks has nothing for
pytest-benchmark to time); the real run is ``mpiexec -n 2 python -m fastopt bench
--distributed`` (``fastopt.bench.distributed``)."""

import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("stage 2", "stage 2, one bucket", "stage 1")
NUMBER = r"([-+0-9.eE]+|nan|inf)"
ROW = re.compile(rf"^(stage 2, one bucket|stage 2|stage 1)~?\s+{NUMBER}"
                 + rf"\s+{NUMBER}" * 8 + r"\s*$")


def _mpiexec() -> str | None:
    """The venv's mpiexec (the MPI that mpi4py was installed with) before PATH's."""
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.is_file() else shutil.which("mpiexec")


@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None, reason="needs mpi4py")
@pytest.mark.skipif(_mpiexec() is None, reason="needs mpiexec")
def test_distributed_section_two_ranks():
    env = {**os.environ, "NUMBA_NUM_THREADS": "1"}
    cmd = [_mpiexec(), "-n", "2", sys.executable, "-m", "fastopt", "bench", "--distributed",
           "--sizes", "1e5", "--quick"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert "2 ranks of MPI.COMM_WORLD" in text, (
        "the ranks did not join one job (an mpiexec of another MPI than mpi4py's?):\n"
        + text)
    rows = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = [float(x) for x in m.groups()[1:]]
    assert set(rows) == set(VARIANTS), text
    for name, (n, sharded, coll, one, ratio, state, one_proc, state_x, buffers) in rows.items():
        assert n == 1e5, name
        for x in (sharded, coll, one, ratio, state, one_proc, state_x, buffers):
            assert math.isfinite(x) and x > 0, (name, text)
        # each rank keeps about half of the 0.8 MB of state (cut on 4096-value grains)
        assert one_proc == pytest.approx(0.8)
        assert 0.45 <= state_x <= 0.6, name
    assert rows["stage 1"][2] > rows["stage 2"][2]  # one more Allgather in its yardstick
    assert "bucketing:" in text and "bucketed / one bucket" in text, text


def test_distributed_without_mpi4py_says_what_to_install():
    code = ("import sys; sys.modules['mpi4py'] = None\n"
            "from fastopt.__main__ import main\n"
            "sys.exit(main(['bench', '--distributed', '--sizes', '1e3']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode != 0
    assert 'pip install "fastopt[mpi]"' in out.stderr, out.stderr

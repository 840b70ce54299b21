"""The embedding examples run and learn (skipped when their library is absent)."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("script,library", [("torch_model.py", "torch"),
                                            ("autograd_mlp.py", "autograd")])
def test_example_trains(script, library):
    pytest.importorskip(library)
    out = subprocess.run([sys.executable, str(EXAMPLES / script)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    accuracy = float(re.search(r"training accuracy ([0-9.]+)", out.stdout).group(1))
    assert accuracy > 0.95, out.stdout


@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or not shutil.which("mpiexec"),
                    reason="mpi4py/mpiexec not installed")
def test_distributed_example_trains_on_two_ranks():
    out = subprocess.run(["mpiexec", "-n", "2", sys.executable,
                          str(EXAMPLES / "train_distributed.py")], capture_output=True,
                         text=True, timeout=240, env={**os.environ, "NUMBA_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    found = re.findall(r"^2 ranks: .*training accuracy ([0-9.]+)", out.stdout, re.M)
    assert len(found) == 1, out.stdout  # rank 0 alone prints
    assert float(found[0]) > 0.95, out.stdout

"""The embedding examples run and learn (skipped when their library is absent)."""

import re
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

"""fastopt's first kernel load does not import SciPy's linear algebra, and Numba's own answer
about a BLAS, and its linear algebra, are what they would have been without fastopt."""

import importlib.util
import subprocess
import sys

import pytest

HAVE_SCIPY = importlib.util.find_spec("scipy") is not None


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_a_step_leaves_scipy_linalg_unimported_and_the_hook_gone():
    got = _run(
        "import sys, numpy as np, fastopt\n"
        "HOOKED = 'numba.np.arraymath'\n"
        "p = np.ones(3, np.float32); fastopt.Adam(p).step(np.ones(3, np.float32))\n"
        "import numba.np.arraymath as am, numba.np.linalg as la\n"
        "print(int('scipy.linalg' in sys.modules), int(am._HAVE_BLAS),\n"
        "      int(la.ensure_blas.__module__ == 'numba.np.linalg'),\n"
        "      int(any(getattr(f, 'target', '') == HOOKED for f in sys.meta_path)))\n"
    )
    # scipy.linalg not imported; Numba's answer: a BLAS exactly where SciPy is installed;
    # Numba's real ensure_blas back in place; the import hook removed.
    assert got == ["0", str(int(HAVE_SCIPY)), "1", "0"]


def test_without_fastopt_numba_answers_the_same():
    """The yardstick of the test above: Numba's own probe, in a process without fastopt."""
    got = _run("import numba, numba.np.arraymath as am; print(int(am._HAVE_BLAS))")
    assert got == [str(int(HAVE_SCIPY))]


@pytest.mark.skipif(not HAVE_SCIPY, reason="Numba's linear algebra needs SciPy")
def test_numba_linear_algebra_still_works_after_fastopt():
    got = _run(
        "import sys, numpy as np, fastopt, numba\n"
        "p = np.ones(3, np.float32); fastopt.Adam(p).step(np.ones(3, np.float32))\n"
        "@numba.njit\n"
        "def dot(a, b):\n"
        "    return np.dot(a, b)\n"
        "a = np.arange(5.0)\n"
        "print(dot(a, a), int('scipy.linalg' in sys.modules))\n"
    )
    assert got == ["30.0", "1"]  # computed through SciPy's BLAS, imported when needed


def test_nothing_is_changed_when_numba_already_started():
    """fastopt imported after Numba's CPU target started: no hook, Numba's probe as is."""
    got = _run(
        "import sys, numba.np.arraymath, fastopt\n"
        "HOOKED = 'numba.np.arraymath'\n"
        "print(int(any(getattr(f, 'target', '') == HOOKED for f in sys.meta_path)))\n"
    )
    assert got == ["0"]

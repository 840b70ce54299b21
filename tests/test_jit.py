"""Compilation: lazy, cached, and never fatal when the cache cannot be written."""

import subprocess
import sys

import numpy as np
import pytest

from fastopt import _jit


def test_import_compiles_nothing():
    code = (
        "import fastopt, sys\n"
        "from fastopt.drivers import cpu\n"
        "assert cpu.step_kernel.cache_info().currsize == 0\n"
        "assert cpu.sumsq_kernel.cache_info().currsize == 0\n"
        "fastopt.Adam(__import__('numpy').ones(3)).step(__import__('numpy').ones(3))\n"
        "print(cpu.step_kernel.cache_info().currsize)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"  # only the kernel that was used


def test_unwritable_cache_falls_back_with_a_warning(monkeypatch):
    real_njit = _jit.njit

    def njit_without_cache(*args, cache=False, **kw):
        if cache:
            raise RuntimeError("cannot cache function 'f': no locator available for file 'x'")
        return real_njit(*args, **kw)

    monkeypatch.setattr(_jit, "njit", njit_without_cache)
    monkeypatch.setattr(_jit, "_cache_warned", False)

    def double(x):
        return 2 * x

    with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR"):
        f = _jit.cpu_jit(double)
    assert f(np.float64(2.0)) == 4.0


def test_source_tag_changes_with_the_source(tmp_path, monkeypatch):
    pkg = tmp_path / "tagpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "rule.py").write_text("A = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import tagpkg

    before = _jit.source_tag(tagpkg)
    (pkg / "rule.py").write_text("A = 2\n")
    assert _jit.source_tag(tagpkg) != before


class _SlowFirstCall:
    """Stands in for a Numba dispatcher whose first call compiles."""

    def __init__(self, seconds):
        self.seconds, self.overloads = seconds, {}

    def __call__(self, x):
        import time

        time.sleep(self.seconds)
        self.overloads["sig"] = "compiled"
        return x + 1


def test_a_long_first_compile_is_announced_and_a_quick_one_is_not(monkeypatch, capsys):
    monkeypatch.setattr(_jit, "COMPILE_NOTICE_AFTER", 0.05)
    slow = _SlowFirstCall(0.4)
    assert _jit.announce_compile(slow, "the test kernel")(1) == 2
    err = capsys.readouterr().err
    assert "fastopt: compiling the test kernel" in err
    assert "fastopt: the test kernel compiled in 0." in err
    assert _jit.announce_compile(slow, "the test kernel") is slow  # compiled: as is
    quick = _SlowFirstCall(0.0)
    assert _jit.announce_compile(quick, "the quick kernel")(1) == 2
    assert capsys.readouterr().err == ""

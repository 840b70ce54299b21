"""Numba's first kernel load, without importing SciPy's linear algebra.

When Numba's CPU target starts (the first kernel compiled, or loaded from the disk cache),
it imports ``numba.np.arraymath``, whose module-level ``_HAVE_BLAS = _check_blas()`` calls
``numba.np.linalg.ensure_blas()``, which imports ``scipy.linalg.cython_blas`` only to learn
whether a BLAS is there. Where SciPy is installed that import is 0.2-0.3 s of every fresh
process on the project's machines, for ``np.dot``-style code fastopt never compiles.

:func:`install`, called when this module is imported (first thing in ``fastopt``), defers
that probe. A meta-path finder waits for ``numba.np.arraymath`` to be imported (by Numba
itself, when its CPU target starts); for the time of that one import, ``ensure_blas`` is
replaced by a check that SciPy is installed (``importlib.util.find_spec``, which imports
nothing), and the real function is put back as soon as the import ends. The finder then
removes itself. Numba's answer is unchanged (SciPy installed means a BLAS, which is what
``ensure_blas`` tests), and the real SciPy import happens, inside Numba as before, the
first time anything compiles linear algebra. Where ``numba.np.arraymath`` is already
imported, or Numba's internals are not as described, nothing is changed.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

_TARGET = "numba.np.arraymath"


def _scipy_probe() -> None:
    """``ensure_blas`` while ``numba.np.arraymath`` imports: SciPy installed, or ImportError
    (the real function's failure, with its message)."""
    if importlib.util.find_spec("scipy") is None:
        raise ImportError("scipy 0.16+ is required for linear algebra")


class _DeferBlasProbe(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the normal loader of ``numba.np.arraymath``."""

    def __init__(self) -> None:
        self._finding = False

    def find_spec(
        self, fullname: str, path=None, target=None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _TARGET or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)  # the normal finders' spec
        finally:
            self._finding = False
        if spec is None or isinstance(spec.loader, type) or not hasattr(spec.loader,
                                                                        "exec_module"):
            return spec  # only a loader object of this module's own is wrapped
        real_exec = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            uninstall()
            try:  # arraymath imports it first thing; it does not import arraymath
                linalg = importlib.import_module("numba.np.linalg")
            except ImportError:
                linalg = None
            real_probe = getattr(linalg, "ensure_blas", None)
            if real_probe is None:  # not the Numba this was written for: leave it be
                real_exec(module)
                return
            linalg.ensure_blas = _scipy_probe
            try:
                real_exec(module)
            finally:
                linalg.ensure_blas = real_probe

        spec.loader.exec_module = exec_module  # this spec's own loader instance
        return spec


_finder: _DeferBlasProbe | None = None


def install() -> None:
    """Defer Numba's BLAS probe (see the module docstring); idempotent."""
    global _finder
    if _finder is not None or _TARGET in sys.modules:
        return
    _finder = _DeferBlasProbe()
    sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    """Remove the finder (done by itself once ``numba.np.arraymath`` is imported)."""
    global _finder
    if _finder is not None and _finder in sys.meta_path:
        sys.meta_path.remove(_finder)
    _finder = None


install()

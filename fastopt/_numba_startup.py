"""Numba's first kernel load, without importing SciPy's linear algebra.

When Numba's CPU target starts (the first kernel compiled, or loaded from the disk cache),
it imports ``numba.np.arraymath``, whose module-level ``_HAVE_BLAS = _check_blas()`` calls
``numba.np.linalg.ensure_blas()``, which imports ``scipy.linalg.cython_blas`` only to learn
whether a BLAS is there. Where SciPy is installed that import is 0.2-0.3 s of every fresh
process on the project's machines, for ``np.dot``-style code fastopt never compiles.

:func:`install`, called when this module is imported (first thing in ``fastopt``), defers
that probe. A meta-path finder (:mod:`fastopt._import_hooks`) waits for
``numba.np.arraymath`` to be imported (by Numba itself, when its CPU target starts); for
the time of that one import, ``ensure_blas`` is replaced by a check that SciPy is installed
(``importlib.util.find_spec``, which imports nothing), and the real function is put back as
soon as the import ends. The finder then removes itself. Numba's answer is unchanged (SciPy
installed means a BLAS, which is what ``ensure_blas`` tests), and the real SciPy import
happens, inside Numba as before, the first time anything compiles linear algebra. Where
``numba.np.arraymath`` is already imported, or Numba's internals are not as described,
nothing is changed.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from types import ModuleType

from ._import_hooks import ImportHook, around_import

_TARGET = "numba.np.arraymath"


def _scipy_probe() -> None:
    """``ensure_blas`` while ``numba.np.arraymath`` imports: SciPy installed, or ImportError
    (the real function's failure, with its message)."""
    if importlib.util.find_spec("scipy") is None:
        raise ImportError("scipy 0.16+ is required for linear algebra")


def _import_arraymath(module: ModuleType, real_exec: Callable[[ModuleType], None]) -> None:
    """Run ``numba.np.arraymath``'s code with ``ensure_blas`` replaced by the cheap probe."""
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


_hook: ImportHook | None = None


def install() -> None:
    """Defer Numba's BLAS probe (see the module docstring); idempotent."""
    global _hook
    if _hook is None:
        _hook = around_import(_TARGET, _import_arraymath)


def uninstall() -> None:
    """Remove the hook (it removes itself once ``numba.np.arraymath`` is imported)."""
    global _hook
    if _hook is not None:
        _hook.remove()
    _hook = None


install()

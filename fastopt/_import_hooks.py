"""Run code around the import of a module that fastopt does not import itself.

:func:`around_import` puts a meta-path finder in front of the normal ones. It finds
nothing itself: when the module is imported, it takes the normal finders' spec and wraps
that spec's loader, so ``wrapper(module, exec_module)`` runs the module's code
(``exec_module(module)``) with whatever the caller needs before and after. The finder
removes itself at that moment: it acts on one import, once. Nothing is imported ahead of
time, so an optional package costs nothing until its user imports it.

fastopt uses it twice: to defer Numba's BLAS probe (:mod:`fastopt._numba_startup`) and to
tell threadpoolctl about fastopt's threads when it is imported (:mod:`fastopt.parallel`).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from types import ModuleType

#: ``wrapper(module, exec_module)``: must call ``exec_module(module)`` once.
Wrapper = Callable[[ModuleType, Callable[[ModuleType], None]], None]


class ImportHook(importlib.abc.MetaPathFinder):
    """Wraps the loading of module ``target`` with ``wrapper`` (see the module docstring)."""

    def __init__(self, target: str, wrapper: Wrapper) -> None:
        self.target = target
        self.wrapper = wrapper
        self._finding = False

    def find_spec(
        self, fullname: str, path=None, target=None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.target or self._finding:
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
            self.remove()
            self.wrapper(module, real_exec)

        spec.loader.exec_module = exec_module  # this spec's own loader instance
        return spec

    def remove(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)


def around_import(target: str, wrapper: Wrapper) -> ImportHook | None:
    """Install a hook for ``target``; None (and nothing installed) if it is imported."""
    if target in sys.modules:
        return None
    hook = ImportHook(target, wrapper)
    sys.meta_path.insert(0, hook)
    return hook

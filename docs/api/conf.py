"""Sphinx configuration of fastopt's API reference.

Build it (from the repository root) with the one command, warnings as errors::

    python -m sphinx -W --keep-going -b html docs/api docs/_build/html

The optimizer page lists every class in ``fastopt.optim.__all__``: the listing is written
here, at build time (``_generated/*.inc``, not kept in git), so a rule added to the package
appears in the reference without editing these pages.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)  # the working tree's fastopt, installed or not

import fastopt  # noqa: E402
import fastopt.optim  # noqa: E402

project = "fastopt"
author = "fastopt contributors"
copyright = "fastopt contributors"
release = fastopt.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # the docstrings' "Args:" sections (Google style)
    "sphinx.ext.viewcode",
]

napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
nitpicky = False

exclude_patterns = ["_build", "_generated"]
templates_path: list[str] = []
html_theme = "alabaster"
html_static_path: list[str] = []
html_title = f"fastopt {release}"


def _where(name: str) -> str:
    """``fastopt`` where the package exports the class at the top, else ``fastopt.optim``."""
    return "fastopt" if getattr(fastopt, name, None) is getattr(fastopt.optim, name) else (
        "fastopt.optim")


def _autoclass(name: str, options: tuple[str, ...] = ()) -> list[str]:
    lines = [name, "~" * len(name), "", f".. autoclass:: {_where(name)}.{name}"]
    return lines + [f"   {o}" for o in options] + [""]


def _write(name: str, lines: list[str]) -> None:
    """Write ``_generated/<name>`` only if its text changed (so Sphinx need not reread)."""
    out = os.path.join(HERE, "_generated")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, name)
    text = "\n".join(lines) + "\n"
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _write_optimizer_listing() -> None:
    """One ``autoclass`` per name in ``fastopt.optim.__all__``: the classes other listed
    classes derive from (``Optimizer`` itself is on the page) as base classes, the rest as
    rules, in ``__all__``'s order."""
    names = [n for n in fastopt.optim.__all__ if isinstance(getattr(fastopt.optim, n), type)]
    classes = [getattr(fastopt.optim, n) for n in names]
    bases = {n for n, c in zip(names, classes, strict=True)
             if any(o is not c and issubclass(o, c) for o in classes)}
    base_lines: list[str] = []
    rule_lines: list[str] = []
    for name in names:
        if name == "Optimizer":
            continue
        if name in bases:
            base_lines += _autoclass(name, (":show-inheritance:",))
        else:
            rule_lines += _autoclass(name)
    _write("optimizer_bases.inc", base_lines)
    _write("optimizers.inc", rule_lines)


_write_optimizer_listing()

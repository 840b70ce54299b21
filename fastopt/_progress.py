"""A dependency-free progress bar on stderr (a line per item when stderr is not a terminal)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], label: str, total: int | None = None,
             enabled: bool = True) -> Iterator[T]:
    items = list(items) if total is None else items
    total = len(items) if total is None else total
    tty = sys.stderr.isatty()
    start = time.perf_counter()
    for i, item in enumerate(items):
        if enabled:
            name = str(item)[:24]
            if tty:
                done = int(30 * i / max(total, 1))
                sys.stderr.write(f"\r{label} [{'#' * done}{'.' * (30 - done)}] {i}/{total} "
                                 f"{name:<24}")
            else:
                sys.stderr.write(f"{label} {i + 1}/{total}: {name}\n")
            sys.stderr.flush()
        yield item
    if enabled and tty:
        sys.stderr.write(f"\r{label} [{'#' * 30}] {total}/{total} "
                         f"({time.perf_counter() - start:.1f} s){' ' * 16}\n")
        sys.stderr.flush()

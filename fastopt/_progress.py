"""A dependency-free progress bar on stderr; where stderr is not a terminal (a log, CI),
one line when the work is done instead."""

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
    done = 0
    try:
        for item in items:
            if enabled and tty:
                filled = int(30 * done / max(total, 1))  # items finished so far
                sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (30 - filled)}] "
                                 f"{done}/{total} {str(item)[:24]:<24}")
                sys.stderr.flush()
            done += 1  # counted when handed out: a caller that breaks has used it
            yield item
    finally:  # also when the caller stops early (early stopping)
        if enabled:
            lead = f"\r{label} [{'#' * 30}] " if tty else f"{label} done: "
            sys.stderr.write(f"{lead}{done}/{total} ({time.perf_counter() - start:.1f} s)"
                             f"{' ' * 30 if tty else ''}\n")
            sys.stderr.flush()

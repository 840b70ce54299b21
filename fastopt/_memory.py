"""Aligned host buffers (a cache line, and a whole AVX-512 vector, per array start)."""

from __future__ import annotations

import numpy as np

ALIGNMENT = 64  # bytes: a cache line, and a whole AVX-512 vector


def aligned_empty(n: int, dtype: np.dtype, alignment: int = ALIGNMENT) -> np.ndarray:
    """An uninitialised 1-D array of ``n`` elements whose data starts on ``alignment`` bytes."""
    dtype = np.dtype(dtype)
    raw = np.empty(n * dtype.itemsize + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    return raw[start : start + n * dtype.itemsize].view(dtype)


def aligned_zeros(n: int, dtype: np.dtype) -> np.ndarray:
    a = aligned_empty(n, dtype)
    a.fill(0)
    return a

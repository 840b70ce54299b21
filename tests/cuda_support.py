"""Shared pieces of the CUDA tests: skip markers and host/device helpers."""

import importlib.util
import os

import numpy as np
import pytest

HAVE_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

needs_numba_cuda = pytest.mark.skipif(
    not HAVE_NUMBA_CUDA, reason="numba-cuda is not installed (pip install 'fastopt[cuda]')"
)


def to_device(a: np.ndarray):
    from numba import cuda

    return cuda.to_device(np.ascontiguousarray(a))


def host(a) -> np.ndarray:
    return a.copy_to_host()

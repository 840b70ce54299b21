"""Backends: how a rule is looped over memory. The equations live in ``fastopt.rules``.

``cpu`` steps NumPy arrays with ``prange`` loops; ``cuda`` steps device arrays (Numba
device arrays, and anything exposing ``__cuda_array_interface__``: CuPy arrays, torch CUDA
tensors) with ``numba.cuda`` kernels. Both compile the same element functions. The CUDA
driver, and ``numba.cuda`` with it, is imported only when a device array is first seen.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from types import ModuleType
from typing import Any

import numpy as np

from . import cpu
from .overlap import check_entry_apart

_DLPACK_CUDA_DEVICES = (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


#: Numba's device array types seen so far: every instance is a GPU array, and telling so by
#: type skips building its ``__cuda_array_interface__`` dict (a few µs; BatchNorm's GPU path
#: asks about a dozen arrays per step).
_numba_device_types: set[type] = set()


def is_device_array(a: Any) -> bool:
    """True for a GPU array (checked without importing ``numba.cuda``)."""
    t = type(a)
    if t in _numba_device_types:
        return True
    if isinstance(a, np.ndarray):
        return False
    if t.__module__.startswith(("numba.cuda", "numba_cuda")) and hasattr(a, "copy_to_host"):
        _numba_device_types.add(t)  # Numba device arrays, simulator ones included
        return True
    try:
        a.__cuda_array_interface__  # noqa: B018 - probing the protocol
        return True
    except AttributeError:
        pass
    except Exception:  # noqa: BLE001 - e.g. a torch CUDA tensor that requires grad: the
        return True  # CUDA driver's check then says to pass tensor.detach()
    dlpack_device = getattr(a, "__dlpack_device__", None)
    if dlpack_device is not None:
        try:
            return dlpack_device()[0] in _DLPACK_CUDA_DEVICES
        except Exception:  # noqa: BLE001 - a foreign object that cannot say: not ours
            return False
    return False


_cuda_module: ModuleType | None = None


def cuda_driver() -> ModuleType:
    """The CUDA driver module, or an ImportError that says what to install."""
    global _cuda_module
    if _cuda_module is not None:  # every GPU call asks: the module lookup once
        return _cuda_module
    if importlib.util.find_spec("numba_cuda") is None:
        raise ImportError(
            "fastopt got GPU arrays, and its GPU path needs NVIDIA's numba-cuda package: "
            "pip install 'fastopt[cuda]' (or: pip install 'numba-cuda[cu12]')"
        )
    from . import cuda

    cuda.check_numpy_support()  # raises where this numpy cannot compile a kernel
    _cuda_module = cuda
    return cuda


def backend_of(arrays: Iterable[Any], what: str = "arrays") -> ModuleType:
    """``cpu`` for NumPy arrays, the CUDA driver for device arrays; mixing them is refused."""
    arrays = arrays if isinstance(arrays, (list, tuple)) else list(arrays)
    for a in arrays:  # the common case first, cheaply: all NumPy
        if not isinstance(a, np.ndarray):
            break
    else:
        return cpu
    kinds = {is_device_array(a) for a in arrays}
    if len(kinds) > 1:
        raise ValueError(
            f"the {what} mix host (NumPy) and GPU arrays; keep parameters, gradients and "
            "state on one device"
        )
    return cuda_driver() if kinds == {True} else cpu


def _checked_state(be: ModuleType, p: Any, s: Any, what: str) -> Any:
    s = be.check_param(s, what)
    if tuple(s.shape) != tuple(p.shape) or s.dtype != p.dtype:
        raise ValueError(f"{what} has shape {tuple(s.shape)} and dtype {s.dtype}; p has shape "
                         f"{tuple(p.shape)} and dtype {p.dtype}")
    return s


def check_step_arrays(be: ModuleType, p: Any, g: Any, state: Iterable[Any], where: str,
                      overlap: bool = True):
    """The functional layer's checks for one parameter, its gradient and its state arrays
    on driver ``be``: ``(p, g, state)`` as that driver's arrays, or a clear error.
    ``overlap=False`` leaves out the overlap checks (a list call checks all its arrays'
    overlaps at once)."""
    p = be.check_param(p, f"p{where}")
    g = be.check_grad(g, p, f"g{where}")
    if not overlap:
        return p, g, tuple(_checked_state(be, p, s, f"state array {k}{where}")
                           for k, s in enumerate(state))
    state = tuple(_checked_state(be, p, s, f"state array {k}{where}")
                  for k, s in enumerate(state))
    check_entry_apart(be, p, g, state, where)
    return p, g, state

"""Launching a compiled kernel without numba-cuda's per-argument marshalling.

numba-cuda's ``kernel[grid, block, stream](*args)`` types every argument to pick the
compiled overload, then converts each one to kernel parameters through a chain of
``isinstance`` tests and array wrappers: measured on an H200 (numba-cuda 0.30.4), 67-100
µs per optimizer-step launch, against 16 µs for a kernel with one array argument. An
optimizer step on a small or medium array is that host cost.

:class:`FastLaunch` does the same launch with a cached overload: the arguments' shapes
(dtypes, dimensions, which are None, tuple lengths) form a key; the first launch with a
new key goes through numba-cuda, which compiles if needed, and then the parameters this
module packs are compared with the ones numba-cuda packs for the same arguments
(``_Kernel._prepare_args``). Only where they are identical are later launches with that key
made directly with ``cuda.core.launch``; anything this module cannot pack (a NumPy scalar,
a non-contiguous array, a foreign object), a failed check or an internal numba-cuda API that
has moved takes numba-cuda's own path. ``FASTOPT_CUDA_LAUNCH=numba`` turns the fast path
off.

The key includes the thread's current CUDA context (a compiled kernel is loaded once per
device), so a process that steps arrays on two GPUs launches each device's own kernel.

What is packed, as numba-cuda's data model lays out kernel parameters: an array is
``meminfo, parent, size, itemsize, data, *shape, *strides`` (pointer-sized integers); a
Python float is a double, an int a 64-bit integer, a bool one byte, ``None`` a null pointer
(see ``cuda._NullForNone``), a tuple its items in order.
"""

from __future__ import annotations

import os
import struct
import weakref
from typing import Any

from numba.cuda.cudadrv.devicearray import DeviceNDArray
from numba.cuda.cudadrv.driver import driver as cuda_driver_api

try:  # the names numba-cuda's own launcher uses, so the versions always match
    from numba.cuda.dispatcher import LaunchConfig
    from numba.cuda.dispatcher import launch as core_launch
except ImportError:  # an older or newer numba-cuda: numba-cuda's path only
    LaunchConfig = core_launch = None

#: False turns the fast path off (``FASTOPT_CUDA_LAUNCH=numba``).
ENABLED: bool = os.environ.get("FASTOPT_CUDA_LAUNCH", "fast") != "numba" and core_launch is not None

_FLOAT, _INT, _BOOL = "f", "i", "b"

#: Packed parameters and key per device array, by ``id``: (weak reference, (parameters,
#: key)). The parameters, optimizer state and workspaces are the same objects every step,
#: and packing an array costs about 2 µs of Python; a dead array's entry never matches.
_arrays: dict[int, tuple] = {}


def _pack_array(a: Any) -> tuple | None:
    """``(parameters, key)`` of a device array, or None where it is not exactly
    C-contiguous (numba-cuda would not type it "C")."""
    entry = _arrays.get(id(a))
    if entry is not None and entry[0]() is a:
        return entry[1]
    shape, strides = a.shape, a.strides
    itemsize = a.dtype.itemsize
    expected = itemsize
    for k in range(len(shape) - 1, -1, -1):
        if strides[k] != expected:
            return None
        expected *= shape[k]
    packed = ((0, 0, a.size, itemsize, a.device_ctypes_pointer.value or 0, *shape,
               *strides), (a.dtype, len(shape)))
    if len(_arrays) >= 4096:  # dead entries pile up when new arrays come every step
        _arrays.clear()
    try:
        _arrays[id(a)] = (weakref.ref(a), packed)
    except TypeError:  # an array class without weak references: packed every time
        pass
    return packed


def pack(args: tuple, out: list) -> tuple | None:
    """Append the kernel parameters of ``args`` to ``out``; return their key, or None
    where an argument is not one this module packs."""
    key: list = []
    for a in args:
        t = type(a)
        if t is DeviceNDArray:
            packed = _pack_array(a)
            if packed is None:
                return None
            out += packed[0]
            key.append(packed[1])
        elif t is float:
            out.append(a)
            key.append(_FLOAT)
        elif a is None:
            out.append(0)
            key.append(None)
        elif t is tuple:
            sub = pack(a, out)
            if sub is None:
                return None
            key.append(sub)
        elif t is int and -(1 << 63) <= a < (1 << 63):
            out.append(a)
            key.append(_INT)
        elif t is bool:
            out.append(a)
            key.append(_BOOL)
        else:
            return None
    return tuple(key)


def canonical(params: list) -> list[bytes]:
    """Each kernel parameter as the bytes ``cuda.core`` passes for it."""
    out = []
    for v in params:
        if isinstance(v, bool):
            out.append(struct.pack("<?", v))
        elif isinstance(v, int):
            out.append(struct.pack("<q" if v < (1 << 63) else "<Q", v))
        elif isinstance(v, float):
            out.append(struct.pack("<d", v))
        else:  # a ctypes scalar, as numba-cuda makes for typed scalars
            out.append(bytes(memoryview(v)))
    return out


def checked_kernel(dispatcher: Any, args: tuple, packed: list) -> Any:
    """The ``cuda.core`` kernel of ``dispatcher``'s overload for ``args`` if numba-cuda
    packs ``args`` exactly as :func:`pack` did, else None."""
    try:
        argtypes = tuple(dispatcher.typeof_pyval(a) for a in args)
        compiled = dispatcher.overloads[argtypes]
        if compiled.cooperative or compiled.debug:
            return None
        reference: list = []
        for ty, val in zip(compiled.argument_types, args, strict=True):
            compiled._prepare_args(ty, val, 0, [], reference)
        if canonical(reference) != canonical(packed):
            return None
        return compiled._codelibrary.get_cufunc().kernel
    except Exception:  # noqa: BLE001 - numba-cuda's internals moved: its own path then
        return None


_UNSET = object()


class FastLaunch:
    """``kern[grid, block, stream](*args)``, with later launches of the same argument
    key made directly (see the module docstring)."""

    __slots__ = ("configured", "dispatcher", "stream", "config", "kernels")

    def __init__(self, configured: Any, dispatcher: Any) -> None:
        self.configured = configured  # numba-cuda's launch configuration
        self.dispatcher = dispatcher
        self.kernels: dict[tuple, Any] = {}
        self.config = self.stream = None
        if ENABLED:
            try:
                self.config = LaunchConfig(grid=configured.griddim, block=configured.blockdim,
                                           shmem_size=configured.sharedmem)
                self.stream = configured.stream
            except Exception:  # noqa: BLE001 - another cuda.core: numba-cuda's path
                self.config = None

    def __call__(self, *args: Any) -> None:
        if self.config is None:
            self.configured(*args)
            return
        packed: list = []
        key = pack(args, packed)
        # A compiled kernel is loaded per device (CUDA context): the current one is part
        # of the key, as numba-cuda looks its kernel up per device on every launch.
        context = current_context() if key is not None else 0
        kernel = self.kernels.get((context, key), _UNSET) if context else None
        if kernel is _UNSET:  # first launch with this key: numba-cuda's path, then check
            self.configured(*args)
            self.kernels[(context, key)] = checked_kernel(self.dispatcher, args, packed)
        elif kernel is None:
            self.configured(*args)
        else:
            core_launch(self.stream, self.config, kernel, *packed)


def current_context() -> int:
    """The calling thread's current CUDA context handle (0: none, or the query failed),
    read as numba-cuda reads it before each of its launches."""
    try:
        return int(cuda_driver_api.cuCtxGetCurrent())
    except Exception:  # noqa: BLE001 - numba-cuda's own path then
        return 0

"""FlatParams: many named arrays in one contiguous, 64-byte-aligned buffer.

An optimizer over a FlatParams steps every array in one fused pass over ``data`` and
``grad``, however many arrays it holds: no per-array launch, no per-array Python.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from ._checks import FLOAT_DTYPES
from ._memory import ALIGNMENT, aligned_empty, aligned_zeros  # noqa: F401
from .drivers import cpu, cuda_driver


class _Views(Mapping):
    """A read-only mapping ``name -> writable view`` into one of the buffers."""

    def __init__(self, flat: FlatParams, buffer: np.ndarray) -> None:
        self._flat = flat
        self._buffer = buffer

    def __getitem__(self, name: str) -> np.ndarray:
        lo, shape = self._flat._slot(name)
        return self._buffer[lo : lo + int(np.prod(shape, dtype=np.int64))].reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat.names)

    def __len__(self) -> int:
        return len(self._flat.names)

    def __repr__(self) -> str:
        return f"<views of {list(self._flat.names)}>"


@dataclass(frozen=True)
class FlatSubset:
    """Some of a FlatParams' arrays, by name: the ``"params"`` of an optimizer group."""

    flat: FlatParams
    names: tuple[str, ...]


class FlatParams:
    """Named parameter arrays packed into one aligned buffer, with a twin gradient buffer.

    >>> flat = FlatParams({"w1": (784, 256), "b1": (256,)}, dtype=np.float32)
    >>> flat["w1"].shape, flat.grads["b1"].shape
    ((784, 256), (256,))

    ``flat["w1"]`` (also ``flat.params["w1"]``) and ``flat.grads["w1"]`` are writable views;
    ``flat.data`` and ``flat.grad`` are the 1-D buffers behind them. Each array starts on a
    64-byte boundary; the few padding elements between arrays stay zero in both buffers.
    An optimizer steps neighbouring arrays of a group as one stretch, padding included,
    so gradient noise may move padding parameters, and ``eps=0`` makes them NaN (0/0, as
    for any parameter whose gradients are all zero); nothing reads them.

    ``device="cuda"`` keeps both buffers on the GPU (Numba device arrays; the views are
    device arrays too, and ``flat["w1"] = host_array`` copies to the device).
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...] | int], dtype=np.float32,
                 device: str = "cpu") -> None:
        if device not in ("cpu", "cuda"):
            raise ValueError(f"FlatParams device must be 'cpu' or 'cuda', got {device!r}")
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"FlatParams dtype must be float32 or float64, got {dtype}")
        if not isinstance(shapes, Mapping):
            raise TypeError(f"FlatParams takes a mapping of names to shapes (e.g. "
                            f"{{'w1': (784, 256)}}), got {type(shapes).__name__}")
        if not shapes:
            raise ValueError("FlatParams needs at least one named array")
        step = ALIGNMENT // dtype.itemsize
        slots: dict[str, tuple[int, tuple[int, ...]]] = {}
        offset = 0
        for name, shape in shapes.items():
            if not isinstance(name, str):
                raise TypeError(f"FlatParams names must be strings, got {name!r}")
            if isinstance(shape, (int, np.integer)):
                shape = (shape,)
            elif isinstance(shape, (tuple, list)):
                shape = tuple(shape)
            else:
                raise ValueError(f"FlatParams[{name!r}] has an invalid shape {shape!r}: give a "
                                 "tuple of ints, or an int")
            if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0
                   for d in shape):
                raise ValueError(f"FlatParams[{name!r}] has an invalid shape {shape}")
            shape = tuple(int(d) for d in shape)
            slots[name] = (offset, shape)
            size = math.prod(shape)  # Python ints: NumPy's int64 product would wrap
            offset += -(-size // step) * step
            if offset * dtype.itemsize > sys.maxsize:
                raise ValueError(
                    f"FlatParams[{name!r}] of shape {shape} takes the buffer to {offset} values "
                    f"of {dtype.itemsize} bytes, more than a process can address"
                )
        self._slots = slots
        self.dtype = dtype
        #: The 1-D parameter buffer (all arrays, with alignment padding).
        self.device = device
        self._be = cuda_driver() if device == "cuda" else cpu
        self.data = self._be.zeros(offset, dtype)
        #: The 1-D gradient buffer, laid out as ``data``.
        self.grad = self._be.zeros(offset, dtype)
        self.params = _Views(self, self.data)
        self.grads = _Views(self, self.grad)

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], dtype=None, device: str = "cpu"
                    ) -> FlatParams:
        """Pack copies of the host ``arrays`` on ``device``; dtype: the widest of their
        float32/float64 dtypes (so no float64 array is rounded), or float32 when none is."""
        if not isinstance(arrays, Mapping):
            raise TypeError(f"FlatParams.from_arrays takes a mapping of names to arrays, got "
                            f"{type(arrays).__name__}")
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        for k, a in arrays.items():
            if a.dtype.kind not in "fiub":
                raise TypeError(f"FlatParams.from_arrays: {k!r} has dtype {a.dtype}; "
                                "parameters are real numbers")
        if dtype is None:  # the widest of their float dtypes, float32 when none is float
            floats = [a.dtype for a in arrays.values() if a.dtype in FLOAT_DTYPES]
            dtype = np.result_type(*floats) if floats else np.float32
        flat = cls({k: a.shape for k, a in arrays.items()}, dtype=dtype, device=device)
        for k, a in arrays.items():
            flat[k] = a  # a device view takes no [...] assignment on a GPU: __setitem__
        return flat

    def _slot(self, name: str) -> tuple[int, tuple[int, ...]]:
        try:
            return self._slots[name]
        except KeyError:
            raise KeyError(
                f"FlatParams has no array {name!r}; it has {list(self._slots)}"
            ) from None

    def __getitem__(self, name: str) -> np.ndarray:
        return self.params[name]

    def __setitem__(self, name: str, value) -> None:
        view = self.params[name]
        if self.device == "cpu":
            view[...] = value
        else:
            host = np.empty(view.shape, self.dtype)
            host[...] = value  # NumPy's assignment rules, as on the host
            self._be.copy_from_host(view, host)

    def __contains__(self, name: object) -> bool:
        return name in self._slots

    def __iter__(self) -> Iterator[str]:
        return iter(self._slots)

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._slots)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: shape for k, (_, shape) in self._slots.items()}

    def offset(self, name: str) -> int:
        """Index of ``name``'s first element in ``data``."""
        return self._slot(name)[0]

    def size_of(self, name: str) -> int:
        return int(np.prod(self._slot(name)[1], dtype=np.int64))

    @property
    def size(self) -> int:
        """Number of parameters (without padding)."""
        return sum(self.size_of(k) for k in self._slots)

    def subset(self, *names: str) -> FlatSubset:
        """Some arrays by name, for optimizer groups: ``{"params": flat.subset("b1")}``."""
        for n in names:
            self._slot(n)
        if len(set(names)) != len(names):
            raise ValueError(f"FlatParams.subset got a name twice: {names}")
        return FlatSubset(self, tuple(names))

    def __getstate__(self) -> dict:
        """Pickle and ``copy.deepcopy``: the layout and both buffers (host copies); the
        views are made again on loading (views taken before pickling are not tied to
        the loaded buffers: take them again)."""
        return {"slots": self._slots, "dtype": self.dtype, "device": self.device,
                "data": self._be.to_host(self.data), "grad": self._be.to_host(self.grad)}

    def __setstate__(self, state: dict) -> None:
        self._slots, self.dtype, self.device = state["slots"], state["dtype"], state["device"]
        self._be = cuda_driver() if self.device == "cuda" else cpu
        self.data = self._be.zeros(state["data"].size, self.dtype)
        self.grad = self._be.zeros(state["grad"].size, self.dtype)
        self._be.copy_from_host(self.data, state["data"])
        self._be.copy_from_host(self.grad, state["grad"])
        self.params = _Views(self, self.data)
        self.grads = _Views(self, self.grad)

    def zero_grad(self) -> None:
        self._be.fill(self.grad, 0.0)

    def __repr__(self) -> str:
        device = "" if self.device == "cpu" else f", device={self.device!r}"
        return f"FlatParams({self.shapes}, dtype={self.dtype.name}{device})"

"""What the layers above ask of a driver: the contract ``drivers.cpu`` and ``drivers.cuda``
keep, written down.

A driver is a module. :class:`Driver` is what every driver provides; :class:`HostDriver`
and :class:`DeviceDriver` add how each launches a step. Which one a module is, is its
``ON_DEVICE`` flag, never a guess from which names it happens to have: a device driver's
launches go to a stream, may read the clip factor from device memory (``dscale``) and can
step many arrays in one launch through an :attr:`DeviceDriver.ArrayTable`.
``tests/test_drivers.py`` checks each module against these protocols, names and
parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np


class Driver(Protocol):
    """Every driver: its arrays' checks, views, memory and the step's norm workspace."""

    #: True for a driver whose arrays live on a GPU (:class:`DeviceDriver`).
    ON_DEVICE: ClassVar[bool]
    #: The clip/skip reduction's workspace, made once per optimizer:
    #: ``NormWorkspace(sizes, dtype)``.
    NormWorkspace: ClassVar[type]

    def check_param(self, a: Any, what: str, half: bool = False) -> Any:
        """``a`` as this driver's parameter array (float, contiguous, writable) or a clear
        error naming ``what``; ``half``: 16-bit floats too (the precision path)."""

    def check_grad(self, g: Any, p: Any, what: str, dtype: Any = None) -> Any:
        """``g`` as a gradient for ``p`` (same shape, ``dtype`` or else ``p``'s,
        contiguous)."""

    def span(self, a: Any) -> tuple[int, int]:
        """``(first byte address, byte count)`` of a contiguous array."""

    def overlap(self, a: Any, b: Any) -> bool:
        """Whether two arrays may share memory."""

    def flat_view(self, a: Any) -> Any:
        """A 1-D view of a contiguous array."""

    def empty(self, shape: int | tuple[int, ...], dtype: Any) -> Any: ...

    def zeros(self, n: int, dtype: Any, value: float = 0.0) -> Any:
        """``n`` values of ``dtype`` set to ``value`` (the optimizer's state buffers)."""

    def fill(self, a: Any, value: float) -> None: ...

    def to_host(self, a: Any) -> np.ndarray:
        """A host copy (checkpoints)."""

    def copy(self, dst: Any, src: Any) -> None: ...

    def copy_from_host(self, dst: Any, src: np.ndarray) -> None: ...

    def origin(self, a: Any) -> str:
        """Which library made ``a`` ("numpy", "numba", "torch", "cupy", ...)."""

    def current_stream(self, kind: str) -> Any:
        """The current stream of library ``kind`` (None on the host)."""

    def blocks(self, n: int) -> int:
        """Float64 partials the sum-of-squares reduction writes for ``n`` values."""


class HostDriver(Driver, Protocol):
    """A driver over host memory (``drivers.cpu``): launches run to completion."""

    def step(self, rule: Callable, p: Any, g: Any, state: tuple, consts: tuple,
             scale: float | None, wd: float | None, decay: float | None,
             noise: tuple | None) -> None:
        """One fused step of ``rule`` over 1-D arrays, in place."""

    def clip_or_skip(self, grads: Sequence[Any], workspace: Any, clip_norm: float | None,
                     skip_nonfinite: bool) -> tuple[bool, float]:
        """``(skip, clip factor)`` from the gradients' global norm."""

    def trust_sums(self, direction: Callable, p: Any, g: Any, state: tuple, consts: tuple,
                   scale: float | None, wd: float | None, decay: float | None,
                   noise: tuple | None) -> tuple[float, float]:
        """A trust-ratio rule's first pass (``Rule.direction``): the state written,
        ``(Σ w², Σ u²)`` returned, deterministic."""


class DeviceDriver(Driver, Protocol):
    """A driver over GPU memory (``drivers.cuda``): launches go to ``stream``."""

    #: The addresses of many arrays, for one launch over all of them:
    #: ``ArrayTable(ps, sts, offsets)``.
    ArrayTable: ClassVar[type]

    def step(self, rule: Callable, p: Any, g: Any, state: tuple, consts: tuple,
             scale: float | None, wd: float | None, decay: float | None,
             noise: tuple | None, stream: Any = None, dscale: Any = None) -> None:
        """One fused step of ``rule``; ``dscale``: a one-element device array holding the
        clip factor, read by the kernel (no host round trip)."""

    def trust_sums(self, direction: Callable, p: Any, g: Any, state: tuple, consts: tuple,
                   scale: float | None, wd: float | None, decay: float | None,
                   noise: tuple | None, stream: Any = None,
                   dscale: Any = None) -> tuple[float, float]:
        """A trust-ratio rule's first pass; reads the two sums back (synchronises)."""

    def step_table(self, rule: Callable, table: Any, gs: Sequence[Any], consts: tuple,
                   scale: float | None, wd: float | None, decay: float | None,
                   noise: tuple | None, stream: Any = None, dscale: Any = None) -> None:
        """:meth:`step` over every array of ``table``, in one launch."""

    def clip_or_skip(self, grads: Sequence[Any], workspace: Any, clip_norm: float | None,
                     skip_nonfinite: bool, stream: Any,
                     tables: Any = None) -> tuple[bool, float, Any]:
        """``(skip, clip factor, device clip factor or None)``."""

    def as_device_array(self, a: Any, what: str) -> Any:
        """A Numba device array viewing ``a``'s memory (any GPU array)."""

    def all_numba_arrays(self, arrays: Sequence[Any]) -> bool: ...

    def grad_address(self, g: Any, p: Any, what: str) -> int:
        """The device address of a gradient for ``p``, checked."""

    def fixed_addresses(self, arrays: Sequence[Any]) -> bool:
        """Whether these arrays' addresses can never change (Numba device arrays)."""

    def global_sum_of_squares(self, arrays: Sequence[Any], workspace: Any = None,
                              stream: Any = None) -> float: ...

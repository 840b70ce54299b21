"""Early stopping: stop when a validation metric stops improving, keep the best parameters.

The spec lists early stopping as the plain remedy for overfitting: watch a held-out
metric, stop when it has not improved for a while, and go back to the parameters that
scored best.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._checks import check_bool, check_nonneg
from .flat import FlatParams, aligned_empty

__all__ = ["EarlyStopping"]

_MODES = ("min", "max")


def _int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def _metric(value: Any) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"metric must be a real number, got {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        return float(value)
    raise ValueError(f"metric must be a real number (a float, or a 0-d array), got {value!r}")


def _layout(params: Any) -> tuple:
    """What a saved copy must match: kind, then (shape, dtype) of each array."""
    if isinstance(params, FlatParams):
        kind = "flat" if params.device == "cpu" else f"flat on {params.device}"
        return (kind, ((tuple(params.data.shape), params.data.dtype),))
    if isinstance(params, np.ndarray):
        return ("array", ((params.shape, params.dtype),))
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        for i, a in enumerate(params):
            if not isinstance(a, np.ndarray):
                raise TypeError(
                    f"params[{i}] must be a numpy.ndarray, got {type(a).__name__} (GPU "
                    "parameters: keep them in a FlatParams(..., device='cuda'))"
                )
        return ("list", tuple((a.shape, a.dtype) for a in params))
    raise TypeError(
        "params must be a FlatParams, a numpy.ndarray or a list of numpy.ndarrays, "
        f"got {type(params).__name__} (GPU parameters: keep them in a "
        "FlatParams(..., device='cuda'))"
    )


def _arrays(params: Any) -> list[np.ndarray]:
    """The arrays to copy from / restore into, in layout order."""
    if isinstance(params, FlatParams):
        return [params.data]
    if isinstance(params, np.ndarray):
        return [params]
    return list(params)


def _check_writable(params: Any) -> None:
    """Every host array :meth:`EarlyStopping.restore` would write is writable, or a clear
    error (checked before anything is written)."""
    if isinstance(params, FlatParams):
        return  # its buffers are the package's own, always writable
    for i, a in enumerate(_arrays(params)):
        if not a.flags.writeable:
            where = "params" if isinstance(params, np.ndarray) else f"params[{i}]"
            raise ValueError(f"{where} is read-only; restoring the best parameters writes "
                             "into it (or use restore_best=False)")


def _describe(layout: tuple) -> str:
    kind, arrays = layout
    shapes = ", ".join(f"{shape} {dtype}" for shape, dtype in arrays)
    return f"{kind} of [{shapes}]"


class EarlyStopping:
    """Stop training when a monitored metric has stopped improving.

    Typical use, once per epoch on a validation metric::

        stopper = fastopt.EarlyStopping(patience=5)
        for epoch in range(max_epochs):
            train_one_epoch(flat)
            if stopper.update(validation_loss(flat), flat):
                break        # flat already holds the best parameters again (restore_best)

    Everything the metric depends on must be in what is kept: with BatchNorm layers, pass
    their running statistics too (``[flat.data, bn.running_mean, bn.running_var]``), or
    the restored model pairs the best parameters with the latest statistics.

    Semantics
    ---------
    *Steps.* Every call of :meth:`update` is one step, numbered from 0: the first call is
    step 0, the k-th call step k-1. ``best_step`` is the number of the call that set
    ``best``; ``num_updates`` counts the calls so far.

    *Improvement.* With ``mode="min"`` a metric improves on the best if
    ``metric < best - min_delta``; with ``mode="max"`` if ``metric > best + min_delta``.
    The improvement must be strictly *more* than ``min_delta``: beating the best by exactly
    ``min_delta`` is not an improvement. The first finite metric is always an improvement
    (there is no best yet). An improvement sets ``best = metric``, ``best_step`` to this
    step, and ``num_bad_steps`` (alias ``wait``) back to 0.

    *Stopping.* A step that does not improve is a bad step: ``num_bad_steps`` goes up by
    one, and ``update`` returns ``True`` once ``num_bad_steps >= patience``, i.e. on the
    ``patience``-th consecutive bad step. ``patience=0`` stops at the first bad step, the
    same as ``patience=1`` (as in Keras and PyTorch Lightning).

    *Warm-up.* Steps numbered below ``start_from`` are never bad steps and never stop
    training (they return ``False`` and leave ``num_bad_steps`` unchanged), but they do
    record the best metric and, when ``params`` is given, the best parameters: a good value
    seen during warm-up is still the value later steps must beat, and still what
    :meth:`restore` goes back to. A non-finite metric is the one exception, below.

    *Non-finite metrics.* With ``check_finite=True`` (the default), a NaN or ±Inf metric
    makes ``update`` return ``True`` at once, whatever the patience, and even during
    warm-up (training that produced a NaN does not recover); the metric never becomes the
    best and the step does not count as a bad step. With ``check_finite=False`` it is
    compared like any other value: NaN never improves (every comparison with NaN is
    false), so it is a bad step.

    *Best parameters.* When ``params`` is given to an improving ``update``, a copy of its
    values is kept: for a :class:`~fastopt.FlatParams`, one copy of its whole ``data``
    buffer; for an ndarray or a list of ndarrays, one copy per array. The buffers are
    allocated at the first improvement and reused (overwritten in place) on every later
    one, so an improvement allocates nothing. Later calls must pass parameters of the same
    layout (kind, shapes, dtypes), or ``ValueError``. An improvement reached *without*
    ``params`` leaves the kept copy stale (it is not the best any more): :meth:`restore`
    then refuses rather than writing back values that are not the best.

    *Restoring.* :meth:`restore(params) <restore>` writes the kept values back into
    ``params`` in place, bit for bit. With ``restore_best=True`` (the default), an
    ``update`` that returns ``True`` does this itself when it was given ``params`` and a
    best copy exists (if there is none, e.g. the very first metric was NaN, ``params`` is
    left as it is).

    Calling ``update`` after it returned ``True`` is allowed: the same rules go on
    applying (so it keeps returning ``True`` until the metric improves). ``stopped``
    says whether any call has returned ``True``.

    Arguments (checked at construction, ``ValueError`` naming the argument):
    ``patience`` int >= 0; ``min_delta`` finite and >= 0; ``mode`` ``"min"`` or
    ``"max"``; ``restore_best`` and ``check_finite`` bools; ``start_from`` int >= 0.
    """

    def __init__(
        self,
        patience: int = 10,
        min_delta: float = 0.0,
        mode: str = "min",
        restore_best: bool = True,
        start_from: int = 0,
        check_finite: bool = True,
    ) -> None:
        self.patience = _int("patience", patience)
        self.min_delta = check_nonneg("min_delta", min_delta)
        if not isinstance(mode, str) or mode not in _MODES:
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.mode = mode
        self.restore_best = check_bool("restore_best", restore_best)
        self.start_from = _int("start_from", start_from)
        self.check_finite = check_bool("check_finite", check_finite)

        self._best: float | None = None
        self._best_step: int | None = None
        self._num_bad_steps = 0
        self._num_updates = 0
        self._stopped = False
        # The kept copy of the best parameters: layout, buffers, and whether they are
        # the parameters of the current best (False once an improvement came without).
        self._saved_layout: tuple | None = None
        self._saved: list[np.ndarray] | None = None
        self._saved_valid = False

    # ------------------------------------------------------------------------ state
    @property
    def best(self) -> float | None:
        """The best metric so far (``None`` before the first improvement)."""
        return self._best

    @property
    def best_step(self) -> int | None:
        """The step (0-based number of the ``update`` call) that set ``best``, or ``None``."""
        return self._best_step

    @property
    def num_bad_steps(self) -> int:
        """Consecutive bad steps since the last improvement (warm-up steps not counted)."""
        return self._num_bad_steps

    @property
    def wait(self) -> int:
        """Alias of :attr:`num_bad_steps`."""
        return self._num_bad_steps

    @property
    def num_updates(self) -> int:
        """How many times :meth:`update` has been called (the next call's step number)."""
        return self._num_updates

    @property
    def stopped(self) -> bool:
        """Whether any :meth:`update` has returned ``True``."""
        return self._stopped

    @property
    def best_params(self) -> np.ndarray | list[np.ndarray] | None:
        """The kept copy of the best parameters (``None`` if there is no valid one).

        A FlatParams' copy is one 1-D buffer laid out as its ``data``; an ndarray's is an
        array; a list's is a list of arrays. These are the internal buffers, overwritten
        at each improvement: read them, copy them to keep them.
        """
        if not self._saved_valid or self._saved is None:
            return None
        if self._saved_layout[0] == "list":
            return list(self._saved)
        return self._saved[0]

    # ----------------------------------------------------------------------- update
    def _improves(self, metric: float) -> bool:
        if self._best is None:
            return not math.isnan(metric) and (
                metric < math.inf if self.mode == "min" else metric > -math.inf
            )
        if self.mode == "min":
            return metric < self._best - self.min_delta
        return metric > self._best + self.min_delta

    def update(self, metric: float, params: Any = None) -> bool:
        """Record one value of the metric; ``True`` means stop training.

        ``params`` (a FlatParams, an ndarray or a list of ndarrays), when given, is copied
        if this step improves, and restored in place if this step stops training and
        ``restore_best`` is set. See the class docstring for the exact rules.
        """
        metric = _metric(metric)
        layout = None if params is None else _layout(params)
        if params is not None and self.restore_best:
            _check_writable(params)  # this call may restore into them: before any change
        if layout is not None and self._saved_layout is not None and layout != self._saved_layout:
            raise ValueError(
                f"params is a {_describe(layout)}, but the best parameters kept so far are "
                f"a {_describe(self._saved_layout)}; pass the same parameters every time"
            )
        step = self._num_updates
        self._num_updates += 1

        if self.check_finite and not math.isfinite(metric):
            return self._stop(params)
        if self._improves(metric):
            self._best = metric
            self._best_step = step
            self._num_bad_steps = 0
            self._save(params, layout)
            return False
        if step < self.start_from:
            return False
        self._num_bad_steps += 1
        if self._num_bad_steps >= self.patience:
            return self._stop(params)
        return False

    def _stop(self, params: Any) -> bool:
        self._stopped = True
        if self.restore_best and params is not None and self._saved_valid:
            self.restore(params)
        return True

    def _save(self, params: Any, layout: tuple | None) -> None:
        if params is None:
            self._saved_valid = False
            return
        sources = _arrays(params)
        if isinstance(params, FlatParams) and params.device != "cpu":
            be = params._be  # the best copy stays on the GPU: device-to-device copies
            if self._saved is None:
                self._saved_layout = layout
                self._saved = [be.zeros(a.size, a.dtype) for a in sources]
            for buf, a in zip(self._saved, sources, strict=True):
                be.copy(buf, a)
            self._saved_valid = True
            return
        if self._saved is None:
            self._saved_layout = layout
            self._saved = [
                aligned_empty(a.size, a.dtype).reshape(a.shape) if a.flags.c_contiguous
                else np.empty_like(a)
                for a in sources
            ]
        for buf, a in zip(self._saved, sources, strict=True):
            np.copyto(buf, a, casting="no")
        self._saved_valid = True

    # ---------------------------------------------------------------------- restore
    def restore(self, params: Any) -> None:
        """Write the kept best parameters back into ``params``, in place and bit for bit.

        ``ValueError`` if no best parameters were kept (``update`` never got ``params`` on
        an improvement, or the latest improvement came without them), or if ``params``
        does not have the kept layout (kind, shapes, dtypes).
        """
        layout = _layout(params)
        if self._saved is None or not self._saved_valid:
            why = (
                "no update() was given params on an improvement"
                if self._saved is None
                else f"the best step ({self._best_step}) was given no params, so the copy "
                "kept earlier is not the best"
            )
            raise ValueError(f"no best parameters to restore: {why}")
        if layout != self._saved_layout:
            raise ValueError(
                f"cannot restore into a {_describe(layout)}: the best parameters kept are "
                f"a {_describe(self._saved_layout)}"
            )
        _check_writable(params)
        for dst, buf in zip(_arrays(params), self._saved, strict=True):
            if isinstance(params, FlatParams) and params.device != "cpu":
                params._be.copy(dst, buf)
            else:
                np.copyto(dst, buf, casting="no")

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, "
            f"mode={self.mode!r}, best={self._best}, best_step={self._best_step}, "
            f"num_bad_steps={self._num_bad_steps}, stopped={self._stopped})"
        )

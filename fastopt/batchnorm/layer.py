"""The BatchNorm layer: parameters, running statistics, train/eval, calibration, checkpoints.

A thin stateful wrapper around :func:`fastopt.batchnorm.forward` and
:func:`fastopt.batchnorm.backward` (the equations are in their docstrings and in
``docs/equations.md``, section BatchNorm).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from .._checks import FLOAT_DTYPES, check_nonneg
from .._progress import progress
from ..drivers import cpu, cuda_driver, is_device_array
from ..flat import FlatParams
from . import EPS, _check_momentum, backward, batch_stats, forward

#: ``calibrate`` shows a progress bar (on stderr) for sized iterables at least this long.
PROGRESS_FROM = 20


class BatchNorm:
    """Batch normalisation over channel axis ``axis`` with learned α (gamma) and β (beta).

    ``y = α (x − μ)/√(σ² + ε) + β`` per channel: in training mode with the batch's mean and
    biased variance (and the running statistics updated, torch's convention), in eval mode
    with the running statistics (spec, ``docs/equations.md``; Ioffe & Szegedy 2015)::

        bn = fastopt.BatchNorm(64)     # x: (N, 64), (N, 64, H, W); axis=-1: (N, H, W, 64)
        y = bn.forward(x)              # training mode by default
        dx = bn.backward(dy)           # fills bn.grad_gamma, bn.grad_beta
        bn.eval(); y = bn.forward(x_test)

    Args:
        num_features: C, the number of channels.
        eps: ε (the spec's 1e-6; torch's BatchNorm uses 1e-5).
        momentum: weight of the new batch in the running statistics (0.1), or None for the
            exact cumulative average (the k-th training batch weighs 1/k), as torch.
        affine: learn α and β (else α = 1, β = 0 and backward fills no parameter gradient).
        axis: 1 for ``(N, C, ...)``, -1 for channels-last ``(N, ..., C)``.
        dtype: float32 or float64 for α, β and the running statistics; inputs must have it.
            Default: float32, or the FlatParams' dtype when ``params`` is given.
        device: "cpu" (NumPy arrays) or "cuda" (GPU arrays: α, β, their gradients and the
            running statistics live on the device, and :meth:`forward` takes GPU arrays).
            Default: the FlatParams' device when ``params`` is given, else "cpu".
        params: ``(flat, prefix)`` to keep α and β in a :class:`fastopt.FlatParams`:
            α is ``flat.params[prefix + ".weight"]``, β is ``flat.params[prefix + ".bias"]``
            and their gradients are the matching ``flat.grads[...]`` views, so an optimizer
            over ``flat`` steps them. Both arrays must exist with shape ``(C,)``
            (:meth:`flat_shapes` gives the entries to add); the constructor writes α = 1 and
            β = 0 into them (as torch's ``reset_parameters``); load values afterwards.

    Gradients are written, not accumulated: each :meth:`backward` overwrites
    ``grad_gamma`` and ``grad_beta`` (in a FlatParams: their slots of ``flat.grad``).
    """

    def __init__(
        self,
        num_features: int,
        eps: float = EPS,
        momentum: float | None = 0.1,
        affine: bool = True,
        axis: int = 1,
        dtype: DTypeLike | None = None,
        params: tuple[FlatParams, str] | None = None,
        device: str | None = None,
    ) -> None:
        if (isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer))
                or num_features < 1):
            raise ValueError(f"num_features must be an int >= 1, got {num_features!r}")
        c = int(num_features)
        self.num_features = c
        self.eps = check_nonneg("eps", eps)
        self.momentum = _check_momentum(momentum)
        if not isinstance(affine, (bool, np.bool_)):
            raise ValueError(f"affine must be True or False, got {affine!r}")
        self.affine = bool(affine)
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or axis not in (1, -1):
            raise ValueError(f"axis must be 1 (channels first) or -1 (channels last), got {axis!r}")
        self.axis = int(axis)
        flat, prefix = self._check_params(params, c, dtype)
        if dtype is None:
            dtype = np.float32 if flat is None else flat.dtype
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.dtype = dtype
        if device is None:
            device = "cpu" if flat is None else flat.device
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if flat is not None and flat.device != device:
            raise ValueError(f"device {device!r} differs from the FlatParams' {flat.device!r}")
        self.device = device
        self._be = be = cpu if device == "cpu" else cuda_driver()
        self.training = True
        self.running_mean = be.zeros(c, dtype)
        self.running_var = be.zeros(c, dtype, 1.0)
        self._batches = np.zeros((), np.int64)  # num_batches_tracked, updated in place
        # The training statistics of the last forward, kept for its backward; reused by
        # the next forward (only the last forward's cache is kept): no allocation per step.
        self._stats = be.empty((3, c), np.float64)
        self._cache = None
        self.gamma: np.ndarray | None
        self.beta: np.ndarray | None
        self.grad_gamma: np.ndarray | None
        self.grad_beta: np.ndarray | None
        if not self.affine:
            self.gamma = self.beta = self.grad_gamma = self.grad_beta = None
        elif flat is None:
            self.gamma, self.beta = be.zeros(c, dtype, 1.0), be.zeros(c, dtype)
            self.grad_gamma, self.grad_beta = be.zeros(c, dtype), be.zeros(c, dtype)
        else:
            w, b = prefix + ".weight", prefix + ".bias"
            self.gamma, self.beta = flat.params[w], flat.params[b]
            self.grad_gamma, self.grad_beta = flat.grads[w], flat.grads[b]
            flat[w] = 1.0
            flat[b] = 0.0

    # ------------------------------------------------------------------ construction

    @staticmethod
    def flat_shapes(num_features: int, prefix: str) -> dict[str, tuple[int]]:
        """The FlatParams entries a ``BatchNorm(num_features, params=(flat, prefix))`` uses.

        For example::

            flat = FlatParams({"w1": (784, 256), **BatchNorm.flat_shapes(256, "bn1")})
            bn1 = BatchNorm(256, params=(flat, "bn1"))
        """
        return {f"{prefix}.weight": (int(num_features),), f"{prefix}.bias": (int(num_features),)}

    def _check_params(self, params: Any, c: int,
                      dtype: DTypeLike | None) -> tuple[FlatParams | None, str]:
        if params is None:
            return None, ""
        try:
            flat, prefix = params
        except (TypeError, ValueError):
            raise ValueError(
                f"params must be a pair (FlatParams, prefix), got {params!r}"
            ) from None
        if not isinstance(flat, FlatParams) or not isinstance(prefix, str):
            raise ValueError(
                f"params must be a pair (FlatParams, prefix str), got "
                f"({type(flat).__name__}, {type(prefix).__name__})"
            )
        if not self.affine:
            raise ValueError("params given with affine=False: there are no α and β to hold")
        for name in (prefix + ".weight", prefix + ".bias"):
            if name not in flat:
                raise ValueError(
                    f"FlatParams has no array {name!r}; add BatchNorm.flat_shapes({c}, "
                    f"{prefix!r}) to its shapes"
                )
            if flat.shapes[name] != (c,):
                raise ValueError(f"FlatParams[{name!r}] has shape {flat.shapes[name]}, not ({c},)")
        if dtype is not None and np.dtype(dtype) != flat.dtype:
            raise TypeError(f"dtype {np.dtype(dtype)} differs from the FlatParams' {flat.dtype}")
        return flat, prefix

    # ------------------------------------------------------------------------- modes

    def train(self, mode: bool = True) -> BatchNorm:
        """Training mode (batch statistics, running statistics updated); returns self."""
        if not isinstance(mode, (bool, np.bool_)):
            raise ValueError(f"mode must be True or False, got {mode!r}")
        self.training = bool(mode)
        return self

    def eval(self) -> BatchNorm:
        """Inference mode (running statistics, nothing updated); returns self."""
        return self.train(False)

    @property
    def num_batches_tracked(self) -> int:
        """Training batches seen by :meth:`forward` (counts k for ``momentum=None``)."""
        return int(self._batches)

    # ---------------------------------------------------------------- forward/backward

    def _check_x(self, x: Any, what: str) -> None:
        on_device = is_device_array(x)
        if on_device != (self.device == "cuda"):
            raise ValueError(
                f"{what} is {'a GPU' if on_device else 'a host'} array; this BatchNorm is on "
                f"{self.device!r}"
            )
        if not (isinstance(x, np.ndarray) or on_device):
            return  # forward's own checks say what is wrong
        dt, shape = np.dtype(x.dtype), tuple(x.shape)
        if dt in FLOAT_DTYPES and dt != self.dtype:
            raise TypeError(f"{what} has dtype {dt}; this BatchNorm is {self.dtype}")
        if len(shape) >= 2:
            c = shape[1] if self.axis == 1 else shape[-1]
            if c != self.num_features:
                raise ValueError(
                    f"{what} has shape {shape}: {c} channels on axis {self.axis}, this "
                    f"BatchNorm has {self.num_features}"
                )

    def forward(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``y`` for ``x`` (see :func:`fastopt.batchnorm.forward`); ``out`` receives y."""
        self._check_x(x, "x")
        y, self._cache = forward(
            x, self.gamma, self.beta, eps=self.eps, training=self.training,
            running_mean=self.running_mean, running_var=self.running_var,
            momentum=self.momentum, axis=self.axis, out=out,
            num_batches_tracked=self._batches, stats_out=self._stats,
        )
        return y

    __call__ = forward

    def backward(self, dy: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``dx`` for the last :meth:`forward`; writes ``grad_gamma`` and ``grad_beta``."""
        if self._cache is None:
            raise RuntimeError("backward needs a forward first")
        self._check_x(dy, "dy")
        dx, _, _ = backward(dy, self._cache, out=(out, self.grad_gamma, self.grad_beta))
        return dx

    # ------------------------------------------------------------------- calibration

    def calibrate(self, batches: Iterable[np.ndarray],
                  show_progress: bool | None = None) -> BatchNorm:
        """Set the running statistics to the exact pooled statistics of all ``batches``.

        The spec's "estimate from the whole training set" (Ioffe & Szegedy 2015, Alg. 2
        uses the unbiased variance): with ``n = Σ n_b`` values per channel,
        ``r_μ = (1/n) Σ x`` and ``r_σ² = 1/(n − 1) Σ (x − r_μ)²`` over the concatenation of
        the batches, not an exponential average. Each batch's mean and centred sum of
        squares come from the blocked float64 kernel; batches are merged exactly with
        Chan, Golub & LeVeque's pairwise formula
        ``M2 = M2_a + M2_b + δ² n_a n_b / n`` (δ = μ_b − μ_a). Memory: one batch at a time.

        Nothing is written until every batch has been read and checked. α, β and
        ``num_batches_tracked`` are not changed. On a GPU each batch is read back to the
        host for this (calibration is a one-off pass). A progress bar (stderr) is shown when
        ``show_progress`` is True, or by default for sized iterables of at least
        :data:`PROGRESS_FROM` batches. Returns self.
        """
        total = len(batches) if hasattr(batches, "__len__") else None
        if show_progress is None:
            show_progress = total is not None and total >= PROGRESS_FROM
        items: Iterable[np.ndarray] = batches
        if show_progress and total is not None:
            items = (b for _, b in zip(progress(range(total), "calibrate", total=total),
                                       batches, strict=False))
        n_tot = 0
        mean = m2 = None
        for k, xb in enumerate(items):
            self._check_x(xb, f"batch {k}")
            if self.device == "cuda":
                xb = self._be.to_host(self._be.as_device_array(xb, f"batch {k}"))
            mb, vb = batch_stats(xb, self.axis)
            nb = xb.size // self.num_features
            if mean is None:
                n_tot, mean, m2 = nb, mb, vb * nb
                continue
            n_new = n_tot + nb
            delta = mb - mean
            mean = mean + delta * (nb / n_new)
            m2 = m2 + vb * nb + delta * delta * (n_tot * nb / n_new)
            n_tot = n_new
        if mean is None:
            raise ValueError("calibrate got no batches")
        if n_tot < 2:
            raise ValueError("calibrate needs at least two values per channel in all")
        self._detach_cache()
        self._be.copy_from_host(self.running_mean, mean.astype(self.dtype))
        self._be.copy_from_host(self.running_var, (m2 / (n_tot - 1)).astype(self.dtype))
        return self

    # ------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Host copies of the running statistics, ``num_batches_tracked`` and (affine) α, β.

        Keys as torch's BatchNorm: ``running_mean``, ``running_var``,
        ``num_batches_tracked``, ``weight`` (α), ``bias`` (β).
        """
        sd: dict[str, Any] = {
            "running_mean": self._be.to_host(self.running_mean),
            "running_var": self._be.to_host(self.running_var),
            "num_batches_tracked": np.int64(self._batches),
        }
        if self.affine:
            sd["weight"] = self._be.to_host(self.gamma)
            sd["bias"] = self._be.to_host(self.beta)
        return sd

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load :meth:`state_dict` output; everything is checked before anything is written."""
        if not isinstance(state, Mapping):
            raise ValueError(f"state must be a mapping, got {type(state).__name__}")
        keys = {"running_mean", "running_var", "num_batches_tracked"}
        if self.affine:
            keys |= {"weight", "bias"}
        if set(state) != keys:
            missing, extra = sorted(keys - set(state)), sorted(set(state) - keys)
            raise ValueError(f"state keys differ: missing {missing}, unexpected {extra}")
        arrays = {}
        for k in sorted(keys - {"num_batches_tracked"}):
            a = np.asarray(state[k])
            if a.dtype.kind not in "fiu" or a.shape != (self.num_features,):
                raise ValueError(
                    f"state[{k!r}] must be a real array of shape ({self.num_features},), got "
                    f"{a.dtype} {a.shape}"
                )
            with np.errstate(over="ignore"):  # too big for this layer's dtype: inf, refused
                a = a.astype(self.dtype)
            if not np.all(np.isfinite(a)):
                raise ValueError(f"state[{k!r}] has NaN or Inf values (as {self.dtype.name})")
            arrays[k] = a
        if np.any(arrays["running_var"] < 0):
            raise ValueError("state['running_var'] has negative values")
        nbt = np.asarray(state["num_batches_tracked"])
        count = int(nbt.reshape(-1)[0]) if nbt.size == 1 and nbt.dtype.kind in "iu" else -1
        if not 0 <= count <= np.iinfo(self._batches.dtype).max:
            raise ValueError(
                f"state['num_batches_tracked'] must be an int from 0 to 2**63 - 1, got "
                f"{state['num_batches_tracked']!r}"
            )
        targets = {"running_mean": self.running_mean, "running_var": self.running_var}
        if self.affine:
            targets.update(weight=self.gamma, bias=self.beta)
        self._detach_cache()
        for k, buf in targets.items():
            self._be.copy_from_host(buf, arrays[k])
        self._batches[...] = count

    def _detach_cache(self) -> None:
        """Before the layer changes its running statistics or α in place: the last
        forward's cache keeps copies of those it refers to, so a backward after that
        still computes the forward's gradient."""
        cache = self._cache
        if cache is None:
            return

        def own(a: Any) -> Any:
            if a is None:
                return None
            b = self._be.empty(a.shape, a.dtype)
            self._be.copy(b, a)
            return b

        self._cache = cache._replace(gamma=own(cache.gamma),
                                     running_mean=own(cache.running_mean),
                                     running_var=own(cache.running_var))

    def __repr__(self) -> str:
        return (f"BatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, axis={self.axis}, dtype={self.dtype.name}, "
                f"device={self.device!r}, training={self.training})")

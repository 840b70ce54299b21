"""Argument checks shared by the functional layer and the optimizer classes.

Every check runs before anything is written, and every message names the argument and
says what would be accepted.
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def half_dtypes() -> tuple[np.dtype, ...]:
    """The 16-bit float dtypes an optimizer stores parameters and gradients in: NumPy's
    float16, and ``ml_dtypes.bfloat16`` where ml_dtypes is installed (``fastopt[bf16]``)."""
    out = [np.dtype(np.float16)]
    ml = sys.modules.get("ml_dtypes")
    if ml is None:
        try:
            import ml_dtypes as ml
        except ImportError:
            ml = None
    if ml is not None:
        out.append(np.dtype(ml.bfloat16))
    return tuple(out)


def dtype_name(dtype: Any) -> str:
    """``"float32"``, ``"float64"``, ``"float16"`` or ``"bfloat16"`` (else the dtype's name)."""
    return np.dtype(dtype).name


def plain_ndarray(a: np.ndarray, what: str) -> np.ndarray:
    """``a`` as a plain ndarray: itself, or for a subclass (``np.memmap``, ``np.matrix``,
    ...) a view of the same memory as a base-class array (so a step writes the subclass's
    memory, e.g. the memory-mapped file, and its 1-D view is really 1-D). A
    ``numpy.ma.MaskedArray`` is refused: fastopt would step its masked values too."""
    if type(a) is np.ndarray:
        return a
    ma = sys.modules.get("numpy.ma")  # not imported: a cannot be a MaskedArray
    if ma is not None and isinstance(a, ma.MaskedArray):
        raise TypeError(f"{what} is a numpy.ma.MaskedArray, whose mask fastopt would ignore "
                        "(it steps every value); pass np.ma.getdata(...) to step them all")
    return a.view(np.ndarray)


def check_param_array(a: Any, what: str, *, writable: bool = True,
                      half: bool = False) -> np.ndarray:
    """A float32/float64 (and with ``half``, float16/bfloat16), C-contiguous (and writable)
    ndarray, or a clear error; a subclass as its plain view (:func:`plain_ndarray`)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{what} must be a numpy.ndarray, got {type(a).__name__}")
    a = plain_ndarray(a, what)
    if a.dtype not in FLOAT_DTYPES and not (half and a.dtype in half_dtypes()):
        if a.dtype.name in ("float16", "bfloat16"):
            hint = (" here; the optimizer classes take 16-bit parameters (fastopt.Adam(p, "
                    "...)), the functional layer float32 and float64"
                    if not half else "")
            raise TypeError(f"{what} has dtype {a.dtype}, which fastopt does not take{hint}")
        raise TypeError(f"{what} has dtype {a.dtype}; fastopt needs float32 or float64"
                        + (", float16 or bfloat16" if half else ""))
    if not a.flags.c_contiguous:
        raise ValueError(
            f"{what} is not C-contiguous; pass np.ascontiguousarray(...) and keep that array"
        )
    if writable and not a.flags.writeable:
        raise ValueError(f"{what} is read-only; fastopt updates it in place")
    return a


def check_grad_array(g: Any, p: np.ndarray, what: str, dtype: Any = None) -> np.ndarray:
    """A gradient matching its parameter in shape and dtype (or ``dtype``, where the
    optimizer was told its gradients come in another), C-contiguous; a subclass as its
    plain view (:func:`plain_ndarray`)."""
    if not isinstance(g, np.ndarray):
        raise ValueError(f"{what} must be a numpy.ndarray, got {type(g).__name__}")
    g = plain_ndarray(g, what)
    if g.shape != p.shape:
        raise ValueError(f"{what} has shape {g.shape}, its parameter has shape {p.shape}")
    want = p.dtype if dtype is None else np.dtype(dtype)
    if g.dtype != want:
        if dtype is None or want == p.dtype:
            raise ValueError(f"{what} has dtype {g.dtype}, its parameter has dtype {p.dtype}"
                             + ("; to step with 16-bit gradients, build the optimizer with "
                                f"grad_dtype='{g.dtype.name}'"
                                if g.dtype.name in ("float16", "bfloat16") else ""))
        raise ValueError(f"{what} has dtype {g.dtype}; this optimizer was built with "
                         f"grad_dtype='{want.name}'")
    if not g.flags.c_contiguous:
        raise ValueError(f"{what} is not C-contiguous; pass np.ascontiguousarray(...)")
    return g


def _as_float(name: str, value: Any) -> float:
    """``value`` as a Python float. A NumPy float narrower than float64 is taken as the
    decimal it prints as (``np.float32(0.99)`` is 0.99, not 0.9900000095367432): a
    float32 hyperparameter then gives float64 parameters the constants its writer meant."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    if isinstance(value, np.floating) and value.dtype.itemsize < 8:
        return float(str(value))
    return float(value)


def _real(name: str, x: Any) -> float:
    x = _as_float(name, x)
    if math.isnan(x):
        raise ValueError(f"{name} must not be NaN")
    return x


def check_finite(name: str, value: Any) -> float:
    """``value`` as a finite float, or ``ValueError`` naming the argument."""
    x = _as_float(name, value)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return x


def check_nonneg(name: str, x: Any) -> float:
    x = _real(name, x)
    if not (0.0 <= x < math.inf):
        raise ValueError(f"{name} must be finite and >= 0, got {x}")
    return x


def check_unit(name: str, x: Any) -> float:
    """A value in [0, 1) (betas, alpha, momentum)."""
    x = _real(name, x)
    if not 0.0 <= x < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {x}")
    return x


def check_lr(lr: Any) -> float | Callable[[int], float]:
    if callable(lr):
        return lr
    return check_nonneg("lr", lr)


def check_betas(betas: Any) -> tuple[float, float]:
    try:
        b1, b2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
    return check_unit("betas[0]", b1), check_unit("betas[1]", b2)


def check_bool(name: str, x: Any) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {x!r}")
    return bool(x)


def check_optional_nonneg(name: str, x: Any) -> float | None:
    return None if x is None else check_nonneg(name, x)


#: The largest step number: the kernels take it as an int64.
MAX_STEP = 2**63 - 1


def check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"step must be an int >= 1 (1 on the first step), got {step!r}")
    if step > MAX_STEP:
        raise ValueError(f"step must be below 2**63 (the kernels count in int64), got {step!r}")
    return int(step)


def check_mu_product(value: Any) -> float:
    """Nadam's running product of its momentum coefficients μ_t, each in [0, 1): in [0, 1]
    (it underflows to 0.0 after some hundred steps when β₁ is small, and is 0 from the
    first step when β₁ = 0)."""
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
            or not 0.0 <= value <= 1.0):
        raise ValueError(
            f"mu_product is a product of momentum coefficients: it must be in [0, 1] (1.0 "
            f"before the first step), got {value!r}"
        )
    return float(value)


def power(base: float, exponent: float) -> float:
    """``base ** exponent``, inf where it overflows (Python's float power raises
    OverflowError there): a schedule's or a noise variance's divisor, so that what has
    decayed below the smallest float is 0.0 instead of an error at every later step."""
    try:
        return base**exponent
    except OverflowError:
        return math.inf


def check_positive(name: str, x: Any) -> float:
    x = _real(name, x)
    if not (0.0 < x < math.inf):
        raise ValueError(f"{name} must be finite and > 0, got {x}")
    return x


def check_hp_lr(_name: str, x: Any) -> float | Callable[[int], float]:
    """``lr`` as a hyperparameter: a number >= 0, or a schedule ``t' -> lr``."""
    return check_lr(x)


def check_hp_betas(_name: str, x: Any) -> tuple[float, float]:
    return check_betas(x)


def check_pair(name: str, x: Any, first: str, second: str) -> tuple[Any, Any]:
    """A pair ``(first, second)``, or a clear error."""
    try:
        a, b = x
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair ({first}, {second}), got {x!r}") from None
    return a, b


def lr_at(lr: float | Callable[[int], float], completed_steps: int) -> float:
    """The learning rate of this step: ``lr`` or ``lr(t')`` for a schedule, checked."""
    if not callable(lr):
        return lr
    value = lr(completed_steps)
    try:
        return check_nonneg("lr", value)
    except ValueError as exc:
        raise ValueError(
            f"the lr schedule returned {value!r} at step t'={completed_steps}: {exc}"
        ) from None

"""Learning-rate schedules: small callables ``schedule(t) -> float``.

The step convention
-------------------
``t`` is the number of optimizer steps already *completed*: the first update uses
``schedule(0)``, the second ``schedule(1)``, and so on. Every schedule here returns its
initial rate at ``t = 0`` (``LinearWarmup`` returns ``start_factor`` times it). ``t`` must be
a non-negative integer (any object with ``__index__``, e.g. ``numpy.int64``); a negative
``t`` raises ``ValueError``.

Robbins–Monro
-------------
Stochastic gradient descent with unbiased, bounded-variance gradients converges (on
convex problems, to a stationary point more generally) when the step sizes satisfy the
Robbins–Monro conditions

    Σ_t η_t = ∞    (the iterates can travel arbitrarily far), and
    Σ_t η_t² < ∞   (the accumulated gradient noise stays bounded),

which in particular force ``η_t → 0``. Each schedule exposes a boolean ``robbins_monro``
that is ``True`` exactly when its sequence ``η_0, η_1, ...`` satisfies both:

==================  =====================================================
``Constant``        never (Σ η² = ∞; Σ η = 0 when the rate is 0)
``InverseTime``     iff ``decay > 0`` and ``lr0 > 0``
``Power``           iff ``0.5 < power <= 1``, ``decay > 0`` and ``lr0 > 0``
``Exponential``     never (Σ η < ∞ for ``gamma < 1``; constant for ``gamma == 1``)
``Step``            never (Σ η < ∞ for ``gamma < 1``; constant for ``gamma == 1``)
``Cosine``          never (finite horizon: held at ``min_lr`` afterwards)
``LinearWarmup``    inherits from the wrapped schedule (a float: never)
==================  =====================================================

(A zero rate is excluded because then Σ η = 0. Warmup changes only finitely many terms,
so it cannot change either sum's finiteness.)

This module is plain Python: schedules are evaluated on the host once per step and the
resulting float is handed to the compiled kernels.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ._checks import check_finite as _real
from ._checks import power as _power

__all__ = [
    "Schedule",
    "Constant",
    "InverseTime",
    "Power",
    "Exponential",
    "Step",
    "Cosine",
    "LinearWarmup",
]


@runtime_checkable
class Schedule(Protocol):
    """What the schedules in this module provide: ``schedule(t) -> float`` and a flag."""

    @property
    def robbins_monro(self) -> bool: ...

    def __call__(self, t: int) -> float: ...


# ----------------------------------------------------------------------------- validation




def _rate(name: str, value: object) -> float:
    x = _real(name, value)
    if x < 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return x


def _count(name: str, value: object) -> int:
    """``value`` as an int >= 1, or ``ValueError`` naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int, got {value!r}")
    n = int(value)
    if n < 1:
        raise ValueError(f"{name} must be >= 1, got {value!r}")
    return n


def _gamma(value: object) -> float:
    g = _real("gamma", value)
    if not 0.0 < g <= 1.0:
        raise ValueError(f"gamma must be in (0, 1], got {value!r}")
    return g


def _step(t: int) -> int:
    """``t`` as a non-negative int (``TypeError`` for non-integers, ``ValueError`` if < 0)."""
    if isinstance(t, bool):
        raise TypeError(f"t must be an int, got {t!r}")
    n = operator.index(t)
    if n < 0:
        raise ValueError(f"t must be >= 0 (number of completed steps), got {t!r}")
    return n


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # normalise a field of a frozen dataclass


# ------------------------------------------------------------------------------ schedules


@dataclass(frozen=True)
class Constant:
    """``η_t = lr``.

    Not Robbins–Monro: Σ η_t² = ∞ for ``lr > 0`` (and Σ η_t = 0 for ``lr == 0``).
    """

    lr: float

    def __post_init__(self) -> None:
        _set(self, "lr", _rate("lr", self.lr))

    @property
    def robbins_monro(self) -> bool:
        return False

    def __call__(self, t: int) -> float:
        _step(t)
        return self.lr


@dataclass(frozen=True)
class InverseTime:
    """``η_t = lr0 / (1 + decay * t)``.

    Robbins–Monro iff ``decay > 0`` (and ``lr0 > 0``): the terms decay like ``1/t``, so
    Σ η_t diverges (harmonic) while Σ η_t² converges. With ``decay == 0`` it is constant.
    """

    lr0: float
    decay: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "lr0", _rate("lr0", self.lr0))
        _set(self, "decay", _rate("decay", self.decay))

    @property
    def robbins_monro(self) -> bool:
        return self.decay > 0.0 and self.lr0 > 0.0

    def __call__(self, t: int) -> float:
        return self.lr0 / (1.0 + self.decay * _step(t))


@dataclass(frozen=True)
class Power:
    """``η_t = lr0 / (1 + decay * t) ** power``.

    Robbins–Monro iff ``0.5 < power <= 1``, ``decay > 0`` and ``lr0 > 0``: Σ t^-p diverges
    iff ``p <= 1`` and Σ t^-2p converges iff ``p > 0.5``. The boundary ``power == 0.5``
    fails (Σ η_t² is harmonic); ``power == 1`` is ``InverseTime``.
    """

    lr0: float
    power: float = 0.55
    decay: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "lr0", _rate("lr0", self.lr0))
        power = _real("power", self.power)
        if power <= 0.0:
            raise ValueError(f"power must be > 0, got {self.power!r}")
        _set(self, "power", power)
        _set(self, "decay", _rate("decay", self.decay))

    @property
    def robbins_monro(self) -> bool:
        return 0.5 < self.power <= 1.0 and self.decay > 0.0 and self.lr0 > 0.0

    def __call__(self, t: int) -> float:
        return self.lr0 / _power(1.0 + self.decay * _step(t), self.power)


@dataclass(frozen=True)
class Exponential:
    """``η_t = lr0 * gamma ** t`` with ``0 < gamma <= 1``.

    Never Robbins–Monro: for ``gamma < 1`` Σ η_t is a convergent geometric series (the
    iterates can only travel a bounded distance); for ``gamma == 1`` it is constant.
    """

    lr0: float
    gamma: float

    def __post_init__(self) -> None:
        _set(self, "lr0", _rate("lr0", self.lr0))
        _set(self, "gamma", _gamma(self.gamma))

    @property
    def robbins_monro(self) -> bool:
        return False

    def __call__(self, t: int) -> float:
        return self.lr0 * self.gamma ** _step(t)


@dataclass(frozen=True)
class Step:
    """``η_t = lr0 * gamma ** (t // step_size)`` (torch ``StepLR``).

    Never Robbins–Monro: Σ η_t = step_size * lr0 / (1 - gamma) < ∞ for ``gamma < 1``;
    constant for ``gamma == 1``.
    """

    lr0: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _set(self, "lr0", _rate("lr0", self.lr0))
        _set(self, "step_size", _count("step_size", self.step_size))
        _set(self, "gamma", _gamma(self.gamma))

    @property
    def robbins_monro(self) -> bool:
        return False

    def __call__(self, t: int) -> float:
        return self.lr0 * self.gamma ** (_step(t) // self.step_size)


@dataclass(frozen=True)
class Cosine:
    """Cosine annealing from ``lr0`` to ``min_lr`` over ``total_steps``, then held::

        η_t = min_lr + (lr0 - min_lr) * (1 + cos(pi * min(t, T) / T)) / 2,   T = total_steps

    (torch ``CosineAnnealingLR`` without restarts, for ``t <= T``). Requires
    ``0 <= min_lr <= lr0``. Never Robbins–Monro: it is a finite-horizon schedule, constant
    at ``min_lr`` for ``t >= T`` (Σ η_t² = ∞ if ``min_lr > 0``, Σ η_t < ∞ if ``min_lr == 0``).
    """

    lr0: float
    total_steps: int
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "lr0", _rate("lr0", self.lr0))
        _set(self, "total_steps", _count("total_steps", self.total_steps))
        min_lr = _rate("min_lr", self.min_lr)
        if min_lr > self.lr0:
            raise ValueError(f"min_lr must be <= lr0 ({self.lr0!r}), got {self.min_lr!r}")
        _set(self, "min_lr", min_lr)

    @property
    def robbins_monro(self) -> bool:
        return False

    def __call__(self, t: int) -> float:
        T = self.total_steps
        s = min(_step(t), T)
        if s == T:
            return self.min_lr
        return self.min_lr + (self.lr0 - self.min_lr) * (1.0 + math.cos(math.pi * s / T)) / 2.0


@dataclass(frozen=True)
class LinearWarmup:
    """Linear warmup in front of a base schedule (or a constant rate)::

        η_t = base(t) * (f0 + (1 - f0) * t / W)   for t < W
        η_t = base(t)                             for t >= W

    with ``W = warmup_steps``, ``f0 = start_factor`` and ``base`` the wrapped schedule
    (``base(t) = schedule`` when a float is given). The factor is ``f0`` at ``t = 0`` and
    reaches 1 at ``t = W``; with the default ``f0 = 0`` the very first step has rate 0.
    The base schedule sees the same ``t`` (warmup does not delay it).

    ``robbins_monro`` is the wrapped schedule's (``False`` for a float, or for a callable
    without the attribute): changing finitely many terms changes neither Σ η nor Σ η².
    """

    schedule: Callable[[int], float] | float
    warmup_steps: int
    start_factor: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.schedule, numbers.Real) and not isinstance(self.schedule, bool):
            _set(self, "schedule", _rate("schedule", self.schedule))
        elif not callable(self.schedule):
            raise ValueError(
                f"schedule must be a float rate or a callable schedule, got {self.schedule!r}"
            )
        _set(self, "warmup_steps", _count("warmup_steps", self.warmup_steps))
        f0 = _real("start_factor", self.start_factor)
        if not 0.0 <= f0 <= 1.0:
            raise ValueError(f"start_factor must be in [0, 1], got {self.start_factor!r}")
        _set(self, "start_factor", f0)

    @property
    def robbins_monro(self) -> bool:
        if isinstance(self.schedule, float):
            return False
        return bool(getattr(self.schedule, "robbins_monro", False))

    def _base(self, t: int) -> float:
        s = self.schedule
        return s if isinstance(s, float) else float(s(t))

    def __call__(self, t: int) -> float:
        t = _step(t)
        base = self._base(t)
        W = self.warmup_steps
        if t >= W:
            return base
        f0 = self.start_factor
        return base * (f0 + (1.0 - f0) * t / W)

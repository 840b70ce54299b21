"""Curriculum learning: first learn on easy examples, then on harder ones.

Give each training example a difficulty score (anything where lower means easier: a
pre-trained model's loss on it, the ink in an image, a sentence's length); a pacing
function says what fraction of the data, easiest first, is in play at each step::

    cur = fastopt.Curriculum(scores, pacing="exponential", start=0.2, inc=1.9,
                             step_length=100, seed=0)
    for idx in cur.batches(batch_size=32, steps=10_000):
        opt.step(loss_grad(params, X[idx], y[idx]))

Plain NumPy, no compilation: one stable argsort at construction, then one small draw per
batch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator

import numpy as np

from ._checks import check_finite as _real

__all__ = ["Curriculum", "PACINGS"]

#: The named pacing functions.
PACINGS = ("exponential", "linear", "root", "step")




def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _fraction(name: str, value: object) -> float:
    x = _real(name, value)
    if not 0.0 < x <= 1.0:
        raise ValueError(f"{name} must be in (0, 1], got {value!r}")
    return x


class Curriculum:
    """Batches drawn from the easiest examples first, the pool growing with the steps.

    ``difficulty``: one score per training example, lower = easier (a 1-D array-like of
    real numbers, no NaN; ±Inf is allowed and sorts last/first). The examples are ranked
    once by a *stable* ascending argsort, so ties keep their index order. At step ``i``
    the **pool** is the ``pool_size(i)`` first examples of that ranking, i.e. the easiest
    ones, where

        pool_size(i) = clip(ceil(fraction(i) * N), 1, N)

    (``N = len(difficulty)``; the product is rounded to 9 decimals before the ceiling, so
    float noise such as ``0.1 * 3 * 10 == 3.0000000000000004`` does not add an example).
    A non-empty fraction therefore always gives at least one example, and ``fraction = 1``
    gives all ``N``.

    Pacing functions ``fraction(i)`` (``i`` = step, 0 at the first batch):

    * ``"exponential"`` (default), the *fixed exponential pacing* of Hacohen & Weinshall
      (2019), "On the power of curriculum learning in training deep networks"::

          fraction(i) = min(1, start * inc ** floor(i / step_length))

      i.e. ``g(i) = min(1, start * inc**floor(i / step_length)) * N``: the pool starts
      at ``start`` of the data and is multiplied by ``inc`` every ``step_length`` steps.
    * ``"linear"``, DeepSpeed's ``fixed_linear`` curriculum schedule::

          fraction(i) = min(1, start + (1 - start) * i / total_steps)

    * ``"root"``, DeepSpeed's ``fixed_root`` schedule with ``root_degree = p``::

          fraction(i) = min(1, start + (1 - start) * (i / total_steps) ** (1 / p))

      (``p = 2`` square root, ``p = 3`` cube root; ``p = 1`` is ``"linear"``.) This is
      DeepSpeed's formula with ``min_difficulty = start`` and ``max_difficulty = 1``,
      read as fractions of the data; DeepSpeed's further rounding of the difficulty down
      to a multiple of ``difficulty_step`` is not applied (the pool size is rounded as
      above instead). Both grow from ``start`` at step 0 to the whole set at step
      ``total_steps`` and stay there. (Platanios et al.'s competence function
      ``(start**p + (1 - start**p) * i / T) ** (1/p)`` is a different curve; pass it
      as a callable if you want it.)
    * ``"step"``, a single step: ``fraction(i) = start`` for ``i < step_length``, then 1.
    * A callable ``pacing(i) -> fraction``: any function of the step returning a fraction
      in (0, 1]; another value raises ``ValueError`` when it is used.

    Sampling: :meth:`batch(batch_size) <batch>` returns ``batch_size`` int64 indices drawn
    uniformly from the current pool, then advances ``step`` by one. Within a batch the
    draw is *without replacement* when the pool holds at least ``batch_size`` examples;
    when the pool is smaller, every pool example appears ``batch_size // pool_size``
    times and ``batch_size % pool_size`` distinct pool examples, chosen uniformly, once
    more (in a shuffled order). Either way every pool example has the same chance per
    slot. Successive batches are independent draws (no epoch bookkeeping). Everything
    random comes from ``np.random.default_rng(seed)``: the same ``seed`` and calls give
    the same batches.

    Arguments (``ValueError`` naming the argument): ``difficulty`` 1-D, non-empty, real,
    without NaN, of length ``n`` when ``n`` is given; ``pacing`` one of
    ``"exponential"``, ``"linear"``, ``"root"``, ``"step"`` or a callable; ``start`` in
    (0, 1]; ``inc`` finite and >= 1; ``step_length`` an int >= 1; ``total_steps`` an int
    >= 1, required for ``"linear"`` and ``"root"`` (checked when given otherwise, but
    unused); ``root_degree`` finite and > 0. Parameters a pacing does not use are still
    checked.
    """

    def __init__(
        self,
        difficulty,
        *,
        pacing: str | Callable[[int], float] = "exponential",
        start: float = 0.2,
        inc: float = 1.9,
        step_length: int = 100,
        total_steps: int | None = None,
        root_degree: float = 2.0,
        n: int | None = None,
        seed: int | np.random.Generator | None = None,
    ) -> None:
        d = np.asarray(difficulty)
        if d.ndim != 1:
            raise ValueError(f"difficulty must be 1-D (one score per example), got shape {d.shape}")
        if d.size == 0:
            raise ValueError("difficulty must not be empty")
        if d.dtype.kind not in "iuf":
            raise ValueError(f"difficulty must hold real numbers, got dtype {d.dtype}")
        if d.dtype.kind == "f" and np.isnan(d).any():
            bad = int(np.flatnonzero(np.isnan(d))[0])
            raise ValueError(
                f"difficulty has NaN (first at index {bad}); every score must be a number"
            )
        if n is not None:
            n = _int("n", n, 1)
            if d.size != n:
                raise ValueError(
                    f"difficulty has length {d.size}, expected n={n} (one per example)"
                )
        if callable(pacing):
            self._pacing_fn: Callable[[int], float] | None = pacing
        elif isinstance(pacing, str) and pacing in PACINGS:
            self._pacing_fn = None
        else:
            raise ValueError(f"pacing must be one of {PACINGS} or a callable, got {pacing!r}")
        self.pacing = pacing
        self.start = _fraction("start", start)
        self.inc = _real("inc", inc)
        if self.inc < 1.0:
            raise ValueError(f"inc must be >= 1, got {inc!r}")
        self.step_length = _int("step_length", step_length, 1)
        if total_steps is None:
            if pacing in ("linear", "root"):
                raise ValueError(f"total_steps is required for pacing={pacing!r}")
        else:
            total_steps = _int("total_steps", total_steps, 1)
        self.total_steps = total_steps
        self.root_degree = _real("root_degree", root_degree)
        if self.root_degree <= 0.0:
            raise ValueError(f"root_degree must be > 0, got {root_degree!r}")

        self.n = int(d.size)
        order = np.argsort(d, kind="stable").astype(np.int64, copy=False)
        order.flags.writeable = False
        #: All example indices, easiest first (read-only).
        self.order = order
        self._rng = np.random.default_rng(seed)
        self._step = 0

    # ------------------------------------------------------------------------ steps
    @property
    def step(self) -> int:
        """The current step: how many batches have been drawn (settable, e.g. to resume)."""
        return self._step

    @step.setter
    def step(self, value: int) -> None:
        self._step = _int("step", value, 0)

    def fraction(self, step: int | None = None) -> float:
        """The pacing function's fraction of the data at ``step`` (default: the current)."""
        i = self._step if step is None else _int("step", step, 0)
        if self._pacing_fn is not None:
            value = self._pacing_fn(i)
            try:
                return _fraction("pacing", value)
            except ValueError:
                raise ValueError(
                    f"pacing({i}) returned {value!r}; a pacing callable must return a "
                    "fraction in (0, 1]"
                ) from None
        if self.pacing == "exponential":
            try:
                return min(1.0, self.start * self.inc ** (i // self.step_length))
            except OverflowError:  # inc**k past the float range: long since the whole set
                return 1.0
        if self.pacing == "step":
            return self.start if i < self.step_length else 1.0
        p = 1.0 if self.pacing == "linear" else self.root_degree
        progress = min(1.0, i / self.total_steps)
        return min(1.0, self.start + (1.0 - self.start) * progress ** (1.0 / p))

    def pool_size(self, step: int | None = None) -> int:
        """How many examples are in the pool at ``step``: ``clip(ceil(fraction * N), 1, N)``."""
        size = math.ceil(round(self.fraction(step) * self.n, 9))
        return min(self.n, max(1, size))

    def pool(self, step: int | None = None) -> np.ndarray:
        """The pool's example indices at ``step`` (default: the current), easiest first.

        A read-only view of :attr:`order`.
        """
        return self.order[: self.pool_size(step)]

    # --------------------------------------------------------------------- sampling
    def batch(self, batch_size: int) -> np.ndarray:
        """``batch_size`` int64 indices drawn uniformly from the current pool; then
        ``step += 1``. See the class docstring for replacement."""
        batch_size = _int("batch_size", batch_size, 1)
        return self._draw(batch_size)

    def _draw(self, batch_size: int) -> np.ndarray:
        m = self.pool_size()
        state = self._rng.bit_generator.state
        try:
            if batch_size <= m:
                picks = self._rng.choice(m, size=batch_size, replace=False)
            else:
                extra = self._rng.choice(m, size=batch_size % m, replace=False)
                picks = np.concatenate([np.tile(np.arange(m), batch_size // m), extra])
                self._rng.shuffle(picks)
            batch = self.order[picks]
        except BaseException:  # e.g. MemoryError for a huge batch: as if never called
            self._rng.bit_generator.state = state
            raise
        self._step += 1
        return batch

    def batches(self, batch_size: int, steps: int | None = None) -> Iterator[np.ndarray]:
        """An iterator of :meth:`batch` results: ``steps`` batches, or without end if
        ``None``. Arguments are checked here, not at the first ``next()``."""
        batch_size = _int("batch_size", batch_size, 1)
        if steps is not None:
            steps = _int("steps", steps, 0)
        return self._batches(batch_size, steps)

    def _batches(self, batch_size: int, steps: int | None) -> Iterator[np.ndarray]:
        done = 0
        while steps is None or done < steps:
            yield self._draw(batch_size)
            done += 1

    def __repr__(self) -> str:
        pacing = self.pacing if isinstance(self.pacing, str) else getattr(
            self.pacing, "__name__", repr(self.pacing)
        )
        return (
            f"Curriculum(n={self.n}, pacing={pacing!r}, step={self._step}, "
            f"pool_size={self.pool_size()})"
        )

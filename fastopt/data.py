"""Which examples make each gradient: batch, stochastic and minibatch gradient descent.

The spec's three basic gradient methods differ only in the examples each step's gradient
is computed on, so one iterator of index arrays serves all three::

    for idx in fastopt.data.minibatches(len(X), 32, seed=0):   # one epoch
        grads = loss_grad(params, X[idx], y[idx])
        opt.step(grads)

Plain NumPy, no compilation: an epoch is one permutation and ``n / batch_size`` slices.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator

import numpy as np

from ._checks import check_bool

__all__ = ["minibatches"]


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def minibatches(
    n: int,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int | np.random.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[np.ndarray]:
    """One epoch over ``n`` examples, as int64 index arrays of ``batch_size`` indices.

    The spec's three variants are three batch sizes:

    * ``batch_size=n``: **batch gradient descent** (every step uses all objects; one
      batch per epoch);
    * ``batch_size=1``: **stochastic gradient descent** (one object per step);
    * ``batch_size=k``, ``1 < k < n``: **minibatch stochastic gradient descent**
      (``x_{i+1:i+K}``: a set of K objects per step).

    Each call is one epoch: every index in ``range(n)`` appears exactly once, in a fresh
    random order when ``shuffle`` (``np.random.default_rng(seed).permutation(n)``), in
    order ``0, 1, ..., n-1`` otherwise (``seed`` is then unused). The batches are
    consecutive slices of that order: ``n // batch_size`` full batches, then the last
    ``n % batch_size`` indices as one smaller batch, or nothing with ``drop_last=True``.
    So ``n < batch_size`` gives a single batch of all ``n`` indices (none with
    ``drop_last``), and ``n == 0`` gives nothing.

    The same ``seed`` gives the same epoch. For a different order each epoch, pass a
    different seed per epoch (e.g. ``seed=(base_seed, epoch)``) or one
    ``np.random.Generator`` that every call draws from.

    The yielded arrays are views into the epoch's permutation (one allocation per epoch);
    each is a distinct slice, so writing into one affects no other.

    Arguments are checked when ``minibatches`` is called, not at the first ``next()``:
    ``n`` an int >= 0, ``batch_size`` an int >= 1, ``shuffle`` and ``drop_last`` bools;
    anything else raises ``ValueError`` naming the argument.
    """
    n = _int("n", n, 0)
    batch_size = _int("batch_size", batch_size, 1)
    shuffle = check_bool("shuffle", shuffle)
    drop_last = check_bool("drop_last", drop_last)
    if shuffle:
        try:
            rng = np.random.default_rng(seed)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"seed must be None, an int >= 0, a sequence of them or a "
                             f"np.random.Generator, got {seed!r} ({exc})") from None
        order = rng.permutation(n).astype(np.int64, copy=False)
    else:
        order = np.arange(n, dtype=np.int64)
    stop = n - n % batch_size if drop_last else n
    return _epoch(order, batch_size, stop)


def _epoch(order: np.ndarray, batch_size: int, stop: int) -> Iterator[np.ndarray]:
    for lo in range(0, stop, batch_size):
        yield order[lo : min(lo + batch_size, stop)]

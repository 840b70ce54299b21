"""BatchNorm timings: fastopt against NumPy, torch and a one-read-one-write pass.

Training rows time forward + backward (float32, batch statistics, running statistics
updated, all three gradients) for fastopt (with ``out=`` and ``stats_out=`` buffers, as a
training loop runs it), a NumPy implementation as a careful user writes it, and torch's
CPU BatchNorm (``torch.nn.functional.batch_norm`` and an autograd backward; and, as the
strictest yardstick, its kernels alone: :func:`torch_out_train`) at numba's thread count.
Inference rows time fastopt's eval forward against a copy kernel that reads x once and
writes y once (the memory-traffic floor of any inference BatchNorm). All callables of a
shape are timed in one interleaved run (:func:`fastopt.bench.run._interleaved_medians`),
so the ratios hold even when absolute times drift.

Run: ``python -m fastopt.bench.batchnorm [--quick] [--no-torch]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numba
import numpy as np
from numba import prange

from .. import batchnorm
from .._jit import bind, cpu_jit
from . import torch_ref
from .run import _interleaved_medians

#: The issue's shapes: a ResNet stem, a late ResNet stage and a wide fully-connected layer.
SHAPES: tuple[tuple[int, ...], ...] = ((64, 64, 56, 56), (128, 256, 14, 14), (256, 1024))

EPS = batchnorm.EPS


@dataclass
class BatchNormRow:
    shape: tuple[int, ...]
    dtype: str
    train_fastopt_ms: float
    train_numpy_ms: float
    train_torch_ms: float | None
    infer_fastopt_ms: float
    infer_copy_ms: float
    infer_torch_ms: float | None
    train_torch_out_ms: float | None = None

    @property
    def train_x_numpy(self) -> float:
        return self.train_numpy_ms / self.train_fastopt_ms

    @property
    def train_x_torch(self) -> float | None:
        return None if self.train_torch_ms is None else self.train_torch_ms / self.train_fastopt_ms

    @property
    def train_x_torch_out(self) -> float | None:
        """Against torch's own BatchNorm kernels with preallocated outputs (no allocation,
        no autograd): the strictest torch yardstick."""
        if self.train_torch_out_ms is None:
            return None
        return self.train_torch_out_ms / self.train_fastopt_ms

    @property
    def infer_vs_copy(self) -> float:
        """fastopt's inference time over the copy pass (1.0 = at the traffic floor)."""
        return self.infer_fastopt_ms / self.infer_copy_ms


def _copy_loop(x, y):
    for i in prange(x.size):
        y[i] = x[i]


@cache
def copy_kernel() -> Callable:
    """One read of x and one write of y per element, in parallel: the inference floor."""
    return cpu_jit(bind(_copy_loop, "bn_copy_parallel"), parallel=True)


def numpy_train_step(x, gamma, beta, dy, running_mean, running_var, momentum=0.1, eps=EPS):
    """Training forward and backward in plain NumPy (x's dtype), as a careful user writes
    it: keepdims reductions, x̂ kept for the backward. Returns (y, dx, dgamma, dbeta)."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    n = x.size // x.shape[1]
    mean = x.mean(axis=axes, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + eps)
    xhat = xc * inv
    y = gamma.reshape(shape) * xhat + beta.reshape(shape)
    running_mean *= 1 - momentum
    running_mean += momentum * mean.reshape(-1)
    running_var *= 1 - momentum
    running_var += momentum * var.reshape(-1) * (n / (n - 1))
    dbeta = dy.sum(axis=axes)
    dgamma = (dy * xhat).sum(axis=axes)
    dx = (gamma.reshape(shape) * inv / n) * (
        n * dy - dbeta.reshape(shape) - xhat * dgamma.reshape(shape)
    )
    return y, dx, dgamma, dbeta


def _torch_fns(x, gamma, beta, dy) -> dict[str, Callable[[], None]]:
    import torch

    torch.set_num_threads(numba.get_num_threads())
    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(gamma.copy()).requires_grad_()
    tb = torch.from_numpy(beta.copy()).requires_grad_()
    train, infer = torch_steps(tx, tw, tb, torch.from_numpy(dy))
    train_out, _ = torch_out_train(x, gamma, beta, dy)
    return {"train_torch": train, "infer_torch": infer, "train_torch_out": train_out}


def torch_steps(tx, tw, tb, tdy) -> tuple[Callable[[], None], Callable[[], None]]:
    """torch's BatchNorm on tensors of any device (``tx``, ``tw``, ``tb`` requiring grad):
    a training step (``F.batch_norm``, running statistics updated, and an autograd
    backward of ``tdy``) and an inference forward."""
    import torch

    F = torch.nn.functional
    c = tx.shape[1]
    rm = torch.zeros(c, dtype=tx.dtype, device=tx.device)
    rv = torch.ones(c, dtype=tx.dtype, device=tx.device)

    def train() -> None:
        y = F.batch_norm(tx, rm, rv, tw, tb, training=True, momentum=0.1, eps=EPS)
        torch.autograd.grad(y, (tx, tw, tb), tdy)

    def infer() -> None:
        with torch.no_grad():
            F.batch_norm(tx, rm, rv, tw, tb, training=False, eps=EPS)

    return train, infer


def torch_out_train(x, gamma, beta, dy) -> tuple[Callable[[], None], tuple]:
    """torch's BatchNorm training forward + backward kernels without allocation or
    autograd: aten's ``native_batch_norm`` and ``native_batch_norm_backward`` out=
    variants writing into buffers made once (as fastopt's ``out=`` buffers are).
    Returns the step and its outputs ``(y, dx, dgamma, dbeta)`` (torch tensors)."""
    import torch

    aten = torch.ops.aten
    c = x.shape[1]
    tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
    w, b = torch.from_numpy(gamma.copy()), torch.from_numpy(beta.copy())
    rm, rv = torch.zeros(c, dtype=tx.dtype), torch.ones(c, dtype=tx.dtype)
    y, dx = torch.empty_like(tx), torch.empty_like(tx)
    mean, invstd, dw, db = (torch.empty(c, dtype=tx.dtype) for _ in range(4))

    def step() -> None:
        aten.native_batch_norm.out(tx, w, b, rm, rv, True, 0.1, EPS, out=y,
                                   save_mean=mean, save_invstd=invstd)
        aten.native_batch_norm_backward.out(tdy, tx, w, rm, rv, mean, invstd, True, EPS,
                                            [True, True, True], out0=dx, out1=dw, out2=db)

    return step, (y, dx, dw, db)


def bench_shape(shape: tuple[int, ...], dtype=np.float32, repeats: int = 10,
                budget_s: float = 3.0, with_torch: bool = True) -> BatchNormRow:
    rng = np.random.default_rng(0)
    c = shape[1]
    x = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    dy = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    gamma = (1.0 + 0.1 * rng.standard_normal(c)).astype(dtype)
    beta = (0.1 * rng.standard_normal(c)).astype(dtype)
    rm, rv = np.zeros(c, dtype), np.ones(c, dtype)
    y, dx = np.empty_like(x), np.empty_like(x)
    dg, db = np.empty(c, dtype), np.empty(c, dtype)
    stats = np.empty((3, c))
    rm_np, rv_np = rm.copy(), rv.copy()
    copy = copy_kernel()
    xf, yf = x.reshape(-1), y.reshape(-1)

    def train_fastopt() -> None:
        _, cache_ = batchnorm.forward(x, gamma, beta, running_mean=rm, running_var=rv, out=y,
                                      stats_out=stats)
        batchnorm.backward(dy, cache_, out=(dx, dg, db))

    fns: dict[str, Callable[[], None]] = {
        "train_fastopt": train_fastopt,
        "train_numpy": lambda: numpy_train_step(x, gamma, beta, dy, rm_np, rv_np),
        "infer_fastopt": lambda: batchnorm.forward(
            x, gamma, beta, training=False, running_mean=rm, running_var=rv, out=y),
        "infer_copy": lambda: copy(xf, yf),
    }
    if with_torch and torch_ref.available():
        fns.update(_torch_fns(x, gamma, beta, dy))
    # Consecutive timed calls per round: enough that the other libraries' OpenMP threads,
    # still spinning after their own calls, have gone to sleep for most of them (a call of
    # 0.3 ms right after torch's ran up to 50% slower here).
    inner = 3 if x.size >= 4_000_000 else 5 if x.size >= 1_000_000 else 20
    med = _interleaved_medians(fns, repeats, budget_s, inner=inner)
    return BatchNormRow(tuple(shape), np.dtype(dtype).name, med["train_fastopt"],
                        med["train_numpy"], med.get("train_torch"), med["infer_fastopt"],
                        med["infer_copy"], med.get("infer_torch"), med.get("train_torch_out"))


def bench_batchnorm(shapes=SHAPES, dtype=np.float32, repeats: int = 10,
                    budget_s: float = 3.0, with_torch: bool = True) -> list[BatchNormRow]:
    """One :class:`BatchNormRow` per shape (medians in ms; see the module docstring)."""
    return [bench_shape(tuple(s), dtype, repeats, budget_s, with_torch) for s in shapes]


#: Printed under the table: what makes the x NumPy and x torch columns swing.
ALLOCATION_NOTE = (
    "NumPy and torch allocate their outputs on every call (fastopt writes into out= "
    "buffers); where those allocations page-fault, their times grow several-fold from one "
    "process to the next (torch's (64, 64, 56, 56) inference: 5.4 ms or 24-34 ms here). "
    "x t.out times torch's own kernels (aten native_batch_norm and its backward, out= "
    "variants) on buffers made once: no allocation, no autograd"
)


def format_table(rows: list[BatchNormRow]) -> str:
    head = (f"{'shape':<20}{'train ms':>10}{'x NumPy':>9}{'x torch':>9}{'x t.out':>9}"
            f"{'infer ms':>10}{'copy ms':>9}{'/copy':>7}{'torch inf ms':>14}")
    lines = [head, "-" * len(head)]
    for r in rows:
        xt = f"{r.train_x_torch:>9.2f}" if r.train_x_torch else f"{'-':>9}"
        xo = f"{r.train_x_torch_out:>9.2f}" if r.train_x_torch_out else f"{'-':>9}"
        ti = f"{r.infer_torch_ms:>14.3f}" if r.infer_torch_ms else f"{'-':>14}"
        lines.append(f"{str(r.shape):<20}{r.train_fastopt_ms:>10.3f}{r.train_x_numpy:>9.1f}{xt}"
                     f"{xo}{r.infer_fastopt_ms:>10.3f}{r.infer_copy_ms:>9.3f}"
                     f"{r.infer_vs_copy:>7.2f}{ti}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--no-torch", action="store_true", help="skip the torch columns")
    args = ap.parse_args(argv)
    repeats, budget = (3, 0.5) if args.quick else (10, 3.0)
    rows = bench_batchnorm(repeats=repeats, budget_s=budget, with_torch=not args.no_torch)
    print(f"BatchNorm float32, {numba.get_num_threads()} threads (torch at the same count); "
          "medians of interleaved runs; x = times faster than; /copy = inference time over "
          "one read+write pass\n")
    print(format_table(rows))
    print(f"\n{ALLOCATION_NOTE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""torch.optim yardsticks (optional: only when torch is installed).

Each fastopt rule is paired with torch's optimizer for the same rule, fused where torch has
a fused CPU kernel, foreach otherwise. Four differ in detail from fastopt's spec defaults
(RMSprop's α and ε placement, AdaGrad's ε placement, Nadam's momentum warm-up, AMSGrad's
bias correction): the same traffic and about the same arithmetic per value, so the timing
comparison holds; fastopt's torch-compatible keywords give torch's exact results.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def optimizer_for(rule: str, tp) -> tuple[object, str]:
    """The torch optimizer computing ``rule`` over the tensor ``tp``, and its label."""
    import torch

    fused = {"fused": True}
    foreach = {"foreach": True}
    table = {
        "SGD": (torch.optim.SGD, {"lr": 1e-2, **fused}),
        "Momentum": (torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9, **fused}),
        "Nesterov": (torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9, "nesterov": True, **fused}),
        "AdaGrad": (torch.optim.Adagrad, {"lr": 1e-2, **fused}),
        "RMSprop": (torch.optim.RMSprop, {"lr": 1e-2, **foreach}),
        "Adam": (torch.optim.Adam, {"lr": 1e-3, **fused}),
        "Nadam": (torch.optim.NAdam, {"lr": 2e-3, **foreach}),
        "AMSGrad": (torch.optim.Adam, {"lr": 1e-3, "amsgrad": True, **fused}),
    }
    cls, kw = table[rule]
    if tp.is_cuda and cls is torch.optim.Adagrad:  # torch has no fused CUDA Adagrad
        kw = {**kw, "fused": None, **foreach}
    return cls([tp], **kw), ("fused" if kw.get("fused") else "foreach")


def make_step(rule: str, p: np.ndarray, g: np.ndarray) -> tuple[Callable[[], None], str]:
    """A zero-argument torch step over views of ``p`` and ``g``, and its label."""
    import torch

    tp = torch.from_numpy(p)
    tp.grad = torch.from_numpy(g)
    return step_for(rule, tp)


def step_for(rule: str, tensor) -> tuple[Callable[[], None], str]:
    """A zero-argument step of torch's counterpart of ``rule`` over ``tensor`` (its
    ``.grad`` set), on the CPU or a GPU, and its label."""
    import torch

    opt, label = optimizer_for(rule, tensor)

    def step() -> None:
        with torch.no_grad():
            opt.step()

    return step, label

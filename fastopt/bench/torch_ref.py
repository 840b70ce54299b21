"""torch.optim yardsticks (optional: only when torch is installed).

Each fastopt rule is paired with torch's optimizer for the same rule (the registry's
``torch`` counterpart; rules torch lacks have none), fused where torch has a fused CPU
kernel, foreach otherwise. Four differ in detail from fastopt's spec defaults
(RMSprop's α and ε placement, AdaGrad's ε placement, Nadam's momentum warm-up, AMSGrad's
bias correction): the same traffic and about the same arithmetic per value, so the timing
comparison holds; fastopt's torch-compatible keywords give torch's exact results.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..rules.registry import registry


def available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


#: The torch.optim classes with a fused CPU kernel (the others step with foreach).
FUSED_ON_CPU = frozenset({"SGD", "Adagrad", "Adam", "AdamW"})


def optimizer_for(rule: str, tp) -> tuple[object, str]:
    """The torch optimizer computing ``rule`` over the tensor ``tp`` (the registry's torch
    counterpart), and its label: fused where torch has a fused kernel, foreach otherwise."""
    import torch

    counterpart = registry()[rule].torch
    if counterpart is None:
        raise KeyError(f"torch has no counterpart of {rule}")
    cls = getattr(torch.optim, counterpart.name.rsplit(".", 1)[1])
    fused = cls.__name__ in FUSED_ON_CPU and not (tp.is_cuda and cls is torch.optim.Adagrad)
    kw = {**counterpart.options, **({"fused": True} if fused else {"foreach": True})}
    return cls([tp], **kw), ("fused" if fused else "foreach")


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

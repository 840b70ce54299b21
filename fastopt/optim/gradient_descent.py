"""SGD, Momentum and Nesterov: the spec's gradient-descent family."""

from __future__ import annotations

from typing import Any

from .. import rules
from .base import Optimizer, Params


class SGD(Optimizer):
    """Gradient descent ``w ← w − η g`` (spec: batch, stochastic and minibatch GD differ in
    which examples make ``g``). The stochastic forms need ``η_t → 0``: pass a schedule from
    :mod:`fastopt.schedules` that satisfies Robbins–Monro as ``lr``."""

    def __init__(self, params: Params, lr: Any = 1e-2, *, weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = False, maximize: bool = False,
                 **options: Any) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay,
                                  "decoupled_weight_decay": decoupled_weight_decay,
                                  "maximize": maximize}, **options)

    def _rule(self, group):
        return rules.sgd

    def _constants(self, t, lr, group, group_state):
        return rules.sgd_constants(lr), group_state


class Momentum(Optimizer):
    """Momentum (spec): ``v ← γ v + η g;  w ← w − v``, ``γ = momentum = 0.9``.

    torch.optim.SGD(momentum=γ) keeps ``b = v/η``: identical for a constant η."""

    def __init__(self, params: Params, lr: Any = 1e-2, momentum: float = 0.9, *,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                 maximize: bool = False, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "decoupled_weight_decay": decoupled_weight_decay,
                                  "maximize": maximize}, **options)

    def _state_names(self, group):
        return ("velocity",)

    def _rule(self, group):
        return rules.momentum

    def _constants(self, t, lr, group, group_state):
        return rules.momentum_constants(lr, group["momentum"]), group_state


class Nesterov(Momentum):
    """Nesterov accelerated gradient (spec): ``v ← γ v + η ∇L(w − γ v);  w ← w − v``.

    The parameters hold the look-ahead point ``w − γ v`` (where the caller evaluates the
    gradient); equals torch.optim.SGD(momentum=γ, nesterov=True) for a constant η."""

    def _rule(self, group):
        return rules.nesterov

    def _constants(self, t, lr, group, group_state):
        return rules.nesterov_constants(lr, group["momentum"]), group_state

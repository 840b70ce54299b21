"""AdaGrad and RMSprop: per-coordinate step sizes from accumulated squared gradients."""

from __future__ import annotations

from typing import Any

from .. import rules
from .base import Optimizer, Params


class AdaGrad(Optimizer):
    """AdaGrad (spec): ``G ← G + g²;  w ← w − η g / √(G + ε)``, ``ε = 1e-6``.

    torch.optim.Adagrad: ``eps_inside_sqrt=False, eps=1e-10`` (``/(√G + ε)``);
    ``initial_accumulator_value`` sets ``G₀``."""

    def __init__(self, params: Params, lr: Any = 1e-2, eps: float = 1e-6, *,
                 eps_inside_sqrt: bool = True, initial_accumulator_value: float = 0.0,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                 maximize: bool = False, **options: Any) -> None:
        super().__init__(params, {
            "lr": lr, "eps": eps, "eps_inside_sqrt": eps_inside_sqrt,
            "initial_accumulator_value": initial_accumulator_value,
            "weight_decay": weight_decay, "decoupled_weight_decay": decoupled_weight_decay,
            "maximize": maximize}, **options)

    def _state_names(self, group):
        return ("sum_sq",)

    def _initial_state_value(self, name, group):
        return group["initial_accumulator_value"]

    def _rule(self, group):
        return rules.adagrad

    def _constants(self, t, lr, group, group_state):
        return rules.adagrad_constants(lr, group["eps"], group["eps_inside_sqrt"]), group_state


class RMSprop(Optimizer):
    """RMSprop (spec): ``E ← α E + (1 − α) g²;  w ← w − η g / √(E + ε)``,
    ``alpha = 0.9`` (the spec's γ), ``ε = 1e-6``.

    torch.optim.RMSprop (``alpha=0.99, eps=1e-8``): ``eps_inside_sqrt=False``;
    ``centered=True`` divides by ``√(E − ḡ²)``; ``momentum=μ`` adds a buffer
    ``b ← μ b + g / denom;  w ← w − η b``."""

    def __init__(self, params: Params, lr: Any = 1e-2, alpha: float = 0.9, eps: float = 1e-6,
                 *, eps_inside_sqrt: bool = True, centered: bool = False,
                 momentum: float = 0.0, weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = False, maximize: bool = False,
                 **options: Any) -> None:
        super().__init__(params, {
            "lr": lr, "alpha": alpha, "eps": eps, "eps_inside_sqrt": eps_inside_sqrt,
            "centered": centered, "momentum": momentum, "weight_decay": weight_decay,
            "decoupled_weight_decay": decoupled_weight_decay, "maximize": maximize},
            **options)

    def _state_names(self, group):
        names = ("square_avg",)
        if group["centered"]:
            names += ("grad_avg",)
        if group["momentum"] > 0:
            names += ("momentum_buffer",)
        return names

    def _rule(self, group):
        return rules.rmsprop_variant(group["centered"], group["momentum"])

    def _constants(self, t, lr, group, group_state):
        return rules.rmsprop_constants(lr, group["alpha"], group["eps"],
                                       group["eps_inside_sqrt"], group["momentum"]), group_state

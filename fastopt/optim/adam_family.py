"""Adam, Nadam and AMSGrad: momentum plus RMS scaling."""

from __future__ import annotations

from typing import Any

from .. import rules
from .._checks import check_mu_product
from .base import Optimizer, Params


class _AdamLike(Optimizer):
    def __init__(self, params: Params, defaults: dict[str, Any], **options: Any) -> None:
        common = {k: options.pop(k) for k in list(options) if k in self.COMMON_DEFAULTS}
        super().__init__(params, {**self.COMMON_DEFAULTS, **defaults, **common}, **options)

    def _state_names(self, group):
        return ("m", "v")


class Adam(_AdamLike):
    """Adam (spec; Kingma & Ba 2015): ``m ← β₁m + (1−β₁)g;  v ← β₂v + (1−β₂)g²;
    w ← w − η m̂ / (√v̂ + ε)`` with bias-corrected ``m̂, v̂``; ``betas=(0.9, 0.999)``,
    ``ε = 1e-8`` (as torch.optim.Adam). ``decoupled_weight_decay=True`` is AdamW.

    ``bias_correction=False``: ``w ← w − η m / (√v + ε)``. ``eps_hat=True``: the form of
    Keras, TensorFlow and many NumPy trainers (Kingma & Ba, end of section 2):
    ``η_t = η √(1 − β₂ᵗ) / (1 − β₁ᵗ);  w ← w − η_t m / (√v + ε̂)``."""

    def __init__(self, params: Params, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, *, bias_correction: bool = True, eps_hat: bool = False,
                 **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "bias_correction": bias_correction, "eps_hat": eps_hat},
                         **options)

    def _rule(self, group):
        return rules.adam

    def _constants(self, t, lr, group, group_state):
        return rules.adam_constants(t, lr, group["betas"], group["eps"],
                                    group["bias_correction"], group["eps_hat"]), group_state


class Nadam(_AdamLike):
    """Nadam (spec: Adam + Nesterov; Dozat 2016) with a constant β₁ (as optax.nadam):
    ``m̂ = β₁ m/(1 − β₁^(t+1)) + (1 − β₁) g/(1 − β₁ᵗ)``, ``w ← w − η m̂ / (√v̂ + ε)``.

    ``momentum_decay=4e-3`` gives torch.optim.NAdam (Dozat's μ_t warming schedule)."""

    def __init__(self, params: Params, lr: Any = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, *, momentum_decay: float | None = None,
                 **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "momentum_decay": momentum_decay}, **options)

    def _initial_group_state(self, group):
        return {"mu_product": 1.0}

    def _checked_group_state(self, name, value, key):
        try:
            return check_mu_product(value)
        except ValueError as exc:
            raise ValueError(f"state dict {key!r}: {exc}") from None

    def _rule(self, group):
        return rules.nadam

    def _constants(self, t, lr, group, group_state):
        consts, mu_product = rules.nadam_constants(t, lr, group["betas"], group["eps"],
                                                   group["momentum_decay"],
                                                   group_state["mu_product"])
        return consts, {"mu_product": mu_product}


class AMSGrad(_AdamLike):
    """AMSGrad (spec; Reddi et al. 2018): Adam's m and v, ``v̂ ← max(v̂, v);
    w ← w − η m / (√v̂ + ε)`` without bias correction.

    ``bias_correction=True`` gives torch.optim.Adam(amsgrad=True)."""

    def __init__(self, params: Params, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, *, bias_correction: bool = False, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "bias_correction": bias_correction}, **options)

    def _state_names(self, group):
        return ("m", "v", "v_max")

    def _rule(self, group):
        return rules.amsgrad

    def _constants(self, t, lr, group, group_state):
        return rules.amsgrad_constants(t, lr, group["betas"], group["eps"],
                                       group["bias_correction"]), group_state

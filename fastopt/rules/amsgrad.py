"""AMSGrad (spec; Reddi, Kale & Kumar 2018).

Spec (no bias correction): m, v as Adam, ``v̂ ← max(v̂, v);  w ← w − η m / (√v̂ + ε)``.
``bias_correction=True`` gives torch.optim.Adam(amsgrad=True): the max of the raw v, then
``w ← w − (η / (1 − β₁ᵗ)) m / (√v̂ / √(1 − β₂ᵗ) + ε)``.
"""

from .._jit import device
from ._moments import ema
from .adam import adam_constants, adam_update


@device
def amsgrad(p, g, s, h):
    m, v, v_max = s
    step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, inv_bc2_sqrt, eps = h
    m = ema(m, g, beta1, one_minus_beta1)
    v = ema(v, g * g, beta2, one_minus_beta2)
    # max(v̂, v) with NaN kept, as np.maximum and torch.maximum (Python's max drops a NaN v)
    v_max = v_max if (v_max >= v or v_max != v_max) else v
    return adam_update(p, m, v_max, step_size, inv_bc2_sqrt, eps), (m, v, v_max)


def amsgrad_constants(
    step: int, lr: float, betas: tuple[float, float], eps: float, bias_correction: bool
) -> tuple[float, ...]:
    return adam_constants(step, lr, betas, eps, bias_correction)

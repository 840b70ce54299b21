"""AdaGrad (spec; Duchi, Hazan & Singer 2011).

``G ← G + g²;  w ← w − η g / √(G + ε)`` with the spec's ``ε = 1e-6``.
``eps_inside_sqrt=False`` gives torch.optim.Adagrad's ``η g / (√G + ε)``.
"""

from .._jit import device
from ._moments import eps_split, rms_denominator


@device
def adagrad(p, g, s, h):
    (acc,) = s
    lr, eps_in, eps_out = h
    acc = acc + g * g
    return p - lr * g / rms_denominator(acc, eps_in, eps_out), (acc,)


def adagrad_constants(lr: float, eps: float, eps_inside_sqrt: bool) -> tuple[float, ...]:
    return (lr, *eps_split(eps, eps_inside_sqrt))

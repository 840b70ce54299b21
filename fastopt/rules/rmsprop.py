"""RMSprop (spec; Tieleman & Hinton 2012), with torch's centered and momentum options.

Spec: ``E ← α E + (1 − α) g²;  w ← w − η g / √(E + ε)`` (the spec's γ is ``alpha``).
``eps_inside_sqrt=False``: torch's ``η g / (√E + ε)``. ``centered`` (Graves 2013) also
tracks ``ḡ ← α ḡ + (1 − α) g`` and divides by ``√(E − ḡ² + ε)``. ``momentum=μ``:
``b ← μ b + g / denom;  w ← w − η b``. The state tuple holds ``(E[, ḡ][, b])``.
"""

from .._jit import device
from ._moments import ema, eps_split, rms_denominator


@device
def rmsprop(p, g, s, h):
    (sq,) = s
    lr, alpha, one_minus_alpha, eps_in, eps_out, _ = h
    sq = ema(sq, g * g, alpha, one_minus_alpha)
    return p - lr * g / rms_denominator(sq, eps_in, eps_out), (sq,)


@device
def rmsprop_centered(p, g, s, h):
    sq, avg = s
    lr, alpha, one_minus_alpha, eps_in, eps_out, _ = h
    sq = ema(sq, g * g, alpha, one_minus_alpha)
    avg = ema(avg, g, alpha, one_minus_alpha)
    return p - lr * g / rms_denominator(sq - avg * avg, eps_in, eps_out), (sq, avg)


@device
def rmsprop_momentum(p, g, s, h):
    sq, buf = s
    lr, alpha, one_minus_alpha, eps_in, eps_out, mu = h
    sq = ema(sq, g * g, alpha, one_minus_alpha)
    buf = mu * buf + g / rms_denominator(sq, eps_in, eps_out)
    return p - lr * buf, (sq, buf)


@device
def rmsprop_centered_momentum(p, g, s, h):
    sq, avg, buf = s
    lr, alpha, one_minus_alpha, eps_in, eps_out, mu = h
    sq = ema(sq, g * g, alpha, one_minus_alpha)
    avg = ema(avg, g, alpha, one_minus_alpha)
    buf = mu * buf + g / rms_denominator(sq - avg * avg, eps_in, eps_out)
    return p - lr * buf, (sq, avg, buf)


def rmsprop_constants(
    lr: float, alpha: float, eps: float, eps_inside_sqrt: bool, momentum: float
) -> tuple[float, ...]:
    return (lr, alpha, 1.0 - alpha, *eps_split(eps, eps_inside_sqrt), momentum)


def rmsprop_variant(centered: bool, momentum: float):
    """The rule for these options; its state tuple is ``(E[, ḡ][, b])``."""
    if centered:
        return rmsprop_centered_momentum if momentum > 0 else rmsprop_centered
    return rmsprop_momentum if momentum > 0 else rmsprop

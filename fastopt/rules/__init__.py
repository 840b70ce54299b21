"""The spec's update rules, each written once as an element-wise function.

A rule is ``rule(p, g, s, h) -> (p, s)``: what one element's parameter ``p`` and state
tuple ``s`` become, given its (already transformed) gradient ``g`` and the step's constants
``h``. Every value has the parameter's dtype; the constants are computed on the host, once
per step, by the rule's ``*_constants`` function. Rules are plain Python, marked
``@device``: the CPU driver compiles them into its parallel loop, a GPU driver into its
kernels (see ``fastopt._jit``).

Only arithmetic between values of the parameter's dtype appears here: numba would promote
a float32 expression containing a Python float or int literal to float64.

Each rule module ends with its registry entry (``RULE``); :mod:`.registry` finds them all,
so a new rule needs no line here. The names below re-export the spec's rules and their
constants for scripts that call the kernels directly (the bench's yardsticks).
"""

from .adagrad import adagrad, adagrad_constants
from .adam import adam, adam_constants
from .amsgrad import amsgrad, amsgrad_constants
from .momentum import momentum, momentum_constants
from .nadam import nadam, nadam_constants
from .nesterov import nesterov, nesterov_constants
from .rmsprop import (
    rmsprop,
    rmsprop_centered,
    rmsprop_centered_momentum,
    rmsprop_constants,
    rmsprop_momentum,
    rmsprop_variant,
)
from .sgd import sgd, sgd_constants

__all__ = [
    "adagrad", "adagrad_constants", "adam", "adam_constants", "amsgrad", "amsgrad_constants",
    "momentum", "momentum_constants", "nadam", "nadam_constants", "nesterov",
    "nesterov_constants", "rmsprop", "rmsprop_centered", "rmsprop_centered_momentum",
    "rmsprop_constants", "rmsprop_momentum", "rmsprop_variant", "sgd", "sgd_constants",
]

"""The optimizer classes: validation, groups, state and checkpoints over the functional layer.

One class per rule of the registry (:mod:`fastopt.rules.registry`), made by
:func:`fastopt.optim.classes.optimizer_class`: ``fastopt.optim.Adam`` and so on.
"""

from ..rules.registry import registry
from .base import Optimizer
from .classes import RuleOptimizer, optimizer_class

_classes = {name: optimizer_class(rule) for name, rule in registry().items()}
globals().update(_classes)

#: The rules' class names, in the registry's order.
RULE_NAMES: tuple[str, ...] = tuple(_classes)

__all__ = [*RULE_NAMES, "Optimizer", "RuleOptimizer"]  # noqa: PLE0604


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

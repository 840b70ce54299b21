"""The optimizer classes: validation, groups, state and checkpoints over the functional layer."""

from .adam_family import Adam, AMSGrad, Nadam
from .adaptive import AdaGrad, RMSprop
from .base import Optimizer
from .gradient_descent import SGD, Momentum, Nesterov

__all__ = ["SGD", "AMSGrad", "AdaGrad", "Adam", "Momentum", "Nadam", "Nesterov", "Optimizer",
           "RMSprop"]

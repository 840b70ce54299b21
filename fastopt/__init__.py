"""fastopt: Numba-JIT neural-network optimizer kernels over flat NumPy buffers.

The spec's update rules (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam, Nadam, AMSGrad)
as fused single-pass parallel kernels, behind a small torch-like API::

    opt = fastopt.Adam(params, lr=1e-3)   # ndarray | list of ndarrays | FlatParams | groups
    opt.step(grads)                       # in place

Layers, each importing only the ones below it: ``rules`` (the element-wise equations),
``drivers`` (how they are looped), ``functional`` (in-place functions on flat arrays),
``optim`` (the classes), and the CLI (``python -m fastopt``). Nothing is compiled at
import: each kernel is compiled on first use and cached on disk. Nor is SciPy's linear
algebra imported on the way (:mod:`fastopt._numba_startup`).
"""

# _numba_startup comes first: importing it installs its import hook before anything can
# start Numba's CPU target.
from . import _numba_startup, batchnorm, data, datasets, functional, parallel, schedules  # noqa: F401
from .batchnorm import BatchNorm
from .curriculum import Curriculum
from .early_stopping import EarlyStopping
from .flat import FlatParams
from .noise import GradientNoise
from .optim import SGD, AdaGrad, Adam, AMSGrad, Momentum, Nadam, Nesterov, Optimizer, RMSprop
from .parallel import get_num_threads, set_num_threads, thread_limit, threading_info
from .precompile import precompile

__version__ = "0.1.0"

__all__ = [
    "SGD", "AMSGrad", "AdaGrad", "Adam", "BatchNorm", "Curriculum", "EarlyStopping",
    "FlatParams", "GradientNoise", "Momentum", "Nadam", "Nesterov", "Optimizer", "RMSprop",
    "batchnorm", "data", "datasets", "functional", "get_num_threads", "parallel", "precompile",
    "schedules", "set_num_threads", "thread_limit", "threading_info",
]

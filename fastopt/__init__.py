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
from . import _numba_startup, batchnorm, data, datasets, functional, optim, parallel, schedules  # noqa: F401
from .batchnorm import BatchNorm
from .curriculum import Curriculum
from .early_stopping import EarlyStopping
from .flat import FlatParams
from .noise import GradientNoise
from .optim import RULE_NAMES, Optimizer
from .parallel import get_num_threads, set_num_threads, thread_limit, threading_info
from .precompile import precompile

__version__ = "0.1.0"

# One class per registered rule (fastopt.rules.registry): fastopt.Adam, fastopt.Lion, ...
globals().update({name: getattr(optim, name) for name in RULE_NAMES})

__all__ = [  # noqa: PLE0604 - the rules' classes come from the registry
    *RULE_NAMES, "BatchNorm", "Curriculum", "EarlyStopping", "FlatParams", "GradientNoise",
    "Optimizer", "batchnorm", "data", "datasets", "functional", "get_num_threads", "optim",
    "parallel", "precompile", "schedules", "set_num_threads", "thread_limit",
    "threading_info",
]

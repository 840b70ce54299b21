"""BatchNorm's per-channel and per-element equations, written once for every backend.

The CPU kernels (:mod:`fastopt.batchnorm.kernels`) and the CUDA kernels
(:mod:`fastopt.batchnorm.cuda_kernels`) compile these plain functions (see
``fastopt._jit``). Per channel, in float64: ``inv = 1/√(σ² + ε)``, the running-statistics
update and the backward coefficients; per element, in x's dtype: the normalisation and
the input gradient. Equations: the package docstring of :mod:`fastopt.batchnorm`.
"""

import math

from .._jit import device


@device
def inv_std(var, eps):
    """``1/√(σ² + ε)``."""
    return 1.0 / math.sqrt(var + eps)


@device
def running_moments(r_mean, r_var, mean, var, m, unbias):
    """``r_μ ← (1 − m) r_μ + m μ``;  ``r_σ² ← (1 − m) r_σ² + m σ²·n/(n − 1)`` (float64)."""
    return (1.0 - m) * r_mean + m * mean, (1.0 - m) * r_var + m * (var * unbias)


@device
def backward_coefficients(gamma, inv, sd, sdx, n):
    """``(k1, k2, k3, dα, dβ)`` with ``dx = k1·dy − k3·(x − μ) − k2``: the backward
    ``dx = (α·inv/n)(n·dy − dβ − x̂·dα)`` expanded, ``dβ = Σdy``, ``dα = inv·Σdy(x − μ)``."""
    a = gamma * inv
    return a, a * sd / n, a * inv * inv * sdx / n, inv * sdx, sd


@device
def normalize(x, mu, scale, shift):
    """``y = (x − μ)·(α·inv) + β`` with ``scale = α·inv`` (x's dtype)."""
    return (x - mu) * scale + shift


@device
def input_gradient(dy, x, mu, k1, k2, k3):
    """``dx = k1·dy − k3·(x − μ) − k2`` (x's dtype)."""
    return k1 * dy - k3 * (x - mu) - k2

"""Annealed Gaussian gradient noise (spec, "Additional improvements").

``g ← g + N(0, σ_t²)``, ``σ_t² = η / (1 + t')^γ`` with ``t'`` the number of completed steps
(Neelakantan et al. 2015, "Adding gradient noise improves learning for very deep networks",
who used γ = 0.55 and η ∈ {0.01, 0.3, 1.0}; the first step has σ² = η, as
``optax.add_noise``). The noise comes from Philox4x32-10 keyed by ``seed``, with the counter
made of the step and the element's position, so a run is reproducible at any thread count
and across a checkpoint restart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._checks import check_nonneg, power


@dataclass(frozen=True)
class GradientNoise:
    """Annealed gradient noise: ``σ_t² = eta / (1 + t')^gamma``.

    Args:
        eta: the noise variance at the first step (η in the spec), >= 0.
        gamma: the annealing exponent (γ), >= 0; 0.55 as in Neelakantan et al.
        seed: a 64-bit key for the counter-based generator.
    """

    eta: float
    gamma: float = 0.55
    seed: int = 0

    def __post_init__(self) -> None:
        check_nonneg("GradientNoise.eta", self.eta)
        check_nonneg("GradientNoise.gamma", self.gamma)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"GradientNoise.seed must be an int, got {self.seed!r}")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"GradientNoise.seed must be in [0, 2**64), got {self.seed}")

    def variance(self, completed_steps: int) -> float:
        """σ² for the step after ``completed_steps`` (t') steps."""
        return self.eta / power(1.0 + completed_steps, self.gamma)

    def std(self, completed_steps: int) -> float:
        return math.sqrt(self.variance(completed_steps))

    @property
    def key(self) -> tuple[np.uint32, np.uint32]:
        """The Philox key words (low, high 32 bits of the seed)."""
        return np.uint32(self.seed & 0xFFFFFFFF), np.uint32(self.seed >> 32)

"""Counter-based random bits for stochastic rounding.

A value rounded stochastically needs a handful of uniform bits, not a normal sample: the
gradient noise's Philox4x32-10 and Box–Muller (``fastopt.philox``) cost tens of
multiplies per element. :func:`random_bits` hashes the element's position, the step, the
stream and the seed (folded in by multiplies by odd constants) with MurmurHash3's 32-bit
finaliser (Appleby), a bijection with full avalanche: a pure function of ``(seed, step,
element, stream)``, so the bits are the same at any thread count, after a restart and on
any backend. Rounding to bfloat16 takes 16 bits, so one word rounds two state values.
"""

from __future__ import annotations

import numpy as np

from .._jit import inline
from .bits import hash_word

_S32 = np.uint64(32)


@inline
def random_bits(k0, k1, step, index, stream):
    """32 uniform random bits for element ``index`` (uint64) at ``step`` (uint64) in
    ``stream`` (a small uint32: which value of the element is rounded), under the key
    ``(k0, k1)`` (uint32 words of the seed)."""
    return hash_word(np.uint32(index) ^ np.uint32(k1), np.uint32(index >> _S32), k0,
                     np.uint32(step), np.uint32(step >> _S32), stream)

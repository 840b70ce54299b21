"""Host-side (NumPy) conversions for checkpoints and state views: bfloat16 bits to
float32 and back, as the kernels do them (:mod:`fastopt.precision.formats`)."""

from __future__ import annotations

import numpy as np


def bf16_decode(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bits (uint16)."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def bf16_round_nearest(x: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) of float values, rounded to nearest even (NaN kept)."""
    b = np.ascontiguousarray(x, np.float32).view(np.uint32).astype(np.uint64)
    out = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(x, np.float32))
    out[nan] = ((b[nan] >> 16) | 0x40).astype(np.uint16)
    return out

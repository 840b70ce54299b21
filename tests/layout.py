"""The optimizer's state layout, as the tests read it back (one place for it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastopt.flat import ALIGNMENT


def fastopt_state(opt, arrays: Sequence[np.ndarray], name: str) -> list[np.ndarray]:
    """The state buffer ``name`` split back into one array per parameter.

    ``state_dict()`` holds one buffer over the optimizer's layout, where each array starts
    on an ``ALIGNMENT``-byte boundary."""
    buf = opt.state_dict()[f"state.{name}"]
    out, offset = [], 0
    for a in arrays:
        out.append(buf[offset : offset + a.size].reshape(a.shape))
        step = ALIGNMENT // a.dtype.itemsize
        offset += -(-a.size // step) * step
    assert buf.size == offset, "the optimizer's state layout is not the one this test expects"
    return out

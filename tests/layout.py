"""The optimizer's state layout as the tests read it back, and the parity tests' problem
(one place for each)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fastopt.flat import ALIGNMENT


def layout_offsets(params: Sequence[np.ndarray], dtype) -> list[int]:
    """Offsets of a list of arrays in an optimizer's state layout: each array starts on an
    ``ALIGNMENT``-byte boundary."""
    step = ALIGNMENT // np.dtype(dtype).itemsize
    out, offset = [], 0
    for p in params:
        out.append(offset)
        offset += -(-p.size // step) * step
    return out


def fastopt_state(opt, arrays: Sequence[np.ndarray], name: str) -> list[np.ndarray]:
    """The state buffer ``name`` split back into one array per parameter (``state_dict()``
    holds one buffer over the optimizer's layout)."""
    buf = opt.state_dict()[f"state.{name}"]
    # one more offset, of an empty array after the last: where the layout ends
    offsets = layout_offsets([*arrays, np.empty(0, buf.dtype)], buf.dtype)
    assert buf.size == offsets[-1], "the optimizer's state layout is not the one this test expects"
    return [buf[lo : lo + a.size].reshape(a.shape)
            for lo, a in zip(offsets, arrays, strict=False)]


#: The parity tests' problem (tests/test_torch_parity.py, tests/test_optax_parity.py): steps,
#: several arrays of different ranks and sizes (3731 elements), one big single array, and
#: the tolerances for fastopt's results against the yardstick's.
STEPS = 20
LIST_SHAPES = [(1500,), (40, 50), (7, 3, 11)]
SINGLE_SHAPE = (3000,)
TOL = {
    np.float32: {"rtol": 1e-5, "atol": 2e-6},
    np.float64: {"rtol": 1e-10, "atol": 1e-12},
}

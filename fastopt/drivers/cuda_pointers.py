"""Element loads and stores through raw device addresses, for kernels that step many
arrays in one launch (``cuda.step_table``): a table row holds each array's address, so the
launch takes one small table instead of every array as a kernel argument.

:func:`load_at` and :func:`store_at` are LLVM ``inttoptr`` + ``getelementptr`` intrinsics
on a GPU (NVVM turns the generic pointer into ``ld.global``/``st.global``); under Numba's
CUDA simulator, where device arrays are host memory, they are the same reads and writes
through ctypes. :func:`gather_at`/:func:`scatter_at` are ``_state.gather``/``scatter`` for a
tuple of addresses.
"""

from __future__ import annotations

import ctypes

import numpy as np
from numba import config, types
from numba.extending import overload

from ._state import unrolled

if config.ENABLE_CUDASIM:

    def load_at(addr, i, proto):
        """``proto.dtype`` element ``i`` of the array at device address ``addr``."""
        dt = np.dtype(proto.dtype)
        raw = (ctypes.c_char * dt.itemsize).from_address(int(addr) + int(i) * dt.itemsize)
        return np.frombuffer(raw, dt)[0]

    def store_at(addr, i, value):
        """Element ``i`` of the array at ``addr`` (of ``value``'s dtype) = ``value``."""
        value = np.asarray(value)
        raw = (ctypes.c_char * value.itemsize).from_address(
            int(addr) + int(i) * value.itemsize)
        np.frombuffer(raw, value.dtype)[0] = value

else:
    try:
        from numba.cuda.extending import intrinsic
    except ImportError:  # numba-cuda before its own extending module
        from numba.core.extending import intrinsic

    def _element_pointer(context, builder, dtype, addr, i):
        ptr = builder.inttoptr(addr, context.get_value_type(dtype).as_pointer())
        return builder.gep(ptr, [i], inbounds=True)

    @intrinsic
    def load_at(typingctx, addr, i, proto):
        def codegen(context, builder, signature, args):
            return builder.load(_element_pointer(context, builder, proto.dtype, args[0],
                                                 args[1]))
        return proto.dtype(addr, i, proto), codegen

    @intrinsic
    def store_at(typingctx, addr, i, value):
        def codegen(context, builder, signature, args):
            builder.store(args[2], _element_pointer(context, builder, value, args[0], args[1]))
            return context.get_dummy_value()
        return types.void(addr, i, value), codegen


def _unrolled(n: int, params: str, body: str, item: str):
    """:func:`._state.unrolled` with :func:`load_at` and :func:`store_at` in scope."""
    return unrolled(n, params, body, item, {"load_at": load_at, "store_at": store_at})


def gather_at(addrs, i, proto):
    """``(load_at(addrs[0], i, proto), ...)``: one element of each state array."""
    return tuple(load_at(a, i, proto) for a in addrs)


@overload(gather_at, inline="always")
def _gather_at(addrs, i, proto):
    return _unrolled(len(addrs), "addrs, i, proto", "return ({items})",
                     "load_at(addrs[{k}], i, proto), ")


def scatter_at(addrs, i, s):
    """``store_at(addrs[k], i, s[k])`` for every state array."""
    for a, x in zip(addrs, s, strict=True):
        store_at(a, i, x)


@overload(scatter_at, inline="always")
def _scatter_at(addrs, i, s):
    return _unrolled(len(addrs), "addrs, i, s", "pass{items}",
                     "; store_at(addrs[{k}], i, s[{k}])")


def row(table, j, cols):
    """``(table[j, cols[0]], ...)``: the addresses of array ``j``'s state arrays."""
    return tuple(table[j, c] for c in cols)


@overload(row, inline="always")
def _row(table, j, cols):
    return _unrolled(len(cols), "table, j, cols", "return ({items})",
                     "table[j, cols[{k}]], ")

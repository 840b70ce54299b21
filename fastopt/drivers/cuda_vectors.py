"""16-byte loads and stores for the CUDA step kernel: four consecutive elements of an
array in one instruction (``ld.global.v4.f32``; two ``v2.f64`` for float64), as torch's
fused optimizers load them.

A GPU moves memory in 32-byte sectors whatever the instruction, but each load instruction
waits on its own: four elements per instruction keep four times as many bytes in flight
per thread, which is what a bandwidth-bound kernel needs on an H100/H200. The loads need
16-byte aligned addresses: the step kernel checks its arrays' addresses once per thread
(:func:`address_of`) and takes the scalar loop when any is not aligned.

On a GPU these are LLVM intrinsics (a ``<4 x T>`` load or store with ``align 16`` through
a global-space pointer); under Numba's CUDA simulator, the same reads and writes as
tuples of elements.
"""

from __future__ import annotations

from numba import config, types

from .._jit import overload_inline
from ._state import unrolled

#: Elements per vector load.
LANES = 4

if config.ENABLE_CUDASIM:

    def address_of(a):
        """The address of ``a``'s first element (the simulator's host memory)."""
        import numpy as np

        return int(np.asarray(a).__array_interface__["data"][0])

    def load4(a, j):
        """``(a[j], a[j + 1], a[j + 2], a[j + 3])`` in one 16-byte-aligned load."""
        return (a[j], a[j + 1], a[j + 2], a[j + 3])

    def store4(a, j, v):
        """``a[j:j + 4] = v`` in one 16-byte-aligned store."""
        a[j] = v[0]
        a[j + 1] = v[1]
        a[j + 2] = v[2]
        a[j + 3] = v[3]

else:
    from llvmlite import ir

    try:
        from numba.cuda.extending import intrinsic
    except ImportError:  # numba-cuda before its own extending module
        from numba.core.extending import intrinsic

    def _vector_pointer(context, builder, arrty, arr, j):
        """``&a[j]`` as a global-space pointer to ``<4 x T>``."""
        data = context.make_array(arrty)(context, builder, value=arr).data
        ptr = builder.gep(data, [j], inbounds=True)
        vty = ir.VectorType(context.get_value_type(arrty.dtype), LANES)
        return builder.addrspacecast(builder.bitcast(ptr, vty.as_pointer()),
                                     vty.as_pointer(1))

    @intrinsic
    def address_of(typingctx, a):
        def codegen(context, builder, signature, args):
            data = context.make_array(a)(context, builder, value=args[0]).data
            return builder.ptrtoint(data, ir.IntType(64))
        return types.int64(a), codegen

    @intrinsic
    def load4(typingctx, a, j):
        ret = types.UniTuple(a.dtype, LANES)

        def codegen(context, builder, signature, args):
            vec = builder.load(_vector_pointer(context, builder, a, args[0], args[1]),
                               align=16)
            items = [builder.extract_element(vec, ir.Constant(ir.IntType(32), k))
                     for k in range(LANES)]
            return context.make_tuple(builder, ret, items)
        return ret(a, j), codegen

    @intrinsic
    def store4(typingctx, a, j, v):
        def codegen(context, builder, signature, args):
            ptr = _vector_pointer(context, builder, a, args[0], args[1])
            vec = ir.Constant(ptr.type.pointee, ir.Undefined)
            for k in range(LANES):
                vec = builder.insert_element(vec, builder.extract_value(args[2], k),
                                             ir.Constant(ir.IntType(32), k))
            builder.store(vec, ptr, align=16)
            return context.get_dummy_value()
        return types.void(a, j, types.UniTuple(a.dtype, LANES)), codegen


def _unrolled(n: int, params: str, body: str, item: str):
    return unrolled(n, params, body, item, {"load4": load4, "store4": store4,
                                            "address_of": address_of})


def gather4(st, j):
    """``(load4(st[0], j), ...)``: four elements of each state array."""
    return tuple(load4(a, j) for a in st)


@overload_inline(gather4)
def _gather4(st, j):
    return _unrolled(len(st), "st, j", "return ({items})", "load4(st[{k}], j), ")


def lane(sv, q):
    """``(sv[0][q], sv[1][q], ...)``: lane ``q`` of each state array's four elements."""
    return tuple(v[q] for v in sv)


@overload_inline(lane)
def _lane(sv, q):
    return unrolled(len(sv), "sv, q", "return ({items})", "sv[{k}][q], ")


def scatter4(st, j, s0, s1, s2, s3):
    """``st[k][j:j + 4] = (s0[k], s1[k], s2[k], s3[k])`` for every state array (``s0``:
    the state tuple of element ``j``, and so on)."""
    for k, a in enumerate(st):
        store4(a, j, (s0[k], s1[k], s2[k], s3[k]))


@overload_inline(scatter4)
def _scatter4(st, j, s0, s1, s2, s3):
    return _unrolled(len(st), "st, j, s0, s1, s2, s3", "pass{items}",
                     "; store4(st[{k}], j, (s0[{k}], s1[{k}], s2[{k}], s3[{k}]))")


def misaligned(p, g, st):
    """The low four bits of any of the arrays' addresses: 0 when every array may be read
    and written 16 bytes at a time."""
    bits = address_of(p) | address_of(g)
    for a in st:
        bits |= address_of(a)
    return bits & 15


@overload_inline(misaligned)
def _misaligned(p, g, st):
    return _unrolled(len(st), "p, g, st",
                     "return (address_of(p) | address_of(g){items}) & 15",
                     " | address_of(st[{k}])")

"""16-byte loads and stores for the CUDA step kernel: four consecutive elements of an
array in one instruction (``ld.global.v4.f32``; two ``v2.f64`` for float64), as torch's
fused optimizers load them.

A GPU moves memory in 32-byte sectors whatever the instruction, but each load instruction
waits on its own: four elements per instruction keep four times as many bytes in flight
per thread, which is what a bandwidth-bound kernel needs on an H100/H200. The loads need
16-byte aligned addresses: the step kernel checks its arrays' addresses once per thread
(:func:`address_of`) and takes the scalar loop when any is not aligned.

On a GPU these are LLVM intrinsics (a ``<4 x T>`` load or store with ``align 16`` through
a global-space pointer), of an array or (``*_at``, for the one-launch step over many
arrays) of a device address; under Numba's CUDA simulator, the same reads and writes as
tuples of elements.
"""

from __future__ import annotations

from numba import config, types

from .._jit import overload_inline
from ._state import unrolled
from .cuda_pointers import load_at, store_at

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

    def load4_at(addr, i, proto):
        """:func:`load4` of the array of ``proto``'s dtype at device address ``addr``."""
        return tuple(load_at(addr, i + k, proto) for k in range(LANES))

    def store4_at(addr, i, v):
        """:func:`store4` into the array at device address ``addr``."""
        for k in range(LANES):
            store_at(addr, i + k, v[k])

else:
    from llvmlite import ir

    try:
        from numba.cuda.extending import intrinsic
    except ImportError:  # numba-cuda before its own extending module
        from numba.core.extending import intrinsic

    def _global_vector(context, builder, dtype, ptr):
        """``ptr`` (to ``dtype``) as a global-space pointer to ``<4 x dtype>``."""
        vty = ir.VectorType(context.get_value_type(dtype), LANES)
        return builder.addrspacecast(builder.bitcast(ptr, vty.as_pointer()),
                                     vty.as_pointer(1))

    def _vector_pointer(context, builder, arrty, arr, j):
        """``&a[j]`` as a global-space pointer to ``<4 x T>``."""
        data = context.make_array(arrty)(context, builder, value=arr).data
        return _global_vector(context, builder, arrty.dtype,
                              builder.gep(data, [j], inbounds=True))

    def _address_pointer(context, builder, dtype, addr, i):
        """Element ``i`` of the ``dtype`` array at device address ``addr``, as a
        global-space pointer to ``<4 x dtype>``."""
        ptr = builder.inttoptr(addr, context.get_value_type(dtype).as_pointer())
        return _global_vector(context, builder, dtype, builder.gep(ptr, [i], inbounds=True))

    def _load(context, builder, ptr, ret):
        vec = builder.load(ptr, align=16)
        items = [builder.extract_element(vec, ir.Constant(ir.IntType(32), k))
                 for k in range(LANES)]
        return context.make_tuple(builder, ret, items)

    def _store(context, builder, ptr, value):
        vec = ir.Constant(ptr.type.pointee, ir.Undefined)
        for k in range(LANES):
            vec = builder.insert_element(vec, builder.extract_value(value, k),
                                         ir.Constant(ir.IntType(32), k))
        builder.store(vec, ptr, align=16)
        return context.get_dummy_value()

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
            return _load(context, builder,
                         _vector_pointer(context, builder, a, args[0], args[1]), ret)
        return ret(a, j), codegen

    @intrinsic
    def store4(typingctx, a, j, v):
        def codegen(context, builder, signature, args):
            return _store(context, builder,
                          _vector_pointer(context, builder, a, args[0], args[1]), args[2])
        return types.void(a, j, types.UniTuple(a.dtype, LANES)), codegen

    @intrinsic
    def load4_at(typingctx, addr, i, proto):
        ret = types.UniTuple(proto.dtype, LANES)

        def codegen(context, builder, signature, args):
            return _load(context, builder,
                         _address_pointer(context, builder, proto.dtype, args[0], args[1]),
                         ret)
        return ret(addr, i, proto), codegen

    @intrinsic
    def store4_at(typingctx, addr, i, v):
        def codegen(context, builder, signature, args):
            ptr = _address_pointer(context, builder, v.dtype, args[0], args[1])
            return _store(context, builder, ptr, args[2])
        return types.void(addr, i, v), codegen


def _unrolled(n: int, params: str, body: str, item: str):
    return unrolled(n, params, body, item, {"load4": load4, "store4": store4,
                                            "load4_at": load4_at, "store4_at": store4_at,
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


# ---------------------------------------------------- arrays by address (the table step)
def gather4_at(addrs, i, proto):
    """``(load4_at(addrs[0], i, proto), ...)``: four elements of each state array."""
    return tuple(load4_at(a, i, proto) for a in addrs)


@overload_inline(gather4_at)
def _gather4_at(addrs, i, proto):
    return _unrolled(len(addrs), "addrs, i, proto", "return ({items})",
                     "load4_at(addrs[{k}], i, proto), ")


def scatter4_at(addrs, i, s0, s1, s2, s3):
    """:func:`scatter4` into the state arrays at addresses ``addrs``."""
    for k, a in enumerate(addrs):
        store4_at(a, i, (s0[k], s1[k], s2[k], s3[k]))


@overload_inline(scatter4_at)
def _scatter4_at(addrs, i, s0, s1, s2, s3):
    return _unrolled(len(addrs), "addrs, i, s0, s1, s2, s3", "pass{items}",
                     "; store4_at(addrs[{k}], i, (s0[{k}], s1[{k}], s2[{k}], s3[{k}]))")


def misaligned_at(pa, ga, addrs):
    """:func:`misaligned` for arrays given by their addresses."""
    bits = pa | ga
    for a in addrs:
        bits |= a
    return bits & 15


@overload_inline(misaligned_at)
def _misaligned_at(pa, ga, addrs):
    return _unrolled(len(addrs), "pa, ga, addrs", "return (pa | ga{items}) & 15",
                     " | addrs[{k}]")

"""Arrays on the stack for compiled kernels' scratch: `stack_empty(8, numpy.int64)` in a
Numba function is an uninitialised array of 8 int64 in its stack frame.

A kernel's `numpy.empty` is a malloc and a free at every call, and the team's threads call the
kernels a chunk at a time: at batch 1 resnet8's 12 steps make about twenty kernel calls an image
(each convolution's four arrays of scratch: four mallocs), two threads at once, on one malloc
arena (`backend.keep_freed_memory`), whose lock and free lists then move between the cores at
each. A stack array costs nothing. The size must be a constant of the source (an integer
literal), the array must not outlive the call (it has no owner), and its data is aligned to 64
bytes (a cache line, a 512-bit vector). Importing this module imports Numba.
"""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _item_type(dtype):
    """The item type of a dtype argument: `x.dtype` in a kernel, or a NumPy scalar type."""
    if isinstance(dtype, types.DType):
        return dtype.dtype
    if isinstance(dtype, types.NumberClass):
        return dtype.instance_type
    return None


@intrinsic(prefer_literal=True)
def stack_empty(typingctx, count, dtype):
    """An uninitialised C-contiguous array of `count` items of `dtype` on the stack."""
    item = _item_type(dtype)
    if not isinstance(count, types.IntegerLiteral) or item is None or count.literal_value < 1:
        return None  # (Numba then says no signature matches these arguments)
    length = count.literal_value
    array_type = types.Array(item, 1, "C")

    def codegen(context, builder, signature, args):
        value_type = context.get_data_type(item)
        data = cgutils.alloca_once(builder, value_type, size=length)  # in the entry block
        data.align = 64
        itemsize = context.get_abi_sizeof(value_type)
        intp = context.get_value_type(types.intp)
        array = context.make_array(array_type)(context, builder)
        context.populate_array(array, data=data, shape=[intp(length)],
                               strides=[intp(itemsize)], itemsize=intp(itemsize), meminfo=None)
        return array._getvalue()

    return array_type(count, dtype), codegen

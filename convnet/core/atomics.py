"""What compiled (Numba) code needs to share work between threads without the GIL: atomic
loads, stores, compare-and-swaps and adds on int64 arrays, a CPU pause for spin loops, arrays
at raw addresses, and calls through a function's address.

Numba has none of these: a plain load in a spin loop may be hoisted out of it by LLVM, and
its arrays cannot be handed between threads other than through memory. Each is an LLVM
instruction (`convnet.core.team` is the one user). Importing this module imports Numba.
"""

from __future__ import annotations

import platform

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_ORDER = "seq_cst"  # the strongest ordering: the team's handshakes are few, not hot


def _address(context, builder, array_type, array, index):
    """The pointer to array[index] (an int64 array, no bounds check)."""
    ary = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, ary, [index])


@intrinsic
def load(typingctx, array, index):
    """array[index], read atomically (and never hoisted out of a loop)."""
    def codegen(context, builder, signature, args):
        pointer = _address(context, builder, signature.args[0], *args)
        return builder.load_atomic(pointer, _ORDER, 8)
    return types.int64(array, types.intp), codegen


@intrinsic
def store(typingctx, array, index, value):
    """array[index] = value, atomically."""
    def codegen(context, builder, signature, args):
        pointer = _address(context, builder, signature.args[0], args[0], args[1])
        builder.store_atomic(args[2], pointer, _ORDER, 8)
        return context.get_dummy_value()
    return types.void(array, types.intp, types.int64), codegen


@intrinsic
def fetch_add(typingctx, array, index, value):
    """array[index] += value atomically; returns the value before."""
    def codegen(context, builder, signature, args):
        pointer = _address(context, builder, signature.args[0], args[0], args[1])
        return builder.atomic_rmw("add", pointer, args[2], _ORDER)
    return types.int64(array, types.intp, types.int64), codegen


@intrinsic
def compare_swap(typingctx, array, index, expected, value):
    """If array[index] == expected, set it to value; True when it did (atomically)."""
    def codegen(context, builder, signature, args):
        pointer = _address(context, builder, signature.args[0], args[0], args[1])
        result = builder.cmpxchg(pointer, args[2], args[3], _ORDER, _ORDER)
        return builder.extract_value(result, 1)
    return types.boolean(array, types.intp, types.int64, types.int64), codegen


# The spin-wait hint as an LLVM intrinsic (Numba's JIT assembles no inline asm).
_PAUSE = {"x86_64": "llvm.x86.sse2.pause", "AMD64": "llvm.x86.sse2.pause",
          "i686": "llvm.x86.sse2.pause"}.get(platform.machine())


@intrinsic
def pause(typingctx):
    """A spin-wait hint to the CPU (x86 `pause`; nothing elsewhere): the spinning core leaves
    its sibling the pipeline and exits the loop without a memory-order stall."""
    def codegen(context, builder, signature, args):
        if _PAUSE:
            function = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), []), _PAUSE)
            builder.call(function, [])
        return context.get_dummy_value()
    return types.void(), codegen


def _pointer_at(dtype):
    pointer_type = types.CPointer(dtype)

    def typer(typingctx, address):
        def codegen(context, builder, signature, args):
            return builder.inttoptr(args[0], context.get_value_type(pointer_type))
        return pointer_type(types.int64), codegen
    return typer


# Pointers from raw addresses: numba.carray(float32_at(address), count) is an array there.
float32_at = intrinsic(_pointer_at(types.float32))
float64_at = intrinsic(_pointer_at(types.float64))
int64_at = intrinsic(_pointer_at(types.int64))
boolean_at = intrinsic(_pointer_at(types.boolean))
uint8_at = intrinsic(_pointer_at(types.uint8))


@intrinsic
def call_task(typingctx, function, ints, floats):
    """Call the C function at address `function`, void f(int64 *ints, double *floats)."""
    def codegen(context, builder, signature, args):
        int_pointer = ir.IntType(64).as_pointer()
        float_pointer = ir.DoubleType().as_pointer()
        function_type = ir.FunctionType(ir.VoidType(), [int_pointer, float_pointer])
        target = builder.inttoptr(args[0], function_type.as_pointer())
        builder.call(target, [builder.inttoptr(args[1], int_pointer),
                              builder.inttoptr(args[2], float_pointer)])
        return context.get_dummy_value()
    return types.void(types.int64, types.int64, types.int64), codegen

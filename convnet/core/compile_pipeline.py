"""Numba's compiler for convnet's generated kernels (`convnet.core.blocked`), without its SSA
reconstruction pass.

The kernels are long written-out code: register tiles of up to 64 accumulators, each assigned
again at every tap, in functions of hundreds of blocks. Numba's ReconstructSSA pass, which gives
each assignment its own name, costs about the variables assigned more than once times the
blocks: 14.5 s (and 2.1 s more removing its phi nodes) of the 43 s a conv tile module of 8 x 4
took to compile, all of it repeated on every machine and in every fresh cache. LLVM builds its
own SSA form from the same code (mem2reg), so the machine code comes out the same: compared
instruction for instruction on every blocked module the test suite makes (conv 4x3 to 8x4, the
span and row kernels, weight gradients, Winograd, depthwise, merge, pooling), each compiled with
and without the pass, 6-52 s against 4-37 s a module (2026-12-03).

Without the pass a variable has one type for all its assignments, so the kernel templates never
give one name both a loop's int64 and an INDEX (uint64): Numba would unify the two into float64,
and an array indexed with it fails to compile (loudly, never a slower kernel).
"""

from __future__ import annotations

from numba.core.compiler import Compiler


class WithoutSSA(Compiler):
    """Numba's default nopython pipeline with its `enable_ssa` flag off."""

    def define_pipelines(self):
        self.state.flags.enable_ssa = False
        return super().define_pipelines()

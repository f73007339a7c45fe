"""A second core for the test session's compiling (started by conftest.py, one child process).

On a machine whose kernel cache is empty, the suite compiles about 70 kernel modules, one at a
time as its tests first need them: about 12 of its 20-odd minutes there. This child compiles
the same modules from the ones the suite needs last backwards while the tests run, each module
under its lock (`convnet.core.kernels.module_lock`), so that no module is compiled twice: a test
that needs one the child is on waits for it; the child passes over a blocked module a test holds
and, for the other kinds, waits for the test and loads what it compiled. With the cache filled
it finds every module compiled and exits within seconds (3.4 s here).

MODULES is in the order the suite first needed them (a run on an empty cache, Zen 3 host); one
the suite does not need on a CPU (another CPU's tiles, a window size hypothesis did not draw)
only costs this child's time. `python tests/precompile.py` runs it by hand.
"""

from __future__ import annotations

import os
import sys

import numpy

F32, F64 = numpy.float32, numpy.float64


def _blocked(kind, tile=None, dtype=F32):
    def load():
        from convnet.core import blocked

        blocked.compiled(kind, dtype, tile, wait=False)  # held by a test: that test does it
    return load


def _depthwise(taps):  # (more than depthwise_kernels.MAX_UNROLLED_TAPS: the looping one)
    def load():
        from convnet.core import depthwise_kernels

        depthwise_kernels._compiled(taps)
    return load


def _pool(kh, kw, dtype=F32):
    def load():
        from convnet.core import pool_kernels

        pool_kernels._compiled((kh, kw), dtype)
    return load


def _tiled(dtype, tile):
    def load():
        from convnet.core import kernels

        kernels._kernel(dtype, tile)
    return load


def _per_dtype(module: str, dtype):
    def load():
        import importlib

        importlib.import_module(f"convnet.core.{module}")._compiled(dtype)
    return load


def _team():
    from convnet.core import team

    team._compiled()


MODULES = [
    _per_dtype("activation_kernels", F32), _team, _blocked("weight_grad", (2, 4)),
    _blocked("weight_grad", (4, 4)),
    _blocked("merge"), _blocked("conv", (6, 2)), _blocked("conv_rows", (8, 1)),
    _blocked("conv_rows_filters", (16, 1)),
    _per_dtype("activation_kernels", F64), _per_dtype("batchnorm_kernels", F32),
    _tiled(F32, (8, 8)), _tiled(F64, (8, 8)), _blocked("conv", (8, 2)),
    _blocked("weight_grad", (2,)), _blocked("weight_grad", (4,)), _blocked("conv", (8, 4)),
    _blocked("pool"),
    _blocked("conv", (8, 1)), _blocked("winograd"),
    *[_depthwise(taps) for taps in (9, 6, 10, 15, 12, 16, 2, 4, 5, 1, 25, 64, 3)],
    _pool(4, 4, F64), _pool(4, 1), _pool(2, 2), _pool(1, 2), _pool(1, 2, F64),
    _pool(1, 1, F64), _pool(1, 1), _pool(2, 1), _pool(3, 3, F64), _pool(3, 3),
    _per_dtype("gate_kernels", F32), _per_dtype("gate_kernels", F64), _pool(2, 2, F64),
    _per_dtype("resize_kernels", F32), _per_dtype("resize_kernels", F64),
    _per_dtype("batchnorm_kernels", F64), _blocked("conv", (4, 3)),
    _blocked("depthwise", (4, 3, 3)), _blocked("depthwise", (8,)), _blocked("conv", (6, 4)),
    _blocked("conv", (7, 2)), _blocked("conv", (7, 4)), _blocked("conv_span", (16, 2, 1)),
    _blocked("conv_span", (16, 2, 8)), _tiled(F32, (4, 16)), _tiled(F64, (4, 16)),
    _pool(5, 5), _pool(2, 3), _pool(3, 2), _pool(4, 2), _pool(4, 4), _pool(2, 4), _pool(3, 4),
    _pool(1, 3), _pool(3, 1), _pool(3, 2, F64), _pool(2, 3, F64), _depthwise(8), _pool(4, 3),
]


def main() -> None:
    session = int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()
    for load in reversed(MODULES):
        if os.getppid() != session:  # the session was killed: nobody to compile for
            return
        try:
            load()
        except Exception as error:  # noqa: BLE001 (the tests that need it will fail on it)
            print(f"tests/precompile.py: {error!r}", file=sys.stderr)


if __name__ == "__main__":
    main()

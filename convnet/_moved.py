"""Module paths from before the package had floors, kept working: `import convnet.onnx`,
`from convnet.train import Trainer` and the like load the module's new home (the same module
object, not a copy), so user code and saved scripts keep running.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

# old path -> new path
MOVED = {
    "convnet.activations": "convnet.nn.activations",
    "convnet.arithmetic": "convnet.core.arithmetic",
    "convnet.backend": "convnet.core.backend",
    "convnet.checkpoint": "convnet.io.checkpoint",
    "convnet.conv": "convnet.nn.conv",
    "convnet.distributed": "convnet.training.distributed",
    "convnet.errors": "convnet.core.errors",
    "convnet.init": "convnet.nn.init",
    "convnet.kernels": "convnet.core.kernels",
    "convnet.layer": "convnet.nn.layer",
    "convnet.linear": "convnet.nn.linear",
    "convnet.losses": "convnet.nn.losses",
    "convnet.metrics": "convnet.training.metrics",
    "convnet.model": "convnet.nn.containers",
    "convnet.modelfile": "convnet.io.modelfile",
    "convnet.normalization": "convnet.nn.batchnorm",
    "convnet.onnx": "convnet.io.onnx",
    "convnet.onnx.export": "convnet.io.onnx.export",
    "convnet.onnx.importer": "convnet.io.onnx.importer",
    "convnet.parameter": "convnet.nn.parameter",
    "convnet.pooling": "convnet.nn.pooling",
    "convnet.random": "convnet.core.rng",
    "convnet.reference": "convnet.core.reference",
    "convnet.schedules": "convnet.optim.schedules",
    "convnet.spec": "convnet.io.spec",
    "convnet.summary": "convnet.nn.summary",
    "convnet.torch_weights": "convnet.io.torch_weights",
    "convnet.train": "convnet.training.trainer",
    "convnet.zoo": "convnet.io.zoo",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        # A package's moved submodules go into sys.modules with it: importing one later then
        # finds it there, and the import system does not set it as an attribute of the package
        # (`convnet.onnx.export` would otherwise replace the function cn.onnx.export).
        for old, new in MOVED.items():
            if old.startswith(spec.name + "."):
                sys.modules.setdefault(old, importlib.import_module(new))
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module):
        pass  # already executed under its new name


def install() -> None:
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Alias())  # before the path finder, which would load a copy

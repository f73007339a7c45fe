"""convnet: a convolutional neural network framework you can see through.

    import convnet as cn
    model = cn.Sequential(cn.Conv2d(3, 10, 5, padding=2), cn.ReLU(), cn.MaxPool2d(2),
                          cn.Flatten(), cn.Linear(10 * 16 * 16, 10))
    model.summary((3, 32, 32))

The package is built in floors, each importing only those below it: `core` (arrays, kernels,
arithmetic), `nn` (layers and models), `optim`, `data`, `io` (model files, checkpoints, ONNX,
PyTorch weights), `training`, and the product on top (`cli`, `viz`, `web`).
"""

from convnet import _moved
from convnet.core import reference
from convnet.core.arithmetic import ReceptiveField, conv_output_size, window_output
from convnet.core.errors import ShapeError
from convnet.core.rng import manual_seed
from convnet.io.checkpoint import LoadedModel, load
from convnet.io.torch_weights import load_torch_weights, save_torch_weights
from convnet.nn import init
from convnet.nn.activations import (
    ELU,
    GELU,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSoftmax,
    PReLU,
    ReLU,
    ReLU6,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from convnet.nn.batchnorm import BatchNorm2d
from convnet.nn.constant import Constant
from convnet.nn.containers import Residual, Sequential
from convnet.nn.conv import Conv2d
from convnet.nn.conv_transpose import ConvTranspose2d
from convnet.nn.gradcheck import gradcheck
from convnet.nn.graph import Model
from convnet.nn.layer import Layer, no_grad
from convnet.nn.linear import Dropout, Flatten, Linear
from convnet.nn.losses import CrossEntropyLoss, MultiClassHingeLoss, SVMLoss
from convnet.nn.matmul import MatMul
from convnet.nn.merge import Add, Concat, Div, Mul, Sub
from convnet.nn.normalization import LayerNorm, LocalResponseNorm
from convnet.nn.padding import Pad, ZeroPad2d
from convnet.nn.parameter import Parameter
from convnet.nn.pixel_shuffle import DepthToSpace, PixelShuffle, PixelUnshuffle, SpaceToDepth
from convnet.nn.pointwise import Abs, Erf, Exp, Log, Neg, Pow, Reciprocal, Sqrt
from convnet.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from convnet.nn.reduce import ReduceMax, ReduceMean, ReduceSum
from convnet.nn.reshape import Permute, Reshape
from convnet.nn.resize import Resize, Upsample
from convnet.nn.slice import Slice
from convnet.nn.split import Split
from convnet.nn.summary import Summary, summarize
from convnet.nn.symbolic import Input
from convnet.optim.optimizers import SGD, Adam, AdamW, Optimizer, clip_grad_norm_
from convnet.optim.schedules import ConstantLR, CosineAnnealingLR, LinearWarmup, StepLR
from convnet.version import __version__

_moved.install()

# Heavier parts load on first use: `cn.onnx.export(...)`, `cn.data.load_dataset(...)`.
_LAZY_SUBMODULES = {
    "onnx": "convnet.io.onnx", "data": "convnet.data", "zoo": "convnet.io.zoo",
    "viz": "convnet.viz", "modelfile": "convnet.io.modelfile", "spec": "convnet.io.spec",
    "train": "convnet.training.trainer", "training": "convnet.training",
    "distributed": "convnet.training.distributed", "checkpoint": "convnet.io.checkpoint",
}


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(_LAZY_SUBMODULES[name])
    raise AttributeError(f"module 'convnet' has no attribute {name!r}")


__all__ = [
    "Add", "Concat", "Div", "Input", "Model", "Mul", "Sub",
    "Abs", "Constant", "Erf", "Exp", "LayerNorm", "LocalResponseNorm", "Log", "MatMul", "Neg",
    "Permute", "Pow", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceSum", "Reshape", "Slice",
    "Split", "Sqrt",
    "Adam", "AdamW", "AvgPool2d", "BatchNorm2d", "ConstantLR", "Conv2d", "ConvTranspose2d",
    "CosineAnnealingLR",
    "CrossEntropyLoss", "Dropout", "Flatten", "GlobalAvgPool2d", "Layer", "LeakyReLU",
    "Linear", "LinearWarmup", "LoadedModel", "MaxPool2d", "MultiClassHingeLoss", "Optimizer",
    "Parameter", "load", "load_torch_weights", "save_torch_weights",
    "ReLU", "ReceptiveField", "Residual", "SGD", "SVMLoss", "Sequential", "ShapeError",
    "Sigmoid", "Softmax", "StepLR", "Summary", "Tanh", "clip_grad_norm_", "conv_output_size",
    "__version__", "gradcheck", "init", "manual_seed", "no_grad", "reference", "summarize",
    "window_output",
    # resizing, pixel rearrangement, padding and further activations (graph and ONNX models)
    "DepthToSpace", "ELU", "GELU", "Hardsigmoid", "Hardswish", "Hardtanh", "LogSoftmax", "PReLU",
    "Pad", "PixelShuffle", "PixelUnshuffle", "ReLU6", "Resize", "SiLU", "SpaceToDepth", "Upsample",
    "ZeroPad2d",
]

"""convnet: a convolutional neural network framework you can see through.

    import convnet as cn
    model = cn.Sequential(cn.Conv2d(3, 10, 5, padding=2), cn.ReLU(), cn.MaxPool2d(2),
                          cn.Flatten(), cn.Linear(10 * 16 * 16, 10))
    model.summary((3, 32, 32))
"""

from convnet import init, reference
from convnet.activations import LeakyReLU, ReLU, Sigmoid, Softmax, Tanh
from convnet.arithmetic import ReceptiveField, conv_output_size, window_output
from convnet.checkpoint import LoadedModel, load
from convnet.conv import Conv2d
from convnet.errors import ShapeError
from convnet.layer import Layer, no_grad
from convnet.linear import Dropout, Flatten, Linear
from convnet.losses import CrossEntropyLoss, MultiClassHingeLoss, SVMLoss
from convnet.model import Residual, Sequential
from convnet.normalization import BatchNorm2d
from convnet.optim import SGD, Adam, AdamW, Optimizer, clip_grad_norm_
from convnet.parameter import Parameter
from convnet.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from convnet.random import manual_seed
from convnet.schedules import ConstantLR, CosineAnnealingLR, LinearWarmup, StepLR
from convnet.summary import Summary, summarize
from convnet.torch_weights import load_torch_weights, save_torch_weights

__version__ = "0.1.0"

# Heavier parts load on first use: `cn.onnx.export(...)`, `cn.data.load_dataset(...)`.
_LAZY_SUBMODULES = {"onnx", "data", "zoo", "viz", "modelfile", "spec", "train", "distributed"}


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"convnet.{name}")
    raise AttributeError(f"module 'convnet' has no attribute {name!r}")


__all__ = [
    "Adam", "AdamW", "AvgPool2d", "BatchNorm2d", "ConstantLR", "Conv2d", "CosineAnnealingLR",
    "CrossEntropyLoss", "Dropout", "Flatten", "GlobalAvgPool2d", "Layer", "LeakyReLU",
    "Linear", "LinearWarmup", "LoadedModel", "MaxPool2d", "MultiClassHingeLoss", "Optimizer",
    "Parameter", "load", "load_torch_weights", "save_torch_weights",
    "ReLU", "ReceptiveField", "Residual", "SGD", "SVMLoss", "Sequential", "ShapeError",
    "Sigmoid", "Softmax", "StepLR", "Summary", "Tanh", "clip_grad_norm_", "conv_output_size",
    "init", "manual_seed", "no_grad", "reference", "summarize", "window_output",
]

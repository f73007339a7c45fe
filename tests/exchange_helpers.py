"""Shared by the ONNX and PyTorch-weights tests: runners, inputs, random models, torch twins."""

from __future__ import annotations

import functools
import types

import numpy as np
from hypothesis import strategies as st

import convnet as cn
from convnet.core.errors import ShapeError


def assert_close(actual, expected, tol: float = 1e-4) -> None:
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), rtol=tol, atol=tol)


def ort_session(onnx_model):
    """An onnxruntime session on one thread, from a ModelProto, bytes or a path."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # ONNX's ceil_mode shape notes are not our concern here
    source = onnx_model if isinstance(onnx_model, (str, bytes)) else None
    if source is None:
        source = (str(onnx_model) if hasattr(onnx_model, "__fspath__")
                  else onnx_model.SerializeToString())
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def ort_run(onnx_model, x: np.ndarray) -> np.ndarray:
    session = ort_session(onnx_model)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def real_like(rng, n: int, shape) -> np.ndarray:
    """Image-like batches: smooth gradients and blobs in [0, 1], a little noise, normalised
    per channel as a data pipeline would."""
    c, h, w = shape
    rows = np.linspace(0, 1, h)[:, None]
    cols = np.linspace(0, 1, w)[None, :]
    images = np.empty((n, c, h, w))
    for i in range(n):
        for k in range(c):
            fx, fy, phase = rng.uniform(0.5, 3, size=3)
            centre = rng.uniform(0, 1, size=2)
            blob = np.exp(-((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2) * 8)
            wave = 0.5 + 0.5 * np.sin(2 * np.pi * (fx * rows + fy * cols) + phase)
            images[i, k] = np.clip(0.6 * wave + 0.4 * blob + rng.normal(0, 0.02, (h, w)), 0, 1)
    mean = images.mean(axis=(0, 2, 3), keepdims=True)
    std = images.std(axis=(0, 2, 3), keepdims=True) + 1e-3
    return ((images - mean) / std).astype(np.float32)


def randomize_batchnorm(model, rng) -> None:
    """Running statistics and affine parameters away from their identity defaults."""
    for module in model.modules():
        if isinstance(module, cn.BatchNorm2d):
            c = module.num_features
            module.running_mean[...] = rng.normal(0, 0.5, c)
            module.running_var[...] = rng.uniform(0.5, 2.0, c)
            if module.weight is not None:
                module.weight.data[...] = rng.uniform(0.5, 1.5, c)
                module.bias.data[...] = rng.normal(0, 0.2, c)


# -- the zoo (written by others; these tests start running once it is there) -------------------
def zoo_names() -> list[str]:
    try:
        from convnet.io import zoo
    except ImportError:
        return []
    return list(zoo.MODELS)


def build_zoo_model(name: str):
    """(model, input_shape) of a freshly initialised zoo model."""
    from convnet.io import zoo

    build = getattr(zoo, "build_model", None) or zoo.build  # build(name) in the zoo's plan
    model = build(name)
    shape = getattr(model, "input_shape", None) or zoo.MODELS[name].input_shape
    return model, tuple(shape)


# -- random layer stacks ------------------------------------------------------------------------
@st.composite
def paddings(draw, kernel, pool: bool = False):
    """A padding argument for a kernel: int, pair, 4-tuple, 'same' or 'valid'."""
    limit = (kernel[0] // 2, kernel[1] // 2) if pool else (kernel[0], kernel[1])
    form = draw(st.sampled_from(["int", "pair", "sides", "same", "valid"]))
    if form == "same" or form == "valid":
        return form
    if form == "int":
        return draw(st.integers(0, min(limit)))
    if form == "pair":
        return (draw(st.integers(0, limit[0])), draw(st.integers(0, limit[1])))
    return tuple(draw(st.integers(0, limit[axis])) for axis in (0, 0, 1, 1))


@st.composite
def window_layers(draw, channels: int):
    kind = draw(st.sampled_from(["conv", "conv", "maxpool", "avgpool"]))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    if kind == "conv":
        groups = draw(st.sampled_from([g for g in (1, 2, 3) if channels % g == 0]))
        out_channels = groups * draw(st.integers(1, 3))
        dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        return cn.Conv2d(channels, out_channels, kernel, stride=stride,
                         padding=draw(paddings(kernel)), dilation=dilation, groups=groups,
                         bias=draw(st.booleans()))
    padding = draw(paddings(kernel, pool=True))
    if kind == "maxpool":
        return cn.MaxPool2d(kernel, stride=stride, padding=padding)
    return cn.AvgPool2d(kernel, stride=stride, padding=padding,
                        count_include_pad=draw(st.booleans()))


@st.composite
def simple_layers(draw, channels: int):
    kind = draw(st.sampled_from(["relu", "lrelu", "sigmoid", "tanh", "bn", "dropout"]))
    if kind == "bn":
        return cn.BatchNorm2d(channels, eps=draw(st.sampled_from([1e-5, 1e-3])))
    if kind == "lrelu":
        return cn.LeakyReLU(draw(st.sampled_from([0.01, 0.1, 0.3])))
    if kind == "dropout":
        return cn.Dropout(draw(st.sampled_from([0.0, 0.25, 0.5])))
    return {"relu": cn.ReLU, "sigmoid": cn.Sigmoid, "tanh": cn.Tanh}[kind]()


def _fits(layer, shape):
    try:
        return tuple(cn.Sequential(layer, strict=False).output_shape(shape))
    except ShapeError:
        return None


@st.composite
def residual_layers(draw, shape):
    c = shape[0]
    if draw(st.booleans()):
        body = [cn.Conv2d(c, c, 3, padding=1), draw(simple_layers(c)), cn.Conv2d(c, c, 1)]
        return cn.Residual(*body)
    out_channels = draw(st.integers(1, 4))
    stride = draw(st.integers(1, 2))
    body = [cn.Conv2d(c, out_channels, 3, stride=stride, padding=1), cn.BatchNorm2d(out_channels),
            draw(simple_layers(out_channels))]
    return cn.Residual(*body, projection=cn.Conv2d(c, out_channels, 1, stride=stride))


@st.composite
def random_models(draw, max_layers: int = 5):
    """(model, input_shape): a strict=False stack of random window, elementwise and residual
    layers on a small input, then a random head (flatten + linear, global pooling, softmax)."""
    shape = (draw(st.integers(1, 4)), draw(st.integers(4, 11)), draw(st.integers(4, 11)))
    layers = []
    current = shape
    for _ in range(draw(st.integers(1, max_layers))):
        choice = draw(st.sampled_from(["window", "window", "simple", "residual"]))
        if choice == "window":
            layer = draw(window_layers(current[0]))
        elif choice == "simple":
            layer = draw(simple_layers(current[0]))
        else:
            layer = draw(residual_layers(current))
        out = _fits(layer, current)
        if out is None:
            continue
        layers.append(layer)
        current = out
    head = draw(st.sampled_from(["linear", "gap", "gap-linear", "none"]))
    if head == "gap" or head == "gap-linear":
        layers.append(cn.GlobalAvgPool2d())
        current = (current[0], 1, 1)
    if head == "linear" or head == "gap-linear":
        features = int(np.prod(current))
        layers += [cn.Flatten(), cn.Linear(features, draw(st.integers(1, 5)),
                                           bias=draw(st.booleans()))]
    if draw(st.booleans()):
        layers.append(cn.Softmax())
    model = cn.Sequential(*layers, strict=False)
    model.build(shape)
    return model, shape


# -- the same network in PyTorch -------------------------------------------------------------------
def torch_equivalent(model, input_shape):
    """A torch.nn module computing what `model` computes, with the same state-dict keys."""
    import torch

    if isinstance(model, cn.Model):
        from bench.torch_twin import Graph
        from convnet.io.spec import to_spec

        return Graph(to_spec(model))
    modules, _ = _torch_layers(model.layers, tuple(input_shape))
    return torch.nn.Sequential(*modules)


def _torch_layers(layers, shape):
    modules = []
    for layer in layers:
        module, shape = _torch_layer(layer, shape)
        modules.append(module)
    return modules, shape


@functools.cache
def torch_classes():
    """Torch modules convnet layers map to beyond torch.nn's own (built once, on first use)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class PaddedConv2d(nn.Conv2d):
        """nn.Conv2d after explicit (left, right, top, bottom) zero padding."""

        def __init__(self, *args, sides, **kwargs):
            super().__init__(*args, **kwargs)
            self.sides = sides

        def forward(self, x):
            return super().forward(F.pad(x, self.sides))

    class PaddedPool(nn.Module):
        """Max or average pooling after explicit (left, right, top, bottom) padding."""

        def __init__(self, kind, kernel, stride, sides, include_pad):
            super().__init__()
            self.kind, self.kernel, self.stride = kind, kernel, stride
            self.sides, self.include_pad = sides, include_pad

        def forward(self, x):
            if self.kind == "max":
                return F.max_pool2d(F.pad(x, self.sides, value=-torch.inf), self.kernel,
                                    self.stride)
            total = F.avg_pool2d(F.pad(x, self.sides), self.kernel, self.stride)
            if self.include_pad:
                return total
            ones = F.pad(torch.ones_like(x[:1, :1]), self.sides)
            return total / F.avg_pool2d(ones, self.kernel, self.stride)

    from bench.torch_twin import Residual  # convnet's Residual, same attribute names

    return types.SimpleNamespace(PaddedConv2d=PaddedConv2d, PaddedPool=PaddedPool,
                                 TorchResidual=Residual)


def _torch_layer(layer, shape):
    """One torch module for one convnet layer (containers recursively) and its output shape."""
    from torch import nn

    classes = torch_classes()
    out_shape = tuple(layer.output_shape(shape))
    if isinstance(layer, cn.Sequential):
        modules, out = _torch_layers(layer.layers, shape)
        return nn.Sequential(*modules), out
    if isinstance(layer, cn.Residual):
        body, _ = _torch_layer(layer.body, shape)
        projection = None
        if layer.projection is not None:
            projection, _ = _torch_layer(layer.projection, shape)
        return classes.TorchResidual(body, projection), out_shape
    if isinstance(layer, (cn.Conv2d, cn.MaxPool2d, cn.AvgPool2d)):
        pad = layer.geometry(shape[1:]).padding
        sides = (pad.left, pad.right, pad.top, pad.bottom)
        symmetric = pad.is_symmetric
        if isinstance(layer, cn.Conv2d):
            args = (layer.in_channels, layer.out_channels, layer.kernel_size)
            kwargs = {"stride": layer.stride, "dilation": layer.dilation, "groups": layer.groups,
                      "bias": layer.bias is not None}
            if symmetric:
                return nn.Conv2d(*args, padding=(pad.top, pad.left), **kwargs), out_shape
            return classes.PaddedConv2d(*args, sides=sides, **kwargs), out_shape
        kind = "max" if isinstance(layer, cn.MaxPool2d) else "avg"
        include = getattr(layer, "count_include_pad", True)
        if symmetric and kind == "max":
            return nn.MaxPool2d(layer.kernel_size, layer.stride, (pad.top, pad.left)), out_shape
        if symmetric:
            return nn.AvgPool2d(layer.kernel_size, layer.stride, (pad.top, pad.left),
                                count_include_pad=include), out_shape
        return classes.PaddedPool(kind, layer.kernel_size, layer.stride, sides,
                                  include), out_shape
    if isinstance(layer, cn.BatchNorm2d):
        return nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum,
                              affine=layer.weight is not None), out_shape
    if isinstance(layer, cn.Linear):
        return nn.Linear(layer.in_features, layer.out_features,
                         bias=layer.bias is not None), out_shape
    if isinstance(layer, cn.LeakyReLU):
        return nn.LeakyReLU(layer.negative_slope), out_shape
    if isinstance(layer, cn.Dropout):
        return nn.Dropout(layer.p), out_shape
    if isinstance(layer, cn.Softmax):
        return nn.Softmax(dim=1), out_shape
    if isinstance(layer, cn.GlobalAvgPool2d):
        return nn.AdaptiveAvgPool2d(1), out_shape
    simple = {cn.ReLU: nn.ReLU, cn.Sigmoid: nn.Sigmoid, cn.Tanh: nn.Tanh, cn.Flatten: nn.Flatten}
    return simple[type(layer)](), out_shape

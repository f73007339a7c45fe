"""The PyTorch twin of a convnet model, built from its spec (`convnet.io.spec.to_spec`).

Only plain data crosses over, so the PyTorch worker process never imports convnet. Module
names follow convnet's state-dict keys (`0.weight`, `3.body.2.bias` for a chain,
`mixed3a_1x1.weight` for a graph), so the weights load unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class Residual(nn.Module):
    """y = body(x) + (projection(x) if there is one else x), as convnet's Residual."""

    def __init__(self, body: nn.Module, projection: nn.Module | None):
        super().__init__()
        self.body = body
        self.projection = projection

    def forward(self, x):
        shortcut = x if self.projection is None else self.projection(x)
        return self.body(x) + shortcut


def _same_sides(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after) along one axis: output ceil(size/stride)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


class PaddedConv2d(nn.Conv2d):
    """nn.Conv2d after explicit zero padding: convnet's 'same' at any stride (computed for
    each input size) or (top, bottom, left, right) sides."""

    def __init__(self, *args, sides, **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.sides = sides

    def forward(self, x):
        if self.sides == "same":
            top, bottom = _same_sides(x.shape[2], self.kernel_size[0], self.stride[0],
                                      self.dilation[0])
            left, right = _same_sides(x.shape[3], self.kernel_size[1], self.stride[1],
                                      self.dilation[1])
        else:
            top, bottom, left, right = self.sides
        return super().forward(nn.functional.pad(x, (left, right, top, bottom)))


def _symmetric_padding(entry: dict) -> tuple[int, int]:
    padding = entry.get("padding", 0)
    if padding == "valid":
        return (0, 0)
    if isinstance(padding, int):
        return (padding, padding)
    if isinstance(padding, list) and len(padding) == 2:
        return (int(padding[0]), int(padding[1]))
    if isinstance(padding, list) and len(padding) == 4 and padding[0] == padding[1] \
            and padding[2] == padding[3]:
        return (int(padding[0]), int(padding[2]))
    raise ValueError(f"bench twin: padding {padding!r} of {entry['type']} has no symmetric "
                     f"PyTorch equivalent; give it as an (h, w) pair")


def build_layer(entry: dict) -> nn.Module:
    kind = entry["type"]
    if kind == "conv":
        padding = entry.get("padding", 0)
        if padding == "same" or (isinstance(padding, list) and len(padding) == 4 and (
                padding[0] != padding[1] or padding[2] != padding[3])):
            return PaddedConv2d(entry["in_channels"], entry["out_channels"],
                                tuple(entry["kernel_size"]), tuple(entry["stride"]),
                                dilation=tuple(entry["dilation"]), groups=entry["groups"],
                                bias=entry["bias"], sides=padding)
        return nn.Conv2d(entry["in_channels"], entry["out_channels"], tuple(entry["kernel_size"]),
                         tuple(entry["stride"]), _symmetric_padding(entry),
                         tuple(entry["dilation"]), entry["groups"], entry["bias"])
    if kind == "convtranspose":
        return nn.ConvTranspose2d(entry["in_channels"], entry["out_channels"],
                                  tuple(entry["kernel_size"]), tuple(entry["stride"]),
                                  tuple(entry["padding"]), tuple(entry["output_padding"]),
                                  entry["groups"], entry["bias"], tuple(entry["dilation"]))
    if kind == "upsample":
        size = entry.get("size")
        return nn.Upsample(size=tuple(size) if isinstance(size, list) else size,
                           scale_factor=entry.get("scale_factor"), mode=entry["mode"],
                           align_corners=entry.get("align_corners"),
                           recompute_scale_factor=entry.get("recompute_scale_factor"))
    if kind == "maxpool":
        return nn.MaxPool2d(tuple(entry["kernel_size"]), tuple(entry["stride"]),
                            _symmetric_padding(entry))
    if kind == "avgpool":
        return nn.AvgPool2d(tuple(entry["kernel_size"]), tuple(entry["stride"]),
                            _symmetric_padding(entry),
                            count_include_pad=entry["count_include_pad"])
    if kind == "gap":
        return nn.AdaptiveAvgPool2d(1)
    if kind == "relu":
        return nn.ReLU()
    simple = {"relu6": nn.ReLU6, "hardswish": nn.Hardswish, "silu": nn.SiLU,
              "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
    if kind in simple:
        return simple[kind]()
    if kind == "hardsigmoid":
        if abs(entry.get("alpha", 1 / 6) - 1 / 6) > 1e-12 or entry.get("beta", 0.5) != 0.5:
            raise ValueError("bench twin: PyTorch's Hardsigmoid has alpha 1/6 and beta 0.5 only")
        return nn.Hardsigmoid()
    if kind == "flatten":
        return nn.Flatten()
    if kind == "linear":
        return nn.Linear(entry["in_features"], entry["out_features"], entry["bias"])
    if kind == "batchnorm":
        return nn.BatchNorm2d(entry["num_features"], entry["eps"], entry["momentum"])
    if kind == "dropout":
        return nn.Dropout(entry["p"])
    if kind == "residual":
        body = nn.Sequential(*[build_layer(child) for child in entry["body"]])
        projection = entry.get("projection")
        return Residual(body, build_layer(projection) if projection else None)
    raise ValueError(f"bench twin: no PyTorch module for layer type {kind!r}")


MERGES = {"concat", "add", "sub", "mul", "div"}


class Graph(nn.Module):
    """A graph spec's calls in order (see convnet.io.spec): each module registered under the
    layer's name, merges done with torch's own operators; forward returns the first output."""

    def __init__(self, spec: dict):
        super().__init__()
        inputs = spec.get("inputs") or [{"name": "input"}]
        self.input_names = [item["name"] for item in inputs]
        self.calls = []  # (module name or merge, entry, input names, output name)
        previous = self.input_names[0]
        for entry in spec["layers"]:
            sources = entry.get("inputs") or [previous]
            kind = entry["type"]
            if kind == "reuse":
                self.calls.append((entry["layer"], entry, sources, entry["name"]))
            elif kind in MERGES:
                self.calls.append((kind, entry, sources, entry["name"]))
            else:
                self.add_module(entry["name"], build_layer(entry))
                self.calls.append((entry["name"], entry, sources, entry["name"]))
            previous = entry["name"]
        self.outputs = spec.get("outputs") or [previous]

    def forward(self, *xs):
        values = dict(zip(self.input_names, xs, strict=True))
        for target, entry, sources, name in self.calls:
            args = [values[source] for source in sources]
            if target == "concat":
                values[name] = torch.cat(args, dim=entry.get("axis", 1))
            elif target in ("add", "mul"):
                out = args[0]
                for arg in args[1:]:
                    out = out + arg if target == "add" else out * arg
                values[name] = out
            elif target == "sub":
                values[name] = args[0] - args[1]
            elif target == "div":
                values[name] = args[0] / args[1]
            else:
                values[name] = getattr(self, target)(args[0])
        return values[self.outputs[0]]


def build_model(spec: dict, state: dict) -> nn.Module:
    """nn.Sequential (a chain) or Graph (a graph spec) for `spec`, holding the arrays of
    `state` (name -> NumPy array)."""
    graph = "outputs" in spec or "inputs" in spec or any(
        "inputs" in entry or entry["type"] in MERGES | {"reuse"} for entry in spec["layers"])
    model = Graph(spec) if graph else nn.Sequential(*[build_layer(e) for e in spec["layers"]])
    model.load_state_dict({name: torch.from_numpy(array.copy()) for name, array in state.items()})
    return model

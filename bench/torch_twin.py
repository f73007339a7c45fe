"""The PyTorch twin of a convnet model, built from its spec (`convnet.io.spec.to_spec`).

Only plain data crosses over, so the PyTorch worker process never imports convnet. Module
names follow convnet's state-dict keys (`0.weight`, `3.body.2.bias`, ...), so the weights
load unchanged.
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
        return nn.Conv2d(entry["in_channels"], entry["out_channels"], tuple(entry["kernel_size"]),
                         tuple(entry["stride"]), _symmetric_padding(entry),
                         tuple(entry["dilation"]), entry["groups"], entry["bias"])
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


def build_model(spec: dict, state: dict) -> nn.Sequential:
    """nn.Sequential for `spec`, holding the arrays of `state` (name -> NumPy array)."""
    model = nn.Sequential(*[build_layer(entry) for entry in spec["layers"]])
    model.load_state_dict({name: torch.from_numpy(array.copy()) for name, array in state.items()})
    return model

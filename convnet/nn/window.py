"""Geometry shared by the layers that slide a window (convolution and pooling).

Each asks `convnet.core.arithmetic` for its output size once per input size and keeps the
answer; the summary, the web page and the receptive-field views read the same geometry.
"""

from __future__ import annotations

from convnet.core.arithmetic import (
    ReceptiveField,
    WindowShape,
    pair,
    window_formula,
    window_output,
)
from convnet.nn.layer import Layer, Shape, positive_int


def window_slices(offset_h: int, offset_w: int, out_hw, stride) -> tuple[slice, slice]:
    """Rows and columns of the padded input touched by kernel tap (offset_h, offset_w)."""
    return (
        slice(offset_h, offset_h + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
        slice(offset_w, offset_w + stride[1] * (out_hw[1] - 1) + 1, stride[1]),
    )


class WindowLayer(Layer):
    """Shared geometry of layers that slide a window: conv and pooling."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: object
    dilation: tuple[int, int] = (1, 1)
    strict: bool | None = None  # None: inherit from the model; a lone layer is strict

    def geometry(self, hw) -> WindowShape:
        """Output size, resolved padding and dropped pixels for spatial input size hw."""
        hw = (int(hw[0]), int(hw[1]))
        cached = self._geometry_cache.get(hw) if hasattr(self, "_geometry_cache") else None
        if cached is None:
            cached = window_output(hw, self.kernel_size, self.stride, self.padding, self.dilation,
                                   strict=self.strict is not False, layer=self.name)
            self._geometry_cache = {hw: cached}
        return cached

    def receptive_field(self, field: ReceptiveField, input_shape: Shape) -> ReceptiveField:
        padding = self.geometry(input_shape[1:]).padding
        return field.through(self.kernel_size, self.stride, self.dilation, padding)

    def dropped_pixels(self, input_shape: Shape) -> tuple[int, int]:
        return self.geometry(input_shape[1:]).dropped

    def size_formula(self, input_shape: Shape) -> str:
        """'(32 - 5 + 2*2)/1 + 1 = 32', once, or per axis when they differ."""
        hw = tuple(input_shape[-2:])
        return window_formula(hw, self.kernel_size, self.stride, self.dilation, self.geometry(hw))

    def _window_repr(self, default_stride) -> list[str]:
        """Constructor arguments that differ from their defaults."""
        parts = [f"kernel_size={_compact(self.kernel_size)}"]
        if self.stride != default_stride:
            parts.append(f"stride={_compact(self.stride)}")
        if self.padding not in ((0, 0), "valid"):
            pad = self.padding
            if isinstance(pad, tuple) and len(pad) == 2:
                pad = _compact(pad)
            parts.append(f"padding={pad!r}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={_compact(self.dilation)}")
        if self.strict is False:
            parts.append("strict=False")
        return parts


def _compact(value: tuple[int, int]):
    return value[0] if value[0] == value[1] else value


def parse_padding(padding, layer: str):
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise ValueError(
                f"{layer}: padding must be an int, an (h, w) pair, 'same' or 'valid', "
                f"received {padding!r}"
            )
        return padding
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        value = tuple(int(v) for v in padding)  # (top, bottom, left, right), e.g. from ONNX
    else:
        value = pair(padding, "padding", layer)
    if min(value) < 0:
        raise ValueError(f"{layer}: padding must be >= 0, received {padding!r}")
    return value


def chw(layer: Layer, input_shape: Shape) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"{layer.name} ({type(layer).__name__}): expects a per-sample input of shape "
            f"(C, H, W), received {tuple(input_shape)} (add or remove a Flatten?)"
        )
    return tuple(int(v) for v in input_shape)


def conv_arguments(layer, in_channels, out_channels, kernel_size, stride, dilation,
                   groups) -> None:
    """Validate and set the arguments a convolution and a transposed convolution share:
    channel counts, kernel_size/stride/dilation pairs >= 1, groups dividing both counts."""
    label = type(layer).__name__
    layer.in_channels = positive_int(in_channels, "in_channels", label)
    layer.out_channels = positive_int(out_channels, "out_channels", label)
    layer.kernel_size = pair(kernel_size, "kernel_size", label)
    layer.stride = pair(stride, "stride", label)
    layer.dilation = pair(dilation, "dilation", label)
    for name in ("kernel_size", "stride", "dilation"):
        if min(getattr(layer, name)) < 1:
            raise ValueError(f"{label}: {name} must be >= 1, received {getattr(layer, name)}")
    layer.groups = positive_int(groups, "groups", label)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"{label}: groups={groups} must divide both in_channels={in_channels} "
                         f"and out_channels={out_channels}")


"""Conv2d: K filters spanning the full input depth, sliding with a stride over zero-padded input.

Forward is im2col + one matrix product per group; 1x1 convolution with stride 1 skips
im2col entirely and is the plain matrix product it is. `convnet.reference.conv2d` is the
loop oracle this is tested against.
"""

from __future__ import annotations

import numpy

from convnet.arithmetic import Padding, ReceptiveField, WindowShape, pair, window_output
from convnet.backend import array_module
from convnet.errors import ShapeError
from convnet.init import initial_weight
from convnet.layer import Layer, Shape, check_input, grad_enabled, positive_int
from convnet.parameter import Parameter


def pad_input(xp, x, padding: Padding):
    """Zero-pad the spatial axes: (N, C, H, W) -> (N, C, H + top + bottom, W + left + right)."""
    if padding.is_zero:
        return x
    n, c, h, w = x.shape
    out = xp.zeros((n, c, h + padding.top + padding.bottom, w + padding.left + padding.right),
                   dtype=x.dtype)
    out[:, :, padding.top : padding.top + h, padding.left : padding.left + w] = x
    return out


def window_slices(offset_h: int, offset_w: int, out_hw, stride) -> tuple[slice, slice]:
    """Rows and columns of the padded input touched by kernel tap (offset_h, offset_w)."""
    return (
        slice(offset_h, offset_h + stride[0] * (out_hw[0] - 1) + 1, stride[0]),
        slice(offset_w, offset_w + stride[1] * (out_hw[1] - 1) + 1, stride[1]),
    )


def im2col(xp, xpad, kernel, stride, dilation, out_hw):
    """(N, C, Hp, Wp) -> (N, C*KH*KW, H_out*W_out): one strided copy per kernel tap."""
    n, c = xpad.shape[:2]
    cols = xp.empty((n, c, kernel[0], kernel[1], out_hw[0], out_hw[1]), dtype=xpad.dtype)
    for u in range(kernel[0]):
        for v in range(kernel[1]):
            rows, columns = window_slices(u * dilation[0], v * dilation[1], out_hw, stride)
            cols[:, :, u, v] = xpad[:, :, rows, columns]
    return cols.reshape(n, c * kernel[0] * kernel[1], out_hw[0] * out_hw[1])


def col2im(xp, dcols, padded_shape, kernel, stride, dilation, out_hw):
    """Adjoint of im2col: (N, C*KH*KW, H_out*W_out) -> (N, C, Hp, Wp), summing overlaps."""
    n, c = padded_shape[:2]
    dcols = dcols.reshape(n, c, kernel[0], kernel[1], out_hw[0], out_hw[1])
    dxpad = xp.zeros(padded_shape, dtype=dcols.dtype)
    for u in range(kernel[0]):
        for v in range(kernel[1]):
            rows, columns = window_slices(u * dilation[0], v * dilation[1], out_hw, stride)
            dxpad[:, :, rows, columns] += dcols[:, :, u, v]
    return dxpad


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


class Conv2d(WindowLayer):
    """(N, C, H, W) -> (N, K, H_out, W_out), H_out = (H - F + 2P)/S + 1.

    weight (K, C/groups, KH, KW) and bias (K,) use PyTorch's layout, so weights copy across.
    padding='same' works with any stride: output ceil(H/S), extra pixel bottom/right.
    """

    kind = "conv"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, *, strict: bool | None = None,
                 init: str = "kaiming", dtype=numpy.float32):
        super().__init__()
        label = "Conv2d"
        self.in_channels = positive_int(in_channels, "in_channels", label)
        self.out_channels = positive_int(out_channels, "out_channels", label)
        self.kernel_size = pair(kernel_size, "kernel_size", label)
        self.stride = pair(stride, "stride", label)
        self.dilation = pair(dilation, "dilation", label)
        for name, value in (("kernel_size", self.kernel_size), ("stride", self.stride),
                            ("dilation", self.dilation)):
            if min(value) < 1:
                raise ValueError(f"{label}: {name} must be >= 1, received {value}")
        self.padding = parse_padding(padding, label)
        self.groups = positive_int(groups, "groups", label)
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{label}: groups={groups} must divide both in_channels={in_channels} and "
                f"out_channels={out_channels}"
            )
        self.strict = strict
        self.init = init
        self.weight = Parameter(numpy.zeros(
            (out_channels, in_channels // groups, *self.kernel_size), dtype=dtype))
        self.bias = Parameter(numpy.zeros(out_channels, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.weight.data[...] = initial_weight(self.weight.shape, self.init, self.weight.data.dtype)
        if self.bias is not None:
            self.bias.data[...] = 0

    def own_parameters(self):
        params = {"weight": self.weight}
        if self.bias is not None:
            params["bias"] = self.bias
        return params

    @property
    def is_pointwise(self) -> bool:
        """1x1, stride 1, no padding: the convolution is a plain matrix product."""
        return (self.kernel_size == (1, 1) and self.stride == (1, 1)
                and self.padding in ((0, 0), "valid", "same"))

    def output_shape(self, input_shape: Shape) -> Shape:
        channels, height, width = chw(self, input_shape)
        if channels != self.in_channels:
            raise _channel_error(self, channels, input_shape)
        return (self.out_channels, *self.geometry((height, width)).out_hw)

    def forward(self, x):
        check_input(self, x, 4, self.in_channels, dtype=self.weight.data.dtype)
        xp = array_module(x)
        n = x.shape[0]
        geometry = self.geometry(x.shape[2:])
        out_h, out_w = geometry.out_hw
        if self.is_pointwise:
            cols = x.reshape(n, self.in_channels, out_h * out_w)  # no copy: it already is im2col
        else:
            xpad = pad_input(xp, x, geometry.padding)
            cols = im2col(xp, xpad, self.kernel_size, self.stride, self.dilation, (out_h, out_w))
        weight = self.weight.data.reshape(self.groups, self.out_channels // self.groups, -1)
        if self.groups == 1:
            out = xp.matmul(weight[0], cols)  # (K, CKK) @ (N, CKK, P) -> (N, K, P)
        else:
            grouped = cols.reshape(n, self.groups, -1, out_h * out_w)
            out = xp.matmul(weight, grouped)  # (G, Kg, CKKg) @ (N, G, CKKg, P) -> (N, G, Kg, P)
        out = out.reshape(n, self.out_channels, out_h, out_w)
        if self.bias is not None:
            out += self.bias.data[:, None, None]
        if grad_enabled():
            self.cache = (x.shape, cols, geometry)
        return out

    def backward(self, dy):
        x_shape, cols, geometry = self._take_cache()
        xp = array_module(dy)
        n, channels, height, width = x_shape
        groups = self.groups
        positions = dy.shape[2] * dy.shape[3]
        dy_grouped = dy.reshape(n, groups, self.out_channels // groups, positions)
        cols_grouped = cols.reshape(n, groups, -1, positions)
        if self.bias is not None:
            self.bias.grad += dy.sum(axis=(0, 2, 3))
        # dW = sum_n dy[n] @ cols[n]^T, one batched product per sample then a sum.
        dweight = xp.matmul(dy_grouped, cols_grouped.swapaxes(-1, -2)).sum(axis=0)
        self.weight.grad += dweight.reshape(self.weight.shape)
        weight = self.weight.data.reshape(groups, self.out_channels // groups, -1)
        dcols = xp.matmul(weight.swapaxes(-1, -2), dy_grouped)  # (N, G, CKKg, P)
        if self.is_pointwise:
            return dcols.reshape(x_shape)
        pad = geometry.padding
        padded_shape = (n, channels, height + pad.top + pad.bottom, width + pad.left + pad.right)
        dxpad = col2im(xp, dcols, padded_shape, self.kernel_size, self.stride, self.dilation,
                       geometry.out_hw)
        return dxpad[:, :, pad.top : pad.top + height, pad.left : pad.left + width]

    def param_formula(self, input_shape: Shape) -> str:
        kh, kw = self.kernel_size
        per_filter = f"{kh}*{kw}*{self.in_channels // self.groups}"
        per_filter = f"({per_filter} + 1)" if self.bias is not None else per_filter
        return f"{self.out_channels} x {per_filter} = {self.num_parameters():,}"

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        kh, kw = self.kernel_size
        return (self.out_channels * (self.in_channels // self.groups) * kh * kw
                * output_shape[1] * output_shape[2])

    def extra_repr(self) -> str:
        parts = [str(self.in_channels), str(self.out_channels), *self._window_repr((1, 1))]
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.bias is None:
            parts.append("bias=False")
        return ", ".join(parts)


def chw(layer: Layer, input_shape: Shape) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"{layer.name} ({type(layer).__name__}): expects a per-sample input of shape "
            f"(C, H, W), received {tuple(input_shape)} (add or remove a Flatten?)"
        )
    return tuple(int(v) for v in input_shape)


def _channel_error(layer: Conv2d, channels: int, input_shape: Shape) -> ShapeError:
    return ShapeError(
        f"{layer.name} (Conv2d): in_channels={layer.in_channels} but the input reaching it has "
        f"{channels} channels (shape {tuple(input_shape)}); set in_channels={channels} or "
        f"change the layer before it"
    )

"""Pooling: each activation map shrinks on its own, so depth is unchanged.

Both window pools walk the kernel taps (KH*KW strided slices) instead of building im2col
columns: max keeps a running maximum and the index of the first tap that reached it
(PyTorch's tie rule), average a running sum. `convnet.reference.pool2d` is their oracle.
"""

from __future__ import annotations

import numpy

from convnet.arithmetic import Padding, ReceptiveField, pair
from convnet.backend import array_module
from convnet.conv import WindowLayer, chw, parse_padding, window_slices
from convnet.layer import Layer, Shape, check_input, grad_enabled


def _padded(xp, x, padding, fill):
    """(N, C, H, W) -> (N, C, H + top + bottom, W + left + right), new pixels = fill."""
    if padding.is_zero:
        return x
    n, c, h, w = x.shape
    out = xp.full((n, c, h + padding.top + padding.bottom, w + padding.left + padding.right),
                  fill, dtype=x.dtype)
    out[:, :, padding.top : padding.top + h, padding.left : padding.left + w] = x
    return out


class _Pool2d(WindowLayer):
    kind = "pool"

    def __init__(self, kernel_size, stride=None, padding=0, *, strict: bool | None = None):
        super().__init__()
        label = type(self).__name__
        self.kernel_size = pair(kernel_size, "kernel_size", label)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", label)
        for name, value in (("kernel_size", self.kernel_size), ("stride", self.stride)):
            if min(value) < 1:
                raise ValueError(f"{label}: {name} must be >= 1, received {value}")
        self.padding = parse_padding(padding, label)
        if isinstance(self.padding, tuple):
            limits = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)
            sides = self.padding if len(self.padding) == 2 else (
                max(self.padding[:2]), max(self.padding[2:]))
            if sides[0] > limits[0] or sides[1] > limits[1]:
                raise ValueError(
                    f"{label}: padding {self.padding} is more than half the kernel "
                    f"{self.kernel_size}; a window could then see only padding"
                )
        self.strict = strict

    def output_shape(self, input_shape: Shape) -> Shape:
        channels, height, width = chw(self, input_shape)
        return (channels, *self.geometry((height, width)).out_hw)

    def _taps(self):
        for u in range(self.kernel_size[0]):
            for v in range(self.kernel_size[1]):
                yield u * self.kernel_size[1] + v, u, v

    def extra_repr(self) -> str:
        return ", ".join(self._window_repr(self.kernel_size))


class MaxPool2d(_Pool2d):
    """(N, C, H, W) -> (N, C, H_out, W_out): the maximum of each window, per channel."""

    def forward(self, x):
        check_input(self, x, 4)
        xp = array_module(x)
        geometry = self.geometry(x.shape[2:])
        xpad = _padded(xp, x, geometry.padding, -numpy.inf)
        out = None
        keep = grad_enabled()
        argmax = None
        for tap, u, v in self._taps():
            rows, cols = window_slices(u, v, geometry.out_hw, self.stride)
            window = xpad[:, :, rows, cols]
            if out is None:
                out = window.copy()
                if keep:
                    taps = self.kernel_size[0] * self.kernel_size[1]
                    argmax = xp.zeros(out.shape, dtype=xp.uint8 if taps <= 256 else xp.int32)
                continue
            if keep:
                better = window > out  # strictly greater: the first maximum wins ties
                argmax[better] = tap
                xp.maximum(out, window, out=out)
            else:
                xp.maximum(out, window, out=out)
        if keep:
            self.cache = (x.shape, geometry, argmax)
        return out

    def backward(self, dy):
        x_shape, geometry, argmax = self._take_cache()
        xp = array_module(dy)
        pad = geometry.padding
        n, c, h, w = x_shape
        dxpad = xp.zeros((n, c, h + pad.top + pad.bottom, w + pad.left + pad.right), dy.dtype)
        for tap, u, v in self._taps():
            rows, cols = window_slices(u, v, geometry.out_hw, self.stride)
            dxpad[:, :, rows, cols] += xp.where(argmax == tap, dy, 0)
        return dxpad[:, :, pad.top : pad.top + h, pad.left : pad.left + w]


class AvgPool2d(_Pool2d):
    """(N, C, H, W) -> (N, C, H_out, W_out): the mean of each window, per channel.

    count_include_pad=True (PyTorch's default) divides by KH*KW everywhere; False divides
    by the number of real pixels in the window.
    """

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad: bool = True, *,
                 strict: bool | None = None):
        super().__init__(kernel_size, stride, padding, strict=strict)
        self.count_include_pad = bool(count_include_pad)

    def _divisor(self, xp, hw, geometry, dtype):
        """KH*KW, or per output position the count of real (unpadded) pixels."""
        if self.count_include_pad or geometry.padding.is_zero:
            return dtype.type(self.kernel_size[0] * self.kernel_size[1])
        ones = _padded(xp, xp.ones((1, 1, *hw), dtype=dtype), geometry.padding, 0)
        count = xp.zeros((1, 1, *geometry.out_hw), dtype=dtype)
        for _, u, v in self._taps():
            rows, cols = window_slices(u, v, geometry.out_hw, self.stride)
            count += ones[:, :, rows, cols]
        return count

    def forward(self, x):
        check_input(self, x, 4)
        xp = array_module(x)
        geometry = self.geometry(x.shape[2:])
        xpad = _padded(xp, x, geometry.padding, 0)
        out = xp.zeros((*x.shape[:2], *geometry.out_hw), dtype=x.dtype)
        for _, u, v in self._taps():
            rows, cols = window_slices(u, v, geometry.out_hw, self.stride)
            out += xpad[:, :, rows, cols]
        divisor = self._divisor(xp, x.shape[2:], geometry, x.dtype)
        out /= divisor
        if grad_enabled():
            self.cache = (x.shape, geometry, divisor)
        return out

    def backward(self, dy):
        x_shape, geometry, divisor = self._take_cache()
        xp = array_module(dy)
        pad = geometry.padding
        n, c, h, w = x_shape
        dxpad = xp.zeros((n, c, h + pad.top + pad.bottom, w + pad.left + pad.right), dy.dtype)
        share = dy / divisor
        for _, u, v in self._taps():
            rows, cols = window_slices(u, v, geometry.out_hw, self.stride)
            dxpad[:, :, rows, cols] += share
        return dxpad[:, :, pad.top : pad.top + h, pad.left : pad.left + w]

    def extra_repr(self) -> str:
        extra = "" if self.count_include_pad else ", count_include_pad=False"
        return super().extra_repr() + extra


class GlobalAvgPool2d(Layer):
    """(N, C, H, W) -> (N, C, 1, 1): the mean of each whole activation map."""

    kind = "gap"

    def output_shape(self, input_shape: Shape) -> Shape:
        channels, _, _ = chw(self, input_shape)
        return (channels, 1, 1)

    def forward(self, x):
        check_input(self, x, 4)
        if grad_enabled():
            self.cache = x.shape
        return x.mean(axis=(2, 3), keepdims=True)

    def backward(self, dy):
        x_shape = self._take_cache()
        xp = array_module(dy)
        scale = dy.dtype.type(1.0 / (x_shape[2] * x_shape[3]))
        return xp.broadcast_to(dy * scale, x_shape).copy()

    def receptive_field(self, field: ReceptiveField, input_shape: Shape) -> ReceptiveField:
        hw = (int(input_shape[1]), int(input_shape[2]))  # one window over the whole map
        return field.through(hw, hw, (1, 1), Padding(0, 0, 0, 0))

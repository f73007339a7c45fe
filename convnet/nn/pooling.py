"""Pooling: each activation map shrinks on its own, so depth is unchanged.

Both window pools walk the kernel taps (strided slices) instead of building im2col columns:
max in two separable stages (KW column taps, then KH row taps), each keeping a running maximum
and the index of the first tap that reached it (PyTorch's tie rule); average a running sum
over the KH*KW taps. `convnet.core.reference.pool2d` is their oracle.
"""

from __future__ import annotations

import numpy

from convnet.core import pool_kernels
from convnet.core.arithmetic import Padding, ReceptiveField, pair
from convnet.core.backend import array_module, padded, sample_chunks
from convnet.core.team import run_chunks
from convnet.nn.activations import ReLU
from convnet.nn.layer import Layer, Shape, check_input, grad_enabled
from convnet.nn.window import WindowLayer, chw, parse_padding, window_slices


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


def _first_max(xp, taps, out, index) -> None:
    """out = elementwise maximum of same-shaped views; index (unless None) = the number of the
    first view that reaches it: a later tap must be strictly greater to win, so ties go to the
    first."""
    if len(taps) == 1:
        out[...] = taps[0]
        if index is not None:
            index[...] = 0
        return
    if index is not None:
        xp.greater(taps[1], taps[0], out=index.view(xp.bool_))  # taps 0 and 1: 0 or 1
    xp.maximum(taps[0], taps[1], out=out)
    for number, tap in enumerate(taps[2:], start=2):
        if index is not None:
            xp.copyto(index, number, where=tap > out)
        xp.maximum(out, tap, out=out)


def _route(xp, grad, index, taps: int, stride: int, out, axis: int) -> None:
    """Adjoint of one `_first_max` stage along `axis`: send each gradient to its winning tap.

    grad and index (..., n, ...) -> out (..., length, ...), where window j covers positions
    j*stride .. j*stride + taps - 1 along `axis`.
    """
    count = grad.shape[axis]
    tiles = stride == taps and count * taps == out.shape[axis]  # each position in one window
    if not tiles:
        out[...] = 0
    for tap in range(taps):
        where = [slice(None)] * grad.ndim
        where[axis] = slice(tap, tap + stride * (count - 1) + 1, stride)
        if tiles:
            xp.multiply(grad, index == tap, out=out[tuple(where)])
        else:
            out[tuple(where)] += grad * (index == tap)


class MaxPool2d(_Pool2d):
    """(N, C, H, W) -> (N, C, H_out, W_out): the maximum of each window, per channel.

    Separable: first the maximum across each window's columns (for every input row), then
    down its rows. Each stage keeps the index of its first maximum; the first winning row's
    first winning column is the window's first maximum in row-major order, PyTorch's tie rule.
    Batch chunks go to the worker threads. Large float NumPy inputs take the compiled passes
    of `convnet.core.pool_kernels` instead (the same answers, tested against this path).
    """

    def forward(self, x):
        check_input(self, x, 4)
        xp = array_module(x)
        geometry = self.geometry(x.shape[2:])
        (kh, kw), out_hw = self.kernel_size, geometry.out_hw
        if pool_kernels.usable(x, self.kernel_size):
            out, taps = pool_kernels.max_forward(x, self.kernel_size, self.stride,
                                                 geometry.padding, out_hw)
            if grad_enabled():
                self.cache = (x.shape, geometry, taps, None)
            return out
        reached = self.stride[0] * (out_hw[0] - 1) + kh  # padded rows some window reaches
        n, c = x.shape[:2]
        out = xp.empty((n, c, *out_hw), dtype=x.dtype)
        keep = grad_enabled()
        row_index = xp.empty(out.shape, dtype=xp.uint8) if keep else None
        col_index = xp.empty((n, c, reached, out_hw[1]), dtype=xp.uint8) if keep else None

        def work(part):
            rows = padded(xp, x[part], geometry.padding, -numpy.inf)[:, :, :reached]
            across = xp.empty((rows.shape[0], c, reached, out_hw[1]), dtype=x.dtype)
            _first_max(xp, [rows[:, :, :, window_slices(0, v, out_hw, self.stride)[1]]
                            for v in range(kw)], across, col_index[part] if keep else None)
            _first_max(xp, [across[:, :, window_slices(u, 0, out_hw, self.stride)[0]]
                            for u in range(kh)], out[part], row_index[part] if keep else None)

        run_chunks(work, sample_chunks(x))
        if keep:
            self.cache = (x.shape, geometry, row_index, col_index)
        return out

    def backward(self, dy):
        x_shape, geometry, row_index, col_index = self._take_cache()
        if col_index is None:  # the compiled forward's tap numbers
            return pool_kernels.max_backward(dy, row_index, x_shape, self.kernel_size,
                                             self.stride, geometry.padding)
        xp = array_module(dy)
        pad = geometry.padding
        n, c, h, w = x_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        reached = col_index.shape[2]
        padded_w = w + pad.left + pad.right
        direct = pad.is_zero and reached == h  # the padded rows are exactly the input's
        dx = xp.empty(x_shape, dtype=dy.dtype) if direct else xp.zeros(x_shape, dtype=dy.dtype)

        def work(part):
            across = xp.empty(col_index[part].shape, dtype=dy.dtype)  # n, C, R, W_out
            _route(xp, dy[part], row_index[part], kh, sh, across, axis=2)
            if direct:
                _route(xp, across, col_index[part], kw, sw, dx[part], axis=3)
                return
            rows = xp.empty((*across.shape[:3], padded_w), dtype=dy.dtype)
            _route(xp, across, col_index[part], kw, sw, rows, axis=3)
            inside = min(reached - pad.top, h)  # input rows under some window
            dx[part, :, :inside] = rows[:, :, pad.top : pad.top + inside,
                                        pad.left : pad.left + w]

        run_chunks(work, sample_chunks(dy))
        return dx


def pools_first(layer: Layer, following: Layer) -> bool:
    """Whether a container runs `following` before `layer` (forward, and so backward the other
    way round): a ReLU and the max pool that alone reads its output. The maximum of ReLUs is
    the ReLU of the maximum (every window holds a pixel: a pool's padding is at most half its
    window), so the ReLU runs on the pooled output, a quarter of the values of a 2x2 pool's
    input; and the gradients are the same: a window's winner is where its maximum is, which
    is positive exactly where the ReLU passes a gradient (a window of values <= 0 gets none
    either way). Only a window holding a NaN may send its gradient to another tap. With a
    convolution on the blocked training passes before them, the pool's backward then writes
    that convolution's copy of its output gradient (`Conv2d.takes_backward_of`): whole
    training steps, both alternated in one process, 2026-12-05 14:12 UTC, vggish 0.949 of the
    time, convnetjs 0.860, lenet5 0.821, bottleneck 0.828."""
    return type(layer) is ReLU and type(following) is MaxPool2d


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
        ones = padded(xp, xp.ones((1, 1, *hw), dtype=dtype), geometry.padding, 0)
        count = xp.zeros((1, 1, *geometry.out_hw), dtype=dtype)
        for _, u, v in self._taps():
            rows, cols = window_slices(u, v, geometry.out_hw, self.stride)
            count += ones[:, :, rows, cols]
        return count

    def forward(self, x):
        check_input(self, x, 4)
        xp = array_module(x)
        geometry = self.geometry(x.shape[2:])
        xpad = padded(xp, x, geometry.padding, 0)
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

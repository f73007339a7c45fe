"""Conv2d: K filters spanning the full input depth, sliding with a stride over zero-padded input.

In training, a float32 layer of one group (other than 1x1 at stride 1) runs its forward, its
weight gradient and its stride-1 input gradient on the blocked kernels
(`convnet.core.blocked_training`), and keeps the zero-padded blocked copy of its input for
backward; a float32 depthwise layer runs on `convnet.core.depthwise_kernels` (keeping its input
itself). Everything else runs as follows.

Forward is im2col + one matrix product per group, done a chunk of the batch at a time so
that the columns stay in cache (and chunks can go to the worker threads of
`convnet.core.team.run_chunks`); the columns are rebuilt in backward rather than kept, so a
conv keeps only its input, as PyTorch does. At stride 1 the input gradient is the
correlation of the padded output gradient with the flipped filters: the same im2col and
product again, instead of scattering columns back. 1x1 convolution with stride 1 skips
im2col entirely and is the plain matrix product it is. A stride-1 layer with few filters
runs its forward and its input gradient on the compiled direct convolution of
`convnet.core.kernels` instead, where BLAS is slow on such thin products (`worth_compiling` holds
the measured rule). `convnet.core.reference.conv2d` is the loop oracle all of this is tested
against.
"""

from __future__ import annotations

import numpy

from convnet.core import activation_kernels, blocked_training, depthwise_kernels, kernels
from convnet.core.arithmetic import Padding
from convnet.core.backend import array_module, batch_chunks, sliding_windows
from convnet.core.errors import ShapeError
from convnet.core.team import run_chunks
from convnet.nn.activations import ReLU
from convnet.nn.layer import Shape, WeightedLayer, check_input, grad_enabled
from convnet.nn.pooling import MaxPool2d
from convnet.nn.window import WindowLayer, chw, conv_arguments, parse_padding, window_slices

# Bytes of im2col columns per chunk of the batch: enough for large matrix products, small
# enough to stay in this machine's L2/L3 cache between the copy and the product.
CHUNK_BYTES = 2 << 20


def im2col_row(stride, out_w: int, padded_w: int) -> int:
    """Columns per output row in im2col's matrix. At stride 1 every padded column (Wp of them):
    each tap then copies whole padded rows, one contiguous run per image, and the matrix
    products compute Wp - W_out extra outputs per row that are dropped. At other strides just
    the W_out window positions."""
    return padded_w if tuple(stride) == (1, 1) else out_w


def pad_channels_first(xp, x, padding: Padding, guard_rows: int = 0):
    """(n, C, H, W) -> (C, n, H + top + bottom + guard_rows, W + left + right): zero borders
    and zero guard rows at the bottom, in one copy."""
    n, c, h, w = x.shape
    out = xp.empty((c, n, h + padding.top + padding.bottom + guard_rows,
                    w + padding.left + padding.right), dtype=x.dtype)
    if padding.top:
        out[:, :, : padding.top] = 0
    out[:, :, padding.top + h :] = 0
    if padding.left:
        out[:, :, :, : padding.left] = 0
    out[:, :, :, padding.left + w :] = 0
    out[:, :, padding.top : padding.top + h, padding.left : padding.left + w] = (
        x.transpose(1, 0, 2, 3))
    return out


def _tap_start(u: int, v: int, origin, dilation, padded_w: int) -> int:
    """Offset of kernel tap (u, v)'s first window in a flattened padded image (stride 1)."""
    return (origin[0] + u * dilation[0]) * padded_w + origin[1] + v * dilation[1]


def _guard_rows(kernel, dilation, out_h: int, padded_hw, origin=(0, 0)) -> int:
    """Rows of zeros below a flattened padded image so the last tap's run stays inside it."""
    padded_h, padded_w = padded_hw
    end = _tap_start(kernel[0] - 1, kernel[1] - 1, origin, dilation, padded_w) + out_h * padded_w
    return max(0, -(-(end - padded_h * padded_w) // padded_w))


def im2col(xp, x, padding: Padding, kernel, stride, dilation, out_hw, origin=(0, 0)):
    """(n, C, H, W) -> columns (C*KH*KW, n*H_out*R), R = im2col_row(...): rows (c, u, v),
    columns (n, i, j).

    Column (n, i, j < W_out) of row (c, u, v) is xpad[n, c, origin + (i, j)*stride +
    (u, v)*dilation]. The columns are one copy of a strided view of the zero-padded input.
    At stride 1 (R = Wp) tap (u, v) of image n is a single run of the flattened padded image,
    so the columns j >= W_out continue along it (into the next row, or zero guard rows after
    the last): they are finite and computed on, but never used.
    """
    n, c, height, width = x.shape
    padded_hw = (height + padding.top + padding.bottom, width + padding.left + padding.right)
    out_h, out_w = out_hw
    if tuple(stride) == (1, 1):
        row = padded_hw[1]
        guard = _guard_rows(kernel, dilation, out_h, padded_hw, origin)
        flat = pad_channels_first(xp, x, padding, guard).reshape(c, n, -1)  # C, n, (Hp+g)*Wp
        first = flat[:, :, _tap_start(0, 0, origin, dilation, row):]
        item = flat.itemsize
        # [c, u, v, n, t] = flat[c, n, start(u, v) + t]; the guard rows keep the last run of
        # the last tap inside each image (see _guard_rows), so no read leaves the buffer.
        taps = xp.lib.stride_tricks.as_strided(
            first, shape=(c, kernel[0], kernel[1], n, out_h * row),
            strides=(flat.strides[0], dilation[0] * row * item, dilation[1] * item,
                     flat.strides[1], item))
    else:
        row = out_w
        xpad = pad_channels_first(xp, x, padding)  # C, n, Hp, Wp
        extent = ((kernel[0] - 1) * dilation[0] + 1, (kernel[1] - 1) * dilation[1] + 1)
        windows = sliding_windows(xp, xpad, extent)  # C, n, positions h, w, extent h, w
        windows = windows[:, :, origin[0] :: stride[0], origin[1] :: stride[1]]
        windows = windows[:, :, :out_h, :out_w, :: dilation[0], :: dilation[1]]
        taps = windows.transpose(0, 4, 5, 1, 2, 3)  # C, KH, KW, n, Ho, Wo
    return xp.ascontiguousarray(taps).reshape(c * kernel[0] * kernel[1], n * out_h * row)


def col2im(xp, cols, padded_shape, kernel, stride, dilation, out_hw):
    """Adjoint of im2col: (C*KH*KW, n*H_out*R) -> (C, n, Hp, Wp), summing overlaps.

    At stride 1 the columns j >= W_out must hold zeros (they do when the columns are W^T dy
    with dy zero there): they are added into positions no window of row i owns.
    """
    c, n, padded_h, padded_w = padded_shape
    out_h, out_w = out_hw
    row = im2col_row(stride, out_w, padded_w)
    cols = cols.reshape(c, kernel[0], kernel[1], n, out_h * row)
    if tuple(stride) == (1, 1):
        guard = _guard_rows(kernel, dilation, out_h, (padded_h, padded_w))
        flat = xp.zeros((c, n, (padded_h + guard) * padded_w), dtype=cols.dtype)
        for u in range(kernel[0]):
            for v in range(kernel[1]):
                start = _tap_start(u, v, (0, 0), dilation, row)
                flat[:, :, start : start + out_h * row] += cols[:, u, v]
        return flat.reshape(c, n, padded_h + guard, padded_w)[:, :, :padded_h]
    xpad = xp.zeros(padded_shape, dtype=cols.dtype)
    taps = cols.reshape(c, kernel[0], kernel[1], n, out_h, out_w)
    for u in range(kernel[0]):
        for v in range(kernel[1]):
            rows, columns = window_slices(u * dilation[0], v * dilation[1], out_hw, stride)
            xpad[:, :, rows, columns] += taps[:, u, v]
    return xpad


class Conv2d(WindowLayer, WeightedLayer):
    """(N, C, H, W) -> (N, K, H_out, W_out), H_out = (H - F + 2P)/S + 1.

    weight (K, C/groups, KH, KW) and bias (K,) use PyTorch's layout, so weights copy across.
    padding='same' works with any stride: output ceil(H/S), extra pixel bottom/right.
    """

    kind = "conv"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, *, strict: bool | None = None,
                 init: str = "kaiming", dtype=numpy.float32):
        super().__init__()
        conv_arguments(self, in_channels, out_channels, kernel_size, stride, dilation, groups)
        self.padding = parse_padding(padding, "Conv2d")
        self.strict = strict
        self._create_parameters((out_channels, in_channels // groups, *self.kernel_size), bias,
                                init, dtype)

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
        out = xp.empty((n, self.out_channels, *geometry.out_hw), dtype=x.dtype)  # N, K, Ho, Wo
        if self.is_pointwise:
            kept = x.reshape(n, self.in_channels, -1)  # no copy: it already is im2col
            run_chunks(lambda part: self._pointwise_forward(xp, kept[part], out[part]),
                       self._chunks(x.shape))
        elif grad_enabled() and depthwise_kernels.usable(self, x):
            kept = depthwise_kernels.forward(self, x, out, geometry)  # x itself
        elif grad_enabled() and blocked_training.usable(self, x):
            kept = blocked_training.forward(self, x, out, geometry)  # the padded input
        elif kernels.worth_compiling(self, x, self.out_channels, self.in_channels,
                                     geometry.out_hw[1]):
            kept = x  # backward rebuilds the columns from the input
            self._direct_forward(x, out, geometry)
        else:
            kept = x  # backward rebuilds the columns from the input
            run_chunks(lambda part: self._forward_chunk(xp, x[part], out[part], geometry),
                       self._chunks(x.shape))
        if grad_enabled():
            self.cache = (x.shape, kept, geometry)
        return out

    def backward(self, dy, input_grad: bool = True):
        """Parameter gradients, and the input gradient unless input_grad=False (then None)."""
        x_shape, kept, geometry = self._take_cache()
        xp = array_module(dy)
        if isinstance(kept, blocked_training.Kept):  # makes dx itself, after the weights'
            dweight, dbias, dx = blocked_training.backward(
                self, kept, dy, x_shape if input_grad else None, geometry)
            self._add_grads([(dweight, dbias)])
            return dx
        dx = xp.empty(x_shape, dtype=dy.dtype) if input_grad else None
        dx_part = (lambda part: dx[part]) if input_grad else (lambda part: None)
        if isinstance(kept, depthwise_kernels.Kept):
            dweight, dbias = depthwise_kernels.backward(self, kept, dy, geometry, dx)
            grads = [(dweight, dbias)]
        elif self.is_pointwise:
            kept_dy = dy.reshape(*dy.shape[:2], -1)  # N, K, P
            grads = run_chunks(
                lambda part: self._pointwise_backward(xp, kept[part], kept_dy[part],
                                                      dx_part(part)),
                self._chunks(x_shape))
        else:
            by_kernel = input_grad and self._input_grad_by_kernel(kept, geometry)
            flipped = self._flipped_weight(xp) if input_grad and not by_kernel and (
                self._dx_by_correlation(x_shape, geometry)) else None
            grads = run_chunks(
                lambda part: self._backward_chunk(
                    xp, kept[part], dy[part], None if by_kernel else dx_part(part), geometry,
                    flipped),
                self._chunks(x_shape))
            if by_kernel:
                self._direct_input_grad(dy, dx, geometry)
        self._add_grads(grads)
        return dx

    def _add_grads(self, grads) -> None:
        """Add [(dweight, dbias)] (one per chunk of the batch) to the parameters' gradients."""
        self.weight.grad += sum(dweight for dweight, _ in grads).reshape(self.weight.shape)
        if self.bias is not None and grads[0][1] is not None:
            self.bias.grad += sum(dbias for _, dbias in grads).reshape(self.out_channels)

    def backward_parameters(self, dy) -> None:
        self.backward(dy, input_grad=False)

    def takes_backward_of(self, activation, dy) -> bool:
        """A ReLU after a layer on the blocked training passes: its mask is applied in the copy
        those passes make of dy anyway (`blocked_training.backward`), with no pass of its own
        and no array for its input gradient (with the bias sums made in the same copy, whole
        training steps 0.94-0.98 of the time: docs/performance.md, 2026-12-04 16:10). A max
        pool after one (on its compiled passes): its backward writes the copy itself."""
        if not (self.cache is not None and isinstance(self.cache[1], blocked_training.Kept)
                and type(dy) is numpy.ndarray and dy.dtype == numpy.float32):
            return False
        if type(activation) is MaxPool2d:
            cache = activation.cache
            return (cache is not None and cache[3] is None  # (None: the compiled forward's)
                    and cache[0] == self.cache[0][:1] + (self.out_channels,
                                                         *self.cache[2].out_hw)
                    and cache[2].shape == dy.shape)
        return (type(activation) is ReLU
                and activation_kernels.usable_mask(activation.cache, dy.shape))

    def backward_activated(self, dy, activation, input_grad: bool = True):
        if not self.takes_backward_of(activation, dy):
            return super().backward_activated(dy, activation, input_grad)
        mask = pooled = None
        if type(activation) is MaxPool2d:
            x_shape, geometry, taps, _ = activation._take_cache()
            pooled = blocked_training.Pooled(taps, activation.kernel_size, activation.stride,
                                             geometry.padding, x_shape)
        else:
            mask = activation._take_cache()
        x_shape, kept, geometry = self._take_cache()
        dweight, dbias, dx = blocked_training.backward(
            self, kept, dy, x_shape if input_grad else None, geometry, mask, pooled)
        self._add_grads([(dweight, dbias)])
        return dx

    # -- the compiled kernel (stride 1, few filters: see convnet.core.kernels) --------------------
    def _direct_forward(self, x, out, geometry) -> None:
        tile = kernels.tile_for(geometry.out_hw[1])  # (filters, columns)
        weights = kernels.forward_weights(self.weight.data, tile[0])  # C, KH, KW, K (padded)
        bias = kernels.padded_bias(None if self.bias is None else self.bias.data,
                                   self.out_channels, tile[0], x.dtype)
        out_w, kernel_w = geometry.out_hw[1], self.kernel_size[1]
        run_chunks(lambda part: kernels.conv_forward(
            kernels.padded_input(x[part], geometry.padding, out_w, kernel_w, tile[1]), weights,
            bias, out[part], tile), self._chunks(x.shape))

    def _input_grad_by_kernel(self, x, geometry) -> bool:
        pad = geometry.padding
        kh, kw = self.kernel_size
        # dy is padded by the kernel's extent minus the forward padding: never negative.
        return (max(pad.top, pad.bottom) < kh and max(pad.left, pad.right) < kw
                and kernels.worth_compiling(self, x, self.in_channels, self.out_channels,
                                            x.shape[3]))

    def _direct_input_grad(self, dy, dx, geometry) -> None:
        """dx (n, C, H, W), in place: dy correlated with the flipped filters, channels swapped."""
        pad = geometry.padding
        kh, kw = self.kernel_size
        around = Padding(kh - 1 - pad.top, kh - 1 - pad.bottom, kw - 1 - pad.left,
                         kw - 1 - pad.right)
        tile = kernels.tile_for(dx.shape[3])
        flipped = kernels.flipped_weights(self.weight.data, tile[0])  # K, KH, KW, C (padded)
        no_bias = kernels.padded_bias(None, self.in_channels, tile[0], dy.dtype)
        dy = numpy.ascontiguousarray(dy)
        run_chunks(lambda part: kernels.conv_forward(
            kernels.padded_input(dy[part], around, dx.shape[3], kw, tile[1]), flipped, no_bias,
            dx[part], tile), self._chunks(dx.shape))

    # -- one chunk of the batch (run on a worker thread) ------------------------------------
    def _chunks(self, x_shape):
        n, _, height, width = x_shape
        out_h, out_w = self.geometry((height, width)).out_hw
        column_bytes = (self.in_channels * self.kernel_size[0] * self.kernel_size[1]
                        * out_h * out_w * self.weight.data.itemsize)
        return batch_chunks(n, column_bytes, CHUNK_BYTES)

    def _grouped_weight(self):
        return self.weight.data.reshape(self.groups, self.out_channels // self.groups, -1)

    def _forward_chunk(self, xp, x, out, geometry):
        """x (n, C, H, W) -> out (n, K, Ho, Wo), written in place."""
        n = x.shape[0]
        out_h, out_w = geometry.out_hw
        cols = im2col(xp, x, geometry.padding, self.kernel_size, self.stride, self.dilation,
                      geometry.out_hw)  # C*KH*KW, n*Ho*R
        y = xp.matmul(self._grouped_weight(), cols.reshape(self.groups, -1, cols.shape[1]))
        y = y.reshape(self.out_channels, n, out_h, -1)[..., :out_w]  # K, n, Ho, Wo (a view)
        if self.bias is None:
            out[...] = y.transpose(1, 0, 2, 3)
        else:
            xp.add(y.transpose(1, 0, 2, 3), self.bias.data[:, None, None], out=out)

    def _backward_chunk(self, xp, x, dy, dx, geometry, flipped):
        """Gradients of one chunk: (dweight (G, K/G, C/G*KH*KW), dbias (K,)); dx in place."""
        n, channels, height, width = x.shape
        groups = self.groups
        pad = geometry.padding
        out_h, out_w = geometry.out_hw
        row = im2col_row(self.stride, out_w, width + pad.left + pad.right)
        dy_k = xp.empty((self.out_channels, n, out_h, row), dtype=dy.dtype)  # K, n, Ho, R
        dy_k[..., :out_w] = dy.transpose(1, 0, 2, 3)
        dy_k[..., out_w:] = 0  # the columns im2col computes past each row's last window
        dy_k = dy_k.reshape(groups, self.out_channels // groups, -1)
        cols = im2col(xp, x, pad, self.kernel_size, self.stride, self.dilation, geometry.out_hw)
        cols = cols.reshape(groups, -1, cols.shape[1])
        dweight = xp.matmul(dy_k, cols.swapaxes(-1, -2))  # dW = dy @ cols^T per group
        dbias = dy_k.sum(axis=-1)
        if dx is None:
            return dweight, dbias
        if flipped is not None:
            # Stride 1: dx = correlation of dy with the flipped filters (channels swapped),
            # dx[p] = sum_u w[KH-1-u] dy[p + top - E + u*d], E = (KH-1)*d the kernel's extent:
            # dy zero-padded by E - top before and E - bottom after (where the forward's own
            # padding is larger, the window origin moves in instead).
            eh = (self.kernel_size[0] - 1) * self.dilation[0]
            ew = (self.kernel_size[1] - 1) * self.dilation[1]
            around = Padding(max(eh - pad.top, 0), max(eh - pad.bottom, 0),
                             max(ew - pad.left, 0), max(ew - pad.right, 0))
            origin = (max(pad.top - eh, 0), max(pad.left - ew, 0))
            dy_cols = im2col(xp, dy, around, self.kernel_size, (1, 1), self.dilation,
                             (height, width), origin)  # K*KH*KW, n*H*R
            dx_c = xp.matmul(flipped, dy_cols.reshape(groups, -1, dy_cols.shape[1]))
            dx[...] = dx_c.reshape(channels, n, height, -1)[..., :width].transpose(1, 0, 2, 3)
        else:
            self._scatter_input_grad(xp, dy, dx, geometry, dy_k)
        return dweight, dbias

    def _scatter_input_grad(self, xp, dy, dx, geometry, dy_k=None) -> None:
        """dx (n, C, H, W) in place: dcols = W^T @ dy, scattered back onto the padded input
        tap by tap. dy_k: dy as (G, K/G, n*Ho*R) when the caller has it."""
        n, channels, height, width = dx.shape
        pad = geometry.padding
        if dy_k is None:
            out_h, out_w = geometry.out_hw
            row = im2col_row(self.stride, out_w, width + pad.left + pad.right)
            dy_k = xp.zeros((self.out_channels, n, out_h, row), dtype=dy.dtype)  # K, n, Ho, R
            dy_k[..., :out_w] = dy.transpose(1, 0, 2, 3)
            dy_k = dy_k.reshape(self.groups, self.out_channels // self.groups, -1)
        dcols = xp.matmul(self._grouped_weight().swapaxes(-1, -2), dy_k)
        padded = (channels, n, height + pad.top + pad.bottom, width + pad.left + pad.right)
        dxpad = col2im(xp, dcols, padded, self.kernel_size, self.stride, self.dilation,
                       geometry.out_hw)
        dx[...] = dxpad[:, :, pad.top : pad.top + height,
                        pad.left : pad.left + width].transpose(1, 0, 2, 3)

    def _dx_by_correlation(self, x_shape, geometry) -> bool:
        """At stride 1, whether to get dx by correlating dy with the flipped filters (an im2col
        of dy: K*H*W values per kernel tap) rather than by scattering W^T dy back (col2im:
        C*H_out*W_out values per tap). The scatter's read-modify-write costs about twice a copy
        per value here, hence the factor 2 (measured on the reference networks)."""
        if self.stride != (1, 1):
            return False
        out_h, out_w = geometry.out_hw
        return (self.out_channels * x_shape[2] * x_shape[3]
                < 2 * self.in_channels * out_h * out_w)

    def _flipped_weight(self, xp):
        """(G, C/G, K/G*KH*KW): w[g*K/G + k, c, KH-1-u, KW-1-v] at [g, c, (k, u, v)]."""
        groups, kh, kw = self.groups, *self.kernel_size
        w = self.weight.data.reshape(groups, self.out_channels // groups, -1, kh, kw)
        flipped = w[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)
        return xp.ascontiguousarray(flipped).reshape(groups, flipped.shape[1], -1)

    def _pointwise_forward(self, xp, x, out):
        """x (n, C, P) -> out (n, K, Ho, Wo): one product per sample, in place."""
        n, positions = x.shape[0], x.shape[2]
        out = out.reshape(n, self.groups, -1, positions)  # n, G, K/G, P
        xp.matmul(self._grouped_weight(), x.reshape(n, self.groups, -1, positions), out=out)
        if self.bias is not None:
            out += self.bias.data.reshape(self.groups, -1, 1)

    def _pointwise_backward(self, xp, x, dy, dx):
        n, positions, groups = x.shape[0], x.shape[2], self.groups
        dy_g = dy.reshape(n, groups, -1, positions)
        x_g = x.reshape(n, groups, -1, positions)
        # dW = sum_n dy[n] @ x[n]^T: a product per sample, summed (one product over n*P
        # columns needed transposed copies of dy and x, which took longer than the products)
        dweight = xp.matmul(dy_g, x_g.swapaxes(-1, -2)).sum(axis=0)  # G, K/G, C/G
        # over pixels (pairwise, float32), then over samples in float64: the samples' partial
        # sums are added one after the other, where float32 would lose digits to cancellation
        dbias = dy_g.sum(axis=3).sum(axis=0, dtype=numpy.float64)  # G, K/G
        if dx is not None:
            xp.matmul(self._grouped_weight().swapaxes(-1, -2), dy_g,
                      out=dx.reshape(n, groups, -1, positions))
        return dweight, dbias

    def param_formula(self, input_shape: Shape) -> str:
        kh, kw = self.kernel_size
        per_filter = f"{kh}*{kw}*{self.in_channels // self.groups}"
        per_filter = f"({per_filter} + 1)" if self.bias is not None else per_filter
        return f"{self.out_channels} x {per_filter} = {self.num_parameters():,}"

    def weight_sharing(self, input_shape: Shape, output_shape: Shape) -> dict:
        """Lecture 5's parameter sharing in numbers: this layer's parameters (one filter per
        output map, shared by every position), a locally connected layer (a filter of its own at
        every output position: H_out*W_out*K filters) and a fully connected layer (every input
        value to every output value, plus a bias per output) producing the same volume.

        LeNet-5's conv1 on 1x28x28: 6 x 26 = 156, 28*28*6 x 26 = 122,304 and
        784 x 4,704 + 4,704 = 3,692,640."""
        channels, height, width = (int(v) for v in input_shape)
        k, out_h, out_w = (int(v) for v in output_shape)
        kh, kw = self.kernel_size
        per_filter = kh * kw * (channels // self.groups) + (1 if self.bias is not None else 0)
        inputs, outputs = channels * height * width, k * out_h * out_w
        bias = outputs if self.bias is not None else 0
        local = out_h * out_w * k * per_filter
        full = inputs * outputs + bias
        return {
            "conv": {"params": k * per_filter, "text": f"{k} x {per_filter} = {k * per_filter:,}"},
            "locally_connected": {"params": local,
                                  "text": f"{out_h}*{out_w}*{k} x {per_filter} = {local:,}"},
            "fully_connected": {"params": full,
                                "text": f"{inputs:,} x {outputs:,}"
                                        + (f" + {outputs:,}" if bias else "") + f" = {full:,}"},
            "per_filter": per_filter, "positions": out_h * out_w,
        }

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


def _channel_error(layer: Conv2d, channels: int, input_shape: Shape) -> ShapeError:
    return ShapeError(
        f"{layer.name} (Conv2d): in_channels={layer.in_channels} but the input reaching it has "
        f"{channels} channels (shape {tuple(input_shape)}); set in_channels={channels} or "
        f"change the layer before it"
    )

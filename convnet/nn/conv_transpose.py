"""ConvTranspose2d: the adjoint of Conv2d, the learned upsampling of decoders (U-Net, DCGAN).

Each input pixel spreads its C-vector through the kernel onto a window of the output:
out[n, k, i*S - P + u*D, j*S - P + v*D] += w[c, k, u, v] * x[n, c, i, j], so
H_out = (H - 1)*S - 2P + D*(F - 1) + output_padding + 1 (`convnet.core.arithmetic`).

That is Conv2d's input gradient run forward, and it is computed the same way: one product
W^T x per group gives every tap's contribution as columns, which `col2im` of `convnet.nn.conv`
scatters onto the output canvas, the padding then cropped off. At stride 1 it is also a plain
correlation of the padded input with the flipped filters, which is used where it moves less
data (as Conv2d's input gradient does). Backward is a plain Conv2d of dy with the same weight:
one `im2col` of dy gives both dx (W dy_cols) and dW (x dy_cols^T).
Batches go in chunks over the worker threads of `convnet.core.team.run_chunks`, as in
Conv2d. `convnet.core.reference.conv_transpose2d` is the loop oracle this is tested against.
"""

from __future__ import annotations

import numpy

from convnet.core import blocked_training
from convnet.core.arithmetic import (
    Padding,
    ReceptiveField,
    TransposedShape,
    check_output_padding,
    effective_size,
    pair,
    transposed_output,
    transposed_padding,
    transposed_size_formula,
)
from convnet.core.backend import array_module, batch_chunks
from convnet.core.errors import ShapeError
from convnet.core.team import run_chunks
from convnet.nn.conv import CHUNK_BYTES, col2im, im2col, im2col_row
from convnet.nn.init import initial_weight
from convnet.nn.layer import Shape, WeightedLayer, check_input, grad_enabled
from convnet.nn.parameter import Parameter
from convnet.nn.window import chw, conv_arguments


class ConvTranspose2d(WeightedLayer):
    """(N, C, H, W) -> (N, K, H_out, W_out), H_out = (H - 1)*S - 2P + D*(F - 1) + out_pad + 1.

    PyTorch's arguments in PyTorch's order, and its layout: weight (C, K/groups, KH, KW), bias
    (K,), so weights copy across. padding (int or (h, w)) is cropped from each side of the full
    output; output_padding (< stride or dilation) adds rows/cols at the bottom/right, choosing
    among the output sizes a stride-S Conv2d maps back to H. Strings are refused, as in PyTorch.
    """

    kind = "deconv"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, groups: int = 1, bias: bool = True, dilation=1, *,
                 init: str = "kaiming", dtype=numpy.float32):
        super().__init__()
        label = "ConvTranspose2d"
        conv_arguments(self, in_channels, out_channels, kernel_size, stride, dilation, groups)
        self.padding = transposed_padding(padding, self.kernel_size, self.stride, self.dilation,
                                          label)
        self.output_padding = pair(output_padding, "output_padding", label)
        check_output_padding(self.output_padding, self.stride, self.dilation, label)
        # PyTorch's layout: one (K/groups, KH, KW) stamp per input channel; bias per output.
        self.init = init
        self.weight = Parameter(numpy.zeros(
            (in_channels, out_channels // groups, *self.kernel_size), dtype=dtype))
        self.bias = Parameter(numpy.zeros(out_channels, dtype=dtype)) if bias else None
        self.reset_parameters()

    def fans(self) -> tuple[float, float]:
        """(fan_in, fan_out) as the forward sees them.

        Each output pixel sums C/groups channels times, on average, KH*KW/(SH*SW) taps (a tap
        lands on every S-th output row), so Kaiming's std = sqrt(2/fan_in) keeps the forward's
        activation variance, as it does for Conv2d here. PyTorch instead takes the fans of the
        weight's shape, K/groups*KH*KW, which for this layout is the number of outputs each
        input pixel feeds: the fan-out, so its init keeps the backward's variance and scales
        activations by sqrt(C*S*S/K) (e.g. 2x for a decoder's 64 -> 32 channels, stride 2).
        """
        kh, kw = self.kernel_size
        taps = kh * kw
        return (self.in_channels // self.groups * taps / (self.stride[0] * self.stride[1]),
                self.out_channels // self.groups * taps)

    def reset_parameters(self) -> None:
        self.weight.data[...] = initial_weight(self.weight.shape, self.init,
                                               self.weight.data.dtype, fan=self.fans())
        if self.bias is not None:
            self.bias.data[...] = 0

    # -- arithmetic --------------------------------------------------------------------------
    def geometry(self, hw) -> TransposedShape:
        """Output size, padding and output_padding for spatial input size hw."""
        hw = (int(hw[0]), int(hw[1]))
        cached = self._geometry_cache.get(hw) if hasattr(self, "_geometry_cache") else None
        if cached is None:
            cached = transposed_output(hw, self.kernel_size, self.stride, self.padding,
                                       self.dilation, self.output_padding, layer=self.name)
            self._geometry_cache = {hw: cached}
        return cached

    def output_shape(self, input_shape: Shape) -> Shape:
        channels, height, width = chw(self, input_shape)
        if channels != self.in_channels:
            raise ShapeError(
                f"{self.name} (ConvTranspose2d): in_channels={self.in_channels} but the input "
                f"reaching it has {channels} channels (shape {tuple(input_shape)}); set "
                f"in_channels={channels} or change the layer before it"
            )
        return (self.out_channels, *self.geometry((height, width)).out_hw)

    def size_fix(self, input_shape: Shape, target_hw) -> str | None:
        """The output_padding that gives target_hw, when one within the rule exists."""
        hw = self.geometry(input_shape[-2:]).out_hw
        wanted = tuple(self.output_padding[i] + int(target_hw[i]) - hw[i] for i in range(2))
        limits = tuple(max(self.stride[i], self.dilation[i]) for i in range(2))
        if wanted == self.output_padding or any(not 0 <= wanted[i] < limits[i]
                                                for i in range(2)):
            return None
        value = wanted[0] if wanted[0] == wanted[1] else wanted
        return (f"{self.name} (ConvTranspose2d) with output_padding={value} gives "
                f"{target_hw[0]}x{target_hw[1]}")

    def size_formula(self, input_shape: Shape) -> str:
        """'(14 - 1)*2 - 2*1 + 1*(3 - 1) + 1 + 1 = 28', once, or per axis when they differ."""
        hw = tuple(input_shape[-2:])
        return transposed_size_formula(hw, self.kernel_size, self.stride, self.dilation,
                                       self.geometry(hw))

    def _canvas_hw(self, hw) -> tuple[int, int]:
        """Rows and cols every tap of every input pixel lands in, (H - 1)*S + D*(F - 1) + 1,
        and the output_padding rows past them that no input reaches (when it exceeds P)."""
        return tuple(
            (hw[a] - 1) * self.stride[a] + effective_size(self.kernel_size[a], self.dilation[a])
            + max(self.output_padding[a] - self.padding[a], 0)
            for a in range(2))

    # -- forward and backward ----------------------------------------------------------------
    def forward(self, x):
        check_input(self, x, 4, self.in_channels, dtype=self.weight.data.dtype)
        xp = array_module(x)
        geometry = self.geometry(x.shape[2:])
        out = xp.empty((x.shape[0], self.out_channels, *geometry.out_hw),
                       dtype=x.dtype)  # N, K, H_out, W_out
        if grad_enabled() and blocked_training.usable_transposed(self, x):
            kept, around = blocked_training.transposed_forward(self, x, out, geometry)
            self.cache = (kept, geometry, around, x.shape)
            return out
        if self._by_correlation(x.shape, geometry):
            flipped = self._flipped_weight(xp)
            run_chunks(lambda part: self._correlate_chunk(xp, x[part], out[part], geometry,
                                                          flipped), self._chunks(x.shape))
        else:
            run_chunks(lambda part: self._forward_chunk(xp, x[part], out[part], geometry),
                       self._chunks(x.shape))
        if grad_enabled():
            self.cache = (x, geometry)
        return out

    def backward(self, dy, input_grad: bool = True):
        """Parameter gradients, and the input gradient unless input_grad=False (then None)."""
        cached = self._take_cache()
        if isinstance(cached[0], blocked_training.Kept):  # the blocked kernels' forward
            kept, _, around, x_shape = cached
            dweight, dbias, dx = blocked_training.transposed_backward(
                self, kept, around, dy, x_shape if input_grad else None)
            self.weight.grad += dweight
            if self.bias is not None:
                self.bias.grad += dbias
            return dx
        x, geometry = cached
        xp = array_module(dy)
        dx = xp.empty(x.shape, dtype=dy.dtype) if input_grad else None  # N, C, H, W
        grads = run_chunks(
            lambda part: self._backward_chunk(xp, x[part], dy[part],
                                              dx[part] if input_grad else None, geometry),
            self._chunks(x.shape))
        self.weight.grad += sum(dweight for dweight, _ in grads).reshape(self.weight.shape)
        if self.bias is not None:
            self.bias.grad += sum(dbias for _, dbias in grads)
        return dx

    def backward_parameters(self, dy) -> None:
        self.backward(dy, input_grad=False)

    def _chunks(self, x_shape):
        n, _, height, width = x_shape
        kh, kw = self.kernel_size
        out_h, out_w = self.geometry((height, width)).out_hw
        # Columns per sample: K*KH*KW per input pixel (scatter, and backward's im2col of dy),
        # or C*KH*KW per output pixel (correlation at stride 1).
        columns = kh * kw * max(self.out_channels * height * width,
                                self.in_channels * out_h * out_w)
        return batch_chunks(n, columns * self.weight.data.itemsize, CHUNK_BYTES)

    def _grouped_weight(self):
        """(G, C/G, K/G*KH*KW): the weight of the Conv2d (K -> C) this is the adjoint of."""
        return self.weight.data.reshape(self.groups, self.in_channels // self.groups, -1)

    def _channels_first(self, xp, x, row: int):
        """(n, C, H, W) -> (G, C/G, n*H*row), zeros in columns W..row-1 (im2col's layout at
        stride 1, where each output row of the matching Conv2d spans the padded width)."""
        n, channels, height, width = x.shape
        x_k = xp.empty((channels, n, height, row), dtype=x.dtype)  # C, n, H, R
        x_k[..., :width] = x.transpose(1, 0, 2, 3)
        x_k[..., width:] = 0
        return x_k.reshape(self.groups, channels // self.groups, -1)

    def _forward_chunk(self, xp, x, out, geometry):
        """x (n, C, H, W) -> out (n, K, H_out, W_out), written in place."""
        n, _, height, width = x.shape
        canvas_hw = self._canvas_hw((height, width))
        x_k = self._channels_first(xp, x, im2col_row(self.stride, width, canvas_hw[1]))
        # Every tap of every pixel: (G, K/G*KH*KW, C/G) @ (G, C/G, n*H*R) -> rows (k, u, v).
        cols = xp.matmul(self._grouped_weight().swapaxes(-1, -2), x_k)
        canvas = col2im(xp, cols.reshape(-1, cols.shape[-1]),
                        (self.out_channels, n, *canvas_hw), self.kernel_size, self.stride,
                        self.dilation, (height, width))  # K, n, Hc, Wc
        top, left = self.padding
        out_h, out_w = geometry.out_hw
        y = canvas[:, :, top : top + out_h, left : left + out_w].transpose(1, 0, 2, 3)
        if self.bias is None:
            out[...] = y
        else:
            xp.add(y, self.bias.data[:, None, None], out=out)

    def _by_correlation(self, x_shape, geometry) -> bool:
        """At stride 1, whether to correlate the padded input with the flipped filters (an
        im2col of x: C*H_out*W_out values per kernel tap, then a product over C*KH*KW) rather
        than scatter W^T x onto the output (col2im: K*H*W values per tap, read-modify-write).
        Conv2d's input gradient is the same computation and decides by the same rule
        (`Conv2d._dx_by_correlation`). Measured here (batch 32, one thread, paired medians):
        correlation 10-20% faster where the rule picks it (16 -> 64 channels 3x3 on 32x32,
        5x5, 128 -> 128 on 8x8), even for 32 -> 32 3x3 on 16x16, 1.5x slower for 64 -> 16,
        where the rule keeps the scatter."""
        if self.stride != (1, 1):
            return False
        out_h, out_w = geometry.out_hw
        return self.in_channels * out_h * out_w < 2 * self.out_channels * x_shape[2] * x_shape[3]

    def _flipped_weight(self, xp):
        """(G, K/G, C/G*KH*KW): w[g*C/G + c, k, KH-1-u, KW-1-v] at [g, k, (c, u, v)]."""
        groups, kh, kw = self.groups, *self.kernel_size
        w = self.weight.data.reshape(groups, self.in_channels // groups, -1, kh, kw)
        flipped = w[:, :, :, ::-1, ::-1].transpose(0, 2, 1, 3, 4)  # G, K/G, C/G, KH, KW
        return xp.ascontiguousarray(flipped).reshape(groups, flipped.shape[1], -1)

    def _correlate_chunk(self, xp, x, out, geometry, flipped):
        """Stride 1: out[o] = sum_u w[u] x[o + P - u*D] = sum_u w[F-1-u] x[o + P - E + u*D],
        E = D*(F - 1): x zero-padded by E - P before and E - P + output_padding after (where P
        is larger than E, the window origin moves in instead), correlated with the flipped
        filters, channels swapped."""
        n = x.shape[0]
        eh = (self.kernel_size[0] - 1) * self.dilation[0]
        ew = (self.kernel_size[1] - 1) * self.dilation[1]
        (top, left), (extra_h, extra_w) = self.padding, self.output_padding
        around = Padding(max(eh - top, 0), max(eh - top + extra_h, 0),
                         max(ew - left, 0), max(ew - left + extra_w, 0))
        origin = (max(top - eh, 0), max(left - ew, 0))
        out_h, out_w = geometry.out_hw
        cols = im2col(xp, x, around, self.kernel_size, (1, 1), self.dilation, geometry.out_hw,
                      origin)  # C*KH*KW, n*H_out*R
        y = xp.matmul(flipped, cols.reshape(self.groups, -1, cols.shape[1]))  # G, K/G, n*Ho*R
        y = y.reshape(self.out_channels, n, out_h, -1)[..., :out_w].transpose(1, 0, 2, 3)
        if self.bias is None:
            out[...] = y
        else:
            xp.add(y, self.bias.data[:, None, None], out=out)

    def _backward_chunk(self, xp, x, dy, dx, geometry):
        """Gradients of one chunk: (dweight (G, C/G, K/G*KH*KW), dbias (K,)); dx in place.

        dx[n, c, i, j] = sum_{k,u,v} w[c, k, u, v] dy[n, k, i*S - P + u*D, j*S - P + v*D]: a
        Conv2d of dy padded by P before and P - output_padding after (the rows output_padding
        added past the last window are not read)."""
        n, channels, height, width = x.shape
        top, left = self.padding
        extra_h, extra_w = self.output_padding
        pad = Padding(top, max(top - extra_h, 0), left, max(left - extra_w, 0))
        dy_cols = im2col(xp, dy, pad, self.kernel_size, self.stride, self.dilation,
                         (height, width))  # K*KH*KW, n*H*R
        dy_cols = dy_cols.reshape(self.groups, -1, dy_cols.shape[1])  # G, K/G*KH*KW, n*H*R
        row = dy_cols.shape[2] // (n * height)
        # Columns past W are junk at stride 1 (im2col runs on along the padded row); x_k is
        # zero there, so they add nothing to dW.
        x_k = self._channels_first(xp, x, row)  # G, C/G, n*H*R
        dweight = xp.matmul(x_k, dy_cols.swapaxes(-1, -2))
        # Summed in float64: a float32 sum over N*H_out*W_out values drifted 2.6e-6 of the
        # largest value from the exact sum (PyTorch 1.6e-6), float64 6e-8.
        dbias = dy.sum(axis=(0, 2, 3), dtype=numpy.float64)
        if dx is not None:
            dx_c = xp.matmul(self._grouped_weight(), dy_cols)  # G, C/G, n*H*R
            dx[...] = dx_c.reshape(channels, n, height, row)[..., :width].transpose(1, 0, 2, 3)
        return dweight, dbias

    # -- description (summary, CLI, web page) ------------------------------------------------
    def receptive_field(self, field: ReceptiveField, input_shape: Shape) -> ReceptiveField:
        padding = self.geometry(input_shape[1:]).padding
        return field.through_transposed(self.kernel_size, self.stride, self.dilation, padding)

    def param_formula(self, input_shape: Shape) -> str:
        """'C x KH*KW*K/groups + K': each input channel's stamp, then the biases."""
        kh, kw = self.kernel_size
        text = f"{self.in_channels} x {kh}*{kw}*{self.out_channels // self.groups}"
        if self.bias is not None:
            text += f" + {self.out_channels}"
        return f"{text} = {self.num_parameters():,}"

    def macs(self, input_shape: Shape, output_shape: Shape) -> int:
        """Every input pixel times every weight of its group, as computed (taps that land in
        the cropped padding included, as PyTorch computes them too)."""
        kh, kw = self.kernel_size
        return (self.in_channels * (self.out_channels // self.groups) * kh * kw
                * input_shape[1] * input_shape[2])

    def extra_repr(self) -> str:
        parts = [str(self.in_channels), str(self.out_channels),
                 f"kernel_size={_compact(self.kernel_size)}"]
        for name, default in (("stride", (1, 1)), ("padding", (0, 0)),
                              ("output_padding", (0, 0))):
            if getattr(self, name) != default:
                parts.append(f"{name}={_compact(getattr(self, name))}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.bias is None:
            parts.append("bias=False")
        if self.dilation != (1, 1):
            parts.append(f"dilation={_compact(self.dilation)}")
        return ", ".join(parts)


def _compact(value: tuple[int, int]):
    return value[0] if value[0] == value[1] else value

"""A convolution's training passes on the blocked kernels of `convnet.core.blocked`.

Training runs layer by layer on plain (N, C, H, W) arrays, so each pass converts at its edges,
where inference keeps the blocked layout between layers:

- forward: x is copied once into a zero-padded blocked buffer (N, C/8, Hp, Wp, 8) (a plain
  one, (N, C, Hp, Wp), when C < 8: blocks would waste most of each tap, or where the row
  kernel takes the layer: `forward_plan`) and the direct convolution writes its output
  straight into the plain (N, K, Ho, Wo) array. The padded copy is what the layer keeps for
  backward, in place of x;
- weight gradient: the blocked output gradient and that padded copy, on `weight_grad`'s tiles
  (8 taps x 32 output channels with full-rate AVX-512, 4 x 32 at half rate, 4 x 16 on AVX2:
  `blocked.weight_grad_blocks`, `blocked.weight_grad_taps`),
  a group of images' worth of each in cache at a time, the batch split over the worker
  threads, each summing into its own copy;
- input gradient: the transposed convolution of the output gradient (blocked with the zeros
  its reads need around it), phase by phase (`blocked.transposed_phases`: at stride 1 one
  phase, the flipped filters with channels swapped) on the same direct convolution, each
  phase written into its rows and columns of the plain dx;
- Winograd: a 3x3 layer of 64 channels and filters or more (`winograd_fits`) runs its forward,
  input gradient and weight gradient as Winograd F(2x2, 3x3) instead (`_run_winograd`: the
  blocked copy transformed tile by tile, 16 1x1 products, the output side into the plain
  array; `_winograd_weight_grad`: the input's and the output gradient's tiles transformed, 16
  1x1 weight gradients, G^T dU G), where the direct kernels are at the cores' peak and
  Winograd does 2.25x fewer multiply-adds.

Everything is tested against the NumPy im2col path of `convnet.nn.conv` and PyTorch
(tests/test_blocked_training.py); `usable` says which layers take it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy

from convnet.core import blocked, kernels, pool_kernels
from convnet.core.arithmetic import Padding
from convnet.core.backend import num_threads, sample_chunks, thread_slices
from convnet.core.team import run_task

LANES = blocked.LANES
# The tile for a plain output, whatever the filter count: 6 positions x 2 blocks was the fastest
# or as fast as the others on every layer measured (one thread, batch 128, forward): 16 -> 20
# filters 5x5 on 16x16 9.7 ms against 10.6 for 4 x 3 (which `blocked.choose_tile` picks for a
# blocked output) and 13.9 for 8 x 1; 20 -> 20 on 8x8 3.3/4.1/5.5; 32 -> 32 3x3 on 32x32
# 28/58/46; 20 -> 16 6.1/14.8/11.7; 8 -> 8 0.90/1.91/0.89; 1 -> 6 0.96/1.69/0.92. With
# AVX-512 8 x 2 (see blocked.WIDE_TILES), the same sums: 3x3, one thread, batch 128, best of
# 12 interleaved (2026-12-02 06:44 UTC), 6 x 2 against 8 x 2 in ms: 64 -> 128 on 8x8 12.35/
# 11.93, 64 -> 64 on 8x8 6.33/6.10, 16 -> 16 on 32x32 7.77/7.49, 32 -> 32 on 32x32 24.9/25.3.
# Where AVX-512's multiply-adds run at full rate (Zen 5; see blocked.WIDE_TILE_SPEED) 8 x 4
# for more than 16 channels: one thread, batch 128, best of 9 (2026-12-02 11:16 UTC), forward
# and backward of a 3x3 layer in ms, 8 x 2 against 8 x 4: 32 -> 32 on 32x32 16.5 + 33.9 /
# 13.3 + 31.1, 64 -> 64 on 16x16 15.8 + 32.9 / 11.8 + 30.0, 20 -> 20 on 16x16 2.94 + 5.97 /
# 2.36 + 5.41; 16 -> 16 on 32x32 5.00 + 9.77 / 6.45 + 11.44 (half of 32 lanes idle).
PLAIN_TILE = (6, 2)
WIDE_PLAIN_TILE = (8, 2)
FULL_RATE_PLAIN_TILE = (8, 4)
# On AVX2, with the 4 x 3 tile's loop no longer spilling (blocked._llvm_options), 17-24
# channels take it: one thread, batch 128, best of 5 alternated in one process (2026-12-03
# 21:09 UTC), 6 x 2 / 4 x 3, ms: forward 16 -> 20 5x5 on 16x16 10.07 / 8.03, 20 -> 20 on 8x8
# 3.34 / 2.66, 3x3 20 -> 24 on 16x16 5.17 / 4.06, 24 -> 24 6.15 / 4.73; input gradients into
# 20 channels 3.35 / 2.56, into 24 6.01 / 4.85, but into 16 6.64 / 9.51.
AVX2_PLAIN_TILE_24 = (4, 3)
# Where AVX-512's multiply-adds run at half rate (Zen 4), a forward at column stride 1 on rows
# of 16 outputs (`rows_over_channels`) runs on the row kernel: 16 columns x 16 filters (16
# registers of sums; each tap one load of 16 pixels and 16 multiply-adds with a weight
# broadcast), each filter's sums stored as one vector into its plane, over a plain padded copy
# of the input (cheaper to make than the blocked one; the weight gradient reads either as
# fast). Into a plain output the tile kernel's 8 x 2 sums cross from lanes of filters to
# planes one by one, 8-12% of a 3x3 layer of 32-64 channels (a blocked output, stored as
# vectors, runs 108-111 GFLOP/s on a core against 96-104). One thread, batch 128, 3x3, best of
# 5 (2026-12-04 13:55 UTC), the tile kernel on a blocked copy / the rows on a plain one, conv
# + copy, ms: 32 -> 32 on 32x32 25.5 + 2.5 / 23.2 + 1.5, 16 -> 16 7.1 + 1.1 / 6.9 + 0.7,
# 16 -> 32 13.7 + 1.2 / 12.0 + 0.7, 8 -> 16 on 64x64 16.8 + 2.1 / 13.3 + 1.4, 64 -> 64 on
# 16x16 23.3 + 1.5 / 22.7 + 0.9; level on 32 -> 32 on 64x64 and 20 -> 32 on 16x16. The weight
# gradient from the blocked / plain copy: 27.6 / 27.4 (32 -> 32 on 32x32), 27.9 / 27.4 (64
# -> 64 on 16x16), 9.5 / 8.6 (16 -> 16). Two threads, the layer's forward (14:10 UTC, best
# of 8 alternated): 3 -> 32 on 32x32 2.64 / 1.66, 3 -> 16 1.32 / 0.88, 1 -> 16 on 64x64
# 5.90 / 4.27, 32 -> 32 13.84 / 12.52 (a first layer of few channels was on the tile kernel
# above 8 filters: the row kernel's blocked output, inference's, is the slower there).
TRAINING_ROW_TILE = (16, 2)


# Where AVX-512's multiply-adds run at half rate, 8 channels or fewer take 8 x 1 (256-bit
# sums: as many multiply-adds a cycle as 512-bit ones there, and half of them not wasted on
# lanes past the channels). Input gradients, two threads, batch 128, median of 30 alternated
# (2026-12-04 16:40 UTC), 8 x 2 / 8 x 1, ms: 16 -> 6 channels 5x5 on 14x14 (lenet5's) 2.01 /
# 1.61, 16 -> 8 5x5 on 12x12 1.56 / 1.28, 16 -> 8 4x4 stride 2 on 64x64 10.3 / 9.2, 16 -> 8
# 3x3 on 32x32 4.05 / 3.65, 8 -> 8 on 16x16 0.62 / 0.56, 16 -> 3 on 32x32 3.83 / 3.35. Whole
# training steps, alternated in one process: lenet5 0.943 of the time, convnetjs-mnist
# 0.924; bottleneck, unet-mini and fcn-mini within their spread (0.99-1.05).
FEW_PLAIN_TILE = (8, 1)


def plain_tile(channels: int) -> tuple[int, int]:
    """The tile of a convolution into a plain output of `channels` channels on this CPU."""
    if kernels.full_rate_512() and channels > 2 * LANES:
        return FULL_RATE_PLAIN_TILE
    if kernels.wide_registers() and not kernels.full_rate_512() and channels <= LANES:
        return FEW_PLAIN_TILE
    if kernels.wide_registers():
        return WIDE_PLAIN_TILE
    return AVX2_PLAIN_TILE_24 if blocked.blocks(channels) == 3 else PLAIN_TILE


@dataclass
class Kept:
    """What forward keeps for backward: the zero-padded input in the layout the kernels read.
    data is (N, ceil(C/8), Hp, Wp, 8) when lanes == 8, (N, C, Hp, Wp) when lanes == 1."""

    data: numpy.ndarray
    lanes: int
    channels: int
    winograd: bool = False  # the forward ran as Winograd (`winograd_fits`): so does dweight

    def strides(self) -> tuple[int, int, int, int, int]:
        """(batch, block, row, column, lane) strides in elements."""
        item = self.data.itemsize
        if self.lanes == LANES:
            bs, ks, rs, cs, _ = (s // item for s in self.data.strides)
            return bs, ks, rs, cs, 1
        bs, ls, rs, cs = (s // item for s in self.data.strides)
        return bs, 0, rs, cs, ls

    def tap_offsets(self, kernel, dilation, live_only: bool = False) -> numpy.ndarray:
        """Where each tap (c, u, v) of a window sits from its first pixel, in elements, in
        the order `blocked.pack_filters` packs filters (see `blocked.tap_offsets`)."""
        _, block, row, col, lane = self.strides()
        return blocked.tap_offsets(self.channels, kernel, dilation,
                                   (block if self.lanes == LANES else lane, row, col),
                                   self.lanes, live_only)


def usable(layer, x) -> bool:
    """Whether a Conv2d's training passes on input x run here: float32 NumPy input and
    weights, one group, a window larger than 1x1 or a stride (a 1x1 stride-1 convolution is
    one matrix product, BLAS's best case), and the compiled kernels on and worth loading."""
    if layer.kernel_size == (1, 1) and layer.stride == (1, 1):
        return False
    return usable_transposed(layer, x)


def usable_transposed(layer, x) -> bool:
    """Whether a ConvTranspose2d's (or, see `usable`, a Conv2d's) training passes on input x
    run here: float32 NumPy input and weights, one group, and the compiled kernels on and
    worth loading."""
    if not (type(x) is numpy.ndarray and x.dtype == numpy.float32 and x.ndim == 4
            and layer.weight.data.dtype == numpy.float32 and layer.groups == 1):
        return False
    loaded = blocked.loaded("weight_grad")
    macs = x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3] * layer.out_channels * (
        layer.kernel_size[0] * layer.kernel_size[1])
    return (loaded or macs >= kernels.MIN_LOAD_MACS) and kernels.available()


def _padded_buffer(x, padding: Padding, lanes: int):
    """(x as contiguous float32, an empty zero-padded buffer for it, the copy kernels' head
    of geometry: C, H, W, top, left, Hp, Wp). The buffer is (n, ceil(C/8), Hp, Wp, 8) or,
    lanes == 1, (n, C, Hp, Wp)."""
    n, c, h, w = x.shape
    top, left = padding.top, padding.left
    hp, wp = h + top + padding.bottom, w + left + padding.right
    x = numpy.ascontiguousarray(x, dtype=numpy.float32)
    shape = (n, blocked.blocks(c), hp, wp, LANES) if lanes == LANES else (n, c, hp, wp)
    return x, numpy.empty(shape, dtype=x.dtype), [c, h, w, top, left, hp, wp]


def _padded_blocked(x, padding: Padding, lanes: int):
    """(n, C, H, W) -> a zero-padded copy: (n, ceil(C/8), Hp, Wp, 8) (zero lanes past C) or,
    lanes == 1, (n, C, Hp, Wp)."""
    # compiled copies on the team: the blocked one 2.5x NumPy's strided copy (128 x 32 x 32 x 32:
    # 1.6 ms/3.9), the plain one for a first layer's few channels (see blocked.plain_copy)
    x, data, head = _padded_buffer(x, padding, lanes)
    module = blocked.compiled("weight_grad")
    kernel, task = ((module.block_copy, module.block_copy_task) if lanes == LANES
                    else (module.plain_copy, module.plain_copy_task))
    flat, out = x.reshape(-1), data.reshape(-1)
    run_task(kernel, task, [
        (flat, out, numpy.array([part.start, part.stop, *head], numpy.int64))
        for part in sample_chunks(x)])
    return data


def _blocked_gradient(dy, around: Padding, mask=None):
    """(dyb, sums): dy (n, K, Ho, Wo) copied into a zero-padded blocked buffer (n, K/8, ., .,
    8) `around` it, and its float64 sums channel by channel (the bias gradient), in one pass
    (`blocked.block_copy_grad_source`). mask: a ReLU's mask of dy's shape, its backward taken
    in (dy where mask, else 0, is what is copied and summed)."""
    dy, data, head = _padded_buffer(dy, around, LANES)
    chunks = sample_chunks(dy)
    sums = numpy.zeros((len(chunks), dy.shape[1]), numpy.float64)
    masked = mask is not None
    flat_mask = mask.reshape(-1) if masked else numpy.zeros(1, bool)
    module = blocked.compiled("weight_grad")
    flat, out = dy.reshape(-1), data.reshape(-1)
    run_task(module.block_copy_grad, module.block_copy_grad_task, [
        (flat, flat_mask, out, sums[t],
         numpy.array([part.start, part.stop, *head, int(masked)], numpy.int64))
        for t, part in enumerate(chunks)])
    return data, sums.sum(axis=0)  # chunks in order


def _run_conv(kept: Kept, weight, bias, stride, dilation, out) -> None:
    """out (n, K, Ho, Wo), plain, = bias + the correlation of the padded input with weight
    (K, C, KH, KW), on the blocked direct convolution."""
    n, k, out_h, out_w = out.shape
    _, kind, tile = forward_plan(kept.channels, k, stride[1], out_w)  # (kept made for it)
    bs, _, rs, cs, _ = kept.strides()
    filters = blocked.pack_filters(weight, tile[1], kept.lanes, live_only=True)
    packed_bias = blocked.pack_bias(bias, k, tile[1], numpy.float32)
    offsets = kept.tap_offsets(weight.shape[2:], dilation, live_only=True)
    plane = out_h * out_w
    fields = dict(k0=0, k1=len(packed_bias) // (LANES * tile[1]), x_batch=bs, x_row=rs,
                  x_col=cs, stride_h=stride[0], stride_w=stride[1], out_batch=k * plane,
                  out_block=LANES * plane, out_lane=plane, out_row=out_w, out_col=1,
                  out_channels=k, out_store=k, out_w=out_w)
    module = blocked.compiled(kind, numpy.float32, tile)
    flat, out_flat = kept.data.reshape(-1), out.reshape(-1)
    zero = numpy.float32(0)
    empty = numpy.zeros(1, numpy.float32)
    run_task(module.conv, module.conv_task, [
        (flat, filters, packed_bias, offsets, out_flat, empty,
         blocked.geometry_vector(b0=b0, b1=b1, i0=i0, i1=i1, **fields), zero, zero)
        for b0, b1, i0, i1 in blocked.work_splits(n, plane, num_threads())])


# Where AVX-512's multiply-adds run at full rate (Zen 5) the row kernel takes layers of up to
# 16 filters (one vector of lanes: the 8 x 2 tile's 8 sums a tap against the rows' 16); with
# more, the 8 x 4 tile is as fast or faster. Two threads, batch 128, 3x3, forward + backward,
# tile / rows alternated in one process, medians of 6 (2026-12-05 12:00 UTC), ms: 3 -> 16 on
# 32x32 1.05 + 2.88 / 0.47 + 3.00, 16 -> 16 2.70 + 5.13 / 2.00 + 4.81, 8 -> 16 on 64x64
# 6.67 + 15.66 / 4.61 + 15.13; 16 -> 32 on 32x32 3.96 + 8.06 / 3.74 + 7.92, 32 -> 32 6.92 +
# 13.18 / 7.74 + 12.39, 32 -> 32 on 16x16 1.61 + 3.18 / 1.70 + 3.12. A first layer of fewer
# than 8 channels takes the rows at any filter count (its taps fill few of a tile's lanes):
# 3 -> 32 on 32x32 1.40 + 5.69 / 0.74 + 5.78, 3 -> 64 2.81 + 13.12 / 1.49 + 13.10, 3 -> 32
# on 64x64 8.32 + 23.69 / 5.84 + 23.92 (2026-12-05 14:04 UTC, medians of 6).
FULL_RATE_ROW_FILTERS = 2 * LANES


def rows_over_channels(channels: int, filters: int, stride_w: int, out_w: int) -> bool:
    """Whether a layer trains its forward on the row kernel over a plain copy of its input
    (TRAINING_ROW_TILE): on Zen 4's kind of CPU at any channel count (measured; not AVX2's 16
    registers), or on full-rate AVX-512 up to FULL_RATE_ROW_FILTERS filters or below 8
    channels, at column stride 1, on rows of whole spans of 16 outputs or nearly
    (`blocked.SPAN_MAX_WASTE`)."""
    columns = TRAINING_ROW_TILE[0]
    cpu = ((filters <= FULL_RATE_ROW_FILTERS or channels < LANES) if kernels.full_rate_512()
           else kernels.wide_registers())
    return (cpu and stride_w == 1 and out_w >= columns
            and -(-out_w // columns) * columns <= blocked.SPAN_MAX_WASTE * out_w)


def forward_plan(channels: int, filters: int, stride_w: int, out_w: int):
    """(lanes, kind, tile) of a Conv2d's training forward: the kept copy's lanes (1: plain,
    8: blocked) and the kernel `_run_conv` runs. The row kernel (each filter's sums stored as
    vectors into its plane) for a plain input where it takes the layer, else the tile kernel
    on a blocked copy (a plain one below 8 channels: blocks would waste most of each tap)."""
    if channels < LANES and blocked.takes_rows(filters, stride_w, out_w):
        return 1, "conv_rows", blocked.row_tile()
    if rows_over_channels(channels, filters, stride_w, out_w):
        return 1, "conv_rows", (TRAINING_ROW_TILE[0], min(blocked.blocks(filters),
                                                          TRAINING_ROW_TILE[1]))
    return (1 if channels < LANES else LANES), "conv", plain_tile(filters)


def modules(channels: int, filters: int, stride_w: int, out_w: int,
            winograd: bool = False) -> list[tuple]:
    """The blocked modules a Conv2d's training passes run on, in the order they are first
    needed: the copies' and weight gradient's, the forward's tile (`_run_conv`), the input
    gradient's (`_run_transposed`); winograd: the Winograd passes' instead (`_run_winograd`'s
    for the forward and the input gradient, `_winograd_weight_grad`'s)."""
    f32 = numpy.float32
    if winograd:
        return [("weight_grad", f32, None),
                ("winograd_train", f32, _winograd_tile(filters, out_w)),
                ("winograd_weight_grad", f32, None),
                ("winograd_train", f32, _winograd_tile(channels, out_w))]
    _, kind, tile = forward_plan(channels, filters, stride_w, out_w)
    return [("weight_grad", f32, None), (kind, f32, tile), ("conv", f32, plain_tile(channels))]


_asked: set = set()  # the layer shapes whose modules were handed to blocked.compile_ahead


def forward(layer, x, out, geometry) -> Kept:
    """out (n, K, Ho, Wo) = the layer's convolution of x (n, C, H, W); returns what backward
    needs."""
    c = x.shape[1]
    winograd = winograd_fits(layer, x.shape, geometry.padding)
    shape = (c, out.shape[1], layer.stride[1], out.shape[3], winograd)
    if shape not in _asked:  # a fresh cache: a child compiles some of them meanwhile, and
        _asked.add(shape)  # the merge module the evaluation's plan checks its input with
        blocked.compile_ahead([*modules(*shape), ("merge", numpy.float32, None)])
    bias = None if layer.bias is None else layer.bias.data
    if winograd:
        kept = Kept(_padded_blocked(x, geometry.padding, LANES), LANES, c, winograd=True)
        _run_winograd(kept.data, layer.weight.data, False, bias, out)
        return kept
    lanes = forward_plan(*shape[:4])[0]
    kept = Kept(_padded_blocked(x, geometry.padding, lanes), lanes, c)
    _run_conv(kept, layer.weight.data, bias, layer.stride, layer.dilation, out)
    return kept


# Winograd F(2x2, 3x3) for the forward, the input gradient and the weight gradient of the 3x3
# layers that fit (`winograd_fits`), as inference runs it on a batch's lanes
# (`convnet.nn.inference`), on CPUs without 512-bit multiply-adds at full rate: there the
# direct kernels are at the cores' peak and Winograd does 2.25x fewer multiply-adds. Image by
# image on each thread (three calls: the input's tiles transformed, 16 products, the output
# side), so that an image's transformed tiles stay in cache (larger maps in bands of tile
# rows). Two threads, batch 128, vggish's
# layers, the direct forward against Winograd, padded copies included, best of 7 (2026-12-05
# 05:05 UTC), ms: 32 -> 32 on 32x32 12.79 / 12.83, 32 -> 64 on 16x16 6.24 / 5.84, 64 -> 64
# 11.77 / 9.45, 64 -> 128 on 8x8 6.20 / 4.76, 128 -> 128 11.90 / 8.94. Its products (1x1
# convolutions of C taps) run at 80-90 GFLOP/s a core against the direct kernel's 115 and its
# plain output's scattered lanes cost twice the blocked one's, so below 64 channels it does
# not gain. vggish's training step, the policies alternated in one process (medians of 5
# steps, best of 4 rounds): direct 126.7 ms, from 32 channels 118.3, from 64 118.2; with the
# weight gradient as Winograd too (6 rounds, 05:30 UTC): direct 127.4-132.4, Winograd's
# forward and input gradient 118.9-126.7, all three 113.8-126.6 (115.6-117.9 in five). Where
# 512-bit multiply-adds run at full rate (Zen 5) the direct kernels keep these layers: there it
# made vggish's step 0.943-0.967 of the time (whole steps alternated in one process, three
# processes, 2026-12-05 11:55 UTC; resnet8 and fcn-mini level) but its peak 25-30 MB higher
# (bench.run's vggish worker 270 and 282 MB against 255-260 without it, one process 267-275
# against 242: the winograd_train module, 8 MB resident, and a training step's heap growth,
# 102 MB against 83), which put its memory at 0.52-0.58 of PyTorch's against 0.46-0.53.
# Measured again with the max pools' backward taken into the convolutions (2026-12-05 14:22-
# 14:29 UTC): in one process, alternated, vggish's step 0.895-0.961 of the time, but
# `bench.run --networks vggish` from two clones, alternated four times, read 65.0, 66.9, 68.2
# and 63.6 ms with it against 64.3, 65.6, 68.0 and 64.4 without, its peak 261-270 MB against
# 243-247. CONVNET_WINOGRAD=0 switches it off, as for inference.
WINOGRAD = os.environ.get("CONVNET_WINOGRAD", "1") != "0"
WINOGRAD_MIN_CHANNELS = 64


def winograd_fits(layer, x_shape, padding: Padding) -> bool:
    """Whether a Conv2d's training passes on input x_shape (n, C, H, W) take Winograd: 3x3,
    stride 1, dilation 1, one group, a padding of 1, an even-sized map, channels and filters
    whole blocks of 8 and at least WINOGRAD_MIN_CHANNELS, on a CPU without full-rate 512-bit
    multiply-adds."""
    _, c, h, w = x_shape
    k = layer.out_channels
    return (WINOGRAD and not kernels.full_rate_512() and layer.kernel_size == (3, 3)
            and tuple(layer.stride) == (1, 1) and tuple(layer.dilation) == (1, 1)
            and layer.groups == 1 and padding == Padding(1, 1, 1, 1)
            and h % 2 == 0 and w % 2 == 0 and c % LANES == 0 and k % LANES == 0
            and min(c, k) >= WINOGRAD_MIN_CHANNELS)


def _winograd_tile(filters: int, out_w: int) -> tuple[int, int]:
    """The products' tile: `blocked.choose_tile` over a map of 2 x 2 tiles (out_w // 2 a
    row), as inference's."""
    return blocked.choose_tile(filters, (out_w // 2) ** 2, out_w // 2)


def _run_winograd(source, weight, flip: bool, bias, out) -> None:
    """out (n, K, H, W), plain, = bias + the 3x3 correlation at stride 1 of source (n, C/8,
    H + 2, W + 2, 8), blocked and padded by 1, with weight (K, C, 3, 3), or flip: with the
    filters of weight's transposed convolution (weight (C, K, 3, 3), each filter flipped and
    its channels swapped with the filters). Each thread takes a slice of the images and runs
    them a group at a time, or one by one in bands of tile rows
    (`blocked.WINOGRAD_IMAGES_SOURCE`): a band's input tiles into its v (16 grids (C/8, rows,
    W/2, 8)), 16 1x1 products into its m, m back into out."""
    n, k, h, w = out.shape
    c = source.shape[1] * LANES
    th, tw = h // 2, w // 2
    kbs = k // LANES
    layout = _winograd_layout(source, kbs, n)
    rows, plane = layout.rows, layout.plane
    tile = _winograd_tile(k, w)
    module = blocked.compiled("winograd_train", numpy.float32, tile)
    zeros = blocked.pack_bias(None, k, tile[1], numpy.float32)
    tiles = len(zeros) // (LANES * tile[1])
    filters = numpy.zeros(16 * len(zeros) * c, numpy.float32)  # 16 x (tiles, C, 8 * B)
    module.winograd_pack(numpy.ascontiguousarray(weight, numpy.float32).reshape(-1), filters,
                         numpy.array([*weight.shape[:2], LANES * tile[1], tiles, int(flip)],
                                     numpy.int64))
    packed_bias = blocked.pack_bias(bias, k, 1, numpy.float32)
    products = blocked.geometry_vector(
        b0=0, b1=1, i0=0, i1=rows * tw, k0=0, k1=tiles,
        x_batch=source.shape[1] * plane, x_row=tw * LANES, x_col=LANES, stride_h=1, stride_w=1,
        out_batch=kbs * plane, out_block=plane, out_lane=1, out_row=tw * LANES, out_col=LANES,
        out_channels=k, out_store=kbs * LANES, out_w=tw)
    bs, _, rs = layout.inputs[4:7]
    outputs = [0, 1, 0, kbs, kbs, rows, tw, layout.m_stride, k * h * w, LANES * h * w, w, 1, 0,
               0, 0, 0, 0, 0, 0, 0, 0, h * w]  # no activation, pool nor shortcut
    head = [layout.group, th // rows, len(filters) // 16, layout.v_stride, layout.m_stride, bs,
            k * h * w, 2 * rows * rs, 2 * rows * w]
    flat, out_flat = source.reshape(-1), out.reshape(-1)
    run_task(module.winograd_images, module.winograd_images_task, [
        (flat, filters, zeros, layout.offsets, packed_bias, out_flat,
         numpy.zeros(16 * layout.v_stride, numpy.float32),
         numpy.zeros(16 * layout.m_stride, numpy.float32),
         numpy.array([part.start, part.stop, *head, *layout.inputs, *products, *outputs],
                     numpy.int64))
        for part in thread_slices(n)])


def _winograd_weight_grad(kept: Kept, dyb, around: Padding, shape) -> numpy.ndarray:
    """dweight (K, C, 3, 3) of a layer that ran as Winograd, from its kept input (blocked,
    padded by 1) and its blocked output gradient dyb (whose interior starts `around` in):
    each transformed position's dU (K x C) = the sum over the tiles of the output gradient's
    transform A dY A^T times the input's B^T d B (a 1x1 weight gradient, `weight_grad`), each
    thread its images into its own dU, then dweight = G^T dU G (in float64)."""
    k, c = shape[:2]
    x = kept.data
    n, cbs, hp, wp = x.shape[:4]
    kbs = k // LANES
    th, tw = (hp - 2) // 2, (wp - 2) // 2
    layout = _winograd_layout(x, kbs, n)
    rows, plane = layout.rows, layout.plane
    per = kbs * len(layout.offsets) * LANES  # a position's dU as weight_grad sums it
    bs, _, rs = layout.inputs[4:7]
    dbs, dks, drs, dcs = (stride // dyb.itemsize for stride in dyb.strides[:4])
    gradients = [0, 1, 0, kbs, dbs, dks, drs, 0, kbs, rows, tw, layout.m_stride]
    products = [0, 1, kbs, cbs * plane, tw * LANES, LANES, 0, kbs * plane, plane, tw * LANES,
                LANES, 0, rows, tw, 1, 1]
    head = [layout.group, th // rows, per, layout.v_stride, layout.m_stride, bs, dbs,
            2 * rows * rs, 2 * rows * drs, around.top * drs + around.left * dcs]
    module = blocked.compiled("winograd_weight_grad")
    parts = thread_slices(n)
    sums = numpy.zeros((len(parts), 16 * per), numpy.float32)
    flat, dy_flat = x.reshape(-1), dyb.reshape(-1)
    run_task(module.winograd_weight_images, module.winograd_weight_images_task, [
        (flat, dy_flat, layout.offsets, numpy.zeros(16 * layout.v_stride, numpy.float32),
         numpy.zeros(16 * layout.m_stride, numpy.float32), sums[t],
         numpy.array([part.start, part.stop, *head, *layout.inputs, *gradients, *products],
                     numpy.int64))
        for t, part in enumerate(parts)])
    # parts in order; (16, Kb, C, 8) -> (4, 4, K, C)
    du = sums.sum(axis=0, dtype=numpy.float64).reshape(16, kbs, c, LANES)
    du = du.transpose(0, 1, 3, 2).reshape(4, 4, k, c)
    g = blocked.WINOGRAD_G
    rows_done = numpy.tensordot(g, du, axes=([0], [0]))  # u, b, K, C
    dweight = numpy.tensordot(rows_done, g, axes=([1], [0]))  # u, K, C, v
    return numpy.ascontiguousarray(dweight.transpose(1, 2, 0, 3), dtype=numpy.float32)


@dataclass
class _WinogradLayout:
    """How a Winograd pass walks a blocked source (n, Cb, 2 TH + 2, 2 TW + 2, 8) with Kb blocks
    of output (gradient) lanes: `group` whole images at a time, or one image in bands of `rows`
    tile rows (`_winograd_band`); v's and m's strides between their 16 grids (a cache line
    apart), the products' tap offsets over v, and winograd_input's geometry for the first
    image's first band."""

    group: int
    rows: int
    plane: int  # a block of one image's band in v or m: rows x TW x 8
    v_stride: int
    m_stride: int
    offsets: numpy.ndarray
    inputs: list


def _winograd_layout(source, kbs: int, n: int) -> _WinogradLayout:
    cbs, hp, wp = source.shape[1:4]
    th, tw = (hp - 2) // 2, (wp - 2) // 2
    group, rows = _winograd_band(cbs + kbs, th, tw, n)
    plane = rows * tw * LANES
    skew = blocked.WINOGRAD_SKEW
    v_stride, m_stride = group * cbs * plane + skew, group * kbs * plane + skew
    offsets = blocked.tap_offsets(cbs * LANES, (1, 1), (1, 1), (plane, tw * LANES, LANES),
                                  LANES, live_only=True)
    bs, ks, rs = (stride // source.itemsize for stride in source.strides[:3])
    inputs = [0, 1, 0, cbs, bs, ks, rs, 0, cbs, rows, tw, v_stride]
    return _WinogradLayout(group, rows, plane, v_stride, m_stride, offsets, inputs)


def _winograd_band(blocks: int, th: int, tw: int, n: int) -> tuple[int, int]:
    """(images, tile rows) at a time: as many whole images as fit v and m (16 grids of `blocks`
    blocks of 8 lanes, input's and output's) within `blocked.WINOGRAD_BAND_BYTES`, else one
    image in bands of the most tile rows that divide th and fit, at least one."""
    per_row, budget = blocked.winograd_row_bytes(blocks, tw), blocked.WINOGRAD_BAND_BYTES
    if th * per_row <= budget:
        return max(1, min(n, budget // (th * per_row))), th
    fitting = [r for r in range(1, th + 1) if th % r == 0 and r * per_row <= budget]
    return 1, max(fitting, default=1)


class Pooled(NamedTuple):
    """A max pool that read a convolution's output (`MaxPool2d`'s compiled forward): its
    winning taps (N, K, Ho, Wo) uint8, window, stride, padding and input shape (the
    convolution's output)."""

    taps: numpy.ndarray
    kernel_size: tuple
    stride: tuple
    padding: Padding
    x_shape: tuple


def backward(layer, kept: Kept, dy, dx_shape, geometry, mask=None, pooled: Pooled = None):
    """(dweight (K, C, KH, KW), dbias (K,) or None, dx (n, C, H, W) or None): dx when
    `dx_shape` is given. Lets go of `kept.data` once the weight gradient is made, before dx
    exists: the step's peak holds the padded input or the input gradient, not both (vggish,
    batch 128: 74 -> 64 MB of arrays at the peak). mask: the mask of a ReLU that read this
    layer's output, whose backward (dy where mask, else 0) is taken into dy's copy. pooled: a
    max pool read this layer's output and dy is the pool's output gradient: its backward
    writes straight into the blocked copy (no plain gradient of the layer's output)."""
    n, k, out_h, out_w = dy.shape if pooled is None else pooled.x_shape
    around, phases = Padding(0, 0, 0, 0), None
    if dx_shape is not None:  # dx is the transposed convolution of dy: its phases' reads
        pad = geometry.padding
        phases, around = _transposed_phases(layer, (out_h, out_w), dx_shape[2:],
                                            (pad.top, pad.left))
    if pooled is None:
        dyb, sums = _blocked_gradient(dy, around, mask)  # n, Kb, ., ., 8
    else:
        dyb, sums = pool_kernels.max_backward_blocked(
            dy, pooled.taps, pooled.x_shape, pooled.kernel_size, pooled.stride,
            pooled.padding, around)
    if kept.winograd:
        dweight = _winograd_weight_grad(kept, dyb, around, layer.weight.shape)
    else:
        dweight = _weight_grad(layer.weight.shape, layer.stride, layer.dilation, kept, dyb,
                               around, (out_h, out_w))
    kept.data = None
    # summed in float64: a float32 sum was 5e-6 from the exact -0.11 of 2 x 10 x 25 values
    # (cancellation), beyond the parity tolerance
    dbias = None if layer.bias is None else sums
    dx = None
    if dx_shape is not None:
        dx = numpy.empty(dx_shape, dtype=dy.dtype)
        if winograd_fits(layer, dx_shape, geometry.padding) and around == Padding(1, 1, 1, 1):
            # the correlation of dy (padded by 1) with the filters flipped, channels swapped
            _run_winograd(dyb, layer.weight.data, True, None, dx)
        else:
            _run_transposed(Kept(dyb, LANES, k), layer.weight.data, None, around, phases,
                            layer.stride, dx)
    return dweight, dbias, dx


def channel_sums(dy):
    """(K,) float64: dy (n, K, H, W) summed over images and pixels, channel by channel (a
    bias gradient), the channels split over the worker threads."""
    n, k = dy.shape[:2]
    flat = numpy.ascontiguousarray(dy, dtype=numpy.float32).reshape(-1)
    plane = flat.size // max(n * k, 1)
    sums = numpy.empty(k, numpy.float64)
    module = blocked.compiled("weight_grad")
    run_task(module.channel_sums, module.channel_sums_task, [
        (flat, sums, numpy.array([n, k, plane, part.start, part.stop], numpy.int64))
        for part in thread_slices(k, None if flat.size >= 1 << 16 else 1)])
    return sums


def _transposed_phases(layer, in_hw, out_hw, crop):
    """The phases along each axis of a transposed convolution with the layer's kernel, stride
    and dilation from in_hw to out_hw (`blocked.transposed_phases`), and the zeros around its
    input they read (a Padding)."""
    phases = [blocked.transposed_phases(in_hw[a], out_hw[a], layer.kernel_size[a],
                                        layer.stride[a], crop[a], layer.dilation[a])
              for a in range(2)]
    (top, bottom), (left, right) = (blocked.phase_border(axis, in_hw[a])
                                    for a, axis in enumerate(phases))
    return phases, Padding(top, bottom, left, right)


def transposed_forward(layer, x, out, geometry) -> tuple[Kept, Padding]:
    """out (n, K, Ho, Wo) = the ConvTranspose2d `layer` of x (n, C, H, W), phase by phase on
    the direct convolution; returns what backward needs: x blocked with the zeros the phases
    read around it, and that Padding."""
    c = x.shape[1]
    pad = geometry.padding
    phases, around = _transposed_phases(layer, x.shape[2:], out.shape[2:], (pad.top, pad.left))
    kept = Kept(_padded_blocked(x, around, LANES), LANES, c)
    bias = None if layer.bias is None else layer.bias.data
    _run_transposed(kept, layer.weight.data, bias, around, phases, layer.stride, out)
    return kept, around


def transposed_backward(layer, kept: Kept, around: Padding, dy, dx_shape):
    """(dweight (C, K, KH, KW), dbias (K,) or None, dx (n, C, H, W) or None) of a
    ConvTranspose2d: the convolution of dy with the same weight (K -> C, the layer's stride,
    dilation and crop as padding) gives dx, and its weight gradient against x gives dweight.
    Lets go of the kept x before dx exists."""
    k = dy.shape[1]
    (top, left), (extra_h, extra_w) = layer.padding, layer.output_padding
    pad = Padding(top, max(top - extra_h, 0), left, max(left - extra_w, 0))
    lanes = LANES if k >= LANES else 1  # the weight gradient's; with dx, its convolution's:
    if dx_shape is not None:
        lanes = forward_plan(k, dx_shape[1], layer.stride[1], dx_shape[3])[0]
    source = Kept(_padded_blocked(dy, pad, lanes), lanes, k)
    h, w = kept.data.shape[2] - around.top - around.bottom, kept.data.shape[3] - (
        around.left + around.right)
    dweight = _weight_grad(layer.weight.shape, layer.stride, layer.dilation, source, kept.data,
                           around, (h, w))
    kept.data = None
    dbias = None if layer.bias is None else channel_sums(dy)
    dx = None
    if dx_shape is not None:
        dx = numpy.empty(dx_shape, dtype=dy.dtype)
        _run_conv(source, layer.weight.data, None, layer.stride, layer.dilation, dx)
    return dweight, dbias, dx


def _run_transposed(source: Kept, weight, bias, around: Padding, phases, stride, out) -> None:
    """out (n, C, H, W), plain, = bias (C,) or None + the transposed convolution of the
    blocked source (whose interior starts `around` in) with weight (K, C, KH, KW) (the
    transposed one's C_in, C_out), phase by phase (`blocked.transposed_phases`) on the direct
    convolution, each phase's outputs written `stride` apart."""
    n, c, h, w = out.shape
    tile = plain_tile(c)
    bs, _, rs, cs, _ = source.strides()
    bias = blocked.pack_bias(bias, c, tile[1], numpy.float32)
    plane = h * w
    fields = dict(k0=0, k1=len(bias) // (LANES * tile[1]), x_batch=bs, x_row=rs, x_col=cs,
                  stride_h=1, stride_w=1, out_batch=c * plane, out_block=LANES * plane,
                  out_lane=plane, out_row=stride[0] * w, out_col=stride[1], out_channels=c,
                  out_store=c)
    origin = around.top * rs + around.left * cs
    calls = []
    for py, rows_out, rows, first_y, step_y in phases[0]:
        for px, cols_out, cols, first_x, step_x in phases[1]:
            taps = blocked.phase_filters(weight, rows, cols)  # C, K, ., .
            filters = blocked.pack_filters(taps, tile[1], LANES, live_only=True)
            offsets = source.tap_offsets(taps.shape[2:], (step_y, step_x), live_only=True)
            for b0, b1, i0, i1 in blocked.work_splits(n, rows_out * cols_out, num_threads()):
                calls.append((filters, offsets, blocked.geometry_vector(
                    b0=b0, b1=b1, i0=i0, i1=i1, x_origin=origin + first_y * rs + first_x * cs,
                    out_origin=py * w + px, out_w=cols_out, **fields)))
    module = blocked.compiled("conv", numpy.float32, tile)
    flat, out_flat = source.data.reshape(-1), out.reshape(-1)
    zero = numpy.float32(0)
    empty = numpy.zeros(1, numpy.float32)
    run_task(module.conv, module.conv_task, [
        (flat, filters, bias, offsets, out_flat, empty, geometry, zero, zero)
        for filters, offsets, geometry in calls])


def _weight_grad(shape, stride, dilation, kept: Kept, dyb, around: Padding, out_hw):
    """dweight `shape` (K, C, KH, KW) of a convolution (stride, dilation) from its padded
    input and its blocked output gradient dyb (whose interior starts `around` in)."""
    k, c, kh, kw = shape
    n, k_blocks = dyb.shape[:2]
    bs, _, rs, cs, _ = kept.strides()
    offsets = kept.tap_offsets((kh, kw), dilation)
    taps = len(offsets)
    offsets = numpy.concatenate([offsets, numpy.zeros(-taps % LANES, numpy.int64)])  # 8s
    item = dyb.itemsize
    dbs, dks, drs, dcs, _ = (s // item for s in dyb.strides)
    head = [k_blocks, bs, rs, cs, 0, dbs, dks, drs, dcs, around.top * drs + around.left * dcs,
            *out_hw, *stride]
    module = blocked.compiled("weight_grad")
    flat, dy_flat = kept.data.reshape(-1), dyb.reshape(-1)
    parts = thread_slices(n)
    sums = numpy.zeros((len(parts), k_blocks * len(offsets) * LANES), numpy.float32)
    run_task(module.weight_grad, module.weight_grad_task, [
        (flat, dy_flat, offsets, sums[t], numpy.array([part.start, part.stop, *head],
                                                      numpy.int64))
        for t, part in enumerate(parts)])
    dw = sums.sum(axis=0).reshape(k_blocks, len(offsets), LANES)[:, :taps]  # parts in order
    dw = dw.transpose(0, 2, 1).reshape(k_blocks * LANES, taps)[:k]  # K, taps
    if kept.lanes == 1:  # taps (c, u, v)
        return dw.reshape(k, c, kh, kw)
    # taps (c // 8, u, v, c % 8)
    dw = dw.reshape(k, -1, kh, kw, LANES).transpose(0, 1, 4, 2, 3)
    return dw.reshape(k, -1, kh, kw)[:, :c]

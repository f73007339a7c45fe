"""The blocked channel layout and the compiled kernels that run inference (and the training
convolutions of `convnet.core.blocked_training`) on it.

A blocked activation holds its channels in blocks of LANES = 8 (one AVX2 register of float32):

    (N, C, H, W) -> (N, ceil(C/8), H + 2m, W + 2m, 8),  [n, c // 8, m + i, m + j, c % 8]

with a zero border of m pixels on every side (the padding of the layers that read it) and zero
channels past C. onnxruntime keeps its activations this way (NCHWc) between the layers of a
network; convnet's inference plan (`convnet.nn.inference`) does the same and converts once at the
model's input and output, and around the layers that have no blocked kernel.

The direct convolution keeps a tile of P output positions of one row x B blocks of 8 output
channels in registers (6 x 2 or 4 x 3: 12 vector accumulators, B vector loads of packed weights
and P broadcast pixels per input tap, P*B fused multiply-adds; with AVX-512's 32 registers also
8 x 2 and 7 x 2, whose two blocks make one 16-lane register, and 8, 7 or 6 x 4 (two 16-lane
registers a position) where the CPU's 512-bit multiply-adds run at full rate; chosen by the
speed measured on each kind of CPU, and to keep a tile's positions within one output row:
`choose_tile`). Its loop over the input taps
(channel, kernel row, kernel column) is one flat loop over a table of offsets, so the same code
reads a blocked input or a plain (N, C, H, W) one (the model's first layer, with 3 channels), at
any stride and dilation:

    out[b, k, i, j] = act(bias[k] + sum_t x[b, (i*SH, j*SW) + offsets[t]] w[t, k] (+ residual))

Filters are packed once per tile shape, (K, C, KH, KW) -> (K tiles, taps, 8*B), with batch norm
folded in by the plan. LLVM's SLP vectorizer packs each accumulator row of 8 into one register
only when the tile is stored to memory as rows of 8 within one basic block, hence the scratch
tile before the epilogue (bias, residual, activation) writes the output through its strides:
the output may be blocked or plain (N, K, H, W). The common case (a whole tile into a blocked
output, no activation, ReLU or a clip) skips the scratch tile: its epilogue is straight-line
code from the accumulators, one group of 8 lanes at a time, which the vectorizer packs too.
Depthwise convolution, max and average pooling and global average pooling have kernels of
their own over the blocked layout, and so does a training convolution's weight gradient
(`weight_grad_source`).

All of them are tested against the NumPy layers (`tests/test_inference.py`), which remain the
reference. Only float32 runs here; float64 models take the NumPy layers.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy

from convnet.core import kernels

LANES = 8
AVX2_REGISTERS = 16  # vector registers

# Activations fused into a kernel's epilogue: (code, alpha, beta).
ACTIVATIONS = {"none": 0, "relu": 1, "clip": 2, "hardswish": 3, "leaky": 4, "hardsigmoid": 5,
               "silu": 6, "sigmoid": 7}

# Tiles (positions P, blocks B) for the direct convolution: 12 accumulators and B + 1 more
# registers of the 16 AVX2 has (4 x 4 would spill), plus P addresses of general registers.
# Measured against onnxruntime's MLAS on one thread, the layers of vggish, convnetjs and
# bottleneck: 6 x 2 at 0.92-1.19 of its speed where the filters fill the tile. On AVX-512
# LLVM joins a 6 x 2 tile's two blocks into one 16-lane register, which the 3 blocks of 4 x 3
# do not fill: measured (one thread, batch 128, 2026-12-01 13:20 UTC) 6 x 2 ran convnetjs's
# 16 -> 20 and 20 -> 20 filter 5x5 layers in 7.6 and 2.9 ms against 4 x 3's 9.6 and 3.5,
# though it computes 32 lanes for 20 (and 8 x 1 took 11.0 ms); inception-mini's 48 -> 24 1x1
# 0.34 against 0.33 ms; on 4 and 8 filters 8 x 1 beat 6 x 2 by 10-20%. So per useful lane
# 4 x 3 runs at 0.6-0.8 of 6 x 2's speed and 8 x 1 at 0.5-0.6. `choose_tile` weighs the
# waste of each by these speeds. On AVX2 (Zen 3), with the 4 x 3 tile's loop no longer
# spilling (`_llvm_options`), per useful lane, one thread, batch 128, a second layer (blocked
# input), best of 3 alternated rounds (2026-12-03 19:22 UTC), GFLOP/s: 5x5 on 32x32 16 -> 16
# 6 x 2 77.8, 16 -> 24 4 x 3 90.6, 16 -> 8 8 x 1 45.5; 3x3 on 16x16 32 -> 32 67.2, 32 -> 24
# 69.7, 32 -> 8 48.4; on 8x8 64 -> 64 69.4, 64 -> 48 67.4: 4 x 3 as fast as 6 x 2, which
# ties go to.
TILE_SPEED = {(6, 2): 1.0, (4, 3): 0.97, (8, 1): 0.55}
TILES = tuple(TILE_SPEED)
# AVX-512's 32 registers hold 8 or 7 positions x 16 lanes too (8 or 7 accumulators), and 8,
# 7 or 6 positions x 32 lanes (16, 14 or 12). Where a 512-bit multiply-add runs as two 256-bit
# halves (Zen 4, `kernels.HALF_RATE_512`) 8 accumulators keep the units busy, and the wider
# tiles only added loads. Measured there (HALVED_TILE_SPEED): a tile whose positions cross
# from one output row into the next is slower than one that stays in its row: 3x3 layers on
# 8x8 and 16x16 maps ran 9-12% behind onnxruntime's, on 12x12 and 24x24 (rows of whole 6 x 2
# tiles) 0-5% ahead. One thread, batch
# 128, best of 3 interleaved rounds (2026-12-02 06:39-06:42 UTC), 3x3 convolution, ms:
#   64 -> 64 on 8x8: 6 x 2 5.62, 8 x 2 5.34; 64 -> 128 on 8x8: 11.64, 11.09;
#   32 -> 32 on 16x16: 6.26, 5.85; on 32x32: 21.99, 21.61; on 10x10: 2.34, 2.19;
#   on 28x28: 18.07, 8 x 2 17.69, 7 x 2 17.22; on 14x14: 4.71, 4.60, 7 x 2 4.52;
#   on 12x12 (whole tiles for both): 3.31, 3.35; 16 -> 16 on 32x32: 5.38, 5.41;
#   12 x 2 and 16 x 2 slower than 8 x 2 (13.29 against 12.38 on 24x24, 22.70 against 22.38
#   on 32x32: 12 or 16 addresses of positions do not fit the general registers).
# 8 x 1 and 4 x 3 there, per useful lane against 8 x 2 (two threads, batch 128, the plan's
# step alone, best of 3 x 10, 2026-12-05 05:00 UTC), ms: 5x5 + 2x2 pool 16 -> 16 on 32x32 8 x 2
# 7.42, 8 x 1 8.79; 3x3 + pool 16 -> 16 on 16x16 0.74/1.05, 32 -> 32 2.72/3.40; 64 -> 40 on 8x8
# 8 x 2 (48 lanes) 1.83, 8 x 1 1.94, 4 x 3 3.09; 3 blocks, pooled, 4 x 3 against 8 x 1: 5x5 16
# -> 20 on 16x16 5.60/4.28, 20 -> 20 on 8x8 1.24/0.92, 3 -> 20 on 32x32 3.54/3.04, 3x3 32 -> 24
# on 16x16 3.25/2.50, on 8x8 0.78/0.61, 64 -> 24 1.58/1.23: 8 x 1 at 0.70-0.85 of 8 x 2, 4 x 3
# at 0.75-0.86 of 8 x 1 (an earlier table, 0.53 and 0.67, made convnetjs's 20-filter layers
# take 4 x 3). 8 x 1 is put at the low end: where unpooled, an 8 x 2 may run as the span kernel
# (`_span_tile`), faster again on 24 filters (mobilenet-mini's 1x1 64 -> 24 and 96 -> 24:
# 0.73-0.76 and 1.04-1.07 ms against 8 x 1's 0.78-0.82 and 1.14-1.22)
HALVED_TILE_SPEED = {(8, 2): 1.0, (7, 2): 0.98, (6, 2): 0.96, (4, 3): 0.6, (8, 1): 0.74}
HALVED_TILES = tuple(HALVED_TILE_SPEED)
# Where both units run 512 bits at once (Zen 5, 2026-12-02 11:10 UTC; one thread, batch 128,
# best of 14 runs of each plan step; vggish, resnet8 and bottleneck, every conv on one tile)
# 8 accumulators leave them waiting: on 32, 64 and 128 filters 8 x 4 ran the 3x3 layers in
# 0.74-0.81 of 8 x 2's time (32 -> 32 on 32x32 9.63 against 11.86 ms, 64 -> 64 on 16x16 9.43
# against 12.25, 64 -> 128 on 8x8 4.73 against 6.10), 6 x 4 and 7 x 4 within 3% of 8 x 4
# where each stays in its rows (32 -> 32 on 14x14: 7 x 4 1.85, 8 x 4 1.89 ms; on 12x12: 6 x 4
# 1.36, 8 x 4 1.36); on 16 filters, which fill half of it, 8 x 2 beat 8 x 4 (3.17 against
# 4.99 ms), and on 8, 8 x 1 (0.22 against 0.30 for 8 x 2). Per useful lane, against 8 x 4:
WIDE_TILE_SPEED = {(8, 4): 1.0, (7, 4): 0.97, (6, 4): 0.97, (8, 2): 0.78, (7, 2): 0.72,
                   (6, 2): 0.68, (4, 3): 0.66, (8, 1): 0.42}
WIDE_TILES = tuple(WIDE_TILE_SPEED)
CROSSING_SPEED = 0.97  # a tile of positions from two rows

# Indices into the int64 geometry vector of the conv and depthwise kernels.
GEOMETRY = ("b0", "b1", "i0", "i1", "k0", "k1", "x_batch", "x_row", "x_col", "x_origin",
            "stride_h", "stride_w", "out_batch", "out_block", "out_lane", "out_row", "out_col",
            "out_origin", "out_channels", "out_w", "res_batch", "res_block", "res_lane",
            "res_row", "res_col", "res_origin", "has_residual", "act", "x_block",
            "kernel_h", "kernel_w", "dilation_h", "dilation_w", "out_store", "pool", "taps")
G = {name: index for index, name in enumerate(GEOMETRY)}


def geometry_vector(**fields) -> numpy.ndarray:
    """The int64 geometry vector the conv and depthwise kernels take, from GEOMETRY's names
    (the ones not given are 0)."""
    geometry = numpy.zeros(len(GEOMETRY), dtype=numpy.int64)
    for name, value in fields.items():
        geometry[G[name]] = value
    return geometry


def blocks(channels: int) -> int:
    return -(-channels // LANES)


# -- the layout ---------------------------------------------------------------------------------
class Blocked:
    """A blocked activation: `data` (N, ceil(C/8), H + 2m, W + 2m, 8), `channels` C and the
    zero border m. The interior is `data[:, :, m:m+H, m:m+W]`."""

    __slots__ = ("data", "channels", "border")

    def __init__(self, data, channels: int, border: int):
        self.data = data
        self.channels = channels
        self.border = border

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """The (N, C, H, W) shape of the activation it holds."""
        n, _, hb, wb, _ = self.data.shape
        return (n, self.channels, hb - 2 * self.border, wb - 2 * self.border)

    @property
    def interior(self):
        m = self.border
        _, _, hb, wb, _ = self.data.shape
        return self.data[:, :, m : hb - m, m : wb - m]

    def strides(self) -> tuple[int, int, int, int]:
        """(batch, block, row, column) strides in elements; the lane stride is 1."""
        itemsize = self.data.itemsize
        return tuple(s // itemsize for s in self.data.strides[:4])

    def origin(self) -> int:
        """Elements from the start of `data` to pixel (0, 0) of the interior."""
        _, _, row, col = self.strides()
        return self.border * (row + col)


def empty_blocked(n: int, channels: int, hw, border: int, dtype=numpy.float32) -> Blocked:
    """A blocked activation whose border (and only it) is zeroed: the interior is left for a
    kernel to write, every lane of it (channels past C included)."""
    h, w = hw
    m = border
    data = numpy.empty((n, blocks(channels), h + 2 * m, w + 2 * m, LANES), dtype=dtype)
    if m:
        data[:, :, :m] = 0
        data[:, :, h + m :] = 0
        data[:, :, m : h + m, :m] = 0
        data[:, :, m : h + m, w + m :] = 0
    return Blocked(data, channels, m)


def to_blocked(x, border: int = 0, out: Blocked | None = None) -> Blocked:
    """(N, C, H, W) -> Blocked, zeros in the border and in the lanes past C; into `out` (of
    that shape and border) when given."""
    n, c, h, w = x.shape
    if out is None:
        out = empty_blocked(n, c, (h, w), border, x.dtype)
    inside = out.interior  # N, Cb, H, W, 8
    full = c // LANES
    if full:
        inside[:, :full] = x[:, : full * LANES].reshape(n, full, LANES, h, w).transpose(
            0, 1, 3, 4, 2)
    rest = c - full * LANES
    if rest:
        inside[:, full, ..., :rest] = x[:, full * LANES :].transpose(0, 2, 3, 1)
        inside[:, full, ..., rest:] = 0
    return out


def from_blocked(value: Blocked, out=None):
    """Blocked -> (N, C, H, W), a new C-contiguous array (or `out`, C-contiguous)."""
    n, c, h, w = value.shape
    inside = value.interior  # N, Cb, H, W, 8
    if out is None:
        out = numpy.empty((n, c, h, w), dtype=value.data.dtype)
    full = c // LANES
    if full:
        out[:, : full * LANES].reshape(n, full, LANES, h, w)[...] = inside[:, :full].transpose(
            0, 1, 4, 2, 3)
    rest = c - full * LANES
    if rest:
        out[:, full * LANES :] = inside[:, full, ..., :rest].transpose(0, 3, 1, 2)
    return out


# -- the direct convolution -------------------------------------------------------------------
def tiles() -> tuple[tuple[int, int], ...]:
    """The tiles choose_tile weighs on this CPU: `WIDE_TILES` with AVX-512 (`HALVED_TILES`
    where its 512-bit multiply-adds run at half rate), else `TILES`."""
    return tuple(_tile_speeds())


def _tile_speeds() -> dict[tuple[int, int], float]:
    if kernels.full_rate_512():
        return WIDE_TILE_SPEED
    return HALVED_TILE_SPEED if kernels.wide_registers() else TILE_SPEED


def choose_tile(out_channels: int, positions: int, width: int | None = None,
                pooled: bool = False) -> tuple[int, int]:
    """The tile (P, B) with the least wasted work over the filters and the output positions of
    an image (the last tile of an image recomputes some), weighed by the speed of each tile
    and, given the output rows' `width`, by whether its P positions stay within a row.
    pooled: one that can take a 2x2 max pool in (P even, the filters' blocks whole tiles); a
    tile `pooled_windows` gives a form then covers two rows of P/2 columns."""
    best, best_cost = None, math.inf
    for (count, block_count), speed in _tile_speeds().items():
        if pooled and (count % 2 or blocks(out_channels) % block_count):
            continue
        lanes = LANES * block_count
        windows = pooled and width is not None and pooled_windows((count, block_count))
        columns = count // 2 if windows else count
        span = width if windows else positions  # computed in whole tiles
        waste = (-(-out_channels // lanes) * lanes / out_channels
                 * -(-span // columns) * columns / span)
        if not windows and width is not None and positions > width and width % count:
            speed *= CROSSING_SPEED
        cost = waste / speed
        if cost < best_cost:
            best, best_cost = (count, block_count), cost
    return best


# The conv kernels' taps: geometry "taps" 0 takes every entry of `offsets` for every position;
# taps T > 0 says that offsets holds T taps in the order of their kernel rows and then, for
# each output row i, the range [offsets[T + 2i], offsets[T + 2i + 1]) of the taps whose input
# row is inside the image (`row_tap_table`): the others read the zero border only.
_TAPS = [f"    taps = geometry[{GEOMETRY.index('taps')}]",
         "    row_table = taps > 0",
         "    if not row_table:",
         "        taps = offsets.shape[0]"]


def _tap_range(ind: str, last_row: str, first_row: str) -> list[str]:
    """Code setting t_lo, t_hi: the taps that read the image for output rows first_row ..
    last_row (both take the zero border's taps for rows between: the table's ranges start
    and end no later as the rows go down)."""
    return [ind + "t_lo, t_hi = 0, taps",
            ind + "if row_table:",
            ind + f"    t_lo = offsets[taps + 2 * {last_row}]",
            ind + f"    t_hi = offsets[taps + 2 * {first_row} + 1]"]


def row_tap_table(in_h: int, out_h: int, kernel_h: int, stride_h: int, dilation_h: int,
                  pad_top: int, taps_per_row: int) -> numpy.ndarray | None:
    """int64 (out_h, 2): for each output row, the range of taps (listed kernel row by kernel
    row, taps_per_row each) whose input rows are inside the image, or None where every row
    reads all of them. Both ends never grow as the rows go down."""
    rows = numpy.arange(out_h) * stride_h - pad_top  # input row of kernel row 0
    first = numpy.minimum(numpy.where(rows < 0, -(rows // dilation_h), 0), kernel_h)
    last = numpy.maximum(numpy.minimum(kernel_h, (in_h - 1 - rows) // dilation_h + 1), first)
    if (first == 0).all() and (last == kernel_h).all():
        return None
    return numpy.stack([first, last], axis=1).astype(numpy.int64) * taps_per_row


def row_major_taps(channels: int, kernel, lanes_in: int) -> numpy.ndarray:
    """int64 (taps,): the live taps of `tap_offsets(..., live_only=True)` (and of filters
    packed with live_only) reordered kernel row by kernel row, each row's in their order."""
    rows = _tap_grid(int(channels), tuple(kernel), int(lanes_in))[1].reshape(-1)
    return numpy.argsort(rows[_live_taps(channels, kernel, lanes_in)], kind="stable")


def _positions(positions: int, ind: str, with_residual: bool, pooled: bool = False
               ) -> list[str]:
    """Code placing a tile's P positions: output positions q0 .. q0+P-1 of image b in
    row-major order, the ones past the range clamped to its last (computed and stored again,
    with the same values), as the addresses of their first input pixel, output and shortcut.
    (ci, cj) is q0's row and column, kept up to date without dividing (a 64-bit division
    costs tens of cycles, a tile's P of them as much as a 1x1 layer's arithmetic). A position
    in the row of the one before it is that one's addresses plus a column's steps; only one
    that starts a row or is clamped is placed from its row and column (the multiplications
    of every position, 3 per address, weighed on layers of few taps). pooled: the output is
    addressed at (row >> pool, column >> pool) (a 2x2 max pool taken in when pool is 1), and
    odd{p} is 1 for an even position p on an odd row then."""
    shift = " >> pool" if pooled else ""
    def place(p: int, at: str) -> list[str]:
        lines = [at + f"x{p}p = b * x_batch + pi * stride_h * x_row + pj * stride_w * x_col"
                      " + x_origin",
                 at + f"o{p}p = b * out_batch + (pi{shift}) * out_row + (pj{shift}) * out_col"
                      " + out_origin"]
        if with_residual:
            lines.append(at + f"r{p}p = b * res_batch + pi * res_row + pj * res_col"
                              " + res_origin")
        return lines

    lines = [ind + "pi = ci", ind + "pj = cj"] + place(0, ind)
    if pooled:
        lines.append(ind + "odd0 = pi & pool")
    for p in range(1, positions):
        lines += [ind + "pj += 1",
                  ind + f"if pj < out_w and q0 + {p} < q1:",
                  ind + f"    x{p}p = x{p - 1}p + x_step",
                  ind + f"    o{p}p = o{p - 1}p + " + (
                      "(1 - (pj & pool)) * out_col" if pooled else "out_col")]
        if with_residual:
            lines.append(ind + f"    r{p}p = r{p - 1}p + res_col")
        lines += [ind + "else:",
                  ind + "    if pj >= out_w:",
                  ind + "        pi += pj // out_w",
                  ind + "        pj = pj % out_w",
                  ind + f"    if q0 + {p} >= q1:",
                  ind + "        pi = last_i",
                  ind + "        pj = last_j"]
        lines += place(p, ind + "    ")
        if pooled and p % 2 == 0:
            lines.append(ind + f"odd{p} = pi & pool")
    lines += [ind + f"cj += {positions}",
              ind + "if cj >= out_w:",
              ind + "    ci += cj // out_w",
              ind + "    cj = cj % out_w"]
    return lines


def _position_start(ind: str) -> list[str]:
    """Row and column of the first position of a range, and of its last."""
    return [ind + "ci = i0 // out_w",
            ind + "cj = i0 - ci * out_w",
            ind + "last_i = (q1 - 1) // out_w",
            ind + "last_j = q1 - 1 - last_i * out_w"]


# The fast epilogues' activation, as min(max(y, lo), hi): none, ReLU or a clip.
_ACTIVATION_BOUNDS = ["    lo, hi = -INF, INF",
                      "    if act == 1:",
                      "        lo = ZERO",
                      "    elif act == 2:",
                      "        lo, hi = alpha, beta"]


def _pooled_stores(positions: int, block_count: int, ind: str) -> list[str]:
    """The fast epilogue with a 2x2 max pool of stride 2 taken in (pool 1; the plan asks it
    only with no shortcut, no activation, ReLU or a clip, and whole tiles): positions p and
    p + 1 (p even) are two columns of one pooling window (the range starts on an even row of
    an even-width output), so their maximum is stored at the window's output, and a window's
    odd row takes the maximum with what its even row stored there (a chunk's rows in order).
    max(act(u), act(v)) = act(max(u, v)) as the activations are non-decreasing. A loop over
    the pairs, reading the sums from `tile` and the outputs' addresses from `opos`. For the
    tiles `pooled_windows` gives no form (the others take whole windows: `_pooled_windows`)."""
    lanes = LANES * block_count
    lines = [ind + "if pool:"]
    lines += [ind + f"    odds[{p // 2}] = odd{p}" for p in range(0, positions, 2)]
    lines += [ind + f"    for p in range(0, {positions}, 2):",
              ind + "        odd = odds[p >> 1]"]
    for q in range(block_count):
        lines += [ind + f"        o = INDEX(opos[p] + (kt * {block_count} + {q}) * out_block)",
                  ind + f"        c = INDEX(kt * {lanes} + {q * 8})",
                  ind + f"        ti = INDEX(p * {lanes} + {q * 8})"]
        lines += _pooled_lanes(ind + "        ", lambda lane: (
            f"tile[ti + INDEX({lane})]", f"tile[ti + INDEX({lanes + lane})]"), "o", "odd")
    return lines + [ind + "    continue"]


def _pooled_lanes(ind: str, pair, at: str, odd: str) -> list[str]:
    """Code storing 8 lanes of a pooling window's pair of columns, pair(lane) their two sums:
    out[at + lane] = act(max of the pair + bias[c + lane]), and on an odd row (`odd`) the
    maximum with what is there; every load before any store (vector code)."""
    lines = [ind + f"y{lane} = min(max(max({pair(lane)[0]}, {pair(lane)[1]}) + "
                   f"bias[c + INDEX({lane})], lo), hi)" for lane in range(LANES)]
    lines += [ind + f"m{lane} = out[{at} + INDEX({lane})]" for lane in range(LANES)]
    lines += [ind + f"y{lane} = max(y{lane}, m{lane}) if {odd} else y{lane}"
              for lane in range(LANES)]
    return lines + [ind + f"out[{at} + INDEX({lane})] = y{lane}" for lane in range(LANES)]


def _tile_taps(positions: int, lanes: int, ind: str, last_row: str, first_row: str,
               column: int | None = None) -> list[str]:
    """Code summing a tile's P positions x `lanes` filters of filter tile kt over the taps
    that read the image for its output rows first_row .. last_row, into the accumulators
    a{p}_{k}: per tap the filters' lanes loaded once and each position's pixel broadcast to a
    multiply-add with each. The positions' first input pixels are at x{p}p, or (`column`:
    the span kernel's consecutive columns) `column` elements apart from xa = row + jc *
    column, one address and a displacement each."""
    lines = [ind + " = ".join(f"a{p}_{k}" for k in range(lanes)) + " = ZERO"
             for p in range(positions)]
    lines += [*_tap_range(ind, last_row, first_row),
              ind + f"wa = INDEX((kt * taps + t_lo) * {lanes})"]
    if column is not None:
        lines.append(ind + f"xa = row + jc * {column}")
    lines += [ind + "for t in range(t_lo, t_hi):",
              ind + ("    at = offsets[t]" if column is None else
                     "    at = INDEX(xa + offsets[t])")]
    body = ind + "    "
    lines += [body + f"w{k} = w[wa + INDEX({k})]" for k in range(lanes)]
    for p in range(positions):
        lines.append(body + (f"x{p} = x[INDEX(x{p}p + at)]" if column is None else
                             f"x{p} = x[at + INDEX({column * p})]"))
        lines += [body + f"a{p}_{k} += x{p} * w{k}" for k in range(lanes)]
    return lines + [body + f"wa += INDEX({lanes})"]


# Tiles that take a 2x2 max pool in two rows at a time (`_pooled_windows`), where 512-bit
# multiply-adds run at full rate, and the stores their windows go through: each window's
# maximum ("maxima") or every sum ("sums"). LLVM's SLP vectorizer builds the accumulators'
# vectors from those stores or, in the other form, lane by lane with permutes and scalar
# multiplies (read in the assembly on Zen 5: straight from the accumulators 30 times slower);
# 8 x 1 and 4 x 3 took permutes in both forms, and the other CPUs were not read, so they keep
# a row's pairs (`_pooled_stores`).
POOLED_WINDOW_TILES = {(8, 4): "maxima", (8, 2): "sums"}


def pooled_windows(tile) -> str | None:
    """The form of `_pooled_windows` a pooled tile takes on this CPU, or None for
    `_pooled_stores`."""
    return POOLED_WINDOW_TILES.get(tuple(tile)) if kernels.full_rate_512() else None


def _pooled_windows(positions: int, block_count: int, form: str) -> list[str]:
    """Code for a 2x2 max pool of stride 2 taken in (pool 1) by a tile of P = 4m positions:
    2 output rows x P/2 columns, the pooling windows of a row pair side by side, so that each
    window's 4 sums are in the tile and its maximum is stored once, straight to the pooled
    output. (A tile of one row's positions holds half of each window, and a window's second
    row reads back what its first stored: `_pooled_stores`. On Zen 5 its epilogue took as
    long as a 1x1 layer's taps, and in some loads of the module, the same code, 1.4-1.6
    times as long again.) The plan asks it with whole filter tiles into a blocked output, no
    shortcut, no activation, ReLU or a clip, and ranges of whole row pairs (`work_splits`'
    align); a row's last columns past its end repeat its last one, their windows not
    stored. The sums go through `tile` in `form` (POOLED_WINDOW_TILES), then each window
    to the output 8 lanes at a time."""
    lanes = LANES * block_count
    half = positions // 2  # columns, an even number: whole windows
    lines = ["    if pool:",
             "        row_step = stride_h * x_row",
             "        for b in range(b0, b1):",
             "            for kt in range(k0, k1):",
             "                for pi in range(i0 // out_w, i1 // out_w, 2):",
             "                    xr = b * x_batch + pi * row_step + x_origin",
             "                    orow = b * out_batch + (pi >> 1) * out_row + out_origin",
             f"                    for pj in range(0, out_w, {half}):"]
    ind = " " * 24
    for c in range(half):  # position c in row pi, half + c in row pi + 1
        column = "pj" if c == 0 else f"min(pj + {c}, out_w - 1)"
        lines += [ind + f"x{c}p = xr + {column} * x_step",
                  ind + f"x{half + c}p = x{c}p + row_step"]
    lines += _tile_taps(positions, lanes, ind, "(pi + 1)", "pi")
    corners = [(2 * window, 2 * window + 1, half + 2 * window, half + 2 * window + 1)
               for window in range(half // 2)]  # each window's positions
    if form == "maxima":
        lines += [ind + f"tile[{window * lanes + k}] = max(max(a{a}_{k}, a{b}_{k}), "
                        f"max(a{c}_{k}, a{d}_{k}))"
                  for window, (a, b, c, d) in enumerate(corners) for k in range(lanes)]
    else:
        lines += [ind + f"tile[{p * lanes + k}] = a{p}_{k}"
                  for p in range(positions) for k in range(lanes)]
    for window in range(half // 2):
        at = ind
        if window:
            lines.append(ind + f"if pj + {2 * window} < out_w:")
            at = ind + "    "
        for q in range(block_count):
            lines += [at + f"o = INDEX(orow + ((pj >> 1) + {window}) * out_col"
                           f" + (kt * {block_count} + {q}) * out_block)",
                      at + f"c = INDEX(kt * {lanes} + {q * 8})"]
            if form == "maxima":
                rows = [f"tile[{window * lanes + q * 8 + lane}]" for lane in range(LANES)]
            else:
                a, b, c, d = (p * lanes + q * 8 for p in corners[window])
                rows = [f"max(max(tile[{a + lane}], tile[{b + lane}]), "
                        f"max(tile[{c + lane}], tile[{d + lane}]))" for lane in range(LANES)]
            lines += [at + f"y{lane} = min(max({row} + bias[c + INDEX({lane})], lo), hi)"
                      for lane, row in enumerate(rows)]
            lines += [at + f"out[o + INDEX({lane})] = y{lane}" for lane in range(LANES)]
    return lines + ["        return"]


def conv_source(positions: int, block_count: int, pooled: bool = True) -> str:
    """The Python source of the direct convolution for one tile (print it to read it).
    pooled: with the code of a 2x2 max pool taken in as `pooled_windows` says; False for the
    modules whose products never pool (Winograd's), which keep a row's pairs as before the
    windows, so that their text (and Numba's cache of them) is what it was."""
    lanes = LANES * block_count
    g = G
    form = pooled_windows((positions, block_count)) if pooled else None
    lines = [
        "def conv(x, w, bias, offsets, out, residual, geometry, alpha, beta):",
        "    # x: the input (flat), output position (i, j) of image b reads x at",
        "    #    b*x_batch + (i*SH)*x_row + (j*SW)*x_col + x_origin + offsets[t] for tap t;",
        "    # w (K tiles, taps, LANES*B); bias (K tiles * LANES*B,); positions q0 <= q < q1 are",
        "    # i*out_w + j; out[b*out_batch + (k//8)*out_block + (k%8)*out_lane + i*out_row +",
        "    # j*out_col + out_origin] = act(bias[k] + sum_t x[...] w[t, k] + residual[...]) for",
        "    # k < out_store (a blocked output's lanes past K get act(0): never uninitialized);",
        "    # pool 1: out holds the 2x2 stride-2 max pool of that (see "
        + ("_pooled_stores)" if form is None else "_pooled_windows)"),
    ]
    for name in ("b0", "b1", "i0", "i1", "k0", "k1", "x_batch", "x_row", "x_col", "x_origin",
                 "stride_h", "stride_w", "out_batch", "out_block", "out_lane", "out_row",
                 "out_col", "out_origin", "out_channels", "out_w", "res_batch", "res_block",
                 "res_lane", "res_row", "res_col", "res_origin", "has_residual", "act",
                 "out_store", "pool"):
        lines.append(f"    {name} = geometry[{g[name]}]")
    lines += [
        "    q1 = i1  # the range of output positions, in row-major order",
        "    x_step = stride_w * x_col  # from an output column to the next",
        *_TAPS,
        "    rows_of_8 = out_lane == 1 and (has_residual == 0 or res_lane == 1)",
        "    plain_rows = out_block == 8 * out_lane  # (a plain output, columns any apart)",
        *_ACTIVATION_BOUNDS,
        f"    tile = stack_empty({positions * lanes}, x.dtype)",
        f"    opos = stack_empty({positions}, numpy.int64)",
        f"    rpos = stack_empty({positions}, numpy.int64)",
        f"    odds = stack_empty({max(1, positions // 2)}, numpy.int64)",
    ]
    if form is not None:
        lines += _pooled_windows(positions, block_count, form)
    lines += [
        "    for b in range(b0, b1):",
        "        for kt in range(k0, k1):",
        *_position_start(" " * 12),
        f"            for q0 in range(i0, q1, {positions}):",
    ]
    ind = " " * 16
    lines.append(ind + "fi = ci  # the tile's first row (pi: its last, once placed)")
    row_pooled = positions % 2 == 0 and form is None  # (or taken in above)
    lines += _positions(positions, ind, True, pooled=row_pooled)
    lines += _tile_taps(positions, lanes, ind, "pi", "fi")
    # The common case straight from the accumulators, in straight-line code LLVM vectorizes: a
    # whole tile into a blocked output, no shortcut, no activation, ReLU or a clip, all three
    # as min(max(y, lo), hi). 1.1-1.3x on networks of few-tap convolutions. The same code for
    # a shortcut and for a pool taken in (once each per position) took the 8 x 4 tile's
    # module 56 s to compile; as loops over the positions below, 21 s (the 8 x 2's 25 -> 11):
    # vggish's pooled layers as fast (one thread, batch 128), a shortcut's 3x3 layers of 32
    # and 64 filters 3% slower (resnet8 0.7%), for the minutes a fresh machine spends
    # compiling each tile's module.
    lines += [ind + f"if rows_of_8 and act <= 2 and (kt + 1) * {lanes} <= out_store"
                    " and has_residual == 0 and pool == 0:"]
    for p in range(positions):
        for q in range(block_count):
            lines += [ind + f"    o = INDEX(o{p}p + (kt * {block_count} + {q})"
                            " * out_block)",
                      ind + f"    c = INDEX(kt * {lanes} + {q * 8})"]
            lines += [ind + f"    y{lane} = min(max(a{p}_{q * 8 + lane}"
                            f" + bias[c + INDEX({lane})], lo), hi)" for lane in range(LANES)]
            lines += [ind + f"    out[o + INDEX({lane})] = y{lane}"
                      for lane in range(LANES)]
    lines.append(ind + "    continue")
    lines += [ind + f"tile[{p * lanes + k}] = a{p}_{k}"
              for p in range(positions) for k in range(lanes)]
    lines += [ind + f"opos[{p}] = o{p}p" for p in range(positions)]
    lines += [ind + f"rpos[{p}] = r{p}p" for p in range(positions)]
    # The same with a pool taken in, or from a blocked shortcut through `tile`, a position
    # at a time: each position's shortcut is read before its output is stored (the plan may
    # write the output over the shortcut's own buffer, Runner._assign_buffers), and a tile's
    # clamped repeats of its last position are not stored again (they would read the
    # shortcut written over).
    lines += [ind + f"if rows_of_8 and act <= 2 and (kt + 1) * {lanes} <= out_store:"]
    if row_pooled:
        lines += _pooled_stores(positions, block_count, ind + "    ")
    lines += [ind + f"    for p in range({positions}):  # (a shortcut: the other cases went on)",
              ind + "        if q0 + p >= q1:",
              ind + "            break"]
    for q in range(block_count):
        lines += [ind + f"        o = INDEX(opos[p] + (kt * {block_count} + {q})"
                        " * out_block)",
                  ind + f"        ti = INDEX(p * {lanes} + {q * 8})",
                  ind + f"        c = INDEX(kt * {lanes} + {q * 8})",
                  ind + f"        r = INDEX(rpos[p] + (kt * {block_count} + {q}) * res_block)"]
        for lane in range(LANES):
            y = (f"tile[ti + INDEX({lane})] + bias[c + INDEX({lane})]"
                 f" + residual[r + INDEX({lane})]")
            lines.append(ind + f"        y{lane} = min(max({y}, lo), hi)")
        lines += [ind + f"        out[o + INDEX({lane})] = y{lane}"
                  for lane in range(LANES)]
    lines.append(ind + "    continue")
    # A plain (N, K, H, W) output (training's), no shortcut, no activation, ReLU or a clip:
    # a loop over the tile's lanes, each to its own plane (as fast here as straight-line
    # code from the accumulators, which took each tile 30-70% longer to compile).
    lines += [ind + "if plain_rows and act <= 2 and has_residual == 0:"]
    lines += [ind + f"    for k in range(min({lanes}, out_store - kt * {lanes})):",
              ind + f"        s = (kt * {lanes} + k) * out_lane",
              ind + f"        shift = bias[kt * {lanes} + k]",
              ind + f"        for p in range({positions}):",
              ind + f"            out[INDEX(opos[p] + s)] = min(max(tile[p * {lanes} + k]"
                    " + shift, lo), hi)",
              ind + "    continue"]
    # Epilogue, rows of 8 (a blocked output, and a blocked shortcut if any), in one loop
    # over the tile's positions (the code once, not once per position).
    lines += [ind + "if rows_of_8:",
              ind + f"    rows = min({block_count}, (out_store - kt * {lanes}) // 8)"]
    lines += [ind + f"    for p in range({positions}):",
              ind + "        if q0 + p >= q1:  # a clamped repeat of the last: stored already",
              ind + "            break",
              ind + "        for q in range(rows):",
              ind + f"            o = INDEX(opos[p] + (kt * {block_count} + q) * out_block)",
              ind + f"            ti = INDEX(p * {lanes} + q * 8)",
              ind + f"            c = INDEX(kt * {lanes} + q * 8)",
              ind + f"            r = INDEX(rpos[p] + (kt * {block_count} + q) * res_block)"]
    lines += _epilogue_lines(ind + "            ")
    lines.append(ind + "    continue")
    # Any other layout (a plain output): lane by lane through the strides.
    lines += [
        ind + f"valid = min({lanes}, out_store - kt * {lanes})",
        ind + f"for p in range({positions}):",
        ind + "    if q0 + p >= q1:  # a clamped repeat of the last: stored already",
        ind + "        break",
        ind + "    for k in range(valid):",
        ind + f"        ch = kt * {lanes} + k",
        ind + f"        y = tile[p * {lanes} + k] + bias[ch]",
        ind + "        if has_residual and ch < out_channels:",
        ind + "            y += residual[rpos[p] + (ch >> 3) * res_block + (ch & 7) * res_lane]",
        ind + "        out[opos[p] + (ch >> 3) * out_block + (ch & 7) * out_lane] = "
              "activate(y, act, alpha, beta)",
    ]
    return "\n".join(lines)


# The row kernel's tile: 16 consecutive output columns x one block of 8 filters. It serves a
# plain input (a first layer's 1-7 channels) of at most 8 filters at column stride 1; one
# thread, batch 128, lenet5's first layer (6 filters 5x5 on 28x28): inference 0.97 -> 0.87 ms,
# training's forward 1.40 -> 1.04. With 16 or 32 filters a 16 x 2 tile was slower than the
# 6 x 2 tile, which already fills 16 lanes (vggish's first layer 4.5 against 3.3 ms in
# inference, 2-6% in training): moving 16 x 16 sums into the blocked layout costs more than
# the taps of a 3x3x3 window save.
ROW_TILE = (16, 1)
# Without AVX-512, 16 columns are two registers: 8 filters' sums 16 of them, and with the
# input's two vectors and a broadcast weight 19 of AVX2's 16. There 8 columns (8 sums). Zen 3,
# one thread, batch 128, best of 5 alternated in one process (2026-12-03 19:41 UTC), the first
# layer's step, 16 / 8 columns, ms: lenet5 (1 -> 6 5x5 and its pool) 1.900 / 1.221, fcn-mini
# (1 -> 8 3x3 on 64x64) 5.144 / 4.504, unet-mini 5.608 / 4.907. And there vectorized over the
# 8 filters (`conv_rows_source`'s over_filters): vectorized over the columns, the epilogue
# gathered each column's 8 sums from 8 vectors, half the step's time (perf). Best of 15 of
# the step, three alternated processes (2026-12-03 22:45 UTC), fcn-mini's first layer 4.45-4.58
# -> 2.71-2.89 ms (12 columns 2.35-2.42, 16 3.2-4.1: spilled); training's forward of it
# 8.4-8.6 -> 4.3-4.6, of lenet5's 1.8-3.7 -> 1.3-2.5; whole networks at batch 128, one
# thread: lenet5 2.13-2.28 -> 1.90-1.93 ms, fcn-mini 53.3-56.7 -> 50.1-52.1.
AVX2_ROW_TILE = (8, 1)


def row_tile() -> tuple[int, int]:
    """The row kernel's tile (columns, blocks) on this CPU."""
    return ROW_TILE if kernels.wide_registers() else AVX2_ROW_TILE


# Where AVX-512's multiply-adds run at half rate, inference's row kernel sums 16 columns x 8
# filters as 16 vectors of the 8 filters (256 bits: as many multiply-adds a cycle there as
# 512), so that each column's sums are already its 8 lanes of the blocked output; summed as
# 8 vectors of 16 columns, each column's 8 sums were gathered from 8 vectors in the epilogue.
# Whole networks at batch 128, two threads, one plan of each alternated in one process,
# medians of 12 (2026-12-04 16:55 UTC), over the filters / over the columns: fcn-mini 0.961,
# unet-mini 0.937, lenet5 0.890, convnetjs-mnist 0.954 of the time (512-bit vectors: 0.960,
# 0.947, 0.957, 0.988). Where they run at full rate, over the filters too for a whole block of
# 8 (its 256-bit vectors all live; with fewer, the columns' 512-bit ones): two threads, one
# plan of each alternated in one process, medians of 10 rounds (2026-12-05 14:39 UTC), over
# the filters / over the columns, batch 1 and batch 128: fcn-mini (8 filters) 0.966 and 0.991,
# 0.956 and 0.965; unet-mini (8) 0.979 and 0.986; lenet5 (6) 0.999 and 1.034, 0.996 and 1.027.
# Training keeps the columns' vectors: its plain output takes each filter's 16 columns as one
# store.
ROW_FILTERS_BITS = 256


def row_kernel(filters: int) -> tuple[str, tuple[int, int]]:
    """The kind and tile of inference's row kernel (`takes_rows`) for a layer of `filters` on
    this CPU: "conv_rows" (`conv_rows_source` over the columns with AVX-512, over the filters
    on AVX2) or, where AVX-512's multiply-adds run at half rate, or at full rate for a block
    of 8 filters, "conv_rows_filters" (over the filters)."""
    if kernels.wide_registers() and (not kernels.full_rate_512() or filters == LANES):
        return "conv_rows_filters", row_tile()
    return "conv_rows", row_tile()


def takes_rows(filters: int, stride_w: int, out_w: int) -> bool:
    """Whether a convolution of a plain input runs on the row kernel (`conv_rows_source`)."""
    return filters <= LANES and stride_w == 1 and out_w >= row_tile()[0]


def _row_spans(positions: int, per_tile: str, per_row: list[str]) -> list[str]:
    """Code walking a range of output positions i0 <= q < i1 row by row, P columns at a time:
    for image b, filter tile kt (`per_tile`: a line at its start), row i (`per_row`: lines
    after `row`, the address of its input's first pixel), the span's first column j0 and jc,
    the first of the P columns computed (a row's last P end at its end: rows of at least P)."""
    return ["    first_row, last_row = i0 // out_w, (i1 - 1) // out_w",
            "    for b in range(b0, b1):",
            "        for kt in range(k0, k1):",
            "            " + per_tile,
            "            for i in range(first_row, last_row + 1):",
            "                js = i0 - i * out_w if i == first_row else 0",
            "                je = i1 - i * out_w if i == last_row else out_w",
            "                row = b * x_batch + i * stride_h * x_row + x_origin",
            *["                " + line for line in per_row],
            f"                for j0 in range(js, je, {positions}):",
            f"                    jc = min(j0, out_w - {positions})  # P columns inside the row"]


def conv_rows_source(positions: int, over_filters: bool = False, block_count: int = 1) -> str:
    """The direct convolution of a plain input at column stride 1 (a first layer's 1-7
    channels; in training on Zen 4 any: `blocked_training.rows_over_channels`), P consecutive
    output columns of a row at a time, each tap's pixels at constant
    distances from one address. Vectorized over the P columns: per tap one vector load of P
    input pixels and 8 fused multiply-adds, each with one filter's weight broadcast (with one
    block of filters, `conv_source`'s 8 x 1 tile broadcasts each pixel, and LLVM pairs its
    positions into 16 lanes with a permute per pair); over_filters: over the 8 filters
    instead (AVX2's 8 lanes: per tap one vector of weights and P pixels broadcast), the sums
    of a column then already the 8 lanes of its blocked output (no transposing in the
    epilogue). Same arguments and geometry as `conv_source`'s kernel, filters packed for
    block_count blocks; a row's last P columns end at its end (recomputing some: needs rows
    of at least P columns), only this call's positions are stored, and no shortcut is added
    (print it to read it). block_count: blocks of 8 filters a tile sums
    (`blocked_training.TRAINING_ROW_TILE`'s 2: the pooled and blocked outputs' shortcuts below
    are one block's and left out with more, where every output but a plain one goes lane by
    lane)."""
    lanes = LANES * block_count
    one_block = block_count == 1

    def held(k, p) -> str:
        """Where filter k's sum of column p is kept in `tile` (p, k: code or numbers)."""
        return f"{p} * {lanes} + {k}" if over_filters else f"{k} * {positions} + {p}"

    lines = [
        "def conv(x, w, bias, offsets, out, residual, geometry, alpha, beta):",
        "    # x: plain, output position (i, j) of image b reads x at",
        "    #    b*x_batch + (i*SH)*x_row + j + x_origin + offsets[t] for tap t (x_col*SW == 1)",
        "    # w (K tiles, taps, LANES*B); bias (K tiles * LANES*B,); positions i0 <= q < i1 are",
        "    # i*out_w + j; out[b*out_batch + (k//8)*out_block + (k%8)*out_lane + i*out_row +",
        "    # j*out_col + out_origin] = act(bias[k] + sum_t x[...] w[t, k]) for k < out_store",
    ]
    for name in ("b0", "b1", "i0", "i1", "k0", "k1", "x_batch", "x_row", "x_origin",
                 "stride_h", "out_batch", "out_block", "out_lane", "out_row", "out_col",
                 "out_origin", "out_w", "act", "out_store", "pool"):
        lines.append(f"    {name} = geometry[{G[name]}]")
    lines += [
        *_TAPS,
        "    plain_rows = out_block == 8 * out_lane and out_col == 1 and out_lane != 1",
        *_ACTIVATION_BOUNDS,
        f"    tile = stack_empty({lanes * positions}, x.dtype)",
        *_row_spans(positions, f"store = min({lanes}, out_store - kt * {lanes})", []),
    ]
    ind = " " * 20
    for k in range(lanes):
        lines.append(ind + " = ".join(f"a{k}_{p}" for p in range(positions)) + " = ZERO")
    lines += [*_tap_range(ind, "i", "i"),
              ind + f"wa = INDEX((kt * taps + t_lo) * {lanes})",
              ind + "for t in range(t_lo, t_hi):",
              ind + "    at = INDEX(row + jc + offsets[t])"]
    body = ind + "    "
    if over_filters:  # (the statements' order leads LLVM's vectorizer)
        lines += [body + f"w{k} = w[wa + INDEX({k})]" for k in range(lanes)]
        for p in range(positions):
            lines.append(body + f"x{p} = x[at + INDEX({p})]")
            lines += [body + f"a{k}_{p} += x{p} * w{k}" for k in range(lanes)]
    else:
        lines += [body + f"x{p} = x[at + INDEX({p})]" for p in range(positions)]
        for k in range(lanes):
            lines.append(body + f"w{k} = w[wa + INDEX({k})]")
            lines += [body + f"a{k}_{p} += x{p} * w{k}" for p in range(positions)]
    lines.append(body + f"wa += INDEX({lanes})")
    if not over_filters:
        # A plain output (training's), a whole span of a row and all of the tile's filters:
        # each filter's P columns straight from its sums' vector into its plane (through
        # `tile` and a loop per filter, 16 x 2: 3-12% slower, the loop's bookkeeping against
        # the taps; one thread, batch 128, 3x3, ms, in separate runs: 32 -> 32 on 32x32
        # 23.8-24.4 against 23.2, 16 -> 16 7.3-7.7 / 6.9, 64 -> 64 on 16x16 24.3-25.6 / 22.7).
        # Fewer filters than the tile's lanes (a first layer's 6) skip the rest, each behind
        # one branch that goes the same way all the layer long.
        lines += [ind + "if plain_rows and act <= 2 and j0 == jc:",
                  ind + "    so = b * out_batch + i * out_row + jc + out_origin"]
        for k in range(lanes):  # (names of their own: each name has one type here)
            guard = ind + "    " + ("" if k == 0 else f"if store > {k}:")
            step = ind + ("    " if k == 0 else "        ")
            if k:
                lines.append(guard)
            lines += [step + f"sk = INDEX(so + (kt * {lanes} + {k}) * out_lane)",
                      step + f"sb = bias[kt * {lanes} + {k}]"]
            lines += [step + f"out[sk + INDEX({p})] = min(max(a{k}_{p} + sb, lo), hi)"
                      for p in range(positions)]
        lines.append(ind + "    continue")
    order = ([(k, p) for p in range(positions) for k in range(lanes)] if over_filters
             else [(k, p) for k in range(lanes) for p in range(positions)])
    lines += [ind + f"tile[{held(k, p)}] = a{k}_{p}" for k, p in order]
    # A 2x2 stride-2 max pool taken in (as in conv_source's _pooled_stores: a blocked output,
    # no activation, ReLU or a clip, an even row width and ranges of whole row pairs, so
    # the columns j0 - jc, j0 - jc + 1 ... pair up): each pair's maximum at the pooled output,
    # an odd row taking the maximum with what the even row stored.
    if one_block:
        lines += [
            ind + "if pool:",
            ind + f"    for p in range(j0 - jc, min(je - jc, {positions}), 2):",
            ind + "        oq = INDEX(b * out_batch + (i >> 1) * out_row + ((jc + p) >> 1)"
                  " * out_col + out_origin + kt * out_block)",
            ind + f"        c = INDEX(kt * {lanes})",
        ]
        lines += _pooled_lanes(ind + "        ", lambda lane: (
            f"tile[INDEX({held(lane, 'p')})]", f"tile[INDEX({held(lane, '(p + 1)')})]"),
            "oq", "i & 1")
        lines.append(ind + "    continue")
    # This call's columns: into a blocked output with no activation, ReLU or a clip, eight
    # lanes at a time in straight-line code, every load before any store (LLVM's SLP
    # vectorizer makes it vector code; a loop through `activate` took longer than the taps of
    # a 25-tap layer); any other layout or activation lane by lane.
    lines += [
        ind + f"for p in range(j0 - jc, min(je - jc, {positions})):",
        ind + "    o = b * out_batch + i * out_row + (jc + p) * out_col + out_origin",
    ]
    if one_block:
        lines += [ind + "    if out_lane == 1 and act <= 2 and store == 8:",
                  ind + "        oq = INDEX(o + kt * out_block)",
                  ind + f"        c = INDEX(kt * {lanes})"]
        lines += [ind + f"        y{lane} = min(max(tile[INDEX({held(lane, 'p')})]"
                        f" + bias[c + INDEX({lane})], lo), hi)" for lane in range(LANES)]
        lines += [ind + f"        out[oq + INDEX({lane})] = y{lane}" for lane in range(LANES)]
        lines.append(ind + "        continue")
    lines += [
        ind + "    if plain_rows and act <= 2:  # all of this position's filters: below",
        ind + "        break",
        ind + "    for k in range(store):",
        ind + f"        y = tile[INDEX({held('k', 'p')})] + bias[kt * {lanes} + k]",
        ind + ("        out[INDEX(o + kt * out_block + k * out_lane)] = " if one_block else
               f"        out[INDEX(o + ((kt * {lanes} + k) >> 3) * out_block + (k & 7) * "
               "out_lane)] = ") + "activate(y, act, alpha, beta)",
        # a plain output (training's): each filter's columns in a row of its own plane
        ind + "if plain_rows and act <= 2:",
        ind + "    o = b * out_batch + i * out_row + jc + out_origin",
        ind + "    for k in range(store):",
        ind + f"        shift = bias[kt * {lanes} + k]",
        ind + f"        oc = o + (kt * {lanes} + k) * out_lane",
        ind + f"        for p in range(j0 - jc, min(je - jc, {positions})):",
        ind + f"            out[INDEX(oc + p)] = min(max(tile[INDEX({held('k', 'p')})]"
              " + shift, lo), hi)",
    ]
    return "\n".join(lines)


# The span kernel's tile (P columns, B blocks) where 512-bit multiply-adds run at full rate:
# 16 positions of one output row x 16 lanes of filters. The tile kernel's positions each take a
# general register for their address, so it holds 8 of them (8 accumulators for 16 filters);
# P consecutive columns of one row read pixels a constant distance apart (8 elements of a
# blocked input at column stride 1), one address and a displacement each, so 16 fit. (A tile of
# 12 served rows of 12, 24 or 34 columns; of the zoo's models only convnetjs-mnist has such
# rows, and a module for each input kind is a compile of its own on a fresh machine.)
SPAN_TILES = ((16, 2),)
# Columns computed per output column at most where a step takes the span kernel (a row's last
# P columns overlap the ones before): it ran 3x3 layers of 16 filters in 0.93-0.97 of the tile
# kernel's time and 1x1 layers in 0.77-0.88 (two threads, batch 128, best step times of two
# alternations; unet-mini, mobilenet-mini, inception-mini), so rows of 16, 30-32, 44-48 or
# 59-64 columns take it and rows of 20 (32 computed for 20), 24 or 28 do not.
SPAN_MAX_WASTE = 1.1


def conv_span_source(positions: int, block_count: int, column: int) -> str:
    """The direct convolution into a blocked output (from a blocked shortcut if any), P
    consecutive columns of one row at a time (each tap's pixels of the P columns at constant
    distances from one address) x B blocks of filters; `column`: elements from one output
    column's input pixels to the next (8 x the column stride for a blocked input, the stride
    for a plain one's padded copy). Same arguments and geometry as `conv_source`'s kernel and
    its filters packed the same way; a row's last P columns end at its end (recomputing some:
    needs rows of at least P columns), only this call's positions are stored, each
    position's shortcut read before its output is stored (print it to read it)."""
    lanes = LANES * block_count
    lines = [
        "def conv(x, w, bias, offsets, out, residual, geometry, alpha, beta):",
        "    # x: output position (i, j) of image b reads x at",
        f"    #    b*x_batch + (i*SH)*x_row + j*{column} + x_origin + offsets[t] for tap t;",
        "    # w (K tiles, taps, LANES*B); bias (K tiles * LANES*B,); positions i0 <= q < i1 are",
        "    # i*out_w + j; out[b*out_batch + (k//8)*out_block + k%8 + i*out_row + j*out_col +",
        "    # out_origin] = act(bias[k] + sum_t x[...] w[t, k] + residual[...]) for k < out_store",
    ]
    for name in ("b0", "b1", "i0", "i1", "k0", "k1", "x_batch", "x_row", "x_origin",
                 "stride_h", "out_batch", "out_block", "out_row", "out_col", "out_origin",
                 "out_w", "res_batch", "res_block", "res_row", "res_col", "res_origin",
                 "has_residual", "act", "out_store"):
        lines.append(f"    {name} = geometry[{G[name]}]")
    lines += [
        *_TAPS,
        *_ACTIVATION_BOUNDS,
        f"    tile = stack_empty({positions * lanes}, x.dtype)",
        *_row_spans(positions, f"rows = min({block_count}, (out_store - kt * {lanes}) // 8)",
                    ["orow = b * out_batch + i * out_row + out_origin",
                     "rrow = b * res_batch + i * res_row + res_origin"]),
    ]
    ind = " " * 20
    lines += _tile_taps(positions, lanes, ind, "i", "i", column)
    # The sums go through `tile`: stores straight from the accumulators, as the tile kernel's,
    # had LLVM build vectors of 8 lanes instead of 16 and spill half of them (read in the
    # assembly; resnet8's 16 -> 16 3x3 5.8 against 2.4 ms, two threads, batch 128); the round
    # trip is 16 vector stores and 32 loads against a 3x3 layer's 16 x 144 multiply-adds.
    lines += [ind + f"tile[{p * lanes + k}] = a{p}_{k}"
              for p in range(positions) for k in range(lanes)]
    # A whole tile of whole blocks with no activation, ReLU or a clip: the tests of the
    # activation and shortcut made once for its positions (the loop below, testing them at
    # every position and block: resnet8's 16 -> 16 3x3 3.45-3.54 against 3.28-3.34 ms, one
    # thread; straight-line code for all 16 positions ran as fast and took the module 75 s to
    # compile against 14).
    lines.append(ind + f"if j0 == jc and je - jc >= {positions} and rows == {block_count}"
                       " and act <= 2:")
    for residual in (True, False):
        lines += [ind + ("    if has_residual:" if residual else "    else:"),
                  ind + f"        for p in range({positions}):"]
        for q in range(block_count):
            lines += [ind + f"            o = INDEX(orow + (jc + p) * out_col"
                            f" + (kt * {block_count} + {q}) * out_block)",
                      ind + f"            ti = INDEX(p * {lanes} + {q * 8})",
                      ind + f"            c = INDEX(kt * {lanes} + {q * 8})"]
            if residual:
                lines.append(ind + f"            r = INDEX(rrow + (jc + p) * res_col"
                                   f" + (kt * {block_count} + {q}) * res_block)")
            for lane in range(LANES):
                y = f"tile[ti + INDEX({lane})] + bias[c + INDEX({lane})]"
                if residual:
                    y += f" + residual[r + INDEX({lane})]"
                lines.append(ind + f"            y{lane} = min(max({y}, lo), hi)")
            lines += [ind + f"            out[o + INDEX({lane})] = y{lane}"
                      for lane in range(LANES)]
    lines.append(ind + "    continue")
    lines += [ind + f"for p in range(j0 - jc, min(je - jc, {positions})):",
              ind + "    for q in range(rows):",
              ind + f"        o = INDEX(orow + (jc + p) * out_col + (kt * {block_count} + q)"
                    " * out_block)",
              ind + f"        ti = INDEX(p * {lanes} + q * 8)",
              ind + f"        c = INDEX(kt * {lanes} + q * 8)",
              ind + f"        r = INDEX(rrow + (jc + p) * res_col + (kt * {block_count} + q)"
                    " * res_block)"]
    lines += _epilogue_lines(ind + "        ")
    return "\n".join(lines)


_ACTIVATE_SOURCE = '''
@numba.njit(inline="always")
def activate(y, act, alpha, beta):
    """The fused activation (codes: convnet.core.blocked.ACTIVATIONS)."""
    if act == 0:
        return y
    if act == 1:
        return max(y, ZERO)
    if act == 2:
        return min(max(y, alpha), beta)
    if act == 3:
        return y * min(max(y + THREE, ZERO), SIX) / SIX
    if act == 4:
        return y if y > ZERO else y * alpha
    if act == 5:
        return min(max(alpha * y + beta, ZERO), ONE)
    if act == 6:
        return y / (ONE + numpy.exp(-y))
    return ONE / (ONE + numpy.exp(-y))
'''



def _epilogue_lines(ind: str) -> list[str]:
    """Code storing out[o:o+8] = act(tile[t:t+8] + bias[c:c+8] (+ residual[r:r+8])), for
    unsigned indices t, c, o (and r when has_residual). Written into the kernel's own text:
    a function taking the arrays would touch their reference counts at every call (atomic
    operations: 94% of a 1x1 layer's time, measured). No activation, ReLU and a clip get one
    straight block each with every load before any store, which LLVM's SLP vectorizer turns
    into vector code (a loop interleaving loads and stores stays scalar: the arrays might
    overlap); the other activations go lane by lane."""
    lines = []
    cases = [("act == 0", "{y}"), ("act == 1", "max({y}, ZERO)"),
             ("act == 2", "min(max({y}, alpha), beta)")]
    for residual in (True, False):
        lines.append(ind + ("if has_residual:" if residual else "else:"))
        for index, (test, form) in enumerate(cases):
            lines.append(ind + "    " + ("if" if index == 0 else "elif") + f" {test}:")
            for lane in range(LANES):
                y = f"tile[ti + INDEX({lane})] + bias[c + INDEX({lane})]"
                if residual:
                    y += f" + residual[r + INDEX({lane})]"
                lines.append(ind + "        " + f"y{lane} = " + form.format(y=y))
            lines += [ind + "        " + f"out[o + INDEX({lane})] = y{lane}"
                      for lane in range(LANES)]
        lines += [ind + "    else:",
                  ind + "        for lane in range(8):",
                  ind + "            ln = INDEX(lane)",
                  ind + "            y = tile[ti + ln] + bias[c + ln]"]
        if residual:
            lines.append(ind + "            y += residual[r + ln]")
        lines.append(ind + "            out[o + ln] = activate(y, act, alpha, beta)")
    return lines


ACTIVATE_SOURCE = _ACTIVATE_SOURCE


def depthwise_source(positions: int, kernel_h: int | None = None,
                     kernel_w: int | None = None) -> str:
    """Depthwise convolution over blocked input and output: each lane its own channel. Given
    the window size, its taps are unrolled (their offsets worked out once a call): with the
    taps in a loop of run-time length, LLVM vectorized that loop 4 taps at a time and sent
    3x3 windows to its scalar remainder (15 GFLOP/s, read in the assembly)."""
    g = G
    lines = ["def depthwise(x, w, bias, out, geometry, alpha, beta):",
             "    # x, out blocked (flat); w (channel blocks, KH, KW, 8); bias (blocks * 8,);",
             "    # output positions i0 <= q < i1 (row-major) of channel blocks k0 <= cb < k1"]
    for name in ("b0", "b1", "i0", "i1", "k0", "k1", "x_batch", "x_block", "x_row", "x_col",
                 "x_origin", "stride_h", "stride_w", "out_batch", "out_block", "out_row",
                 "out_col", "out_origin", "out_w", "act", "kernel_h", "kernel_w", "dilation_h",
                 "dilation_w"):
        lines.append(f"    {name} = geometry[{g[name]}]")
    lanes = LANES
    unrolled = kernel_h is not None
    taps = [(u, v) for u in range(kernel_h) for v in range(kernel_w)] if unrolled else []
    lines += [f"    at{u}_{v} = {u} * dilation_h * x_row + {v} * dilation_w * x_col"
              for u, v in taps]
    lines += [
        "    q1 = i1",
        "    x_step = stride_w * x_col  # from an output column to the next",
        f"    tile = stack_empty({positions * lanes}, x.dtype)",
        f"    opos = stack_empty({positions}, numpy.int64)",
        "    has_residual = False",
        "    residual = bias",
        "    for b in range(b0, b1):",
        "        for cb in range(k0, k1):",
        *_position_start(" " * 12),
        f"            for q0 in range(i0, q1, {positions}):",
    ]
    ind = " " * 16
    lines += [line.replace("x_origin", "x_origin + cb * x_block").replace(
        "out_origin", "out_origin + cb * out_block") for line in _positions(positions, ind, False)]
    for p in range(positions):
        lines.append(ind + " = ".join(f"a{p}_{k}" for k in range(lanes)) + " = ZERO")
    lines.append(ind + f"wa = INDEX(cb * kernel_h * kernel_w * {lanes})")
    if unrolled:
        for t, (u, v) in enumerate(taps):
            lines += [ind + f"w{k} = w[wa + INDEX({t * lanes + k})]" for k in range(lanes)]
            for p in range(positions):
                lines.append(ind + f"xa = INDEX(x{p}p + at{u}_{v})")
                lines += [ind + f"a{p}_{k} += x[xa + INDEX({k})] * w{k}" for k in range(lanes)]
    else:
        lines += [ind + "for u in range(kernel_h):",
                  ind + "    for v in range(kernel_w):",
                  ind + "        at = u * dilation_h * x_row + v * dilation_w * x_col"]
        body = ind + "        "
        lines += [body + f"w{k} = w[wa + INDEX({k})]" for k in range(lanes)]
        for p in range(positions):
            lines.append(body + f"xa = INDEX(x{p}p + at)")
            for k in range(lanes):
                lines.append(body + f"a{p}_{k} += x[xa + INDEX({k})] * w{k}")
        lines.append(body + f"wa += INDEX({lanes})")
    lines += [ind + f"tile[{p * lanes + k}] = a{p}_{k}"
              for p in range(positions) for k in range(lanes)]
    lines += [ind + f"opos[{p}] = o{p}p" for p in range(positions)]
    lines += [ind + f"for p in range({positions}):",
              ind + "    o = INDEX(opos[p])",
              ind + f"    ti = INDEX(p * {lanes})",
              ind + f"    c = INDEX(cb * {lanes})",
              ind + "    r = INDEX(0)"]
    lines += _epilogue_lines(ind + "    ")
    return "\n".join(lines)


# The window sizes whose depthwise module unrolls its taps, a tile of 4 positions: 3x3
# (MobileNet's, ShuffleNet's, Xception's). mobilenet-mini's 3x3 layers, one thread: 1.5-1.8x
# faster than the loop over taps; 4 positions 1.0-1.2x faster than 8, and compiled in 7 s
# against 22. A 5x5 module took 30 s to compile: other windows share the module that loops
# over the taps, 8 positions a tile (4 s).
DEPTHWISE_UNROLLED = ((3, 3),)


def depthwise_tile(kernel_size) -> tuple:
    """The depthwise module's key: (positions, KH, KW) with the taps unrolled, or
    (positions,)."""
    if tuple(kernel_size) in DEPTHWISE_UNROLLED:
        return (4, *kernel_size)
    return (8,)


_POOL_TEMPLATE = '''
def max_pool(x, out, geometry):
    """Max pooling over blocked input and output; windows clipped to the input (padding
    never wins). Separable: for each output row the maxima down the window's rows, of every
    column of the input row at once (one flat loop over W*8 lanes), then along the window's
    columns: at stride 1 one flat loop over the row's whole windows, each tap a constant
    offset (16 lanes a vector on AVX-512), else a window at a time in groups of 8 lanes.
    Computed window by window instead (every tap of every output), one thread, batch 128, a
    3x3 stride-1 pool on 16 channels of 16x16 took 0.48 ms, now 0.13 (onnxruntime 0.14); 2x2
    stride 2 on 16 of 32x32 0.36, now 0.27 (onnxruntime 0.21). Columns are LANES apart in x
    and out (both blocked)."""
    (b0, b1, k0, k1, x_batch, x_block, x_row, x_col, x_origin, h, w, out_batch, out_block,
     out_row, out_col, out_origin, out_h, out_w, kh, kw, sh, sw, top, left) = geometry[:24]
    width = w * LANES
    stack = stack_empty(SCRATCH, DTYPE)  # (W * 8): one output row's maxima down the window
    rows = stack[:width] if width <= SCRATCH else numpy.empty(width, DTYPE)
    ja, jb = whole_windows(w, out_w, kw, sw, left)
    for b in range(b0, b1):
        for cb in range(k0, k1):
            base = b * x_batch + cb * x_block + x_origin
            obase = b * out_batch + cb * out_block + out_origin
            for i in range(out_h):
                r0 = i * sh - top
                u0, u1 = max(0, -r0), min(kh, h - r0)
                r = base + (r0 + u0) * x_row
                if u1 - u0 == 1:
                    for t in range(width):
                        rows[t] = x[INDEX(r + t)]
                elif u1 - u0 == 2:
                    for t in range(width):
                        rows[t] = max(x[INDEX(r + t)], x[INDEX(r + x_row + t)])
                else:
                    for t in range(width):
                        rows[t] = max(max(x[INDEX(r + t)], x[INDEX(r + x_row + t)]),
                                      x[INDEX(r + 2 * x_row + t)])
                for u in range(3, u1 - u0):
                    ru = r + u * x_row
                    for t in range(width):
                        rows[t] = max(rows[t], x[INDEX(ru + t)])
                orow = obase + i * out_row
                o, s = orow + ja * LANES, (ja * sw - left) * LANES
                if sw == 1:  # whole windows: flat over their lanes
                    span = (jb - ja) * LANES
                    if kw == 1:
                        for t in range(span):
                            out[INDEX(o + t)] = rows[INDEX(s + t)]
                    elif kw == 2:
                        for t in range(span):
                            out[INDEX(o + t)] = max(rows[INDEX(s + t)],
                                                    rows[INDEX(s + LANES + t)])
                    else:
                        for t in range(span):
                            out[INDEX(o + t)] = max(max(rows[INDEX(s + t)],
                                                        rows[INDEX(s + LANES + t)]),
                                                    rows[INDEX(s + 2 * LANES + t)])
                    for v in range(3, kw):
                        sv = s + v * LANES
                        for t in range(span):
                            out[INDEX(o + t)] = max(out[INDEX(o + t)], rows[INDEX(sv + t)])
                else:  # whole windows, a window's 8 lanes at a time
                    step = sw * LANES
                    for j in range(jb - ja):
                        q, p = INDEX(s + j * step), INDEX(o + j * LANES)
                        m{l} = rows[q + INDEX({l})]
                        for v in range(1, kw):
                            q += INDEX(LANES)
                            m{l} = max(m{l}, rows[q + INDEX({l})])
                        out[p + INDEX({l})] = m{l}
                for e in range(ja + out_w - jb):  # windows clipped by the padding
                    j = e if e < ja else e - ja + jb
                    c0 = j * sw - left
                    v0, v1 = max(0, -c0), min(kw, w - c0)
                    q = INDEX((c0 + v0) * LANES)
                    m{l} = rows[q + INDEX({l})]
                    for v in range(1, v1 - v0):
                        q += INDEX(LANES)
                        m{l} = max(m{l}, rows[q + INDEX({l})])
                    p = INDEX(orow + j * LANES)
                    out[p + INDEX({l})] = m{l}


def avg_pool(x, out, geometry, include_pad):
    """Average pooling over blocked input and output: the sum of the window's pixels inside
    the input, over KH*KW (include_pad) or over their count; separable as max_pool is (sums
    down the window's rows, then along its columns)."""
    (b0, b1, k0, k1, x_batch, x_block, x_row, x_col, x_origin, h, w, out_batch, out_block,
     out_row, out_col, out_origin, out_h, out_w, kh, kw, sh, sw, top, left) = geometry[:24]
    width = w * LANES
    stack = stack_empty(SCRATCH, DTYPE)  # (W * 8): one output row's sums down the window
    rows = stack[:width] if width <= SCRATCH else numpy.empty(width, DTYPE)
    ja, jb = whole_windows(w, out_w, kw, sw, left)
    for b in range(b0, b1):
        for cb in range(k0, k1):
            base = b * x_batch + cb * x_block + x_origin
            obase = b * out_batch + cb * out_block + out_origin
            for i in range(out_h):
                r0 = i * sh - top
                u0, u1 = max(0, -r0), min(kh, h - r0)
                r = base + (r0 + u0) * x_row
                for t in range(width):
                    rows[t] = x[INDEX(r + t)]
                for u in range(1, u1 - u0):
                    ru = r + u * x_row
                    for t in range(width):
                        rows[t] += x[INDEX(ru + t)]
                orow = obase + i * out_row
                o, s = orow + ja * LANES, (ja * sw - left) * LANES
                if sw == 1:  # whole windows: flat over their lanes
                    span = (jb - ja) * LANES
                    for t in range(span):
                        out[INDEX(o + t)] = rows[INDEX(s + t)]
                    for v in range(1, kw):
                        sv = s + v * LANES
                        for t in range(span):
                            out[INDEX(o + t)] += rows[INDEX(sv + t)]
                    scale = ONE / (kh * kw if include_pad else (u1 - u0) * kw)
                    for t in range(span):
                        out[INDEX(o + t)] *= scale
                else:  # whole windows, a window's 8 lanes at a time
                    step = sw * LANES
                    scale = ONE / (kh * kw if include_pad else (u1 - u0) * kw)
                    for j in range(jb - ja):
                        q, p = INDEX(s + j * step), INDEX(o + j * LANES)
                        s{l} = rows[q + INDEX({l})]
                        for v in range(1, kw):
                            q += INDEX(LANES)
                            s{l} += rows[q + INDEX({l})]
                        out[p + INDEX({l})] = s{l} * scale
                for e in range(ja + out_w - jb):  # windows clipped by the padding
                    j = e if e < ja else e - ja + jb
                    c0 = j * sw - left
                    v0, v1 = max(0, -c0), min(kw, w - c0)
                    q = INDEX((c0 + v0) * LANES)
                    s{l} = rows[q + INDEX({l})]
                    for v in range(1, v1 - v0):
                        q += INDEX(LANES)
                        s{l} += rows[q + INDEX({l})]
                    scale = ONE / (kh * kw if include_pad else (u1 - u0) * (v1 - v0))
                    p = INDEX(orow + j * LANES)
                    out[p + INDEX({l})] = s{l} * scale

@numba.njit(inline="always")
def whole_windows(w, out_w, kw, sw, left):
    """The output columns [ja, jb) whose windows lie wholly inside the input row."""
    ja = min(out_w, (left + sw - 1) // sw)
    jb = max(ja, min(out_w, (w - kw + left) // sw + 1))
    return ja, jb


def global_avg_pool(x, out, geometry):
    """(N, Cb, H + 2m, W + 2m, 8) -> out (N, Cb * 8): the mean of each lane over the
    interior. Summed down the rows first, every column of a row at once (one flat loop over
    W*8 lanes), then along the row: pixel by pixel, each lane's sum was one chain of H*W
    dependent additions (mobilenet-mini's 16 x 32 x 32, 7 images: 14.7 us)."""
    b0, b1, k0, k1, x_batch, x_block, x_row, x_col, x_origin, h, w = geometry[:11]
    scale = ONE / (h * w)
    width = w * LANES
    stack = stack_empty(SCRATCH, DTYPE)  # (W * 8): each column's sums down the rows
    sums = stack[:width] if width <= SCRATCH else numpy.empty(width, DTYPE)
    flat = out.reshape(-1)
    for b in range(b0, b1):
        for cb in range(k0, k1):
            base = b * x_batch + cb * x_block + x_origin
            for t in range(width):
                sums[t] = x[INDEX(base + t)]
            for i in range(1, h):
                r = base + i * x_row
                for t in range(width):
                    sums[t] += x[INDEX(r + t)]
            s{l} = sums[{l}]
            for j in range(1, w):
                s{l} += sums[INDEX(j * LANES + {l})]
            o = b * out.shape[1] + cb * LANES
            flat[o + {l}] = s{l} * scale


def resize(x, out, rows, row_weights, cols, col_weights, geometry):
    """Resize over blocked input and output: output pixel (i, j) mixes input rows rows[2i]
    and rows[2i + 1], weighed row_weights[2i] and [2i + 1], and columns cols[2j], cols[2j + 1]
    likewise (linear); `nearest` copies input pixel (rows[2i], cols[2j]). Linear mixes the
    two rows first, every column of the input row at once (one flat loop over W*8 lanes),
    then each output pixel's two columns of that mix, 8 lanes at a time."""
    (b0, b1, k0, k1, x_batch, x_block, x_row, x_origin, w, out_batch, out_block, out_row,
     out_origin, out_h, out_w, nearest) = geometry[:16]
    width = w * LANES
    stack = stack_empty(SCRATCH, DTYPE)  # (W * 8): an output row's mix of its two input rows
    mixed = stack[:width] if width <= SCRATCH else numpy.empty(width, DTYPE)
    for b in range(b0, b1):
        for cb in range(k0, k1):
            base = b * x_batch + cb * x_block + x_origin
            obase = b * out_batch + cb * out_block + out_origin
            for i in range(out_h):
                o = obase + i * out_row
                r0 = base + rows[2 * i] * x_row
                if nearest:
                    for j in range(out_w):
                        q, p = INDEX(r0 + cols[2 * j] * LANES), INDEX(o + j * LANES)
                        out[p + INDEX({l})] = x[q + INDEX({l})]
                    continue
                r1 = base + rows[2 * i + 1] * x_row
                u0, u1 = row_weights[2 * i], row_weights[2 * i + 1]
                for t in range(width):
                    mixed[t] = u0 * x[INDEX(r0 + t)] + u1 * x[INDEX(r1 + t)]
                for j in range(out_w):
                    q0, q1 = INDEX(cols[2 * j] * LANES), INDEX(cols[2 * j + 1] * LANES)
                    v0, v1 = col_weights[2 * j], col_weights[2 * j + 1]
                    p = INDEX(o + j * LANES)
                    out[p + INDEX({l})] = v0 * mixed[q0 + INDEX({l})] + v1 * mixed[q1 + INDEX({l})]
'''


# A kernel's scratch row (W * 8 items) on the stack up to this many items (32 KiB of float32,
# a row 1,024 pixels wide), past it from malloc (`convnet.core.stack_arrays`).
SCRATCH = 8192


def _lanes(source: str) -> str:
    """`source` with each line holding {l} written once per lane, {l} the lane's number."""
    return "\n".join("\n".join(line.replace("{l}", str(lane)) for lane in range(LANES))
                     if "{l}" in line else line for line in source.split("\n"))


POOL_SOURCE = _lanes(_POOL_TEMPLATE)


# Add, Sub, Mul, Div of two blocked tensors, one of which may be a per-channel gate (row and
# column strides 0), and copies of blocks: what MergeStep and ConcatStep run.
MERGE_OPS = {"add": 0, "sub": 1, "mul": 2, "div": 3, "copy": 4}  # copy: out = a

MERGE_SOURCE = '''
@numba.njit(inline="always")
def combine(op, x, y):
    if op == 0:
        return x + y
    if op == 1:
        return x - y
    if op == 2:
        return x * y
    if op == 3:
        return x / y
    return x


@numba.njit(inline="always")
def gate_row(x, at, row):
    """row[k] = x[at + k % 8]: a gate's 8 lanes repeated along a row."""
    for k in range(row.size):
        row[k] = x[INDEX(at + (k & 7))]


def merge(a, b, out, geometry, op):
    """out = a (op) b over images b0 <= n < b1, channel blocks k0 <= cb < k1 and h x w
    positions, each of a, b and out read at n*batch + cb*block + i*row + j*col + origin + lane
    with its own strides (geometry: b0, b1, k0, k1, h, w, then batch, block, row, col, origin of
    a, of b and of out, then the last block and the lane of it from which out is set to 0).
    Rows whose positions lie 8 apart (no border between them) run as one flat loop; a gate
    (row and column strides 0: one value per channel) is first repeated along a row, once per
    block (read lane by lane as x[k % 8], the SE block's Mul ran at a third of onnxruntime's
    speed)."""
    b0, b1, k0, k1, h, w = geometry[:6]
    a_batch, a_block, a_row, a_col, a_origin = geometry[6:11]
    b_batch, b_block, b_row, b_col, b_origin = geometry[11:16]
    o_batch, o_block, o_row, o_col, o_origin = geometry[16:21]
    last_block, zero_from = geometry[21:23]
    a_gate, b_gate = a_col == 0 and a_row == 0, b_col == 0 and b_row == 0
    flat = o_col == 8 and (a_col == 8 or a_gate) and (b_col == 8 or b_gate)
    span = w * 8
    a_stack, b_stack = stack_empty(SCRATCH, DTYPE), stack_empty(SCRATCH, DTYPE)
    a_span = span if flat and a_gate else 0  # (W * 8) a gate's row
    b_span = span if flat and b_gate else 0
    a_lanes = a_stack[:a_span] if a_span <= SCRATCH else numpy.empty(a_span, DTYPE)
    b_lanes = b_stack[:b_span] if b_span <= SCRATCH else numpy.empty(b_span, DTYPE)
    for n in range(b0, b1):
        for cb in range(k0, k1):
            if flat and a_gate:
                gate_row(a, n * a_batch + cb * a_block + a_origin, a_lanes)
            if flat and b_gate:
                gate_row(b, n * b_batch + cb * b_block + b_origin, b_lanes)
            for i in range(h):
                pa = n * a_batch + cb * a_block + i * a_row + a_origin
                pb = n * b_batch + cb * b_block + i * b_row + b_origin
                po = n * o_batch + cb * o_block + i * o_row + o_origin
                if flat and a_gate and b_gate:
                    for k in range(span):
                        out[INDEX(po + k)] = combine(op, a_lanes[k], b_lanes[k])
                elif flat and a_gate:
                    for k in range(span):
                        out[INDEX(po + k)] = combine(op, a_lanes[k], b[INDEX(pb + k)])
                elif flat and b_gate:
                    for k in range(span):
                        out[INDEX(po + k)] = combine(op, a[INDEX(pa + k)], b_lanes[k])
                elif flat:
                    for k in range(span):
                        out[INDEX(po + k)] = combine(op, a[INDEX(pa + k)], b[INDEX(pb + k)])
                else:
                    for j in range(w):
                        at_a = INDEX(pa + j * a_col)
                        at_b = INDEX(pb + j * b_col)
                        at_o = INDEX(po + j * o_col)
                        for lane in range(8):
                            out[at_o + lane] = combine(op, a[at_a + lane], b[at_b + lane])
            if cb == last_block:  # lanes past the channels: 0, whatever op gave there
                for i in range(h):
                    po = n * o_batch + cb * o_block + i * o_row + o_origin
                    for j in range(w):
                        for lane in range(zero_from, 8):
                            out[INDEX(po + j * o_col + lane)] = ZERO
'''


PAD_SOURCE = '''
def pad_copy(x, out, geometry):
    """A plain (N, C, H, W) x (C-contiguous, flat) into the interior of a zero-padded plain
    buffer: images b0 <= n < b1, out[n*out_batch + c*out_channel + i*out_row + j +
    out_origin] = x[((n*C + c)*H + i)*W + j] (geometry: b0, b1, C, H, W, out_batch,
    out_channel, out_row, out_origin)."""
    b0, b1, channels, h, w, out_batch, out_channel, out_row, out_origin = geometry[:9]
    for n in range(b0, b1):
        for c in range(channels):
            for i in range(h):
                source = ((n * channels + c) * h + i) * w
                target = n * out_batch + c * out_channel + i * out_row + out_origin
                for j in range(w):
                    out[INDEX(target + j)] = x[INDEX(source + j)]
'''

# Winograd F(2x2, 3x3) (Lavin and Gray 2015) for 3x3 stride-1 convolutions of a padding of 1:
# the input's 4 x 4 windows and the filters transformed, 16 matrix products (1x1
# convolutions of the tile grid, on the tile kernel), the sums transformed back: a tile of
# 2 x 2 outputs takes 16 multiply-adds a channel and filter instead of 36. The kernels' text,
# each lane written out by `_lanes`: winograd_sources().
WINOGRAD_G = numpy.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
WINOGRAD_SKEW = 16  # floats (a cache line) between the 16 grids of transformed tiles: 16
# streams 4 KiB apart share a first-level cache set and evict each other (vggish's 32 -> 32 on
# 32x32, one image, one thread: the input side 34 us, the output's 24)
# v and m of a group of images or a band of one (16 grids each), in training's passes and one
# image's inference: within a core's second-level cache with room for the filters (a whole
# 32x32 image of 32 channels, v and m 1 MiB, left it: one thread, 64 images, training's output
# side took 8.86 ms, the input side 1.88)
WINOGRAD_BAND_BYTES = 256 << 10


def winograd_row_bytes(blocks: int, tile_w: int) -> int:
    """Bytes of v and m for one row of tile_w tiles: 16 grids of `blocks` blocks of 8 float32
    lanes (the input's and the output's blocks together)."""
    return 16 * blocks * tile_w * LANES * 4


def winograd_filters(weight) -> numpy.ndarray:
    """(K, C, 3, 3) -> (16, K, C, 1, 1) float32: each filter's channels transformed, G g G^T
    (4 x 4, in float64), as the 16 transformed positions' 1x1 convolutions."""
    k, c = weight.shape[:2]
    return numpy.einsum("au,kcuv,bv->abkc", WINOGRAD_G, weight.astype(numpy.float64),
                        WINOGRAD_G).reshape(16, k, c, 1, 1).astype(numpy.float32)


def winograd_sources() -> str:
    return _lanes(_WINOGRAD_INPUT) + "\n\n" + _lanes(_WINOGRAD_OUTPUT)


# Training's Winograd passes (`blocked_training._run_winograd`): a thread's images one by one
# through the three calls in compiled code, so that 18 calls an image cost no Python between
# them (called from Python, the two threads' loops took turns at the interpreter: 128 images of
# 32 -> 32 on 32x32 on two threads 12.96 ms, one thread's 64 alone 9.86).
WINOGRAD_IMAGES_SOURCE = f'''
def winograd_images(x, filters, zeros, offsets, bias, y, v, m, geometry):
    """Images b0 <= n < b1 of a blocked x (padded by 1), `group` images at a time, or one at a
    time in `bands` bands of tile rows: winograd_input into v, the 16 products (`conv`, one
    block of `per` packed filters each) into m and winograd_output_plain into a plain y.
    Geometry: b0, b1, group, bands, per, v's and m's strides between their 16 grids, x's and
    y's batch strides, x's and y's offsets from one band to the next, then winograd_input's 12
    values, conv's {len(GEOMETRY)} and winograd_output_plain's 22 for the first image's first
    band (of its rows) and position 0."""
    b0, b1, group, bands, per, v_stride, m_stride, x_batch, y_batch, band_x, band_y = (
        geometry[:11])
    inputs = geometry[11:23].copy()
    products = geometry[23:{23 + len(GEOMETRY)}].copy()
    outputs = geometry[{23 + len(GEOMETRY)}:{23 + len(GEOMETRY) + 22}].copy()
    for n in range(b0, b1, group):
        count = min(group, b1 - n)
        inputs[1] = count
        products[{G["b1"]}] = count
        outputs[1] = count
        for band in range(bands):
            inputs[7] = n * x_batch + band * band_x
            winograd_input(x, v, inputs)
            for p in range(16):
                products[{G["x_origin"]}] = p * v_stride
                products[{G["out_origin"]}] = p * m_stride
                conv(v, filters[p * per:(p + 1) * per], zeros, offsets, m, zeros, products,
                     ZERO, ZERO)
            outputs[12] = n * y_batch + band * band_y
            winograd_output_plain(m, bias, y, zeros, outputs, ZERO, ZERO)


def winograd_pack(weight, out, geometry):
    """The filters' transforms G g G^T (in float64), packed as `pack_filters` packs the 16
    transformed positions' 1x1 filters one after the other into out (zeros past the output
    channels): weight (K, C, 3, 3) flat. Geometry: K, C, lanes of a tile (8 x its blocks),
    tiles, flip: the transposed convolution's (C filters of K channels, each flipped) instead
    of the layer's. One pass over the filters, in registers: 0.48 ms for 128 x 128 filters
    (NumPy's einsum and pack_filters took 1.5; scratch arrays made per filter and channel
    1.18)."""
    k, c, lanes, tiles, flip = geometry[:5]
    outs, ins = k, c
    if flip:
        outs, ins = c, k
    size = tiles * ins * lanes
    for o in range(outs):  # (channels inner: 0.48 ms for 128 x 128, filters inner 0.83)
        for i in range(ins):
            at = (i * c + o) * 9 if flip else (o * c + i) * 9
            base = (o // lanes) * ins * lanes + i * lanes + o % lanes
            g = weight[at:at + 9]  # g[3 u + w], or flipped g[8 - 3 u - w]
            if flip:
                g = g[::-1]
            g00, g01, g02 = numpy.float64(g[0]), numpy.float64(g[1]), numpy.float64(g[2])
            g10, g11, g12 = numpy.float64(g[3]), numpy.float64(g[4]), numpy.float64(g[5])
            g20, g21, g22 = numpy.float64(g[6]), numpy.float64(g[7]), numpy.float64(g[8])
            # G g: its 4 rows, 3 columns each
            rows = ((g00, g01, g02),
                    ((g00 + g10 + g20) * 0.5, (g01 + g11 + g21) * 0.5, (g02 + g12 + g22) * 0.5),
                    ((g00 - g10 + g20) * 0.5, (g01 - g11 + g21) * 0.5, (g02 - g12 + g22) * 0.5),
                    (g20, g21, g22))
            for a in range(4):  # (G g) G^T, row by row
                t0, t1, t2 = rows[a]
                at_out = a * 4 * size + base
                out[at_out] = DTYPE(t0)
                out[at_out + size] = DTYPE((t0 + t1 + t2) * 0.5)
                out[at_out + 2 * size] = DTYPE((t0 - t1 + t2) * 0.5)
                out[at_out + 3 * size] = DTYPE(t2)
'''


# Inference's one image (`inference.ConvStep._bind_winograd_one`): each chunk a band of tile
# rows through the three calls, so that the band's transformed tiles stay on the thread that
# made them. As three steps split between the threads (the input side by channel blocks, the
# products by position, the output side by filter blocks) half of v and m crossed between the
# cores twice a layer. Two threads, one image, the ways alternated in one process, medians of
# rounds of 200 images grouped by the cross-core round trip (`bench.crosscore`; Zen 5,
# 2026-12-05 07:40 UTC), us, bands / three steps / the direct kernel: where a cache line
# crosses in 0.05 us vggish 104.8 / 104.8 / 123.4, resnet8 65.1 / 65.9 / 65.0, fcn-mini
# 105.9 / 106.3 / 105.9, unet-mini 213.1 / 213.1 / 216.1; where it crosses in 0.4 (the host's
# far placement) 147.2 / 185.1 / 137.2, 91.2 / 109.0 / 86.3, 155.4 / 164.4 / 133.6, 318.4 /
# 358.5 / 305.6.
WINOGRAD_BAND_SOURCE = f'''
def winograd_band(x, filters, zeros, offsets, bias, y, residual, v, m, geometry, alpha, beta):
    """One band of an image's tile rows: winograd_input into v, the 16 products (`conv`, one
    block of `per` packed filters each) into m, winograd_output (bias, shortcut, activation,
    pool) into a blocked y. Geometry: per, v's and m's strides between their 16 grids, then
    winograd_input's 12 values, conv's {len(GEOMETRY)} and winograd_output's 21, each for this
    band."""
    per, v_stride, m_stride = geometry[:3]
    products = geometry[15:{15 + len(GEOMETRY)}].copy()
    winograd_input(x, v, geometry[3:15])
    for p in range(16):
        products[{G["x_origin"]}] = p * v_stride
        products[{G["out_origin"]}] = p * m_stride
        conv(v, filters[p * per:(p + 1) * per], zeros, offsets, m, zeros, products, ZERO, ZERO)
    winograd_output(m, bias, y, residual, geometry[{15 + len(GEOMETRY)}:], alpha, beta)
'''


_WINOGRAD_GRADIENT = '''
def winograd_gradient(dy, m, geometry):
    """Winograd F(2x2, 3x3)'s output side backwards (the weight gradient's): each 2 x 2 tile of
    a blocked output gradient dy -> its 16 values A dY A^T (A^T the output side's [[1, 1, 1,
    0], [0, 1, -1, -1]]), lane by lane, into m: 16 grids (N, Kb, TH, TW, 8), p_stride apart:
    images b0 <= n < b1, blocks k0 <= kb < k1 (geometry: b0, b1, k0, k1, dy's batch, block and
    row strides, its origin, Kb, TH, TW, m's stride between the 16)."""
    b0, b1, k0, k1, dy_batch, dy_block, dy_row, dy_origin, kbs, th, tw, p_stride = (
        geometry[:12])
    for n in range(b0, b1):
        for kb in range(k0, k1):
            for ti in range(th):
                row = dy_origin + n * dy_batch + kb * dy_block + 2 * ti * dy_row
                out = ((n * kbs + kb) * th + ti) * tw * LANES
                for tj in range(tw):
                    at = row + 2 * tj * LANES
                    to = out + tj * LANES
                    y00_{l} = dy[INDEX(at + {l})]
                    y01_{l} = dy[INDEX(at + 8 + {l})]
                    y10_{l} = dy[INDEX(at + dy_row + {l})]
                    y11_{l} = dy[INDEX(at + dy_row + 8 + {l})]
                    r10_{l} = y00_{l} + y10_{l}
                    r11_{l} = y01_{l} + y11_{l}
                    r20_{l} = y00_{l} - y10_{l}
                    r21_{l} = y01_{l} - y11_{l}
                    m[INDEX(to + 0 * p_stride + {l})] = y00_{l}
                    m[INDEX(to + 1 * p_stride + {l})] = y00_{l} + y01_{l}
                    m[INDEX(to + 2 * p_stride + {l})] = y00_{l} - y01_{l}
                    m[INDEX(to + 3 * p_stride + {l})] = -y01_{l}
                    m[INDEX(to + 4 * p_stride + {l})] = r10_{l}
                    m[INDEX(to + 5 * p_stride + {l})] = r10_{l} + r11_{l}
                    m[INDEX(to + 6 * p_stride + {l})] = r10_{l} - r11_{l}
                    m[INDEX(to + 7 * p_stride + {l})] = -r11_{l}
                    m[INDEX(to + 8 * p_stride + {l})] = r20_{l}
                    m[INDEX(to + 9 * p_stride + {l})] = r20_{l} + r21_{l}
                    m[INDEX(to + 10 * p_stride + {l})] = r20_{l} - r21_{l}
                    m[INDEX(to + 11 * p_stride + {l})] = -r21_{l}
                    m[INDEX(to + 12 * p_stride + {l})] = -y10_{l}
                    m[INDEX(to + 13 * p_stride + {l})] = -y10_{l} - y11_{l}
                    m[INDEX(to + 14 * p_stride + {l})] = y11_{l} - y10_{l}
                    m[INDEX(to + 15 * p_stride + {l})] = y11_{l}
'''


# The weight gradient's Winograd passes (`blocked_training._winograd_weight_grad`): a thread's
# images through the input's transform, the output gradient's and, per transformed position, a
# 1x1 weight gradient (`weight_grad`) of the two summed into that position's dU, all compiled.
WINOGRAD_WEIGHT_IMAGES_SOURCE = '''
def winograd_weight_images(x, dy, offsets, v, m, dw, geometry):
    """dw (16 of `weight_grad`'s dw of `per` values) += each transformed position's products
    of images b0 <= n < b1 of a blocked x (padded by 1) and of a blocked output gradient dy,
    `group` images at a time or one in `bands` bands of tile rows: winograd_input into v,
    winograd_gradient into m, then `weight_grad` of v's and m's grids. Geometry: b0, b1, group,
    bands, per, v's and m's strides between their 16 grids, x's and dy's batch strides, x's
    and dy's offsets from one band to the next, dy's origin, then winograd_input's 12 values,
    winograd_gradient's 12 and weight_grad's 16 for the first image's first band and position
    0."""
    (b0, b1, group, bands, per, v_stride, m_stride, x_batch, dy_batch, band_x, band_dy,
     dy_origin) = geometry[:12]
    inputs = geometry[12:24].copy()
    gradients = geometry[24:36].copy()
    products = geometry[36:52].copy()
    for n in range(b0, b1, group):
        count = min(group, b1 - n)
        inputs[1] = count
        gradients[1] = count
        products[1] = count
        for band in range(bands):
            inputs[7] = n * x_batch + band * band_x
            winograd_input(x, v, inputs)
            gradients[7] = dy_origin + n * dy_batch + band * band_dy
            winograd_gradient(dy, m, gradients)
            for p in range(16):
                products[6] = p * v_stride
                products[11] = p * m_stride
                weight_grad(v, m, offsets, dw[p * per:(p + 1) * per], products)
'''


def _plain_output(source: str) -> str:
    """`winograd_output_plain`: winograd_output storing into a plain y, its lanes out_lane
    apart (geometry[21]: the plane of a plain (N, K, H, W) output) where winograd_output's
    are 1 apart: training's outputs and input gradients (`blocked_training`). A function of
    its own: a lane stride known only at run time would keep the blocked stores from being
    vectors."""
    plain = (source.replace("def winograd_output(", "def winograd_output_plain(")
             .replace("res_origin) = geometry[:21]", "res_origin, out_lane) = geometry[:22]")
             .replace(" + {l})] = ", " + {l} * out_lane)] = "))
    if plain.count("{l} * out_lane)] = ") != 5:  # the template changed under the rewrite
        raise RuntimeError("winograd_output's stores were not all rewritten for a plain y")
    return plain


_WINOGRAD_INPUT = '''
def winograd_input(x, v, geometry):
    """Winograd F(2x2, 3x3), the input side: each 4 x 4 window of a blocked x (stride 2,
    from pixel (-1, -1): a padding of 1) -> its 16 values B^T d B, lane by lane, into v: 16
    grids (N, Cb, TH, TW, 8), p_stride apart: images b0 <= n < b1, blocks k0 <= cb < k1
    (geometry: b0, b1, k0, k1, x_batch, x_block, x_row, x_origin, Cb, TH, TW, v's stride
    between the 16). Loads before stores, lanes written out: LLVM makes vectors of them."""
    b0, b1, k0, k1, x_batch, x_block, x_row, x_origin, cbs, th, tw, p_stride = (
        geometry[:12])
    for n in range(b0, b1):
        for cb in range(k0, k1):
            for ti in range(th):
                row = x_origin + n * x_batch + cb * x_block + 2 * ti * x_row
                out = ((n * cbs + cb) * th + ti) * tw * LANES
                for tj in range(tw):
                    at = row + 2 * tj * LANES
                    to = out + tj * LANES
                    d00_{l} = x[INDEX(at + 0 * x_row + 0 + {l})]
                    d01_{l} = x[INDEX(at + 0 * x_row + 8 + {l})]
                    d02_{l} = x[INDEX(at + 0 * x_row + 16 + {l})]
                    d03_{l} = x[INDEX(at + 0 * x_row + 24 + {l})]
                    d10_{l} = x[INDEX(at + 1 * x_row + 0 + {l})]
                    d11_{l} = x[INDEX(at + 1 * x_row + 8 + {l})]
                    d12_{l} = x[INDEX(at + 1 * x_row + 16 + {l})]
                    d13_{l} = x[INDEX(at + 1 * x_row + 24 + {l})]
                    d20_{l} = x[INDEX(at + 2 * x_row + 0 + {l})]
                    d21_{l} = x[INDEX(at + 2 * x_row + 8 + {l})]
                    d22_{l} = x[INDEX(at + 2 * x_row + 16 + {l})]
                    d23_{l} = x[INDEX(at + 2 * x_row + 24 + {l})]
                    d30_{l} = x[INDEX(at + 3 * x_row + 0 + {l})]
                    d31_{l} = x[INDEX(at + 3 * x_row + 8 + {l})]
                    d32_{l} = x[INDEX(at + 3 * x_row + 16 + {l})]
                    d33_{l} = x[INDEX(at + 3 * x_row + 24 + {l})]
                    t00_{l} = d00_{l} - d20_{l}
                    t10_{l} = d10_{l} + d20_{l}
                    t20_{l} = d20_{l} - d10_{l}
                    t30_{l} = d10_{l} - d30_{l}
                    t01_{l} = d01_{l} - d21_{l}
                    t11_{l} = d11_{l} + d21_{l}
                    t21_{l} = d21_{l} - d11_{l}
                    t31_{l} = d11_{l} - d31_{l}
                    t02_{l} = d02_{l} - d22_{l}
                    t12_{l} = d12_{l} + d22_{l}
                    t22_{l} = d22_{l} - d12_{l}
                    t32_{l} = d12_{l} - d32_{l}
                    t03_{l} = d03_{l} - d23_{l}
                    t13_{l} = d13_{l} + d23_{l}
                    t23_{l} = d23_{l} - d13_{l}
                    t33_{l} = d13_{l} - d33_{l}
                    v[INDEX(to + 0 * p_stride + {l})] = t00_{l} - t02_{l}
                    v[INDEX(to + 1 * p_stride + {l})] = t01_{l} + t02_{l}
                    v[INDEX(to + 2 * p_stride + {l})] = t02_{l} - t01_{l}
                    v[INDEX(to + 3 * p_stride + {l})] = t01_{l} - t03_{l}
                    v[INDEX(to + 4 * p_stride + {l})] = t10_{l} - t12_{l}
                    v[INDEX(to + 5 * p_stride + {l})] = t11_{l} + t12_{l}
                    v[INDEX(to + 6 * p_stride + {l})] = t12_{l} - t11_{l}
                    v[INDEX(to + 7 * p_stride + {l})] = t11_{l} - t13_{l}
                    v[INDEX(to + 8 * p_stride + {l})] = t20_{l} - t22_{l}
                    v[INDEX(to + 9 * p_stride + {l})] = t21_{l} + t22_{l}
                    v[INDEX(to + 10 * p_stride + {l})] = t22_{l} - t21_{l}
                    v[INDEX(to + 11 * p_stride + {l})] = t21_{l} - t23_{l}
                    v[INDEX(to + 12 * p_stride + {l})] = t30_{l} - t32_{l}
                    v[INDEX(to + 13 * p_stride + {l})] = t31_{l} + t32_{l}
                    v[INDEX(to + 14 * p_stride + {l})] = t32_{l} - t31_{l}
                    v[INDEX(to + 15 * p_stride + {l})] = t31_{l} - t33_{l}
'''

_WINOGRAD_OUTPUT = '''
def winograd_output(m, bias, y, residual, geometry, alpha, beta):
    """Winograd F(2x2, 3x3), the output side: each tile's 16 sums in m (16 grids (N, Kb, TH,
    TW, 8)) -> its 2 x 2 outputs A^T m A, + bias (+ the shortcut), activated, stored in y;
    or, with pool, their maximum (a 2x2 stride-2 max pool taken in): images b0 <= n < b1,
    blocks k0 <= kb < k1 (geometry: b0, b1, k0, k1, Kb, TH, TW, m's stride between the 16,
    y's batch, block, row, column strides and origin, act, pool, has_residual, the
    shortcut's batch, block, row, column strides and origin)."""
    (b0, b1, k0, k1, kbs, th, tw, p_stride, out_batch, out_block, out_row, out_col,
     out_origin, act, pool, has_residual, res_batch, res_block, res_row, res_col,
     res_origin) = geometry[:21]
    for n in range(b0, b1):
        for kb in range(k0, k1):
            c = kb * LANES
            for ti in range(th):
                for tj in range(tw):
                    at = (((n * kbs + kb) * th + ti) * tw + tj) * LANES
                    m00_{l} = m[INDEX(at + 0 * p_stride + {l})]
                    m01_{l} = m[INDEX(at + 1 * p_stride + {l})]
                    m02_{l} = m[INDEX(at + 2 * p_stride + {l})]
                    m03_{l} = m[INDEX(at + 3 * p_stride + {l})]
                    m10_{l} = m[INDEX(at + 4 * p_stride + {l})]
                    m11_{l} = m[INDEX(at + 5 * p_stride + {l})]
                    m12_{l} = m[INDEX(at + 6 * p_stride + {l})]
                    m13_{l} = m[INDEX(at + 7 * p_stride + {l})]
                    m20_{l} = m[INDEX(at + 8 * p_stride + {l})]
                    m21_{l} = m[INDEX(at + 9 * p_stride + {l})]
                    m22_{l} = m[INDEX(at + 10 * p_stride + {l})]
                    m23_{l} = m[INDEX(at + 11 * p_stride + {l})]
                    m30_{l} = m[INDEX(at + 12 * p_stride + {l})]
                    m31_{l} = m[INDEX(at + 13 * p_stride + {l})]
                    m32_{l} = m[INDEX(at + 14 * p_stride + {l})]
                    m33_{l} = m[INDEX(at + 15 * p_stride + {l})]
                    s00_{l} = m00_{l} + m10_{l} + m20_{l}
                    s10_{l} = m10_{l} - m20_{l} - m30_{l}
                    s01_{l} = m01_{l} + m11_{l} + m21_{l}
                    s11_{l} = m11_{l} - m21_{l} - m31_{l}
                    s02_{l} = m02_{l} + m12_{l} + m22_{l}
                    s12_{l} = m12_{l} - m22_{l} - m32_{l}
                    s03_{l} = m03_{l} + m13_{l} + m23_{l}
                    s13_{l} = m13_{l} - m23_{l} - m33_{l}
                    b_{l} = bias[INDEX(c + {l})]
                    y00_{l} = s00_{l} + s01_{l} + s02_{l} + b_{l}
                    y01_{l} = s01_{l} - s02_{l} - s03_{l} + b_{l}
                    y10_{l} = s10_{l} + s11_{l} + s12_{l} + b_{l}
                    y11_{l} = s11_{l} - s12_{l} - s13_{l} + b_{l}
                    if has_residual:
                        r = (res_origin + n * res_batch + kb * res_block + 2 * ti * res_row
                             + 2 * tj * res_col)
                        y00_{l} += residual[INDEX(r + 0 * res_row + 0 * res_col + {l})]
                        y01_{l} += residual[INDEX(r + 0 * res_row + 1 * res_col + {l})]
                        y10_{l} += residual[INDEX(r + 1 * res_row + 0 * res_col + {l})]
                        y11_{l} += residual[INDEX(r + 1 * res_row + 1 * res_col + {l})]
                    if act == 1:  # (ReLU and a clip in straight lines: vectors)
                        y00_{l} = max(y00_{l}, ZERO)
                        y01_{l} = max(y01_{l}, ZERO)
                        y10_{l} = max(y10_{l}, ZERO)
                        y11_{l} = max(y11_{l}, ZERO)
                    elif act == 2:
                        y00_{l} = min(max(y00_{l}, alpha), beta)
                        y01_{l} = min(max(y01_{l}, alpha), beta)
                        y10_{l} = min(max(y10_{l}, alpha), beta)
                        y11_{l} = min(max(y11_{l}, alpha), beta)
                    elif act != 0:
                        y00_{l} = activate(y00_{l}, act, alpha, beta)
                        y01_{l} = activate(y01_{l}, act, alpha, beta)
                        y10_{l} = activate(y10_{l}, act, alpha, beta)
                        y11_{l} = activate(y11_{l}, act, alpha, beta)
                    if pool:
                        o = (out_origin + n * out_batch + kb * out_block + ti * out_row
                             + tj * out_col)
                        y[INDEX(o + {l})] = max(max(y00_{l}, y01_{l}), max(y10_{l}, y11_{l}))
                    else:
                        o = (out_origin + n * out_batch + kb * out_block + 2 * ti * out_row
                             + 2 * tj * out_col)
                        y[INDEX(o + 0 * out_row + 0 * out_col + {l})] = y00_{l}
                        y[INDEX(o + 0 * out_row + 1 * out_col + {l})] = y01_{l}
                        y[INDEX(o + 1 * out_row + 0 * out_col + {l})] = y10_{l}
                        y[INDEX(o + 1 * out_row + 1 * out_col + {l})] = y11_{l}
'''


FINITE_SOURCE = '''
def finite(x):
    """Whether every value of x (N, C, H, W), a plan's input, is finite: x * 0 is 0 for those
    and NaN for the others, and a sum of them in any order (vectorised) tells which. A call
    from Python on a 28 x 28 image: 0.26 us, NumPy's isfinite(x).all() 1.36."""
    flat = x.reshape(x.size)
    total = ZERO
    for i in range(flat.size):
        total += flat[INDEX(i)] * ZERO
    return total == ZERO
'''

UNBLOCK_SOURCE = _lanes('''
def unblock(out, x, geometry):
    """Blocked x (N, Cb, H + 2m, W + 2m, 8) -> plain out (N, C, H, W) (C-contiguous, flat),
    images b0 <= n < b1, blocks k0 <= cb < k1: each lane's pixels to a row of its channel's
    plane (geometry: b0, b1, k0, k1, C, H, W, x_batch, x_block, x_row, x_origin). On one
    thread no faster than NumPy's strided copy (32 images of 11 x 64 x 64: 1.5 against 1.2
    ms); it is split over the team's threads and writes into the caller's array."""
    b0, b1, k0, k1, channels, h, w, x_batch, x_block, x_row, x_origin = geometry[:11]
    plane = h * w
    for n in range(b0, b1):
        for cb in range(k0, k1):
            lanes = min(LANES, channels - cb * LANES)
            base = n * x_batch + cb * x_block + x_origin
            first = (n * channels + cb * LANES) * plane
            for i in range(h):
                r, o = base + i * x_row, first + i * w
                if lanes == LANES:
                    for j in range(w):
                        out[INDEX(o + {l} * plane + j)] = x[INDEX(r + j * LANES + {l})]
                else:
                    for lane in range(lanes):
                        for j in range(w):
                            out[INDEX(o + lane * plane + j)] = x[INDEX(r + j * LANES + lane)]
''')


REARRANGE_SOURCE = '''
def rearrange(x, out, source, geometry):
    """Moves values between channels and r x r blocks of pixels, blocked in and out (what
    PixelShuffle, PixelUnshuffle, DepthToSpace and SpaceToDepth do), by a table of the
    layer's own: to space, output channel k of pixel (i, j) is input channel
    source[(k*r + i % r)*r + j % r] of pixel (i // r, j // r); to depth, it is input channel
    c of pixel (i*r + u, j*r + v) where source[k] = (c*r + u)*r + v. Images b0 <= b < b1,
    output blocks k0 <= kb < k1 (geometry: b0, b1, k0, k1, output channels, r, to_space,
    x_batch, x_block, x_row, x_origin, out_batch, out_block, out_row, out_origin, out_h,
    out_w)."""
    (b0, b1, k0, k1, channels, r, to_space, x_batch, x_block, x_row, x_origin, out_batch,
     out_block, out_row, out_origin, out_h, out_w) = geometry[:17]
    for b in range(b0, b1):
        for kb in range(k0, k1):
            lanes = min(LANES, channels - kb * LANES)
            for i in range(out_h):
                for j in range(out_w):
                    o = b * out_batch + kb * out_block + i * out_row + j * LANES + out_origin
                    for lane in range(lanes):
                        k = kb * LANES + lane
                        if to_space:
                            c = source[(k * r + i % r) * r + j % r]
                            ii, jj = i // r, j // r
                        else:
                            t = source[k]
                            c, u, v = t // (r * r), (t // r) % r, t % r
                            ii, jj = i * r + u, j * r + v
                        q = (b * x_batch + (c >> 3) * x_block + ii * x_row + jj * LANES
                             + (c & 7) + x_origin)
                        out[INDEX(o + lane)] = x[INDEX(q)]
                    for lane in range(lanes, LANES):  # past the channels: zero, as written
                        out[INDEX(o + lane)] = 0
'''

DENSE_TILE = 64  # outputs summed in registers at once for one image (four 16-lane vectors)
# ... and for DENSE_IMAGES images at once, DENSE_IMAGE_TILE outputs each: every weight load
# serves that many images. One image at a time, each streamed the whole weight matrix: lenet5's
# Linear(400, 120) at 32 images took 93 us against BLAS's 43 (one thread).
DENSE_IMAGES, DENSE_IMAGE_TILE = 4, 16
# ... and for a layer of more than DENSE_IMAGE_TILE outputs, DENSE_WIDE_IMAGES images x
# DENSE_WIDE_TILE outputs (16 vector accumulators, as the convolution's widest tiles): with 4 x
# 16 the multiply-adds waited on each other's results.
DENSE_WIDE_IMAGES, DENSE_WIDE_TILE = 8, 32
# Without AVX-512 8 x 32 is 32 accumulators of 8 lanes, twice AVX2's registers: there 6 images x
# 16 outputs (12 accumulators, 2 weight vectors and a broadcast, as the 6 x 2 convolution tile).
# Zen 3, one thread, batch 128, best of 5 rounds alternated in one process (2026-12-03 19:39
# UTC), 8 x 32 / 6 x 16 / 4 x 16, ms: lenet5's Linear(400, 120) 0.459 / 0.207 / 0.207,
# Linear(120, 84) 0.114 / 0.054 / 0.059; mobilenet-mini's 1x1 160 -> 40 0.241 / 0.204 / 0.244,
# 96 -> 24 0.178 / 0.153 / 0.158, 40 -> 160 0.211 / 0.201 / 0.190.
AVX2_DENSE_WIDE = (6, 16)


def dense_wide_tile() -> tuple[int, int]:
    """(images, outputs) of the dense product's tile for a layer of more than DENSE_IMAGE_TILE
    outputs on this CPU."""
    return (DENSE_WIDE_IMAGES, DENSE_WIDE_TILE) if kernels.wide_registers() else AVX2_DENSE_WIDE


def _dense_tile(images: int, tile: int, ind: str) -> list[str]:
    """The loop over one tile: `images` images (from n) x `tile` outputs (from t0) summed in
    registers over the inputs, then bias and activation through the scratch `tile`."""
    sums = [f"a{p}_{k}" for p in range(images) for k in range(tile)]
    lines = [ind + f"{name} = ZERO" for name in sums]
    lines += [ind + f"x{p} = INDEX((n + {p}) * x_row)" for p in range(images)]
    lines += [ind + "wa = INDEX(t0)", ind + "for i in range(inputs):"]
    lines += [ind + f"    v{p} = x[x{p} + INDEX(i)]" for p in range(images)]
    lines += [ind + f"    a{p}_{k} += v{p} * w[wa + INDEX({k})]"
              for p in range(images) for k in range(tile)]
    lines.append(ind + "    wa += INDEX(w_row)")
    lines += [ind + f"tile[{p * tile + k}] = a{p}_{k}" for p in range(images)
              for k in range(tile)]
    lines += [ind + f"for p in range({images}):",
              ind + f"    for k in range(min({tile}, o1 - t0)):",
              ind + "        o = t0 + k",
              ind + "        out[INDEX((n + p) * out_row + o)] = activate(",
              ind + f"            tile[p * {tile} + k] + bias[INDEX(o)], act, alpha, beta)"]
    return lines


def dense_source() -> str:
    """The small dense product (print it to read it), with this CPU's tile for layers of more
    than DENSE_IMAGE_TILE outputs (`dense_wide_tile`)."""
    wide_images, wide_tile = dense_wide_tile()
    scratch = max(DENSE_TILE, DENSE_IMAGES * DENSE_IMAGE_TILE, wide_images * wide_tile)
    lines = [
        "def dense(x, w, bias, out, geometry, alpha, beta):",
        '    """out[n*out_row + o] = act(bias[o] + sum_i x[n*x_row + i] * w[i*w_row + o]) for',
        "    images n0 <= n < n1 and outputs o0 <= o < o1; w is (inputs, w_row), its columns",
        f"    from o0 to the end of o0's last whole tile readable ({DENSE_IMAGE_TILE} columns "
        f"where o1 - o0 <= {DENSE_IMAGE_TILE},",
        f"    else {DENSE_TILE}; zero past the outputs: whole tiles are summed).",
        "    A small product (one image, a squeeze-and-excitation block) costs less here than",
        "    BLAS's call and NumPy's passes. Each tile of outputs is summed in registers over",
        "    the inputs (summed in memory, an output cost a load and a store a multiply-add),",
        f"    for {wide_images} images x {wide_tile} outputs (a layer of more than "
        f"{DENSE_IMAGE_TILE})",
        f"    and {DENSE_IMAGES} images x {DENSE_IMAGE_TILE} at once while that many are left, "
        "then one by one."
        '"""',
        "    n0, n1, o0, o1, inputs, w_row, x_row, out_row, act = geometry[:9]",
        f"    tile = stack_empty({scratch}, x.dtype)",
        "    n = n0",
        f"    if o1 - o0 > {DENSE_IMAGE_TILE}:",
        f"        while n + {wide_images} <= n1:",
        f"            for t0 in range(o0, o1, {wide_tile}):",
    ]
    lines += _dense_tile(wide_images, wide_tile, " " * 16)
    lines += [
        f"            n += {wide_images}",
        f"    while n + {DENSE_IMAGES} <= n1:",
        f"        for t0 in range(o0, o1, {DENSE_IMAGE_TILE}):",
    ]
    lines += _dense_tile(DENSE_IMAGES, DENSE_IMAGE_TILE, " " * 12)
    lines += [f"        n += {DENSE_IMAGES}",
              "    while n < n1:",
              f"        if o1 - o0 <= {DENSE_IMAGE_TILE}:  # a narrow layer: no empty lanes",
              f"            for t0 in range(o0, o1, {DENSE_IMAGE_TILE}):"]
    lines += _dense_tile(1, DENSE_IMAGE_TILE, " " * 16)
    lines += ["        else:",
              f"            for t0 in range(o0, o1, {DENSE_TILE}):"]
    lines += _dense_tile(1, DENSE_TILE, " " * 16)
    lines.append("        n += 1")
    return "\n".join(lines)


BLOCK_COPY_SOURCE = '''
def block_copy(x, out, geometry):
    """A plain (N, C, H, W) x (C-contiguous, flat) into a zero-padded blocked buffer out
    (flat, (N, ceil(C/8), Hp, Wp, 8)): images b0 <= b < b1, zeros in the border and in the
    lanes past C. Geometry: b0, b1, C, H, W, top, left, Hp, Wp."""
    b0, b1, channels, h, w, top, left, hp, wp = geometry[:9]
    blocks = (channels + 7) // 8
    plane = h * w
    row_span = wp * 8
    for b in range(b0, b1):
        for cb in range(blocks):
            base = (b * blocks + cb) * hp * row_span
            lanes = min(8, channels - cb * 8)
            source = (b * channels + cb * 8) * plane
            for r in range(hp):
                at = base + r * row_span
                i = r - top
                if i < 0 or i >= h:
                    for k in range(row_span):
                        out[INDEX(at + k)] = ZERO
                    continue
                for k in range(left * 8):
                    out[INDEX(at + k)] = ZERO
                for k in range((left + w) * 8, row_span):
                    out[INDEX(at + k)] = ZERO
                at += left * 8
                row = source + i * w
                if lanes == 8:  # eight rows read side by side, written a pixel's lanes at once
                    for j in range(w):
                        for lane in range(8):
                            out[INDEX(at + j * 8 + lane)] = x[INDEX(row + lane * plane + j)]
                else:  # every lane loads (past the channels: the last one again), then selects
                    for j in range(w):
                        for lane in range(8):
                            v = x[INDEX(row + min(lane, lanes - 1) * plane + j)]
                            out[INDEX(at + j * 8 + lane)] = v if lane < lanes else ZERO


def plain_copy(x, out, geometry):
    """A plain (N, C, H, W) x (C-contiguous, flat) into a zero-padded plain buffer out (flat,
    (N, C, Hp, Wp)): images b0 <= b < b1, zeros in the border. Geometry as block_copy's. (A
    first layer's few channels: NumPy's strided copy split over the threads took 0.29 ms of a
    lenet5 training step at two threads, 0.06 on one, the threads waiting on the GIL.)"""
    b0, b1, channels, h, w, top, left, hp, wp = geometry[:9]
    for plane in range(b0 * channels, b1 * channels):
        base = plane * hp * wp
        source = plane * h * w
        for r in range(hp):
            at = base + r * wp
            i = r - top
            if i < 0 or i >= h:
                for k in range(wp):
                    out[INDEX(at + k)] = ZERO
                continue
            for k in range(left):
                out[INDEX(at + k)] = ZERO
            for k in range(left + w, wp):
                out[INDEX(at + k)] = ZERO
            row = source + i * w
            for j in range(w):
                out[INDEX(at + left + j)] = x[INDEX(row + j)]
'''


def block_copy_grad_source() -> str:
    """`block_copy_grad`: block_copy of an output gradient that also sums it, sums[c] (float64)
    += the copied values of channel c in images b0 <= b < b1 (a bias gradient without a pass
    of its own: `channel_sums` read all of dy again, 0.3-1 ms a layer of vggish). Where
    geometry's `masked`, a ReLU's backward taken in: x where mask else 0
    (`activation_kernels.relu_backward`'s select) is what is copied and summed. Geometry:
    block_copy's, then masked. Each image's block of 8 channels is summed first, plane by
    plane along its contiguous values (vectors of partial sums, reassociation allowed: an
    order that depends only on the sizes), then copied as block_copy does, eight rows side
    by side (summed in the copy's loop, the sums kept it from being vectorized: 128 x 64 x
    16 x 16, two threads, 1.45 ms against the copy's 0.50; summed row by row, 8x8 maps spent
    their time reducing vectors of 8)."""

    def row(ind: str, masked: bool) -> list[str]:
        # every load made whatever the mask says (a load inside a branch keeps LLVM from
        # making the branch a select, and the loop from being vectorized)
        keep = " if mask[INDEX(at_x)] else ZERO" if masked else ""
        return [ind + "if lanes == 8:",
                ind + "    for j in range(w):",
                ind + "        for lane in range(8):",
                ind + "            at_x = row + lane * plane + j",
                ind + "            v = x[INDEX(at_x)]",
                ind + f"            out[INDEX(at + j * 8 + lane)] = v{keep}",
                ind + "else:  # the last block of a channel count not a multiple of 8",
                # every lane loads (the lanes past the channels reread the last one) and selects:
                # the mask's select inside `if lane < lanes` stayed a branch (lenet5's 6
                # filters, masked, 128 x 6 x 28 x 28 on two threads: 1.31 ms, now 0.16)
                ind + "    for j in range(w):",
                ind + "        for lane in range(8):",
                ind + "            at_x = row + min(lane, lanes - 1) * plane + j",
                ind + "            v = x[INDEX(at_x)]",
                ind + f"            v = v{keep}",
                ind + "            out[INDEX(at + j * 8 + lane)] = v if lane < lanes else ZERO"]

    ind = " " * 20
    return "\n".join([
        "def block_copy_grad(x, mask, out, sums, geometry):",
        "    b0, b1, channels, h, w, top, left, hp, wp, masked = geometry[:10]",
        "    blocks = (channels + 7) // 8",
        "    plane = h * w",
        "    row_span = wp * 8",
        "    for b in range(b0, b1):",
        "        for cb in range(blocks):",
        "            base = (b * blocks + cb) * hp * row_span",
        "            lanes = min(8, channels - cb * 8)",
        "            source = (b * channels + cb * 8) * plane",
        "            for lane in range(lanes):  # each channel's plane, contiguous",
        "                total = 0.0",
        "                for j in range(plane):",
        "                    at_x = source + lane * plane + j",
        "                    v = x[INDEX(at_x)]",
        "                    if masked:",
        "                        v = v if mask[INDEX(at_x)] else ZERO",
        "                    total += v",
        "                sums[INDEX(cb * 8 + lane)] += total",
        "            for r in range(hp):",
        "                at = base + r * row_span",
        "                i = r - top",
        "                if i < 0 or i >= h:",
        "                    for k in range(row_span):",
        "                        out[INDEX(at + k)] = ZERO",
        "                    continue",
        "                for k in range(left * 8):",
        "                    out[INDEX(at + k)] = ZERO",
        "                for k in range((left + w) * 8, row_span):",
        "                    out[INDEX(at + k)] = ZERO",
        "                at += left * 8",
        "                row = source + i * w",
        "                if masked:",
        *row(ind, True),
        "                else:",
        *row(ind, False),
    ])


# A bias gradient: NumPy's dy.sum(axis=(0, 2, 3), dtype=float64) casts through a buffer on one
# thread (about 1 ms a 2-million-value gradient, 8 of resnet8's 150 ms training step on two
# threads). Here a channel's values are summed in float64 with reassociation allowed, so LLVM
# keeps vectors of partial sums (one thread, 4 million values: 1.3 ms; eight partial sums
# written out by hand, 2.4); channels are split over threads, never a channel's sum, and the
# order of a compiled loop depends only on the sizes: the same inputs give the same sums.
CHANNEL_SUMS_SOURCE = '''
def channel_sums(dy, sums, geometry):
    """sums[c] = the float64 sum of dy[:, c] for c0 <= c < c1; dy (N, K, P) flat.
    Geometry: N, K, P, c0, c1."""
    n, k, p, c0, c1 = geometry[:5]
    for c in range(c0, c1):
        total = 0.0
        for b in range(n):
            at = (b * k + c) * p
            for q in range(p):
                total += numpy.float64(dy[INDEX(at + q)])
        sums[c] = total
'''


def _weight_grad_tile(ind: str, block_count: int, taps: int = LANES) -> list[str]:
    """Code summing tiles of dw over the output positions of images bg .. bn - 1: `taps` taps
    (8, or 4 twice for the group of 8) x 8 output lanes of each of blocks kb ..
    kb + block_count - 1."""
    width = block_count * LANES
    lines = []
    for part in range(LANES // taps):
        lines += [ind + " = ".join(f"a{c}_{k}" for k in range(width)) + " = ZERO"
                  for c in range(taps)]
        lines += [ind + f"t{c} = offsets[tg * 8 + {part * taps + c}]" for c in range(taps)]
        lines += [
            ind + "for b in range(bg, bn):",
            ind + "    xbase = b * x_batch + x_origin",
            ind + "    dbase = b * dy_batch + kb * dy_block + dy_origin",
            ind + "    for i in range(out_h):",
            ind + "        xa = INDEX(xbase + i * stride_h * x_row)",
            ind + "        da = INDEX(dbase + i * dy_row)",
            ind + "        for j in range(out_w):",
        ]
        body = ind + "            "
        lines += [body + f"d{k} = dy[da + INDEX({k})]" for k in range(LANES)]
        for block in range(1, block_count):
            lines += [body + f"d{block * LANES + k} = dy[da + INDEX({block} * dy_block + {k})]"
                      for k in range(LANES)]
        for c in range(taps):
            lines.append(body + f"x{c} = x[xa + INDEX(t{c})]")
            lines += [body + f"a{c}_{k} += x{c} * d{k}" for k in range(width)]
        lines += [body + "xa += INDEX(stride_w * x_col)", body + "da += INDEX(dy_col)"]
        lines += [ind + f"tile[{c * width + k}] = a{c}_{k}"
                  for c in range(taps) for k in range(width)]
        for half in range(width // LANES):
            first = f" + {part * taps * LANES}" if part else ""
            lines += [ind + f"at = INDEX(((kb + {half}) * tap_groups + tg) * 64{first})",
                      ind + f"for c in range({taps}):",
                      ind + "    for k in range(8):",
                      ind + f"        dw[at + INDEX(c * 8 + k)] += tile[c * {width} + "
                            f"{half * LANES} + k]"]
    return lines


# The widest weight-gradient tile, in blocks of 8 output channels, by CPU: with AVX-512 (at
# full or half rate) 4 (8 taps x 32 channels, 16 accumulators of 512 bits; 8 of them, 2 blocks,
# left the units waiting), without it 2 (below). On Zen 4 (half rate), two threads, batch 128,
# best of 5, twice, in one process (2026-12-04 10:18 UTC), 2 / 4 blocks, ms: 3x3 32 -> 32 on
# 32x32 18.1-18.8 / 14.7-14.8, 64 -> 64 on 32x32 65.8-70.3 / 57.7-57.8, 64 -> 128 on 8x8
# 9.5-11.7 / 7.7-8.0, 128 -> 128 on 8x8 20.6-22.1 / 14.6-15.5, on 4x4 7.4-7.9 / 3.9-4.4,
# 16 -> 32 on 16x16 2.5-2.6 / 1.8-2.0; 5x5 20 -> 20 on 16x16 8.7-9.4 / 6.6; 3 -> 32 on 32x32
# 2.2-2.4 / 1.9.
WEIGHT_GRAD_BLOCKS = 2
WIDE_WEIGHT_GRAD_BLOCKS = 4
# Without AVX-512 a block is a whole register: 8 taps x 2 blocks would be 16 accumulators, with
# the 2 vectors of dy and a broadcast 19 of AVX2's 16 registers. There a tile of 2 blocks sums
# 4 taps (8 accumulators), twice for each group of 8. Zen 3, one thread, batch 128, best of 5
# alternated in one process (2026-12-03 19:35 UTC), 3x3 layers, 8 taps / 4, ms: 32 -> 32 on
# 32x32 50.6 / 31.8; 64 -> 64 on 16x16 51.6 / 34.5; 64 -> 128 on 8x8 28.5 / 22.8; 16 -> 16 on
# 32x32 14.1 / 11.4; 3 -> 32 on 32x32 6.56 / 4.51; 128 -> 128 on 8x8 62.2 / 64.3; 5x5 16 -> 20
# on 16x16 15.5 / 14.2.
# Where 512-bit multiply-adds run at half rate (Zen 4) the tile of 4 blocks sums 4 taps too, in
# 256-bit vectors (`_max_vector_bits`: 16 accumulators of 8 lanes, as many multiply-adds a
# cycle there): its 8 taps x 32 channels in 512-bit vectors read dy's 4 blocks, a block apart
# in memory, as 4 vectors of 8 lanes and joined them in pairs for every position. Whole
# training steps, two threads, batch 128, alternated in one process (2026-12-04 20:11 UTC), 4
# taps / 8: vggish 0.941-0.954, convnetjs 0.914-0.957, resnet8 0.957-0.975, fcn-mini
# 0.915-0.987, lenet5 0.969, inception-mini 0.980, unet-mini 0.976, bottleneck 0.980,
# squeezenet-mini 0.986, mobilenet-mini 1.004; the same 4 taps in 512-bit vectors 1.006-1.013
# (level), and 512 or 2048 positions a group instead of 128 within 1% of it.
FEW_WEIGHT_GRAD_TAPS = 4
# Output positions a weight-gradient tile sums before it is added to dw: on small maps a tile
# of one image's positions spent much of its time starting and ending. One thread, 64 -> 128
# filters, in separate processes alternated, GFLOP/s with an image's tile, 512, 2048 and 4096
# positions: 8x8 (batch 128) 125-133, 143-181, 161-177, 151-159; 16x16 (batch 32) 149-179,
# 159-184, 167-195, 167-186; 4x4 (batch 512) 61-66, 117-153 at 512; 32x32 unchanged.
WEIGHT_GRAD_POSITIONS = 2048
# The 4-tap tiles' (FEW_WEIGHT_GRAD_TAPS): on Zen 3 (512 KB of second-level cache against Zen
# 4's and 5's 1 MB) a group's input, re-read for every block of output channels, fell out of
# it. One thread, batch 128, best of 5 alternated in one process (2026-12-03 19:44 UTC), 3x3
# layers, 2048 / 256 / 128 positions, ms: 128 -> 128 on 4x4 18.43 / 13.61 / 11.90, on 8x8
# 43.44 / 38.33 / 32.93; 64 -> 64 on 8x8 11.76 / 8.97 / 8.37; 64 -> 128 on 8x8 24.42 (2048),
# 17.07 (128); 64 -> 64 on 16x16 35.37 / 31.20 (256) / 31.25; 3 -> 32 on 32x32 4.41 / 4.30 /
# 4.10. (On Zen 4 level with 512 and 2048, above.)
FEW_TAPS_WEIGHT_GRAD_POSITIONS = 128


def weight_grad_blocks() -> int:
    """The widest weight-gradient tile on this CPU, in blocks of 8 output channels."""
    return WIDE_WEIGHT_GRAD_BLOCKS if kernels.wide_registers() else WEIGHT_GRAD_BLOCKS


def weight_grad_taps() -> int:
    """The taps a weight-gradient tile of two or more blocks sums on this CPU: 8 where 512-bit
    multiply-adds run at full rate, else FEW_WEIGHT_GRAD_TAPS."""
    return LANES if kernels.full_rate_512() else FEW_WEIGHT_GRAD_TAPS


def weight_grad_source(widest: int = WEIGHT_GRAD_BLOCKS, taps: int = LANES) -> str:
    """The weight gradient of a convolution from its input (blocked or plain, read through a
    table of tap offsets as the forward kernel reads it) and its blocked output gradient
    (print it to read it): for each image, run of `widest` blocks of 8 output channels and
    group of 8 taps, a tile of dw (8 taps x 8 * widest output lanes) in registers, summed over
    the image's output positions:

        dw[kb, t, k] += sum_(i, j) x[b, (i*SH, j*SW) + offsets[t]] dy[b, kb, i, j, k]

    Per position `widest` vector loads of dy's lanes (8 each), 8 broadcast input taps and
    8 * widest fused multiply-adds, as the forward kernel's tiles; the last blocks of output
    channels get narrower tiles (of 3, 2 or 1 blocks; 5 blocks left as 3 + 2). The taps of a
    blocked input are its lanes (c // 8, u, v, c % 8), those of a plain one (c, u, v): a first
    layer of 1 or 3 channels wastes no lanes. A tile sums the positions of a group of images
    (one image of WEIGHT_GRAD_POSITIONS positions or more, else as many as make that many;
    FEW_TAPS_WEIGHT_GRAD_POSITIONS for tiles of 4 taps)
    before it is added to dw, the group's input and output gradient staying in cache across
    its taps. taps: those a tile of two or more blocks sums (8, or 4 twice; one block's tile
    sums 8)."""
    # a tile of one block (8 broadcasts and one load for 8 multiply-adds) waits on its loads:
    # 3 blocks (17-24 output channels) as one tile of 3, not 2 + 1: 16 -> 20 filters 5x5 on
    # 16x16, batch 128, two threads, 3.67-3.73 -> 1.92-1.98 ms (where 4 is the widest; with 2
    # widest, 24 vector accumulators would not fit AVX2's 16 registers)
    widths = [w for w in (4, 3, 2, 1) if w <= widest and (w != 3 or widest == 4)]
    positions = WEIGHT_GRAD_POSITIONS if taps == LANES else FEW_TAPS_WEIGHT_GRAD_POSITIONS
    lines = [
        "def weight_grad(x, dy, offsets, dw, geometry):",
        "    # x (flat): tap t of output position (i, j) of image b is",
        "    #    x[b*x_batch + i*SH*x_row + j*SW*x_col + x_origin + offsets[t]]",
        "    # dy (flat): dy[b*dy_batch + kb*dy_block + i*dy_row + j*dy_col + dy_origin + k]",
        "    # offsets: a multiple of 8 taps; dw (flat, (Kb, taps / 8, 8, 8)) += images b0..b1-1",
        "    (b0, b1, k_blocks, x_batch, x_row, x_col, x_origin, dy_batch, dy_block, dy_row,",
        "     dy_col, dy_origin, out_h, out_w, stride_h, stride_w) = geometry[:16]",
        "    tap_groups = offsets.shape[0] // 8",
        f"    tile = stack_empty({widest * LANES * LANES}, x.dtype)",
        f"    group = max(1, {positions} // (out_h * out_w))",
        "    for bg in range(b0, b1, group):",
        "        bn = min(bg + group, b1)",
        "        kb = 0",
        "        while kb < k_blocks:",
        "            count = 1",
    ]
    for index, width in enumerate(widths[:-1]):  # the widest that fits the blocks left...
        leaves_one = width == 4 and 3 in widths  # ...but 5 blocks as 3 + 2, not 4 + 1
        lines.append(f"            {'el' if index else ''}if kb + {width - 1} < k_blocks"
                     + (" and k_blocks - kb != 5:" if leaves_one else ":"))
        lines.append(f"                count = {width}")
    lines.append("            for tg in range(tap_groups):")
    for index, width in enumerate(widths):
        keyword = "if" if index == 0 else "elif" if index < len(widths) - 1 else "else"
        condition = f" count == {width}:" if keyword != "else" else ":"
        lines.append(" " * 16 + keyword + condition)
        lines += _weight_grad_tile(" " * 20, width, taps if width > 1 else LANES)
    lines.append("            kb += count")
    return "\n".join(lines)


def module_source(kind: str, dtype_name: str, tile=None) -> str:
    """A module defining one blocked kernel for one dtype (and tile), compiled on import and
    cached by Numba beside it."""
    scalar = f"numba.{dtype_name}"
    flat = f"{scalar}[::1]"
    header = [
        f'"""convnet\'s blocked {kind} kernel for {dtype_name} (written by '
        f'convnet.core.blocked)."""',
        "import numba",
        "import numpy",
        "",
        f"ZERO = numpy.{dtype_name}(0)",
        f"ONE = numpy.{dtype_name}(1)",
        f"THREE = numpy.{dtype_name}(3)",
        f"SIX = numpy.{dtype_name}(6)",
        f"INF = numpy.{dtype_name}(numpy.inf)",
        f"DTYPE = numpy.{dtype_name}",
        f"LANES = {LANES}",
        f"SCRATCH = {SCRATCH}  # items of a row's scratch on the stack (more: on the heap)",
        "INDEX = numba.uint64  # unsigned indices: no checks for negative ones",
        "",
        "from convnet.core.atomics import (  # the tasks' arrays",
        "    boolean_at, float32_at, float64_at, int64_at)",
        "from convnet.core.stack_arrays import stack_empty  # scratch without malloc",
        "from convnet.core.compile_pipeline import WithoutSSA  # (why: its docstring)",
    ]
    # (a module of its own for each: one compiled otherwise may be in the cache)
    bits = _max_vector_bits(kind, tile)
    if bits is not None:
        header.append(f"# compiled with LLVM's SLP vectorizer building vectors of {bits} bits "
                      "at most (blocked._max_vector_bits)")
    if "-unroll-runtime=false" in _llvm_options(kind, tile):
        header.append("# compiled with LLVM's runtime loop unrolling off (blocked._llvm_options)")
    options = "pipeline_class=WithoutSSA, nogil=True, fastmath={'contract'}, cache=True"
    geometry = "numba.int64[::1]"
    # kernels compiled in more than one kind of module, the same text in each
    conv_jit = (f"conv = numba.njit(({flat}, {flat}, {flat}, numba.int64[::1], {flat}, {flat}, "
                f"{geometry}, {scalar}, {scalar}), {options})(conv)")
    weight_grad_jit = (f"weight_grad = numba.njit(({flat}, {flat}, numba.int64[::1], {flat}, "
                       f"{geometry}), {options})(weight_grad)")
    input_jit = (f"winograd_input = numba.njit(({flat}, {flat}, {geometry}), "
                 f"{options})(winograd_input)")
    output_jit = (f"winograd_output = numba.njit(({flat}, {flat}, {flat}, {flat}, {geometry}, "
                  f"{scalar}, {scalar}), {options})(winograd_output)")
    if kind in ("conv", "conv_rows", "conv_rows_filters", "conv_span"):  # the same arguments:
        source = {"conv": lambda: conv_source(*tile),  # a tile's, the rows', the spans'
                  "conv_rows": lambda: conv_rows_source(tile[0], not kernels.wide_registers(),
                                                         tile[1]),
                  "conv_rows_filters": lambda: conv_rows_source(tile[0], True, tile[1]),
                  "conv_span": lambda: conv_span_source(*tile)}[kind]()
        body = ACTIVATE_SOURCE + "\n\n" + source
        footer = (conv_jit + "\n\n\n"
                  + kernels.task_source("conv", "fffiffi", 2, dtype_name))
    elif kind == "weight_grad":  # and the blocked copies training makes around it
        widest, taps = (WEIGHT_GRAD_BLOCKS, LANES) if tile is None else (tile + (LANES,))[:2]
        body = (weight_grad_source(widest, taps) + "\n\n" + BLOCK_COPY_SOURCE + "\n\n"
                + block_copy_grad_source() + "\n\n" + CHANNEL_SUMS_SOURCE)
        footer = (weight_grad_jit + "\n"
                  f"block_copy = numba.njit(({flat}, {flat}, {geometry}), "
                  f"{options})(block_copy)\n"
                  f"block_copy_grad = numba.njit(({flat}, numba.boolean[::1], {flat}, "
                  f"numba.float64[::1], {geometry}), pipeline_class=WithoutSSA, nogil=True, "
                  "fastmath={'reassoc', 'contract'}, cache=True)(block_copy_grad)\n"
                  f"plain_copy = numba.njit(({flat}, {flat}, {geometry}), "
                  f"{options})(plain_copy)\n"
                  f"channel_sums = numba.njit(({flat}, numba.float64[::1], {geometry}), "
                  "pipeline_class=WithoutSSA, nogil=True, fastmath={'reassoc', 'contract'}, "
                  "cache=True)(channel_sums)"
                  "\n\n\n"
                  + kernels.task_source("weight_grad", "ffifi", 0, dtype_name) + "\n\n\n"
                  + kernels.task_source("block_copy", "ffi", 0, dtype_name) + "\n\n\n"
                  + kernels.task_source("block_copy_grad", "fbfdi", 0, dtype_name) + "\n\n\n"
                  + kernels.task_source("plain_copy", "ffi", 0, dtype_name) + "\n\n\n"
                  + kernels.task_source("channel_sums", "fdi", 0, dtype_name))
    elif kind == "winograd":
        body = ACTIVATE_SOURCE + "\n\n" + winograd_sources()
        footer = (input_jit + "\n" + output_jit + "\n\n\n"
                  + kernels.task_source("winograd_input", "ffi", 0, dtype_name) + "\n\n\n"
                  + kernels.task_source("winograd_output", "ffffi", 2, dtype_name))
    elif kind == "winograd_train":  # a products' tile, the transforms, the images' driver
        body = (ACTIVATE_SOURCE + "\n\n" + conv_source(*tile, pooled=False) + "\n\n"
                + _lanes(_WINOGRAD_INPUT) + "\n\n" + _lanes(_plain_output(_WINOGRAD_OUTPUT))
                + "\n\n" + WINOGRAD_IMAGES_SOURCE)
        footer = (conv_jit + "\n" + input_jit + "\n"
                  f"winograd_output_plain = numba.njit(({flat}, {flat}, {flat}, {flat}, "
                  f"{geometry}, {scalar}, {scalar}), {options})(winograd_output_plain)\n"
                  f"winograd_images = numba.njit(({flat}, {flat}, {flat}, numba.int64[::1], "
                  f"{flat}, {flat}, {flat}, {flat}, {geometry}), {options})(winograd_images)\n"
                  f"winograd_pack = numba.njit(({flat}, {flat}, {geometry}), "
                  f"{options})(winograd_pack)"
                  "\n\n\n"
                  + kernels.task_source("winograd_images", "fffiffffi", 0, dtype_name))
    elif kind == "winograd_band":  # a products' tile, the transforms, one band's driver
        body = (ACTIVATE_SOURCE + "\n\n" + conv_source(*tile, pooled=False) + "\n\n"
                + winograd_sources() + "\n\n" + WINOGRAD_BAND_SOURCE)
        footer = (conv_jit + "\n" + input_jit + "\n" + output_jit + "\n"
                  f"winograd_band = numba.njit(({flat}, {flat}, {flat}, numba.int64[::1], "
                  f"{flat}, {flat}, {flat}, {flat}, {flat}, {geometry}, {scalar}, {scalar}), "
                  f"{options})(winograd_band)"
                  "\n\n\n"
                  + kernels.task_source("winograd_band", "fffifffffi", 2, dtype_name))
    elif kind == "winograd_weight_grad":  # per the weight gradient's tile, as weight_grad
        widest, taps = (tile + (LANES,))[:2]
        body = (weight_grad_source(widest, taps) + "\n\n" + _lanes(_WINOGRAD_INPUT) + "\n\n"
                + _lanes(_WINOGRAD_GRADIENT) + "\n\n" + WINOGRAD_WEIGHT_IMAGES_SOURCE)
        footer = (weight_grad_jit + "\n" + input_jit + "\n"
                  f"winograd_gradient = numba.njit(({flat}, {flat}, {geometry}), "
                  f"{options})(winograd_gradient)\n"
                  f"winograd_weight_images = numba.njit(({flat}, {flat}, numba.int64[::1], "
                  f"{flat}, {flat}, {flat}, {geometry}), {options})(winograd_weight_images)"
                  "\n\n\n"
                  + kernels.task_source("winograd_weight_images", "ffifffi", 0, dtype_name))
    elif kind == "depthwise":
        body = ACTIVATE_SOURCE + "\n\n" + depthwise_source(*tile)
        footer = (f"depthwise = numba.njit(({flat}, {flat}, {flat}, {flat}, {geometry}, "
                  f"{scalar}, {scalar}), {options})(depthwise)\n\n\n"
                  + kernels.task_source("depthwise", "ffffi", 2, dtype_name))
    elif kind == "merge":  # merges, copies, small dense products, padded copies of inputs
        body = (MERGE_SOURCE + "\n\n" + ACTIVATE_SOURCE + "\n\n" + dense_source() + "\n\n"
                + PAD_SOURCE + "\n\n" + FINITE_SOURCE + "\n\n" + UNBLOCK_SOURCE + "\n\n"
                + REARRANGE_SOURCE)
        footer = (f"merge = numba.njit(({flat}, {flat}, {flat}, {geometry}, numba.int64), "
                  f"{options}, error_model='numpy')(merge)\n"  # x / 0 is inf, no raise
                  f"dense = numba.njit(({flat}, {flat}, {flat}, {flat}, {geometry}, {scalar}, "
                  f"{scalar}), {options})(dense)\n"
                  f"pad_copy = numba.njit(({flat}, {flat}, {geometry}), {options})(pad_copy)\n"
                  f"finite = numba.njit((numba.{dtype_name}[:, :, :, ::1],), "
                  "pipeline_class=WithoutSSA, nogil=True, fastmath={'reassoc'}, "
                  "cache=True)(finite)\n"
                  f"unblock = numba.njit(({flat}, {flat}, {geometry}), {options})(unblock)\n"
                  f"rearrange = numba.njit(({flat}, {flat}, numba.int64[::1], {geometry}), "
                  f"{options})(rearrange)"
                  "\n\n\n"
                  + kernels.task_source("merge", "fffi", 0, dtype_name, "ints[8]") + "\n\n\n"
                  + kernels.task_source("dense", "ffffi", 2, dtype_name) + "\n\n\n"
                  + kernels.task_source("pad_copy", "ffi", 0, dtype_name) + "\n\n\n"
                  + kernels.task_source("unblock", "ffi", 0, dtype_name) + "\n\n\n"
                  + kernels.task_source("rearrange", "ffii", 0, dtype_name))
    else:
        body = POOL_SOURCE
        footer = "\n".join([
            f"max_pool = numba.njit(({flat}, {flat}, {geometry}), {options})(max_pool)",
            f"avg_pool = numba.njit(({flat}, {flat}, {geometry}, numba.boolean), "
            f"{options})(avg_pool)",
            f"global_avg_pool = numba.njit(({flat}, {scalar}[:, ::1], {geometry}), "
            f"{options})(global_avg_pool)",
            f"resize = numba.njit(({flat}, {flat}, numba.int64[::1], {flat}, numba.int64[::1], "
            f"{flat}, {geometry}), {options})(resize)",
            "", "",
            kernels.task_source("max_pool", "ffi", 0, dtype_name),
            "", "",
            kernels.task_source("avg_pool", "ffi", 0, dtype_name, "ints[6] != 0"),
            "", "",
            kernels.task_source("global_avg_pool", "fFi", 0, dtype_name),
            "", "",
            kernels.task_source("resize", "ffififi", 0, dtype_name),
        ])
    return "\n".join(header) + "\n\n" + body + "\n\n\n" + footer + "\n"


_lock = threading.Lock()
_modules: dict[tuple, object] = {}


def _key(kind: str, dtype=numpy.float32, tile=None) -> tuple:
    if kind in ("weight_grad", "winograd_weight_grad") and tile is None:
        tile = ((weight_grad_blocks(),) if weight_grad_taps() == LANES
                else (weight_grad_blocks(), weight_grad_taps()))
    return (kind, numpy.dtype(dtype).name, None if tile is None else tuple(tile))


def _module_name(key: tuple) -> str:
    kind, dtype_name, tile = key
    suffix = "" if tile is None else "_" + "x".join(str(v) for v in tile)
    return f"convnet_blocked_{kind}_{dtype_name}{suffix}"


def compiled(kind: str, dtype=numpy.float32, tile=None, wait: bool = True):
    """The module holding blocked kernel `kind` ("conv" and "depthwise" per tile, "pool" for
    the pooling and resizing kernels; "weight_grad" per widest tile, this CPU's by default):
    compiled once per machine (Numba caches the machine code in the convnet cache folder) and
    loaded on first use in each process. wait=False: None while another process compiles it."""
    key = _key(kind, dtype, tile)
    with _lock:
        if key not in _modules:
            with kernels.slp_vectorizer():
                module = kernels.import_source(
                    _module_name(key), module_source(kind, key[1], key[2]),
                    _llvm_options(kind, key[2]), wait)
            if module is None:
                return None
            _modules[key] = module
        return _modules[key]


# Compiling ahead. Numba compiles one function at a time in a process, and a fresh machine or
# cache compiles every module a model needs (vggish's first image: about a minute). A plan
# whose modules are not all in Numba's cache starts one child process that compiles them from
# the last the plan needs backwards while this process compiles from the first; each module's
# lock (kernels.module_lock) keeps the two off the same one, and the child stops where they
# meet. CONVNET_COMPILE_AHEAD=0 switches it off.
_children: list = []


def compile_ahead(keys) -> None:
    """Start the child for the modules among `keys` ((kind, dtype, tile) in the order they are
    needed) that neither this process nor Numba's cache holds, where there are two or more
    and two or more cores."""
    import os  # noqa: PLC0415

    missing = [key for key in dict.fromkeys(_key(*key) for key in keys)
               if key not in _modules and not kernels.compiled_before(
                   kernels.module_path(_module_name(key), module_source(*key)))]
    if (len(missing) < 2 or (os.cpu_count() or 1) < 2 or not kernels.available()
            or os.environ.get("CONVNET_COMPILE_AHEAD", "1") == "0"):
        return
    import atexit  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    from convnet.core.files import cache_root  # noqa: PLC0415

    folder = cache_root() / "kernels"
    try:  # a cache folder that cannot be written compiles in memory: nothing to share
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    if not os.access(folder, os.W_OK):
        return
    code = (f"from convnet.core import blocked; "
            f"blocked.compile_behind({missing!r}, asked={os.getpid()})")
    environment = dict(os.environ, CONVNET_CACHE=str(cache_root()))
    try:
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=environment)
    except OSError:
        return  # this process compiles them all, as without the child
    if not _children:
        atexit.register(_stop_children)
    _children.append(child)


def compile_behind(keys, asked: int | None = None) -> None:
    """The child's part: compile `keys` from the last backwards, up to the first one that the
    process which asked (pid `asked`, its parent) is compiling (its lock held) or has compiled,
    or until that process has ended (killed, it can no longer stop this one)."""
    import os  # noqa: PLC0415

    for key in reversed(keys):
        if asked is not None and os.getppid() != asked:
            return
        path = kernels.module_path(_module_name(key), module_source(*key))
        if kernels.compiled_before(path) or compiled(*key, wait=False) is None:
            return


def _stop_children() -> None:
    """At exit: a child still compiling is stopped (what it finished stays in the cache)."""
    for child in _children:
        if child.poll() is None:
            child.terminate()
            child.wait()


def _llvm_options(kind: str, tile) -> tuple[str, ...]:
    """The LLVM options a module is compiled with (in a child process: `kernels.import_source`).
    The vectors' width: `_max_vector_bits`. Runtime unrolling off for a conv tile that needs
    all 16 AVX2 registers: unrolled twice, the 4 x 3 tile's tap loop (12 accumulators, 3
    filter vectors and a broadcast) kept an accumulator on the stack, a store and a load in its
    chain every tap (perf samples: most of the loop's time at the reload), and ran at about 60
    GFLOP/s on a core against 6 x 2's 85; not unrolled it keeps all in registers. One thread,
    batch 128, 5x5 filters, ms, unrolled / not (three runs alternated, 2026-12-03 19:15 UTC):
    4 x 3 16 -> 24 on 32x32 41.9, 39.5, 40.3 / 28.0, 29.0, 28.7; 16 -> 20 and a 2x2 pool 41.1,
    38.9, 39.7 / 31.3, 27.9, 30.3. Not for the others: 6 x 2 (15 registers) the same within
    the host's noise (16 -> 16 20.0, 18.9, 19.5 / 19.7, 22.0, 19.4; 3x3 64 -> 64 on 16x16
    29.5, 27.7, 28.4 / 28.0, 30.9, 27.8), and 8 x 1 2.3 times slower not unrolled (16 -> 16
    26.6, 27.2 / 61.8, 62.4)."""
    options = []
    bits = _max_vector_bits(kind, tile)
    if bits is not None:
        options.append(f"-slp-max-reg-size={bits}")
    if (kind in ("conv", "winograd_train", "winograd_band") and not kernels.wide_registers()
            and tile[0] * tile[1] + tile[1] + 1 >= AVX2_REGISTERS):
        options.append("-unroll-runtime=false")
    return tuple(options)


def _max_vector_bits(kind: str, tile) -> int | None:
    """The 8 x 1 tile's vectors are one block of 8 lanes: allowed 512-bit vectors, LLVM put two
    positions in one and spent a permute on every multiply-add (read in the assembly). With
    256 (Zen 4 runs two 256-bit multiply-adds a cycle, one 512-bit), one thread, batch 128,
    interleaved: inception-mini 9.27 -> 8.33 ms, squeezenet-mini 8.72 -> 8.16."""
    if kind == "conv_rows_filters":
        return ROW_FILTERS_BITS
    if (kind in ("weight_grad", "winograd_weight_grad") and tile is not None
            and tuple(tile) == (WIDE_WEIGHT_GRAD_BLOCKS, FEW_WEIGHT_GRAD_TAPS)):
        return 256  # (FEW_WEIGHT_GRAD_TAPS: at half rate)
    return (256 if kind in ("conv", "winograd_train", "winograd_band") and tile is not None
            and tile[1] == 1
            else None)


def loaded(kind: str, dtype=numpy.float32, tile=None) -> bool:
    """Whether kernel `kind` is loaded in this process: for that tile, or any tile when None."""
    name = numpy.dtype(dtype).name
    return any(key[0] == kind and key[1] == name and (tile is None or key[2] == tuple(tile))
               for key in list(_modules))


# -- packing, offsets and work splits (what the inference plan calls) ---------------------------
def pack_filters(weight, block_count: int, lanes_in: int, live_only: bool = False):
    """(K, C, KH, KW) -> flat (K tiles, taps, 8*B): the filters of each tile of 8*B output
    channels, tap by tap in the order `tap_offsets` lists them: (c // 8, u, v, c % 8) for a
    blocked input (lanes_in = 8), (c, u, v) for a plain one (lanes_in = 1). Zero past K and C;
    live_only: without the taps of the lanes past C (as `tap_offsets` lists them then)."""
    k, c, kh, kw = weight.shape
    lanes = LANES * block_count
    tiles = -(-k // lanes)
    cin = -(-c // lanes_in)
    full = numpy.zeros((tiles * lanes, cin * lanes_in, kh, kw), dtype=weight.dtype)
    full[:k, :c] = weight
    packed = full.reshape(tiles, lanes, cin, lanes_in, kh, kw).transpose(0, 2, 4, 5, 3, 1)
    if live_only:
        packed = packed.reshape(tiles, cin * kh * kw * lanes_in, lanes)[
            :, _live_taps(c, (kh, kw), lanes_in)]
    return numpy.ascontiguousarray(packed).reshape(-1)


def pack_bias(bias, count: int, block_count: int, dtype):
    """(K,) or None -> (K tiles * 8*B,), zero past K."""
    lanes = LANES * block_count
    out = numpy.zeros(-(-count // lanes) * lanes, dtype=dtype)
    if bias is not None:
        out[:count] = bias
    return out


def transposed_phases(in_len: int, out_len: int, kernel: int, stride: int, crop: int,
                      dilation: int) -> list[tuple]:
    """A transposed convolution along one axis (out[i*S - crop + u*D] += w[u] x[i]) as its
    phases: (p, count, taps, first, step) for each p < S that has outputs, where outputs p +
    S*j (j < count) are sum_t w[taps[t]] * x[j + first + t*step]: the taps u with S dividing
    p + crop - u*D, in the order their input offset (p + crop - u*D) / S rises. Each phase is
    a stride-1 correlation on the direct convolution, its outputs written S apart: no product
    lands on a pixel outside the output, nor on an inserted zero."""
    step = dilation // math.gcd(stride, dilation)
    phases = []
    for p in range(min(stride, out_len)):
        taps = [u for u in range(kernel - 1, -1, -1) if (p + crop - u * dilation) % stride == 0]
        first = (p + crop - taps[0] * dilation) // stride if taps else 0
        phases.append((p, len(range(p, out_len, stride)), taps, first, step))
    return phases


def phase_border(phases, in_len: int) -> tuple[int, int]:
    """The zeros (before, after) the input of `transposed_phases` needs for every read."""
    before = after = 0
    for _, count, taps, first, step in phases:
        if taps:
            last = count - 1 + first + (len(taps) - 1) * step
            before, after = max(before, -first), max(after, last - (in_len - 1))
    return before, after


def phase_filters(weight, rows, cols):
    """A transposed convolution's weight (C_in, C_out, KH, KW) -> the taps of one phase as a
    convolution's (C_out, C_in, len(rows), len(cols)): none for a phase no tap reaches (its
    outputs are the bias)."""
    if not (rows and cols):
        return numpy.zeros((weight.shape[1], weight.shape[0], 0, 0), numpy.float32)
    return numpy.ascontiguousarray(
        weight[:, :, rows][:, :, :, cols].transpose(1, 0, 2, 3), dtype=numpy.float32)


def tap_offsets(channels: int, kernel, dilation, strides, lanes_in: int,
                live_only: bool = False):
    """int64 (taps,): where each input tap of a window sits, in elements, from the window's
    first pixel. strides: (channel block, row, column) of the input in elements; a blocked input
    (lanes_in = 8) has its lanes 1 apart, a plain one (lanes_in = 1) one channel per block.
    live_only: without the lanes past C of a blocked input's last block (zero there: their
    taps only multiply zeros; lenet5's 6 channels took 8 taps a pixel, inception-mini's 4 took
    8)."""
    return _tap_offsets(int(channels), tuple(int(k) for k in kernel),
                        tuple(int(d) for d in dilation), tuple(int(s) for s in strides),
                        int(lanes_in), bool(live_only)).copy()


# A training step asks for the same few tables at every layer's forward and backward (meshgrid's
# broadcasting cost inception-mini about 2 ms of a 66 ms step on two threads): made once each.
@functools.lru_cache(maxsize=512)
def _tap_offsets(channels: int, kernel, dilation, strides, lanes_in: int, live_only: bool):
    block, row, col = strides
    cb, u, v, lane = _tap_grid(channels, kernel, lanes_in)
    offsets = (cb * block + u * dilation[0] * row + v * dilation[1] * col + lane).reshape(-1)
    if live_only:
        offsets = offsets[_live_taps(channels, kernel, lanes_in)]
    return numpy.ascontiguousarray(offsets, dtype=numpy.int64)


def _tap_grid(channels: int, kernel, lanes_in: int):
    """(channel block, kernel row, kernel column, lane) of every tap, in `tap_offsets`' order."""
    return numpy.meshgrid(numpy.arange(-(-channels // lanes_in)), numpy.arange(kernel[0]),
                          numpy.arange(kernel[1]), numpy.arange(lanes_in), indexing="ij")


def _live_taps(channels: int, kernel, lanes_in: int) -> numpy.ndarray:
    """bool (taps,) in `tap_offsets`' order: the taps of a real channel, not a zero lane (a
    copy of a table made once)."""
    return _live_table(int(channels), tuple(int(k) for k in kernel), int(lanes_in)).copy()


@functools.lru_cache(maxsize=512)
def _live_table(channels: int, kernel, lanes_in: int) -> numpy.ndarray:
    cb, _, _, lane = _tap_grid(channels, kernel, lanes_in)
    return (cb * lanes_in + lane < channels).reshape(-1)


def pack_depthwise(weight, bias, dtype):
    """(C, 1, KH, KW), (C,) -> (ceil(C/8), KH, KW, 8) flat and (ceil(C/8) * 8,), zero past C."""
    c, _, kh, kw = weight.shape
    count = blocks(c)
    full = numpy.zeros((count * LANES, kh, kw), dtype=dtype)
    full[:c] = weight[:, 0]
    packed = numpy.ascontiguousarray(full.reshape(count, LANES, kh, kw).transpose(0, 2, 3, 1))
    return packed.reshape(-1), pack_bias(bias, c, 1, dtype)


def work_splits(batch: int, positions: int, threads: int, align: int = 1) -> list[tuple]:
    """(b0, b1, q0, q1) ranges of (images, output positions in row-major order) for `threads`
    workers: whole images when the batch has at least one per thread, else parts of each,
    starting at multiples of `align` positions."""
    if threads <= 1 or batch * positions <= 1:
        return [(0, batch, 0, positions)]
    if batch >= threads:
        per = -(-batch // threads)
        return [(b, min(b + per, batch), 0, positions) for b in range(0, batch, per)]
    per = -(-positions // threads // align) * align
    return [(b, b + 1, q, min(q + per, positions)) for b in range(batch)
            for q in range(0, positions, per)]

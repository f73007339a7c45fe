"""Moving values between channels and space without computing anything: PixelShuffle and
PixelUnshuffle (PyTorch), DepthToSpace and SpaceToDepth (ONNX).

Each is one reshape, one transpose and one reshape, written from the ONNX operator spec;
backward is the inverse permutation of the same three steps. With block size r:

    DepthToSpace DCR   (N, C, H, W) -> (N, r, r, C/r^2, H, W) -> (0, 3, 4, 1, 5, 2)
    DepthToSpace CRD   (N, C, H, W) -> (N, C/r^2, r, r, H, W) -> (0, 1, 4, 2, 5, 3)
                       both then -> (N, C/r^2, H*r, W*r)
    SpaceToDepth       (N, C, H, W) -> (N, C, H/r, r, W/r, r) -> (0, 3, 5, 1, 2, 4)
                       -> (N, C*r^2, H/r, W/r)          (the inverse of DCR)
    PixelUnshuffle     the same with (0, 1, 3, 5, 2, 4)  (the inverse of CRD)

PixelShuffle(r) is DepthToSpace(r, "CRD"): output channel c, row h*r + i, column w*r + j
comes from input channel c*r^2 + i*r + j. `convnet.core.reference.depth_to_space` and
`space_to_depth` are the index-by-index oracles.
"""

from __future__ import annotations

import numpy

from convnet.core.arithmetic import Padding, ReceptiveField
from convnet.core.errors import ShapeError
from convnet.nn.layer import Layer, Shape, check_input, grad_enabled, positive_int
from convnet.nn.window import chw


class _Rearrange(Layer):
    """A reshape -> transpose -> reshape of (N, C, H, W); backward undoes it."""

    block: int

    def _plan(self, shape) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(split shape, permutation, output shape) for input shape (N, C, H, W)."""
        raise NotImplementedError

    def forward(self, x):
        check_input(self, x, 4)
        self.output_shape(x.shape[1:])
        split, order, out_shape = self._plan(x.shape)
        if grad_enabled():
            self.cache = x.shape
        return x.reshape(split).transpose(order).reshape(out_shape)  # one copy

    def backward(self, dy):
        x_shape = self._take_cache()
        split, order, _ = self._plan(x_shape)
        moved = tuple(split[axis] for axis in order)
        return dy.reshape(moved).transpose(numpy.argsort(order)).reshape(x_shape)


class _ToSpace(_Rearrange):
    """Channels into r x r blocks of pixels: (N, C, H, W) -> (N, C/r^2, H*r, W*r)."""

    # Permutation of (N, a, b, c, H, W) after the channel split, and whether the split
    # is (r, r, C/r^2) (DCR: depth, column, row) or (C/r^2, r, r) (CRD).
    order: tuple[int, ...]
    depth_first: bool

    def output_shape(self, input_shape: Shape) -> Shape:
        channels, height, width = chw(self, input_shape)
        r = self.block
        if channels % (r * r):
            below, above = channels - channels % (r * r), channels - channels % (r * r) + r * r
            near = f"{below} or {above}" if below else f"{above}"
            raise ShapeError(
                f"{self.name} ({type(self).__name__}): {channels} channels do not split into "
                f"blocks of {r}x{r} = {r * r}; the input needs a multiple of {r * r} channels, "
                f"such as {near} (set the filters of the layer before it)"
            )
        return (channels // (r * r), height * r, width * r)

    def _plan(self, shape):
        n, c, h, w = shape
        r = self.block
        split = (n, r, r, c // (r * r), h, w) if self.depth_first else (n, c // (r * r), r, r,
                                                                        h, w)
        return split, self.order, (n, c // (r * r), h * r, w * r)

    def receptive_field(self, field: ReceptiveField, input_shape: Shape) -> ReceptiveField:
        """Each output unit sees what the input unit it came from sees. The jump between
        output units is 1/r of the input's, which the field model (whole-pixel jumps) cannot
        hold: it stays the input's."""
        return field


class _ToDepth(_Rearrange):
    """r x r blocks of pixels into channels: (N, C, H, W) -> (N, C*r^2, H/r, W/r)."""

    order: tuple[int, ...]

    def output_shape(self, input_shape: Shape) -> Shape:
        channels, height, width = chw(self, input_shape)
        r = self.block
        if height % r or width % r:
            crop = (height - height % r, width - width % r)
            pad = (height + (-height) % r, width + (-width) % r)
            raise ShapeError(
                f"{self.name} ({type(self).__name__}): input {height}x{width} does not tile "
                f"into {r}x{r} blocks ({'height' if height % r else 'width'} "
                f"{height if height % r else width} is not a multiple of {r}); crop to "
                f"{crop[0]}x{crop[1]} or pad to {pad[0]}x{pad[1]} before it"
            )
        return (channels * r * r, height // r, width // r)

    def _plan(self, shape):
        n, c, h, w = shape
        r = self.block
        return (n, c, h // r, r, w // r, r), self.order, (n, c * r * r, h // r, w // r)

    def receptive_field(self, field: ReceptiveField, input_shape: Shape) -> ReceptiveField:
        """Each output position holds one r x r block of input positions: a window of r
        with stride r."""
        r = (self.block, self.block)
        return field.through(r, r, (1, 1), Padding(0, 0, 0, 0))


class PixelShuffle(_ToSpace):
    """torch.nn.PixelShuffle: (N, C*r^2, H, W) -> (N, C, H*r, W*r), the sub-pixel convolution's
    rearrangement; ONNX DepthToSpace in CRD mode."""

    kind = "shuffle"
    order = (0, 1, 4, 2, 5, 3)
    depth_first = False

    def __init__(self, upscale_factor: int):
        super().__init__()
        self.upscale_factor = positive_int(upscale_factor, "upscale_factor", "PixelShuffle")
        self.block = self.upscale_factor

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(_ToDepth):
    """torch.nn.PixelUnshuffle: (N, C, H*r, W*r) -> (N, C*r^2, H, W), PixelShuffle's inverse."""

    kind = "unshuffle"
    order = (0, 1, 3, 5, 2, 4)

    def __init__(self, downscale_factor: int):
        super().__init__()
        self.downscale_factor = positive_int(downscale_factor, "downscale_factor",
                                             "PixelUnshuffle")
        self.block = self.downscale_factor

    def extra_repr(self) -> str:
        return f"downscale_factor={self.downscale_factor}"


class DepthToSpace(_ToSpace):
    """ONNX DepthToSpace: (N, C, H, W) -> (N, C/r^2, H*r, W*r). mode "DCR" (ONNX's default,
    TensorFlow's order: the block row varies slowest among the channels) or "CRD" (PyTorch's
    PixelShuffle)."""

    kind = "d2s"

    def __init__(self, blocksize: int, mode: str = "DCR"):
        super().__init__()
        self.blocksize = positive_int(blocksize, "blocksize", "DepthToSpace")
        self.block = self.blocksize
        if mode not in ("DCR", "CRD"):
            raise ValueError(f"DepthToSpace: mode must be 'DCR' or 'CRD', received {mode!r}")
        self.mode = mode
        self.depth_first = mode == "DCR"
        self.order = (0, 3, 4, 1, 5, 2) if self.depth_first else (0, 1, 4, 2, 5, 3)

    def extra_repr(self) -> str:
        return f"blocksize={self.blocksize}" + ("" if self.mode == "DCR" else ", mode='CRD'")


class SpaceToDepth(_ToDepth):
    """ONNX SpaceToDepth: (N, C, H, W) -> (N, C*r^2, H/r, W/r), the inverse of DepthToSpace
    in DCR mode."""

    kind = "s2d"
    order = (0, 3, 5, 1, 2, 4)

    def __init__(self, blocksize: int):
        super().__init__()
        self.blocksize = positive_int(blocksize, "blocksize", "SpaceToDepth")
        self.block = self.blocksize

    def extra_repr(self) -> str:
        return f"blocksize={self.blocksize}"

"""Slow, obvious loop implementations: the oracle the fast layers are tested against.

Nothing here is used for training; each function is written straight from the definition.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def conv2d(x, weight, bias, stride=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1), groups=1):
    """out[n, k, i, j] = b[k] + sum_{c,u,v} w[k,c,u,v] * xpad[n, g*Cg + c, i*S + u*d, j*S + v*d].

    x (N, C, H, W), weight (K, C/groups, KH, KW), padding (top, bottom, left, right).
    """
    n_batch, channels, height, width = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    top, bottom, left, right = padding
    xpad = np.zeros((n_batch, channels, height + top + bottom, width + left + right), x.dtype)
    xpad[:, :, top : top + height, left : left + width] = x
    out_h = (xpad.shape[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (xpad.shape[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    per_group = out_channels // groups
    out = np.zeros((n_batch, out_channels, out_h, out_w), dtype=np.float64)
    for n in range(n_batch):
        for k in range(out_channels):
            first = (k // per_group) * group_channels
            for i in range(out_h):
                for j in range(out_w):
                    total = 0.0 if bias is None else float(bias[k])
                    for c in range(group_channels):
                        for u in range(kh):
                            for v in range(kw):
                                row = i * stride[0] + u * dilation[0]
                                col = j * stride[1] + v * dilation[1]
                                total += weight[k, c, u, v] * xpad[n, first + c, row, col]
                    out[n, k, i, j] = total
    return out.astype(x.dtype)


def conv_transpose2d(x, weight, bias, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                     dilation=(1, 1), groups=1):
    """out[n, g*Kg + k, i*S - P + u*d, j*S - P + v*d] += x[n, g*Cg + c, i, j] * w[g*Cg + c, k, u, v]
    for every input pixel (i, j) and tap (u, v); positions outside the output are dropped.

    x (N, C, H, W), weight (C, K/groups, KH, KW) as PyTorch lays it out, padding (h, w) cropped
    from each side, output_padding (h, w) rows/cols added at the bottom/right:
    H_out = (H - 1)*S - 2P + d*(KH - 1) + output_padding + 1.
    """
    n_batch, channels, height, width = x.shape
    group_channels = channels // groups
    _, per_group, kh, kw = weight.shape
    s, p, d, extra = stride, padding, dilation, output_padding
    out_h = (height - 1) * s[0] - 2 * p[0] + d[0] * (kh - 1) + extra[0] + 1
    out_w = (width - 1) * s[1] - 2 * p[1] + d[1] * (kw - 1) + extra[1] + 1
    out = np.zeros((n_batch, per_group * groups, out_h, out_w), dtype=np.float64)
    for n in range(n_batch):
        for c in range(channels):
            g = c // group_channels
            for i in range(height):
                for j in range(width):
                    for k in range(per_group):
                        for u in range(kh):
                            for v in range(kw):
                                row = i * stride[0] - padding[0] + u * dilation[0]
                                col = j * stride[1] - padding[1] + v * dilation[1]
                                if 0 <= row < out_h and 0 <= col < out_w:
                                    out[n, g * per_group + k, row, col] += (
                                        x[n, c, i, j] * weight[c, k, u, v])
    if bias is not None:
        out += np.asarray(bias, dtype=np.float64)[None, :, None, None]
    return out.astype(x.dtype)


def pool2d(x, kernel, stride, padding=(0, 0), mode="max", count_include_pad=True):
    """Max or average over each window of each channel separately; depth is unchanged."""
    n_batch, channels, height, width = x.shape
    ph, pw = padding
    fill = -np.inf if mode == "max" else 0.0
    xpad = np.full((n_batch, channels, height + 2 * ph, width + 2 * pw), fill, dtype=np.float64)
    xpad[:, :, ph : ph + height, pw : pw + width] = x
    inside = np.zeros(xpad.shape[2:], dtype=bool)
    inside[ph : ph + height, pw : pw + width] = True
    out_h = (height + 2 * ph - kernel[0]) // stride[0] + 1
    out_w = (width + 2 * pw - kernel[1]) // stride[1] + 1
    out = np.zeros((n_batch, channels, out_h, out_w))
    for n in range(n_batch):
        for c in range(channels):
            for i in range(out_h):
                for j in range(out_w):
                    rows = slice(i * stride[0], i * stride[0] + kernel[0])
                    cols = slice(j * stride[1], j * stride[1] + kernel[1])
                    window = xpad[n, c, rows, cols]
                    if mode == "max":
                        out[n, c, i, j] = window.max()
                    elif count_include_pad:
                        out[n, c, i, j] = window.sum() / window.size
                    else:
                        out[n, c, i, j] = window.sum() / inside[rows, cols].sum()
    return out.astype(x.dtype)


def resize2d(x, out_hw, mode="nearest", coordinate_transformation_mode="half_pixel",
             nearest_mode="round_prefer_floor", scales=None):
    """ONNX Resize over H and W, pixel by pixel from the operator's definition.

    x (N, C, H, W) -> (N, C, H_out, W_out). scales (h, w): output / input (None: from the
    sizes). Nearest rounds the source coordinate by nearest_mode and clamps it; linear
    clamps it to [0, length - 1] and mixes the two neighbours of each axis.
    """
    n_batch, channels, height, width = x.shape
    out_h, out_w = out_hw
    ratios = (None, None)  # the exact scales where they come from the sizes
    if scales is None:
        scales = (out_h / height, out_w / width)
        ratios = (Fraction(out_h, height), Fraction(out_w, width))

    def original(i, out_len, in_len, scale, ratio=None):
        mode = coordinate_transformation_mode
        if mode == "half_pixel":
            return (i + 0.5) / scale - 0.5
        if mode == "pytorch_half_pixel":
            return (i + 0.5) / scale - 0.5 if out_len > 1 else 0.0
        if mode == "align_corners":
            return i * (in_len - 1) / (out_len - 1) if out_len > 1 else 0.0
        if mode == "asymmetric":
            return i / scale
        if mode == "tf_half_pixel_for_nn":
            return (i + 0.5) / scale
        if mode == "half_pixel_symmetric":  # exactly, then rounded once
            # (with sizes, their own ratio: the float 2/6 taken as exact put the first output
            # row of 6 -> 2 just below source row 1, and floor read row 0 where ONNX's
            # reference evaluator and the layer read row 1)
            scale = Fraction(scale) if ratio is None else ratio
            adjustment = Fraction(out_len) / (scale * in_len)
            return float(Fraction(in_len, 2) * (1 - adjustment) + (i + Fraction(1, 2))
                         / scale - Fraction(1, 2))
        raise ValueError(mode)

    def rounded(p, in_len):
        if nearest_mode == "floor":
            k = math.floor(p)
        elif nearest_mode == "ceil":
            k = math.ceil(p)
        elif p == math.floor(p) + 0.5:  # a tie
            k = math.floor(p) if nearest_mode == "round_prefer_floor" else math.ceil(p)
        else:
            k = round(p)
        return min(max(k, 0), in_len - 1)

    def taps(p, in_len):
        """[(index, weight), ...] of linear interpolation at p."""
        p = min(max(p, 0.0), in_len - 1.0)
        low = math.floor(p)
        if low == in_len - 1:
            return [(low, 1.0)]
        return [(low, 1.0 - (p - low)), (low + 1, p - low)]

    out = np.zeros((n_batch, channels, out_h, out_w), dtype=np.float64)
    for i in range(out_h):
        p = original(i, out_h, height, scales[0], ratios[0])
        for j in range(out_w):
            q = original(j, out_w, width, scales[1], ratios[1])
            if mode == "nearest":
                out[:, :, i, j] = x[:, :, rounded(p, height), rounded(q, width)]
                continue
            for row, a in taps(p, height):
                for col, b in taps(q, width):
                    out[:, :, i, j] += a * b * x[:, :, row, col]
    return out.astype(x.dtype)


def depth_to_space(x, blocksize, mode="DCR"):
    """y[n, c, h*r + i, w*r + j] = x[n, (i*r + j)*C' + c, h, w] (DCR) or
    x[n, c*r*r + i*r + j, h, w] (CRD), C' = C / r^2."""
    n_batch, channels, height, width = x.shape
    r = blocksize
    depth = channels // (r * r)
    out = np.zeros((n_batch, depth, height * r, width * r), dtype=x.dtype)
    for c in range(depth):
        for h in range(height):
            for w in range(width):
                for i in range(r):
                    for j in range(r):
                        source = (i * r + j) * depth + c if mode == "DCR" else c * r * r + i * r + j
                        out[:, c, h * r + i, w * r + j] = x[:, source, h, w]
    return out


def space_to_depth(x, blocksize, mode="DCR"):
    """The inverse of depth_to_space in the same mode (DCR: ONNX SpaceToDepth; CRD:
    PyTorch's PixelUnshuffle): y[n, source, h, w] = x[n, c, h*r + i, w*r + j]."""
    n_batch, channels, height, width = x.shape
    r = blocksize
    out = np.zeros((n_batch, channels * r * r, height // r, width // r), dtype=x.dtype)
    for c in range(channels):
        for h in range(height // r):
            for w in range(width // r):
                for i in range(r):
                    for j in range(r):
                        target = (i * r + j) * channels + c if mode == "DCR" else (
                            c * r * r + i * r + j)
                        out[:, target, h, w] = x[:, c, h * r + i, w * r + j]
    return out


def pad2d(x, padding, mode="constant", value=0.0):
    """F.pad over H and W, pixel by pixel; padding (left, right, top, bottom), negative crops
    (constant mode)."""
    n_batch, channels, height, width = x.shape
    left, right, top, bottom = padding
    out = np.full((n_batch, channels, height + top + bottom, width + left + right), value,
                  dtype=x.dtype)

    def source(k, length):
        """Input index read at padded coordinate k (k < 0 or k >= length: a border)."""
        if 0 <= k < length:
            return k
        if mode == "constant":
            return None
        if mode == "replicate":
            return 0 if k < 0 else length - 1
        if mode == "circular":
            return k % length
        return -k if k < 0 else 2 * (length - 1) - k  # reflect about the edge pixel

    for i in range(out.shape[2]):
        row = source(i - top, height)
        for j in range(out.shape[3]):
            col = source(j - left, width)
            if row is not None and col is not None:
                out[:, :, i, j] = x[:, :, row, col]
    return out

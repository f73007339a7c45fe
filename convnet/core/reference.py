"""Slow, obvious loop implementations: the oracle the fast layers are tested against.

Nothing here is used for training; each function is written straight from the definition.
"""

from __future__ import annotations

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

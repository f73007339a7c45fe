"""A conv layer's filters as pictures: colour tiles for a first layer on RGB input (the lecture's
edge and colour-blob detectors), one gray tile per input channel otherwise."""

from __future__ import annotations

import numpy as np

from convnet.core.backend import to_numpy
from convnet.nn.conv import Conv2d
from convnet.viz.images import enlarge, rescale, tile_grid
from convnet.viz.probe import conv_layers, find_layer


def filter_tiles(weight, rgb: bool | None = None) -> np.ndarray:
    """Filters scaled to [0, 1], each by its own min and max over all its channels.

    weight (K, C, kh, kw) -> (K, kh, kw, 3) when rgb (C must be 3), else (K, C, kh, kw).
    rgb=None chooses colour when C == 3. Scaling per filter keeps each filter's channels
    comparable to each other; a constant filter becomes mid-gray, not NaN.
    """
    weight = np.asarray(to_numpy(weight), dtype=np.float64)
    if weight.ndim != 4:
        raise ValueError(f"filter_tiles: expected conv weights (K, C, kh, kw), received shape "
                         f"{weight.shape}")
    channels = weight.shape[1]
    if rgb is None:
        rgb = channels == 3
    if rgb and channels != 3:
        raise ValueError(f"filter_tiles: colour tiles need 3 input channels, the filters have "
                         f"{channels}; pass rgb=False for one gray tile per channel")
    scaled = rescale(weight, axes=(1, 2, 3))  # K, C, kh, kw
    return scaled.transpose(0, 2, 3, 1) if rgb else scaled


def filter_grid(weight, rgb: bool | None = None, *, max_filters: int = 64,
                max_channels: int = 16, pad: int = 1, scale: int = 1) -> np.ndarray:
    """All (or the first max_filters) filters of a layer in one picture, values in [0, 1].

    Colour: a near-square grid of (kh, kw, 3) tiles -> (H, W, 3).
    Per channel: each filter a strip of one tile per input channel (the first max_channels),
    the strips in a grid -> (H, W), with `pad` white pixels between tiles and a triple gap
    between filters; a single input channel gives a near-square grid of one tile per filter.
    """
    colour = rgb if rgb is not None else np.shape(weight)[1] == 3
    tiles = filter_tiles(weight, colour)[:max_filters]
    if colour:
        return enlarge(tile_grid(tiles, pad=pad), scale)
    if tiles.shape[1] == 1:  # one gray tile per filter: a near-square grid reads best
        return enlarge(tile_grid(tiles[:, 0], pad=pad), scale)
    k, c, kh, kw = tiles.shape
    c = min(c, max_channels)
    blocks = np.stack([tile_grid(tiles[i, :c], columns=c, pad=pad) for i in range(k)])
    block_h, block_w = blocks.shape[1:]
    # Blocks (one filter each) in a grid about 1.5 times as wide as tall.
    columns = max(1, min(k, round(np.sqrt(1.5 * k * block_h / block_w))))
    return enlarge(tile_grid(blocks, columns=columns, pad=3 * pad), scale)


def is_colour_layer(model, layer: Conv2d) -> bool:
    """Whether a layer's filters are best shown in colour: the first conv, on 3-channel input."""
    convs = conv_layers(model)
    return bool(convs) and layer is convs[0] and layer.in_channels == 3


def resolve_conv(model, name: str | None) -> Conv2d:
    """The conv layer called `name`, or the first conv layer when name is None."""
    convs = conv_layers(model)
    if not convs:
        raise ValueError("the model has no Conv2d layer, so it has no filters to show")
    if name is None:
        return convs[0]
    layer = find_layer(model, name)
    if not isinstance(layer, Conv2d):
        raise ValueError(f"{name} is a {type(layer).__name__}, not a Conv2d; layers with "
                         f"filters: {', '.join(c.name for c in convs)}")
    return layer


def filters_figure(model, layer: str | None = None, *, max_filters: int = 64,
                   max_channels: int = 16):
    """A matplotlib Figure of one conv layer's filters (the first conv layer by default)."""
    from convnet.viz.figures import new_figure

    conv = resolve_conv(model, layer)
    colour = is_colour_layer(model, conv)
    picture = filter_grid(conv.weight.data, rgb=colour, max_filters=max_filters,
                          max_channels=max_channels)
    k, c, kh, kw = conv.weight.data.shape
    height, width = picture.shape[:2]
    fig_width = min(10.0, max(4.0, width / 12))
    fig = new_figure(fig_width, min(12.0, fig_width * height / width + 0.9))
    ax = fig.add_subplot()
    ax.imshow(picture, cmap=None if colour else "gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_axis_off()
    shown = f" (first {max_filters})" if k > max_filters else ""
    if colour:
        layout = "in colour (R, G, B weights)"
    elif c == 1:
        layout = "one gray tile per filter"
    else:
        layout = f"one strip per filter, one tile per input channel ({min(c, max_channels)} " \
            f"of {c})"
    # Three short lines: a narrow grid (six 5x5 filters) must not clip its title.
    weights = np.asarray(to_numpy(conv.weight.data))
    ax.set_title(f"{conv.name}: {k} filters {kh}x{kw}x{c}{shown}\n{layout}\n"
                 f"each filter black to white by its own range\n(the layer's weights: "
                 f"{weights.min():.2g} to {weights.max():.2g})", fontsize=9)
    return fig

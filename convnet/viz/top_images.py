"""Which images excite a filter most: the largest value of its activation map, image by image."""

from __future__ import annotations

import numpy as np

from convnet.nn.layer import no_grad
from convnet.viz.images import image_hwc
from convnet.viz.probe import activation_at, evaluating, layer_index


def filter_strengths(model, inputs, layer: str, batch_size: int = 128) -> np.ndarray:
    """(N, K): for each input (N, C, H, W float) the maximum of each of the layer's K maps.

    `layer` is a top-level layer with (K, h, w) output; the forward stops there.
    """
    layer_index(model, layer)  # a KeyError listing the choices, before any work
    chunks = []
    with evaluating(model), no_grad():
        for start in range(0, len(inputs), batch_size):
            out = activation_at(model, inputs[start:start + batch_size], layer)
            if out.ndim != 4:
                raise ValueError(f"{layer} outputs shape {out.shape[1:]}, not maps (K, H, W); "
                                 f"choose a conv, pool or activation layer before Flatten")
            chunks.append(np.asarray(out, dtype=np.float64).max(axis=(2, 3)))
    return np.concatenate(chunks) if chunks else np.zeros((0, 0))


def top_activating(strengths, filter_index: int, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(indices, values) of the k images whose map `filter_index` peaks highest, highest first."""
    strengths = np.asarray(strengths)
    if not 0 <= filter_index < strengths.shape[1]:
        raise ValueError(f"filter_index must be in [0, {strengths.shape[1] - 1}], received "
                         f"{filter_index}")
    column = strengths[:, filter_index]
    order = np.argsort(-column, kind="stable")[:k]
    return order, column[order]


def top_images_figure(images, indices, values, layer: str, filter_index: int,
                      captions: list[str] | None = None):
    """The top images in a row, each with its peak activation."""
    from convnet.viz.figures import new_figure

    count = max(len(indices), 1)
    columns = min(count, 8)
    rows = -(-count // columns)
    fig = new_figure(1.2 * columns + 0.2, 1.5 * rows + 0.3)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for position, (ax, index, value) in enumerate(zip(axes, indices, values, strict=False)):
        picture = image_hwc(images[index])
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, interpolation="nearest")
        caption = f"{value:.2f}" + (f"\n{captions[position]}" if captions else "")
        ax.set_title(caption, fontsize=7)
    fig.suptitle(f"images that excite {layer} filter {filter_index} most", fontsize=9)
    return fig

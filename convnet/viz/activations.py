"""Activation maps: what every layer makes of one input image.

A layer's output for one image is a volume (C, H, W): C activation maps, one per filter, or a
vector (F,) after Flatten. `layer_outputs` (convnet.viz.probe) collects them all.
"""

from __future__ import annotations

import numpy as np

from convnet.viz.images import image_hwc, rescale, tile_grid
from convnet.viz.probe import LayerOutput, layer_outputs


def activation_grid(maps, columns: int | None = None, pad: int = 1, per_map: bool = False,
                    max_maps: int | None = None) -> np.ndarray:
    """One image's maps (C, H, W) -> a (H', W') grid with values in [0, 1].

    By default the whole layer shares one scale, so a weak map looks weak next to a strong
    one; per_map=True stretches each map on its own to show its pattern.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"activation_grid: expected maps of one image (C, H, W), received "
                         f"shape {maps.shape}")
    if max_maps is not None:
        maps = maps[:max_maps]
    scaled = rescale(maps, axes=(1, 2) if per_map else None)
    return tile_grid(scaled, columns=columns, pad=pad)


def activations_figure(model, x, image=None, *, max_maps: int = 16, per_map: bool = False,
                       title: str | None = None, class_names=None, max_layers: int = 40):
    """A Figure with one row per layer: the maps of volumes, a strip for vectors.

    x: one preprocessed input (1, C, H, W) float32; image: the same input as uint8 (C, H, W)
    for the first row (optional). class_names: written under the last strip when it holds
    one score per class. A model of more than `max_layers` layers (an imported MobileNet has
    250) shows that many, evenly spread, the last one included: each row is a full-width
    picture, and hundreds of them took matplotlib minutes to draw.
    """
    from convnet.viz.figures import new_figure

    outputs = [o for o in layer_outputs(model, x) if o.type != "Flatten"]
    if len(outputs) > max_layers >= 2:
        step = (len(outputs) - 1) / (max_layers - 1)
        outputs = [outputs[round(i * step)] for i in range(max_layers)]
    heights = ([1.0] if image is not None else []) + [
        1.0 if o.output.ndim == 4 else 0.35 for o in outputs]  # vectors get a thin strip
    fig = new_figure(9, 0.25 + 0.95 * sum(heights))
    axes = fig.subplots(len(heights), 1, squeeze=False,
                        gridspec_kw={"height_ratios": heights})[:, 0]
    row = 0
    if image is not None:
        picture = image_hwc(image)
        axes[0].imshow(picture, cmap="gray" if picture.ndim == 2 else None,
                       interpolation="nearest")
        axes[0].set_title(f"input {tuple(image.shape)}", fontsize=8, loc="left")
        row = 1
    for ax, out in zip(axes[row:], outputs, strict=True):
        _draw_output(ax, out, max_maps, per_map)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    last = outputs[-1].output[0] if outputs else None
    if class_names and last is not None and last.ndim == 1 and len(class_names) == last.size:
        ax = axes[-1]
        ax.set_axis_on()
        ax.set_xticks(range(last.size), [str(name) for name in class_names], fontsize=7)
        ax.tick_params(length=0)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _draw_output(ax, out: LayerOutput, max_maps: int, per_map: bool) -> None:
    value = out.output[0]
    shape = "x".join(str(v) for v in value.shape)
    if value.ndim == 3:
        count = value.shape[0]
        shown = min(count, max_maps)
        grid = activation_grid(value, columns=shown, per_map=per_map, max_maps=max_maps)
        ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="equal")
        more = f", first {shown} of {count} maps" if shown < count else ""
        scale = ("each map black to white by its own range" if per_map else
                 f"black {value[:shown].min():.3g} to white {value[:shown].max():.3g}")
        ax.set_title(f"{out.name} ({out.type}) {shape}{more}; {scale}", fontsize=8, loc="left")
    else:
        strip = rescale(value.reshape(1, -1))
        ax.imshow(strip, cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                  aspect="auto")
        ax.set_title(f"{out.name} ({out.type}) {shape}; dark {value.min():.3g} to yellow "
                     f"{value.max():.3g}", fontsize=8, loc="left")

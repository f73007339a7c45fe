"""Pictures of segmentation: class colours, colour masks, overlays, the input / true mask /
predicted mask / overlay rows of the report, and per-class IoU bars.

    masks = predict_masks(model, preprocess, images)     # (N, H, W) class indices
    colour_mask(masks[0], num_classes)                    # (H, W, 3) uint8
    overlay_mask(images[0], masks[0], num_classes)        # the image with the mask blended in
    mask_png(masks[0], num_classes)                       # a palette PNG: colours that are indices

Class 0 (background, by convention) is black; the others take distinct colours.
"""

from __future__ import annotations

import numpy as np

from convnet.nn.graph import first_output
from convnet.nn.layer import no_grad
from convnet.viz.figures import new_figure
from convnet.viz.images import as_rgb, image_hwc
from convnet.viz.probe import evaluating

# Distinct colours (Kelly's and the tab10 palette's) for classes 1..; class 0 is black.
PALETTE = [
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
]
IGNORED_COLOUR = (255, 255, 255)  # pixels of no class (a mask's ignore label)


def class_colours(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8: the palette, then evenly spaced hues for more classes."""
    if num_classes <= len(PALETTE):
        return np.array(PALETTE[:num_classes], np.uint8)
    from matplotlib import colormaps

    extra = colormaps["hsv"](np.linspace(0, 1, num_classes - len(PALETTE), endpoint=False))
    return np.concatenate([np.array(PALETTE, np.uint8),
                           np.rint(extra[:, :3] * 255).astype(np.uint8)])


def colour_mask(mask, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8; ignored pixels white."""
    mask = np.asarray(mask)
    colours = class_colours(num_classes)
    ignored = mask == ignore_index if ignore_index is not None else np.zeros(mask.shape, bool)
    picture = colours[np.where(ignored, 0, mask).astype(np.int64)]
    picture[ignored] = IGNORED_COLOUR
    return picture


def overlay_mask(image_chw, mask, num_classes: int, alpha: float = 0.55) -> np.ndarray:
    """The image (C, H, W) uint8 with its mask's colours blended over every pixel of a class
    other than 0 (the background stays the image): (H, W, 3) uint8."""
    base = as_rgb(image_hwc(image_chw)).astype(np.float64)
    colours = colour_mask(mask, num_classes).astype(np.float64)
    blend = (1 - alpha) * base + alpha * colours
    out = np.where((np.asarray(mask) > 0)[..., None], blend, base)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mask_png(mask, num_classes: int) -> bytes:
    """A palette PNG of the mask: it shows the class colours, and its pixel values are the
    class indices (as PASCAL VOC's masks), so it reads back as a mask."""
    import io

    from PIL import Image

    mask = np.asarray(mask)
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"mask_png: class indices must lie in 0..255, received "
                         f"{mask.min()}..{mask.max()}")
    picture = Image.fromarray(mask.astype(np.uint8), mode="P")
    palette = np.zeros((256, 3), np.uint8)
    palette[:num_classes] = class_colours(num_classes)[:256]
    palette[255] = IGNORED_COLOUR
    picture.putpalette(palette.ravel().tolist())
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def predict_masks(model, preprocess, images, batch_size: int = 64) -> np.ndarray:
    """(N, H, W) int64 class indices (argmax of the scores) for uint8 images (N, C, H, W), in
    evaluation mode, batch by batch."""
    chunks = []
    with evaluating(model), no_grad():
        for start in range(0, len(images), batch_size):
            scores = first_output(model.forward(preprocess(images[start:start + batch_size])))
            chunks.append(np.asarray(scores).argmax(axis=1))
    if not chunks:
        return np.zeros((0, *np.shape(images)[2:]), np.int64)
    return np.concatenate(chunks)


def varied_samples(masks, count: int) -> list[int]:
    """Indices of `count` masks, greedily covering as many classes as possible."""
    masks = np.asarray(masks)
    seen: set[int] = set()
    picks: list[int] = []
    present = [set(np.unique(m).tolist()) for m in masks[:max(count * 20, 50)]]
    while len(picks) < min(count, len(present)):
        best = max((i for i in range(len(present)) if i not in picks),
                   key=lambda i: (len(present[i] - seen), -i))
        picks.append(best)
        seen |= present[best]
    return picks


def segmentation_figure(images, true_masks, predicted, class_names, ignore_index=None,
                        titles=None):
    """Rows of input, true mask, predicted mask and overlay of the prediction, with a legend
    of the class colours. true_masks may be None (images without labels)."""
    images = np.asarray(images)
    k = len(class_names)
    columns = [("input", None), ("true mask", "true"), ("predicted", "pred"),
               ("overlay", "overlay")]
    if true_masks is None:
        columns = [c for c in columns if c[1] != "true"]
    rows = len(images)
    fig = new_figure(2.0 * len(columns) + 1.4, 2.0 * rows + 0.3)
    grid = fig.add_gridspec(rows, len(columns) + 1, width_ratios=[1] * len(columns) + [0.7])
    for r in range(rows):
        for c, (name, what) in enumerate(columns):
            ax = fig.add_subplot(grid[r, c])
            if what is None:
                picture = as_rgb(image_hwc(images[r]))
            elif what == "true":
                picture = colour_mask(true_masks[r], k, ignore_index)
            elif what == "pred":
                picture = colour_mask(predicted[r], k)
            else:
                picture = overlay_mask(images[r], predicted[r], k)
            ax.imshow(picture, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=10)
            if c == 0 and titles is not None:
                ax.set_ylabel(titles[r], fontsize=8)
    legend = fig.add_subplot(grid[:, -1])
    _legend(legend, class_names)
    return fig


def _legend(ax, class_names) -> None:
    """A colour swatch and the name of each class, top to bottom."""
    from matplotlib.patches import Rectangle

    k = len(class_names)
    colours = class_colours(k) / 255
    for i, name in enumerate(class_names):
        ax.add_patch(Rectangle((0.1, k - i - 0.9), 1, 0.8, facecolor=colours[i],
                               edgecolor="#888", linewidth=0.5))
        ax.text(1.3, k - i - 0.5, str(name), va="center", fontsize=9)
    ax.set_xlim(0, 4)
    ax.set_ylim(0, max(k, 8))
    ax.axis("off")


def iou_figure(per_class_iou, class_names, mean_iou: float | None = None, title: str = ""):
    """Horizontal bars of each class's IoU (n/a for a class neither present nor predicted),
    with the mean as a line."""
    iou = np.asarray(per_class_iou, np.float64)
    k = len(class_names)
    fig = new_figure(6.0, 0.28 * k + 1.2)
    ax = fig.add_subplot()
    colours = class_colours(k) / 255
    shown = np.nan_to_num(iou, nan=0.0)
    ax.barh(np.arange(k), shown, color=colours, edgecolor="#555", linewidth=0.5)
    for i, value in enumerate(iou):
        ax.text(min(shown[i], 0.88) + 0.01, i, "n/a" if np.isnan(value) else f"{value:.3f}",
                va="center", fontsize=8)
    ax.set_yticks(np.arange(k), [str(n) for n in class_names], fontsize=8)
    ax.set_ylim(k - 0.4, -1.3)  # top to bottom, with a row above the bars for the mean's label
    if mean_iou is not None and np.isfinite(mean_iou):
        ax.axvline(mean_iou, color="#1d2330", linestyle="--", linewidth=1)
        ax.text(mean_iou, -0.9, f" mean {mean_iou:.3f}", fontsize=8, va="center")
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU = TP / (TP + FP + FN)")
    if title:
        ax.set_title(title, fontsize=10)
    return fig

"""The worst mistakes: wrong predictions ranked by how confident the model was in them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convnet.viz.images import image_hwc


@dataclass
class Mistake:
    index: int  # position in the image set
    label: int  # true class
    predicted: int
    confidence: float  # probability given to the (wrong) predicted class
    true_probability: float  # probability given to the true class


def worst_mistakes(probabilities, labels, k: int = 16) -> list[Mistake]:
    """Up to k misclassified images, most confident first. probabilities (N, K), labels (N,)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or labels.shape != (probabilities.shape[0],):
        raise ValueError(f"worst_mistakes: expected probabilities (N, K) and labels (N,), "
                         f"received {probabilities.shape} and {labels.shape}")
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    confidence = probabilities[wrong, predicted[wrong]]
    order = wrong[np.argsort(-confidence, kind="stable")][:k]
    return [Mistake(int(i), int(labels[i]), int(predicted[i]),
                    float(probabilities[i, predicted[i]]), float(probabilities[i, labels[i]]))
            for i in order]


def mistakes_figure(images, mistakes: list[Mistake], class_names: list[str],
                    columns: int = 8, title: str | None = None):
    """The misclassified images with 'true -> predicted (confidence)' under each."""
    from convnet.viz.figures import new_figure

    if not mistakes:
        fig = new_figure(4, 1)
        fig.text(0.5, 0.5, "no mistakes: every image was classified correctly", ha="center",
                 va="center")
        return fig
    columns = min(columns, len(mistakes))
    rows = -(-len(mistakes) // columns)
    fig = new_figure(1.25 * columns, 1.45 * rows + 0.3)
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, mistake in zip(axes.flat, mistakes, strict=False):
        picture = image_hwc(images[mistake.index])
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, interpolation="nearest")
        ax.set_title(f"{class_names[mistake.label]} -> {class_names[mistake.predicted]}\n"
                     f"{mistake.confidence:.0%} sure", fontsize=7)
    fig.suptitle(title or "worst mistakes (true -> predicted, most confident first)",
                 fontsize=9)
    return fig

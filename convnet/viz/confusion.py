"""The confusion matrix as a picture: rows are true classes, columns predictions."""

from __future__ import annotations

import numpy as np


def confusion_figure(matrix, class_names: list[str], title: str | None = None):
    """Counts in each cell, shaded by the row's fraction (so rare classes show up too)."""
    from convnet.viz.figures import new_figure

    matrix = np.asarray(matrix)
    k = len(class_names)
    if matrix.shape != (k, k):
        raise ValueError(f"confusion_figure: expected a {k}x{k} matrix for {k} classes, "
                         f"received shape {matrix.shape}")
    totals = matrix.sum(axis=1, keepdims=True)
    fractions = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    size = min(12, 2.5 + 0.45 * k)
    fig = new_figure(size + 1, size)
    ax = fig.add_subplot()
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, label="fraction of the true class", shrink=0.8)
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if fractions[i, j] > 0.5 else "black")
    ticks = np.arange(k)
    ax.set_xticks(ticks, class_names, rotation=90 if k > 10 else 0, fontsize=8)
    ax.set_yticks(ticks, class_names, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(title or f"confusion matrix: accuracy {accuracy:.1%} on {int(matrix.sum()):,} "
                 f"images", fontsize=10)
    return fig

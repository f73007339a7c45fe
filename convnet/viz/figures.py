"""Matplotlib figures without pyplot: no global state, no windows, safe in server threads.

Figures are drawn on the Agg canvas; `figure_png` turns one into PNG bytes.
"""

from __future__ import annotations

import io

DPI = 100


def new_figure(width: float, height: float):
    """A matplotlib Figure of width x height inches, laid out to fit its labels."""
    from matplotlib.figure import Figure  # imported here: `convnet --help` stays fast

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def figure_png(fig, dpi: int = DPI) -> bytes:
    """PNG bytes of a figure (the Agg backend; nothing is shown on screen)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(fig, path, dpi: int = DPI) -> None:
    """Write a figure as PNG to a path, or to a binary stream such as sys.stdout.buffer."""
    data = figure_png(fig, dpi)
    if hasattr(path, "write"):
        path.write(data)
    else:
        with open(path, "wb") as stream:
            stream.write(data)

"""Matplotlib figures without pyplot: no global state, no windows, safe in server threads.

Figures are drawn on the Agg canvas; `figure_png` turns one into PNG bytes.
"""

from __future__ import annotations

import io
from pathlib import Path

from convnet.core.files import atomic_write

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
        return

    def write(tmp: Path) -> None:  # atomically: a failed write never leaves half a picture
        tmp.write_bytes(data)
        tmp.chmod(0o644)  # a picture to share, unlike the private temporary file

    atomic_write(Path(path), write)

"""Training curves from a run's metrics.jsonl: loss, accuracy (and a segmenter's mean IoU) and
learning rate per epoch."""

from __future__ import annotations

import json
from pathlib import Path

METRICS = "metrics.jsonl"


def read_metrics(path) -> list[dict]:
    """The epoch records of a run folder (or of a metrics.jsonl file), in order.

    A last line cut short while a run is writing it is skipped; any other line that is not
    JSON is an error naming the line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS
    if not path.is_file():
        raise FileNotFoundError(2, "no metrics log (has the run finished an epoch?)", str(path))
    lines = path.read_text().splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                break  # being written right now
            raise ValueError(f"{path}:{number}: not a JSON record: {line[:60]!r}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, received "
                             f"{type(record).__name__}")
        records.append(record)
    return records


def series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) of the records that have `key` (missing or null values skipped)."""
    xs, ys = [], []
    for index, record in enumerate(records):
        value = record.get(key)
        if value is None:
            continue
        xs.append(record.get("epoch", index + 1))
        ys.append(float(value))
    return xs, ys


def curves_figure(records: list[dict], title: str | None = None):
    """Three panels: train/val loss, train/val accuracy (with the validation mean IoU of a
    segmenter), learning rate, against the epoch."""
    from matplotlib.ticker import MaxNLocator, PercentFormatter

    from convnet.viz.figures import new_figure

    if not records:
        raise ValueError("no epoch records to plot yet")
    fig = new_figure(10, 3.0)
    loss_ax, acc_ax, lr_ax = fig.subplots(1, 3)
    marker = "o" if len(records) < 30 else None
    for ax, key, label in ((loss_ax, "loss", "loss"), (acc_ax, "accuracy", "accuracy")):
        for split, style in (("train", "-"), ("val", "--")):
            xs, ys = series(records, f"{split}_{key}")
            if xs:
                ax.plot(xs, ys, style, marker=marker, markersize=3, label=split)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    xs, ys = series(records, "val_mean_iou")
    if xs:  # a segmenter: pixel accuracy and mean IoU share the 0..1 axis
        acc_ax.plot(xs, ys, ":", marker=marker, markersize=3, color="tab:red",
                    label="val mean IoU")
        acc_ax.set_title("pixel accuracy, mean IoU", fontsize=10)
        acc_ax.legend(fontsize=8)
    acc_ax.yaxis.set_major_formatter(PercentFormatter(xmax=1))
    xs, ys = series(records, "lr")
    lr_ax.plot(xs, ys, color="tab:green", marker=marker, markersize=3)
    lr_ax.set_title("learning rate (end of epoch)", fontsize=10)
    lr_ax.set_xlabel("epoch")
    lr_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lr_ax.grid(alpha=0.3)
    lr_ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


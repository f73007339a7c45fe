"""A self-contained HTML report of a run: summary, curves, filters, activation maps, confusion
matrix and worst mistakes (for a segmenter: input, true mask, predicted mask and overlay of
validation images, and the IoU of each class), with every picture inlined as a base64 PNG (one
file, no network).

    write_report("runs/lenet")            # -> runs/lenet/report.html

`ReportCallback` writes it when a Trainer finishes.
"""

from __future__ import annotations

import datetime
import html
import json
from pathlib import Path

import numpy as np

from convnet.io.checkpoint import atomic_write
from convnet.viz.figures import figure_png
from convnet.viz.images import data_url

REPORT = "report.html"

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1000px;
       color: #1d2330; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid
#dde; padding-bottom: 0.2em; }
table { border-collapse: collapse; font-size: 13px; } td, th { padding: 3px 10px;
border-bottom: 1px solid #eee; text-align: left; } th { background: #f4f5f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; image-rendering: auto; } .note { color: #667; }
.kpi { display: inline-block; margin: 0 2em 0.5em 0; vertical-align: top; }
.kpi b { font-size: 1.4em; } .kpi small { color: #667; }
.wide { overflow-x: auto; max-width: 100%; }
@media (max-width: 600px) { body { margin: 1em auto; font-size: 13px; }
  h1 { font-size: 1.25em; word-break: break-word; } .kpi { margin-right: 1em; }
  td, th { padding: 2px 5px; } }
"""


def _img(fig, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="{data_url(figure_png(fig))}">'


def _wide(table: str) -> str:
    """A table that scrolls sideways on a narrow screen instead of widening the page."""
    return f'<div class="wide">{table}</div>' if table else ""


def _table(header, rows, numeric=()) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{html.escape(str(v))}</td>' if i in numeric
            else f"<td>{html.escape(str(v))}</td>" for i, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def summary_table(summary) -> str:
    rows = []
    for row in summary.rows:
        rf = (f"{row.receptive_field[0]}x{row.receptive_field[1]}"
              if len(row.output_shape) == 3 else "whole image")
        rows.append(("\u2003" * row.depth + row.name, row.type,
                     "x".join(str(v) for v in row.output_shape),
                     row.formula or f"{row.params:,}", rf, f"{row.macs:,}"))
    return _table(("layer", "type", "output", "parameters", "receptive field", "mult-adds"),
                  rows, numeric=(5,))


def sharing_table(summary) -> str:
    """Each conv layer's parameters beside a locally connected and a fully connected layer
    giving the same output volume (Lecture 5's parameter sharing, in numbers)."""
    rows = [(row.name, row.sharing["conv"]["text"], row.sharing["locally_connected"]["text"],
             row.sharing["fully_connected"]["text"]) for row in summary.rows if row.sharing]
    if not rows:
        return ""
    return ("<h3>Weight sharing</h3><p class='note'>A conv layer uses one filter at every "
            "position. Without sharing, a locally connected layer needs a filter of its own at "
            "each output position, and a fully connected layer a weight from every input value "
            "to every output value, for the same output volume:</p>"
            + _wide(_table(("layer", "conv (shared)", "locally connected (no sharing)",
                            "fully connected"), rows)))


def _sections(run, validation, samples: int, mistakes: int) -> list[tuple[str, str]]:
    from convnet.viz.activations import activations_figure
    from convnet.viz.confusion import confusion_figure
    from convnet.viz.curves import curves_figure, read_metrics
    from convnet.viz.filters import filters_figure
    from convnet.viz.mistakes import mistakes_figure, worst_mistakes
    from convnet.viz.probe import class_probabilities, conv_layers

    loaded = run.loaded
    model = loaded.model
    sections = []
    summary = model.describe(loaded.input_shape)
    sections.append(("Model", f"<p>{summary.total_params:,} parameters, "
                     f"{summary.total_macs:,} multiply-adds per image, input "
                     f"{'x'.join(map(str, loaded.input_shape))} (C x H x W)</p>"
                     + _wide(summary_table(summary)) + sharing_table(summary)))
    try:
        records = read_metrics(run.folder) if run.folder else []
    except (OSError, ValueError):
        records = []
    if records:
        sections.append(("Training curves", _img(curves_figure(records), "training curves")))
    if conv_layers(model):
        first = conv_layers(model)[0]
        sections.append((f"Filters of {first.name}", _img(filters_figure(model), "filters")))
    if validation is None:
        reason = run.validation_error or "no validation images were given"
        sections.append(("Validation images", f'<p class="note">Not shown: {html.escape(reason)}'
                         "</p>"))
        return sections
    names = loaded.class_names
    if validation.has_masks:
        sections += _segmentation_sections(loaded, validation, samples)
        return sections
    probabilities = class_probabilities(model, loaded.preprocess, validation.images)
    predicted = probabilities.argmax(axis=1)
    picks = _varied_samples(validation.labels, samples)
    maps = []
    for index in picks:
        image = validation.images[index]
        title = (f"validation image {index}: true {names[validation.labels[index]]}, predicted "
                 f"{names[predicted[index]]} ({probabilities[index, predicted[index]]:.0%})")
        fig = activations_figure(model, loaded.preprocess(image[None]), image, title=title,
                                 class_names=names)
        maps.append(_img(fig, title))
    sections.append(("Activation maps", "".join(maps)))
    from convnet.training.metrics import confusion_matrix

    matrix = confusion_matrix(validation.labels, predicted, len(names))
    sections.append(("Confusion matrix (validation split)",
                     _img(confusion_figure(matrix, names), "confusion matrix")))
    worst = worst_mistakes(probabilities, validation.labels, mistakes)
    sections.append(("Worst mistakes (validation split)",
                     _img(mistakes_figure(validation.images, worst, names), "worst mistakes")))
    return sections


def _segmentation_sections(loaded, validation, samples: int) -> list[tuple[str, str]]:
    """Validation images with their true and predicted masks, and the per-class IoU bars."""
    from convnet.training.metrics import SegmentationEvaluation, confusion_matrix
    from convnet.viz.segmentation import (
        iou_figure,
        predict_masks,
        segmentation_figure,
        varied_samples,
    )

    names = loaded.class_names
    ignore = validation.ignore_label
    predicted = predict_masks(loaded.model, loaded.preprocess, validation.images)
    confusion = confusion_matrix(validation.labels, predicted, len(names), ignore)
    result = SegmentationEvaluation(float("nan"), confusion, list(names),
                                    images=len(validation))
    picks = varied_samples(validation.labels, max(samples, 4))
    titles = [f"val {i}" for i in picks]
    fig = segmentation_figure(validation.images[picks], validation.labels[picks],
                              predicted[picks], names, ignore, titles)
    rows = [(name, "n/a" if np.isnan(iou) else f"{iou:.4f}",
             "n/a" if np.isnan(acc) else f"{acc:.2%}", f"{int(n):,}")
            for name, iou, acc, n in zip(names, result.per_class_iou, result.per_class_accuracy,
                                         confusion.sum(axis=1), strict=True)]
    summary = (f"<p>mean IoU <b>{result.mean_iou:.4f}</b>, pixel accuracy "
               f"<b>{result.accuracy:.2%}</b> on {result.count:,} pixels of {len(validation):,} "
               f"validation images (weights of {html.escape(str(loaded.path))})</p>")
    return [
        ("Segmentation (validation)", _img(fig, "input, true mask, predicted mask, overlay")),
        ("IoU per class (validation)",
         summary + _img(iou_figure(result.per_class_iou, names, result.mean_iou), "IoU bars")
         + _table(("class", "IoU", "pixel accuracy", "pixels"), rows, numeric=(1, 2, 3))),
    ]


def _varied_samples(labels, count: int) -> list[int]:
    """The first image of as many different classes as possible."""
    picks, seen = [], set()
    for index, label in enumerate(np.asarray(labels).tolist()):
        if label not in seen:
            picks.append(index)
            seen.add(label)
        if len(picks) == count:
            break
    return picks


def render_report(run, validation=None, *, samples: int = 3, mistakes: int = 16) -> str:
    """The report's HTML text for a `convnet.viz.run.Run` (validation defaults to its own)."""
    if validation is None:
        validation = run.validation()
    loaded = run.loaded
    config = loaded.config
    title = f"convnet report: {run.folder.name if run.folder else loaded.path}"
    from convnet.viz.run import accuracy_story

    story = accuracy_story(run.folder, loaded.path)
    facts = []
    try:
        from convnet.viz.curves import read_metrics

        records = read_metrics(run.folder) if run.folder else []
    except (OSError, ValueError):
        records = []
    if story["test"]:
        test = story["test"]
        facts.append((f"held-out {test.get('split', 'test')} accuracy",
                      f"{test['accuracy']:.2%}",
                      f"{test.get('count', 0):,} {test.get('dataset', '')} images, "
                      f"{test.get('checkpoint', 'best')} checkpoint"))
    if story["best"]:
        best = story["best"]
        facts.append(("best validation accuracy", f"{best['accuracy']:.2%}",
                      f"epoch {best['epoch']}, best checkpoint"))
    if records:
        last = records[-1]
        ious = [r["val_mean_iou"] for r in records if r.get("val_mean_iou") is not None]
        if ious:
            facts.append(("best validation mean IoU", f"{max(ious):.4f}", "best checkpoint"))
        facts += [("epochs", str(last.get("epoch", len(records))), ""),
                  ("last val loss", f"{last.get('val_loss', float('nan')):.4f}",
                   f"epoch {last.get('epoch')}, last checkpoint"),
                  ("images/s", f"{last.get('images_per_s', 0):.0f}", "training")]
    kpis = "".join(f'<span class="kpi">{html.escape(k)}<br><b>{html.escape(v)}</b>'
                   + (f'<br><small>{html.escape(note)}</small>' if note else "") + "</span>"
                   for k, v, note in facts)
    shown = story["checkpoint"]
    epoch = story["checkpoint_epoch"]
    weights = (f"the {shown} checkpoint" + (f" (epoch {epoch})" if epoch is not None else "")
               if shown else f"checkpoint {loaded.path}")
    settings = config.get("train") or {}
    setting_rows = [(k, json.dumps(v)) for k, v in settings.items()]
    if "augmentation" in config:
        setting_rows.append(("augmentation (as applied)", json.dumps(config["augmentation"])))
    head = (f"<h1>{html.escape(title)}</h1><p class='note'>model "
            f"{html.escape(str(config.get('model_name', '')))} on "
            f"{html.escape(str(config.get('dataset', '')))}; the pictures and the confusion "
            f"matrix below use {html.escape(weights)}; written "
            f"{datetime.datetime.now().isoformat(timespec='seconds')}</p>{kpis}")
    if story["lines"]:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in story["lines"])
        split_note = (f"<p class='note'>The validation split: "
                      f"{html.escape(story['validation'])}; it picks the best checkpoint, so "
                      f"only a held-out test split measures it without bias.</p>"
                      if story["validation"] else "")
        head += f"<h2>Which accuracy is which</h2><ul>{items}</ul>{split_note}"
    parts = [head]
    if setting_rows:
        parts.append("<h2>Training settings</h2>" + _table(("setting", "value"), setting_rows))
    for heading, body in _sections(run, validation, samples, mistakes):
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title><meta name='viewport' content='width=device-width, "
            f"initial-scale=1'><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def write_report(run_folder, out=None, *, validation=None, samples: int = 3,
                 mistakes: int = 16, which: str = "best") -> Path:
    """Write report.html into the run folder (or to `out`); returns its path.

    validation: a Dataset of held-out images (default: the run's own split, read again).
    """
    from convnet.viz.run import open_run

    run = open_run(run_folder, which)
    text = render_report(run, validation, samples=samples, mistakes=mistakes)
    path = Path(out) if out is not None else (run.folder or Path(run_folder).parent) / REPORT
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)  # a page to share, unlike the private temporary file

    atomic_write(path, write)
    return path


class ReportCallback:
    """Trainer callback: write report.html into the run folder when training ends.

        Trainer(config, out_dir, callbacks=[ReportCallback()]).fit()

    A report that cannot be written is logged, never an error: the run itself succeeded.
    """

    def __init__(self, samples: int = 3, mistakes: int = 16):
        self.samples = samples
        self.mistakes = mistakes

    def on_end(self, trainer, record) -> None:
        if not getattr(trainer.group, "is_root", True):
            return
        try:
            path = write_report(trainer.out_dir, validation=getattr(trainer, "val_set", None),
                                samples=self.samples, mistakes=self.mistakes)
        except Exception as error:  # noqa: BLE001 - the run is saved; the report is a bonus
            trainer.log(f"report not written: {type(error).__name__}: {error}")
            return
        trainer.log(f"report: {path}")

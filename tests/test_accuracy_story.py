"""One accuracy story: which split and which checkpoint every accuracy belongs to, in the CLI,
the report and the run folder; `train --help` tells the truth about augmentation and the run's
config records what was applied."""

from __future__ import annotations

import json

import pytest
from test_web_support import make_run

from convnet.cli import build_parser, main
from convnet.io.checkpoint import checkpoint_state, read_evaluation, which_checkpoint
from convnet.viz.run import accuracy_story


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("story"))


def test_train_help_says_augmentation_is_on_by_default():
    parser = build_parser()
    train = next(a for a in parser._actions if a.dest == "command").choices["train"]
    text = " ".join(train.format_help().split())
    assert "[default: on, with the dataset's settings: 2-pixel shifts for mnist and mnist-5k" \
        in text
    assert "cifar10 only" not in text


def test_the_config_records_the_augmentation_applied(run_folder):
    config = json.loads((run_folder / "config.json").read_text())
    assert config["train"]["augment"] is None  # what was asked: the default
    assert config["augmentation"] == {"crop_padding": 2, "hflip": False}  # what was applied


def test_the_story_names_split_checkpoint_and_epoch(run_folder):
    records = [json.loads(line) for line in (run_folder / "metrics.jsonl").read_text()
               .splitlines()]
    best = max(records, key=lambda r: r["val_accuracy"])
    story = accuracy_story(run_folder, run_folder / "checkpoints" / "best.safetensors")
    assert story["best"] == {"split": "validation", "accuracy": best["val_accuracy"],
                             "epoch": best["epoch"], "checkpoint": "best"}
    assert story["last"]["epoch"] == records[-1]["epoch"] == 3
    assert story["checkpoint"] == "best"
    assert story["checkpoint_epoch"] == best["epoch"]  # the best checkpoint is that epoch's
    assert story["test"] is None
    assert story["validation"].startswith("25% of the ")
    assert story["lines"][0] == (f"best validation accuracy {best['val_accuracy']:.2%} at "
                                 f"epoch {best['epoch']} (checkpoints/best.safetensors)")
    assert which_checkpoint(run_folder / "checkpoints" / "last.safetensors") == "last"
    assert checkpoint_state(run_folder / "checkpoints" / "last.safetensors")["epoch"] == 3


def test_evaluate_says_which_checkpoint(run_folder, capsys):
    assert main(["evaluate", str(run_folder), "--checkpoint", "last", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["checkpoint"] == "last" and data["epoch"] == 3 and data["split"] == "test"
    assert main(["evaluate", str(run_folder)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "(test split), the best checkpoint (epoch " in first


def test_demo_records_the_held_out_accuracy_for_the_report(tmp_path, capsys, monkeypatch):
    from convnet import data

    real = data.load_dataset

    def fewer(name, split="train", *args, **kwargs):  # the demo's path, on fewer digits
        full = real(name, split, *args, **kwargs)
        keep = 600 if split == "train" else 1000
        return data.Dataset(full.images[:keep], full.labels[:keep], full.class_names,
                            full.name, full.split, full.notes)

    monkeypatch.setattr(data, "load_dataset", fewer)
    from convnet.viz import report as report_module

    # The report's pictures take matplotlib 10-40 s here; its head is what this test reads.
    monkeypatch.setattr(report_module, "_sections", lambda *args: [])
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    evaluation = read_evaluation(out)
    assert evaluation["split"] == "test" and evaluation["dataset"] == "mnist-5k"
    assert evaluation["count"] == 1000 and evaluation["checkpoint"] == "best"
    assert evaluation["epoch"] == 1
    shown = f"held-out test accuracy: {evaluation['accuracy']:.2%} on 1,000 digits"
    assert shown in printed
    report = (out / "report.html").read_text()
    assert f"{evaluation['accuracy']:.2%}" in report
    assert "held-out test accuracy" in report and "Which accuracy is which" in report
    assert "the pictures and the confusion matrix below use the best checkpoint (epoch 1)" \
        in report
    assert "<meta name='viewport'" in report  # readable at phone width

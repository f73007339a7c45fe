"""The trainer's learning-rate hook (Trainer.set_lr): a change from another thread takes effect
at the next step as the schedule's new base rate, is logged, and a resumed run keeps it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from tiny_data import StopAt, make_angles_folder, three_class_model

from convnet.io import checkpoint
from convnet.training.trainer import LossDiverged, TrainConfig, Trainer, TrainingError


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("lr")
    make_angles_folder(root / "images", per_class=16, size=12, offsets=(2, 10))
    (root / "tiny.toml").write_text(three_class_model())
    return root


def config(workspace, **overrides):
    settings = {"model": str(workspace / "tiny.toml"), "dataset": str(workspace / "images"),
                "epochs": 2, "batch_size": 8, "lr": 0.05, "seed": 1, "val_fraction": 0.25,
                "schedule": "constant"}
    settings.update(overrides)
    return TrainConfig(**settings)


class SetLrAt:
    """Asks for a new learning rate after step `step`, as the page does from another thread."""

    def __init__(self, step, lr):
        self.step, self.lr, self.seen = step, lr, []

    def on_batch(self, trainer, stats):
        self.seen.append((stats["step"], stats["lr"]))
        if stats["step"] == self.step:
            trainer.set_lr(self.lr)


def test_a_new_rate_applies_from_the_next_step_and_is_logged(workspace, tmp_path):
    logged = []
    hook = SetLrAt(3, 0.01)
    Trainer(config(workspace), tmp_path / "run", progress=False, callbacks=[hook],
            log=logged.append).fit()
    rates = dict(hook.seen)
    assert rates[3] == pytest.approx(0.05) and rates[4] == pytest.approx(0.01)
    assert rates[max(rates)] == pytest.approx(0.01)
    assert any(line.startswith("learning rate set to 0.01 before step 4") for line in logged)
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text()
               .splitlines()]
    assert records[-1]["lr"] == pytest.approx(0.01)


def test_the_schedule_goes_on_from_the_new_base(workspace, tmp_path):
    hook = SetLrAt(2, 0.2)
    trainer = Trainer(config(workspace, schedule="cosine", warmup_epochs=0.5),
                      tmp_path / "run", progress=False, callbacks=[hook], log=lambda _: None)
    trainer.fit()
    total = trainer.total_steps
    warmup = round(0.5 * trainer.steps_per_epoch)
    rates = dict(hook.seen)  # the rate after each step: the next step's
    after = 2  # steps into the cosine phase, which goes on from the new base
    expected = 0.2 * (1 + math.cos(math.pi * after / (total - warmup))) / 2
    assert rates[warmup + after] == pytest.approx(expected)


def test_a_resumed_run_keeps_the_changed_rate(workspace, tmp_path):
    Trainer(config(workspace, warmup_epochs=0.5), tmp_path / "whole", progress=False,
            callbacks=[SetLrAt(2, 0.01)], log=lambda _: None).fit()
    Trainer(config(workspace, warmup_epochs=0.5), tmp_path / "split", progress=False,
            callbacks=[SetLrAt(2, 0.01), StopAt(5)], log=lambda _: None).fit()
    Trainer(config(workspace, warmup_epochs=0.5), tmp_path / "split", resume=True,
            progress=False, log=lambda _: None).fit()
    whole = checkpoint.read_checkpoint(tmp_path / "whole/checkpoints/last.safetensors")[0]
    split = checkpoint.read_checkpoint(tmp_path / "split/checkpoints/last.safetensors")[0]
    for key in whole:
        np.testing.assert_array_equal(whole[key], split[key], err_msg=key)


@pytest.mark.parametrize("bad", [0, -1, 11, float("nan"), "0.1", True])
def test_a_bad_rate_is_refused(workspace, tmp_path, bad):
    trainer = Trainer(config(workspace), tmp_path / "run", progress=False)
    with pytest.raises(TrainingError, match="learning rate must be a number in"):
        trainer.set_lr(bad)


# Validation may overflow before the next step finds the loss non-finite: warnings, not errors.
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverging_run_raises_loss_diverged(workspace, tmp_path):
    trainer = Trainer(config(workspace, lr=1e6, schedule="constant", epochs=3),
                      tmp_path / "run", progress=False, log=lambda _: None)
    with pytest.raises(LossDiverged, match="the loss became"):
        trainer.fit()

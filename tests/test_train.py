"""Training runs: reproducible, resumable exactly, safe on interruption and divergence."""

import json
import os
import signal

import numpy as np
import pytest
from tiny_data import StopAt, make_angles_folder, three_class_model

from convnet import manual_seed
from convnet.cli import main
from convnet.io import checkpoint, modelfile, zoo
from convnet.training.trainer import TrainConfig, Trainer, TrainingError

MODEL = three_class_model(dropout=0.2)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A three-class folder of 16x16 grey images (bars at three angles) and a tiny model."""
    root = tmp_path_factory.mktemp("train")
    make_angles_folder(root / "images", per_class=24, size=16, offsets=(3, 13))
    (root / "tiny.toml").write_text(MODEL)
    return root


def config(workspace, **overrides):
    settings = {"model": str(workspace / "tiny.toml"), "dataset": str(workspace / "images"),
                "epochs": 3, "batch_size": 8, "lr": 0.05, "seed": 3, "val_fraction": 0.25,
                "warmup_epochs": 0.5}
    settings.update(overrides)
    return TrainConfig(**settings)


def weights(folder, which="last"):
    arrays, _, _, _ = checkpoint.read_checkpoint(folder / "checkpoints" / f"{which}.safetensors")
    return arrays


def test_training_learns_and_writes_a_complete_run_folder(workspace, tmp_path):
    summary = Trainer(config(workspace, epochs=6), tmp_path / "run", progress=False,
                      log=lambda _: None).fit()
    assert summary["epochs_done"] == 6 and not summary["stopped"]
    records = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text()
               .splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert summary["best_val_accuracy"] >= 0.8
    saved = json.loads((tmp_path / "run/config.json").read_text())
    assert saved["class_names"] == ["diagonal", "horizontal", "vertical"]
    assert len(saved["normalization"]["mean"]) == 1
    loaded = checkpoint.load(tmp_path / "run")
    assert loaded.input_shape == (1, 12, 12)


def test_fit_hands_back_the_memory_its_steps_freed(workspace, tmp_path, monkeypatch):
    """malloc keeps what a step frees for the next (`backend.keep_freed_memory`); fit gives
    it back when it returns, and also when it fails."""
    from convnet.training import trainer as trainer_module

    trims = []
    monkeypatch.setattr(trainer_module, "return_freed_memory", lambda: trims.append(1))
    Trainer(config(workspace, epochs=1), tmp_path / "run", progress=False,
            log=lambda _: None).fit()
    assert trims == [1]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError):
        Trainer(config(workspace), tmp_path / "taken", progress=False).fit()
    assert trims == [1, 1]


def test_same_seed_same_weights(workspace, tmp_path):
    for name in ("a", "b"):
        Trainer(config(workspace), tmp_path / name, progress=False, log=lambda _: None).fit()
    for key, value in weights(tmp_path / "a").items():
        np.testing.assert_array_equal(value, weights(tmp_path / "b")[key])


@pytest.mark.parametrize("stop_step", [5, 9])  # mid-epoch and exactly at an epoch's end
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(workspace, tmp_path,
                                                                   stop_step):
    Trainer(config(workspace), tmp_path / "whole", progress=False, log=lambda _: None).fit()
    first = Trainer(config(workspace), tmp_path / "split", progress=False,
                    callbacks=[StopAt(stop_step)], log=lambda _: None).fit()
    assert first["stopped"]
    Trainer(config(workspace), tmp_path / "split", resume=True, progress=False,
            log=lambda _: None).fit()
    whole, split = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert whole.keys() == split.keys()
    for key in whole:
        np.testing.assert_array_equal(whole[key], split[key], err_msg=key)
    epochs = [json.loads(line)["epoch"] for line in
              (tmp_path / "split/metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]


def test_an_existing_run_is_never_overwritten(workspace, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match="already holds files; pass --resume"):
        Trainer(config(workspace), tmp_path / "run", progress=False).fit()
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_divergence_stops_with_a_message_and_keeps_the_last_good_checkpoint(workspace,
                                                                            tmp_path):
    trainer = Trainer(config(workspace, epochs=2), tmp_path / "run", progress=False,
                      log=lambda _: None)
    trainer.fit()
    good = weights(tmp_path / "run")
    trainer = Trainer(config(workspace, epochs=4), tmp_path / "run", resume=True,
                      progress=False, log=lambda _: None)
    with pytest.raises(TrainingError, match="the loss became (nan|inf).*last good checkpoint"):
        _resume_with_lr(trainer, 1e30)
    for key, value in weights(tmp_path / "run").items():
        np.testing.assert_array_equal(value, good[key])


def _resume_with_lr(trainer, lr):
    """Resume, then force a learning rate that makes the loss overflow."""

    class Explode:
        def on_start(self, t):
            t.optimizer.lr = lr
            t.scheduler.lr_at = lambda step: lr

    trainer.callbacks.append(Explode())
    trainer.fit()


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(workspace, tmp_path, capsys):
    class Interrupt:
        def on_batch(self, trainer, stats):
            if stats["step"] == 4:
                os.kill(os.getpid(), signal.SIGINT)

    trainer = Trainer(config(workspace), tmp_path / "run", progress=False, callbacks=[Interrupt()])
    summary = trainer.fit()
    assert summary["stopped"]
    _, _, state, _ = checkpoint.read_checkpoint(tmp_path / "run/checkpoints/last.safetensors")
    assert state["global_step"] == 4
    assert "convnet train --resume" in capsys.readouterr().err


def test_cli_train_evaluate_predict(workspace, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", str(workspace / "tiny.toml"), "--dataset",
                 str(workspace / "images"), "--epochs", "4", "--batch-size", "8", "--out",
                 str(out), "--no-progress", "--val-fraction", "0.25"])
    assert code == 0
    assert f"run folder: {out}" in capsys.readouterr().out
    code = main(["evaluate", str(out), "--split", "train", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["count"] == 72
    assert sum(map(sum, result["confusion"])) == 72
    image = next((workspace / "images" / "vertical").iterdir())
    code = main(["predict", str(out), str(image), "--top-k", "2", "--json"])
    prediction = json.loads(capsys.readouterr().out)[0]
    assert code == 0 and len(prediction["top"]) == 2
    assert prediction["top"][0]["probability"] >= prediction["top"][1]["probability"]
    code = main(["train", "--resume", str(out), "--lr", "0.1"])
    assert code == 1
    assert "only --epochs may change" in capsys.readouterr().err


def test_cli_reports_bad_inputs_without_tracebacks(workspace, tmp_path, capsys):
    not_image = tmp_path / "x.png"
    not_image.write_text("hello")
    cases = [
        (["train", "--model", "lenet6", "--out", str(tmp_path / "a")], "unknown model"),
        (["train", "--dataset", "imagenet", "--out", str(tmp_path / "b")], "imagenet"),
        (["evaluate", str(tmp_path / "missing")], "does not exist"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith("convnet: error:") and fragment in err, err
    out = tmp_path / "run"
    main(["train", "--model", str(workspace / "tiny.toml"), "--dataset",
          str(workspace / "images"), "--epochs", "1", "--batch-size", "8", "--out", str(out),
          "--no-progress"])
    capsys.readouterr()
    assert main(["predict", str(out), str(not_image)]) == 1
    assert "x.png" in capsys.readouterr().err


def test_cli_refuses_unwritable_output_truncated_checkpoints_and_bad_model_files(
        workspace, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    argv = ["train", "--model", str(workspace / "tiny.toml"), "--dataset",
            str(workspace / "images"), "--epochs", "1", "--batch-size", "8", "--no-progress"]
    assert main([*argv, "--out", str(blocker / "run")]) == 1
    assert "cannot write to" in capsys.readouterr().err
    assert blocker.read_text() == "not a folder"

    out = tmp_path / "run"
    assert main([*argv, "--out", str(out)]) == 0
    best = out / "checkpoints" / "best.safetensors"
    best.write_bytes(best.read_bytes()[:100])
    capsys.readouterr()
    assert main(["evaluate", str(out)]) == 1
    assert "truncated or corrupt" in capsys.readouterr().err

    bad_model = tmp_path / "bad.toml"
    bad_model.write_text(MODEL.replace("kernel_size = 2", "kernel_size = 5"))
    assert main([*argv[:1], "--model", str(bad_model), *argv[3:], "--out",
                 str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert f"{bad_model}:12: layer 3 (maxpool)" in err  # the line of its [[layers]]
    assert "not an integer" in err


def test_a_zoo_model_gets_a_classifier_sized_for_the_dataset(workspace, tmp_path):
    summary = Trainer(config(workspace, model="convnetjs-mnist", epochs=1), tmp_path / "run",
                      progress=False, log=lambda _: None).fit()
    assert summary["epochs_done"] == 1
    loaded = checkpoint.load(tmp_path / "run")
    assert loaded.model.output_shape(loaded.input_shape) == (3,)


@pytest.mark.parametrize("model", ["tiny.toml", "convnetjs-mnist"])
def test_a_run_starts_from_the_weights_built_right_after_seeding(workspace, tmp_path, model):
    # Reading a model file builds it once (to validate it), drawing from the shared generator:
    # that happens after the seed, as `manual_seed(seed); modelfile.load(path)` does, so a seed
    # gives a model file the initial weights it always gave.
    name = str(workspace / model) if model.endswith(".toml") else model
    trainer = Trainer(config(workspace, model=name), tmp_path / "run", progress=False,
                      log=lambda _: None)
    trainer.setup()
    manual_seed(3)
    expected = modelfile.load(name) if model.endswith(".toml") else \
        zoo.build_model(name, num_classes=3)
    for key, value in expected.state_dict().items():
        np.testing.assert_array_equal(trainer.model.state_dict()[key], value)

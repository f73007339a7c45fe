"""A run folder is one run's, and nothing is lost when a run dies: two trainings into one folder
(real processes), kill -9 between the two checkpoints, a run killed in its first epoch, a torn
metrics line, SIGTERM, and the stale temporary files a killed writer leaves."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_data import make_angles_folder, three_class_model

from convnet.io import checkpoint
from convnet.io.runlock import LOCK, claim, fresh_folder
from convnet.training.trainer import TrainConfig, Trainer, TrainingError

TREE = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    make_angles_folder(root / "images", per_class=24, size=16, offsets=(3, 13))
    (root / "tiny.toml").write_text(three_class_model())
    (root / "wide.toml").write_text(three_class_model().replace("out_channels = 4",
                                                                "out_channels = 6"))
    return root


def environment() -> dict:
    return {**os.environ, "PYTHONPATH": f"{TREE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def convnet(*argv, cwd=None, **options) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "convnet", *map(str, argv)], cwd=cwd,
                            env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **options)


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of a process started by convnet()."""
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def train_args(workspace, model="tiny.toml", epochs=3, batch_size=8):
    return ["train", "--model", workspace / model, "--dataset", workspace / "images", "--epochs",
            epochs, "--batch-size", batch_size, "--val-fraction", "0.25", "--no-progress"]


# -- 1. one folder, one run ---------------------------------------------------------------------

def test_two_trainings_into_one_folder_the_second_is_refused(tmp_path):
    # The repro: two zoo models on the embedded digits, started together. Reading the
    # digits takes about half a second, the window in which both used to find the folder empty.
    out = tmp_path / "same"
    common = ["train", "--dataset", "mnist-5k", "--epochs", 1, "--val-fraction", 0.9,
              "--batch-size", 128, "--no-progress", "--out", out]
    first = convnet(*common, "--model", "lenet5", "--seed", 1)
    second = convnet(*common, "--model", "convnetjs-mnist", "--seed", 2)
    results = [finish(p)[::2] for p in (first, second)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    err = next(err for code, err in results if code == 1)
    assert "Traceback" not in err
    assert err.strip().endswith("choose another --out"), err
    assert "being written by another training" in err or "already holds files" in err
    # The folder is the winner's alone: its config, its checkpoints.
    winner = "lenet5" if results[0][0] == 0 else "convnetjs-mnist"
    assert checkpoint.run_config(out)["model_name"] == winner
    checkpoint.load(out)  # the weights fit the config's model


def test_the_lock_names_its_holder_and_dies_with_it(workspace, tmp_path):
    out = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from convnet.io.runlock import claim; "
         f"lock = claim({str(out)!r}, new=True); print('held', flush=True); time.sleep(60)"],
        env=environment(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        trainer = Trainer(TrainConfig(model=str(workspace / "tiny.toml"),
                                      dataset=str(workspace / "images")), out, progress=False)
        with pytest.raises(TrainingError, match=rf"being written by another training "
                                                rf"\(pid {holder.pid} on "):
            trainer.fit()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.communicate(timeout=10)
    # A killed holder leaves no stale lock: the folder (empty but for .lock) is free again.
    with claim(out, new=True) as lock:
        assert lock.held
    assert list(out.iterdir()) == []  # never written into: left as it was found


def test_runs_started_in_the_same_second_get_their_own_folders(workspace, tmp_path):
    base = tmp_path / "runs" / "tiny-images-20260101-000000"
    assert fresh_folder(base) == base and fresh_folder(base) == base.with_name(base.name + "-2")
    # Two real trainings without --out, started together in one working folder.
    procs = [convnet(*train_args(workspace, epochs=1), cwd=tmp_path) for _ in range(2)]
    outputs = [finish(p) for p in procs]
    assert [code for code, _, _ in outputs] == [0, 0], outputs
    folders = {out.splitlines()[0].removeprefix("run folder: ") for _, out, _ in outputs}
    assert len(folders) == 2
    for folder in folders:
        assert json.loads((tmp_path / folder / "metrics.jsonl").read_text())["epoch"] == 1


def test_resuming_a_run_that_is_training_is_refused(workspace, tmp_path):
    out = tmp_path / "run"
    Trainer(TrainConfig(model=str(workspace / "tiny.toml"), dataset=str(workspace / "images"),
                        epochs=1, batch_size=8), out, progress=False, log=lambda _: None).fit()
    with claim(out, new=False):
        trainer = Trainer(TrainConfig(epochs=2), out, resume=True, progress=False)
        with pytest.raises(TrainingError, match="being written by another training"):
            trainer.fit()
    assert (out / LOCK).read_text() == ""  # released, with no holder named


# -- 2. a consistent checkpoint pair ------------------------------------------------------------

KILL_AFTER_FIRST_SAVE_OF_EPOCH_2 = """
import os, signal, sys
from convnet.cli import main
from convnet.training import trainer

save = trainer.save_checkpoint

def save_then_die(path, model, state, optimizer=None):
    save(path, model, state, optimizer)
    if state["epoch"] == 2:  # epoch 2 improves: both checkpoints are due, one is written
        os.kill(os.getpid(), signal.SIGKILL)

trainer.save_checkpoint = save_then_die
sys.exit(main(sys.argv[1:]))
"""


def validation_accuracy(folder: Path, which: str) -> float:
    """What the weights in checkpoints/WHICH score on the run's own validation images."""
    from convnet.viz.run import validation_set

    loaded = checkpoint.load(folder, which)
    val = validation_set(loaded.config, loaded.input_shape)
    return float((loaded.scores(val.images).argmax(axis=1) == val.labels).mean())


def test_kill_9_between_the_two_checkpoints_keeps_them_consistent(workspace, tmp_path):
    out = tmp_path / "run"
    argv = [*train_args(workspace, epochs=3), "--seed", 3, "--lr", 0.05, "--out", out]
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_FIRST_SAVE_OF_EPOCH_2,
                             *map(str, argv)], env=environment(), capture_output=True, text=True,
                            timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    last = checkpoint.checkpoint_state(out / "checkpoints" / "last.safetensors")
    best = checkpoint.checkpoint_state(out / "checkpoints" / "best.safetensors")
    # Whichever file the kill spared, `last` claims no better model than `best` holds.
    assert last["best_val_accuracy"] <= best["best_val_accuracy"]
    assert validation_accuracy(out, "best") == best["best_val_accuracy"]
    stale = out / "checkpoints" / ".last.safetensors.k1ll3d.tmp"  # what a kill mid-write leaves
    stale.write_bytes(b"half a checkpoint")
    resumed = subprocess.run([sys.executable, "-m", "convnet", "train", "--resume", str(out),
                              "--no-progress"], env=environment(), capture_output=True,
                             text=True, timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stderr
    reported = float(resumed.stdout.split("best validation accuracy: ")[1].split("%")[0]) / 100
    assert reported == pytest.approx(validation_accuracy(out, "best"), abs=1e-4)
    assert not stale.exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "best.safetensors", "last.safetensors"]


def test_a_pair_left_inconsistent_by_an_earlier_version_is_mended_on_resume(workspace,
                                                                             tmp_path):
    out, first_best = tmp_path / "run", tmp_path / "epoch-1-best.safetensors"

    class KeepFirstBest:
        def on_epoch_end(self, trainer, record):
            if record["epoch"] == 1:
                shutil.copy(out / "checkpoints" / "best.safetensors", first_best)

    config = TrainConfig(model=str(workspace / "tiny.toml"), dataset=str(workspace / "images"),
                         epochs=3, batch_size=8, seed=3, val_fraction=0.25)
    summary = Trainer(config, out, progress=False, callbacks=[KeepFirstBest()],
                      log=lambda _: None).fit()
    assert summary["best_val_accuracy"] == 1.0
    # What a kill between `last` and `best` left with the earlier order: epoch 2's 100% is
    # recorded in `last`, but `best` still holds epoch 1's model.
    shutil.copy(first_best, out / "checkpoints" / "best.safetensors")
    notes = []
    # The Python API's resume: only epochs is taken from the config given, the rest is the
    # run's own (the batch size and seed were once the defaults' here: 1 step an epoch).
    trainer = Trainer(TrainConfig(epochs=4), out, resume=True, progress=False, log=notes.append)
    summary = trainer.fit()
    assert trainer.steps_per_epoch == 7 and trainer.config.seed == 3
    assert any("validation accuracy, not the 100.00% the last "
               "checkpoint records" in note for note in notes), notes
    assert summary["best_val_accuracy"] == validation_accuracy(out, "best") == 1.0

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
import time
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


# -- 4. no dead ends after a crash --------------------------------------------------------------

KILL_AT_STEP_3 = """
import os, signal, sys
from convnet.cli import main
from convnet.training import trainer

step = trainer.Trainer._step

def step_then_die(self, x, y):
    if self.global_step == 3:  # in the first epoch, before any epoch's checkpoint
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, x, y)

trainer.Trainer._step = step_then_die
sys.exit(main(sys.argv[1:]))
"""


def weights(folder: Path, which: str = "last") -> dict:
    return checkpoint.read_checkpoint(folder / "checkpoints" / f"{which}.safetensors")[0]


def test_a_run_killed_in_its_first_epoch_resumes_exactly(workspace, tmp_path):
    argv = [*train_args(workspace, epochs=2), "--seed", 3]
    killed = subprocess.run([sys.executable, "-c", KILL_AT_STEP_3, *map(str, argv), "--out",
                             str(tmp_path / "killed")], env=environment(), capture_output=True,
                            text=True, timeout=120, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = subprocess.run([sys.executable, "-m", "convnet", "train", "--resume",
                              str(tmp_path / "killed"), "--no-progress"], env=environment(),
                             capture_output=True, text=True, timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "at epoch 1, batch 1 of 7" in resumed.stderr
    whole = subprocess.run([sys.executable, "-m", "convnet", *map(str, argv), "--out",
                            str(tmp_path / "whole")], env=environment(), capture_output=True,
                           text=True, timeout=120, check=False)
    assert whole.returncode == 0, whole.stderr
    expected, received = weights(tmp_path / "whole"), weights(tmp_path / "killed")
    for key in expected:
        assert (expected[key] == received[key]).all(), key


def test_a_folder_without_any_checkpoint_starts_again(workspace, tmp_path):
    # What earlier versions left when killed in the first epoch: a config and nothing else.
    out = tmp_path / "run"
    config = TrainConfig(model=str(workspace / "tiny.toml"), dataset=str(workspace / "images"),
                         epochs=1, batch_size=8, seed=3, val_fraction=0.25)
    Trainer(config, out, progress=False, log=lambda _: None).fit()
    for path in (out / "checkpoints").iterdir():
        path.unlink()
    (out / "metrics.jsonl").unlink()
    notes = []
    summary = Trainer(TrainConfig(epochs=1), out, resume=True, progress=False,
                      log=notes.append).fit()
    assert summary["epochs_done"] == 1
    assert any("has no checkpoint yet" in note and "starting it again from the beginning" in
               note for note in notes), notes


def test_a_torn_last_metrics_line_is_dropped_with_a_note(workspace, tmp_path):
    out = tmp_path / "run"
    code, _, err = finish(convnet(*train_args(workspace, epochs=1), "--out", out))
    assert code == 0, err
    with open(out / "metrics.jsonl", "a") as stream:
        stream.write('{"epoch": 2, "step": 14, "train_lo')  # a kill in the middle of a write
    code, out_text, err = finish(convnet("train", "--resume", out, "--epochs", 2, "--no-progress"))
    assert code == 0, err
    assert "metrics.jsonl:2: the last line is cut short; dropped" in err
    epochs = [json.loads(line)["epoch"] for line in
              (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    # A bad line in the middle is not guessed at: one clear line, exit 1.
    text = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join([text[0], "garbage", text[1]]) + "\n")
    code, _, err = finish(convnet("train", "--resume", out, "--epochs", 3, "--no-progress"))
    assert code == 1 and "Traceback" not in err, err
    assert err.splitlines()[-1].startswith("convnet: error: ")
    assert err.splitlines()[-1].endswith("metrics.jsonl:2: not a JSON record ('garbage'); "
                                         "delete that line to resume")


def _hangup_as_default() -> None:
    """In the child, before convnet starts: SIGHUP back to its default action (a test run
    under nohup hands its children SIGHUP ignored, which convnet then rightly leaves alone)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_save_like_ctrl_c(workspace, tmp_path, name):
    out = tmp_path / "run"
    process = convnet(*train_args(workspace, epochs=400, batch_size=2), "--out", out,
                      preexec_fn=_hangup_as_default)
    deadline = time.monotonic() + 60
    while not (out / "config.json").exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    time.sleep(1.0)  # into the training loop
    process.send_signal(getattr(signal, name))
    code, _, err = finish(process)
    assert code == 128 + getattr(signal, name), err
    assert f"{name}: finishing this step and saving a checkpoint" in err
    assert f"stopped ({name} received)" in err and f"convnet train --resume {out}" in err
    state = checkpoint.checkpoint_state(out / "checkpoints" / "last.safetensors")
    assert 0 < state["global_step"] < 400 * 27

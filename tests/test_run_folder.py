"""A run folder is one run's, and nothing is lost when a run dies: two trainings into one folder
(real processes), kill -9 between the two checkpoints, a run killed in its first epoch, a torn
metrics line, SIGTERM, and the stale temporary files a killed writer leaves."""

from __future__ import annotations

import json
import os
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

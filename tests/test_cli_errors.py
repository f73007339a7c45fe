"""Each mistake a person can make with a file or an argument gets one clear line and exit 1,
never a traceback: issue 15's list (item 11) and the ones found next to them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from tiny_data import make_angles_folder, three_class_model

from convnet.cli import main
from convnet.io import checkpoint

TREE = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    make_angles_folder(root / "images", per_class=12, size=12, offsets=(3, 9))
    (root / "tiny.toml").write_text(three_class_model())
    return root


@pytest.fixture(scope="module")
def run(workspace):
    out = workspace / "run"
    assert main(train(workspace, "--out", out)) == 0
    return out


def train(workspace, *more):
    return ["train", "--model", str(workspace / "tiny.toml"), "--dataset",
            str(workspace / "images"), "--epochs", "1", "--batch-size", "8", "--no-progress",
            *map(str, more)]


def one_error_line(capsys, argv) -> str:
    """Run the CLI; assert exit 1 and a last stderr line 'convnet: error: ...'; return it."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("convnet: error: "), err
    return line


def copy_run(run, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(run, tmp_path / "copy"))


def test_train_out_an_existing_file(workspace, tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    line = one_error_line(capsys, train(workspace, "--out", target))
    assert line.endswith(f"{target} is a file, not a run folder; choose another --out")
    assert target.read_text() == "mine"


@pytest.mark.parametrize("text, fragment", [
    (b'input_shape = [1, 12, 12]\nname = "\xff\xfe"\n', "not a text file in UTF-8 (byte 34 is ff)"),
    (("input_shape = [1, 12, 12]\nlayers = [" + '{type = "residual", body = [' * 200 +
      '{type = "relu"}' + "]}" * 200 + "]\n").encode(),  # 200 residual blocks, one in another
     "nested too deeply for the TOML reader"),
    (b'input_shape = "abc"\n[[layers]]\ntype = "relu"\n',
     "input_shape must be [C, H, W] of positive integers (e.g. [1, 28, 28]), received 'abc'"),
    (b'input_shape = [1, 12.5, 12]\n[[layers]]\ntype = "relu"\n', "received [1, 12.5, 12]"),
])
def test_model_files_that_cannot_be_read(workspace, tmp_path, capsys, text, fragment):
    model = tmp_path / "model.toml"
    model.write_bytes(text)
    for argv in (["summary", model], train(workspace, "--out", tmp_path / "r"),
                 ["visualize", model, "filters", "-o", tmp_path / "f.png"]):
        argv = [str(model) if a == str(workspace / "tiny.toml") else a for a in argv]
        assert fragment in one_error_line(capsys, argv)


def test_resume_from_a_checkpoint_without_training_state(run, tmp_path, capsys):
    folder = copy_run(run, tmp_path)
    last = folder / "checkpoints" / "last.safetensors"
    save_file(load_file(str(last)), str(last))  # the weights alone, no state
    line = one_error_line(capsys, ["train", "--resume", folder, "--epochs", 3])
    assert "holds weights but no training state (epoch, batch_index" in line
    assert line.endswith("so there is nothing to resume; train a new run with --out")


def test_resume_with_a_damaged_training_state(run, tmp_path, capsys):
    folder = copy_run(run, tmp_path)
    last = folder / "checkpoints" / "last.safetensors"
    arrays, _, state, _ = checkpoint.read_checkpoint(last)
    tensors = load_file(str(last))
    save_file(tensors, str(last), metadata={"state": json.dumps({**state, "partial": "x"})})
    assert "its training state is damaged" in one_error_line(
        capsys, ["train", "--resume", folder, "--epochs", 3])


@pytest.mark.parametrize("edit, fragment", [
    (lambda c: c["train"].update(batch_size="8"),
     "invalid training setting batch_size: expected int, received '8'"),
    (lambda c: c["train"].update(lr=None), "invalid training setting lr: expected float"),
    (lambda c: c["train"].update(momentum=True), "invalid training setting momentum"),
    (lambda c: c["train"].update(seed=-1), "seed must be >= 0"),
    (lambda c: c.update(train=[]), "'train' must be an object of training settings"),
    (lambda c: c["model"].update(input_shape="abc"),
     "model.input_shape must be [C, H, W] of positive integers, received 'abc'"),
    (lambda c: c.update(class_names="abc"), "class_names must be a list of names"),
    (lambda c: c.update(class_names=["a"]),  # predict indexed it: IndexError
     "class_names lists 1 name(s) but the model outputs 3 scores; one name per score"),
    (lambda c: c.update(normalization={"mean": [0.5], "std": [0]}), "normalization must be"),
])
def test_a_hand_edited_config_with_a_wrong_kind(run, workspace, tmp_path, capsys, edit,
                                                fragment):
    folder = copy_run(run, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    if "one name per score" not in fragment:  # training takes the names from the data
        assert fragment in one_error_line(capsys, ["train", "--resume", folder, "--epochs", 3])
    if "train" not in fragment and "setting" not in fragment and "seed" not in fragment:
        assert fragment in one_error_line(capsys, ["evaluate", folder])
        image = next((workspace / "images" / "vertical").iterdir())
        assert fragment in one_error_line(capsys, ["predict", folder, image])


@pytest.mark.skipif(not hasattr(os, "setrlimit") and sys.platform != "linux", reason="POSIX")
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(run, tmp_path):
    # A real write failure: the process may write no file larger than 4,000 bytes (RLIMIT_FSIZE;
    # a checkpoint with its momentum is 4,904), as a full disk refuses a write.
    folder = copy_run(run, tmp_path)
    before = (folder / "checkpoints" / "last.safetensors").read_bytes()
    script = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
              "resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000)); "
              "from convnet.cli import main; sys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", script, "train", "--resume", str(folder),
                             "--epochs", "2", "--no-progress"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(TREE)}, timeout=120,
                            check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith(f"convnet: error: cannot save {folder}/checkpoints/"), line
    assert "File too large" in line and " bytes; the previous checkpoint" in line, line
    assert "the previous checkpoint there is kept" in line
    assert (folder / "checkpoints" / "last.safetensors").read_bytes() == before
    assert not list((folder / "checkpoints").glob(".*.tmp"))


@pytest.mark.parametrize("content, fragment", [
    (b"", "the file is empty"),
    (b"garbage, not a pickle\n", "not a PyTorch weights file convnet can read"),
])
def test_an_empty_or_garbage_pt_file(tmp_path, content, fragment):
    pytest.importorskip("torch")
    import convnet as cn
    from convnet.io.torch_weights import WeightsError

    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as info:
        cn.load_torch_weights(cn.Sequential(cn.Linear(4, 2)), path)
    assert fragment in str(info.value) and "weights_only=False" not in str(info.value)


def test_a_pickle_with_code_is_refused_without_torchs_advice(tmp_path):
    torch = pytest.importorskip("torch")
    import convnet as cn
    from convnet.io.torch_weights import WeightsError

    path = tmp_path / "weights.pt"
    torch.save({"0.weight": torch.zeros(2, 4), "extra": np.float64}, path)
    with pytest.raises(WeightsError) as info:
        cn.load_torch_weights(cn.Sequential(cn.Linear(4, 2)), path)
    assert "it holds something other than tensors" in str(info.value)
    assert "weights_only" not in str(info.value)


@pytest.mark.parametrize("k", [0, -3])
def test_predict_top_k_must_be_positive(run, workspace, capsys, k):
    image = next((workspace / "images" / "vertical").iterdir())
    line = one_error_line(capsys, ["predict", run, image, "--top-k", k])
    assert line.endswith(f"--top-k must be 1 or more (how many classes to list), received {k}")


@pytest.mark.parametrize("command", ["evaluate", "serve", "summary", "predict"])
def test_a_file_that_is_not_a_run_is_named_itself(workspace, tmp_path, capsys, command):
    image = next((workspace / "images" / "vertical").iterdir())
    argv = [command, image] + ([image] if command == "predict" else [])
    line = one_error_line(capsys, argv)
    assert f"{image} is not a run folder or a checkpoint" in line, line
    stray = tmp_path / "stray.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, str(stray))
    line = one_error_line(capsys, ["evaluate", stray])
    assert line.endswith(f"{stray}: a checkpoint is read with its run's config.json, and "
                         f"{tmp_path} has none; pass the run folder it came from")


def test_a_one_class_dataset_warns(workspace, tmp_path, capsys):
    one = tmp_path / "one"
    (one / "vertical").mkdir(parents=True)
    for path in list((workspace / "images" / "vertical").iterdir())[:8]:
        (one / "vertical" / path.name).write_bytes(path.read_bytes())
    assert main(["train", "--model", "lenet5", "--dataset", str(one), "--epochs", "1",
                 "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    assert ("warning: " + str(one) + " has one class (vertical): every prediction is right, so "
            "the accuracy will be meaningless") in capsys.readouterr().err


# -- found next to them: argument values that ended in a traceback or a nonsense result ---------

@pytest.mark.parametrize("argv, message", [
    (["evaluate", "{run}", "--batch-size", "0"], "--batch-size must be 1 or more, received 0"),
    (["evaluate", "{run}", "--batch-size", "-1"], "--batch-size must be 1 or more, received -1"),
    (["visualize", "{run}", "mistakes", "--count", "0"], "--count must be 1 or more, received 0"),
    (["visualize", "{run}", "top", "--count", "-5"], "--count must be 1 or more, received -5"),
    (["visualize", "{run}", "top", "--filter", "-1"], "--filter must be 0 or more, received -1"),
    (["report", "{run}", "--samples", "-1"], "--samples and --mistakes must be 0 or more"),
    (["calc", "32x32x3", "--filter", "3", "--pad", "-1"],
     "--pad must be a size of 0 or more like 2 or 1x2, or 'same', received '-1'"),
    (["calc", "32x32x3", "--filter", "3", "--filters", "0"],
     "--filters must be 1 or more (the number of filters K), received 0"),
    (["train", "--clip-grad-norm", "-1", "--out", "{tmp}/x"],
     "clip_grad_norm must be >= 0 (0 or left out: no clipping)"),
    (["summary", "{tmp}"], "is not a run folder: it has no config.json"),
])
def test_argument_values_a_command_cannot_use(run, tmp_path, capsys, argv, message):
    line = one_error_line(capsys, [a.format(run=run, tmp=tmp_path) for a in argv])
    assert message in line, line


def test_serve_refuses_a_non_positive_upload_limit(capsys):
    assert main(["serve", "--max-upload-mb", "0"]) == 2
    assert "--max-upload-mb must be more than 0, received 0.0" in capsys.readouterr().err

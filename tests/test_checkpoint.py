import json

import numpy as np
import pytest

import convnet as cn
from convnet.io import checkpoint, zoo


def _model():
    return zoo.build_model("resnet8")


def test_save_and_load_round_trip_keeps_weights_buffers_and_metadata(tmp_path):
    model = _model()
    model.layers[1].running_mean[...] = np.arange(16, dtype=np.float32)
    checkpoint.save_model(tmp_path / "run", model, (3, 32, 32), list("abcdefghij"),
                          {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]})
    loaded = checkpoint.load(tmp_path / "run")
    assert loaded.class_names == list("abcdefghij")
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items(),
                                 strict=True):
        np.testing.assert_array_equal(a, b, err_msg=name)
    x = np.random.default_rng(0).integers(0, 256, (3, 3, 32, 32), dtype=np.uint8)
    expected = (x / 255.0 - np.array([0.5, 0.4, 0.3])[:, None, None]) / 0.2
    np.testing.assert_allclose(loaded.preprocess(x), expected, rtol=1e-5, atol=1e-5)
    probabilities = loaded.predict_proba(x)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_optimizer_state_and_resume_state_survive(tmp_path):
    model = cn.Sequential(cn.Linear(4, 3))
    opt = cn.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.forward(np.ones((2, 4), np.float32))
    model.backward(np.ones((2, 3), np.float32))
    opt.step()
    path = tmp_path / "c.safetensors"
    checkpoint.save_checkpoint(path, model, {"epoch": 3, "rng": {"x": 1}}, opt)
    arrays, opt_arrays, state, opt_state = checkpoint.read_checkpoint(path)
    assert state == {"epoch": 3, "rng": {"x": 1}}
    assert opt_state["steps"] == 1 and opt_state["type"] == "SGD"
    np.testing.assert_array_equal(opt_arrays["0.momentum"], opt.state[0]["momentum"])
    np.testing.assert_array_equal(arrays["0.weight"], model.layers[0].weight.data)


def test_truncated_checkpoint_is_refused_and_the_old_file_kept_on_failed_write(tmp_path):
    model = cn.Sequential(cn.Linear(4, 3))
    path = tmp_path / "c.safetensors"
    checkpoint.save_checkpoint(path, model, {"epoch": 1})
    good = path.read_bytes()
    (tmp_path / "bad.safetensors").write_bytes(good[: len(good) // 2])
    with pytest.raises(checkpoint.CheckpointError, match="truncated or corrupt"):
        checkpoint.read_checkpoint(tmp_path / "bad.safetensors")

    def failing_write(tmp):
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        checkpoint.atomic_write(path, failing_write)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    checkpoint.save_model(tmp_path / "run", zoo.build_model("lenet5"), (1, 28, 28))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["model"] = zoo.spec_for("convnetjs-mnist")
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    with pytest.raises(checkpoint.CheckpointError, match="does not fit this model"):
        checkpoint.load(tmp_path / "run")


def test_missing_things_are_explained(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(checkpoint.CheckpointError, match="is not a run folder: it has no "
                                                         "config.json"):
        checkpoint.load(tmp_path / "empty")
    checkpoint.save_model(tmp_path / "run", cn.Sequential(cn.Linear(4, 2)), (1, 2, 2))
    (tmp_path / "run" / "checkpoints" / "last.safetensors").unlink()
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoints yet"):
        checkpoint.load(tmp_path / "run")


def test_written_files_get_the_umask_s_permissions_or_keep_the_ones_they_replace(tmp_path):
    # mkstemp makes its files 0o600: a checkpoint, an export or a report written through it
    # would be unreadable to the group and to a web server. New files get what open() gives.
    import os
    import stat

    from convnet.core import files

    fresh = tmp_path / "fresh.json"
    files.write_json(fresh, {"a": 1})
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    assert stat.S_IMODE(fresh.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) \
        == files.NEW_FILE_MODE
    private = tmp_path / "private.json"
    private.write_text("{}")
    os.chmod(private, 0o600)
    files.write_json(private, {"b": 2})
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and json.loads(private.read_text()) \
        == {"b": 2}

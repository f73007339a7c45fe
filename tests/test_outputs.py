"""The files commands write never destroy a run: export, visualize and report refuse a run's
own files (--force or not), check the suffix, and replace an existing file only with --force."""

from __future__ import annotations

import pytest
from test_web_support import make_run

from convnet.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("outputs"), epochs=1)


def snapshot(folder):
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("argv, message", [
    (["export", "{run}", "-o", "{run}/checkpoints/best.safetensors", "--force"],
     "expected a file name ending in .onnx (an ONNX model), received .safetensors"),
    (["export", "{run}", "-o", "{run}/checkpoints/best.onnx", "--force"],
     "would write into the checkpoints folder of the run in {run}"),
    (["visualize", "{run}", "filters", "-o", "{run}/config.json", "--force"],
     "expected a file name ending in .png (a PNG picture), received .json"),
    (["visualize", "{run}", "filters", "-o", "{run}", "--force"],
     "-o {run} is a folder; give a file name ending in .png"),
    (["report", "{run}", "-o", "{run}/metrics.jsonl", "--force"],
     "expected a file name ending in .html or .htm"),
    (["export", "{run}", "-o", "{link}", "--force"],
     "would write into the checkpoints folder of the run in {run}"),
])
def test_a_runs_own_files_are_never_written_over(run, tmp_path, capsys, argv, message):
    link = tmp_path / "innocent.onnx"
    link.symlink_to(run / "checkpoints" / "best.safetensors")
    before = snapshot(run)
    fill = {"run": run.resolve(), "link": link}
    assert main([part.format(**fill) for part in argv]) == 1
    err = capsys.readouterr().err
    assert message.format(**fill) in err and err.count("\n") == 1, err
    assert snapshot(run) == before


def test_an_existing_file_is_replaced_only_with_force(run, tmp_path, capsys):
    target = tmp_path / "filters.png"
    target.write_bytes(b"my own picture")
    assert main(["visualize", str(run), "filters", "-o", str(target)]) == 1
    assert "exists; pass --force to replace it" in capsys.readouterr().err
    assert target.read_bytes() == b"my own picture"
    assert main(["visualize", str(run), "filters", "-o", str(target), "--force"]) == 0
    assert target.read_bytes().startswith(b"\x89PNG")
    model = tmp_path / "model.onnx"
    assert main(["export", str(run), "-o", str(model)]) == 0
    assert main(["export", str(run), "-o", str(model)]) == 1
    assert main(["export", str(run), "-o", str(model), "--force"]) == 0
    # The run's own report is what `convnet report RUN` writes: made again without --force.
    assert main(["report", str(run)]) == 0
    assert main(["report", str(run), "-o", str(run / "report.html")]) == 0
    other = tmp_path / "report.html"
    other.write_text("mine")
    assert main(["report", str(run), "-o", str(other)]) == 1
    assert other.read_text() == "mine"


def test_import_writes_a_new_run_folder_only(run, tmp_path, capsys):
    pytest.importorskip("onnx")
    model = tmp_path / "model.onnx"
    assert main(["export", str(run), "-o", str(model)]) == 0
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    before = snapshot(run)
    for target, message in ((afile, "is a file; -o names the run folder to create"),
                            (run, "exists and is not empty"),
                            (run / "checkpoints" / "x", "is inside a run folder's checkpoints")):
        capsys.readouterr()
        assert main(["import", str(model), "-o", str(target)]) == 1
        assert message in capsys.readouterr().err
    assert snapshot(run) == before and afile.read_text() == "mine"
    assert main(["import", str(model), "-o", str(tmp_path / "imported")]) == 0
    assert main(["evaluate", str(tmp_path / "imported"), "--dataset",
                 str(run.parent / "bars"), "--split", "train"]) == 0

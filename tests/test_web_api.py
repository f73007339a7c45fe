"""The explorer's HTTP API through FastAPI's test client, on a tiny trained run: every endpoint,
uploads that must be refused (too large, not an image, wrong channels), and training started,
streamed and stopped from the API."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_web_support import make_run, png_bytes
from tiny_data import bar_image

from convnet.io import zoo
from convnet.io.checkpoint import load
from convnet.io.modelfile import load_spec, spec_to_toml
from convnet.viz.probe import layer_outputs
from convnet.web import create_app

with warnings.catch_warnings():
    # starlette asks for httpx2 instead of httpx; the client works the same with either.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("web"))


def local_client(app, **headers) -> TestClient:
    """A client as the explorer's own page is: on 127.0.0.1, sending the server's token."""
    return TestClient(app, base_url="http://127.0.0.1:8000",
                      headers={"X-Convnet-Token": app.state.token, **headers})


@pytest.fixture
def client(run_folder, tmp_path):
    app = create_app(run_folder, runs_dir=tmp_path / "runs", max_upload_bytes=20_000,
                     report=False)
    with local_client(app) as test_client:
        yield test_client


def vertical_bar_png(size=12, column=5):
    return png_bytes(bar_image("vertical", column, np.random.default_rng(0), size))


def upload(client, content, name="bar.png", **params):
    return client.post("/api/images", files={"file": (name, content, "image/png")},
                       params=params)


def decode(b64):
    return np.frombuffer(base64.b64decode(b64), dtype=np.uint8)


# -- page and static files ---------------------------------------------------------------------

def test_page_and_static_files_need_no_network(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>convnet explorer</title>" in page.text
    for name in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        asset = client.get(name)
        assert asset.status_code == 200, name
        text = asset.text.replace("http://www.w3.org/2000/svg", "")  # a namespace, not a fetch
        assert not re.search(r"https?://|//cdn", text), f"{name} refers to the network"
    assert not re.search(r"(?:src|href)=\"https?://", page.text)


# -- the model -----------------------------------------------------------------------------------

def test_model_info_has_shapes_formulas_fields_and_arithmetic(client, run_folder):
    info = client.get("/api/model").json()
    loaded = load(run_folder)
    summary = loaded.model.describe(loaded.input_shape)
    assert [layer["name"] for layer in info["layers"]] == [row.name for row in summary.rows]
    assert info["input_shape"] == [1, 12, 12]
    assert info["class_names"] == ["horizontal", "vertical"]
    assert info["source"]["kind"] == "run"
    conv1 = info["layers"][0]
    assert conv1["output_shape"] == [4, 12, 12]
    assert conv1["formula"] == "4 x (3*3*1 + 1) = 40"
    assert conv1["receptive_field"] == [3, 3]
    height = conv1["arithmetic"]["axes"][0]
    assert (height["n"], height["f"], height["s"], height["p_before"], height["out"]) == \
        (12, 3, 1, 1, 12)
    assert height["text"] == "(12 - 3 + 2*1)/1 + 1 = 12"
    assert conv1["arithmetic"]["params_text"] == "3*3*1 + 1 = 10 per filter; 4 x 10 = 40"
    pool = info["layers"][2]
    assert pool["arithmetic"]["axes"][1]["text"] == "(12 - 2 + 2*0)/2 + 1 = 6"
    assert pool["receptive_field"] == [4, 4] and pool["jump"] == [2, 2]
    assert info["layers"][5]["arithmetic"] is None  # flatten
    assert info["gradcam_default"] == "relu2"
    assert info["samples"]["count"] == 10


def test_samples_and_image_png(client):
    listing = client.get("/api/samples", params={"limit": 4}).json()
    assert listing["count"] == 10 and len(listing["items"]) == 4
    assert listing["items"][0]["id"] == "val-0"
    assert listing["items"][0]["class_name"] in ("horizontal", "vertical")
    response = client.get("/api/images/val-3.png", params={"scale": 3})
    assert response.headers["content-type"] == "image/png"
    assert Image.open(BytesIO(response.content)).size == (36, 36)
    assert client.get("/api/images/val-99.png").status_code == 404


def test_predict_gives_top_k_and_every_layer_output(client, run_folder):
    result = client.get("/api/predict/val-1", params={"top_k": 2}).json()
    probabilities = [item["probability"] for item in result["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert sum(probabilities) == pytest.approx(1.0)
    assert result["predicted"] == result["top_k"][0]["index"]
    loaded = load(run_folder)
    image = decode(result["input"]["data"]).reshape(result["input"]["shape"])
    outputs = layer_outputs(loaded.model, loaded.preprocess(image[None]))
    assert [layer["name"] for layer in result["layers"]] == [o.name for o in outputs]
    for layer, out in zip(result["layers"], outputs, strict=True):
        assert layer["shape"] == list(out.output.shape[1:])
    conv2 = result["layers"][3]
    assert (conv2["kind"], conv2["count"], conv2["height"], conv2["width"]) == ("maps", 6, 4, 4)
    maps = outputs[3].output[0]
    np.testing.assert_allclose(conv2["min"], maps.min(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(conv2["max"], maps.max(axis=(1, 2)), rtol=1e-6)
    assert decode(conv2["data"][0]).size == 16
    assert result["layers"][-1]["kind"] == "vector"
    assert "layers" not in client.get("/api/predict/val-1", params={"maps": False}).json()


def test_receptive_field_of_units(client):
    # conv 3x3 pad 1 then 2x2 pool: pool unit (r, c) sees rows 2r-1 .. 2r+2 (4 pixels).
    rf = client.get("/api/receptive-field", params={"layer": "pool1", "row": 0, "col": 3}).json()
    assert (rf["top"], rf["left"], rf["height"], rf["width"]) == (-1, 5, 4, 4)
    assert rf["clipped"] == {"top": 0, "left": 5, "height": 3, "width": 4}
    # conv2 (3x3, no padding) unit r covers pool rows r..r+2, so input rows 2r-1 .. 2r+6.
    rf = client.get("/api/receptive-field", params={"layer": "conv2", "row": 2, "col": 1}).json()
    assert (rf["top"], rf["left"], rf["height"], rf["width"]) == (3, 1, 8, 8)
    assert rf["jump"] == [2, 2]
    bad = client.get("/api/receptive-field", params={"layer": "conv2", "row": 4, "col": 0})
    assert bad.status_code == 422 and "outside conv2's 4x4 maps" in bad.json()["detail"]
    vector = client.get("/api/receptive-field", params={"layer": "fc1", "row": 0, "col": 0})
    assert vector.status_code == 422 and "whole input" in vector.json()["detail"]
    assert client.get("/api/receptive-field",
                      params={"layer": "conv7", "row": 0, "col": 0}).status_code == 404


def test_filters(client, run_folder):
    result = client.get("/api/filters/conv2").json()
    assert result["shape"] == [6, 4, 3, 3] and not result["rgb"]
    assert len(result["filters"]) == 6
    weight = load(run_folder).model.layers[3].weight.data[1].astype(np.float64)
    tile = decode(result["filters"][1]).reshape(4, 3, 3)
    expected = np.rint((weight - weight.min()) / (weight.max() - weight.min()) * 255)
    np.testing.assert_array_equal(tile, expected)
    assert client.get("/api/filters/fc1").status_code == 422
    assert client.get("/api/filters/conv9").status_code == 404


def test_explain_returns_saliency_and_grad_cam(client):
    result = client.get("/api/explain/val-0").json()
    assert result["gradcam_layer"] == "relu2" and result["gradcam_shape"] == [4, 4]
    for key in ("saliency", "gradcam"):
        png = base64.b64decode(result[key].removeprefix("data:image/png;base64,"))
        assert Image.open(BytesIO(png)).size == (12, 12)
    chosen = client.get("/api/explain/val-0", params={"class_index": 1, "layer": "pool1"}).json()
    assert chosen["class_index"] == 1 and chosen["gradcam_shape"] == [6, 6]
    assert client.get("/api/explain/val-0", params={"class_index": 2}).status_code == 422
    assert client.get("/api/explain/val-0", params={"layer": "fc1"}).status_code == 422


def test_top_images_are_sorted_by_activation(client):
    result = client.get("/api/top-images", params={"layer": "conv1", "filter": 2,
                                                   "k": 4}).json()
    values = [item["activation"] for item in result["items"]]
    assert len(values) == 4 and values == sorted(values, reverse=True)
    assert result["searched"] == 10
    assert client.get("/api/top-images", params={"layer": "conv1",
                                                 "filter": 4}).status_code == 422
    assert client.get("/api/top-images", params={"layer": "nope"}).status_code == 404


# -- uploads ------------------------------------------------------------------------------------

def test_upload_then_predict(client):
    response = upload(client, vertical_bar_png())
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("up-") and body["shape"] == [1, 12, 12] and body["notes"] == []
    prediction = client.get(f"/api/predict/{body['id']}").json()
    assert prediction["description"] == "bar.png"
    assert client.get(f"/api/images/{body['id']}.png").status_code == 200


def test_upload_conversions_are_reported(client):
    rgba = np.zeros((24, 24, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = 128
    body = upload(client, png_bytes(rgba, "RGBA"), "red.png").json()
    assert body["shape"] == [1, 12, 12]
    notes = " ".join(body["notes"])
    assert "alpha channel dropped" in notes and "RGB converted to 1 gray channel" in notes
    assert "resized from 24x24 to 12x12" in notes


def test_uploads_refused_with_clear_errors_and_server_keeps_running(client):
    big = np.random.default_rng(0).integers(0, 255, (160, 160), dtype=np.uint8)
    content = png_bytes(big)
    assert 20_000 < len(content) < 20_000 + 64 * 1024  # past the limit, within the framing room
    too_large = upload(client, content, "big.png")
    assert too_large.status_code == 413
    assert "20,000-byte limit" in too_large.json()["detail"]
    huge = upload(client, b"\0" * 200_000, "huge.png")  # refused before the body is read
    assert huge.status_code == 413
    assert "more than the 20,000-byte limit" in huge.json()["detail"]
    text = upload(client, b"hello, not an image", "notes.png")
    assert text.status_code == 422
    assert "notes.png is not an image Pillow can read" in text.json()["detail"]
    assert "/tmp" not in text.json()["detail"]
    empty = upload(client, b"", "empty.png")
    assert empty.status_code == 400 and "empty" in empty.json()["detail"]
    colour = png_bytes(np.zeros((12, 12, 3), np.uint8))
    strict = upload(client, colour, "rgb.png", convert="false")
    assert strict.status_code == 422
    assert "the model takes 1 channel (gray) but the image has 3 channels (RGB)" in \
        strict.json()["detail"]
    floats = BytesIO()
    Image.fromarray(np.ones((8, 8), np.float32)).save(floats, format="TIFF")
    float_image = upload(client, floats.getvalue(), "float.tif")
    assert float_image.status_code == 422 and "floating-point" in float_image.json()["detail"]
    chunked = client.post("/api/images", content=iter([b"--x\r\n"]),
                          headers={"content-type": "multipart/form-data; boundary=x"})
    assert chunked.status_code == 411 and "Content-Length" in chunked.json()["detail"]
    missing = client.post("/api/images", data={"note": "no file"})
    assert missing.status_code == 422 and 'field "file"' in missing.json()["detail"]
    assert client.get("/api/model").status_code == 200
    assert client.get("/api/predict/up-0000").status_code == 404


# -- training -------------------------------------------------------------------------------------

def read_events(client, stop_after=None, **params):
    """(name, data) of the event stream until it ends; POST stop after `stop_after` batches."""
    events, batches = [], 0
    with client.stream("GET", "/api/train/events", params=params) as stream:
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: "):])))
                if name == "batch":
                    batches += 1
                    if batches == stop_after:
                        assert client.post("/api/train/stop").status_code == 200
    return events


def test_events_when_idle(tmp_path):
    with local_client(create_app(model_name="lenet5", runs_dir=tmp_path)) as client:
        status = client.get("/api/train").json()
        assert status["session"] is None and status["watch"] is None
        assert read_events(client) == [("idle", {"message": "no training run yet"})]


def test_watch_a_run_folder_trained_elsewhere(run_folder, tmp_path):
    folder = shutil.copytree(run_folder, tmp_path / "copy")
    with local_client(create_app(folder, runs_dir=tmp_path / "runs")) as client:
        assert client.get("/api/train").json()["watch"]["epochs_logged"] == 3
        events = read_events(client, timeout=0.5)
        assert [name for name, _ in events] == ["watch", "epoch", "epoch", "epoch"]
        assert events[0][1] == {"folder": str(folder), "epochs": 3}
        version = client.get("/api/model").json()["version"]
        # Another process finishes an epoch: a metrics line, then a new last checkpoint.
        record = {**events[-1][1], "epoch": 4, "step": 16, "val_accuracy": 0.9}
        with open(folder / "metrics.jsonl", "a") as stream:
            stream.write(json.dumps(record) + "\n")
        last = folder / "checkpoints" / "last.safetensors"
        shutil.copy(folder / "checkpoints" / "best.safetensors", last)
        newer = last.stat().st_mtime_ns + 10**9
        os.utime(last, ns=(newer, newer))
        more = read_events(client, timeout=1.5, since=4)  # after watch + 3 epochs
        assert [name for name, _ in more] == ["epoch", "snapshot"]
        assert more[0][1]["epoch"] == 4
        assert client.get("/api/model").json()["version"] == version + 1


def test_stop_needs_a_run(client):
    refused = client.post("/api/train/stop")
    assert refused.status_code == 409 and "no training run" in refused.json()["detail"]


def test_train_stream_and_finish(client, tmp_path):
    started = client.post("/api/train", json={"epochs": 2, "batch_size": 4})
    assert started.status_code == 202
    again = client.post("/api/train", json={"epochs": 1})
    assert again.status_code == 409 and "already in progress" in again.json()["detail"]
    events = read_events(client)
    names = [name for name, _ in events]
    assert names[0] == "starting" and names[1] == "start"
    assert names[-2:] == ["finished", "done"]
    assert {"batch", "epoch", "snapshot"} <= set(names)
    epochs = [data for name, data in events if name == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    batch = next(data for name, data in events if name == "batch")
    assert {"loss", "accuracy", "images_per_s", "step", "total_steps"} <= set(batch)
    out_dir = Path(events[0][1]["out_dir"])
    assert out_dir.parent == tmp_path / "runs"
    assert (out_dir / "metrics.jsonl").is_file() and (out_dir / "checkpoints").is_dir()
    status = client.get("/api/train").json()["session"]
    assert status["state"] == "finished"
    info = client.get("/api/model").json()
    assert info["source"]["kind"] == "run" and info["source"]["folder"] == str(out_dir)
    assert info["version"] >= 2  # replaced at the start, weights copied since
    # The current model (from a model file, not the zoo) was written as TOML beside the runs.
    assert [p.suffix for p in (tmp_path / "runs").glob("tiny-*")] == [".toml"]
    # The history replays for a page that connects afterwards.
    assert [name for name, _ in read_events(client)] == names


def test_train_stop(client):
    assert client.post("/api/train", json={"epochs": 200, "batch_size": 2}).status_code == 202
    events = read_events(client, stop_after=2)
    names = [name for name, _ in events]
    assert "stopping" in names and names[-2:] == ["stopped", "done"]
    stopped = dict(events)["stopped"]
    assert stopped["stopped"] is True and stopped["epochs_done"] < 200


def test_pictures_while_training_do_not_disturb_the_trainer(client):
    # no_grad() is one switch for the process: the page's forward passes and the trainer's
    # steps must take turns, or one of them loses its caches.
    assert client.post("/api/train", json={"epochs": 200, "batch_size": 2}).status_code == 202
    deadline = time.monotonic() + 30
    while client.get("/api/train").json()["session"]["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for _ in range(15):
        for path in ("/api/predict/val-0", "/api/explain/val-1", "/api/explain/val-2?layer=pool1",
                     "/api/top-images?layer=conv2&filter=1"):
            response = client.get(path)
            assert response.status_code == 200, response.text
    assert client.get("/api/train").json()["session"]["state"] == "running"
    assert client.post("/api/train/stop").status_code == 200
    events = read_events(client)
    assert [name for name, _ in events][-2:] == ["stopped", "done"]


def test_train_refuses_unknown_names(client):
    for body, message in (({"model": "../../etc/passwd"}, "unknown model"),
                          ({"dataset": "/tmp"}, "unknown dataset"),
                          ({"epochs": 0}, "greater than or equal to 1")):
        response = client.post("/api/train", json=body)
        assert response.status_code == 422
        assert message in json.dumps(response.json()["detail"])


def test_train_failure_is_an_event(client):
    # The model shown (a model file with 2 outputs) on mnist-5k's 10 digits: the request is
    # accepted, then the trainer refuses, as a model file's classifier is not resized.
    assert client.post("/api/train", json={"dataset": "mnist-5k"}).status_code == 202
    events = read_events(client)
    assert [name for name, _ in events][-2:] == ["failure", "done"]
    assert "outputs 2 scores but mnist-5k has 10 classes" in dict(events)["failure"]["message"]
    assert client.get("/api/train").json()["session"]["state"] == "failed"
    assert client.get("/api/model").status_code == 200


def test_train_a_zoo_model_on_the_runs_two_classes(client):
    # A zoo model's classifier is sized for the data: 2 scores for the folder of bars.
    started = client.post("/api/train", json={"model": "lenet5", "epochs": 1, "batch_size": 8})
    assert started.status_code == 202
    events = read_events(client)
    assert [name for name, _ in events][-2:] == ["finished", "done"]
    info = client.get("/api/model").json()
    assert info["source"]["kind"] == "run" and info["source"]["zoo_name"] == "lenet5"
    assert info["class_names"] == ["horizontal", "vertical"]
    assert len(client.get("/api/predict/val-0").json()["top_k"]) == 2


# -- other models and helpers ----------------------------------------------------------------

def test_untrained_zoo_model_and_python_model(tmp_path):
    import convnet as cn

    with local_client(create_app(model_name="convnetjs", runs_dir=tmp_path)) as c:
        info = c.get("/api/model").json()
        assert info["input_shape"] == [3, 32, 32] and info["source"]["kind"] == "zoo"
        filters = c.get("/api/filters/conv1").json()
        assert filters["rgb"] and len(base64.b64decode(filters["filters"][0])) == 5 * 5 * 3
        gray = png_bytes(np.full((32, 32), 90, np.uint8))
        body = upload(c, gray, "gray.png").json()
        assert "gray repeated into 3 channels" in " ".join(body["notes"])
        assert c.get(f"/api/explain/{body['id']}").status_code == 200
    model = cn.Sequential(cn.Conv2d(1, 2, 3), cn.ReLU(), cn.Flatten(), cn.Linear(2 * 6 * 6, 3),
                          input_shape=(1, 8, 8))
    with local_client(create_app(model=model, class_names=["a", "b", "c"], runs_dir=tmp_path)) as c:
        info = c.get("/api/model").json()
        assert info["source"]["kind"] == "python" and info["class_names"] == ["a", "b", "c"]
        body = upload(c, png_bytes(np.zeros((8, 8), np.uint8))).json()
        assert len(c.get(f"/api/predict/{body['id']}").json()["top_k"]) == 3


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_spec_to_toml_round_trips(tmp_path, name):
    spec = zoo.spec_for(name)
    path = tmp_path / "model.toml"
    path.write_text(spec_to_toml(spec))
    again = load_spec(path)
    assert again["input_shape"] == spec["input_shape"]
    assert again["layers"] == [{k: v for k, v in layer.items() if v is not None}
                               for layer in spec["layers"]]


# -- the serve command ----------------------------------------------------------------------------

def test_serve_refuses_remote_hosts_without_the_flag(capsys):
    from convnet.cli.serve import check_host

    assert check_host("127.0.0.1", False) is None and check_host("localhost", False) is None
    with pytest.raises(SystemExit) as exit_info:
        check_host("0.0.0.0", False)
    assert exit_info.value.code == 2
    assert "pass --allow-remote" in capsys.readouterr().err
    assert "anyone who can reach this address" in check_host("0.0.0.0", True)


def test_serve_help_has_an_example(capsys):
    from convnet.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert "convnet serve runs/lenet" in out and "--allow-remote" in out


def test_serve_reports_a_busy_port(capsys):
    import socket

    from convnet.cli import main

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--model", "lenet5", "--port", str(port)]) == 1
    assert f"port {port} on 127.0.0.1 is in use" in capsys.readouterr().err


def test_a_stop_sent_right_after_the_start_is_honoured(client):
    # The stop arrives while the trainer still reads its data: it used to be forgotten when the
    # loop began, and the run went on for all its epochs.
    assert client.post("/api/train", json={"epochs": 200, "batch_size": 2}).status_code == 202
    assert client.post("/api/train/stop").status_code == 200
    events = read_events(client)
    names = [name for name, _ in events]
    assert names[-2:] == ["stopped", "done"], names
    assert dict(events)["stopped"]["epochs_done"] == 0
    assert client.get("/api/train").json()["session"]["state"] == "stopped"


def test_concurrent_starts_begin_one_run(client):
    # Two clicks (or two tabs) at once: one run starts, the others are told one is running;
    # a second run would have gone on unseen, out of reach of the stop button.
    import threading

    codes = []
    start = threading.Barrier(6)

    def post():
        start.wait()
        codes.append(client.post("/api/train", json={"epochs": 200, "batch_size": 2})
                     .status_code)

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(codes) == [202, 409, 409, 409, 409, 409], codes
    assert client.post("/api/train/stop").status_code == 200
    assert [name for name, _ in read_events(client)][-2:] == ["stopped", "done"]

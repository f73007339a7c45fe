"""The explorer as a teacher, through its API: inside one output unit (checked against the
engine's own outputs and weights), the arithmetic playground (against convnet.core.arithmetic),
a 200-node graph's network view, per-stage maps, the sample sprite, inverted and centred
drawings, the accuracy story, weight sharing, and the learning rate and loss flags of a run."""

from __future__ import annotations

import base64
import json
import warnings
from io import BytesIO

import numpy as np
import pytest
from big_graph import inception_stack
from PIL import Image
from test_web_support import make_run, png_bytes

from convnet.core.arithmetic import window_fit
from convnet.core.errors import ShapeError
from convnet.io.checkpoint import load
from convnet.viz.probe import layer_outputs, stage_graph
from convnet.web import create_app

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def local(app) -> TestClient:
    """A client as the explorer's own page is: on 127.0.0.1, sending the server's token."""
    return TestClient(app, base_url="http://127.0.0.1:8000",
                      headers={"X-Convnet-Token": app.state.token})


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("teach"))


@pytest.fixture
def client(run_folder, tmp_path):
    with local(create_app(run_folder, runs_dir=tmp_path / "runs", report=False)) as c:
        yield c


@pytest.fixture(scope="module")
def graph_client(tmp_path_factory):
    model = inception_stack(classes=10)
    app = create_app(model=model, input_shape=(1, 12, 12), dataset="mnist-5k",
                     runs_dir=tmp_path_factory.mktemp("graph-runs"))
    with local(app) as c:
        c.model = model
        yield c


def engine_outputs(client, run_folder, image_id="val-1"):
    loaded = load(run_folder)
    pixels = client.get(f"/api/predict/{image_id}", params={"maps": False}).json()["input"]
    image = np.frombuffer(base64.b64decode(pixels["data"]), np.uint8).reshape(pixels["shape"])
    x = loaded.preprocess(image[None])
    return loaded, x, {o.name: o.output[0] for o in layer_outputs(loaded.model, x)}


# -- inside one unit -----------------------------------------------------------------------------

def test_conv_unit_is_the_engine_s_multiply_adds(client, run_folder):
    loaded, x, outputs = engine_outputs(client, run_folder)
    view = client.get("/api/unit/val-1", params={"layer": "conv2", "channel": 4, "row": 1,
                                                 "col": 2}).json()
    conv = next(layer for layer in loaded.model.layers if layer.name == "conv2")
    pool = outputs["pool1"]  # conv2 reads pool1's 4x6x6 maps, no padding, 3x3, stride 1
    assert view["kind"] == "conv" and view["slices_total"] == 4 == len(view["slices"])
    for slice_ in view["slices"]:
        c = slice_["channel"]
        np.testing.assert_allclose(slice_["patch"], pool[c, 1:4, 2:5], rtol=1e-6)
        np.testing.assert_allclose(slice_["weights"], conv.weight.data[4, c], rtol=1e-6)
        np.testing.assert_allclose(slice_["products"],
                                   np.asarray(slice_["patch"]) * slice_["weights"], rtol=1e-12)
        assert slice_["sum"] == pytest.approx(np.sum(slice_["products"]))
    assert view["bias"] == pytest.approx(float(conv.bias.data[4]))
    total = sum(s["sum"] for s in view["slices"]) + view["bias"]
    assert view["pre_activation"] == pytest.approx(total, rel=1e-12)
    engine = float(outputs["conv2"][4, 1, 2])
    assert view["engine_value"] == engine
    assert view["pre_activation"] == pytest.approx(engine, rel=1e-5, abs=1e-6)
    assert view["next"] == {"layer": "relu2", "type": "ReLU",
                            "value": float(outputs["relu2"][4, 1, 2])}
    assert view["receptive_field"]["height"] == 8 and view["plane_names"] == [0, 1, 2, 3]
    assert view["plane_maps"]["height"] == 6


def test_border_unit_reads_zero_padding(client, run_folder):
    view = client.get("/api/unit/val-1", params={"layer": "conv1", "channel": 0, "row": 0,
                                                 "col": 11}).json()
    assert view["padding"] == [1, 1, 1, 1] and view["padded_hw"] == [14, 14]
    assert view["window"]["rows"] == [0, 1, 2] and view["window"]["cols"] == [11, 12, 13]
    assert view["window"]["inside_rows"] == [False, True, True]
    assert view["window"]["inside_cols"] == [True, True, False]
    patch = np.asarray(view["slices"][0]["patch"])
    assert not patch[0].any() and not patch[:, 2].any()  # the padding is zero
    assert view["receptive_field"]["clipped"]["height"] == 2


def test_pool_fc_flatten_and_relu_units(client, run_folder):
    loaded, x, outputs = engine_outputs(client, run_folder, "val-3")
    pool = client.get("/api/unit/val-3", params={"layer": "pool1", "channel": 2, "row": 3,
                                                 "col": 1}).json()
    window = outputs["relu1"][2, 6:8, 2:4]
    assert pool["kind"] == "maxpool" and pool["result"] == pytest.approx(window.max())
    u, v = pool["winner"]
    assert window[u, v] == window.max() and pool["engine_value"] == pool["result"]
    fc = client.get("/api/unit/val-3", params={"layer": "fc1", "channel": 1}).json()
    assert fc["class_name"] == loaded.class_names[1]
    assert fc["pre_activation"] == pytest.approx(float(outputs["fc1"][1]), rel=1e-5, abs=1e-6)
    magnitudes = [abs(item["product"]) for item in fc["top"]]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert fc["source_shape"] == [6, 4, 4] and fc["source"] == "relu2"
    first = fc["top"][0]
    c, r, q = first["from"]
    assert first["value"] == pytest.approx(float(outputs["relu2"][c, r, q]))
    relu = client.get("/api/unit/val-3", params={"layer": "relu1", "channel": 1, "row": 2,
                                                 "col": 2}).json()
    assert relu["rule"] == "max(0, x)"
    assert relu["result"] == max(0.0, relu["input_value"])


def test_unit_requests_outside_the_model_are_refused(client):
    outside = client.get("/api/unit/val-1", params={"layer": "conv2", "channel": 0, "row": 4})
    assert outside.status_code == 422
    assert outside.json()["detail"] == "unit (4, 0) is outside conv2's 4x4 maps"
    assert client.get("/api/unit/val-1", params={"layer": "conv2", "channel": 6}).json()[
        "detail"] == "conv2 has 6 maps (0 to 5), received map 6"
    assert client.get("/api/unit/val-1", params={"layer": "conv9"}).status_code == 404


def test_one_stage_s_maps_are_those_of_predict(client):
    full = {layer["name"]: layer for layer in client.get("/api/predict/val-2").json()["layers"]}
    one = client.get("/api/activations/val-2", params={"layer": "relu2"}).json()
    assert one["data"] == full["relu2"]["data"] and one["min"] == full["relu2"]["min"]
    only = client.get("/api/predict/val-2", params={"layers": "conv1,fc1"}).json()["layers"]
    assert [layer["name"] for layer in only] == ["conv1", "fc1"]


# -- the model ----------------------------------------------------------------------------------

def test_model_info_tells_stages_sharing_accuracy_and_input_habits(client, run_folder):
    info = client.get("/api/model").json()
    assert [s["name"] for s in info["stages"]] == ["conv1", "relu1", "pool1", "conv2", "relu2",
                                                   "flatten1", "fc1"]
    conv1 = next(layer for layer in info["layers"] if layer["name"] == "conv1")
    assert conv1["sharing"]["conv"]["text"] == "4 x 10 = 40"
    assert conv1["sharing"]["locally_connected"]["text"] == "12*12*4 x 10 = 5,760"
    assert next(s for s in info["stages"] if s["name"] == "fc1")["whole_image"] is True
    assert [s["unit"] for s in info["stages"]] == ["conv", "elementwise", "maxpool", "conv",
                                                   "elementwise", "flatten", "fc"]
    story = info["accuracy"]
    assert story["checkpoint"] == "best" and story["best"]["split"] == "validation"
    assert story["lines"][-1].startswith("weights shown: the best checkpoint (epoch ")
    assert info["input_habits"] == {"light_on_dark": True, "mnist_like": False}
    assert info["graph"] is False


def test_a_drawing_is_inverted_and_centred_for_an_mnist_model(tmp_path):
    with local(create_app(model_name="lenet5", runs_dir=tmp_path)) as c:
        assert c.get("/api/model").json()["input_habits"] == {"light_on_dark": True,
                                                              "mnist_like": True}
        drawing = np.full((280, 280), 255, np.uint8)
        drawing[40:220, 120:150] = 0  # a dark stroke on white, as drawn on the page
        result = c.post("/api/images", files={"file": ("drawing.png", png_bytes(drawing),
                                                       "image/png")}).json()
        notes = result["notes"]
        inverted = next(i for i, n in enumerate(notes) if n.startswith("inverted (dark on light"))
        centred = next(i for i, n in enumerate(notes) if n.startswith("centred as MNIST digits"))
        assert inverted < centred
        pixels = np.asarray(Image.open(BytesIO(c.get(f"/api/images/{result['id']}.png")
                                               .content)))
        assert pixels[0, 0] == 0 and pixels.max() > 200
        plain = c.post("/api/images", params={"invert": "no", "centre": "no"},
                       files={"file": ("d.png", png_bytes(drawing), "image/png")}).json()
        assert not any(n.startswith(("inverted", "centred")) for n in plain["notes"])
        assert plain["notes"][-1].startswith("resized from ") and plain["notes"][-1].endswith(
            " to 28x28 (bilinear)")


def test_sample_sprite_places_every_thumbnail(client):
    listing = client.get("/api/samples", params={"limit": 10}).json()
    assert listing["sprite"] == {"columns": 12, "tile": [12, 12]}
    assert [item["sprite"] for item in listing["items"][:3]] == [[0, 0], [1, 0], [2, 0]]
    sprite = Image.open(BytesIO(client.get("/api/samples/sprite.png",
                                           params={"limit": 10, "scale": 2}).content))
    assert sprite.size == (10 * 24, 24)
    tile = np.asarray(sprite.convert("L"))[:, 3 * 24:4 * 24:2][::2]
    single = np.asarray(Image.open(BytesIO(client.get("/api/images/val-3.png").content)))
    np.testing.assert_array_equal(tile, single)


# -- the playground ----------------------------------------------------------------------------

@pytest.mark.parametrize(("n", "f", "s", "p", "d"), [(7, 3, 1, 0, 1), (7, 3, 2, 0, 1),
                                                     (7, 3, 3, 0, 1), (32, 5, 1, 2, 1),
                                                     (9, 3, 2, 1, 2), (5, 7, 1, 0, 1)])
def test_playground_is_the_engine_s_arithmetic(client, n, f, s, p, d):
    play = client.get("/api/arithmetic", params=dict(n=n, f=f, s=s, p=p, d=d)).json()
    try:
        fit = window_fit(n, f, s, (p, p), d, layer="conv", axis="width")
        assert play["fits"] and play["error"] is None and play["output"] == fit.output
        assert play["formula"].endswith(f"= {fit.output}")
    except ShapeError as error:
        assert play["fits"] is False and play["error"] == str(error)
    if play["output"] is not None:
        assert play["starts"] == [o * s for o in range(play["output"])]
        assert play["starts"][-1] + play["f_effective"] <= n + 2 * p
    assert play["taps"] == [t * d for t in range(f)]


def test_playground_limits(client):
    response = client.get("/api/arithmetic", params=dict(n=1000, f=3))
    assert response.status_code == 422
    assert response.json()["detail"] == "N must be between 1 and 64, received 1000"


# -- a graph of 200+ nodes -----------------------------------------------------------------------

def test_network_view_of_a_200_node_graph(graph_client):
    info = graph_client.get("/api/model").json()
    assert info["graph"] and len(info["stages"]) == 215 and len(info["blocks"]) == 15
    assert info["maps_per_stage"] and len(info["collapsed_default"]) == 15
    collapsed = graph_client.get("/api/network").json()
    kinds = [node["kind"] for node in collapsed["nodes"]]
    assert kinds.count("block") == 15 and kinds.count("stage") == 5  # stem and head
    opened = graph_client.get("/api/network", params={"collapsed": ""}).json()
    names = [node["id"] for node in opened["nodes"] if node["kind"] == "stage"]
    assert sorted(names) == sorted(s.name for s in stage_graph(graph_client.model))
    boxes = {node["id"]: node for node in opened["nodes"]}
    for edge in opened["edges"]:  # from the bottom of the source to the top of the target
        source, target = boxes[edge["source"]], boxes[edge["target"]]
        assert edge["points"][0][1] == source["y"] + source["h"]
        assert edge["points"][-1][1] == target["y"] and target["rank"] > source["rank"]
    concat = boxes["concat1"]
    assert concat["shape"] == [8, 12, 12] and concat["block"] == "block1"
    into = [edge for edge in opened["edges"] if edge["target"] == "concat1"]
    assert sorted(edge["label"] for edge in into) == ["2x12x12"] * 4
    for rank in {node["rank"] for node in opened["nodes"]}:  # no two boxes overlap
        row = sorted((n for n in opened["nodes"] if n["rank"] == rank), key=lambda n: n["x"])
        for left, right in zip(row, row[1:], strict=False):
            assert left["x"] + left["w"] <= right["x"]
    one = graph_client.get("/api/network", params={"collapsed": "block2"}).json()
    assert [n["id"] for n in one["nodes"] if n["kind"] == "block"] == ["block2"]
    assert graph_client.get("/api/network", params={"collapsed": "block99"}).status_code == 404


def test_every_node_has_maps_and_units(graph_client):
    assert graph_client.get("/api/predict/val-0").json()["layers"] == []  # fetched per node
    maps = graph_client.get("/api/activations/val-0", params={"layer": "concat7"}).json()
    assert maps["shape"] == [8, 12, 12]
    unit = graph_client.get("/api/unit/val-0", params={"layer": "concat7", "channel": 5,
                                                       "row": 4, "col": 4}).json()
    assert unit["kind"] == "concat" and unit["branch"] == 2 and unit["source_channel"] == 1
    assert unit["value"] == unit["engine_value"]
    conv = graph_client.get("/api/unit/val-0", params={"layer": "conv40", "channel": 1,
                                                       "row": 0, "col": 0}).json()
    assert conv["pre_activation"] == pytest.approx(conv["engine_value"], rel=1e-5, abs=1e-6)


def test_the_network_view_is_for_graphs(client):
    response = client.get("/api/network")
    assert response.status_code == 422 and "chain of layers" in response.json()["detail"]


# -- training: the learning rate and the loss -------------------------------------------------

def read_events(client, until=None, on_batch=None):
    events = []
    with client.stream("GET", "/api/train/events") as stream:
        name = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: "):])
                events.append((name, data))
                if name == "batch" and on_batch:
                    on_batch(data)
    return events


def test_the_learning_rate_changes_while_a_run_trains(client):
    refused = client.post("/api/train/lr", json={"lr": 0.01})
    assert refused.status_code == 409 and "no training run" in refused.json()["detail"]
    assert client.post("/api/train", json={"epochs": 200, "batch_size": 2}).status_code == 202
    asked = []

    def on_batch(data):
        if not asked:
            asked.append(client.post("/api/train/lr", json={"lr": 0.004}).status_code)
        elif data["lr"] <= 0.004 and len(asked) == 1:  # the cosine schedule from 0.004
            asked.append("seen")
            client.post("/api/train/stop")

    events = read_events(client, on_batch=on_batch)
    assert asked == [200, "seen"]
    names = [name for name, _ in events]
    assert "lr" in names and names[-2:] == ["stopped", "done"]
    assert any(name == "log" and data["message"].startswith("learning rate set to 0.004")
               for name, data in events)
    assert client.post("/api/train/lr", json={"lr": 0}).status_code == 422


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverging_run_is_flagged(client):
    assert client.post("/api/train", json={"epochs": 2, "batch_size": 4, "lr": 10}
                       ).status_code == 202
    events = read_events(client)
    batches = [data for name, data in events if name == "batch"]
    assert all(b["loss_max"] >= b["loss_mean"] - 1e-12 for b in batches if b["loss_mean"])
    assert sum(b["batches"] for b in batches) == batches[-1]["step"]  # every batch counted
    flags = [data for name, data in events if name == "exploding"]
    assert len(flags) == 1
    assert flags[0]["message"].startswith("loss exploded: lower the learning rate (set to 10)")
    assert any(b["exploding"] for b in batches)


def test_transposed_playground_is_the_engine_s_arithmetic(client):
    from convnet.core.arithmetic import transposed_fit

    play = client.get("/api/arithmetic", params=dict(n=4, f=3, s=2, p=1, transposed=True,
                                                     output_padding=1)).json()
    assert play["fits"] and play["output"] == transposed_fit(4, 3, 2, 1, 1, 1) == 8
    assert play["formula"] == "(4 - 1)*2 - 2*1 + 1*(3 - 1) + 1 + 1 = 8"
    assert play["scatter"][0] == [None, 0, 1]  # input 0 writes outputs -1 (cropped), 0, 1
    assert play["scatter"][3] == [5, 6, 7]
    bad = client.get("/api/arithmetic", params=dict(n=4, f=3, s=2, transposed=True,
                                                    output_padding=2)).json()
    assert bad["fits"] is False and "output_padding 2 along the height" in bad["error"]


def test_transposed_conv_unit_gathers_and_scatters(tmp_path):
    import convnet as cn

    x = cn.Input((1, 6, 6))
    up = cn.ConvTranspose2d(1, 2, 3, stride=2, padding=1, output_padding=1)(x)
    model = cn.Model(x, cn.Flatten()(cn.GlobalAvgPool2d()(cn.ReLU()(up))))
    with local(create_app(model=model, input_shape=(1, 6, 6), dataset="mnist-5k",
                          runs_dir=tmp_path)) as c:
        view = c.get("/api/unit/val-0", params={"layer": "deconv1", "channel": 1, "row": 5,
                                                "col": 4}).json()
    assert view["kind"] == "deconv" and view["output_hw"] == [12, 12]
    # Output row 5 = i*2 - 1 + u: i = 3 with u = 0, or i = 2 with u = 2; column 4: i = 2, u = 1.
    assert sorted((c["row"], c["col"], tuple(c["tap"])) for c in view["contributors"]) == [
        (2, 2, (2, 1)), (3, 2, (0, 1))]
    assert view["pre_activation"] == pytest.approx(view["engine_value"], rel=1e-5, abs=1e-6)
    i, j = view["scatter"]["input"]
    assert view["scatter"]["rows"] == [r for r in (2 * i - 1, 2 * i, 2 * i + 1) if 0 <= r < 12]
    assert view["next"]["type"] == "ReLU"


def test_colour_scales_carry_their_ranges(client, run_folder):
    loaded = load(run_folder)
    weight = next(layer for layer in loaded.model.layers if layer.name == "conv1").weight.data
    filters = client.get("/api/filters/conv1").json()
    np.testing.assert_allclose(filters["min"], weight.min(axis=(1, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(filters["max"], weight.max(axis=(1, 2, 3)), rtol=1e-6)
    explained = client.get("/api/explain/val-0").json()
    low, high = explained["saliency_range"]
    assert 0 <= low <= high and high > 0


def test_the_demo_s_held_out_accuracy_is_on_the_page(run_folder, tmp_path):
    import shutil

    from convnet.io.checkpoint import write_evaluation

    folder = shutil.copytree(run_folder, tmp_path / "demo")
    write_evaluation(folder, {"dataset": "bars", "split": "test", "checkpoint": "best",
                              "epoch": 2, "accuracy": 0.875, "count": 40})
    with local(create_app(folder, runs_dir=tmp_path / "runs", report=False)) as c:
        story = c.get("/api/model").json()["accuracy"]
    assert story["test"]["accuracy"] == 0.875 and story["test"]["split"] == "test"
    assert ("held-out test accuracy 87.50% on 40 bars images never seen in training (best "
            "checkpoint, epoch 2)") in story["lines"]


def test_an_onnx_file_is_served_with_samples_and_units(run_folder, tmp_path):
    import convnet as cn

    loaded = load(run_folder)
    path = tmp_path / "tiny.onnx"
    cn.onnx.export(loaded.model, path, input_shape=loaded.input_shape)
    with local(create_app(path, runs_dir=tmp_path / "runs", report=False)) as c:
        info = c.get("/api/model").json()
        assert info["source"]["kind"] == "onnx" and info["source"]["folder"] is None
        assert info["samples"]["count"] > 0  # the default digits, for a 1-channel model
        assert c.get("/api/train").json()["watch"] is None
        view = c.get("/api/unit/val-0", params={"layer": info["stages"][0]["name"],
                                                "channel": 1, "row": 0, "col": 0}).json()
    assert view["kind"] == "conv"
    assert view["pre_activation"] == pytest.approx(view["engine_value"], rel=1e-5, abs=1e-6)


def test_an_upsampling_unit_shows_the_pixels_it_reads_and_their_weights(tmp_path):
    import convnet as cn

    x = cn.Input((1, 6, 6))
    conv = cn.Conv2d(1, 2, 3, padding=1)(x)
    smooth = cn.Upsample(scale_factor=2, mode="bilinear")(conv)
    blocky = cn.Upsample(scale_factor=3)(conv)
    model = cn.Model(x, [cn.Flatten()(cn.GlobalAvgPool2d()(smooth)), blocky])
    with local(create_app(model=model, input_shape=(1, 6, 6), dataset="mnist-5k",
                          runs_dir=tmp_path)) as c:
        names = [s["name"] for s in c.get("/api/model").json()["stages"]]
        up_smooth, up_blocky = [n for n in names if n.startswith("up")]
        bilinear = c.get("/api/unit/val-0", params={"layer": up_smooth, "channel": 1,
                                                    "row": 5, "col": 0}).json()
        nearest = c.get("/api/unit/val-0", params={"layer": up_blocky, "channel": 0,
                                                   "row": 7, "col": 17}).json()
    assert bilinear["kind"] == "resize" and bilinear["mode"] == "bilinear"
    # Half-pixel: output row 5 sits at input row (5 + 0.5) / 2 - 0.5 = 2.25: rows 2 and 3
    # weigh 0.75 and 0.25; column 0 at -0.25 is clamped to column 0 (weight 1).
    assert bilinear["row_taps"] == [[2, 0.75], [3, 0.25]] and bilinear["col_taps"] == [[0, 1.0]]
    assert sum(r["weight"] for r in bilinear["reads"]) == pytest.approx(1)
    assert bilinear["result"] == pytest.approx(bilinear["engine_value"], rel=1e-5, abs=1e-6)
    assert nearest["kind"] == "resize" and [(r["row"], r["col"]) for r in nearest["reads"]] == [
        (7 // 3, 17 // 3)]
    assert nearest["result"] == pytest.approx(nearest["engine_value"], rel=1e-6)


def test_padding_and_pixel_shuffle_units_name_the_input_pixel_they_copy(tmp_path):
    import convnet as cn

    x = cn.Input((1, 6, 6))
    conv = cn.Conv2d(1, 4, 3, padding=1)(x)
    padded = cn.ZeroPad2d(1)(conv)  # 4 x 8 x 8
    shuffled = cn.PixelShuffle(2)(padded)  # 1 x 16 x 16
    model = cn.Model(x, cn.Flatten()(cn.GlobalAvgPool2d()(shuffled)))
    with local(create_app(model=model, input_shape=(1, 6, 6), dataset="mnist-5k",
                          runs_dir=tmp_path)) as c:
        names = [s["name"] for s in c.get("/api/model").json()["stages"]]
        pad = next(n for n in names if n.startswith("pad"))
        shuffle = next(n for n in names if n.startswith("shuffle"))

        def unit(layer, channel, row, col):
            return c.get("/api/unit/val-0", params={"layer": layer, "channel": channel,
                                                    "row": row, "col": col}).json()

        border, inside = unit(pad, 2, 0, 3), unit(pad, 2, 4, 3)
        # PixelShuffle: output (0, 5, 6) comes from channel (5 % 2) * 2 + 6 % 2 = 2 of the
        # padded map, at (5 // 2, 6 // 2) = (2, 3).
        moved = unit(shuffle, 0, 5, 6)
    assert border["kind"] == "moved" and border["source"] is None and border["result"] == 0
    assert inside["source"] == [2, 3, 2]  # padding 1 moves (3, 2) of conv1 to (4, 3)
    assert inside["result"] == pytest.approx(inside["engine_value"], rel=1e-6)
    assert moved["source"] == [2, 2, 3]
    assert moved["result"] == pytest.approx(moved["engine_value"], rel=1e-6)

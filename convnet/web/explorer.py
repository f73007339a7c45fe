"""What the explorer page asks of a model, answered as plain JSON-ready dicts.

An Explorer holds one model (a run's, a fresh zoo model, or a live copy of one in training),
its preprocessing, a set of sample images and the images uploaded so far. Layer caches live on
the layers, so every computation takes the lock: requests run in parallel threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convnet.core.arithmetic import ReceptiveField, effective_size
from convnet.io.checkpoint import LoadedModel
from convnet.nn.conv import Conv2d
from convnet.nn.graph import Model
from convnet.nn.window import WindowLayer
from convnet.viz.filters import filter_tiles, is_colour_layer, resolve_conv
from convnet.viz.images import colorize, data_url, enlarge, overlay, png_bytes, rescale, to_uint8
from convnet.viz.probe import (
    class_probabilities,
    input_names,
    layer_index,
    layer_outputs,
    stage_fields,
    stage_graph,
    stage_outputs,
    top_level,
)
from convnet.viz.saliency import default_cam_layer, grad_cam, saliency_map
from convnet.viz.top_images import filter_strengths, top_activating
from convnet.web.encode import b64, encode_image, encode_maps, encode_vector
from convnet.web.gate import ENGINE_GATE

MAX_MAPS = 64  # maps per layer sent to the page
MAX_STAGES_WITH_MAPS = 40  # a larger model's maps are fetched per stage (/api/activations)
COLLAPSE_FROM = 60  # graphs with more stages open with their blocks collapsed
SPRITE_COLUMNS = 12
MAX_FILTERS = 64
MAX_FILTER_CHANNELS = 16
TOP_POOL = 2000  # sample images searched for the top-activating ones
UPLOADS_KEPT = 64


class NotFound(KeyError):
    """An image id, layer or class the explorer does not have (HTTP 404)."""


class BadRequest(ValueError):
    """A request the explorer understood but cannot answer (HTTP 400/422)."""


@dataclass
class Source:
    kind: str  # "run", "zoo", "file", "python", "training"
    name: str  # for display: a zoo name, a model file's stem, a run's model
    folder: str | None = None
    note: str = ""
    zoo_name: str | None = None  # set when the model is a zoo model (training can rebuild it)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "folder": self.folder, "note": self.note,
                "zoo_name": self.zoo_name}


def model_label(name: str) -> str:
    """A short name for a zoo name or a model file path."""
    return Path(name).stem if name.endswith(".toml") else name


@dataclass
class Samples:
    """Images the page can pick from, with labels (a Dataset's images and labels)."""

    images: np.ndarray  # (N, C, H, W) uint8
    labels: np.ndarray  # (N,), or masks (N, H, W) for a segmenter
    description: str
    note: str = ""
    ignore_label: int | None = None  # masks: the value of pixels without a class

    @classmethod
    def from_dataset(cls, dataset, description: str) -> Samples:
        return cls(dataset.images, dataset.labels, description, "; ".join(dataset.notes),
                   getattr(dataset, "ignore_label", None))

    @property
    def has_masks(self) -> bool:
        return self.labels.ndim == 3


def _formula(n: int, f: int, s: int, before: int, after: int, out: int) -> str:
    pad = f"2*{before}" if before == after else f"{before}+{after}"
    return f"({n} - {f} + {pad})/{s} + 1 = {out}"


def window_arithmetic(layer: WindowLayer, row) -> dict:
    """The lecture's arithmetic for one conv or pool layer with its real numbers.

    The output sizes come from the layer's own geometry (convnet.core.arithmetic.window_output);
    the formula text only shows how they come about.
    """
    window = row.window
    top, bottom, left, right = window["padding"]
    kernel, stride, dilation = window["kernel"], window["stride"], window["dilation"]
    effective = [effective_size(kernel[i], dilation[i]) for i in range(2)]
    axes = []
    for i, (name, before, after) in enumerate((("height", top, bottom),
                                               ("width", left, right))):
        axes.append({"axis": name, "n": window["input_hw"][i], "f": effective[i],
                     "s": stride[i], "p_before": before, "p_after": after,
                     "out": window["output_hw"][i], "dropped": window["dropped"][i],
                     "text": _formula(window["input_hw"][i], effective[i], stride[i], before,
                                      after, window["output_hw"][i])})
    depth_in = row.input_shape[0]
    result = {"kind": "conv" if isinstance(layer, Conv2d) else "pool", "axes": axes,
              "kernel": kernel, "stride": stride, "dilation": dilation,
              "padding": window["padding"], "input": list(row.input_shape),
              "output": list(row.output_shape)}
    if isinstance(layer, Conv2d):
        per_filter = kernel[0] * kernel[1] * (depth_in // layer.groups)
        bias = 1 if layer.bias is not None else 0
        result["filters"] = layer.out_channels
        result["params_text"] = (
            f"{kernel[0]}*{kernel[1]}*{depth_in // layer.groups}"
            f"{' + 1' if bias else ''} = {per_filter + bias} per filter; "
            f"{layer.out_channels} x {per_filter + bias} = {row.params:,}")
    else:
        result["params_text"] = "no parameters: each map is pooled on its own, depth unchanged"
    return result


def _encoded(name: str, kind: str, value) -> dict:
    """A stage's output for the page: maps (C, H, W) as images, anything else as a vector."""
    spatial = value.ndim == 3 and value.shape[1] * value.shape[2] > 1
    encoded = encode_maps(value, MAX_MAPS) if spatial else encode_vector(value)
    return {"name": name, "type": kind, "shape": [int(v) for v in value.shape], **encoded}


@dataclass
class Explorer:
    loaded: LoadedModel
    source: Source
    samples: Samples | None = None
    dataset: str | None = None  # the dataset the page trains on when the model has none
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    version: int = 0
    _uploads: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _strengths: dict = field(default_factory=dict, repr=False)
    _pending: dict | None = field(default=None, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)
    _sample_iou: tuple | None = field(default=None, repr=False)  # (version, result) cached

    # -- the model -------------------------------------------------------------------------
    @property
    def model(self):
        return self.loaded.model

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.loaded.input_shape)

    def input_habits(self) -> dict:
        """What the model's training images looked like, for fitting an upload or a drawing to
        them: light strokes on a dark background? MNIST's centring?"""
        from convnet.data.prepare import expects_light_on_dark, is_mnist_like

        dataset = self.loaded.config.get("dataset") or self.dataset
        return {"light_on_dark": expects_light_on_dark(self.input_shape,
                                                       self.loaded.normalization, dataset),
                "mnist_like": is_mnist_like(self.input_shape, dataset)}

    def replace(self, loaded: LoadedModel, source: Source, samples: Samples | None) -> None:
        """Show another model (a run that has started training, say)."""
        with self.lock:
            self.loaded, self.source, self.samples = loaded, source, samples
            self._pending = None
            self._changed()

    def offer_weights(self, state: dict) -> None:
        """New weights from another thread (a trainer); copied in at the next request, so the
        trainer never waits for a page's computation."""
        self._pending = {name: np.array(value, copy=True) for name, value in state.items()}

    def _sync(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self.model.load_state_dict(pending)
            self._changed()

    def _changed(self) -> None:
        self.version += 1
        self._strengths.clear()
        self._cache.clear()
        self._sample_iou = None

    @property
    def task(self) -> str:
        """"segment" for a model with a score per class and pixel, else "classify"."""
        from convnet.nn.graph import first_output_shape
        from convnet.training.tasks import for_output

        return for_output(first_output_shape(self.model, self.input_shape))

    def _rf_by_layer(self) -> dict[str, tuple[ReceptiveField, tuple]]:
        """Receptive field after each stage (a chain's top-level layer, a graph's node), and
        its output shape."""
        return stage_fields(self.model, self.input_shape)

    def info(self) -> dict:
        with self.lock:
            self._sync()
            model = self.model
            summary = model.describe(self.input_shape)
            top = {layer.name for layer in top_level(model)}
            modules = {module.name: module for module in list(model.modules())[1:]}
            layers = []
            for row in summary.rows:
                layer = modules.get(row.name)
                entry = {
                    "name": row.name, "type": row.type, "depth": row.depth,
                    "input_shape": list(row.input_shape), "output_shape": list(row.output_shape),
                    "params": row.params, "formula": row.formula,
                    "receptive_field": list(row.receptive_field), "jump": list(row.jump),
                    "macs": row.macs, "top_level": row.name in top,
                    "has_maps": row.name in top and len(row.output_shape) == 3,
                    "has_filters": isinstance(layer, Conv2d),
                    "arithmetic": (window_arithmetic(layer, row)
                                   if isinstance(layer, WindowLayer) and row.window else None),
                    "sharing": row.sharing, "whole_image": len(row.output_shape) != 3,
                }
                layers.append(entry)
            try:
                cam_default = default_cam_layer(model, self.input_shape)
            except ValueError:
                cam_default = None
            samples = self.samples
            stages = self.stages_info()
            graph = isinstance(model, Model)
            blocks = self._blocks() if graph else []
            return {
                "stages": stages, "graph": graph,
                "blocks": [{"id": b.id, "label": b.label, "title": b.title,
                            "members": b.members} for b in blocks],
                "collapsed_default": [b.id for b in blocks] if len(stages) >= COLLAPSE_FROM
                else [],
                "maps_per_stage": len(stages) > MAX_STAGES_WITH_MAPS,
                "accuracy": self.accuracy(),
                "input_habits": self.input_habits(),
                "source": self.source.to_dict(), "version": self.version,
                "input_shape": list(self.input_shape), "class_names": self.loaded.class_names,
                "normalization": self.loaded.normalization,
                "total_params": summary.total_params, "total_macs": summary.total_macs,
                "output_shape": list(summary.output_shape), "layers": layers,
                "gradcam_default": cam_default, "task": self.task,
                "samples": {"count": len(samples.labels) if samples else 0,
                            "description": samples.description if samples else "",
                            "note": samples.note if samples else
                            "no sample images here: upload one"},
            }

    def stages_info(self) -> list[dict]:
        """Every stage (a chain's top-level layer, a graph's node): what it reads, its output
        and which inside view its units have."""
        from convnet.viz.unit import view_kind

        fields = stage_fields(self.model, self.input_shape)
        found = []
        for stage in stage_graph(self.model):
            rf, shape = fields[stage.name]
            spatial = len(shape) == 3 and shape[1] * shape[2] > 1
            found.append({"name": stage.name, "layer": stage.layer.name,
                          "type": type(stage.layer).__name__, "inputs": stage.inputs,
                          "readers": stage.readers, "output_shape": list(shape),
                          "maps": "maps" if spatial else "vector",
                          "unit": view_kind(stage.layer),
                          "receptive_field": list(rf.size), "jump": list(rf.jump),
                          "whole_image": len(shape) != 3})
        return found

    def _blocks(self):
        from convnet.viz.network import find_blocks

        key = ("blocks", id(self.model))
        if self._cache.get("blocks_key") != key:
            self._cache["blocks_key"] = key
            self._cache["blocks"] = find_blocks(stage_graph(self.model))
        return self._cache["blocks"]

    def network(self, collapsed: list[str] | None = None) -> dict:
        """The graph as boxes and arrows (convnet.viz.network.layout), with these blocks
        collapsed (None: the default, all of them for a large graph)."""
        from convnet.viz.network import layout

        with self.lock:
            model = self.model
            if not isinstance(model, Model):
                raise BadRequest("the network view is for graph models; this model is a chain "
                                 "of layers (see its layer table)")
            blocks = self._blocks()
            known = {block.id for block in blocks}
            if collapsed is None:
                stages = stage_graph(model)
                collapsed = sorted(known) if len(stages) >= COLLAPSE_FROM else []
            unknown = sorted(set(collapsed) - known)
            if unknown:
                raise NotFound(f"no block {', '.join(unknown)}; blocks: "
                               f"{', '.join(sorted(known)) or 'none'}")
            fields = stage_fields(model, self.input_shape)
            shapes = {name: shape for name, (_, shape) in fields.items()}
            plan = model.plan(list(model.input_shapes))
            inputs = [(model.slot_names[s], plan[s]) for s in model.input_slots]
            return {"version": self.version,
                    **layout(stage_graph(model), shapes, inputs, collapsed, blocks)}

    def accuracy(self) -> dict | None:
        """Which accuracy belongs to which split and checkpoint (viz.run.accuracy_story)."""
        from convnet.viz.run import accuracy_story

        folder = self.source.folder
        if not folder:
            return None
        story = accuracy_story(folder, self.loaded.path)
        if self.source.kind == "training":
            story["lines"].append("weights shown: the run's live weights, refreshed as it "
                                  "trains")
        return story

    # -- images ------------------------------------------------------------------------------
    def add_upload(self, image: np.ndarray, name: str, notes: list[str]) -> str:
        digest = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest()[:16]
        image_id = f"up-{digest}"
        with self.lock:
            self._uploads[image_id] = (image, None, name, notes)
            self._uploads.move_to_end(image_id)
            while len(self._uploads) > UPLOADS_KEPT:
                self._uploads.popitem(last=False)
        return image_id

    def image(self, image_id: str) -> tuple[np.ndarray, int | None, str, list[str]]:
        """(uint8 (C, H, W), label or None, description, notes) of a sample or an upload."""
        if image_id.startswith("val-") and image_id[4:].isdigit():
            index = int(image_id[4:])
            samples = self.samples
            if samples is None or index >= len(samples.labels):
                raise NotFound(f"no sample image {image_id}; samples are val-0 .. "
                               f"val-{len(samples.labels) - 1 if samples else -1}")
            image = samples.images[index]
            if tuple(image.shape) != self.input_shape:
                raise NotFound(f"{image_id} does not fit the current model; reload the page")
            label = None if samples.has_masks else int(samples.labels[index])
            return image, label, f"sample {index}", []
        with self.lock:
            if image_id in self._uploads:
                image, label, name, notes = self._uploads[image_id]
                if tuple(image.shape) != self.input_shape:
                    raise NotFound(f"{image_id} was uploaded for another model; upload it again")
                return image, label, name, notes
        raise NotFound(f"unknown image {image_id!r}: upload it again (the server keeps the last "
                       f"{UPLOADS_KEPT} uploads) or pick a sample")

    def sample_list(self, offset: int = 0, limit: int = 48) -> dict:
        samples = self.samples
        if samples is None:
            return {"count": 0, "offset": 0, "items": [], "note": "no sample images"}
        names = self.loaded.class_names
        stop = min(len(samples.labels), offset + limit)
        if samples.has_masks:  # no one label: the classes in the mask, background left out
            items = [{"id": f"val-{i}", "index": i, "label": None,
                      "class_name": "+".join(names[c] for c in np.unique(samples.labels[i])
                                             if 0 < c < len(names)) or names[0]}
                     for i in range(offset, stop)]
        else:
            items = [{"id": f"val-{i}", "index": i, "label": int(samples.labels[i]),
                      "class_name": names[int(samples.labels[i])]
                      if int(samples.labels[i]) < len(names) else str(samples.labels[i])}
                     for i in range(offset, stop)]
        size = samples.images.shape[2:]
        for position, item in enumerate(items):
            row, column = divmod(position, SPRITE_COLUMNS)
            item["sprite"] = [column, row]  # the tile's place in /api/samples/sprite.png
        return {"count": len(samples.labels), "offset": offset, "items": items,
                "description": samples.description,
                "sprite": {"columns": SPRITE_COLUMNS, "tile": [int(size[0]), int(size[1])]}}

    def sprite_png(self, offset: int = 0, limit: int = 60, scale: int = 2) -> bytes:
        """Thumbnails offset .. offset+limit side by side in rows of SPRITE_COLUMNS (the
        gallery's one request; `sample_list` gives each one's place)."""
        from convnet.viz.images import image_hwc, tile_grid

        samples = self.samples
        if samples is None or offset >= len(samples.labels):
            raise NotFound("no sample images there")
        images = samples.images[offset:offset + limit]
        tiles = np.stack([enlarge(image_hwc(image), scale) for image in images])
        return png_bytes(tile_grid(tiles, columns=SPRITE_COLUMNS, pad=0, fill=0))

    def image_png(self, image_id: str, scale: int = 1) -> bytes:
        from convnet.viz.images import image_hwc

        image = self.image(image_id)[0]
        return png_bytes(enlarge(image_hwc(image), max(1, min(int(scale), 16))))

    # -- computations ------------------------------------------------------------------------
    @contextlib.contextmanager
    def computing(self):
        """Forward and backward passes: the engine's turn first (see gate.py), then the model."""
        with ENGINE_GATE.turn(), self.lock:
            yield

    def predict(self, image_id: str, top_k: int = 5, maps: bool = True,
                layers: list[str] | None = None) -> dict:
        """Top-k probabilities and every stage's maps (or only those of `layers`; a model of
        more than MAX_STAGES_WITH_MAPS stages sends none unless asked: see `activations`)."""
        image, label, description, notes = self.image(image_id)
        with self.computing():
            self._sync()
            x = self.loaded.preprocess(image[None])
            outputs = layer_outputs(self.model, x)
            scores = np.asarray(outputs[-1].output[0], dtype=np.float64)
            if scores.ndim == 3:  # a segmenter: the classes by their share of the pixels
                counts = np.bincount(scores.argmax(axis=0).ravel(), minlength=len(scores))
                probabilities = counts / counts.sum()
            elif outputs[-1].type == "Softmax":
                probabilities = scores
            else:
                shifted = np.exp(scores - scores.max())
                probabilities = shifted / shifted.sum()
            names = self.loaded.class_names
            order = np.argsort(-probabilities, kind="stable")[:max(1, top_k)]
            result = {
                "image": image_id, "description": description, "notes": notes,
                "label": label,
                "label_name": (names[label] if label < len(names) else str(label))
                if label is not None else None,
                "version": self.version, "input": encode_image(image),
                "top_k": [{"index": int(i), "name": names[int(i)],
                           "probability": float(probabilities[i])} for i in order],
                "predicted": int(order[0]),
            }
            if maps:
                wanted = set(layers) if layers is not None else (
                    set() if len(outputs) > MAX_STAGES_WITH_MAPS else None)
                result["layers"] = [_encoded(out.name, out.type, out.output[0])
                                    for out in outputs if wanted is None or out.name in wanted]
            return result

    def activations(self, image_id: str, stage: str) -> dict:
        """One stage's output for an image, encoded as in `predict`."""
        outputs = self._stage_outputs(image_id)
        if stage not in outputs or stage in input_names(self.model):
            raise NotFound(f"no stage {stage!r}; stages: "
                           f"{', '.join(s.name for s in stage_graph(self.model))}")
        layer = next(s.layer for s in stage_graph(self.model) if s.name == stage)
        return {"image": image_id, "version": self.version,
                **_encoded(stage, type(layer).__name__, outputs[stage][0])}

    def _stage_outputs(self, image_id: str) -> dict:
        """Every stage's output for an image (kept for the last image: stepping through units
        of one picture runs the model once)."""
        image = self.image(image_id)[0]
        with self.computing():
            self._sync()
            key = (image_id, self.version, image.tobytes().__hash__())
            cached = self._cache.get("outputs")
            if cached is not None and cached[0] == key:
                return cached[1]
            outputs = stage_outputs(self.model, self.loaded.preprocess(image[None]))
            self._cache["outputs"] = (key, outputs)
            return outputs

    def unit(self, image_id: str, stage: str, channel: int, row: int = 0, col: int = 0) -> dict:
        """Inside one output unit (convnet.viz.unit.unit_view), with its receptive field on the
        input and the input planes its window slides over."""
        from convnet.viz.unit import UnitError, unit_view

        outputs = self._stage_outputs(image_id)
        with self.lock:
            stages = stage_graph(self.model)
            try:
                view = unit_view(stages, outputs, stage, channel, row, col)
            except KeyError as error:
                raise NotFound(error.args[0]) from None
            except UnitError as error:
                raise BadRequest(str(error)) from None
            fields = self._rf_by_layer()
            view["version"] = self.version
            view["image"] = image_id
            if len(view["output_shape"]) == 3:
                view["receptive_field"] = self._field(stage, fields[stage], row, col)
            else:
                view["receptive_field"] = {"whole_image": True}
            if view.get("planes") is not None and view["inputs"]:
                source = outputs[view["inputs"][0]][0]
                view["plane_maps"] = encode_maps(source[view["planes"]], MAX_MAPS)
                view["plane_names"] = [int(c) for c in view["planes"]]
            if stage == stages[-1].name and len(view["output_shape"]) == 1 and \
                    view["output_shape"][0] == len(self.loaded.class_names):
                view["class_name"] = self.loaded.class_names[channel]
            return view

    def segment(self, image_id: str) -> dict:
        """A segmenter on one image: the input, the true mask (a sample's), the predicted mask
        and the overlay as PNG data URLs; this image's IoU per class; and the IoU per class over
        the samples (the validation split of a run), computed once per model version."""
        from convnet.training.metrics import SegmentationEvaluation, confusion_matrix
        from convnet.viz.images import as_rgb, image_hwc
        from convnet.viz.segmentation import (
            class_colours,
            colour_mask,
            overlay_mask,
            predict_masks,
        )

        if self.task != "segment":
            raise BadRequest("this model gives one class per image, not a mask: the "
                             "segmentation view is for segmenters (output classes x H x W)")
        image, _, description, notes = self.image(image_id)
        names = self.loaded.class_names
        k = len(names)
        samples = self.samples
        index = int(image_id[4:]) if image_id.startswith("val-") else None
        truth = (samples.labels[index] if index is not None and samples is not None
                 and samples.has_masks else None)
        ignore = samples.ignore_label if samples is not None else None
        with self.computing():
            self._sync()
            predicted = predict_masks(self.model, self.loaded.preprocess, image[None])[0]
            overall = self._samples_iou() if samples is not None and samples.has_masks else None

        def url(picture):
            return data_url(png_bytes(picture))

        result = {"image": image_id, "description": description, "notes": notes,
                  "version": self.version, "class_names": names,
                  "colours": ["#" + "".join(f"{int(v):02x}" for v in c)
                              for c in class_colours(k)],
                  "input": url(as_rgb(image_hwc(image))),
                  "predicted": url(colour_mask(predicted, k)),
                  "overlay": url(overlay_mask(image, predicted, k)),
                  "pixels": {names[c]: int(n) for c, n in
                             enumerate(np.bincount(predicted.ravel(), minlength=k)) if n},
                  "truth": None, "image_iou": None, "samples_iou": overall}
        if truth is not None:
            mine = SegmentationEvaluation(float("nan"), confusion_matrix(truth, predicted, k,
                                                                         ignore), names, 1)
            result["truth"] = url(colour_mask(truth, k, ignore))
            result["image_iou"] = _iou_dict(mine)
        return result

    def _samples_iou(self) -> dict:
        """IoU per class over every sample image (cached until the weights change)."""
        from convnet.training.metrics import SegmentationEvaluation, confusion_matrix
        from convnet.viz.segmentation import predict_masks

        if self._sample_iou is not None and self._sample_iou[0] == self.version:
            return self._sample_iou[1]
        samples, names = self.samples, self.loaded.class_names
        predicted = predict_masks(self.model, self.loaded.preprocess, samples.images)
        confusion = confusion_matrix(samples.labels, predicted, len(names), samples.ignore_label)
        result = {**_iou_dict(SegmentationEvaluation(float("nan"), confusion, names,
                                                     len(samples.labels))),
                  "description": samples.description}
        self._sample_iou = (self.version, result)
        return result

    def receptive_field(self, layer: str, row: int, col: int) -> dict:
        with self.lock:
            fields = self._rf_by_layer()
        if layer not in fields:
            raise NotFound(f"no top-level layer {layer!r}; layers: {', '.join(fields)}")
        return self._field(layer, fields[layer], row, col)

    def _field(self, layer: str, found, row: int, col: int) -> dict:
        rf, shape = found
        if len(shape) != 3:
            raise BadRequest(f"{layer} outputs a vector {shape}: each of its units sees the "
                             f"whole input")
        if not (0 <= row < shape[1] and 0 <= col < shape[2]):
            raise BadRequest(f"unit ({row}, {col}) is outside {layer}'s {shape[1]}x{shape[2]} "
                             f"maps")
        top, left, height, width = rf.window_on_input(row, col)
        in_h, in_w = self.input_shape[1:]
        whole = top <= 0 and left <= 0 and top + height >= in_h and left + width >= in_w
        clip_top, clip_left = max(top, 0), max(left, 0)
        clip_bottom, clip_right = min(top + height, in_h), min(left + width, in_w)
        return {"layer": layer, "row": row, "col": col, "top": top, "left": left,
                "height": height, "width": width, "jump": list(rf.jump),
                "clipped": {"top": clip_top, "left": clip_left,
                            "height": max(clip_bottom - clip_top, 0),
                            "width": max(clip_right - clip_left, 0)},
                "input_hw": [in_h, in_w], "whole_image": whole}

    def filters(self, layer: str | None) -> dict:
        with self.lock:
            self._sync()
            try:
                conv = resolve_conv(self.model, layer)
            except KeyError as error:
                raise NotFound(error.args[0]) from None
            except ValueError as error:
                raise BadRequest(str(error)) from None
            colour = is_colour_layer(self.model, conv)
            weight = np.asarray(conv.weight.data)
            tiles = to_uint8(filter_tiles(weight, colour))[:MAX_FILTERS]
            if not colour:
                tiles = tiles[:, :MAX_FILTER_CHANNELS]
            k, c, kh, kw = weight.shape
            top = {item.name for item in top_level(self.model)}
            return {"layer": conv.name, "shape": [k, c, kh, kw], "rgb": colour,
                    "shown_filters": int(tiles.shape[0]),
                    "shown_channels": 3 if colour else int(tiles.shape[1]),
                    "top_level": conv.name in top, "version": self.version,
                    "min": [float(v) for v in weight.min(axis=(1, 2, 3))[:MAX_FILTERS]],
                    "max": [float(v) for v in weight.max(axis=(1, 2, 3))[:MAX_FILTERS]],
                    "filters": [b64(tile) for tile in tiles]}

    def explain(self, image_id: str, class_index: int | None = None,
                layer: str | None = None) -> dict:
        image, _, _, _ = self.image(image_id)
        if self.task == "segment":
            raise BadRequest("saliency and Grad-CAM explain one class score per image; a "
                             "segmenter scores every pixel: see its masks (/api/segment/ID)")
        with self.computing():
            self._sync()
            x = self.loaded.preprocess(image[None])
            probabilities = class_probabilities(self.model, self.loaded.preprocess,
                                                image[None])[0]
            names = self.loaded.class_names
            index = int(probabilities.argmax()) if class_index is None else int(class_index)
            if not 0 <= index < len(names):
                raise BadRequest(f"class_index must be in [0, {len(names) - 1}], received "
                                 f"{index}")
            saliency = saliency_map(self.model, x, index)
            try:
                cam = grad_cam(self.model, x, index, layer)
            except KeyError as error:
                raise NotFound(error.args[0]) from None
            except ValueError as error:
                raise BadRequest(str(error)) from None
            heat = cam.on_input(image.shape[1:])
            return {"image": image_id, "class_index": index, "class_name": names[index],
                    "probability": float(probabilities[index]), "version": self.version,
                    "saliency": data_url(png_bytes(colorize(rescale(saliency), "hot"))),
                    "saliency_range": [float(saliency.min()), float(saliency.max())],
                    "gradcam": data_url(png_bytes(overlay(image, heat))),
                    "gradcam_layer": cam.layer,
                    "gradcam_shape": [int(v) for v in cam.cam.shape]}

    def top_images(self, layer: str, filter_index: int, k: int = 8) -> dict:
        samples = self.samples
        if samples is None:
            raise BadRequest("there are no sample images to search; start the server with a "
                             "run folder or --dataset")
        with self.computing():
            self._sync()
            try:
                layer_index(self.model, layer)
            except KeyError as error:
                raise NotFound(error.args[0]) from None
            pool = samples.images[:TOP_POOL]
            if layer not in self._strengths:
                try:
                    self._strengths[layer] = filter_strengths(
                        self.model, self.loaded.preprocess(pool), layer)
                except ValueError as error:
                    raise BadRequest(str(error)) from None
            strengths = self._strengths[layer]
            try:
                indices, values = top_activating(strengths, filter_index, k)
            except ValueError as error:
                raise BadRequest(str(error)) from None
            names = self.loaded.class_names
            return {"layer": layer, "filter": filter_index, "searched": len(pool),
                    "version": self.version,
                    "items": [{"id": f"val-{int(i)}", "index": int(i),
                               "activation": float(v),
                               "class_name": names[int(samples.labels[i])]}
                              for i, v in zip(indices, values, strict=True)]}


def _iou_dict(evaluation) -> dict:
    """Mean IoU, pixel accuracy and IoU per class (None where a class is neither labelled nor
    predicted) of a SegmentationEvaluation, for JSON."""
    def plain(value):
        return None if np.isnan(value) else float(value)

    return {"mean_iou": plain(evaluation.mean_iou), "pixel_accuracy": plain(evaluation.accuracy),
            "per_class": {name: plain(v) for name, v in
                          zip(evaluation.class_names, evaluation.per_class_iou, strict=True)},
            "images": evaluation.images}

"""Run folders and checkpoints: weights in safetensors, configuration in JSON, written atomically.

A run folder holds:
    config.json                 model spec, input shape, class names, normalization, training setup
    metrics.jsonl               one JSON object per epoch
    checkpoints/last.safetensors  the latest state (weights, optimizer arrays, resume state)
    checkpoints/best.safetensors  the best state by validation accuracy

A checkpoint is one safetensors file: model arrays under their state-dict names, optimizer
arrays under 'optimizer.<index>.<name>', and the JSON resume state in its metadata. One file
means one atomic rename: a checkpoint is either the old one or the new one, never half.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from convnet.core.backend import to_numpy
from convnet.core.files import atomic_write, write_json
from convnet.io.spec import SpecError, build, model_inputs, to_spec
from convnet.nn.graph import first_output, first_output_shape
from convnet.nn.layer import Layer

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
EVALUATION = "evaluation.json"  # held-out accuracy of a checkpoint, written by `convnet demo`
OPTIMIZER_PREFIX = "optimizer."
MAX_CLASSES = 1_000_000  # scores per image a model may output when its classes have no names


class CheckpointError(Exception):
    """A run folder or checkpoint that cannot be read or written; the message says why."""


def save_checkpoint(path: Path, model: Layer, state: dict, optimizer=None) -> None:
    """Weights (+ optimizer arrays) as safetensors, with `state` as JSON metadata."""
    tensors = {name: np.asarray(to_numpy(value), order="C")
               for name, value in model.state_dict().items()}
    metadata = {"state": json.dumps(state)}
    if optimizer is not None:
        saved = optimizer.state_dict()
        for key, value in saved.pop("arrays").items():
            tensors[OPTIMIZER_PREFIX + key] = np.asarray(to_numpy(value), order="C")
        metadata["optimizer"] = json.dumps(saved)
    path = Path(path)
    needed = sum(t.nbytes for t in tensors.values()) + sum(map(len, metadata.values())) + 4096
    kept = ("the previous checkpoint there is kept" if path.exists() else "nothing was written")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if free < needed:
            raise CheckpointError(f"cannot save {path}: it needs about {needed:,} bytes and "
                                  f"{path.parent} has {free:,} free; {kept}. Free some space "
                                  f"and resume")
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    except (OSError, SafetensorError) as error:
        reason = (error.strerror if isinstance(error, OSError) and error.strerror else
                  str(error).split("I/O error: ")[-1])  # safetensors: "... I/O error: <os's>"
        raise CheckpointError(f"cannot save {path} ({reason}); it needs about {needed:,} bytes; "
                              f"{kept}. Free some space and resume") from None


def read_checkpoint(path: Path) -> tuple[dict, dict, dict, dict | None]:
    """(model arrays, optimizer arrays, state, optimizer hyperparameters) of a checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
        state = json.loads(metadata.get("state", "{}"))
        optimizer = json.loads(metadata["optimizer"]) if "optimizer" in metadata else None
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({error}); it may be truncated or corrupt. "
            f"Use the other checkpoint in {path.parent} or retrain"
        ) from None
    model_arrays = {k: v for k, v in tensors.items() if not k.startswith(OPTIMIZER_PREFIX)}
    optimizer_arrays = {k[len(OPTIMIZER_PREFIX):]: v for k, v in tensors.items()
                        if k.startswith(OPTIMIZER_PREFIX)}
    return model_arrays, optimizer_arrays, state, optimizer


def checkpoint_state(path: Path) -> dict:
    """The JSON resume state of a checkpoint, without reading its arrays."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            state = json.loads((handle.metadata() or {}).get("state", "{}"))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable checkpoint ({error})") from None
    return state if isinstance(state, dict) else {}


def which_checkpoint(path) -> str | None:
    """'best' or 'last' for a run's checkpoint file, None for another file."""
    path = Path(path) if path is not None else None
    if path is None or path.suffix != ".safetensors" or path.parent.name != CHECKPOINTS:
        return None
    return path.stem if path.stem in ("best", "last") else None


def write_evaluation(folder, record: dict) -> Path:
    """Record a held-out evaluation in the run folder: {"dataset", "split", "checkpoint",
    "epoch", "accuracy", "count", ...}; the report and the explorer show it."""
    path = Path(folder) / EVALUATION
    write_json(path, record)
    return path


def read_evaluation(folder) -> dict | None:
    """The recorded held-out evaluation of a run folder, or None."""
    if folder is None:
        return None
    path = Path(folder) / EVALUATION
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def checkpoint_epoch(path) -> int | None:
    """The epochs done when a checkpoint was written, or None (no state, unreadable)."""
    try:
        epoch = checkpoint_state(path).get("epoch")
    except CheckpointError:
        return None
    return int(epoch) if isinstance(epoch, int) else None


def load_weights(model: Layer, arrays: dict, source) -> None:
    try:
        model.load_state_dict(arrays)
    except (KeyError, ValueError) as error:
        raise CheckpointError(
            f"{source} does not fit this model's architecture: {error}. Was it saved from a "
            f"different model? Load it with the config.json of its own run"
        ) from None


@dataclass
class LoadedModel:
    """A trained model with what it needs to preprocess inputs (`cn.load`'s result)."""

    model: Layer
    input_shape: tuple[int, int, int]
    class_names: list[str]
    normalization: dict | None = None  # {'mean': [...], 'std': [...]} in [0, 1] pixel units
    config: dict = field(default_factory=dict)
    path: Path | None = None

    def preprocess(self, images):
        """uint8 (N, C, H, W) pixels -> normalized float32, as in training."""
        x = np.asarray(images, dtype=np.float32) / 255.0
        if self.normalization:
            mean = np.asarray(self.normalization["mean"], dtype=np.float32)[:, None, None]
            std = np.asarray(self.normalization["std"], dtype=np.float32)[:, None, None]
            x = (x - mean) / std
        return x.astype(np.float32, copy=False)

    def scores(self, images) -> np.ndarray:
        """Raw class scores (N, K) for uint8 images (N, C, H, W), in evaluation mode."""
        from convnet.nn.layer import no_grad

        self.model.eval()
        with no_grad():
            return first_output(self.model.forward(self.preprocess(images)))

    def predict_proba(self, images) -> np.ndarray:
        """Class probabilities (N, K) for uint8 images (N, C, H, W)."""
        from convnet.nn.losses import log_softmax

        return np.exp(log_softmax(self.scores(images).astype(np.float64)))


def run_config(folder: Path) -> dict:
    """A run folder's config.json, checked: a hand-edited value of the wrong kind is named."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a run folder: it has no {CONFIG}")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error})") from None
    problem = config_problem(config)
    if problem:
        raise CheckpointError(f"{path}: {problem}; fix it by hand, or train a new run")
    return config


def is_input_shape(value) -> bool:
    """[C, H, W] of positive integers (what a spec's input_shape must be)."""
    return (isinstance(value, list | tuple) and len(value) == 3 and
            all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


def config_problem(config) -> str | None:
    """What is wrong with a run's config (None if nothing): the kinds every reader relies on."""
    if not isinstance(config, dict):
        return f"expected a JSON object, received {type(config).__name__}"
    model = config.get("model")
    if not isinstance(model, dict):
        return f"'model' must be a model spec (an object), received {model!r:.80}"
    shape = model.get("input_shape")
    if "inputs" in model and "input_shape" not in model:  # a graph with named inputs
        listed = model["inputs"]
        shape = listed[0].get("shape") if isinstance(listed, list) and listed and isinstance(
            listed[0], dict) else None
    if not is_input_shape(shape):
        return (f"model.input_shape must be [C, H, W] of positive integers, received "
                f"{shape!r}")
    classes = config.get("class_names")
    if classes is not None and not (isinstance(classes, list) and
                                    all(isinstance(c, str) for c in classes)):
        return f"class_names must be a list of names, received {classes!r:.80}"
    norm = config.get("normalization")
    if norm is not None:
        channels = shape[0]
        ok = isinstance(norm, dict) and all(
            isinstance(norm.get(k), list) and len(norm[k]) == channels and
            all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in norm[k]) for k in ("mean", "std"))
        if not ok or not all(v > 0 for v in norm["std"]):
            return (f"normalization must be {{\"mean\": [...], \"std\": [...]}} with {channels} "
                    f"number(s) each (std > 0), received {norm!r:.80}")
    if "train" in config and not isinstance(config["train"], dict):
        return f"'train' must be an object of training settings, received {config['train']!r:.80}"
    return None


def build_from_config(config: dict, source) -> Layer:
    try:
        return build(config["model"])
    except (KeyError, SpecError) as error:
        raise CheckpointError(f"{source}: the model in its config cannot be built: {error}") \
            from None


def find_checkpoint(folder: Path, which: str = "best") -> Path:
    """best (falling back to last) or last checkpoint of a run folder."""
    order = [which] + [w for w in ("best", "last") if w != which]
    for name in order:
        path = Path(folder) / CHECKPOINTS / f"{name}.safetensors"
        if path.is_file():
            return path
    raise CheckpointError(f"{folder} has no checkpoints yet (looked in {folder}/{CHECKPOINTS})")


def numbered_classes(output_shape, source) -> list[str]:
    """'0', '1', ... for a model whose classes have no names, one per score it outputs; a
    model that outputs more than MAX_CLASSES scores per image is refused before the list is
    made (an ONNX file declaring a 100000x100000 input once asked for 4 x 10^10 names)."""
    count = int(output_shape[0])
    if count > MAX_CLASSES:
        raise CheckpointError(f"{source}: the model outputs {count:,} scores per image, more "
                              f"than a classifier's one score per class (at most "
                              f"{MAX_CLASSES:,}); is its input shape right?")
    return [str(i) for i in range(count)]


def load(path, which: str = "best") -> LoadedModel:
    """A trained model from a run folder, a .safetensors checkpoint inside one, or an .onnx file."""
    path = Path(path)
    if path.suffix == ".onnx":
        from convnet.io import onnx as convnet_onnx

        model = convnet_onnx.load(path)
        classes = getattr(model, "class_names", None) or numbered_classes(
            first_output_shape(model, model.input_shape), path)
        return LoadedModel(model, tuple(model.input_shape), list(classes),
                           getattr(model, "normalization", None), {}, path)
    if path.is_dir():
        if not (path / CONFIG).is_file():
            raise CheckpointError(f"{path} is not a run folder: it has no {CONFIG}")
        folder, checkpoint = path, find_checkpoint(path, which)
    elif path.is_file():
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path} is not a run folder or a checkpoint: expected a run "
                                  f"folder, a .safetensors checkpoint in one, or an .onnx file")
        checkpoint = path
        folder = path.parent.parent if path.parent.name == CHECKPOINTS else path.parent
        if not (folder / CONFIG).is_file():
            raise CheckpointError(f"{path}: a checkpoint is read with its run's {CONFIG}, and "
                                  f"{folder} has none; pass the run folder it came from")
    else:
        raise CheckpointError(f"{path} does not exist (expected a run folder or a checkpoint)")
    config = run_config(folder)
    model = build_from_config(config, folder)
    arrays, _, _, _ = read_checkpoint(checkpoint)
    load_weights(model, arrays, checkpoint)
    model.eval()
    input_shape = tuple(model_inputs(config["model"])[0][1])
    scores = first_output_shape(model, input_shape)
    classes = config.get("class_names") or numbered_classes(scores, folder)
    if len(classes) != scores[0]:
        raise CheckpointError(f"{folder / CONFIG}: class_names lists {len(classes)} name(s) but "
                              f"the model outputs {scores[0]} scores; one name per score")
    return LoadedModel(model, input_shape, classes, config.get("normalization"), config,
                       checkpoint)


def save_model(folder, model: Layer, input_shape, class_names=None, normalization=None,
               extra: dict | None = None) -> Path:
    """Write `model` as a run folder (config.json + checkpoints/last.safetensors)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"cannot create {folder}: {error.strerror}") from None
    config = {"model": to_spec(model, input_shape), "class_names": class_names,
              "normalization": normalization, **(extra or {})}
    write_json(folder / CONFIG, config)
    save_checkpoint(folder / CHECKPOINTS / "last.safetensors", model, {"epoch": None})
    return folder

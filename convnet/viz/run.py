"""A trained run as the pictures see it: the model, its preprocessing and its validation images.

The validation images are the ones the trainer held out: the run's dataset split again with
its own val_fraction and seed, so the report shows images the model did not train on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from convnet.io.checkpoint import LoadedModel, load, numbered_classes


def validation_set(config: dict, input_shape, download: bool = False):
    """The held-out images of a run (a Dataset), from its config.json; DataError if the
    dataset cannot be read here. Nothing is downloaded unless download=True."""
    from convnet import data

    name = config.get("dataset")
    if not name:
        raise data.DataError("the run's config.json names no dataset")
    train = config.get("train") or {}
    channels, height, width = input_shape
    full = data.load_dataset(name, "train", data_dir=train.get("data_dir"), download=download,
                             image_size=(height, width), channels=channels,
                             class_names=config.get("class_names"))
    _, val = data.train_val_split(full, train.get("val_fraction", 0.1), train.get("seed", 0))
    return val


def sample_set(input_shape, dataset: str | None = None, data_dir=None, class_names=None):
    """Test images for a model without a run (a fresh zoo model, a model file): `dataset`, or
    the embedded digits for 1-channel input; None when there is nothing to read locally."""
    from convnet import data

    channels, height, width = input_shape
    name = dataset or (data.DEFAULT_DATASET if channels == 1 else "cifar10")
    try:
        return data.load_dataset(name, "test", data_dir=data_dir, download=False,
                                 image_size=(height, width), channels=channels,
                                 class_names=class_names)
    except data.DataError:
        if dataset:
            raise
        return None


@dataclass
class Run:
    """A loaded run folder (or checkpoint) and what the pictures need from it."""

    loaded: LoadedModel
    folder: Path | None
    _validation: object = field(default=None, repr=False)
    _validation_error: str | None = field(default=None, repr=False)

    @property
    def model(self):
        return self.loaded.model

    @property
    def metrics_path(self) -> Path | None:
        return self.folder / "metrics.jsonl" if self.folder else None

    def validation(self):
        """The held-out Dataset, or None (see `validation_error` for why)."""
        from convnet.data import DataError

        if self._validation is None and self._validation_error is None:
            try:
                self._validation = validation_set(self.loaded.config, self.loaded.input_shape)
            except DataError as error:
                self._validation_error = str(error)
        return self._validation

    @property
    def validation_error(self) -> str | None:
        return self._validation_error


def open_run(path, which: str = "best") -> Run:
    """A run folder or a checkpoint inside one (CheckpointError if neither)."""
    loaded = load(path, which)
    folder = None
    if loaded.path is not None and loaded.path.suffix == ".safetensors":
        candidate = loaded.path.parent
        folder = candidate.parent if candidate.name == "checkpoints" else candidate
    return Run(loaded, folder)


def open_target(target: str, which: str = "best") -> Run:
    """A run folder or checkpoint, or, for pictures of untrained weights, a zoo model name or a
    .toml model file (freshly initialised, pixels scaled to [0, 1], no validation set)."""
    from convnet.io import modelfile, zoo
    from convnet.io.spec import build, model_inputs
    from convnet.nn.graph import first_output_shape

    path = Path(target)
    spec = None
    if target in zoo.MODELS:
        spec = zoo.spec_for(target)
    elif path.suffix == ".toml" and path.is_file():
        spec = modelfile.load_spec(path)
    if spec is None:
        return open_run(path, which)
    model = build(spec)
    input_shape = model_inputs(spec)[0][1]
    classes = numbered_classes(first_output_shape(model, input_shape), target)
    loaded = LoadedModel(model.eval(), input_shape, classes, None,
                         {"model_name": target, "model": spec}, None)
    return Run(loaded, None, _validation_error=f"{target} is an untrained model with no "
               f"validation images")


def accuracy_story(folder, checkpoint_path=None) -> dict:
    """Which accuracy belongs to which split and which checkpoint, for a run folder:

        {"checkpoint": "best", "checkpoint_epoch": 27,          # the weights being shown
         "best": {"split": "validation", "accuracy", "epoch", "checkpoint": "best"},
         "last": {"split": "validation", "accuracy", "epoch", "checkpoint": "last"},
         "test": {"split": "test", "dataset", "accuracy", "count", "checkpoint", "epoch"},
         "validation": "what the validation split is",
         "lines": [one sentence per accuracy]}

    Parts that are unknown (no metrics yet, no recorded test) are None.
    """
    from convnet.io.checkpoint import (
        CheckpointError,
        checkpoint_epoch,
        read_evaluation,
        run_config,
        which_checkpoint,
    )
    from convnet.viz.curves import read_metrics

    story: dict = {"checkpoint": which_checkpoint(checkpoint_path), "checkpoint_epoch": None,
                   "best": None, "last": None, "test": None, "validation": None, "lines": []}
    if folder is None:
        return story
    folder = Path(folder)
    if checkpoint_path is not None and story["checkpoint"]:
        story["checkpoint_epoch"] = checkpoint_epoch(checkpoint_path)
    try:
        records = [r for r in read_metrics(folder) if r.get("val_accuracy") is not None]
    except (OSError, ValueError):
        records = []
    try:
        config = run_config(folder)
    except CheckpointError:
        config = {}
    train = config.get("train") or {}
    dataset = config.get("dataset")
    if dataset:
        story["validation"] = (f"{train.get('val_fraction', 0.1):.0%} of the {dataset} "
                               f"training split, held out (seed {train.get('seed', 0)}), "
                               f"never trained on")
    if records:
        best = max(records, key=lambda r: r["val_accuracy"])  # the first best, as the trainer
        last = records[-1]
        story["best"] = {"split": "validation", "accuracy": best["val_accuracy"],
                         "epoch": best.get("epoch"), "checkpoint": "best"}
        story["last"] = {"split": "validation", "accuracy": last["val_accuracy"],
                         "epoch": last.get("epoch"), "checkpoint": "last"}
        story["lines"].append(f"best validation accuracy {best['val_accuracy']:.2%} at epoch "
                              f"{best.get('epoch')} (checkpoints/best.safetensors)")
        story["lines"].append(f"last validation accuracy {last['val_accuracy']:.2%} at epoch "
                              f"{last.get('epoch')} (checkpoints/last.safetensors)")
    evaluation = read_evaluation(folder)
    if evaluation and evaluation.get("accuracy") is not None:
        story["test"] = {"split": evaluation.get("split", "test"), **evaluation}
        count = evaluation.get("count")
        story["lines"].append(
            f"held-out {evaluation.get('split', 'test')} accuracy "
            f"{evaluation['accuracy']:.2%} on {count:,} {evaluation.get('dataset', '')} "
            f"images never seen in training ({evaluation.get('checkpoint', 'best')} checkpoint"
            f", epoch {evaluation.get('epoch')})" if count else
            f"held-out test accuracy {evaluation['accuracy']:.2%}")
    if story["checkpoint"]:
        epoch = story["checkpoint_epoch"]
        story["lines"].append(f"weights shown: the {story['checkpoint']} checkpoint"
                              + (f" (epoch {epoch})" if epoch is not None else ""))
    return story

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

"""Training runs: data, model, optimizer and schedule from one config; safe checkpoints; exact
resumption; a progress bar; validation every epoch.

    trainer = Trainer(TrainConfig(model="lenet5", dataset="mnist-5k", epochs=5), "runs/demo")
    summary = trainer.fit()

What the model learns is its task (`convnet.training.tasks`): classification, or segmentation
(a class per pixel, inferred from a dataset of masks or asked for with task="segment"); the
task gives the loss, the figures of a step and of an evaluation, and what picks the best
checkpoint.

Exactness: the batch order and augmentation are pure functions of (seed, epoch, batch), and
a checkpoint holds weights, optimizer state, the schedule's step and the shared generator's
state, so a run interrupted and resumed ends with the same weights as one that was not.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convnet.core import rng
from convnet.core.backend import return_freed_memory
from convnet.io.checkpoint import (
    CHECKPOINTS,
    CONFIG,
    METRICS,
    CheckpointError,
    atomic_write,
    build_from_config,
    checkpoint_state,
    load_weights,
    read_checkpoint,
    run_config,
    save_checkpoint,
    write_json,
)
from convnet.io.runlock import claim
from convnet.io.spec import model_inputs
from convnet.nn.graph import first_output, first_output_gradient, first_output_shape
from convnet.nn.layer import no_grad
from convnet.optim.optimizers import OPTIMIZERS, clip_grad_norm_
from convnet.optim.schedules import ConstantLR, CosineAnnealingLR, LinearWarmup, StepLR
from convnet.training import tasks
from convnet.training.metrics import Evaluation

# Signals that stop a run after the current step, with a checkpoint (see fit()).
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")
# What a checkpoint's state must hold to be resumed from (Trainer._state writes it).
RESUME_STATE = ("epoch", "batch_index", "global_step", "best_val_accuracy", "partial",
                "scheduler", "rng")


class TrainingError(Exception):
    """A run that cannot start or continue; the message says why and what to do."""


class LossDiverged(TrainingError):
    """The loss became NaN or infinite: the learning rate is too high, as a rule."""


@dataclass
class TrainConfig:
    model: str = "lenet5"  # a zoo name or the path of a .toml model file
    dataset: str = "mnist-5k"  # the embedded default works with no download
    data_dir: str | None = None
    epochs: int = 10
    batch_size: int = 64  # the global batch: the same under MPI whatever the process count
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # constant | step | cosine, stepped every iteration
    warmup_epochs: float = 0.0
    val_fraction: float = 0.1
    seed: int = 0
    augment: bool | None = None  # None/True: the dataset's suggestion (crop; + flip for photos)
    clip_grad_norm: float | None = None
    # Under MPI: batch norm with the whole global batch's statistics rather than each process's
    # slice's (one process's training, at one small exchange per layer and direction).
    sync_bn: bool = False
    # Fine-tuning: with `model` a run folder, checkpoint or ONNX file, its weights start the
    # run; replace_head swaps its classifier for a fresh one of this many classes.
    replace_head: int | None = None
    task: str | None = None  # classify | segment; None: segment for a dataset of masks
    # Segmentation only: one loss weight per class, or "balanced" (median frequency balancing
    # over the training masks); None weighs every pixel alike.
    class_weight: list[float] | str | None = None
    ignore_index: int | None = None  # segmentation: the mask value not counted (None: the
    #                                  dataset's own, 255 for a folder of masks, else none)

    def validate(self) -> None:
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.lr > 0, "lr must be > 0"),
            (0 <= self.momentum < 1, "momentum must be in [0, 1)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 < self.val_fraction < 1, "val_fraction must be in (0, 1)"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.schedule in ("constant", "step", "cosine"),
             "schedule must be constant, step or cosine"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (self.seed >= 0, "seed must be >= 0"),
            (self.clip_grad_norm is None or self.clip_grad_norm >= 0,
             "clip_grad_norm must be >= 0 (0 or left out: no clipping)"),
            (self.replace_head is None or self.replace_head >= 1, "replace_head must be >= 1"),
            (self.task in (None, *tasks.TASKS), f"task must be one of {', '.join(tasks.TASKS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainingError(f"invalid training setting: {message}")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The settings saved in a run's config.json, each checked for its kind (a hand-edited
        "epochs": "ten" is named, not a TypeError deep in the trainer)."""
        if not isinstance(data, dict):
            raise TrainingError(f"the training settings must be an object, received {data!r:.80}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name, value in data.items():
            if name in fields and not _of_kind(value, fields[name].type):
                raise TrainingError(f"invalid training setting {name}: expected "
                                    f"{fields[name].type.replace('|', 'or')}, received {value!r}")
        config = cls(**{k: v for k, v in data.items() if k in fields})
        config.validate()
        return config


def _of_kind(value, annotation: str) -> bool:
    """Whether a JSON value fits a TrainConfig field's annotation ('int', 'float | None', ...)."""
    kinds = [kind.strip() for kind in annotation.split("|")]
    if value is None:
        return "None" in kinds
    if isinstance(value, bool):
        return "bool" in kinds
    if isinstance(value, int):
        return "int" in kinds or "float" in kinds
    if isinstance(value, float):
        return "float" in kinds and math.isfinite(value)
    return isinstance(value, str) and "str" in kinds


class LocalGroup:
    """A single process: the trainer's view of data parallelism when MPI is not in use.

    The trainer calls, in order: `root_first(work, what)` to load the data (rank 0 first, so
    that a download happens once), `broadcast_parameters(model)` once at the end of setup; then
    per step `shard(x, y)` on this process's slice of the global batch (its training loader
    has `part=(rank, size)`; the slice may be empty), `allreduce_gradients(params)` after
    backward, `global_statistics(loss, correct, count)` on the local batch's figures (it
    returns the global batch's), and `agree_to_stop(requested)` after the step's callbacks
    (true on every process when any asked to stop). With `sync_bn`, setup calls
    `synchronize_batch_norm(model)` just before `broadcast_parameters`. To validate,
    `share(count)` gives the range of whole batches this process evaluates and
    `allgather(array)` joins every process's per-image results.
    `convnet.training.distributed.MPIGroup` is the many-process one.
    """

    rank = 0
    size = 1
    is_root = True

    def shard(self, x, y):
        return x, y

    def allreduce_gradients(self, params) -> None:
        pass

    def global_statistics(self, loss: float, correct: int, count: int) -> tuple[float, int, int]:
        return loss, correct, count

    def agree_to_stop(self, requested: bool) -> bool:
        return requested

    def broadcast_parameters(self, model) -> None:
        pass

    def root_first(self, work, what: str):
        return work()

    def synchronize_batch_norm(self, model) -> None:
        pass

    def share(self, count: int) -> tuple[int, int]:
        return 0, count

    def allgather(self, array):
        return array


def model_spec(name: str, num_classes: int) -> dict:
    """The spec of a zoo model or model file, with its classifier sized for the dataset."""
    from convnet.io import modelfile, zoo

    if name in zoo.MODELS:
        return zoo.spec_for(name, num_classes=num_classes)
    if name.endswith(".toml") or Path(name).is_file():
        spec = modelfile.load_spec(name)
        return spec
    raise TrainingError(f"unknown model {name!r}; choose one of {', '.join(zoo.MODELS)} "
                        f"(see `convnet models`) or give the path of a .toml model file")


def pretrained(name: str):
    """The trained model (LoadedModel) behind a run folder, checkpoint or ONNX file, else
    None (a zoo name or model file)."""
    path = Path(name)
    if name.endswith(".toml") or not path.exists():
        return None
    from convnet.io.checkpoint import load

    return load(path)


def _fine_tuned(source, config: TrainConfig, num_classes: int):
    """The pretrained model, its classifier replaced when asked, in training mode."""
    from convnet.nn.head import replace_head

    model = source.model
    if config.replace_head is not None:
        if config.replace_head != num_classes:
            raise TrainingError(f"--replace-head {config.replace_head}, but {config.dataset} "
                                f"has {num_classes} classes; pass --replace-head "
                                f"{num_classes}")
        try:
            model = replace_head(model, num_classes)
        except ValueError as error:
            raise TrainingError(f"model {config.model}: {error}") from None
    return model.train()


def _print_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _discard(message: str) -> None:
    pass


def _jsonable_rng_state(state: dict) -> dict:
    return json.loads(json.dumps(state, default=int))


class Trainer:
    """One training run in `out_dir`. `fit()` trains; `stop()` asks it to stop after the step."""

    def __init__(self, config: TrainConfig, out_dir, *, resume: bool = False, callbacks=(),
                 group=None, progress: bool | None = None, log=None):
        self.config = config
        self.out_dir = Path(out_dir)
        self.resume = resume
        self.callbacks = list(callbacks)
        self.group = group or LocalGroup()
        self.progress = progress
        # Only the root process reports by default, as it alone writes files.
        self.log = log or (_print_to_stderr if self.group.is_root else _discard)
        self._stop_reason: str | None = None
        self.stop_signal: int | None = None  # the signal that stopped fit(), if one did
        self._lock = None  # the claim on out_dir (convnet.io.runlock), held while fit() runs
        self._lr_request: float | None = None
        config.validate()

    # -- setup -------------------------------------------------------------------------------
    def _prepare_folder(self) -> dict | None:
        """Claims the run folder for this training (runlock); the saved config when resuming,
        and refuses to overwrite an existing run otherwise."""
        try:
            self._lock = claim(self.out_dir, new=not self.resume)
        except CheckpointError as error:
            raise TrainingError(str(error)) from None
        if self.resume:
            return self._saved_config()
        return None

    def _saved_config(self) -> dict:
        """The run's config.json, with self.config its training settings (epochs: ours)."""
        saved = run_config(self.out_dir)
        try:
            self.config = TrainConfig.from_dict({**saved.get("train", {}),
                                                 "epochs": self.config.epochs})
        except (TrainingError, TypeError) as error:
            raise TrainingError(f"{self.out_dir / CONFIG}: {error}") from None
        return saved

    def _load_data(self, input_shape):
        from convnet import data

        cfg = self.config
        channels, height, width = input_shape
        try:
            full = data.load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir,
                                     image_size=(height, width), channels=channels)
        except data.DataError as error:
            raise TrainingError(str(error)) from None
        for note in full.notes:
            self.log(f"note: {note}")
        train, val = data.train_val_split(full, cfg.val_fraction, cfg.seed)
        return full, train, val

    def setup(self) -> None:
        from convnet import data

        saved = self._prepare_folder() if self.group.is_root else None
        if not self.group.is_root and self.resume:
            saved = self._saved_config()
        cfg = self.config  # when resuming, the saved settings (only epochs comes from the caller)
        from convnet.io.spec import SpecError, build

        # The input shape says how to load the images, and the classes found there size a zoo
        # model's classifier (a folder of 3 classes, say), so the data comes first.
        source = pretrained(cfg.model) if saved is None else None
        if source is not None:
            self.input_shape = tuple(source.input_shape)
        else:
            spec = saved["model"] if saved is not None else model_spec(cfg.model, 10)
            self.input_shape = model_inputs(spec)[0][1]
        full, self.train_set, self.val_set = self.group.root_first(
            lambda: self._load_data(self.input_shape), "load the dataset")
        self.class_names = list(full.class_names)
        if len(self.class_names) == 1:
            self.log(f"warning: {cfg.dataset} has one class ({self.class_names[0]}): every "
                     f"prediction is right, so the accuracy will be meaningless; give it "
                     f"images of two classes or more")
        self.task = self._make_task(full)
        rng.manual_seed(cfg.seed)
        if source is not None:
            from convnet.io.spec import to_spec

            self.model = _fine_tuned(source, cfg, len(self.class_names))
            spec = to_spec(self.model, self.input_shape)
        else:
            if saved is None:
                # After the seed, as before: reading a model file builds it once to validate
                # it, which draws from the shared generator, so a seed keeps giving the weights
                # it gave.
                spec = model_spec(cfg.model, len(self.class_names))
            try:
                self.model = build(spec)
            except SpecError as error:
                raise TrainingError(f"model {cfg.model}: {error}") from None
        problem = self.task.output_problem(first_output_shape(self.model, self.input_shape),
                                           self.input_shape, len(self.class_names), cfg.dataset)
        if problem is not None:
            raise TrainingError(f"model {cfg.model} {problem}")
        if saved is not None:
            self.normalization = data.Normalization.from_dict(saved["normalization"])
        elif source is not None and source.normalization:  # what the weights were trained on
            self.normalization = data.Normalization.from_dict(source.normalization)
        else:
            self.normalization = data.Normalization.fit(self.train_set.images)
        info = data.DATASETS.get(cfg.dataset)
        suggested = (info.augmentation if info else None) or {"crop_padding": 2, "hflip": False}
        # None means the dataset's own suggestion (crop for digits, crop + flip for photos).
        augmentation = suggested if cfg.augment is not False else None
        if self.train_set.has_masks:
            if cfg.augment:
                self.log("note: no augmentation for segmentation (crops and flips move the "
                         "images, not their masks)")
            augmentation = None
        self.augmentation = augmentation  # recorded in config.json as applied
        self.train_loader = data.BatchLoader(self.train_set, cfg.batch_size, shuffle=True,
                                             seed=cfg.seed, normalization=self.normalization,
                                             augmentation=augmentation, drop_last=False,
                                             part=(self.group.rank, self.group.size))
        self.val_loader = data.BatchLoader(self.val_set, 256, shuffle=False, seed=cfg.seed,
                                           normalization=self.normalization)
        params = self.model.parameters()
        if cfg.optimizer == "sgd":
            self.optimizer = OPTIMIZERS["sgd"](params, lr=cfg.lr, momentum=cfg.momentum,
                                               weight_decay=cfg.weight_decay)
        else:
            self.optimizer = OPTIMIZERS[cfg.optimizer](params, lr=cfg.lr,
                                                       weight_decay=cfg.weight_decay)
        self.steps_per_epoch = len(self.train_loader)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        warmup = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        after_steps = max(self.total_steps - warmup, 1)
        if cfg.schedule == "cosine":
            after = CosineAnnealingLR(self.optimizer, after_steps)
        elif cfg.schedule == "step":
            after = StepLR(self.optimizer, max(after_steps // 3, 1), 0.1)
        else:
            after = ConstantLR(self.optimizer)
        self.scheduler = LinearWarmup(self.optimizer, warmup, after) if warmup else after
        self.loss_fn = self.task.loss()
        self.epoch, self.batch_index, self.global_step = 0, 0, 0
        self.best_val_accuracy = -1.0  # the task's best figure: accuracy, or mean IoU
        self.partial = _empty_partial()
        if saved is not None:
            self._restore()
        elif self.group.is_root:
            self._write_config(spec)
            # The state before the first step: a run killed in its first epoch resumes from it.
            self.save("last")
        if cfg.sync_bn:
            self.group.synchronize_batch_norm(self.model)
        self.group.broadcast_parameters(self.model)

    def _make_task(self, full) -> tasks.Task:
        """The task asked for (or the dataset's: segment for masks), checked against the data."""
        cfg = self.config
        name = cfg.task or ("segment" if full.has_masks else "classify")
        if name == "segment" and not full.has_masks:
            raise TrainingError(f"--task segment needs a mask per image, and {cfg.dataset} has "
                                f"one class per image; use digits-seg or a folder of images/ "
                                f"and masks/")
        if name == "classify" and full.has_masks:
            raise TrainingError(f"{cfg.dataset} has a mask per image (segmentation); drop "
                                f"--task classify, or pass --task segment")
        ignore = cfg.ignore_index if cfg.ignore_index is not None else full.ignore_label
        counts = self.train_set.class_counts() if cfg.class_weight == "balanced" else None
        if isinstance(cfg.class_weight, list) and len(cfg.class_weight) != len(full.class_names):
            raise TrainingError(f"--class-weight gives {len(cfg.class_weight)} weights but "
                                f"{cfg.dataset} has {len(full.class_names)} classes "
                                f"({', '.join(full.class_names)}); give one per class, or "
                                f"'balanced'")
        try:
            task = tasks.make_task(name, class_weight=cfg.class_weight, ignore_index=ignore,
                                   class_counts=counts)
        except ValueError as error:
            raise TrainingError(str(error)) from None
        if cfg.class_weight == "balanced":
            weights = ", ".join(f"{n} {w:.3g}" for n, w in
                                zip(full.class_names, task.class_weight, strict=True))
            self.log(f"note: balanced class weights: {weights}")
        return task

    def _write_config(self, spec: dict) -> None:
        from convnet.version import __version__

        write_json(self.out_dir / CONFIG, {
            "convnet_version": __version__,
            "model_name": self.config.model,
            "model": spec,
            "dataset": self.config.dataset,
            "class_names": self.class_names,
            "task": self.task.describe(),
            "normalization": self.normalization.to_dict(),
            "train": dataclasses.asdict(self.config),
            "augmentation": self.augmentation,
        })

    def _restore(self) -> None:
        path = self.out_dir / CHECKPOINTS / "last.safetensors"
        if not path.exists():
            # Killed before its first checkpoint (earlier versions wrote none before epoch 1).
            self.log(f"note: {self.out_dir} has no checkpoint yet (the run stopped before its "
                     f"first one); starting it again from the beginning with its saved settings")
            if self.group.is_root:
                self._truncate_metrics(0)
                self.save("last")
            return
        arrays, optimizer_arrays, state, optimizer_state = read_checkpoint(path)
        missing = [key for key in RESUME_STATE if state.get(key) is None]
        if missing:
            raise TrainingError(f"{path} holds weights but no training state ({', '.join(missing)}"
                                f" missing): it was not written by a training (an imported "
                                f"model?), so there is nothing to resume; train a new run with "
                                f"--out")
        load_weights(self.model, arrays, path)
        try:
            if optimizer_state is not None:
                self.optimizer.load_state_dict({**optimizer_state, "arrays": optimizer_arrays})
            self.epoch = int(state["epoch"])
            self.batch_index = int(state["batch_index"])
            self.global_step = int(state["global_step"])
            self.best_val_accuracy = float(state["best_val_accuracy"])
            saved_partial = state["partial"]
            if "targets" not in saved_partial:  # a checkpoint from before tasks: images only
                saved_partial = {**saved_partial, "targets": saved_partial["count"]}
            self.partial = {key: type(value)(saved_partial[key])
                            for key, value in self.partial.items()}
            self.scheduler.load_state_dict(state["scheduler"])
            rng.set_state(state["rng"])
        except (KeyError, TypeError, ValueError) as error:
            raise TrainingError(f"{path}: its training state is damaged ({type(error).__name__}: "
                                f"{error}); resume from a copy, or train a new run") from None
        self.best_val_accuracy = self._best_on_disk(self.best_val_accuracy)
        if self.epoch >= self.config.epochs:
            raise TrainingError(f"{self.out_dir} already finished {self.epoch} epoch(s); "
                                f"pass a larger --epochs to train further")
        if self.group.is_root:
            self._truncate_metrics(self.epoch)
        self.log(f"resuming {self.out_dir} at epoch {self.epoch + 1}, batch "
                 f"{self.batch_index + 1} of {self.steps_per_epoch}")

    def _best_on_disk(self, recorded: float) -> float:
        """The best accuracy `last` records, lowered to what `best` holds: a run killed between
        the two writes by an earlier version recorded one whose weights never reached `best`."""
        path = self.out_dir / CHECKPOINTS / "best.safetensors"
        try:
            held = float(checkpoint_state(path).get("best_val_accuracy", -1.0))
        except CheckpointError:
            held = -1.0  # none (or unreadable): the next epoch writes one
        if held < recorded:
            def shown(value: float) -> str:  # accuracy, or a segmenter's mean IoU
                return f"{value:.2%}" if self.task.name == "classify" else f"{value:.4f}"

            found = f"holds a model of {shown(held)}" if held >= 0 else "is missing, not a model of"
            self.log(f"note: {path} {found} validation {self.task.metric_label}, not the "
                     f"{shown(recorded)} the last checkpoint records (a run killed between the "
                     f"two writes); the next better epoch replaces it")
            return held
        return recorded

    def _truncate_metrics(self, epochs_done: int) -> None:
        """Drop log records of epochs the resumed run will train again."""
        path = self.out_dir / METRICS
        if not path.exists():
            return
        lines = path.read_text(errors="replace").splitlines()
        keep = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                if number == len(lines):  # cut short by a kill while it was being written
                    self.log(f"note: {path}:{number}: the last line is cut short; dropped")
                    break
                raise TrainingError(f"{path}:{number}: not a JSON record ({line[:60]!r}); "
                                    f"delete that line to resume") from None
            if not isinstance(record, dict) or not isinstance(record.get("epoch", 0), int):
                raise TrainingError(f"{path}:{number}: expected a JSON object with an integer "
                                    f"epoch, received {line[:60]!r}; delete that line to resume")
            if record.get("epoch", 0) <= epochs_done:
                keep.append(line)
        atomic_write(path, lambda tmp: tmp.write_text("".join(line + "\n" for line in keep)))

    # -- state -------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {"epoch": self.epoch, "batch_index": self.batch_index,
                "global_step": self.global_step, "best_val_accuracy": self.best_val_accuracy,
                "partial": self.partial, "scheduler": self.scheduler.state_dict(),
                "rng": _jsonable_rng_state(rng.get_state())}

    def save(self, which: str = "last") -> Path:
        path = self.out_dir / CHECKPOINTS / f"{which}.safetensors"
        if self.group.is_root:
            save_checkpoint(path, self.model, self._state(), self.optimizer)
        return path

    def stop(self, reason: str = "stop requested") -> None:
        """Finish the current step, save a checkpoint and return from fit()."""
        self._stop_reason = reason

    def set_lr(self, lr: float) -> None:
        """Change the learning rate of a run in progress, from any thread (the explorer's
        page): it takes effect before the next step, as the schedule's new base rate, and is
        saved with the schedule's state, so a resumed run keeps it."""
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr <= 10 \
                or not math.isfinite(lr):
            raise TrainingError(f"the learning rate must be a number in (0, 10], received "
                                f"{lr!r}")
        self._lr_request = float(lr)

    def _apply_lr_request(self) -> None:
        from convnet.optim.schedules import set_base_lr

        lr, self._lr_request = self._lr_request, None
        now = set_base_lr(self.scheduler, lr)
        self.log(f"learning rate set to {lr:g} before step {self.global_step + 1} "
                 f"({now:.3g} now with the {self.config.schedule} schedule)")

    # -- the loop ----------------------------------------------------------------------------
    def _emit(self, event: str, *args) -> None:
        for callback in self.callbacks:
            handler = getattr(callback, event, None)
            if handler is not None:
                handler(self, *args)

    def evaluate_loader(self, loader) -> Evaluation:
        """The task's evaluation (loss and confusion matrix; IoU for a segmenter) over
        `loader`'s batches, each process evaluating a share of whole batches: the figures are
        one process's to the bit (see `convnet.training.tasks`)."""
        first, stop = self.group.share(len(loader))
        self.model.eval()
        tally = self.task.tally(self.class_names)
        with no_grad():
            for x, y in loader.iter_from(loader.epoch, first, stop):
                tally.add(first_output(self.model.forward(x)), y)
        self.model.train()
        return tally.result(self.group.allgather)

    def _step(self, x, y) -> tasks.StepFigures:
        x, y = self.group.shard(x, y)
        # A diverging run overflows: that is reported below as a clear error, not as warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            scores = first_output(self.model.forward(x))
            loss = self.loss_fn.forward(scores, y)
        if not math.isfinite(loss):
            raise LossDiverged(
                f"the loss became {loss} at epoch {self.epoch + 1}, batch {self.batch_index + 1} "
                f"(step {self.global_step + 1}); training stopped and the last good checkpoint "
                f"in {self.out_dir / CHECKPOINTS} was kept. Try a smaller --lr "
                f"(now {self.config.lr}) or --clip-grad-norm")
        with np.errstate(over="ignore", invalid="ignore"):
            self.model.backward(first_output_gradient(self.model, self.loss_fn.backward()),
                                input_grad=False)
        self.group.allreduce_gradients(self.model.parameters())
        if self.config.clip_grad_norm:
            clip_grad_norm_(self.model.parameters(), self.config.clip_grad_norm)
        self.optimizer.step()
        self.model.zero_grad()
        self.scheduler.step()
        return self.task.step_figures(self.group, loss, scores, y)

    def _install_stop_handlers(self) -> dict:
        """Ctrl-C (SIGINT), SIGTERM (timeout, Slurm, docker stop) and a closed terminal (SIGHUP,
        unless nohup ignores it) finish the step and save; the same signal again stops at once.
        Returns the handlers they replace."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self.stop_signal is not None:
                raise KeyboardInterrupt  # a second signal: stop now, without saving
            self.stop_signal = signum
            if signum == signal.SIGINT:
                self.log("\ninterrupt: finishing this step and saving a checkpoint "
                         "(Ctrl-C again to abort without saving)")
                self._stop_reason = "interrupted"
            else:
                name = signal.Signals(signum).name
                self.log(f"\n{name}: finishing this step and saving a checkpoint ({name} again "
                         f"to abort without saving)")
                self._stop_reason = f"{name} received"

        previous = {}
        for name in STOP_SIGNALS:
            number = getattr(signal, name, None)  # Windows has no SIGHUP
            if number is None or (name == "SIGHUP" and
                                  signal.getsignal(number) is signal.SIG_IGN):
                continue
            previous[number] = signal.signal(number, handler)
        return previous

    def fit(self) -> dict:
        """Train to config.epochs; returns a summary (also when stopped early)."""
        try:
            self.setup()
            previous = self._install_stop_handlers()
            try:
                return self._loop()
            finally:
                for number, handler in previous.items():
                    signal.signal(number, handler)
        finally:
            self.close()
            return_freed_memory()  # what the steps freed, kept by malloc for the next step

    def close(self) -> None:
        """Give the run folder back (fit() does this when it returns or fails)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _progress_bar(self, start: int):
        from tqdm import tqdm

        enabled = self.progress if self.progress is not None else sys.stderr.isatty()
        return tqdm(total=self.steps_per_epoch, initial=start, disable=not enabled or
                    not self.group.is_root, desc=f"epoch {self.epoch + 1}/{self.config.epochs}",
                    unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)

    def _loop(self) -> dict:
        cfg = self.config
        self._emit("on_start")
        record = None
        while self.epoch < cfg.epochs:
            self.model.train()
            bar = self._progress_bar(self.batch_index)
            for x, y in self.train_loader.iter_from(self.epoch, self.batch_index):
                if self._lr_request is not None:
                    self._apply_lr_request()
                started = time.perf_counter()
                figures = self._step(x, y)
                elapsed = time.perf_counter() - started
                self.batch_index += 1
                self.global_step += 1
                p = self.partial
                count = figures.images
                p["loss"] += figures.loss * count
                p["correct"] += figures.correct
                p["count"] += count
                p["targets"] += figures.targets
                p["seconds"] += elapsed
                # accuracy: of the images, or of the counted pixels for a segmenter
                stats = {"epoch": self.epoch + 1, "batch": self.batch_index, "loss": figures.loss,
                         "accuracy": figures.correct / max(figures.targets, 1),
                         "lr": self.optimizer.lr, "images_per_s": count / max(elapsed, 1e-9),
                         "step": self.global_step}
                bar.set_postfix(loss=f"{p['loss'] / p['count']:.4f}",
                                acc=f"{p['correct'] / max(p['targets'], 1):.3f}",
                                img_s=f"{p['count'] / p['seconds']:.0f}")
                bar.update(1)
                self._emit("on_batch", stats)
                if self.group.agree_to_stop(self._stop_reason is not None):
                    self._stop_reason = self._stop_reason or "stop requested by another process"
                    bar.close()
                    self.save("last")
                    self.log(f"stopped ({self._stop_reason}) at epoch {self.epoch + 1}, batch "
                             f"{self.batch_index}; checkpoint saved. Continue with "
                             f"`convnet train --resume {self.out_dir}`")
                    return self._summary(record, stopped=True)
            bar.close()
            record = self._end_epoch()
        self._emit("on_end", record)
        return self._summary(record, stopped=False)

    def _end_epoch(self) -> dict:
        validation = self.evaluate_loader(self.val_loader)
        p = self.partial
        record = {"epoch": self.epoch + 1, "step": self.global_step,
                  "train_loss": p["loss"] / max(p["count"], 1),
                  "train_accuracy": p["correct"] / max(p["targets"], 1),
                  **self.task.record(validation),
                  "lr": self.optimizer.lr,
                  "images_per_s": p["count"] / max(p["seconds"], 1e-9),
                  "seconds": p["seconds"], "time": time.time()}
        self.epoch += 1
        self.batch_index = 0
        self.partial = _empty_partial()
        score = self.task.score(validation)
        improved = score > self.best_val_accuracy
        if improved:
            self.best_val_accuracy = score
        if self.group.is_root:
            with open(self.out_dir / METRICS, "a") as stream:
                stream.write(json.dumps(record) + "\n")
            # best before last: `last` never records a best accuracy whose weights are not in
            # `best` yet, whatever the moment a kill comes (a resume redoes the epoch).
            if improved:
                self.save("best")
            self.save("last")
            self.log(f"epoch {record['epoch']}/{self.config.epochs}  "
                     f"train loss {record['train_loss']:.4f} acc {record['train_accuracy']:.2%}  "
                     f"val loss {record['val_loss']:.4f} acc {record['val_accuracy']:.2%}  "
                     + (f"mIoU {record['val_mean_iou']:.4f}  " if "val_mean_iou" in record
                        else "")
                     + f"{record['images_per_s']:.0f} img/s" + ("  (best)" if improved else ""))
        self._emit("on_epoch_end", record)
        return record

    def _summary(self, record: dict | None, stopped: bool) -> dict:
        # best_val_accuracy holds the task's figure: accuracy, or mean IoU (see best_metric)
        return {"out_dir": str(self.out_dir), "epochs_done": self.epoch, "stopped": stopped,
                "best_val_accuracy": self.best_val_accuracy, "task": self.task.name,
                "best_metric": self.task.metric, "last": record}


def _empty_partial() -> dict:
    """The running sums of an epoch: loss * images, correct predictions, images, what the
    correct ones are out of (images, or counted pixels), seconds."""
    return {"loss": 0.0, "correct": 0, "count": 0, "targets": 0, "seconds": 0.0}


def resume_config(out_dir, epochs: int | None = None) -> TrainConfig:
    """The TrainConfig saved in a run folder (epochs overridable to train further)."""
    saved = run_config(Path(out_dir))
    if not isinstance(saved.get("train"), dict):
        raise CheckpointError(f"{out_dir}/{CONFIG} has no training settings ('train'); was it "
                              f"written by `convnet train`?")
    settings = {**saved["train"], **({"epochs": epochs} if epochs is not None else {})}
    try:
        return TrainConfig.from_dict(settings)
    except (TrainingError, TypeError) as error:
        raise CheckpointError(f"{out_dir}/{CONFIG}: {error}") from None


__all__ = ["Trainer", "TrainConfig", "TrainingError", "LossDiverged", "LocalGroup",
           "build_from_config", "resume_config"]

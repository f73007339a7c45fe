"""Training from the page: a Trainer in a background thread whose callback publishes events
(batches, epochs, weight snapshots) that any number of pages follow as server-sent events.

The trainer owns its model; the explorer shows a copy whose weights are refreshed from the
trainer's about once a second, so pictures never touch arrays in the middle of a step.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

from convnet.io import zoo
from convnet.io.checkpoint import LoadedModel
from convnet.training.trainer import TrainConfig, Trainer
from convnet.web.explorer import Explorer, Samples, Source
from convnet.web.gate import ENGINE_GATE

BATCH_EVENTS_PER_S = 10  # at most this many batch events a second reach the pages
EVENTS_KEPT = 20000
# A run is flagged as exploding when the mean loss of the batches between two events is this
# many times the loss of its first batch (a model guessing at random starts near ln K): a
# healthy run never gets back there.
EXPLODING = 1.5
EXPLODED_MESSAGE = "loss exploded: lower the learning rate"


class EventLog:
    """Numbered events (id, name, data), appended by one thread and read by many."""

    def __init__(self, limit: int = EVENTS_KEPT):
        self._events: list[tuple[int, str, dict]] = []
        self._next = 1
        self._lock = threading.Lock()
        self._limit = limit

    def publish(self, name: str, data: dict) -> int:
        with self._lock:
            event_id = self._next
            self._next += 1
            self._events.append((event_id, name, data))
            if len(self._events) > self._limit:
                # Keep epochs and lifecycle events; drop the oldest batch events.
                drop = next((i for i, e in enumerate(self._events) if e[1] == "batch"), 0)
                del self._events[drop]
            return event_id

    def after(self, last_id: int) -> list[tuple[int, str, dict]]:
        with self._lock:
            return [event for event in self._events if event[0] > last_id]

    @property
    def last_id(self) -> int:
        with self._lock:
            return self._next - 1


def sse(event_id: int, name: str, data: dict) -> str:
    """One event in the text/event-stream format."""
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(_finite(data))}\n\n"


def _finite(value):
    """JSON has no NaN or infinity: send null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class _Publisher:
    """The Trainer callback: turns its hooks into events and feeds the explorer new weights."""

    def __init__(self, session: TrainingSession):
        self.session = session
        self.last_batch = 0.0
        self.last_snapshot = 0.0
        self.window: list[dict] = []  # batches since the last batch event
        self.first_loss: float | None = None
        self.flagged = False

    def on_start(self, trainer) -> None:
        session = self.session
        ENGINE_GATE.hold()  # given back by TrainingSession._run when fit() returns or fails
        session.holding_gate = True
        session.trainer = trainer
        cfg = trainer.config
        model = copy.deepcopy(trainer.model).eval()
        loaded = LoadedModel(model, tuple(trainer.input_shape), list(trainer.class_names),
                             trainer.normalization.to_dict(),
                             {"model_name": cfg.model, "dataset": cfg.dataset}, None)
        samples = Samples.from_dataset(trainer.val_set,
                                       f"validation split of {cfg.dataset}")
        session.explorer.replace(loaded, Source("training", session.label, str(trainer.out_dir),
                                                zoo_name=session.zoo_name), samples)
        if session.state == "starting":  # not "stopping": a stop sent already still holds
            session.state = "running"
        session.events.publish("start", {
            "out_dir": str(trainer.out_dir), "config": asdict(cfg),
            "steps_per_epoch": trainer.steps_per_epoch, "total_steps": trainer.total_steps,
            "version": session.explorer.version})
        self.last_snapshot = time.monotonic()

    def on_batch(self, trainer, stats: dict) -> None:
        ENGINE_GATE.let_through()
        now = time.monotonic()
        session = self.session
        self.window.append(stats)
        if now - self.last_batch >= 1 / BATCH_EVENTS_PER_S:
            self.last_batch = now
            self._publish_window(trainer, now)
        if now - self.last_snapshot >= session.snapshot_every:
            self._snapshot(trainer, now)

    def _publish_window(self, trainer, now: float) -> None:
        """One batch event for the batches since the last: the last batch's figures, and the
        mean and the maximum loss of them all (a chart of one batch in ten would hide the
        spikes), with a flag when the loss explodes."""
        window, self.window = self.window, []
        if not window:
            return
        losses = [item["loss"] for item in window]
        mean = sum(losses) / len(losses)
        if self.first_loss is None and math.isfinite(losses[0]):
            self.first_loss = losses[0]
        exploding = not math.isfinite(mean) or (
            self.first_loss is not None and mean > EXPLODING * self.first_loss)
        session = self.session
        session.events.publish("batch", {
            **window[-1], "loss_mean": mean, "loss_max": max(losses), "batches": len(window),
            "accuracy_mean": sum(item["accuracy"] for item in window) / len(window),
            "exploding": exploding, "total_steps": trainer.total_steps,
            "elapsed": now - session.started})
        if exploding and not self.flagged:
            self.flagged = True
            session.events.publish("exploding", {
                "message": f"{EXPLODED_MESSAGE} (set to {_base_lr(trainer):.3g}): the mean loss "
                           f"{mean:.3g} of steps {window[0]['step']}-{window[-1]['step']} is "
                           f"above {EXPLODING:g}x the first batch's {self.first_loss:.3g}",
                "step": window[-1]["step"]})

    def on_epoch_end(self, trainer, record: dict) -> None:
        ENGINE_GATE.let_through()
        self._publish_window(trainer, time.monotonic())
        self.session.events.publish("epoch", dict(record))
        self._snapshot(trainer, time.monotonic())

    def _snapshot(self, trainer, now: float) -> None:
        self.last_snapshot = now
        self.session.explorer.offer_weights(trainer.model.state_dict())
        self.session.events.publish("snapshot", {"step": trainer.global_step,
                                                 "epoch": trainer.epoch})


class TrainingSession:
    """One training run started from the page."""

    def __init__(self, explorer: Explorer, config: TrainConfig, out_dir, *, label: str = "",
                 snapshot_every: float = 1.0, callbacks=()):
        self.explorer = explorer
        self.config = config
        self.out_dir = Path(out_dir)
        self.label = label or config.model
        self.zoo_name = config.model if config.model in zoo.MODELS else None
        self.snapshot_every = snapshot_every
        self.events = EventLog()
        self.state = "starting"  # -> running -> finished | stopped | failed
        self.summary: dict | None = None
        self.error: str | None = None
        self.trainer: Trainer | None = None
        self.holding_gate = False  # the trainer thread holds the engine gate while it trains
        self.started = time.monotonic()
        self._callbacks = list(callbacks)
        self._trainer = Trainer(config, self.out_dir, callbacks=[_Publisher(self),
                                                                 *self._callbacks],
                                progress=False, log=self._log)
        self._thread = threading.Thread(target=self._run, name="convnet-train", daemon=True)

    def start(self) -> None:
        self.events.publish("starting", {"out_dir": str(self.out_dir),
                                         "config": asdict(self.config)})
        self._thread.start()

    def _log(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        self.events.publish("log", {"message": message.strip()})

    def _run(self) -> None:
        try:
            summary = self._trainer.fit()
        except Exception as error:  # noqa: BLE001 - reported to the page; the server stays up
            from convnet.training.trainer import LossDiverged

            self.error = f"{type(error).__name__}: {error}" if not _known(error) else str(error)
            self.state = "failed"
            diverged = isinstance(error, LossDiverged)
            self.events.publish("failure", {
                "message": self.error, "diverged": diverged,
                "headline": f"{EXPLODED_MESSAGE} (set to {self.base_lr():.3g})"
                if diverged else "training failed"})
            self.events.publish("done", {"state": self.state})
            return
        finally:
            self._give_back_gate()
        self.summary = summary
        self.explorer.offer_weights(self._trainer.model.state_dict())
        folder = str(self.out_dir)
        with self.explorer.lock:
            self.explorer.source = Source("run", self.label, folder, zoo_name=self.zoo_name)
        self.state = "stopped" if summary.get("stopped") else "finished"
        self.events.publish(self.state, dict(summary))
        self.events.publish("done", {"state": self.state})

    def _give_back_gate(self) -> None:
        if self.holding_gate:
            self.holding_gate = False
            ENGINE_GATE.release()

    def current_lr(self) -> float:
        """The rate of the next step (the schedule's base times its factor now)."""
        trainer = self.trainer
        optimizer = getattr(trainer, "optimizer", None)
        return float(optimizer.lr) if optimizer is not None else float(self.config.lr)

    def base_lr(self) -> float:
        """The rate asked for (the schedule's base): the config's, or the page's last change."""
        return _base_lr(self.trainer) if self.trainer is not None else float(self.config.lr)

    def set_lr(self, lr: float) -> None:
        """The run's learning rate from now on (Trainer.set_lr: applied before the next step)."""
        self._trainer.set_lr(lr)
        self.events.publish("lr", {"lr": float(lr), "step": self.status()["step"]})

    def stop(self, reason: str = "stopped from the page") -> None:
        if self.running:
            self.state = "stopping"
            self._trainer.stop(reason)
            self.events.publish("stopping", {})

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self.state in ("starting", "running")

    @property
    def finished(self) -> bool:
        return self.state in ("finished", "stopped", "failed") and not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def status(self) -> dict:
        trainer = self.trainer
        return {"state": self.state, "out_dir": str(self.out_dir), "label": self.label,
                "config": asdict(self.config), "error": self.error, "summary": self.summary,
                "step": trainer.global_step if trainer is not None else 0,
                "lr": self.current_lr(), "base_lr": self.base_lr(),
                "total_steps": getattr(trainer, "total_steps", None),
                "last_event": self.events.last_id}


def _base_lr(trainer) -> float:
    scheduler = getattr(trainer, "scheduler", None)
    return float(scheduler.base_lr) if scheduler is not None else float(trainer.config.lr)


def _known(error: Exception) -> bool:
    from convnet.training.user_errors import user_errors

    return isinstance(error, user_errors())


class FolderWatch:
    """Follows a run folder that another process (`convnet train`) is writing: each new line of
    metrics.jsonl becomes an "epoch" event, and each new checkpoints/last.safetensors is copied
    into the explorer's model ("snapshot"). Polled by the event streams, at most once a second;
    there is no thread of its own."""

    def __init__(self, explorer: Explorer, folder, every: float = 1.0):
        from convnet.io.checkpoint import run_config

        self.explorer = explorer
        self.folder = Path(folder)
        self.every = every
        self.events = EventLog()
        self.state = "watching"
        self._lock = threading.Lock()
        self._records = 0
        self._last_poll = 0.0
        self._mtime = self._checkpoint_mtime()
        try:
            planned = (run_config(self.folder).get("train") or {}).get("epochs")
        except Exception:  # noqa: BLE001 - an unreadable config only loses the plan
            planned = None
        self.events.publish("watch", {"folder": str(self.folder), "epochs": planned})
        self.poll(force=True)

    finished = False  # another process decides when its run ends
    running = False  # and only that process can stop it

    @property
    def _checkpoint(self) -> Path:
        return self.folder / "checkpoints" / "last.safetensors"

    def _checkpoint_mtime(self) -> int | None:
        try:
            return self._checkpoint.stat().st_mtime_ns
        except OSError:
            return None

    def poll(self, force: bool = False) -> None:
        from convnet.io.checkpoint import CheckpointError, read_checkpoint
        from convnet.viz.curves import read_metrics

        with self._lock:
            now = time.monotonic()
            if not force and now - self._last_poll < self.every:
                return
            self._last_poll = now
            try:
                records = read_metrics(self.folder)
            except (OSError, ValueError):
                records = []
            for record in records[self._records:]:
                self.events.publish("epoch", record)
            self._records = max(self._records, len(records))
            mtime = self._checkpoint_mtime()
            if mtime is None or mtime == self._mtime:
                return
            self._mtime = mtime
            if self.explorer.source.folder != str(self.folder):
                return  # the page shows another model now (a run it started)
            try:
                arrays, _, saved, _ = read_checkpoint(self._checkpoint)
            except CheckpointError:
                return
            self.explorer.offer_weights(arrays)
            self.events.publish("snapshot", {"epoch": saved.get("epoch"),
                                             "step": saved.get("global_step")})

    def status(self) -> dict:
        return {"state": self.state, "folder": str(self.folder), "epochs_logged": self._records,
                "last_event": self.events.last_id}

"""`convnet train`: train a zoo or user model on a dataset into a run folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from convnet.cli import add_cache_dir, add_command


def register(subparsers) -> None:
    parser = add_command(
        subparsers, "train", "Train a model; writes a run folder with config, metrics and "
        "checkpoints.",
        "convnet train --model lenet5 --dataset mnist-5k --epochs 5 --out runs/lenet\n"
        "convnet train --resume runs/lenet --epochs 8     # continue, exactly\n"
        "convnet train --model runs/imported --replace-head 3 --dataset my_photos  # fine-tune\n"
        "convnet train --model unet-mini --dataset digits-seg --out runs/unet   # segmentation")
    parser.add_argument("--model", default=None,
                        help="zoo name (see `convnet models`), a .toml model file, or a run "
                             "folder, checkpoint or .onnx file whose weights start the run "
                             "(fine-tuning) [default: lenet5]")
    parser.add_argument("--replace-head", type=int, default=None, metavar="N_CLASSES",
                        help="fine-tuning: replace the classifier computing the model's first "
                             "output (its last Linear or 1x1 conv, a final softmax dropped) by "
                             "a fresh one with N_CLASSES outputs, the dataset's class count")
    parser.add_argument("--dataset", default=None,
                        help="dataset name (see `convnet datasets`) or a folder of class "
                             "subfolders [default: mnist-5k]")
    parser.add_argument("--data-dir", default=None,
                        help="read the dataset's standard files from this folder")
    add_cache_dir(parser)
    parser.add_argument("--epochs", type=int, default=None, help="[default: 10]")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="global batch size [default: 64]")
    parser.add_argument("--lr", type=float, default=None, help="learning rate [default: 0.05]")
    parser.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=None)
    parser.add_argument("--momentum", type=float, default=None)
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--schedule", choices=["constant", "step", "cosine"], default=None)
    parser.add_argument("--warmup-epochs", type=float, default=None)
    parser.add_argument("--val-fraction", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None, help="[default: 0]")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="random shifts (crop with zero padding) and, for photos, "
                             "horizontal flips of the training images [default: on, with the "
                             "dataset's settings: 2-pixel shifts for mnist and mnist-5k, "
                             "2-pixel shifts + flips for fashion-mnist, 4-pixel shifts + flips "
                             "for cifar10, 2-pixel shifts for a folder; config.json records "
                             "what was applied]")
    parser.add_argument("--clip-grad-norm", type=float, default=None)
    parser.add_argument("--sync-bn", action="store_true", default=None,
                        help="under mpiexec: batch norm takes the statistics of the whole "
                             "global batch, not of each process's slice [default: off]")
    parser.add_argument("--task", choices=["classify", "segment"], default=None,
                        help="a class per image, or per pixel [default: segment for a dataset "
                             "of masks (digits-seg, a folder of images/ and masks/), else "
                             "classify]")
    parser.add_argument("--class-weight", type=_class_weight, default=None, metavar="W,W,...",
                        help="segmentation: a loss weight per class, comma-separated, or "
                             "'balanced' (median frequency balancing) [default: all 1]")
    parser.add_argument("--ignore-index", type=int, default=None, metavar="VALUE",
                        help="segmentation: the mask value that counts for nothing "
                             "[default: 255 for a folder of masks, none for digits-seg]")
    parser.add_argument("--out", default=None,
                        help="run folder to create [default: runs/MODEL-DATASET-TIME]")
    parser.add_argument("--resume", metavar="RUN_FOLDER", default=None,
                        help="continue an interrupted run from its last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


OPTION_FIELDS = ["model", "dataset", "data_dir", "epochs", "batch_size", "lr", "optimizer",
                 "momentum", "weight_decay", "schedule", "warmup_epochs", "val_fraction", "seed",
                 "augment", "clip_grad_norm", "sync_bn", "replace_head", "task", "class_weight",
                 "ignore_index"]


def _class_weight(text: str):
    """'balanced', or comma-separated numbers."""
    if text.strip().lower() == "balanced":
        return "balanced"
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'balanced' or numbers separated by commas (0.2,1,1,...), received "
            f"{text!r}") from None


def config_from_args(args):
    from convnet.training.trainer import TrainConfig

    given = {name: getattr(args, name) for name in OPTION_FIELDS
             if getattr(args, name) is not None}
    if args.dataset is None and (args.task == "segment" or _zoo_task(args.model) == "segment"):
        given["dataset"] = "digits-seg"  # the embedded segmentation data, as mnist-5k is
    return TrainConfig(**given)


def _zoo_task(model: str | None) -> str | None:
    from convnet.io import zoo

    return zoo.MODELS[model].task if model in zoo.MODELS else None


def run(args) -> int:
    from convnet.training.trainer import Trainer, TrainingError, resume_config

    group = None
    try:
        from convnet.training import distributed

        group = distributed.process_group()
    except ImportError:
        pass
    if args.resume:
        if args.out and Path(args.out) != Path(args.resume):
            raise TrainingError("--resume continues a run in its own folder; drop --out")
        changed = [name for name in OPTION_FIELDS
                   if name != "epochs" and getattr(args, name) is not None]
        if changed:
            flags = ", ".join("--" + name.replace("_", "-") for name in changed)
            raise TrainingError(f"--resume continues a run with its saved settings; only "
                                f"--epochs may change (received {flags})")
        config = resume_config(args.resume, args.epochs)
        out = Path(args.resume)
    else:
        config = config_from_args(args)
        if args.out:
            out = Path(args.out)
        else:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            out = Path(f"runs/{Path(config.model).stem}-{Path(config.dataset).name}-{stamp}")
            if group is None or group.is_root:
                # Two runs started in the same second get two folders (runlock.fresh_folder).
                from convnet.io.runlock import fresh_folder

                out = fresh_folder(out)
    from convnet.viz.report import ReportCallback

    trainer = Trainer(config, out, resume=bool(args.resume), group=group,
                      progress=False if args.no_progress else None, callbacks=[ReportCallback()])
    summary = trainer.fit()
    if trainer.group.is_root:
        print(_describe(summary))
    if not summary["stopped"]:
        return 0
    # 128 + the signal, as the shell reports a process that a signal ended (143 for SIGTERM).
    return 128 + trainer.stop_signal if trainer.stop_signal else 130


def _describe(summary: dict) -> str:
    from convnet.viz.run import accuracy_story

    out = summary["out_dir"]
    lines = [f"run folder: {out}"]
    story = accuracy_story(out)
    if summary.get("best_metric") == "val_mean_iou":
        lines.append(f"best validation mean IoU: {summary['best_val_accuracy']:.4f}")
    elif story["best"]:
        best, last = story["best"], story["last"]
        lines.append(f"best validation accuracy: {best['accuracy']:.2%} at epoch "
                     f"{best['epoch']} (checkpoints/best.safetensors); last: "
                     f"{last['accuracy']:.2%} at epoch {last['epoch']} "
                     f"(checkpoints/last.safetensors)")
    elif summary["best_val_accuracy"] >= 0:
        lines.append(f"best validation accuracy: {summary['best_val_accuracy']:.2%}")
    lines += [f"checkpoints: {out}/checkpoints/ (best.safetensors, last.safetensors)",
              f"metrics: {out}/metrics.jsonl"]
    if (Path(out) / "report.html").exists():
        lines.append(f"report: {out}/report.html (open it in a browser)")
    return "\n".join(lines)

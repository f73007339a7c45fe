"""A folder of the user's own segmentation data: images and their masks, paired by file name.

    root/images/0001.png   root/masks/0001.png   (a mask per image, same stem, same size)
    root/classes.txt       optional: class names in index order, and colours for RGB masks

or, with fixed splits, root/train/images, root/train/masks, root/test/images, ... . A mask is a
PNG whose pixel values are class indices (gray or palette PNG, as PASCAL VOC's), 255 meaning
"no class" (ignored by the loss and the metrics); or an RGB PNG whose colours classes.txt maps:

    # one class per line, in index order: name, then a colour for RGB masks
    background #000000
    cat        #800000
    ignore     #e0e0c0      # the reserved name: pixels of this colour count for nothing

Without classes.txt the classes are 0..K-1, K one more than the largest value found.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy
from PIL import Image

from convnet.data.convert import check_channels
from convnet.data.dataset import Dataset
from convnet.data.errors import DataError
from convnet.data.images import IMAGE_SUFFIXES, fit_image, open_image

IGNORE = 255  # the "no class" value of index masks (PASCAL VOC's void)
CLASSES_FILE = "classes.txt"
MASK_SUFFIXES = (".png", ".bmp", ".gif", ".tif", ".tiff")  # lossless: a JPEG mask is not exact
_COLOUR = re.compile(r"#?([0-9a-fA-F]{6})")


def is_mask_folder(root: str | os.PathLike) -> bool:
    """Whether `root` holds images/ and masks/ (directly, or under train/)."""
    root = Path(root).expanduser()
    return any((base / "images").is_dir() and (base / "masks").is_dir()
               for base in (root, root / "train"))


def read_classes(path: Path) -> tuple[list[str], dict[tuple[int, int, int], int], tuple | None]:
    """(class names, colour -> class index, the ignore colour or None) from classes.txt."""
    names: list[str] = []
    colours: dict[tuple[int, int, int], int] = {}
    ignore = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        # A comment starts at a '#' followed by a space (a colour's '#' is followed by hex).
        line = re.split(r"(?:^|\s)#(?:\s|$)", raw, maxsplit=1)[0].strip()
        if not line:
            continue
        words = line.split()
        colour = None
        if len(words) > 1:
            match = _COLOUR.fullmatch(words[-1])
            if match is None:
                raise DataError(f"{path}:{number}: expected 'name' or 'name #rrggbb', received "
                                f"{raw.strip()!r}")
            hex_ = match.group(1)
            colour = (int(hex_[0:2], 16), int(hex_[2:4], 16), int(hex_[4:6], 16))
            words = words[:-1]
        name = " ".join(words)
        if name == "ignore":
            ignore = colour
            continue
        if name in names:
            raise DataError(f"{path}:{number}: class {name!r} is listed twice")
        if colour is not None:
            if colour in colours:
                raise DataError(f"{path}:{number}: colour #{hex_} is also class "
                                f"{names[colours[colour]]!r}; give each class its own colour")
            colours[colour] = len(names)
        names.append(name)
    if not names:
        raise DataError(f"{path} lists no classes; write one class name per line, in index "
                        "order (background first, usually)")
    if len(names) > IGNORE:
        raise DataError(f"{path} lists {len(names)} classes; masks hold at most {IGNORE} "
                        f"(0..{IGNORE - 1}, {IGNORE} meaning ignored)")
    return names, colours, ignore


def _files(folder: Path, suffixes) -> dict[str, Path]:
    found = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes:
            found.setdefault(p.stem, p)
    return found


def _read_mask(path: Path, colours: dict, ignore_colour, where: str) -> numpy.ndarray:
    """(H, W) uint8 class indices (IGNORE for ignored pixels) of one mask file."""
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            if mode in ("P", "L", "1") or mode.startswith("I"):
                values = numpy.asarray(img if mode != "1" else img.convert("L"))
                if values.size and (values.min() < 0 or values.max() > IGNORE):
                    raise DataError(f"{where}: mask values from {values.min()} to "
                                    f"{values.max()}; class indices go up to {IGNORE - 1} "
                                    f"({IGNORE}: ignored). Save the mask as an 8-bit PNG")
                return values.astype(numpy.uint8)
            rgb = numpy.asarray(img.convert("RGB"))  # H, W, 3
    except DataError:
        raise
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{where}: not a readable mask image ({error}); expected a PNG of "
                        "class indices") from error
    if not colours:
        raise DataError(f"{where} is a colour ({mode}) mask but no {CLASSES_FILE} maps colours "
                        f"to classes; write one with a line 'name #rrggbb' per class, or save "
                        f"the masks as gray PNGs of class indices")
    packed = (rgb[..., 0].astype(numpy.int64) << 16) | (rgb[..., 1].astype(numpy.int64) << 8) \
        | rgb[..., 2]  # H, W
    table = {(r << 16) | (g << 8) | b: index for (r, g, b), index in colours.items()}
    if ignore_colour is not None:
        r, g, b = ignore_colour
        table[(r << 16) | (g << 8) | b] = IGNORE
    keys = numpy.array(sorted(table), numpy.int64)
    values = numpy.array([table[k] for k in keys], numpy.uint8)
    position = numpy.clip(numpy.searchsorted(keys, packed), 0, len(keys) - 1)
    unknown = keys[position] != packed
    if unknown.any():
        row, col = (int(v) for v in numpy.argwhere(unknown)[0])
        r, g, b = (int(v) for v in rgb[row, col])
        raise DataError(f"{where}: colour #{r:02x}{g:02x}{b:02x} at row {row}, column {col} "
                        f"({int(unknown.sum())} pixels) is not in {CLASSES_FILE}; add it as a "
                        f"class or as 'ignore', or repaint those pixels")
    return values[position]


def load_mask_folder(root: str | os.PathLike, split: str = "train", *,
                     image_size: tuple[int, int] | None = None, channels: int | None = None,
                     class_names: list[str] | None = None) -> Dataset:
    """Every image of root/images (or root/<split>/images) with its mask as one Dataset.

    image_size: the model's (H, W); images and masks must already have it (masks are not
    resized: a resized class index is no class). channels: 1 or 3, converted as for
    classification folders. class_names: the label order to use (a trained model's).
    """
    channels = check_channels(channels)
    root = Path(root).expanduser()
    notes: list[str] = []
    base = root
    if (root / "train" / "images").is_dir():
        if not (root / split / "images").is_dir():
            present = [d.name for d in sorted(root.iterdir())
                       if (d / "images").is_dir()]
            raise DataError(f"segmentation folder {root} has splits {present}, not {split!r}; "
                            f"choose one of them")
        base = root / split
    elif split != "train":
        notes.append(f"{root} has no train/ and test/ subfolders: split {split!r} is every "
                     "image in it")
    images_dir, masks_dir = base / "images", base / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise DataError(f"segmentation folder {base} needs images/ and masks/ side by side "
                        f"(masks/NAME.png for each images/NAME.png)")
    classes_path = next((p for p in (base / CLASSES_FILE, root / CLASSES_FILE) if p.is_file()),
                        None)
    names, colours, ignore_colour = (read_classes(classes_path) if classes_path
                                     else (None, {}, None))
    images_found = _files(images_dir, IMAGE_SUFFIXES)
    masks_found = _files(masks_dir, MASK_SUFFIXES)
    if not images_found:
        raise DataError(f"{images_dir} has no images; expected files ending in "
                        f"{', '.join(IMAGE_SUFFIXES)}")
    missing = [stem for stem in images_found if stem not in masks_found]
    if missing:
        shown = ", ".join(images_found[s].name for s in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DataError(f"{len(missing)} image(s) in {images_dir} have no mask in {masks_dir}: "
                        f"{shown}{more}; each images/NAME.* needs masks/NAME.png")
    extra = [stem for stem in masks_found if stem not in images_found]
    if extra:
        notes.append(f"{len(extra)} mask(s) without an image skipped (e.g. "
                     f"{masks_found[extra[0]].name})")

    decoded, masks = [], []
    size = None
    for stem, path in images_found.items():
        array, _ = open_image(path)
        mask_path = masks_found[stem]
        where = f"{mask_path.relative_to(root)}"
        mask = _read_mask(mask_path, colours, ignore_colour, where)
        if mask.shape != array.shape[1:]:
            raise DataError(f"{where} is {mask.shape[0]}x{mask.shape[1]} but its image "
                            f"{path.relative_to(root)} is {array.shape[1]}x{array.shape[2]}; a "
                            f"mask must have its image's size")
        if size is None:
            size = array.shape[1:]
        elif array.shape[1:] != size:
            raise DataError(f"{path.relative_to(root)} is {array.shape[1]}x{array.shape[2]} but "
                            f"{next(iter(images_found.values())).relative_to(root)} is "
                            f"{size[0]}x{size[1]}; segmentation images must all have one size "
                            f"(masks are not resized)")
        decoded.append(array)
        masks.append(mask)
    if image_size is not None and tuple(image_size) != tuple(size):
        raise DataError(f"the model takes {image_size[0]}x{image_size[1]} images but those in "
                        f"{images_dir} are {size[0]}x{size[1]}; masks are not resized, so crop "
                        f"or resize images and masks together beforehand, or build the model "
                        f"for {size[0]}x{size[1]} (input_shape)")
    if channels is None:
        channels = 3 if any(a.shape[0] == 3 for a in decoded) else 1
    out = numpy.empty((len(decoded), channels, *size), dtype=numpy.uint8)
    for i, array in enumerate(decoded):
        out[i], _ = fit_image(array, (channels, *size))
    labels = numpy.stack(masks)  # N, H, W uint8
    found_max = int(labels[labels != IGNORE].max(initial=0))
    if class_names is not None:
        if names is not None and list(names) != list(class_names):
            notes.append(f"{CLASSES_FILE} lists {names}; the model's classes {class_names} are "
                         "used")
        names = [str(c) for c in class_names]
    if names is None:
        names = [str(i) for i in range(found_max + 1)]
    if found_max >= len(names):
        where = numpy.argwhere((labels >= len(names)) & (labels != IGNORE))[0]
        stem = list(images_found)[int(where[0])]
        raise DataError(f"{masks_found[stem].relative_to(root)}: value {int(labels[tuple(where)])} "
                        f"at row {int(where[1])}, column {int(where[2])} is not a class: there "
                        f"are {len(names)} ({', '.join(names)}), so values go 0..{len(names) - 1} "
                        f"({IGNORE}: ignored); fix the mask or add the class to {CLASSES_FILE}")
    return Dataset(images=out, labels=labels, class_names=names, name=f"folder:{root.resolve()}",
                   split=split, notes=notes, ignore_label=IGNORE)

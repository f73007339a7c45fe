"""CIFAR-10, python version: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}.

Read from --data-dir (the batch folder, its parent, or the official tar.gz), or downloaded as
the official tar.gz into the cache and read from the archive. Each batch is a pickled dict with
b"data" (10000, 3072) uint8 -- 1024 red, then green, then blue values of a 32x32 image, row by
row -- and b"labels" (10000 ints). Unpickling allows only the few NumPy globals those dicts need,
so a crafted file cannot run code.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy

from convnet.core.files import cache_root
from convnet.data.dataset import Dataset
from convnet.data.download import RemoteFile, mirrors_from, obtain
from convnet.data.errors import DataError

NAME = "cifar10"
FOLDER = "cifar-10-batches-py"
ARCHIVE = RemoteFile("cifar-10-python.tar.gz",
                     "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce", 170498071)
MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
ENV_VAR = "CONVNET_CIFAR10_URL"
SPLIT_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
META = "batches.meta"
CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        target = _ALLOWED_GLOBALS.get((module, name))
        if target is None:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR "
                                         "batch")
        return super().find_class(*target)


def unpickle_batch(data: bytes, source: str) -> dict:
    """A batch file's dict, with keys decoded to str."""
    try:
        obj = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # pickle raises many types on damaged input
        raise DataError(f"{source}: not a readable CIFAR-10 python batch ({type(e).__name__}: "
                        f"{e}); the file is corrupt or truncated: delete it and fetch it "
                        "again") from e
    if not isinstance(obj, dict):
        raise DataError(f"{source}: expected a pickled dict, received {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def parse_batch(data: bytes, source: str) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(N, 3, 32, 32) uint8 images and (N,) int64 labels of one batch."""
    batch = unpickle_batch(data, source)
    if "data" not in batch or "labels" not in batch:
        raise DataError(f"{source}: a CIFAR-10 batch needs 'data' and 'labels', received keys "
                        f"{sorted(batch)}")
    images = batch["data"]
    if not isinstance(images, numpy.ndarray) or images.dtype != numpy.uint8 \
            or images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        got = (f"{images.dtype} array of shape {images.shape}"
               if isinstance(images, numpy.ndarray) else type(images).__name__)
        raise DataError(f"{source}: 'data' must be a uint8 array (N, 3072), received {got}")
    labels = numpy.asarray(batch["labels"])
    if labels.shape != (images.shape[0],) or (labels.size and (
            not numpy.issubdtype(labels.dtype, numpy.integer) or labels.min() < 0
            or labels.max() > 9)):
        raise DataError(f"{source}: 'labels' must be {images.shape[0]} integers in 0..9, "
                        f"received {labels.dtype} values of shape {labels.shape}")
    return images.reshape(-1, 3, 32, 32), labels.astype(numpy.int64)  # N, 3, 32, 32


def parse_meta(data: bytes, source: str) -> list[str]:
    meta = unpickle_batch(data, source)
    names = meta.get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise DataError(f"{source}: 'label_names' must list 10 class names, received {names!r}")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


def _read_folder(folder: Path, split: str) -> tuple[dict[str, bytes], str]:
    missing = [n for n in SPLIT_FILES[split] if not (folder / n).is_file()]
    if missing:
        raise DataError(f"dataset 'cifar10': {', '.join(missing)} missing from {folder}; "
                        "expected the python-version batch files (data_batch_1..5, "
                        "test_batch, batches.meta)")
    names = SPLIT_FILES[split] + ((META,) if (folder / META).is_file() else ())
    return {n: (folder / n).read_bytes() for n in names}, str(folder)


MAX_BATCH_BYTES = 64 * 1024**2  # a batch of 10,000 images is 30,730,000 bytes and its pickle


def _read_archive(archive: Path, split: str) -> tuple[dict[str, bytes], str]:
    wanted = {f"{FOLDER}/{n}": n for n in SPLIT_FILES[split] + (META,)}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    if member.size > MAX_BATCH_BYTES:  # declared before it is decompressed
                        raise DataError(f"{archive}: {member.name} declares {member.size:,} "
                                        f"bytes; a CIFAR-10 batch is about 31 MB. The archive "
                                        f"is not the official one: delete it and download it "
                                        f"again")
                    f = tar.extractfile(member)
                    if f is not None:
                        found[wanted[member.name]] = f.read()
                    if len(found) == len(wanted):
                        break  # the rest of the archive need not be decompressed
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"{archive}: the archive is corrupt or truncated ({e}); delete it and "
                        "download it again") from e
    missing = [n for n in SPLIT_FILES[split] if n not in found]
    if missing:
        raise DataError(f"{archive}: {', '.join(missing)} not found inside; expected the "
                        f"official cifar-10-python.tar.gz with a {FOLDER}/ folder")
    return found, str(archive)


def load_cifar10(split: str, *, data_dir: str | os.PathLike | None,
                 cache_dir: str | os.PathLike | None, download: bool,
                 mirrors: list[str] | None = None, checksums: dict[str, str] | None = None,
                 progress: bool | None = None) -> Dataset:
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise DataError(f"--data-dir {root} is not a folder; pass the folder that holds "
                            f"{FOLDER}/ or {ARCHIVE.filename}")
        if (root / "test_batch").is_file() or (root / "data_batch_1").is_file():
            files, where = _read_folder(root, split)
        elif (root / FOLDER).is_dir():
            files, where = _read_folder(root / FOLDER, split)
        elif (root / ARCHIVE.filename).is_file():
            files, where = _read_archive(root / ARCHIVE.filename, split)
        else:
            raise DataError(f"dataset 'cifar10': neither {FOLDER}/ nor {ARCHIVE.filename} is "
                            f"in {root}; expected the python-version batch files, or leave out "
                            "--data-dir to download them")
    else:
        remote = ARCHIVE
        if checksums is not None:
            if ARCHIVE.filename not in checksums:
                raise DataError(f"checksums has no SHA-256 for {ARCHIVE.filename}")
            remote = RemoteFile(ARCHIVE.filename, checksums[ARCHIVE.filename])
        archive = obtain(remote, cache_root(cache_dir) / NAME,
                         mirrors_from(MIRRORS, ENV_VAR, mirrors), download=download,
                         dataset=NAME, progress=progress)
        files, where = _read_archive(archive, split)
    parts = [parse_batch(files[n], f"{where}/{n}") for n in SPLIT_FILES[split]]
    images = numpy.concatenate([p[0] for p in parts])
    labels = numpy.concatenate([p[1] for p in parts])
    class_names = parse_meta(files[META], f"{where}/{META}") if META in files else list(CLASS_NAMES)
    return Dataset(images=images, labels=labels, class_names=class_names, name=NAME, split=split)

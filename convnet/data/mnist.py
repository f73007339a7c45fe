"""MNIST and Fashion-MNIST: the four standard IDX files, from --data-dir or downloaded.

SHA-256 and sizes of the published files (the same values are pinned by tensorflow-datasets'
url_checksums/mnist.txt and fashion_mnist.txt and by torchvision-based projects).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy

from convnet.core.files import cache_root
from convnet.data.dataset import Dataset
from convnet.data.download import RemoteFile, mirrors_from, obtain
from convnet.data.errors import DataError
from convnet.data.idx import read_idx


@dataclass(frozen=True)
class IdxSource:
    name: str
    class_names: tuple[str, ...]
    files: dict[str, RemoteFile]  # stem (e.g. "train-images-idx3-ubyte") -> the .gz to fetch
    mirrors: tuple[str, ...]
    env_var: str  # overrides the mirrors, comma-separated base URLs
    torchvision_folder: str  # where torchvision keeps the raw files under its root


SPLIT_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

MNIST = IdxSource(
    name="mnist",
    class_names=tuple(str(d) for d in range(10)),
    files={
        "train-images-idx3-ubyte": RemoteFile(
            "train-images-idx3-ubyte.gz",
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        "train-labels-idx1-ubyte": RemoteFile(
            "train-labels-idx1-ubyte.gz",
            "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        "t10k-images-idx3-ubyte": RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        "t10k-labels-idx1-ubyte": RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
    },
    # yann.lecun.com no longer serves the files reliably; these mirrors carry the same bytes.
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    env_var="CONVNET_MNIST_URL",
    torchvision_folder="MNIST",
)

FASHION_MNIST = IdxSource(
    name="fashion-mnist",
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    files={
        "train-images-idx3-ubyte": RemoteFile(
            "train-images-idx3-ubyte.gz",
            "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84", 26421880),
        "train-labels-idx1-ubyte": RemoteFile(
            "train-labels-idx1-ubyte.gz",
            "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845", 29515),
        "t10k-images-idx3-ubyte": RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073", 4422102),
        "t10k-labels-idx1-ubyte": RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5148),
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
             "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/"
             "fashion/"),
    env_var="CONVNET_FASHION_MNIST_URL",
    torchvision_folder="FashionMNIST",
)


def find_in_data_dir(source: IdxSource, data_dir: Path, stem: str) -> Path | None:
    """The file for `stem` under data_dir: gzipped or not, with "-idx" or ".idx" in the name,
    in data_dir itself, data_dir/raw or torchvision's data_dir/<Name>/raw."""
    folders = (data_dir, data_dir / "raw", data_dir / source.torchvision_folder / "raw")
    names = (stem + ".gz", stem, stem.replace("-idx", ".idx") + ".gz",
             stem.replace("-idx", ".idx"))
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def load_idx_dataset(source: IdxSource, split: str, *, data_dir: str | os.PathLike | None,
                     cache_dir: str | os.PathLike | None, download: bool,
                     mirrors: list[str] | None = None, checksums: dict[str, str] | None = None,
                     progress: bool | None = None) -> Dataset:
    paths = []
    for stem in SPLIT_STEMS[split]:
        if data_dir is not None:
            folder = Path(data_dir).expanduser()
            if not folder.is_dir():
                raise DataError(f"--data-dir {folder} is not a folder; pass the folder that "
                                f"holds the {source.name} IDX files")
            path = find_in_data_dir(source, folder, stem)
            if path is None:
                wanted = ", ".join(r.filename.removesuffix(".gz")
                                   for r in source.files.values())
                raise DataError(
                    f"dataset {source.name!r}: {stem}(.gz) is not in {folder}. Expected the "
                    f"four standard IDX files ({wanted}), gzipped or not; or leave out "
                    f"--data-dir to download them")
        else:
            remote = source.files[stem]
            if checksums is not None:
                if remote.filename not in checksums:
                    raise DataError(f"checksums has no SHA-256 for {remote.filename}")
                remote = RemoteFile(remote.filename, checksums[remote.filename])
            path = obtain(remote, cache_root(cache_dir) / source.name,
                          mirrors_from(source.mirrors, source.env_var, mirrors),
                          download=download, dataset=source.name, progress=progress)
        paths.append(path)
    images, labels = read_idx(paths[0]), read_idx(paths[1])
    if images.ndim != 3 or images.dtype != numpy.uint8:
        raise DataError(f"{paths[0]}: expected uint8 images (N, H, W), received "
                        f"{images.dtype} data of shape {images.shape}; is this an images file?")
    if labels.ndim != 1 or labels.dtype != numpy.uint8:
        raise DataError(f"{paths[1]}: expected uint8 labels (N,), received {labels.dtype} data "
                        f"of shape {labels.shape}; is this a labels file?")
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{paths[0].name} has {images.shape[0]} images but {paths[1].name} has "
                        f"{labels.shape[0]} labels; the files do not belong together")
    if labels.size and labels.max() >= len(source.class_names):
        raise DataError(f"{paths[1]}: labels go up to {labels.max()}, expected 0.."
                        f"{len(source.class_names) - 1}")
    return Dataset(images=images[:, None], labels=labels.astype(numpy.int64),
                   class_names=list(source.class_names), name=source.name, split=split)

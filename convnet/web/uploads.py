"""Uploaded images: checked for size, decoded with the data package's reader, fitted to the
model's input. Every refusal is an UploadError carrying an HTTP status and a message that says
what was wrong and what to send instead."""

from __future__ import annotations

import re
import tempfile
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a 6000x6000 photo decodes to ~100 MB of RGB; more is refused


class UploadError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _safe_name(filename: str | None) -> str:
    name = Path(filename or "upload").name
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80] or "upload"


def _check_pixels(content: bytes, name: str) -> None:
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(BytesIO(content)) as img:
                width, height = img.size
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise UploadError(413, f"{name}: the image has too many pixels to decode safely; "
                          f"resize it below {MAX_PIXELS:,} pixels") from None
    except Exception:  # noqa: BLE001 - not decodable: the reader below says why, in its words
        return
    if width * height > MAX_PIXELS:
        raise UploadError(413, f"{name}: {width}x{height} = {width * height:,} pixels is more "
                          f"than the {MAX_PIXELS:,} accepted; resize it first")


def decode_upload(content: bytes, filename: str | None, input_shape, *, convert: bool = True,
                  max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[np.ndarray, list[str]]:
    """Bytes of an image file -> (uint8 (C, H, W) for input_shape, notes on what changed).

    convert=False refuses an image whose channel count differs from the model's instead of
    converting gray <-> RGB.
    """
    from convnet.data import DataError
    from convnet.data.images import fit_image, open_image

    name = _safe_name(filename)
    if len(content) > max_bytes:
        raise UploadError(413, f"{name}: {len(content):,} bytes is more than the "
                          f"{max_bytes:,}-byte limit; send a smaller image (the model sees "
                          f"{input_shape[1]}x{input_shape[2]} pixels anyway)")
    if not content:
        raise UploadError(400, f"{name}: the file is empty; choose a PNG or JPEG image")
    _check_pixels(content, name)
    with tempfile.TemporaryDirectory(prefix="convnet-upload-") as folder:
        path = Path(folder) / name
        path.write_bytes(content)
        try:
            array, opened = open_image(path)
            channels = array.shape[0]
            wanted = int(input_shape[0])
            if not convert and channels != wanted:
                kinds = {1: "1 channel (gray)", 3: "3 channels (RGB)"}
                raise UploadError(422, f"{name}: the model takes {kinds[wanted]} but the image "
                                  f"has {kinds.get(channels, f'{channels} channels')}; upload "
                                  f"a {'gray' if wanted == 1 else 'colour'} image or allow "
                                  f"conversion")
            fitted, converted = fit_image(array, tuple(int(v) for v in input_shape))
        except DataError as error:
            message = str(error).replace(str(path), name)
            raise UploadError(422, message) from None
    return fitted, [text for _, text in opened + converted]

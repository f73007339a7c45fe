"""Uploaded images: checked for size, decoded with the data package's reader, fitted to the
model's input. Every refusal is an UploadError carrying an HTTP status and a message that says
what was wrong and what to send instead."""

from __future__ import annotations

import contextlib
import re
import tempfile
import threading
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np

DEFAULT_MAX_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a 6000x6000 photo decodes to ~100 MB of RGB; more is refused
DECODE_SLOTS = 2  # uploads decoded at once (the machine has few cores; each decode is ~1 s)
DECODE_PIXELS = 48_000_000  # pixels being decoded at once, all uploads together (~150 MB RGB)
RETRY_AFTER_S = 1


class UploadError(Exception):
    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def busy(what: str) -> UploadError:
    return UploadError(503, f"the explorer is busy decoding other uploads ({what}); try again "
                       f"in a moment", {"Retry-After": str(RETRY_AFTER_S)})


class DecodeBudget:
    """What the uploads being decoded may hold between them: at most `slots` images and
    `pixels` pixels. An upload that does not fit is refused at once (503, Retry-After) instead
    of queueing: forty large uploads at once cost one or two decodes' memory, and answers come
    in milliseconds, not after the others' decodes."""

    def __init__(self, slots: int = DECODE_SLOTS, pixels: int = DECODE_PIXELS):
        self.slots, self.pixels = slots, pixels
        self._lock = threading.Lock()
        self._decoding, self._held = 0, 0

    def full(self) -> bool:
        with self._lock:
            return self._decoding >= self.slots

    @contextlib.contextmanager
    def reserve(self, pixels: int):
        with self._lock:
            if self._decoding >= self.slots:
                raise busy(f"{self._decoding} at once")
            if self._decoding and self._held + pixels > self.pixels:
                raise busy(f"{self._held + pixels:,} pixels at once")
            self._decoding += 1
            self._held += pixels
        try:
            yield
        finally:
            with self._lock:
                self._decoding -= 1
                self._held -= pixels


def _safe_name(filename: str | None) -> str:
    name = Path(filename or "upload").name
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:80] or "upload"


def _check_pixels(content: bytes, name: str) -> int:
    """The image's pixel count from its header (0 if unreadable); UploadError if too many."""
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
        return 0
    if width * height > MAX_PIXELS:
        raise UploadError(413, f"{name}: {width}x{height} = {width * height:,} pixels is more "
                          f"than the {MAX_PIXELS:,} accepted; resize it first")
    return width * height


def decode_upload(content: bytes, filename: str | None, input_shape, *, convert: bool = True,
                  max_bytes: int = DEFAULT_MAX_BYTES, budget: DecodeBudget | None = None,
                  invert: str = "no", centre: str = "no", light_on_dark: bool = False,
                  mnist_like: bool = False
                  ) -> tuple[np.ndarray, list[str]]:
    """Bytes of an image file -> (uint8 (C, H, W) for input_shape, notes on what changed).

    convert=False refuses an image whose channel count differs from the model's instead of
    converting gray <-> RGB. budget: shared by the uploads decoding at once (503 when full).
    invert, centre, light_on_dark, mnist_like: as `convnet.data.prepare.prepare_image` (a
    drawing, or a photo of a digit on paper).
    """
    from convnet.data import DataError
    from convnet.data.images import open_image
    from convnet.data.prepare import prepare_image

    name = _safe_name(filename)
    if len(content) > max_bytes:
        raise UploadError(413, f"{name}: {len(content):,} bytes is more than the "
                          f"{max_bytes:,}-byte limit; send a smaller image (the model sees "
                          f"{input_shape[1]}x{input_shape[2]} pixels anyway)")
    if not content:
        raise UploadError(400, f"{name}: the file is empty; choose a PNG or JPEG image")
    pixels = _check_pixels(content, name)
    with (budget.reserve(pixels) if budget is not None else contextlib.nullcontext(),
          tempfile.TemporaryDirectory(prefix="convnet-upload-") as folder):
        path = Path(folder) / name
        path.write_bytes(content)
        try:
            array, opened = open_image(path, reduce_to=tuple(input_shape[1:]))
            channels = array.shape[0]
            wanted = int(input_shape[0])
            if not convert and channels != wanted:
                kinds = {1: "1 channel (gray)", 3: "3 channels (RGB)"}
                raise UploadError(422, f"{name}: the model takes {kinds[wanted]} but the image "
                                  f"has {kinds.get(channels, f'{channels} channels')}; upload "
                                  f"a {'gray' if wanted == 1 else 'colour'} image or allow "
                                  f"conversion")
            fitted, converted = prepare_image(array, tuple(int(v) for v in input_shape),
                                              invert=invert, centre=centre,
                                              light_on_dark=light_on_dark,
                                              mnist_like=mnist_like)
        except DataError as error:
            message = str(error).replace(str(path), name)
            raise UploadError(422, message) from None
    return fitted, [text for _, text in opened] + converted

"""The IDX file format of MNIST and Fashion-MNIST, gzipped or not.

Layout (all integers big-endian): two zero bytes, a type code, the number of dimensions D, then
D uint32 sizes, then the values in C order. Images are (N, 28, 28) uint8, labels (N,) uint8.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy

from convnet.data.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
IDX_TYPES = {
    0x08: numpy.dtype(">u1"), 0x09: numpy.dtype(">i1"), 0x0B: numpy.dtype(">i2"),
    0x0C: numpy.dtype(">i4"), 0x0D: numpy.dtype(">f4"), 0x0E: numpy.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> numpy.ndarray:
    """The array stored in an IDX file; gzip is recognised by its magic bytes, not the name."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
    except FileNotFoundError as e:
        raise DataError(f"IDX file not found: {path}") from e
    except OSError as e:  # includes gzip.BadGzipFile
        raise DataError(f"{path}: cannot read it as an IDX file ({e}); the file is corrupt or "
                        "incomplete: delete it and download it again") from e
    except (EOFError, zlib.error) as e:
        raise DataError(f"{path}: the gzip stream is truncated or corrupt ({e}); delete the "
                        "file and download it again") from e
    return parse_idx(raw, str(path))


def parse_idx(raw: bytes, source: str = "<bytes>") -> numpy.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        head = raw[:4].hex(" ") if raw else "nothing"
        raise DataError(f"{source}: not an IDX file: the header starts with {head}, expected "
                        "00 00 <type 08..0E> <ndim>. Pass the MNIST-format files "
                        "(e.g. train-images-idx3-ubyte.gz), gzipped or not")
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: IDX header is cut short: {len(raw)} bytes, expected at "
                        f"least {header} for {ndim} dimensions")
    shape = tuple(int(d) for d in numpy.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
    received = len(raw) - header
    if received != expected:
        raise DataError(f"{source}: IDX data for shape {shape} needs {expected} bytes after "
                        f"the header, the file has {received}; it is truncated or corrupt: "
                        "delete it and download it again")
    data = numpy.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))

"""The IDX file format of MNIST and Fashion-MNIST, gzipped or not.

Layout (all integers big-endian): two zero bytes, a type code, the number of dimensions D, then
D uint32 sizes, then the values in C order. Images are (N, 28, 28) uint8, labels (N,) uint8.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy

from convnet.data.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
DEFLATE_MAX_RATIO = 1032  # DEFLATE's limit: 258 bytes from a 2-bit code; no .gz expands more
MAX_IDX_BYTES = 4 * 1024**3  # 85x the MNIST training images; more is not an image dataset here
IDX_TYPES = {
    0x08: numpy.dtype(">u1"), 0x09: numpy.dtype(">i1"), 0x0B: numpy.dtype(">i2"),
    0x0C: numpy.dtype(">i4"), 0x0D: numpy.dtype(">f4"), 0x0E: numpy.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> numpy.ndarray:
    """The array stored in an IDX file; gzip is recognised by its magic bytes, not the name.

    The header's sizes are checked before the data is read: against MAX_IDX_BYTES, against what
    the file can hold (its size; for gzip, DEFLATE_MAX_RATIO times its size), and no more than
    the declared bytes are ever decompressed, so a small .gz cannot expand without bound.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw_stream:
            gzipped = raw_stream.read(2) == GZIP_MAGIC
            stored = os.fstat(raw_stream.fileno()).st_size
            raw_stream.seek(0)
            stream = gzip.GzipFile(fileobj=raw_stream) if gzipped else raw_stream
            head = stream.read(4)
            _check_magic(head, str(path))
            dims = stream.read(4 * head[3])
            dtype, shape, expected = _declared(head + dims, str(path))
            if not gzipped and stored - len(head) - len(dims) != expected:
                raise DataError(_size_mismatch(path, shape, expected,
                                               stored - len(head) - len(dims)))
            if gzipped and expected > stored * DEFLATE_MAX_RATIO:
                raise DataError(f"{path}: the IDX header declares shape {shape}, {expected:,} "
                                f"bytes of data, but a gzip file of {stored:,} bytes expands to "
                                f"at most {stored * DEFLATE_MAX_RATIO:,}; it is corrupt or not "
                                f"what it claims: delete it and download it again")
            data = stream.read(expected + 1)  # one more: a stream that goes on is refused
    except FileNotFoundError as e:
        raise DataError(f"IDX file not found: {path}") from e
    except OSError as e:  # includes gzip.BadGzipFile
        raise DataError(f"{path}: cannot read it as an IDX file ({e}); the file is corrupt or "
                        "incomplete: delete it and download it again") from e
    except (EOFError, zlib.error) as e:
        raise DataError(f"{path}: the gzip stream is truncated or corrupt ({e}); delete the "
                        "file and download it again") from e
    if len(data) > expected:
        raise DataError(f"{path}: the gzip stream holds more than the {expected:,} bytes its "
                        f"IDX header declares for shape {shape}; it is corrupt or not what it "
                        f"claims: delete it and download it again")
    if len(data) < expected:
        raise DataError(_size_mismatch(path, shape, expected, len(data)))
    return numpy.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _size_mismatch(source, shape, expected: int, received: int) -> str:
    return (f"{source}: IDX data for shape {shape} needs {expected} bytes after the header, the "
            f"file has {received}; it is truncated or corrupt: delete it and download it again")


def _check_magic(raw: bytes, source: str) -> None:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        head = raw[:4].hex(" ") if raw else "nothing"
        raise DataError(f"{source}: not an IDX file: the header starts with {head}, expected "
                        "00 00 <type 08..0E> <ndim>. Pass the MNIST-format files "
                        "(e.g. train-images-idx3-ubyte.gz), gzipped or not")


def _declared(raw: bytes, source: str) -> tuple[numpy.dtype, tuple[int, ...], int]:
    """(dtype, shape, data bytes) the header at the start of `raw` declares, checked against
    MAX_IDX_BYTES in Python integers (uint32 sizes multiplied in int64 could wrap around)."""
    _check_magic(raw, source)
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: IDX header is cut short: {len(raw)} bytes, expected at "
                        f"least {header} for {ndim} dimensions")
    shape = tuple(int(d) for d in numpy.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize
    if expected > MAX_IDX_BYTES:
        raise DataError(f"{source}: the IDX header declares shape {shape}, {expected:,} bytes "
                        f"of data, more than the {MAX_IDX_BYTES:,} convnet reads from one file; "
                        f"it is corrupt or not an image dataset")
    return dtype, shape, expected


def parse_idx(raw: bytes, source: str = "<bytes>") -> numpy.ndarray:
    dtype, shape, expected = _declared(raw, source)
    header = 4 + 4 * len(shape)
    received = len(raw) - header
    if received != expected:
        raise DataError(_size_mismatch(source, shape, expected, received))
    data = numpy.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))

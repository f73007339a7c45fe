"""Fixtures in the real on-disk formats, written independently of convnet.data, and a local
HTTP server to download them from. Imported by conftest.py and the tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

ENV_URLS = ("CONVNET_MNIST_URL", "CONVNET_FASHION_MNIST_URL", "CONVNET_CIFAR10_URL")
UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: refused at once, never the internet


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: 0, 0, type 0x08, ndim, big-endian sizes, values."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def make_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) uint8 images and (n,) uint8 labels covering 0..9 in turn."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    return images, labels


class IdxFixture:
    """The four MNIST files for a small dataset, as bytes."""

    def __init__(self, n_train: int = 30, n_test: int = 20, seed: int = 0):
        self.train_images, self.train_labels = make_digits(n_train, seed)
        self.test_images, self.test_labels = make_digits(n_test, seed + 1)
        self.raw = {
            "train-images-idx3-ubyte": idx_bytes(self.train_images),
            "train-labels-idx1-ubyte": idx_bytes(self.train_labels),
            "t10k-images-idx3-ubyte": idx_bytes(self.test_images),
            "t10k-labels-idx1-ubyte": idx_bytes(self.test_labels),
        }
        # mtime=0 makes the gzip bytes, and so their SHA-256, reproducible
        self.gz = {f"{stem}.gz": gzip.compress(data, mtime=0) for stem, data in self.raw.items()}
        self.checksums = {name: sha256(data) for name, data in self.gz.items()}

    def write(self, folder: Path, gz: bool = True) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        files = self.gz if gz else self.raw
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return folder



CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]


def cifar_batch_bytes(images: np.ndarray, labels: np.ndarray, python2_globals: bool = False
                      ) -> bytes:
    """A batch dict pickled like the originals: bytes keys, data (N, 3072) uint8, labels list."""
    batch = {b"batch_label": b"fixture batch", b"labels": [int(v) for v in labels],
             b"data": images.reshape(len(images), -1), b"filenames": [b"x.png"] * len(images)}
    data = pickle.dumps(batch, protocol=2)
    if python2_globals:  # the 2009 files name numpy.core, not numpy._core
        data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    return data


class CifarFixture:
    def __init__(self, per_batch: int = 4, n_test: int = 6, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.batches = {}
        for i in range(1, 6):
            images = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
            labels = rng.integers(0, 10, size=per_batch)
            self.batches[f"data_batch_{i}"] = (images, labels)
        images = rng.integers(0, 256, size=(n_test, 3, 32, 32), dtype=np.uint8)
        self.batches["test_batch"] = (images, rng.integers(0, 10, size=n_test))
        self.files = {name: cifar_batch_bytes(*b, python2_globals=(name == "data_batch_1"))
                      for name, b in self.batches.items()}
        meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_cases_per_batch": 4,
                b"num_vis": 3072}
        self.files["batches.meta"] = pickle.dumps(meta, protocol=2)

    def train(self) -> tuple[np.ndarray, np.ndarray]:
        parts = [self.batches[f"data_batch_{i}"] for i in range(1, 6)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def write_folder(self, parent: Path) -> Path:
        folder = parent / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        return folder

    def tar_gz(self) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, data in self.files.items():
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()



class FixtureServer:
    """Serves `routes[path] = (body, mode)` on 127.0.0.1 and records every requested path.

    mode "ok": the whole body with its Content-Length; "truncate": the full Content-Length but
    only half the body, then the connection closes; "truncate-no-length": half the body with no
    Content-Length; "404": not found.
    """

    def __init__(self):
        self.routes: dict[str, tuple[bytes, str]] = {}
        self.requests: list[str] = []
        fixture = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                fixture.requests.append(self.path)
                body, mode = fixture.routes.get(self.path, (b"", "404"))
                if mode == "404":
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                if mode != "truncate-no-length":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if mode == "ok" else body[:len(body) // 2])
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def serve(self, path: str, body: bytes, mode: str = "ok") -> None:
        self.routes[path] = (body, mode)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()

"""Verified downloads into a cache folder.

A file reaches its final name only after its SHA-256 matches: it is written to a temporary file
in the same folder and renamed atomically, so an interrupted or corrupt download never passes for
a good one and never replaces a good file.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from convnet.core.files import NEW_FILE_MODE
from convnet.data.errors import DataError

CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60  # per socket operation, not for the whole file
USER_AGENT = "convnet-data/0.1 (+python urllib)"


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: its name under each mirror, its SHA-256 and, when known, its size."""

    filename: str
    sha256: str
    size: int | None = None


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_verified(path: Path, remote: RemoteFile) -> bool:
    """True when `path` exists with the expected size and SHA-256."""
    if not path.is_file():
        return False
    if remote.size is not None and path.stat().st_size != remote.size:
        return False
    return sha256_of(path) == remote.sha256


def fetch(remote: RemoteFile, folder: str | os.PathLike, mirrors: list[str], *,
          progress: bool | None = None) -> Path:
    """Download `remote` into `folder` from the first mirror that delivers it intact.

    mirrors: base URLs; the file's URL is base + filename. Returns the final path. Raises
    DataError listing each mirror's failure when none delivers a file with the right SHA-256.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the cache folder {folder}: {e.strerror or e}. "
                        "Choose a writable one with --cache-dir or the CONVNET_CACHE "
                        "environment variable.") from e
    if not mirrors:
        raise DataError(f"no download URL for {remote.filename}: pass a base URL or put the "
                        f"file in {folder}")
    failures = []
    for base in mirrors:
        url = base.rstrip("/") + "/" + remote.filename
        try:
            return _fetch_one(url, remote, folder, progress)
        except _MirrorFailed as e:
            failures.append(f"  {url}: {e}")
    lines = "\n".join(failures)
    raise DataError(
        f"could not download {remote.filename} (expected SHA-256 {remote.sha256}):\n{lines}\n"
        f"Nothing was kept. Check the network and try again, or download the file yourself "
        f"and pass its folder with --data-dir.")


class _MirrorFailed(Exception):
    """One mirror did not deliver an intact file; the next one is tried."""


def _fetch_one(url: str, remote: RemoteFile, folder: Path, progress: bool | None) -> Path:
    final = folder / remote.filename
    try:
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{remote.filename}.",
                                        suffix=".part")
    except OSError as e:
        raise DataError(f"cannot write into the cache folder {folder}: {e.strerror or e}. "
                        "Choose a writable one with --cache-dir or the CONVNET_CACHE "
                        "environment variable.") from e
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, received = _stream(url, out, remote, progress)
            out.flush()
            os.fsync(out.fileno())
        if remote.size is not None and received != remote.size:
            raise _MirrorFailed(f"received {received} bytes, expected {remote.size}")
        if digest != remote.sha256:
            raise _MirrorFailed(f"checksum mismatch: expected SHA-256 {remote.sha256}, "
                                f"received {digest} ({received} bytes)")
        os.chmod(tmp, NEW_FILE_MODE)  # mkstemp's 0o600 would hide it from a shared cache's users
        os.replace(tmp, final)
        return final
    finally:
        # Reached with the file still there only when something failed: never keep a partial.
        tmp.unlink(missing_ok=True)


def _stream(url: str, out, remote: RemoteFile, progress: bool | None) -> tuple[str, int]:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else remote.size
            bar = _progress_bar(remote.filename, expected, progress)
            try:
                while True:
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
            if length and length.isdigit() and received != int(length):
                raise _MirrorFailed(f"connection closed after {received} of {length} bytes")
    except urllib.error.HTTPError as e:
        raise _MirrorFailed(f"HTTP {e.code} {e.reason}") from e
    except urllib.error.URLError as e:
        raise _MirrorFailed(f"{e.reason}") from e
    except http.client.IncompleteRead as e:
        raise _MirrorFailed(f"connection closed early, after {received + len(e.partial)} "
                            "bytes") from e
    except (http.client.HTTPException, OSError) as e:
        raise _MirrorFailed(f"{type(e).__name__}: {e}") from e
    return digest.hexdigest(), received


def _progress_bar(filename: str, total: int | None, progress: bool | None):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                desc=f"downloading {filename}", file=sys.stderr, leave=False)


def obtain(remote: RemoteFile, folder: str | os.PathLike, mirrors: list[str], *,
           download: bool, dataset: str, progress: bool | None = None) -> Path:
    """The verified file `folder/remote.filename`, downloading it when missing or damaged.

    A cached file whose size or SHA-256 is wrong is never used: it is fetched again (replaced
    only once the new copy is verified), or with download=False a DataError says so.
    """
    path = Path(folder) / remote.filename
    if is_verified(path, remote):
        return path
    if not download:
        state = ("is damaged (wrong size or SHA-256)" if path.exists()
                 else "is not in the cache")
        raise DataError(f"dataset {dataset!r}: {remote.filename} {state} at {path} and "
                        "downloading is turned off; allow the download, or pass the folder "
                        "that holds the files with --data-dir")
    return fetch(remote, folder, mirrors, progress=progress)


def mirrors_from(default: tuple[str, ...], env_var: str, override: list[str] | None
                 ) -> list[str]:
    """Base URLs to try: `override`, else $env_var (comma-separated), else the defaults."""
    if override is not None:
        return [str(m) for m in override]
    env = os.environ.get(env_var, "").strip()
    if env:
        return [m.strip() for m in env.split(",") if m.strip()]
    return list(default)

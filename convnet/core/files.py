"""Files every layer of the package writes or finds: atomic writes and the cache folder.

They live this low so that the compiled kernel's cache, checkpoints, reports and downloads
all share one way of writing a file that readers never see half-written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it: set it back at once
    os.umask(mask)
    return mask


# Read once, when the package is imported (before any thread of ours writes files).
NEW_FILE_MODE = 0o666 & ~_read_umask()


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path), fsync, then rename over `path`: readers never see a partial file.

    The file gets the permissions open() would give it (0o666 less the umask: 0o644 usually),
    or keeps those of the file it replaces; mkstemp's own 0o600 would hide checkpoints and
    exports from the group and from a web server reading them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        mode = NEW_FILE_MODE
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)
        with open(tmp, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno and not error.filename:
            # "No space left on device" says more with the file it was for (kept as it was).
            raise OSError(error.errno, error.strerror, str(path)) from None
        raise


def write_json(path: Path, data) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: `cache_dir`, else $CONVNET_CACHE, else $XDG_CACHE_HOME/convnet,
    else ~/.cache/convnet."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("CONVNET_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "convnet"

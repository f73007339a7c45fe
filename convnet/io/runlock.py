"""One run folder, one training: a training claims its folder for as long as it writes it.

    with claim("runs/lenet", new=True) as lock:     # or new=False to resume
        ...                                          # write config, checkpoints, metrics

The claim is an exclusive lock (flock) on RUN/.lock, held until `release()` or the process
ends (a killed process loses it at once: there is no stale lock to clear by hand). A second
training on the same folder, started at the same moment or an hour later, is refused with a
message naming the holder. The file itself stays behind, empty of meaning once unlocked: a
folder holding only .lock counts as empty.

`fresh_folder(base)` picks a folder that no one else has picked: base, else base-2, base-3, ...,
each made with an exclusive mkdir, so two runs started in the same second never share one.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from convnet.io.checkpoint import CHECKPOINTS, CONFIG, METRICS, CheckpointError

LOCK = ".lock"

try:
    import fcntl
except ImportError:  # Windows: msvcrt's byte-range lock plays the same part
    fcntl = None
    import msvcrt


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # BlockingIOError on POSIX, PermissionError from msvcrt
        return False
    return True


def _holder(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        text = ""
    return text or "another process"


class RunLock:
    """A claimed run folder; `release()` (or leaving the `with` block) gives it back."""

    def __init__(self, folder: Path, fd: int, created: bool):
        self.folder = folder
        self._fd: int | None = fd
        self._created = created

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the folder back. A folder the training never wrote into is left as it was
        found (removed again if the claim created it)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if [p.name for p in self.folder.iterdir()] == [LOCK]:
                (self.folder / LOCK).unlink()
                if self._created:
                    self.folder.rmdir()
            else:
                os.ftruncate(fd, 0)  # no holder to name any more
        except OSError:
            pass  # another process got in, or the folder went away: nothing to tidy
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def claim(folder, *, new: bool) -> RunLock:
    """Lock `folder` for one training (CheckpointError, saying why, when it cannot be had).

    new=True: a new run; the folder is created, or must be empty. new=False: a run to continue;
    the folder must exist. Either way a folder another training holds is refused.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} is a file, not a run folder; choose another --out")
    created = False
    if new:
        try:
            folder.mkdir(parents=True)
            created = True
        except FileExistsError:
            if not folder.is_dir():  # a race with something that made a file there
                raise CheckpointError(f"{folder} is a file, not a run folder; choose another "
                                      f"--out") from None
        except OSError as error:
            raise CheckpointError(f"cannot write to {folder}: {error.strerror}") from None
    elif not folder.is_dir():
        raise CheckpointError(f"{folder} does not exist (expected a run folder)")
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        lock_created = True
    except FileExistsError:
        fd, lock_created = None, False
    except OSError as error:
        raise CheckpointError(f"cannot write to {folder}: {error.strerror}") from None
    if fd is None:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as error:
            raise CheckpointError(f"cannot write to {folder}: {error.strerror}") from None
    if not _try_lock(fd):
        os.close(fd)
        raise CheckpointError(f"{folder} is being written by another training ({_holder(path)});"
                              f" wait for it to finish, or choose another --out")
    lock = RunLock(folder, fd, created)
    if new and any(p.name != LOCK for p in folder.iterdir()):
        if lock_created:
            path.unlink(missing_ok=True)  # leave someone else's folder as it was
        lock.release()
        raise CheckpointError(f"{folder} already holds files; pass --resume {folder} to "
                              f"continue that run, or choose another --out")
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                 f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
    remove_stale_temporaries(folder)
    return lock


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files a killed writer left (`.best.safetensors.x1y2.tmp`): only the
    run's own ones, and only under the claim, when no writer of this run can be alive."""
    names = (CONFIG, METRICS, "last.safetensors", "best.safetensors")
    removed = []
    for where in (folder, folder / CHECKPOINTS):
        if not where.is_dir():
            continue
        for path in where.glob(".*.tmp"):
            if any(path.name.startswith(f".{name}.") for name in names):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def fresh_folder(base) -> Path:
    """A new, empty folder at `base` or `base-2`, `base-3`, ... (the first that mkdir makes
    exclusively): two runs started in the same second get two folders."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    candidate, index = base, 1
    while True:
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            index += 1
            candidate = base.with_name(f"{base.name}-{index}")

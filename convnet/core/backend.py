"""The array module behind every layer, and the worker threads that share a batch.

Layers never name NumPy directly: they ask `array_module(x)` for the module that owns
their input (NumPy today) and write each operation once against it, so that a CuPy
backend is a matter of testing rather than rewriting.

Convolution splits its batch into chunks small enough to stay in cache (`batch_chunks`) and
hands them to `convnet.core.team.run_chunks`, which spreads them over `num_threads()` threads
(NumPy and BLAS release the GIL while they work). BLAS itself then runs one thread per worker:
a multi-threaded BLAS under the workers would put two threads on each core, and it handles the
many small products of a convnet badly.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
import types

import numpy

# The module new parameters are created with. A GPU backend would swap this for cupy.
default_module: types.ModuleType = numpy


def array_module(*arrays) -> types.ModuleType:
    """The array module (numpy, or cupy when given CuPy arrays) that owns `arrays`."""
    for array in arrays:
        module_name = type(array).__module__.split(".")[0]
        if module_name == "cupy":
            import cupy  # noqa: PLC0415 - only when CuPy arrays are actually present

            return cupy
    return default_module


def sliding_windows(xp: types.ModuleType, x, window: tuple[int, int], axes=(2, 3)):
    """Read-only view of every `window`-sized patch of `x` over `axes` (no copy)."""
    return xp.lib.stride_tricks.sliding_window_view(x, window, axis=axes)


def padded(xp: types.ModuleType, x, padding, fill=0, width: int | None = None):
    """(N, C, H, W) -> (N, C, H + top + bottom, max(W + left + right, width)): x with
    `padding` (a `convnet.core.arithmetic.Padding`) of `fill` around it, and on the right up to
    `width` columns. x itself when there is nothing to add."""
    n, c, h, w = x.shape
    full_width = max(w + padding.left + padding.right, width or 0)
    if padding.is_zero and full_width == w:
        return x
    out = xp.full((n, c, h + padding.top + padding.bottom, full_width), fill, dtype=x.dtype)
    out[:, :, padding.top : padding.top + h, padding.left : padding.left + w] = x
    return out


def to_numpy(array) -> numpy.ndarray:
    """A NumPy copy of `array` (for saving, plotting and printing)."""
    if hasattr(array, "get"):
        return array.get()
    return numpy.asarray(array)


# -- worker threads --------------------------------------------------------------------------
def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_lock = threading.Lock()
_threads: int | None = None  # None until first use: then default_threads()


def default_threads() -> int:
    """OMP_NUM_THREADS when set to a positive integer (as PyTorch reads it), else the cores
    this process may use: one process per core under MPI, say, sets OMP_NUM_THREADS=1."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) > 0 else available_cores()


def num_threads() -> int:
    """Worker threads that convolution, activations and pooling spread a batch over."""
    if _threads is None:
        set_num_threads(default_threads())
    return _threads


def set_num_threads(threads: int) -> None:
    """Use `threads` worker threads (1: everything on the calling thread) and one BLAS thread.

    Like `torch.set_num_threads`, it applies to the whole process (the team of helper threads
    is started again for the new count at its next use). Without threadpoolctl to cap
    BLAS (and with no OPENBLAS_NUM_THREADS=1 in the environment), BLAS keeps its own threads
    and convnet uses one worker thread, so that the two do not crowd the cores twice over.
    The first call also asks malloc to keep freed memory (`keep_freed_memory`).
    """
    global _threads
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"set_num_threads: threads must be an int >= 1, received {threads!r}")
    single_blas = limit_blas_threads(1) or os.environ.get("OPENBLAS_NUM_THREADS") == "1"
    with _lock:
        if not single_blas:
            threads = 1
        if _threads is None:
            keep_freed_memory()
        _threads = threads


MAX_TRIM_THRESHOLD = (1 << 31) - 1  # glibc's largest: mallopt takes an int


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse rather than return it to the OS.

    By default glibc serves blocks over 128 KiB with fresh pages from mmap and returns freed
    memory at the top of the heap past 128 KiB, so each training step faults its activations
    in page by page again (measured here at batch 128: a third of a LeNet-5 step, a quarter of
    the bottleneck net's). A 32 MiB mmap threshold (glibc's largest) lets freed blocks be
    reused, and the largest trim threshold keeps the heap's top however far a step's memory
    swings: with 256 MiB, mobilenet-mini's steps (the heap 261 MiB above its low point at
    the peak) gave it back every other step and faulted 8-19 thousand pages a step, 138-225
    ms a step against 118-129 with none (batch 128, two threads). The peak resident memory
    stays the same; what is kept goes back to the OS when `Trainer.fit` returns and when a
    model's inference buffers are let go for training (`return_freed_memory`). One arena for
    every thread: what one thread frees, another reuses (an inference lane on a helper thread
    took fresh pages in the helper's own arena while the main one held training's freed
    memory: fcn-mini trained and run in turn, two threads, peaked at 404 MB against 371 with
    one arena). Returns False, changing nothing, where the C library is not glibc.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    m_trim_threshold, m_mmap_threshold, m_arena_max = -1, -3, -8  # from glibc's malloc.h
    return (bool(mallopt(m_mmap_threshold, 32 << 20))
            and bool(mallopt(m_trim_threshold, MAX_TRIM_THRESHOLD))
            and bool(mallopt(m_arena_max, 1)))


def return_freed_memory() -> bool:
    """Give the memory malloc keeps for reuse (`keep_freed_memory`) back to the OS: after
    inference's buffers are let go for training (unet-mini, batch 128: the process held 265
    MB after inference, 167 after the switch; inference then three training steps peaked at
    520 MB, 496 training alone), and what the training steps freed when `Trainer.fit` is done.
    False, changing nothing, where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        return False
    return bool(ctypes.CDLL(None).malloc_trim(0))


def limit_blas_threads(threads: int) -> bool:
    """Cap the BLAS library NumPy calls (OpenBLAS, MKL, ...) at `threads`; False if unable."""
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - optional until first use
    except ImportError:
        return False
    threadpool_limits(limits=threads, user_api="blas")
    return True


def _forget_lock_after_fork() -> None:
    """A forked child may have been forked while another thread held the lock."""
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_lock_after_fork)


# Smallest chunk worth a thread of its own: below this, NumPy calls get so short that the
# threads spend their time waiting for the GIL (a batch of 2 trained 2x slower on 2 threads).
MIN_CHUNK_BYTES = 256 << 10


def thread_slices(count: int, threads: int | None = None) -> list[slice]:
    """count items (images, channels) in one slice per thread (num_threads() unless given),
    as even as whole items allow."""
    per = -(-count // (threads or num_threads()))
    return [slice(start, min(start + per, count)) for start in range(0, count, per)]


def batch_chunks(batch: int, bytes_per_sample: int, budget: int) -> list[slice]:
    """Split `batch` samples into chunks of about `budget` bytes of work each, and into at
    least one chunk per worker thread when the batch allows, but none under MIN_CHUNK_BYTES."""
    bytes_per_sample = max(bytes_per_sample, 1)
    per_chunk = min(budget // bytes_per_sample, -(-batch // num_threads()))
    per_chunk = max(1, per_chunk, -(-MIN_CHUNK_BYTES // bytes_per_sample))
    return [slice(start, min(start + per_chunk, batch)) for start in range(0, batch, per_chunk)]


# Bytes of input per chunk when elementwise work (activations, pooling) is spread over the
# worker threads: large enough that each NumPy call outweighs handing the GIL between threads.
ELEMENTWISE_CHUNK_BYTES = 2 << 20


def sample_chunks(x) -> list:
    """Chunks along the first (batch) axis of x for elementwise work on the worker threads."""
    if x.ndim == 0:
        return [...]
    return batch_chunks(x.shape[0], x.nbytes // max(x.shape[0], 1), ELEMENTWISE_CHUNK_BYTES)

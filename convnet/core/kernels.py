"""A compiled direct convolution (Numba) for small filter counts at stride 1.

im2col + BLAS spends its time copying columns and on matrix products too thin for BLAS to run
fast when a layer has few filters (6, 16 or 20). This kernel reads the zero-padded input in
place instead, with a tile of results held in registers, 4 filters x 16 output columns (or
8 x 8 on narrow images): per tap (c, u, v), two vector loads of 8 neighbouring pixels, 4
broadcast weights and 8 fused multiply-adds of 8 floats each.

    out[b, k, i, j] = bias[k] + sum_{c,u,v} x[b, c, i+u, j+v] w[c, u, v, k]

The same kernel gives a stride-1 layer's input gradient: dy padded by the kernel's extent minus
the forward padding, correlated with the filters flipped and their channel axes swapped. The
weight gradient stays a matrix product (BLAS is fast there: its long inner dimension is the
batch's pixels). Where the layer has many filters BLAS wins again; `worth_compiling` holds the
measured rule.

The kernel body is written out by `kernel_source()` (print it to read it): the tile has to be
64 scalar variables for LLVM to keep it in registers and pack each row of 8 into one vector
(its SLP vectorizer, which Numba switches on only while this kernel compiles). The NumPy im2col
path in `convnet.nn.conv` stays for every other case; both are tested against the loop oracle in
`convnet.core.reference` and against PyTorch. CONVNET_COMPILED_KERNELS=0 switches the kernel off.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading

import numpy

from convnet.core.backend import padded
from convnet.core.files import atomic_write, cache_root

# Tiles of (filters, output columns) held in registers. 4 x 16 needs 6 loads per 8 vector
# multiply-adds where 8 x 8 needs 9, and ran 1.2-1.5x faster on 16- and 32-pixel rows; 8 x 8
# wins where a row fits in 8 columns. Other shapes (6 x 16, 3 x 24) were not packed into
# vectors by LLVM.
NARROW_TILE, WIDE_TILE = (8, 8), (4, 16)
# Output channels for which the kernel beats im2col + BLAS, measured on the reference networks'
# layers (python -m bench.kernels): with 6 to 20 filters it was 1.0-1.7x faster in training and
# 1.4-2.1x in inference; for the input gradient of a 1- or 3-channel layer (a tile mostly
# empty) about 0.8x. With 32 to 64 filters it wins only on rows for the 4 x 16 tile and with
# enough taps (C*KH*KW) per output: 1.0-1.3x on vggish's 32- and 64-filter 3x3 layers at 16
# and 32 pixels (whole vggish: 1.04-1.11x), 0.7-0.8x on its first layer (27 taps), 0.8-0.9x
# with 128 filters on 8-pixel rows.
MIN_FILTERS, MAX_FILTERS = 4, 24
WIDE_MAX_FILTERS, WIDE_MIN_TAPS = 64, 64
# Loading Numba and the kernel costs about 1 s and 135 MB of memory once per process: a
# correlation smaller than this many multiply-adds does not load it (`convnet predict` on one
# image took 1.8 s instead of 0.7 s), and uses it only once something larger has.
MIN_LOAD_MACS = 1 << 23

_enabled = os.environ.get("CONVNET_COMPILED_KERNELS", "1") != "0"
_lock = threading.Lock()
_compiled: dict[tuple[str, tuple[int, int]], object] = {}


def available() -> bool:
    """Whether the compiled kernel is on (Numba importable and not switched off)."""
    if not _enabled:
        return False
    try:
        import numba  # noqa: F401, PLC0415 - imported on first use: it takes half a second
    except ImportError:
        return False
    return True


def set_enabled(enabled: bool) -> None:
    """Switch the compiled kernel on or off for this process (off: NumPy im2col everywhere).
    CONVNET_COMPILED_KERNELS=0 in the environment starts with it off."""
    global _enabled
    _enabled = bool(enabled)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_for(out_w: int) -> tuple[int, int]:
    """(filters, columns) of the tile for rows of out_w outputs: 4 x 16 unless 16-column
    tiles would compute more columns than 8-column ones."""
    wide = round_up(out_w, WIDE_TILE[1]) == round_up(out_w, NARROW_TILE[1])
    return WIDE_TILE if wide else NARROW_TILE


# -- kernel source ----------------------------------------------------------------------------
def kernel_source(tile=WIDE_TILE) -> str:
    """The Python source of the kernel for one tile shape, as compiled (ZERO and INDEX come
    from its module)."""
    filters, columns = tile
    lines = [
        "def forward(x, w, bias, out):",
        "    # x (n, C, Hp, Wq): zero-padded, Wq >= round_up(Wo, COLUMNS) + KW - 1",
        "    # w (C, KH, KW, Kq): Kq filters, zero beyond K, a multiple of FILTERS; bias (Kq,)",
        "    # out (n, K, Ho, Wo) = bias + correlation of x with w",
        "    n, channels, _, _ = x.shape",
        "    _, kh_size, kw_size, kq = w.shape",
        "    _, k_size, out_h, out_w = out.shape",
        "    for b in range(n):",
        "        for i in range(out_h):",
        f"            for k0 in range(0, kq, {filters}):",
        f"                for j0 in range(0, out_w, {columns}):",
    ]
    indent = " " * 20
    for k in range(filters):  # the tile: a{filter}_{column}
        lines.append(indent + " = ".join(f"a{k}_{j}" for j in range(columns)) + " = ZERO")
    lines += [
        indent + "for c in range(channels):",
        indent + "    for u in range(kh_size):",
        indent + "        pixels = x[b, c, i + u]",
        indent + "        filters = w[c, u]",
        indent + "        for v in range(kw_size):",
        indent + "            at = INDEX(j0 + v)",
        indent + "            weights = filters[v]",
    ]
    body = indent + " " * 12
    lines += [body + f"x{j} = pixels[at + INDEX({j})]" for j in range(columns)]
    for k in range(filters):
        lines.append(body + f"w{k} = weights[INDEX(k0 + {k})]")
        lines += [body + f"a{k}_{j} += x{j} * w{k}" for j in range(columns)]
    # Store the tile: whole rows in one go, except at the right edge.
    lines.append(indent + f"whole = j0 + {columns} <= out_w")
    for k in range(filters):
        lines += [indent + f"if k0 + {k} < k_size:",
                  indent + f"    line = out[b, k0 + {k}, i]",
                  indent + f"    shift = bias[k0 + {k}]",
                  indent + "    if whole:"]
        lines += [indent + f"        line[j0 + {j}] = a{k}_{j} + shift" for j in range(columns)]
        lines.append(indent + "    else:")
        for j in range(columns):
            lines += [indent + f"        if j0 + {j} < out_w:",
                      indent + f"            line[j0 + {j}] = a{k}_{j} + shift"]
    return "\n".join(lines)


def module_source(dtype_name: str, tile=WIDE_TILE) -> str:
    """A module defining the kernel for one dtype and tile, compiled on import (and cached by
    Numba)."""
    header = [
        f'"""convnet\'s compiled convolution kernel for {dtype_name}, tiles of {tile[0]} filters x '
        f'{tile[1]} columns (written by convnet.core.kernels)."""',
        "import numba",
        "import numpy",
        "",
        f"ZERO = numpy.{dtype_name}(0)",
        "INDEX = numba.uint64  # unsigned indices: no checks for negative ones",
        f"SCALAR = numba.{dtype_name}",
    ]
    footer = ("forward = numba.njit((SCALAR[:, :, :, ::1], SCALAR[:, :, :, ::1], SCALAR[::1], "
              "SCALAR[:, :, :, ::1]), nogil=True, fastmath={'contract'}, cache=True)(forward)")
    return "\n".join(header) + "\n\n\n" + kernel_source(tile) + "\n\n\n" + footer + "\n"


@functools.cache
def wide_registers() -> bool:
    """Whether Numba compiles for a CPU with AVX-512: 32 vector registers of 16 float32 (AVX2
    has 16 of 8), which lets a convolution tile hold more accumulators. False where Numba is
    told another CPU than this one (NUMBA_CPU_NAME) or cannot be imported."""
    try:
        import llvmlite.binding  # noqa: PLC0415
        from numba.core import config  # noqa: PLC0415
    except ImportError:
        return False
    if config.CPU_NAME not in (None, "host"):
        return "+avx512f" in (config.CPU_FEATURES or "")
    return bool(llvmlite.binding.get_host_cpu_features().get("avx512f"))


# AVX-512 CPUs (LLVM's names) whose 512-bit multiply-adds run at half the rate of their 256-bit
# ones: Zen 4 splits each into two 256-bit halves, these Intel client cores have one 512-bit
# unit. A convolution tile of 16 accumulators is no faster there than one of 8 (see
# blocked.HALVED_TILE_SPEED); where both units run 512 bits at once (Zen 5, measured; Intel's
# server cores by their two 512-bit units, not measured) it is a quarter faster
# (blocked.WIDE_TILE_SPEED). Any AVX-512 CPU not named here gets the full-rate tables.
HALF_RATE_512 = frozenset({"znver4", "cannonlake", "icelake-client", "tigerlake", "rocketlake"})


@functools.cache
def cpu_name() -> str:
    """The CPU Numba compiles for: LLVM's name of this one ("znver5", "sapphirerapids"), or
    the one NUMBA_CPU_NAME names; "" where Numba cannot be imported."""
    try:
        import llvmlite.binding  # noqa: PLC0415
        from numba.core import config  # noqa: PLC0415
    except ImportError:
        return ""
    if config.CPU_NAME not in (None, "host"):
        return config.CPU_NAME
    return llvmlite.binding.get_host_cpu_name()


def half_rate_512() -> bool:
    """Whether this AVX-512 CPU runs 512-bit multiply-adds at half rate (HALF_RATE_512)."""
    return cpu_name() in HALF_RATE_512


def full_rate_512() -> bool:
    """Whether this CPU has AVX-512 with 512-bit multiply-adds at full rate: the wider tiles'."""
    return wide_registers() and not half_rate_512()


@contextlib.contextmanager
def slp_vectorizer():
    """Numba leaves LLVM's SLP vectorizer off by default (it once miscompiled other code);
    this kernel needs it and is tested against independent answers, so it is on only while
    the kernel compiles, and the process's setting is restored for everyone else's code."""
    from numba.core import config  # noqa: PLC0415

    previous = config.SLP_VECTORIZE
    config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        config.SLP_VECTORIZE = previous


def _kernel(dtype, tile):
    """The compiled kernel for float32 or float64 arrays and one tile shape: compiled once per
    machine (a few seconds; Numba caches the machine code beside the module in the convnet
    cache folder) and loaded on first use in each process."""
    key = (numpy.dtype(dtype).name, tuple(tile))
    with _lock:
        if key not in _compiled:
            name = f"convnet_kernel_{key[0]}_{tile[0]}x{tile[1]}"
            with slp_vectorizer():
                _compiled[key] = import_source(name, module_source(*key)).forward
        return _compiled[key]


def module_path(module_name: str, source: str):
    """Where `source` lives in the cache folder: a file named by its hash."""
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    return cache_root() / "kernels" / f"{module_name}_{digest}.py"


def compiled_before(path) -> bool:
    """Whether Numba's cache beside the module at `path` holds machine code for this Python
    (an index file of one of its functions)."""
    import sys  # noqa: PLC0415

    version = f"py{sys.version_info.major}{sys.version_info.minor}"
    return any((path.parent / "__pycache__").glob(f"{path.stem}.*.{version}.nbi"))


@contextlib.contextmanager
def module_lock(path, wait: bool = True):
    """Hold the lock file beside the module at `path` while it compiles or loads, so that a
    second process wanting the same module (a compile-ahead child, two servers starting on one
    machine) waits for the first's machine code instead of compiling it again. Yields whether
    it is held: with wait=False, not when another process has it. Without locks (not POSIX, a
    read-only folder) it is always held."""
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:
        yield True
        return
    try:
        handle = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 - closed below
    except OSError:  # a read-only cache folder: its modules only load
        yield True
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def import_source(module_name: str, source: str, llvm_options: tuple[str, ...] = (),
                  wait: bool = True):
    """Import `source` from a file named by its hash in the cache folder (Numba caches only
    functions that live in files), or from memory where that folder cannot be written.

    llvm_options: LLVM command-line options to compile it with (`-slp-max-reg-size=256`,
    `-unroll-runtime=false`): process-wide, and some cannot be set back to their default, so
    the module is compiled into Numba's cache by a child process that sets them, once per
    machine; where that fails it compiles here without them (the source should say which it
    was written for, a comment, so that a module compiled otherwise is not taken for it).
    wait=False: None, importing nothing, while another process holds the module's lock."""
    import importlib.util  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import types  # noqa: PLC0415

    path = module_path(module_name, source)
    try:
        if not path.exists():  # never rewritten: Numba's cache is keyed by the file's mtime
            atomic_write(path, lambda tmp: tmp.write_text(source))
        with module_lock(path, wait) as held:
            if not held:
                return None
            if llvm_options:
                _compile_apart(path, llvm_options)
            spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module  # Numba's cache imports the module by name on load
            spec.loader.exec_module(module)
        _drop_link_copies(module)
        return module
    except OSError:
        module = types.ModuleType(module_name)
        exec(compile(source.replace("cache=True", "cache=False"), f"<{module_name}>", "exec"),
             module.__dict__)  # noqa: S102
        return module


def _drop_link_copies(module) -> None:
    """Free the LLVM IR Numba keeps of each library of `module`'s fixed functions (C callbacks,
    and kernels compiled for explicit signatures, all made as the module was executed): Numba
    keeps it to link the function into a later compilation that calls it, and none comes (no
    other compiled code calls them, and they take no new signatures). A conv tile module's is
    several MB: the peak memory of a convnetjs training and inference process 208-212 ->
    192-200 MB, vggish's 242-250 -> 238. Libraries Numba may still need (kernels compiling
    on first use for their dtype) keep theirs."""
    from numba.core.ccallback import CFunc  # noqa: PLC0415
    from numba.core.dispatcher import Dispatcher  # noqa: PLC0415

    for value in vars(module).values():
        if isinstance(value, CFunc):
            libraries = [getattr(value, "_library", None)]
        elif isinstance(value, Dispatcher) and getattr(value, "_can_compile", True) is False:
            libraries = [result.library for result in value.overloads.values()]
        else:
            continue
        for library in libraries:  # (Numba's own attributes: pinned in pyproject.toml; a
            if hasattr(library, "_shared_module"):  # version without them keeps its copies)
                library._shared_module = None


TASK_IMPORTS = ("from convnet.core.atomics import (boolean_at, float32_at, float64_at, "
                "int64_at, uint8_at)  # the tasks' arrays")


def task_source(kernel: str, arrays: str, scalars: int, dtype_name: str, *more: str,
                name: str | None = None) -> str:
    """A C-callable `{kernel}_task(ints, floats)` (or `name`) for `convnet.core.team`, taking
    what `team.Program` makes of a chunk's arguments (each array's address and shape, each int,
    in order, among the ints; each float among the floats). `arrays` names the kernel's first
    arguments, a letter each: an array of dtype_name (f), float64 (d), int64 (i), boolean (b)
    or uint8 (u), 1-d, 2-d in upper case or of as many dimensions as a digit after the
    letter says; an int (n); a float as dtype_name (s). Then `scalars` floats as dtype_name,
    then `more` expressions of the ints after those. The module imports TASK_IMPORTS."""
    pointer = {"f": "float32_at" if dtype_name == "float32" else "float64_at",
               "d": "float64_at", "i": "int64_at", "b": "boolean_at", "u": "uint8_at"}
    args, at, floats = [], 0, 0
    for index, kind in enumerate(arrays):
        if kind.isdigit():
            continue
        if kind == "n":
            args.append(f"ints[{at}]")
            at += 1
        elif kind == "s":
            args.append(f"numba.{dtype_name}(floats[{floats}])")
            floats += 1
        else:  # (address, size) of a 1-d array, (address, rows, columns) of a 2-d, ...
            following = arrays[index + 1 : index + 2]
            dims = int(following) if following.isdigit() else 2 if kind.isupper() else 1
            shape = ", ".join(f"ints[{at + 1 + d}]" for d in range(dims))
            args.append(f"numba.carray({pointer[kind.lower()]}(ints[{at}]), ({shape},))")
            at += 1 + dims
    args += [f"numba.{dtype_name}(floats[{floats + k}])" for k in range(scalars)]
    args += list(more)
    return "\n".join([
        "@numba.cfunc(numba.void(numba.types.CPointer(numba.int64), "
        "numba.types.CPointer(numba.float64)), cache=True)",
        f"def {name or kernel + '_task'}(ints, floats):",
        f"    {kernel}(" + ",\n        ".join(args) + ")",
    ])


def with_tasks(source: str, tasks, dtype_name: str) -> str:
    """`source` followed by the C-callable twins of its kernels: `tasks` holds (kernel, its
    arguments as `task_source` reads them)."""
    return "\n\n\n".join([source, TASK_IMPORTS] + [task_source(kernel, spec, 0, dtype_name)
                                                   for kernel, spec in tasks]) + "\n"


def loader_per_dtype(module_name: str, source: str, tasks):
    """A function dtype -> the module of `source` with its kernels' twins (`with_tasks`) for
    float32 or float64, one module each: the kernels compile for the dtype their first call
    brings, the twins when their module is imported (`module_loader`)."""
    loaders = {dtype: module_loader(f"{module_name}_{dtype}", with_tasks(source, tasks, dtype))
               for dtype in ("float32", "float64")}
    return lambda dtype: loaders[numpy.dtype(dtype).name]()


def module_loader(module_name: str, source: str):
    """A function returning the module compiled from `source` (`import_source`), imported on its
    first call, once per process."""
    lock, held = threading.Lock(), []

    def load():
        with lock:
            if not held:
                held.append(import_source(module_name, source))
            return held[0]
    return load


COMPILE_APART_SECONDS = 600  # a compile takes 15-30 s

_COMPILE_APART = """
import importlib.util, sys
import numba
import llvmlite.binding
from numba.core import config
for option in {options!r}:
    llvmlite.binding.set_option("", option)
config.SLP_VECTORIZE = 1
spec = importlib.util.spec_from_file_location({stem!r}, {path!r})
module = importlib.util.module_from_spec(spec)
sys.modules[{stem!r}] = module
spec.loader.exec_module(module)
"""


def _compile_apart(path, options: tuple[str, ...]) -> None:
    """Compile the module at `path` into Numba's cache in a child process that sets LLVM's
    `options`; a marker beside it says it was done."""
    import hashlib  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    marker = path.with_suffix(".llvm-" + hashlib.sha256(" ".join(options).encode()).hexdigest()[:8])
    if marker.exists():
        return
    code = _COMPILE_APART.format(options=tuple(options), stem=path.stem, path=str(path))
    try:  # a child that cannot start or never ends is given up
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False,
                              timeout=COMPILE_APART_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return  # compiled here instead, with the machine's widest vectors
    if done.returncode == 0:
        atomic_write(marker, lambda tmp: tmp.write_text("compiled\n"))


# -- what Conv2d calls --------------------------------------------------------------------------
def worth_compiling(layer, x, output_channels: int, input_channels: int, out_w: int) -> bool:
    """Whether a correlation of `layer`'s shape (a Conv2d) on input x, from `input_channels`
    to `output_channels` channels in rows of out_w outputs, runs on the kernel: stride 1, no
    dilation or groups, float32 or float64 NumPy input, and a filter count where it wins:
    MIN_FILTERS to MAX_FILTERS, or up to WIDE_MAX_FILTERS on rows for the 4 x 16 tile with at
    least WIDE_MIN_TAPS taps per output; and, until the kernel is loaded, enough work to be
    worth loading it for (MIN_LOAD_MACS)."""
    taps = input_channels * layer.kernel_size[0] * layer.kernel_size[1]
    wins = MIN_FILTERS <= output_channels and (output_channels <= MAX_FILTERS or (
        output_channels <= WIDE_MAX_FILTERS and taps >= WIDE_MIN_TAPS
        and tile_for(out_w) == WIDE_TILE))
    if not (wins and layer.stride == (1, 1) and layer.dilation == (1, 1) and layer.groups == 1
            and type(x) is numpy.ndarray and x.dtype in (numpy.float32, numpy.float64)):
        return False
    loaded = (x.dtype.name, tile_for(out_w)) in _compiled
    macs = x.shape[0] * x.shape[2] * x.shape[3] * taps * output_channels  # about: H*W ~ Ho*Wo
    return (loaded or macs >= MIN_LOAD_MACS) and available()


def padded_input(x, padding, out_w: int, kernel_w: int, columns: int):
    """(n, C, H, W) -> (n, C, H + top + bottom, Wq), zeros around (padding: a `Padding`) and
    zero columns on the right up to Wq = round_up(Wo, columns) + KW - 1, so that the last tile
    reads inside its rows (its extra outputs are computed, never stored)."""
    width = round_up(out_w, columns) + kernel_w - 1
    return numpy.ascontiguousarray(padded(numpy, x, padding, 0, width))


def forward_weights(weight, filters: int):
    """(K, C, KH, KW) -> (C, KH, KW, Kq): filters last, zero up to a multiple of `filters`."""
    k = weight.shape[0]
    out = numpy.zeros((*weight.shape[1:], round_up(k, filters)), dtype=weight.dtype)
    out[..., :k] = weight.transpose(1, 2, 3, 0)
    return out


def flipped_weights(weight, filters: int):
    """The input gradient's filters, (K, KH, KW, Cq): [k, u, v, c] = w[k, c, KH-1-u, KW-1-v]."""
    c = weight.shape[1]
    out = numpy.zeros((weight.shape[0], *weight.shape[2:], round_up(c, filters)),
                      dtype=weight.dtype)
    out[..., :c] = weight[:, :, ::-1, ::-1].transpose(0, 2, 3, 1)
    return out


def padded_bias(bias, count: int, filters: int, dtype):
    out = numpy.zeros(round_up(count, filters), dtype=dtype)
    if bias is not None:
        out[:count] = bias
    return out


def conv_forward(xpad, weights, bias, out, tile) -> None:
    """out (n, K, Ho, Wo) = bias + correlation of `padded_input` with `forward_weights`."""
    _kernel(out.dtype, tile)(xpad, weights, bias, out)

"""The compiled direct convolution (convnet.core.kernels): forward, input and parameter gradients
against the loop oracle, PyTorch and centred differences, with the kernel on and off; the rule
that picks it; and how it is compiled and cached."""

import contextlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - PyTorch's own alias
from engine_checks import assert_conv_matches_torch, check_gradients, leaf
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.core import blocked_training, kernels, reference


@pytest.fixture(autouse=True)
def any_size_loads_the_kernel(monkeypatch):
    """These tests use small arrays: let them load the kernel (see the test of the limit).
    They test this kernel, which float32 training reaches only where the blocked passes of
    convnet.core.blocked_training do not apply (tests/test_blocked_training.py): those are
    switched off here."""
    monkeypatch.setattr(kernels, "MIN_LOAD_MACS", 0)
    monkeypatch.setattr(blocked_training, "usable", lambda layer, x: False)


@contextlib.contextmanager
def compiled(enabled: bool):
    previous = kernels._enabled
    kernels.set_enabled(enabled)
    try:
        yield
    finally:
        kernels.set_enabled(previous)


@st.composite
def stride_one_configs(draw):
    """Stride-1 convolutions the kernel takes: channels across tile edges (8), widths that are
    not multiples of 8, non-square kernels, asymmetric and 'same' padding."""
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    mode = draw(st.sampled_from(["pair", "pair", "four", "same", "valid"]))
    if mode == "pair":
        padding = (draw(st.integers(0, kernel[0] - 1)), draw(st.integers(0, kernel[1] - 1)))
        pads = (padding[0], padding[0], padding[1], padding[1])
    elif mode == "four":
        pads = padding = tuple(draw(st.integers(0, kernel[axis // 2] - 1)) for axis in range(4))
    else:
        padding, pads = mode, (0, 0, 0, 0)
    height = draw(st.integers(max(1, kernel[0] - pads[0] - pads[1]), 12))
    width = draw(st.integers(max(1, kernel[1] - pads[2] - pads[3]), 19))
    return {
        "in_channels": draw(st.integers(1, 20)), "out_channels": draw(st.integers(4, 20)),
        "kernel_size": kernel, "padding": padding, "bias": draw(st.booleans()),
        "input_shape": (draw(st.integers(1, 3)), height, width),
    }


def torch_padding(conv, x):
    pad = conv.geometry(x.shape[2:]).padding
    return (pad.left, pad.right, pad.top, pad.bottom)


@pytest.mark.parametrize("kernel_on", [True, False], ids=["compiled", "numpy"])
@settings(max_examples=40, deadline=None)
@given(config=stride_one_configs(), seed=st.integers(0, 2**32 - 1))
def test_stride_one_conv_matches_the_oracle_and_torch(kernel_on, config, seed):
    rng = np.random.default_rng(seed)
    n, height, width = config.pop("input_shape")
    conv = cn.Conv2d(**config)
    if conv.bias is not None:
        conv.bias.data[...] = rng.standard_normal(conv.bias.shape)
    x = rng.standard_normal((n, config["in_channels"], height, width)).astype(np.float32)
    with compiled(kernel_on):
        out_w = conv.geometry(x.shape[2:]).out_hw[1]
        # 4 to 20 filters: always the kernel's when it is on.
        assert kernels.worth_compiling(conv, x, conv.out_channels, conv.in_channels,
                                       out_w) == kernel_on
        out = conv.forward(x)
        dy = rng.standard_normal(out.shape).astype(np.float32)
        dx = conv.backward(dy)

    pads = torch_padding(conv, x)
    expected = reference.conv2d(x, conv.weight.data, None if conv.bias is None else conv.bias.data,
                                (1, 1), (pads[2], pads[3], pads[0], pads[1]), (1, 1), 1)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    tx, tw = leaf(x), leaf(conv.weight.data)
    tb = leaf(conv.bias.data) if conv.bias is not None else None
    ty = F.conv2d(F.pad(tx, pads), tw, tb)
    ty.backward(torch.from_numpy(dy))
    assert_conv_matches_torch(conv, out, dx, ty, tx, tw, tb, dy=dy)


@pytest.mark.parametrize("kwargs, input_shape", [
    ({"in_channels": 4, "out_channels": 10, "kernel_size": 5, "padding": 2}, (2, 4, 7, 11)),
    ({"in_channels": 9, "out_channels": 5, "kernel_size": (2, 3), "padding": "same"},
     (1, 9, 5, 9)),
    ({"in_channels": 4, "out_channels": 17, "kernel_size": 3, "padding": (0, 2, 1, 0)},
     (3, 4, 4, 6)),
])
def test_compiled_gradients_match_centred_differences(kwargs, input_shape, rng):
    conv = cn.Conv2d(**kwargs)
    x = rng.standard_normal(input_shape)
    out_w = conv.geometry(x.shape[2:]).out_hw[1]
    assert kernels.worth_compiling(conv, x, conv.out_channels, conv.in_channels, out_w)
    assert kernels.worth_compiling(conv, x, conv.in_channels, conv.out_channels, x.shape[3])
    check_gradients(conv, x, rng)


@pytest.fixture
def kernel_calls(monkeypatch):
    calls = []
    real = kernels.conv_forward

    def counting(xpad, weights, bias, out, tile):
        calls.append(out.shape[1])  # channels this correlation produces
        return real(xpad, weights, bias, out, tile)

    monkeypatch.setattr(kernels, "conv_forward", counting)
    return calls


@pytest.mark.parametrize("kwargs, expected", [
    ({"in_channels": 6, "out_channels": 16, "kernel_size": 5, "padding": 2}, [16, 6]),
    # Many filters: the forward is BLAS's; the input gradient (5 channels) is the kernel's.
    ({"in_channels": 5, "out_channels": 32, "kernel_size": 3, "padding": 1}, [5]),
    # The input gradient of 3 channels would fill 3 of 8 lanes: BLAS's.
    ({"in_channels": 3, "out_channels": 16, "kernel_size": 5, "padding": 2}, [16]),
    # 32 channels out of 72 taps each, on rows for the 4 x 16 tile: the kernel's too.
    ({"in_channels": 32, "out_channels": 8, "kernel_size": 3, "padding": 1}, [8, 32]),
    ({"in_channels": 16, "out_channels": 48, "kernel_size": 3, "padding": 1}, [48, 16]),
    ({"in_channels": 16, "out_channels": 96, "kernel_size": 3, "padding": 1}, [16]),
    ({"in_channels": 3, "out_channels": 16, "kernel_size": 3, "stride": 2}, []),
    ({"in_channels": 3, "out_channels": 16, "kernel_size": 3, "dilation": 2}, []),
    ({"in_channels": 4, "out_channels": 16, "kernel_size": 3, "groups": 2}, []),
    ({"in_channels": 3, "out_channels": 16, "kernel_size": 1}, []),  # the plain product
    ({"in_channels": 6, "out_channels": 16, "kernel_size": 3, "padding": 3}, [16]),  # pad > 2
])
def test_which_correlations_run_on_the_kernel(kwargs, expected, kernel_calls, rng):
    conv = cn.Conv2d(**kwargs)
    x = rng.standard_normal((1, kwargs["in_channels"], 9, 9)).astype(np.float32)
    conv.backward(rng.standard_normal(conv.forward(x).shape).astype(np.float32))
    assert kernel_calls == expected


def test_switched_off_the_numpy_path_gives_the_same_answers(rng):
    conv = cn.Conv2d(6, 20, 5, padding=2)
    x = rng.standard_normal((4, 6, 9, 13)).astype(np.float32)
    dy = rng.standard_normal((4, 20, 9, 13)).astype(np.float32)
    results = []
    for enabled in (True, False):
        with compiled(enabled):
            conv.zero_grad()
            results.append((conv.forward(x), conv.backward(dy), conv.weight.grad.copy()))
    for ours, numpy_path in zip(*results, strict=True):
        np.testing.assert_allclose(ours, numpy_path, rtol=1e-5, atol=1e-5)


def test_float64_input_runs_in_float64(rng):
    conv = cn.Conv2d(2, 3, 3, padding=1).astype(np.float64)
    x = rng.standard_normal((1, 2, 5, 5))
    out = conv.forward(x)
    assert out.dtype == np.float64
    expected = reference.conv2d(x, conv.weight.data, conv.bias.data, (1, 1), (1, 1, 1, 1),
                                (1, 1), 1)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_compiling_leaves_numbas_slp_setting_as_it_was():
    from numba.core import config

    before = config.SLP_VECTORIZE  # 0, Numba's default, unless the environment says otherwise
    kernels._kernel(np.float32, (4, 16))
    assert config.SLP_VECTORIZE == before
    with kernels.slp_vectorizer():
        assert config.SLP_VECTORIZE == 1
    assert config.SLP_VECTORIZE == before


def test_the_kernel_module_is_written_once_by_its_hash_and_cached_by_numba(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("CONVNET_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "_compiled", {})
    kernels._kernel(np.float32, (8, 8))
    [module] = (tmp_path / "kernels").glob("convnet_kernel_float32_8x8_*.py")
    assert module.read_text() == kernels.module_source("float32", (8, 8))
    assert list((tmp_path / "kernels" / "__pycache__").glob(f"{module.stem}.forward-*.nbi"))
    assert "a7_7 += x7 * w7" in module.read_text()  # the 8 x 8 tile, written out


def test_a_module_with_narrower_vectors_is_compiled_apart_into_the_cache(tmp_path, monkeypatch):
    """LLVM's options are process-wide: a child process sets the SLP vectorizer's widest
    vector and compiles the module into Numba's cache, which this process then loads."""
    monkeypatch.setenv("CONVNET_CACHE", str(tmp_path))
    source = "\n".join([
        "import numba", "",
        "@numba.njit('void(float32[::1], float32[::1])', cache=True)",
        "def add(x, out):",
        *[f"    out[{k}] = x[{k}] + x[{k + 16}]" for k in range(16)], ""])
    module = kernels.import_source("convnet_test_narrow", source,
                                   llvm_options=("-slp-max-reg-size=256",))
    x = np.arange(32, dtype=np.float32)
    out = np.zeros(16, np.float32)
    module.add(x, out)
    assert np.array_equal(out, x[:16] + x[16:])
    assert sum(module.add.stats.cache_hits.values()) == 1  # the child's compile, loaded
    [marker] = (tmp_path / "kernels").glob("convnet_test_narrow_*.llvm-*")
    again = kernels.import_source("convnet_test_narrow", source,
                                  llvm_options=("-slp-max-reg-size=256",))
    assert again.add is not None and marker.exists()


def test_a_child_that_does_not_finish_leaves_the_compile_to_this_process(tmp_path,
                                                                         monkeypatch):
    monkeypatch.setenv("CONVNET_CACHE", str(tmp_path))
    monkeypatch.setattr(kernels, "COMPILE_APART_SECONDS", 0.001)
    source = "import numba\n\n@numba.njit('int64(int64)', cache=True)\ndef twice(x):\n" \
             "    return 2 * x\n"
    module = kernels.import_source("convnet_test_slow_child", source,
                                   llvm_options=("-slp-max-reg-size=256",))
    assert module.twice(21) == 42
    stats = module.twice.stats
    assert sum(stats.cache_hits.values()) == 0 and sum(stats.cache_misses.values()) == 1  # here
    assert not list((tmp_path / "kernels").glob("*.llvm-*"))  # tried again next time


def test_a_loaded_module_frees_the_link_copies_only_of_its_fixed_functions(tmp_path,
                                                                           monkeypatch):
    # fixed: a C callback and a kernel of explicit signature; `lazy` compiles on first use,
    # so a later caller may still need to link it
    import numba

    monkeypatch.setenv("CONVNET_CACHE", str(tmp_path))
    source = "\n".join([
        "import numba", "",
        "@numba.njit('int64(int64)', cache=True)",
        "def fixed(x):", "    return 3 * x", "",
        "@numba.cfunc('int64(int64)', cache=True)",
        "def callback(x):", "    return fixed(x) + 1", "",
        "@numba.njit(cache=True)",
        "def lazy(x):", "    return x - 1", ""])
    def load(attempt: str):
        sys.modules.pop(next((name for name in sys.modules
                              if name.startswith("convnet_test_links_")), ""), None)
        module = kernels.import_source("convnet_test_links", source)
        assert module.fixed(4) == 12 and module.callback.ctypes(4) == 13, attempt
        assert module.callback._library._shared_module is None, attempt
        assert all(r.library._shared_module is None for r in module.fixed.overloads.values())
        lazy = module.lazy
        assert lazy(5) == 4

        @numba.njit
        def caller(x):
            return lazy(x) * 2  # links lazy's library into a new one
        assert caller(5) == 8, attempt
        return module

    load("compiled here")
    module = load("loaded from the cache")
    assert sum(module.fixed.stats.cache_hits.values()) == 1  # the second time, from the cache


def test_the_narrow_tile_compiles_apart_and_the_others_here():
    from convnet.core import blocked

    assert "vectors of 256 bits" in blocked.module_source("conv", "float32", (8, 1))
    assert "vectors of" not in blocked.module_source("conv", "float32", (6, 2))


def test_an_unwritable_cache_folder_compiles_in_memory(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("CONVNET_CACHE", str(blocker))
    module = kernels.import_source("convnet_test_module", "VALUE = 3\n")
    assert module.VALUE == 3
    assert blocker.read_text() == ""


def test_environment_switch_turns_the_kernel_off():
    code = "from convnet import kernels; print(kernels.available())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"CONVNET_COMPILED_KERNELS": "0", "PATH": ""}, check=True)
    assert result.stdout.strip() == "False"


def test_the_tile_follows_the_row_length():
    # 16 columns unless that computes more columns than tiles of 8 would.
    assert {width: kernels.tile_for(width) for width in (3, 8, 10, 16, 20, 28, 32)} == {
        3: (8, 8), 8: (8, 8), 10: (4, 16), 16: (4, 16), 20: (8, 8), 28: (4, 16), 32: (4, 16)}


def test_small_work_does_not_load_the_kernel_but_uses_it_once_loaded(monkeypatch,
                                                                    kernel_calls, rng):
    monkeypatch.setattr(kernels, "MIN_LOAD_MACS", 1 << 23)
    monkeypatch.setattr(kernels, "_compiled", {})  # as in a fresh process
    conv = cn.Conv2d(6, 16, 5, padding=2)
    one = rng.standard_normal((1, 6, 16, 16)).astype(np.float32)  # 0.6 M multiply-adds
    with cn.no_grad():
        conv.forward(one)
        assert kernel_calls == [] and kernels._compiled == {}
        conv.forward(rng.standard_normal((16, 6, 16, 16)).astype(np.float32))  # 9.8 M
        chunks = len(kernel_calls)
        assert chunks >= 1 and set(kernel_calls) == {16}
        conv.forward(one)
    assert len(kernel_calls) == chunks + 1

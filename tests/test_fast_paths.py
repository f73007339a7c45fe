"""The speed-ups of the engine against independent answers: convolution split into batch chunks
on worker threads, both ways of getting a stride-1 conv's input gradient, backward without the
input gradient, separable max pooling on tied inputs against PyTorch, and the thread setting."""

import contextlib
import platform
import subprocess
import sys

import numpy as np
import pytest
from engine_checks import build_conv, check_gradients, conv_configs, torch_tensor
from hypothesis import given, settings
from hypothesis import strategies as st

import convnet as cn
from convnet.core import backend, kernels, pool_kernels, reference, team
from convnet.nn import conv


@contextlib.contextmanager
def one_sample_chunks():
    """Every layer splits its batch into single samples, spread over two worker threads."""
    previous = (backend.num_threads(), conv.CHUNK_BYTES, backend.ELEMENTWISE_CHUNK_BYTES,
                backend.MIN_CHUNK_BYTES)
    backend.set_num_threads(2)
    conv.CHUNK_BYTES = backend.ELEMENTWISE_CHUNK_BYTES = backend.MIN_CHUNK_BYTES = 1
    try:
        yield
    finally:
        backend.set_num_threads(previous[0])
        conv.CHUNK_BYTES, backend.ELEMENTWISE_CHUNK_BYTES, backend.MIN_CHUNK_BYTES = previous[1:]


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of one sample on two worker threads, whatever the machine."""
    with one_sample_chunks():
        yield


@settings(max_examples=30, deadline=None)
@given(config=conv_configs(batch=5), seed=st.integers(0, 2**16))
def test_chunked_threaded_conv_matches_the_loop_oracle_and_torch(config, seed):
    import torch

    with one_sample_chunks():
        rng = np.random.default_rng(seed)
        layer = build_conv(config)
        x = rng.standard_normal(config["input_shape"]).astype(np.float32)
        out = layer.forward(x)
        pad = layer.geometry(x.shape[2:]).padding
        expected = reference.conv2d(
            x, layer.weight.data, None if layer.bias is None else layer.bias.data,
            layer.stride, (pad.top, pad.bottom, pad.left, pad.right), layer.dilation,
            layer.groups)
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
        dy = rng.standard_normal(out.shape).astype(np.float32)
        dx = layer.backward(dy)
        tx = torch_tensor(np.pad(x, ((0, 0), (0, 0), (pad.top, pad.bottom),
                                     (pad.left, pad.right))), requires_grad=True)
        tw = torch_tensor(layer.weight.data, requires_grad=True)
        ty = torch.nn.functional.conv2d(tx, tw, None, layer.stride, 0, layer.dilation,
                                        layer.groups)
        ty.backward(torch_tensor(dy))
        dx_torch = tx.grad.numpy()[:, :, pad.top : pad.top + x.shape[2],
                                   pad.left : pad.left + x.shape[3]]
        np.testing.assert_allclose(dx, dx_torch, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(layer.weight.grad, tw.grad.numpy(), rtol=1e-4, atol=1e-4)
        if layer.bias is not None:
            np.testing.assert_allclose(layer.bias.grad, dy.sum(axis=(0, 2, 3)), rtol=1e-4,
                                       atol=1e-4)


@pytest.mark.parametrize("by_correlation", [True, False])
@pytest.mark.parametrize(
    "args, shape",
    [
        ((3, 4, 3), {"padding": 1}),
        ((2, 5, (3, 2)), {"padding": (2, 0), "dilation": (1, 2)}),
        ((4, 4, 3), {"padding": "same", "groups": 2}),
        ((3, 2, 2), {"padding": (3, 1)}),  # padding wider than the kernel's reach
    ],
)
def test_both_stride_one_input_gradients_match_centred_differences(
        args, shape, by_correlation, small_chunks, rng, monkeypatch):
    # At stride 1 dx is either the correlation of dy with the flipped filters or the
    # scatter of W^T dy; each is checked on its own.
    monkeypatch.setattr(cn.Conv2d, "_dx_by_correlation", lambda *a: by_correlation)
    channels, out_channels, kernel = args
    layer = cn.Conv2d(channels, out_channels, kernel, **shape)
    check_gradients(layer, rng.standard_normal((3, channels, 6, 5)), rng)


def test_strided_conv_gradients_in_chunks_match_centred_differences(small_chunks, rng):
    layer = cn.Conv2d(3, 4, 3, stride=2, padding=1)
    check_gradients(layer, rng.standard_normal((3, 3, 7, 7)), rng)


def test_pointwise_conv_gradients_in_chunks_match_centred_differences(small_chunks, rng):
    layer = cn.Conv2d(4, 6, 1, groups=2)
    check_gradients(layer, rng.standard_normal((3, 4, 3, 5)), rng)


def test_backward_without_input_gradient_fills_the_same_parameter_gradients(rng):
    def model():
        cn.manual_seed(3)
        return cn.Sequential(cn.Conv2d(3, 4, 3, padding=1), cn.ReLU(), cn.MaxPool2d(2),
                             cn.Flatten(), cn.Linear(4 * 4 * 4, 5))

    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    dy = rng.standard_normal((4, 5)).astype(np.float32)
    full, skipped = model(), model()
    full.forward(x)
    assert full.backward(dy).shape == x.shape
    skipped.forward(x)
    assert skipped.backward(dy, input_grad=False) is None
    for (name, a), (_, b) in zip(full.named_parameters(), skipped.named_parameters(),
                                 strict=True):
        np.testing.assert_array_equal(a.grad, b.grad, err_msg=name)
    # A first layer without parameters still runs its backward (and frees its cache).
    relu_first = cn.Sequential(cn.ReLU(), cn.Flatten(), cn.Linear(12, 2))
    relu_first.forward(x[:, :, :2, :2].copy())
    assert relu_first.backward(dy[:, :2], input_grad=False) is None
    assert relu_first.layers[0].cache is None


@contextlib.contextmanager
def max_pool_path(compiled: bool):
    """MaxPool2d on the compiled passes of convnet.core.pool_kernels whatever the input's
    size (compiled), or on its NumPy path (the compiled kernels off)."""
    previous = (pool_kernels.MIN_LOAD_VALUES, kernels._enabled)
    pool_kernels.MIN_LOAD_VALUES = 0
    kernels.set_enabled(compiled and kernels.available())
    try:
        yield
    finally:
        pool_kernels.MIN_LOAD_VALUES = previous[0]
        kernels.set_enabled(previous[1])


@settings(max_examples=60, deadline=None)
@given(kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       size=st.tuples(st.integers(4, 11), st.integers(4, 11)),
       pad_fraction=st.tuples(st.booleans(), st.booleans()),
       compiled=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_max_pool_on_heavily_tied_input_matches_torch(kernel, stride, size, pad_fraction,
                                                      compiled, dtype, seed):
    # Values from {-2, ..., 2}: most windows hold ties, which must go to the first maximum in
    # row-major order (PyTorch's rule) through both separable stages (NumPy) or the one pass
    # (compiled), with overlapping windows, padding and dropped borders.
    import torch

    padding = tuple(k // 2 if use else 0 for k, use in zip(kernel, pad_fraction, strict=True))
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, (3, 3, *size)).astype(dtype)
    pool = cn.MaxPool2d(kernel, stride, padding, strict=False)
    with one_sample_chunks(), max_pool_path(compiled):
        out = pool.forward(x)
        assert (pool.cache[3] is None) == (compiled and kernels.available())  # the path taken
        tx = torch_tensor(x, requires_grad=True)
        expected = torch.nn.functional.max_pool2d(tx, kernel, stride, padding)
        np.testing.assert_array_equal(out, expected.detach().numpy())
        dy = rng.standard_normal(out.shape).astype(dtype)
        expected.backward(torch_tensor(dy))
        # Overlapping windows add several gradients in either order: equal up to rounding,
        # while a gradient sent to the wrong tap would be off by a whole value.
        dx = pool.backward(dy)
        assert dx.dtype == dtype
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.skipif(not kernels.available(), reason="the compiled kernels are off")
def test_compiled_max_pool_matches_the_numpy_path_on_large_random_input(rng):
    # Past MIN_LOAD_VALUES a training MaxPool2d takes the compiled passes on its own; their
    # output must be the NumPy path's and the loop oracle's, and the input gradient the NumPy
    # path's (up to the order of the sums where windows overlap): non-overlapping 2x2 and
    # overlapping 3x3 stride-2 padded windows.
    x = rng.standard_normal((8, 16, 48, 48)).astype(np.float32)
    assert x.size >= pool_kernels.MIN_LOAD_VALUES
    for pool in (cn.MaxPool2d(2), cn.MaxPool2d(3, 2, 1, strict=False)):
        out = pool.forward(x)
        assert pool.cache[3] is None  # taken by the compiled passes
        dy = rng.standard_normal(out.shape).astype(np.float32)
        dx = pool.backward(dy)
        with max_pool_path(False):
            np.testing.assert_array_equal(pool.forward(x), out)
            np.testing.assert_allclose(pool.backward(dy), dx, rtol=1e-6, atol=1e-6)
        padding = pool.geometry(x.shape[2:]).padding
        expected = reference.pool2d(x, pool.kernel_size, pool.stride,
                                    (padding.top, padding.left), "max")
        np.testing.assert_array_equal(out, expected.astype(np.float32))


def test_compiled_max_pool_output_is_nan_where_pytorch_s_is():
    import torch

    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    x[0, 0, 1, 0] = np.nan
    x[1, 0, 2, 3] = np.nan
    pool = cn.MaxPool2d(2)
    with max_pool_path(True):
        out = pool.forward(x)
        expected = torch.nn.functional.max_pool2d(torch_tensor(x), 2).numpy()
        np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
        np.testing.assert_array_equal(out[~np.isnan(out)], expected[~np.isnan(expected)])


def test_relu_in_chunks_on_worker_threads(rng):
    x = rng.standard_normal((5, 3, 4, 4)).astype(np.float32)
    relu = cn.ReLU()
    with one_sample_chunks():
        out = relu.forward(x)
        dx = relu.backward(np.ones_like(x))
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    np.testing.assert_array_equal(dx, (x > 0).astype(np.float32))


def test_set_num_threads_refuses_nonsense():
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="threads must be an int >= 1"):
            backend.set_num_threads(bad)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc's settings are glibc's")
def test_memory_a_step_frees_is_reused_by_the_next_without_faulting_it_in_again():
    """A step that frees 336 MiB (more than the 256 MiB trim threshold convnet once set; the
    heap's top went back to the OS and each step faulted it in page by page) gets the same
    pages again at its next run. In a fresh process: malloc's settings are process-wide."""
    code = "\n".join([
        "import resource, numpy",
        "from convnet.core import backend",
        "backend.set_num_threads(1)",
        "def step():  # 3 MiB arrays: from the heap, and under NumPy's huge-page size",
        "    arrays = [numpy.ones(3 << 18, numpy.float32) for _ in range(112)]",
        "    del arrays",
        "step()",
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt",
        "step()",
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)"])
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert int(done.stdout) < 2_000  # 86 thousand pages, were they given back


def test_chunks_cover_the_batch_once_and_are_never_tiny():
    previous = backend.num_threads()
    backend.set_num_threads(2)
    try:
        for batch, per_sample, budget in [(128, 400_000, 2 << 20), (2, 1000, 2 << 20),
                                          (7, 3 << 20, 2 << 20), (128, 20_000, 2 << 20)]:
            chunks = backend.batch_chunks(batch, per_sample, budget)
            covered = [i for part in chunks for i in range(part.start, part.stop)]
            assert covered == list(range(batch))
            if len(chunks) > 1:
                assert min(p.stop - p.start for p in chunks[:-1]) * per_sample >= min(
                    budget, backend.MIN_CHUNK_BYTES)
        assert len(backend.batch_chunks(2, 1000, 2 << 20)) == 1  # too small to share
        assert len(backend.batch_chunks(128, 400_000, 2 << 20)) == 26  # 5 samples of 2 MiB
    finally:
        backend.set_num_threads(previous)


def test_run_chunks_runs_each_chunk_once_in_order_and_raises_what_a_chunk_raised():
    previous = backend.num_threads()
    backend.set_num_threads(2)
    try:
        seen = []
        chunks = [slice(i, i + 1) for i in range(50)]
        assert team.run_chunks(lambda part: seen.append(part.start) or part.start * 2,
                                  chunks) == [2 * i for i in range(50)]
        assert sorted(seen) == list(range(50))

        def fail_on_seven(part):
            if part.start == 7:
                raise ValueError("chunk 7")
            return part.start

        with pytest.raises(ValueError, match="chunk 7"):
            team.run_chunks(fail_on_seven, chunks)
    finally:
        backend.set_num_threads(previous)


def test_default_thread_count_follows_omp_num_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert backend.default_threads() == 3
    for unset in ("", "0", "two"):
        monkeypatch.setenv("OMP_NUM_THREADS", unset)
        assert backend.default_threads() == backend.available_cores()


def test_run_chunks_inside_a_chunk_runs_inline_and_never_deadlocks():
    """A chunk's work that splits again (a plan's part of a batch running a layer's NumPy
    forward) runs its inner chunks on its own thread: handed to the pool, a helper could wait
    on chunks queued behind itself."""
    import threading

    results, threads_seen = [], set()

    def inner(d):
        threads_seen.add(threading.get_ident())
        return d

    def outer(c):
        return c * sum(team.run_chunks(inner, [1, 2, 3]))

    def call():
        results.append(team.run_chunks(outer, [1, 2, 3, 4, 5, 6]))

    with one_sample_chunks():
        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        worker.join(30)
    assert not worker.is_alive(), "nested run_chunks deadlocked"
    assert results == [[6, 12, 18, 24, 30, 36]]


@pytest.mark.skipif(not kernels.available(), reason="the compiled kernels are off")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("gate_first", [False, True])
def test_a_channel_gate_s_mul_matches_the_numpy_path(threads, dtype, gate_first, rng):
    """Mul of (N, C, H, W) by a gate (N, C, 1, 1), either order: the compiled passes
    (convnet.core.gate_kernels) give NumPy's product and input gradient bit for bit, and the
    gate's gradient within rounding of a float64 sum."""
    from convnet.core import gate_kernels

    x = rng.standard_normal((9, 13, 23, 25)).astype(dtype)  # 67,275 values: past MIN_VALUES
    gate = rng.standard_normal((9, 13, 1, 1)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    inputs = [gate, x] if gate_first else [x, gate]
    assert gate_kernels.gate_of(inputs) == (0 if gate_first else 1)  # it runs compiled
    previous = backend.num_threads()
    backend.set_num_threads(threads)
    try:
        mul = cn.Mul()
        out = mul.forward(inputs)
        grads = mul.backward(dy)
    finally:
        backend.set_num_threads(previous)
    dx, dgate = (grads[1], grads[0]) if gate_first else grads
    np.testing.assert_array_equal(out, x * gate)
    np.testing.assert_array_equal(dx, dy * gate)
    exact = (dy.astype(np.float64) * x).sum(axis=(2, 3), keepdims=True)
    assert dgate.shape == gate.shape and dgate.dtype == dtype
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(dgate, exact, rtol=0, atol=tolerance * np.abs(exact).max())


def test_a_gate_that_broadcasts_otherwise_stays_on_numpy(rng):
    from convnet.core import gate_kernels

    x = rng.standard_normal((4, 16, 32, 32)).astype(np.float32)
    assert gate_kernels.gate_of([x, rng.standard_normal((1, 16, 1, 1)).astype(np.float32)]) is None
    assert gate_kernels.gate_of([x, x.astype(np.float64)[:, :, :1, :1]]) is None  # dtypes differ
    assert gate_kernels.gate_of([x[:, :, ::2], x[:, :, :1, :1].copy()]) is None  # strided
    assert gate_kernels.gate_of([x, x[:, :, :1, :1].copy(), x]) is None  # three inputs


@pytest.mark.skipif(not kernels.available(), reason="the compiled kernels are off")
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make, shape", [
    (lambda: cn.Upsample(scale_factor=2, mode="bilinear"), (5, 11, 32, 40)),
    (lambda: cn.Upsample(scale_factor=3, mode="bilinear", align_corners=True), (6, 14, 41, 33)),
    (lambda: cn.Resize(size=(29, 50), mode="linear",  # down along H, up along W
                       coordinate_transformation_mode="asymmetric"), (4, 12, 40, 36)),
    (lambda: cn.Resize(scales=(1.7, 0.6), mode="linear",
                       coordinate_transformation_mode="half_pixel_symmetric"), (3, 7, 45, 70)),
])
def test_linear_resize_in_training_matches_the_matrices(make, shape, dtype, threads,
                                                        monkeypatch, rng):
    """Linear resizing of an array past MIN_VALUES runs forward on the compiled kernel
    (convnet.core.resize_kernels): equal to the loop oracle (reference.resize2d) and to the
    NumPy layer's matrix products within rounding, planes split over one or two threads; the
    backward after it (the products' transposes) as after the NumPy forward."""
    from convnet.core import resize_kernels

    x = rng.standard_normal(shape).astype(dtype)
    assert resize_kernels.serves(x)
    previous = backend.num_threads()
    backend.set_num_threads(threads)
    calls = []
    compiled_forward = resize_kernels.forward
    monkeypatch.setattr(resize_kernels, "forward",
                        lambda *a: calls.append("forward") or compiled_forward(*a))
    try:
        layer = make()
        out = layer.forward(x)
        dy = rng.standard_normal(out.shape).astype(dtype)
        dx = layer.backward(dy)
        monkeypatch.setattr(resize_kernels, "MIN_VALUES", 1 << 40)  # the matrices
        numpy_layer = make()
        expected = numpy_layer.forward(x)
        expected_dx = numpy_layer.backward(dy)
    finally:
        backend.set_num_threads(previous)
    assert calls == ["forward"] and out.dtype == dx.dtype == dtype
    tolerance = 2e-6 if dtype == np.float32 else 1e-14
    oracle = reference.resize2d(x.astype(np.float64), out.shape[2:], mode="linear",
                                coordinate_transformation_mode=layer.coordinate_transformation_mode,
                                scales=getattr(layer, "scales", None))
    np.testing.assert_allclose(out, oracle, rtol=0, atol=tolerance * 8)
    np.testing.assert_allclose(out, expected, rtol=0, atol=tolerance * 8)
    np.testing.assert_allclose(dx, expected_dx, rtol=0, atol=tolerance * np.abs(expected_dx).max())

"""convnet.core.stack_arrays: scratch arrays in a compiled function's stack frame."""

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from convnet.core.stack_arrays import stack_empty  # noqa: E402


@numba.njit
def _cumulative(x):
    scratch = stack_empty(64, x.dtype)
    order = stack_empty(8, np.int64)
    total = x.dtype.type(0)
    for i in range(x.size):
        total += x[i]
        scratch[i] = total
    for i in range(8):
        order[i] = 7 - i
    return scratch[: x.size].copy(), order.copy(), scratch.ctypes.data % 64, scratch.size


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_stack_array_holds_what_is_written(dtype):
    x = np.random.default_rng(0).random(40).astype(dtype)
    sums, order, misalignment, size = _cumulative(x)
    assert sums.dtype == dtype and size == 64
    np.testing.assert_allclose(sums, np.cumsum(x), rtol=1e-5)
    np.testing.assert_array_equal(order, np.arange(7, -1, -1))
    assert misalignment == 0  # a cache line (and a 512-bit vector) apart


@numba.njit
def _two_calls(a, b):
    return _cumulative(a)[0].sum() + _cumulative(b)[0].sum()


def test_each_call_has_its_own_frame():
    a, b = np.ones(10, np.float32), np.full(20, 2.0, np.float32)
    assert _two_calls(a, b) == pytest.approx(np.cumsum(a).sum() + np.cumsum(b).sum())


def test_the_size_must_be_a_constant():
    @numba.njit
    def sized_at_run_time(n):
        return stack_empty(n, np.float32).size

    with pytest.raises(numba.core.errors.TypingError):
        sized_at_run_time(np.int64(4))

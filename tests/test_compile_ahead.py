"""Compiling ahead (convnet.core.blocked.compile_ahead): a plan whose kernel modules are not in
Numba's cache starts one child process that compiles them from the last backwards while the
calling process compiles from the first, each module under its lock (kernels.module_lock)."""

import numpy as np
import pytest

import convnet as cn
from convnet.core import blocked, blocked_training, kernels
from convnet.nn import inference

F32 = np.float32
# Two of the quickest blocked modules to compile (a few seconds each).
FIRST, LAST = ("depthwise", "float32", (8,)), ("conv_rows", "float32", (16, 1))


def path_of(key):
    return kernels.module_path(blocked._module_name(key), blocked.module_source(*key))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty cache folder, and no module loaded in this process yet."""
    monkeypatch.setenv("CONVNET_CACHE", str(tmp_path))
    monkeypatch.setenv("CONVNET_COMPILE_AHEAD", "1")
    monkeypatch.setattr(blocked, "_modules", {})
    monkeypatch.setattr(blocked, "_children", list(blocked._children))
    return tmp_path


@pytest.mark.slow
def test_a_child_compiles_what_the_cache_lacks_and_none_starts_once_it_has_it(fresh_cache):
    assert not kernels.compiled_before(path_of(FIRST))
    started = len(blocked._children)
    blocked.compile_ahead([FIRST, LAST])
    assert len(blocked._children) == started + 1
    assert blocked._children[-1].wait(timeout=600) == 0
    assert kernels.compiled_before(path_of(FIRST)) and kernels.compiled_before(path_of(LAST))
    assert blocked._modules == {}  # the child's work: nothing was compiled or loaded here
    blocked.compile_ahead([FIRST, LAST])
    assert len(blocked._children) == started + 1
    assert blocked.compiled(*FIRST) is not None  # loads from the cache the child filled


@pytest.mark.slow
def test_the_child_stops_at_the_module_the_asking_process_holds(fresh_cache):
    (fresh_cache / "kernels").mkdir()
    held = path_of(FIRST)
    held.write_text(blocked.module_source(*FIRST))
    with kernels.module_lock(held) as taken:  # as the asking process compiling it
        assert taken
        blocked.compile_behind([FIRST, LAST])  # the child's part, run here
        assert kernels.compiled_before(path_of(LAST))
        assert not kernels.compiled_before(held)
        assert blocked.compiled(*FIRST, wait=False) is None  # held elsewhere: not imported


def test_nothing_starts_for_one_missing_module_or_when_switched_off(fresh_cache, monkeypatch):
    started = len(blocked._children)
    blocked.compile_ahead([FIRST])
    blocked.compile_ahead([FIRST, FIRST])
    monkeypatch.setenv("CONVNET_COMPILE_AHEAD", "0")
    blocked.compile_ahead([FIRST, LAST])
    assert len(blocked._children) == started


@pytest.mark.parametrize("n", [1, 2])
def test_a_plan_asks_for_its_modules_in_the_order_its_steps_run(monkeypatch, n):
    asked = []
    monkeypatch.setattr(blocked, "compile_ahead", lambda keys: asked.append(list(keys)))
    monkeypatch.setattr(inference, "MIN_LOAD_MACS", 0)  # a plan even for this small work
    model = cn.Sequential(cn.Conv2d(3, 32, 3, padding=1), cn.ReLU(), cn.MaxPool2d(2),
                          cn.Conv2d(32, 32, 3, padding=1), cn.ReLU(),
                          cn.GlobalAvgPool2d(), cn.Flatten(), cn.Linear(32, 10)).eval()
    x = np.random.default_rng(0).standard_normal((n, 3, 16, 16)).astype(F32)
    with cn.no_grad():
        model(x)
        model(x)
    assert len(asked) == 1, "asked once per plan"
    kinds = [key[0] for key in asked[0]]
    assert kinds[0] == "merge"  # the finiteness check, at the first call
    assert kinds.index("pool") > kinds.index("conv") and "pool" in kinds
    assert ("winograd" in kinds) == (n == 1)  # Winograd only for one image (32 channels)


def test_a_convolution_in_training_asks_once_for_its_passes_modules(monkeypatch):
    asked = []
    monkeypatch.setattr(blocked, "compile_ahead", lambda keys: asked.append(list(keys)))
    monkeypatch.setattr(blocked_training, "_asked", set())
    monkeypatch.setattr(kernels, "MIN_LOAD_MACS", 0)
    layer = cn.Conv2d(3, 16, 3, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(F32)
    for _ in range(2):
        layer(x)
        layer.backward(np.ones((2, 16, 12, 12), F32))
    assert len(asked) == 1
    expected = blocked_training.modules(3, 16, 1, 12)
    assert asked[0] == [*expected, ("merge", np.float32, None)]
    assert expected[0][0] == "weight_grad"  # the padded copy's module comes first
    assert expected[2] == ("conv", np.float32, blocked_training.plain_tile(3))  # dx's tile


def test_nothing_starts_where_the_cache_folder_cannot_be_made(fresh_cache):
    (fresh_cache / "kernels").write_text("a file where the folder would be\n")
    started = len(blocked._children)
    blocked.compile_ahead([FIRST, LAST])
    assert len(blocked._children) == started

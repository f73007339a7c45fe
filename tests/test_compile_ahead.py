"""Compiling ahead (convnet.core.blocked.compile_ahead): a plan whose kernel modules are not in
Numba's cache starts one child process that compiles them from the last backwards while the
calling process compiles from the first, each module under its lock (kernels.module_lock)."""

import os
import subprocess
import sys
import time
from pathlib import Path

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


def ended(pid: int) -> bool:
    """Whether process pid has ended (gone, or a zombie nobody reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_the_child_of_a_killed_process_stops_after_the_module_it_is_on(fresh_cache):
    # The asking process ends at once without its exit handlers (as SIGKILL would end it):
    # the child finds its parent gone before LAST or after it, and does not go on to FIRST
    # (without the check it compiles both).
    code = ("import os; from convnet.core import blocked; "
            f"blocked.compile_ahead([{FIRST!r}, {LAST!r}]); "
            "print(blocked._children[0].pid, flush=True); os._exit(0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))
    child = int(done.stdout.split()[0])
    deadline = time.monotonic() + 300
    while not ended(child):
        assert time.monotonic() < deadline, "the orphaned child still runs after 300 s"
        time.sleep(0.2)
    assert not kernels.compiled_before(path_of(FIRST))


def test_a_child_whose_parent_is_not_the_one_that_asked_compiles_nothing(fresh_cache):
    blocked.compile_behind([FIRST, LAST], asked=os.getppid() + 1 if os.getppid() > 1 else 0)
    assert not kernels.compiled_before(path_of(LAST))


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
    monkeypatch.setattr(inference, "WINOGRAD_ONE_IMAGE_MIN_MACS", 0)  # and Winograd
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
    # Winograd only for one image (32 channels), in bands: its own module per products' tile
    assert ("winograd_band" in kinds) == (n == 1) and "winograd" not in kinds


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

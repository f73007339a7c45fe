import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

import convnet as cn

_precompiling: list = []
_started_early: list = []


def _interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


def pytest_sessionstart(session):
    """SIGTERM (a CI job's time limit, `kill`) stops the session as Ctrl-C does, so that
    pytest_sessionfinish ends the processes the session started.

    On two or more cores, a child compiles the kernel modules the suite needs, from the last
    needed backwards, while the tests run (tests/precompile.py; CONVNET_TEST_PRECOMPILE=0 leaves
    it out). With the cache filled it finds every module compiled and exits."""
    from convnet.core import kernels

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    if ((os.cpu_count() or 1) < 2 or os.environ.get("CONVNET_TEST_PRECOMPILE", "1") == "0"
            or not kernels.available()):
        return
    _precompiling.append(subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("precompile.py")), str(os.getpid())],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def pytest_collection_finish(session):
    """The wheel's build and checks (tests/test_wheel.py) start now in a thread of their own
    where those tests are selected: most of their time is pip's and their processes', beside
    a suite that leaves a core idle for much of its own."""
    modules = {id(item.module): item.module for item in session.items
               if getattr(item, "module", None) is not None}
    for module in modules.values():
        if hasattr(module, "start_early") and not session.config.option.collectonly:
            factory = getattr(session.config, "_tmp_path_factory", None)
            root = (factory.mktemp("wheel") if factory is not None
                    else Path(tempfile.mkdtemp(prefix="convnet-wheel-")))
            module.start_early(root, [item.name for item in session.items
                                      if getattr(item, "module", None) is module])
            _started_early.append(module)


def pytest_sessionfinish(session, exitstatus):
    for child in _precompiling:  # what it finished stays in the cache
        if child.poll() is None:
            child.terminate()
            child.wait()
    for module in _started_early:  # a session cut short ends the wheel's processes
        module.stop_early()


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same shared generator state."""
    cn.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

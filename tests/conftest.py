import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import convnet as cn

_precompiling: list = []


def pytest_sessionstart(session):
    """On two or more cores, a child compiles the kernel modules the suite needs, from the last
    needed backwards, while the tests run (tests/precompile.py; CONVNET_TEST_PRECOMPILE=0 leaves
    it out). With the cache filled it finds every module compiled and exits."""
    from convnet.core import kernels

    if ((os.cpu_count() or 1) < 2 or os.environ.get("CONVNET_TEST_PRECOMPILE", "1") == "0"
            or not kernels.available()):
        return
    _precompiling.append(subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("precompile.py"))],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def pytest_sessionfinish(session, exitstatus):
    for child in _precompiling:  # what it finished stays in the cache
        if child.poll() is None:
            child.terminate()
            child.wait()


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same shared generator state."""
    cn.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

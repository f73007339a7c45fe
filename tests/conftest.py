import numpy as np
import pytest

import convnet as cn


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same shared generator state."""
    cn.manual_seed(0)
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(1234)

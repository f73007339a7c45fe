"""Fixtures for the convnet.data tests; the writers live in data_fixtures.py."""

from __future__ import annotations

import pytest
from data_fixtures import ENV_URLS, UNREACHABLE, CifarFixture, FixtureServer, IdxFixture


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """No test reads or writes the user's cache, and none can reach the internet by accident."""
    monkeypatch.setenv("CONVNET_CACHE", str(tmp_path / "default-cache"))
    for var in ENV_URLS:
        monkeypatch.setenv(var, UNREACHABLE)


@pytest.fixture
def idx_fixture() -> IdxFixture:
    return IdxFixture()


@pytest.fixture
def cifar_fixture() -> CifarFixture:
    return CifarFixture()


@pytest.fixture
def server():
    s = FixtureServer()
    yield s
    s.close()


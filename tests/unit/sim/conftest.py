"""A simulated platform shared by the sim unit tests (created once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

from teegate.sim import SimPlatform


@pytest.fixture(scope="session")
def platform_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "platform"
    SimPlatform.create(path)
    return path


@pytest.fixture(scope="session")
def platform(platform_dir: Path) -> SimPlatform:
    return SimPlatform.load(platform_dir)

"""One sim platform, one --dev KBS and one sim QGS shared by the attester integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from teegate.sim import SimPlatform
from tests.integration.attester.stack import Daemon, Kbs, start_kbs, start_qgs


@dataclass
class Stack:
    workdir: Path
    platform: Path
    kbs: Kbs
    qgs: Daemon
    qgs_socket: Path

    def sim_args(self) -> list[str]:
        return [
            "--url",
            self.kbs.url,
            "--evidence",
            "sim",
            "--sim-platform",
            str(self.platform),
            "--qgs-socket",
            str(self.qgs_socket),
        ]


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("attester-stack")
    platform = workdir / "platform"
    SimPlatform.create(platform)
    kbs = start_kbs(workdir, platform)
    sock = workdir / "qgs.sock"
    try:
        qgs = start_qgs(workdir, platform, sock)
    except BaseException:
        kbs.daemon.stop()
        raise
    try:
        yield Stack(workdir, platform, kbs, qgs, sock)
    finally:
        qgs.stop()
        kbs.daemon.stop()

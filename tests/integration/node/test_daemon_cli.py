"""Daemon life cycle: SIGTERM drains in-flight requests; CLI errors are clear; probes work."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from teegate.cli import cli
from teegate.node._daemon import Listen
from teegate.node.qgs import client
from teegate.node.qgs.server import QgsServer, QgsSettings
from tests.unit.node.backend import FakeBackend, expected_quote, make_tdreport

ROOT = Path(__file__).resolve().parents[3]

_DAEMON = textwrap.dedent(
    """
    import asyncio, logging, sys
    from pathlib import Path
    from teegate.node._daemon import Listen, run_daemon, start_line
    from teegate.node.qgs.server import QgsServer, QgsSettings
    from tests.unit.node.backend import FakeBackend

    logging.basicConfig(level=logging.INFO)
    async def main():
        settings = QgsSettings(Listen(unix_path=Path(sys.argv[1])))
        backend = FakeBackend(delay=1.0)
        server = QgsServer(settings, backend)
        listener = await server.start()
        logging.warning(start_line("qgs", settings.listen.describe(), [], settings.insecure(backend)))
        await run_daemon(listener, server.inflight, cleanup=Path(sys.argv[1]).unlink)
    asyncio.run(main())
    """
)


@pytest.fixture
def sockdir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="qgsd", dir="/tmp"))
    yield directory
    shutil.rmtree(directory)


def _wait_for(path: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"daemon did not start: {proc.stderr.read() if proc.stderr else b''!r}")
        time.sleep(0.05)


def test_sigterm_finishes_in_flight_request_then_exits(sockdir: Path) -> None:
    path = sockdir / "qgs.socket"
    proc = subprocess.Popen([sys.executable, "-c", _DAEMON, str(path)], cwd=ROOT, stderr=subprocess.PIPE)
    try:
        _wait_for(path, proc)
        report = make_tdreport(b"\x42" * 64)
        result: list[bytes] = []

        async def run() -> None:
            task = asyncio.create_task(asyncio.to_thread(client.get_quote, path, report))
            await asyncio.sleep(0.3)  # the request is now in the backend (1 s delay)
            proc.send_signal(signal.SIGTERM)
            result.append(await task)

        asyncio.run(run())
        assert result == [expected_quote(report)]
        assert proc.wait(10) == 0
        assert not path.exists()
        log = proc.stderr.read().decode() if proc.stderr else ""
        assert "listening on unix:" in log and "INSECURE: simulated quoting backend" in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_hardware_backend_absent_is_a_clear_error(sockdir: Path) -> None:
    result = CliRunner().invoke(cli, ["qgs", "serve", "--socket", str(sockdir / "s"), "--backend", "dcap-ql"])
    assert result.exit_code != 0
    assert "libsgx_dcap_ql.so.1 not found" in str(result.exception)


def test_sim_backend_needs_platform(sockdir: Path) -> None:
    result = CliRunner().invoke(cli, ["qgs", "serve", "--socket", str(sockdir / "s")])
    assert result.exit_code != 0
    assert "--platform" in str(result.exception)


def test_socket_xor_vsock(sockdir: Path) -> None:
    result = CliRunner().invoke(cli, ["qgs", "serve", "--socket", str(sockdir / "s"), "--vsock", "4050"])
    assert result.exit_code != 0
    assert "exactly one" in str(result.exception)


async def test_health_and_quote_commands(sockdir: Path) -> None:
    path = sockdir / "qgs.socket"
    server = QgsServer(QgsSettings(Listen(unix_path=path)), FakeBackend())
    listener = await server.start()
    report_file = sockdir / "tdreport.bin"
    report = make_tdreport(b"\x07" * 64)
    report_file.write_bytes(report)
    try:
        runner = CliRunner()
        health = await asyncio.to_thread(runner.invoke, cli, ["qgs", "health", "--socket", str(path)])
        assert (health.exit_code, health.output.strip()) == (0, "ok")
        for extra in ([], ["--raw"]):
            args = ["qgs", "quote", str(report_file), "--socket", str(path), "--json", *extra]
            res = await asyncio.to_thread(runner.invoke, cli, args)
            assert res.exit_code == 0, res.output
            assert res.output.strip().endswith(f'"quote_hex": "{expected_quote(report).hex()}"}}')
    finally:
        listener.close()
        await listener.wait_closed()


def test_stale_socket_is_replaced_and_live_one_refused(sockdir: Path) -> None:
    import socket

    path = sockdir / "qgs.socket"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # bound, never listening: a crash leftover

    async def start_twice() -> None:
        first = await QgsServer(QgsSettings(Listen(unix_path=path)), FakeBackend()).start()
        try:
            from teegate.errors import ConfigError

            with pytest.raises(ConfigError, match="already serving"):
                await QgsServer(QgsSettings(Listen(unix_path=path)), FakeBackend()).start()
            assert oct(os.stat(path).st_mode & 0o777) == "0o660"
        finally:
            first.close()
            await first.wait_closed()

    asyncio.run(start_twice())

"""The simulated platform through real processes and sockets.

* ``teegate sim`` as a subprocess writes a quote and its collateral; dcap-qvl verifies them
  against the simulated root (and refuses them against Intel's).
* A QGS server (SimBackend loaded from the same directory) on a real Unix socket quotes a
  simulated TDREPORT the way QEMU asks; the quote verifies and reports the TD's measurements.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import dcap_qvl
import pytest

from teegate.node._daemon import Listen
from teegate.node.qgs import client
from teegate.node.qgs.backend import SimBackend
from teegate.node.qgs.server import QgsServer, QgsSettings
from teegate.sim import SimPlatform

pytestmark = pytest.mark.timeout(60)


def _teegate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from teegate.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_quote_and_collateral_verify_with_sim_root_only(tmp_path: Path) -> None:
    d = tmp_path / "platform"
    init = _teegate("sim", "init", str(d), "--tcb-level", "SWHardeningNeeded")
    assert init.returncode == 0, init.stderr
    assert "SIMULATED" in init.stderr
    quote_file, col_file = tmp_path / "q.bin", tmp_path / "col.json"
    made = _teegate(
        "sim", "quote", "--platform", str(d), "--tee", "tdx", "--version", "5",
        "--report-data", "11" * 64, "--out", str(quote_file), "--collateral-out", str(col_file),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    collateral = dcap_qvl.QuoteCollateralV3.from_json(col_file.read_text())
    quote = quote_file.read_bytes()
    root = SimPlatform.load(d).root_ca_der
    report = dcap_qvl.verify_with_root_ca(quote, collateral, root, int(time.time()))
    assert report.status == "SWHardeningNeeded"
    with pytest.raises(ValueError):
        dcap_qvl.verify(quote, collateral, int(time.time()))
    again = _teegate("sim", "init", str(d))
    assert again.returncode == 1 and "refusing to overwrite" in again.stderr


def test_teegate_quote_verify_trusts_sim_root_only_when_told(tmp_path: Path) -> None:
    d = tmp_path / "platform"
    assert _teegate("sim", "init", str(d)).returncode == 0
    quote_file, col_file, root_file = tmp_path / "q.bin", tmp_path / "col.json", tmp_path / "root.pem"
    made = _teegate(
        "sim", "quote", "--platform", str(d), "--tee", "sgx", "--report-data", "22" * 64,
        "--out", str(quote_file), "--collateral-out", str(col_file),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    root = _teegate("sim", "root", "--platform", str(d))
    assert root.returncode == 0, root.stderr
    root_file.write_text(root.stdout)
    trusted = _teegate(
        "quote",
        "verify",
        str(quote_file),
        "--collateral",
        str(col_file),
        "--trust-root",
        str(root_file),
        "--json",
    )
    assert trusted.returncode == 0, trusted.stderr + trusted.stdout
    verdict = json.loads(trusted.stdout)
    assert verdict["status"] == "UpToDate" and verdict["simulated"] is True
    default = _teegate("quote", "verify", str(quote_file), "--collateral", str(col_file))
    assert default.returncode != 0


@pytest.fixture
async def qgs_socket() -> AsyncIterator[tuple[Path, SimPlatform]]:
    directory = Path(tempfile.mkdtemp(prefix="simqgs", dir="/tmp"))
    SimPlatform.create(directory / "platform")
    backend = SimBackend.load(directory / "platform", version=5)
    path = directory / "qgs.socket"
    server = QgsServer(QgsSettings(Listen(unix_path=path), read_timeout=1.0, workers=2), backend)
    listener = await server.start()
    try:
        # the test's own view of the platform: a separate load of the same directory
        yield path, SimPlatform.load(directory / "platform")
    finally:
        listener.close()
        await listener.wait_closed()
        await server.inflight.wait(2.0)
        shutil.rmtree(directory)


async def test_qgs_quotes_a_simulated_tdreport(qgs_socket: tuple[Path, SimPlatform]) -> None:
    path, platform = qgs_socket
    mr_td = bytes.fromhex("42" * 48)
    tdreport = platform.tdreport(b"nonce", mr_td=mr_td)
    quote = await asyncio.to_thread(client.get_quote, path, tdreport)
    parsed = dcap_qvl.parse_quote(quote)
    assert parsed.header.version == 5
    assert bytes(parsed.report.mr_td) == mr_td
    assert bytes(parsed.report.report_data)[:5] == b"nonce"
    collateral = platform.collateral("tdx", now=datetime.now(UTC))
    report = dcap_qvl.verify_with_root_ca(
        quote,
        dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json()),
        platform.root_ca_der,
        int(time.time()),
    )
    assert report.status == "UpToDate"
    info = await asyncio.to_thread(client.get_platform_info, path)
    tdqe, pce, platform_id, cpusvn = platform.platform_info()
    assert (info.tdqe_isvsvn, info.pce_isvsvn) == (tdqe, pce)
    assert bytes(info.cpusvn) == cpusvn and bytes(info.platform_id) == platform_id

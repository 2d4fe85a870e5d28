"""The QGS with the simulated platform as its backend: real DCAP quotes through the real socket.

Every quote a client receives parses, carries the TD's REPORTDATA and measurements, and
verifies under the simulated root (and only under it), for 100 clients quoting at once.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from teegate.dcap.anchors import TrustAnchors
from teegate.dcap.quote import TdReport10, parse_quote
from teegate.dcap.verify import QuoteVerifier
from teegate.errors import VerificationError
from teegate.node._daemon import Listen
from teegate.node.qgs import client
from teegate.node.qgs.backend import SimBackend
from teegate.node.qgs.server import QgsServer, QgsSettings
from teegate.sim import SimPlatform


@dataclass
class Running:
    path: Path
    platform: SimPlatform


@pytest.fixture(params=[4, 5], ids=["v4", "v5"])
async def qgs(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    directory = Path(tempfile.mkdtemp(prefix="qgs-sim", dir="/tmp"))
    platform = SimPlatform.create(directory / "platform")
    path = directory / "qgs.socket"
    backend = SimBackend.load(directory / "platform", version=request.param)
    server = QgsServer(QgsSettings(Listen(unix_path=path), read_timeout=2.0, workers=4), backend)
    listener = await server.start()
    try:
        yield Running(path, platform)
    finally:
        listener.close()
        await listener.wait_closed()
        await server.inflight.wait(2.0)
        shutil.rmtree(directory)


@pytest.mark.timeout(120)
async def test_hundred_td_clients_get_verifiable_quotes(qgs: Running) -> None:
    now = datetime.now(UTC)
    loop = asyncio.get_running_loop()
    datas = [i.to_bytes(2, "big") * 32 for i in range(100)]
    reports = [qgs.platform.tdreport(d) for d in datas]
    with ThreadPoolExecutor(max_workers=100) as pool:
        quotes = await asyncio.gather(
            *(loop.run_in_executor(pool, client.get_quote, qgs.path, r) for r in reports)
        )
    collateral = qgs.platform.collateral("tdx", now=now)
    verifier = QuoteVerifier(TrustAnchors.intel().with_anchor(qgs.platform.anchor()))
    expected = qgs.platform.td_report(datas[0])
    for data, raw in zip(datas, quotes, strict=True):
        quote = parse_quote(raw)
        assert quote.is_tdx and quote.report_data == data
        assert isinstance(quote.body, TdReport10)
        assert quote.body.mr_td == expected.mr_td
        verdict = verifier.verify(quote, collateral, now=now)
        assert verdict.status == "UpToDate" and verdict.anchor.simulated


async def test_simulated_quote_is_refused_under_intel_root_alone(qgs: Running) -> None:
    now = datetime.now(UTC)
    raw = await asyncio.to_thread(client.get_quote, qgs.path, qgs.platform.tdreport(b"\x01" * 64))
    with pytest.raises(VerificationError) as err:
        QuoteVerifier().verify(raw, qgs.platform.collateral("tdx", now=now), now=now)
    assert err.value.code == "ROOT_CA_UNTRUSTED"

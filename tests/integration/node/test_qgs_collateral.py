"""GET_COLLATERAL carries a real Intel collateral set (shared vectors) byte for byte."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path

from teegate.dcap.collateral import Collateral
from teegate.node._daemon import Listen
from teegate.node.qgs import client
from teegate.node.qgs.backend import collateral_response
from teegate.node.qgs.messages import CollateralResponse
from teegate.node.qgs.server import QgsServer, QgsSettings
from tests.unit.node.backend import FakeBackend


class _VectorBackend(FakeBackend):
    def __init__(self, collateral: Collateral) -> None:
        super().__init__()
        self._collateral = collateral

    def collateral(self, fmspc: bytes, pck_ca: str) -> CollateralResponse:
        return collateral_response(self._collateral)


async def test_real_collateral_round_trip(vectors: Path) -> None:
    text = (vectors / "_collateral_sets" / "dcapqvl_tdx_90C06F000000_2026-02.json").read_text()
    col = Collateral.from_json(text)
    directory = Path(tempfile.mkdtemp(prefix="qgscol", dir="/tmp"))
    path = directory / "qgs.socket"
    server = QgsServer(QgsSettings(Listen(unix_path=path)), _VectorBackend(col))
    listener = await server.start()
    try:
        got = await asyncio.to_thread(client.get_collateral, path, bytes.fromhex("90C06F000000"), "platform")
    finally:
        listener.close()
        await listener.wait_closed()
        shutil.rmtree(directory)
    assert (got.major_version, got.minor_version) == (3, 1)
    assert got.root_ca_crl == col.root_ca_crl and got.pck_crl == col.pck_crl
    assert got.pck_crl_issuer_chain == col.pck_crl_issuer_chain.encode() + b"\0"
    tcb = json.loads(got.tcb_info.rstrip(b"\0"))
    assert tcb["signature"] == col.tcb_info_signature.hex()
    # The signed text is carried exactly, so a verifier can check Intel's signature over it.
    assert col.tcb_info.encode() in got.tcb_info
    assert col.qe_identity.encode() in got.qe_identity

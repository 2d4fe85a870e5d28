"""Quote → collateral key → PcsClient through the PCCS → full DCAP verification."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from teegate.collateral import CachedSource, PcsClient, SimSource
from teegate.dcap.anchors import TrustAnchors
from teegate.dcap.pck import collateral_key
from teegate.dcap.quote import parse_quote
from teegate.dcap.verify import QuoteVerifier
from teegate.errors import VerificationError
from teegate.node.pccs import PccsService, build_app
from teegate.node.pccs.store import SqliteStore
from teegate.sim import SimPlatform
from tests.integration.collateral.fake_pcs import serve, teepotpcs_fake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_real_tdx_quote_verifies_with_collateral_through_pccs(vectors: Path, tmp_path: Path) -> None:
    quote = parse_quote((vectors / "teepot/sgx_quote_verification/tdx_1/quote.bin").read_bytes())
    now = datetime(2025, 6, 11, 19, 23, 55, tzinfo=UTC)
    key = collateral_key(quote)
    with serve(teepotpcs_fake(vectors).app()) as pcs_url:
        service = PccsService(
            SqliteStore(tmp_path / "db"), PcsClient(pcs_url), mode="lazy", clock=lambda: now
        )
        with serve(build_app(service)) as url:
            source = CachedSource(PcsClient(url), tmp_path / "cache")
            collateral = await source.get(key, now=now)
        service.store.close()
    verdict = QuoteVerifier().verify(quote, collateral, now=now)
    assert verdict.status == "UpToDate"
    assert verdict.fmspc == "00806F050000"


async def test_simulated_quote_through_pccs_verifies_only_with_sim_anchor(tmp_path: Path) -> None:
    platform = SimPlatform.create(tmp_path / "sim")
    quote = parse_quote(platform.tdx_quote(b"\x01" * 64))
    now = datetime.now(UTC)
    service = PccsService(SqliteStore(tmp_path / "db"), SimSource(platform), mode="lazy", clock=lambda: now)
    with serve(build_app(service)) as url:
        collateral = await PcsClient(url).get(collateral_key(quote), now=now)
    service.store.close()
    verdict = QuoteVerifier(TrustAnchors.intel().with_anchor(platform.anchor())).verify(
        quote, collateral, now=now
    )
    assert verdict.status == "UpToDate" and verdict.anchor.simulated
    with pytest.raises(VerificationError):
        QuoteVerifier().verify(quote, collateral, now=now)

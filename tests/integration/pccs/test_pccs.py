"""The PCCS on loopback: LAZY from a fake Intel PCS, OFFLINE, REQ registration, tokens, bad input."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from teegate.collateral import PcsClient, SimSource
from teegate.collateral._documents import bundle_info
from teegate.dcap.collateral import Collateral, CollateralKey
from teegate.errors import CollateralUnavailable, ConfigError
from teegate.node.pccs import PccsService, build_app
from teegate.node.pccs.store import SqliteStore
from teegate.sim import SimPlatform
from tests.integration.collateral.fake_pcs import serve, teepotpcs_fake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NOW = datetime(2025, 6, 11, 19, 23, 55, tzinfo=UTC)
TDX = CollateralKey("tdx", "00806F050000", "platform")
SGX = CollateralKey("sgx", "00906ED50000", "processor")
ADMIN = "admin-secret-0123456789"
USER = "user-secret-0123456789"


def _expected(vectors: Path, name: str) -> Collateral:
    return Collateral.from_json((vectors / "_collateral_sets" / f"{name}.json").read_text())


def _tokens(tmp_path: Path) -> tuple[Path, Path]:
    admin, user = tmp_path / "admin-token", tmp_path / "user-token"
    admin.write_text(ADMIN + "\n")
    user.write_text(USER + "\n")
    return admin, user


@contextmanager
def pccs(
    tmp_path: Path, source: object, mode: str, *, now: datetime = NOW
) -> Iterator[tuple[str, PccsService]]:
    admin, user = _tokens(tmp_path)
    service = PccsService(
        SqliteStore(tmp_path / "data" / "pccs.db"),
        source,  # type: ignore[arg-type]
        mode=mode,  # type: ignore[arg-type]
        admin_token_file=admin,
        user_token_file=user,
        clock=lambda: now,
    )
    try:
        with serve(build_app(service)) as url:
            yield url, service
    finally:
        service.store.close()


async def test_lazy_fetches_then_serves_identical_collateral(vectors: Path, tmp_path: Path) -> None:
    fake = teepotpcs_fake(vectors)
    with serve(fake.app()) as pcs_url:
        upstream = PcsClient(pcs_url)
        with pccs(tmp_path, upstream, "lazy") as (url, _service):
            # Warm the PCCS with the TCB Info first, as QCNL's first request would.
            async with httpx.AsyncClient() as http:
                first = await http.get(f"{url}/tdx/certification/v4/tcb?fmspc=00806f050000")
            assert first.status_code == 200
            got = await PcsClient(url).get(TDX, now=NOW)
            assert got == _expected(vectors, "teepotpcs_tdx_00806F050000_2025-05")
            got_sgx = await PcsClient(url).get(SGX, now=NOW)
            assert got_sgx == _expected(vectors, "teepotpcs_sgx_00906ED50000_2025-05")
            hits = len(fake.hits)
            assert await PcsClient(url).get(TDX, now=NOW) == got  # served from storage
            assert len(fake.hits) == hits
    # Upstream gone: the same data dir in OFFLINE mode still serves what was stored.
    with pccs(tmp_path, None, "offline") as (url, _service):
        assert await PcsClient(url).get(TDX, now=NOW) == got


async def test_lazy_refetches_after_next_update(vectors: Path, tmp_path: Path) -> None:
    fake = teepotpcs_fake(vectors)
    with serve(fake.app()) as pcs_url:
        with pccs(tmp_path, PcsClient(pcs_url), "lazy") as (url, _s):
            await PcsClient(url).get(TDX, now=NOW)
        hits = len(fake.hits)
        later = datetime(2025, 7, 1, tzinfo=UTC)  # past TCB Info, QE Identity, PCK CRL; not Root CA CRL
        with pccs(tmp_path, PcsClient(pcs_url), "lazy", now=later) as (url, _s):
            await PcsClient(url).get(TDX, now=later)
        assert sorted(fake.hits[hits:]) == [
            "/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
            "/tdx/certification/v4/qe/identity",
            "/tdx/certification/v4/tcb?fmspc=00806F050000",
        ]


async def test_offline_refuses_unknown_fmspc_with_404(vectors: Path, tmp_path: Path) -> None:
    with pccs(tmp_path, None, "offline") as (url, _service):
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{url}/tdx/certification/v4/tcb?fmspc=00806F050000")
            assert r.status_code == 404
            assert "FMSPC 00806F050000" in r.text
            assert (await http.get(f"{url}/tdx/certification/v4/tcb?fmspc=zz")).status_code == 400
            assert (await http.get(f"{url}/xyz/certification/v4/tcb?fmspc=00806F050000")).status_code == 404
        with pytest.raises(CollateralUnavailable, match="404"):
            await PcsClient(url).get(TDX, now=NOW)


async def test_admin_token_required_for_writes_and_import_serves_offline(
    vectors: Path, tmp_path: Path
) -> None:
    bundle = (vectors / "_collateral_sets" / "teepotpcs_tdx_00806F050000_2025-05.json").read_bytes()
    with pccs(tmp_path, None, "offline") as (url, _service):
        async with httpx.AsyncClient() as http:
            put = f"{url}/teegate/v1/collateral"
            assert (await http.put(put, content=bundle)).status_code == 401
            assert (await http.put(put, content=bundle, headers={"user-token": USER})).status_code == 401
            assert (
                await http.put(put, content=bundle, headers={"admin-token": ADMIN + "x"})
            ).status_code == 401
            ok = await http.put(put, content=bundle, headers={"admin-token": ADMIN})
            assert ok.status_code == 201, ok.text
            assert ok.json()["stored"] == {"tee": "tdx", "fmspc": "00806F050000", "ca": "platform"}
            bad = await http.put(put, content=b'{"tcb_info": 1}', headers={"admin-token": ADMIN})
            assert bad.status_code == 400 and "collateral bundle" in bad.text
            huge = await http.put(put, content=b"x" * (2 << 20), headers={"admin-token": ADMIN})
            assert huge.status_code == 400 and "MAX_BUNDLE_BYTES" in huge.text
        assert await PcsClient(url).get(TDX, now=NOW) == _expected(
            vectors, "teepotpcs_tdx_00806F050000_2025-05"
        )


async def test_writes_refused_without_token_files(tmp_path: Path) -> None:
    service = PccsService(SqliteStore(tmp_path / "db"), None, mode="offline")
    assert not service.writes_enabled
    with serve(build_app(service)) as url:
        async with httpx.AsyncClient() as http:
            r = await http.post(f"{url}/sgx/certification/v4/platforms", json={}, headers={"user-token": ""})
            assert r.status_code == 401


async def test_req_mode_fetches_at_registration(tmp_path: Path) -> None:
    platform = SimPlatform.create(tmp_path / "sim")
    now = datetime.now(UTC)
    key = CollateralKey("tdx", platform.fmspc, "platform")
    with pccs(tmp_path, SimSource(platform), "req", now=now) as (url, service):
        tcb_url = f"{url}/tdx/certification/v4/tcb?fmspc={platform.fmspc}"
        registration = platform.registration()
        async with httpx.AsyncClient() as http:
            assert (await http.get(tcb_url)).status_code == 404  # REQ: nothing before registration
            reg_url = f"{url}/sgx/certification/v4/platforms"
            assert (await http.post(reg_url, json=registration)).status_code == 401
            r = await http.post(reg_url, json=registration, headers={"user-token": USER})
            assert r.status_code == 201, r.text
            assert r.json()["fmspc"] == platform.fmspc
            assert (await http.get(tcb_url)).status_code == 200
            cert = await http.get(
                f"{url}/sgx/certification/v4/pckcert", params={"qeid": registration["qe_id"]}
            )
            assert cert.status_code == 200
            assert cert.headers["SGX-FMSPC"] == platform.fmspc
            chain = urllib.parse.unquote(cert.headers["SGX-PCK-Certificate-Issuer-Chain"])
            assert cert.text + chain == platform.pck_chain_pem
            unknown = await http.get(f"{url}/sgx/certification/v4/pckcert", params={"qeid": "00" * 16})
            assert unknown.status_code == 404
        got = await PcsClient(url).get(key, now=now)
        assert bundle_info(got).fmspc == platform.fmspc
        assert got == await PcsClient(url).get(key, now=now)
        assert service.store.platform_count() == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not JSON"),
        (b"[]", "expected a JSON object"),
        (json.dumps({"pce_id": "0000"}).encode(), "qe_id is required"),
        (json.dumps({"qe_id": "zz", "pce_id": "0000"}).encode(), "qe_id must be"),
        (json.dumps({"qe_id": "00", "pce_id": "0000", "extra": 1}).encode(), "unknown member"),
        (json.dumps({"qe_id": "00", "pce_id": "0000"}).encode(), "required without platform_manifest"),
        (b"{" + b" " * (70 * 1024) + b"}", "MAX_REGISTRATION_BYTES"),
    ],
)
async def test_bad_registration_is_400_naming_the_field(tmp_path: Path, body: bytes, message: str) -> None:
    with pccs(tmp_path, None, "offline") as (url, _service):
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{url}/sgx/certification/v4/platforms", content=body, headers={"admin-token": ADMIN}
            )
    assert r.status_code == 400
    assert message in r.json()["error"]


async def test_healthz_and_metrics(tmp_path: Path) -> None:
    with pccs(tmp_path, None, "offline") as (url, _service):
        async with httpx.AsyncClient() as http:
            await http.get(f"{url}/sgx/certification/v4/rootcacrl")
            assert (await http.get(f"{url}/healthz")).json() == {"status": "ok", "mode": "offline"}
            metrics = (await http.get(f"{url}/metrics")).text
    assert 'teegate_pccs_requests_total{route="rootcacrl",status="404"} 1.0' in metrics


def test_lazy_needs_upstream(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs an upstream"):
        PccsService(SqliteStore(tmp_path / "db"), None, mode="lazy")


async def test_lazy_from_a_directory_source(vectors: Path, tmp_path: Path) -> None:
    import shutil

    from teegate.collateral import DirectorySource

    raw = vectors / "raw" / "go-tdx-guest"
    d = tmp_path / "docs"
    d.mkdir()
    for src, dst in [
        ("sample_tcbInfo_response", "tcb_info_tdx_50806F000000.json"),
        ("sample_qeIdentity_response", "qe_identity_tdx.json"),
        ("tcbInfoIssuerChain.pem", "tcb_info_issuer_chain.pem"),
        ("pckCrlIssuerChain.pem", "pck_crl_issuer_chain.pem"),
        ("pckcrl", "pck_crl_platform.der"),
        ("rootcrl.der", "root_ca_crl.der"),
    ]:
        shutil.copy(raw / src, d / dst)
    key = CollateralKey("tdx", "50806F000000", "platform")
    at = datetime(2023, 6, 28, 8, 3, 58, tzinfo=UTC)
    with pccs(tmp_path, DirectorySource(d), "lazy", now=at) as (url, _service):
        # All four requests arrive at once on an empty PCCS; each finds its item.
        got = await PcsClient(url).get(key, now=at)
    assert got == _expected(vectors, "gotdx_tdx_50806F000000_2023-06")

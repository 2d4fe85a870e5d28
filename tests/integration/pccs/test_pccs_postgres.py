"""The PCCS on a real PostgreSQL: what one replica stores another serves."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from teegate.collateral import PcsClient
from teegate.dcap.collateral import Collateral, CollateralKey
from teegate.errors import StorageUnavailable
from teegate.node.pccs import PccsService, build_app
from teegate.node.pccs.store import PostgresStore
from tests.integration.collateral.fake_pcs import serve, teepotpcs_fake
from tests.pg import PostgresServer, postgres_server  # noqa: F401  (session fixture)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

NOW = datetime(2025, 6, 11, 19, 23, 55, tzinfo=UTC)
TDX = CollateralKey("tdx", "00806F050000", "platform")


async def test_lazy_on_postgres_then_offline_replica(
    vectors: Path,
    tmp_path: Path,
    postgres_server: PostgresServer,  # noqa: F811
) -> None:
    dsn = postgres_server.dsn(postgres_server.create_database("pccs"))
    fake = teepotpcs_fake(vectors)
    expected = Collateral.from_json(
        (vectors / "_collateral_sets" / "teepotpcs_tdx_00806F050000_2025-05.json").read_text()
    )
    (tmp_path / "admin").write_text("admin-token-value")
    with serve(fake.app()) as pcs_url:
        lazy = PccsService(PostgresStore(dsn), PcsClient(pcs_url), mode="lazy", clock=lambda: NOW)
        with serve(build_app(lazy)) as url:
            assert await PcsClient(url).get(TDX, now=NOW) == expected
            async with httpx.AsyncClient() as http:
                reg = {"qe_id": "ab" * 16, "pce_id": "0000", "platform_manifest": "00"}
                r = await http.post(
                    f"{url}/sgx/certification/v4/platforms", json=reg, headers={"admin-token": "nope"}
                )
                assert r.status_code == 401
        lazy.store.close()
    replica = PccsService(
        PostgresStore(dsn), None, mode="offline", admin_token_file=tmp_path / "admin", clock=lambda: NOW
    )
    with serve(build_app(replica)) as url:
        assert await PcsClient(url).get(TDX, now=NOW) == expected
        async with httpx.AsyncClient() as http:
            reg = {"qe_id": "ab" * 16, "pce_id": "0000", "platform_manifest": "00"}
            r = await http.post(
                f"{url}/sgx/certification/v4/platforms",
                json=reg,
                headers={"admin-token": "admin-token-value"},
            )
            assert r.status_code == 201
    assert replica.store.platform_count() == 1
    replica.store.close()


def test_unreachable_postgres_is_storage_unavailable() -> None:
    with pytest.raises(StorageUnavailable, match="cannot connect") as err:
        PostgresStore("host=127.0.0.1 port=9 user=x password=hunter2 dbname=x connect_timeout=2")
    assert "hunter2" not in str(err.value)

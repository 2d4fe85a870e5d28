"""Clock skew between replicas: within the session lifetime a handshake spans them; beyond, a clear 401.

Three in-process replicas (``build_app(settings, clock=…)``) share the session key, the token key
and one PostgreSQL database; their clocks are 100 s behind, 100 s ahead and 400 s ahead. The
session lifetime and the token lifetime are 300 s.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from teegate.kbs.app import build_app
from teegate.kbs.config import KbsSettings
from teegate.kbs.storage import Backend, ResourcePath, StorageSettings, open_storage
from teegate.sim import SimPlatform
from tests.integration.kbs_flow.harness import serve
from tests.integration.scaleout.guest import StepGuest, error_type
from tests.integration.scaleout.topology import RESOURCE_POLICY
from tests.pg import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SECRET = b"skewed-clock-secret"
RESOURCE = "default/vm/skew"
SKEWS = {"behind": -100.0, "ahead": 100.0, "far": 400.0}


def _clock(offset: float) -> Callable[[], float]:
    return lambda: time.time() + offset


@pytest.fixture(scope="module")
def replicas(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("skew")
    platform = SimPlatform.create(root / "platform")
    key_file = root / "session.key"
    key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    policy = root / "resource.rego"
    policy.write_text(RESOURCE_POLICY)
    data = root / "data"
    storage = StorageSettings(
        data_dir=data,
        backend=Backend.POSTGRES,
        postgres_dsn=postgres_server.dsn(postgres_server.create_database("skew")),
    )

    async def put() -> None:
        store = await open_storage(storage)
        try:
            await store.resources.set(ResourcePath.parse(RESOURCE), SECRET)
        finally:
            await store.close()

    asyncio.run(put())
    settings = KbsSettings(
        data_dir=data,
        storage=storage,
        trust_simulated=True,
        sim_platform=Path(platform.directory),
        session_key_file=key_file,
        session_timeout_seconds=300,
        token_ttl_seconds=300,
        resource_policy_path=policy,
    )
    with ExitStack() as stack:
        urls = {
            name: stack.enter_context(serve(build_app(settings, clock=_clock(skew))))
            for name, skew in SKEWS.items()
        }
        urls["platform"] = str(platform.directory)
        yield urls


def _guest(replicas: dict[str, str]) -> StepGuest:
    return StepGuest(SimPlatform.load(Path(replicas["platform"])))


def test_skew_within_session_lifetime(replicas: dict[str, str]) -> None:
    # 200 s apart: the session sealed by the replica ahead is opened by the one behind and back.
    guest = _guest(replicas)
    assert guest.auth(replicas["ahead"]).status_code == 200
    assert guest.attest(replicas["behind"]).status_code == 200, "attest on the replica 200 s behind"
    assert guest.open(guest.resource(replicas["ahead"], RESOURCE)) == SECRET
    assert guest.open(guest.resource(replicas["ahead"], RESOURCE, bearer=True)) == SECRET
    guest = _guest(replicas)
    assert guest.auth(replicas["behind"]).status_code == 200
    assert guest.attest(replicas["ahead"]).status_code == 200
    assert guest.open(guest.resource(replicas["behind"], RESOURCE, bearer=True)) == SECRET


def test_skew_beyond_session_lifetime_is_a_clear_401(replicas: dict[str, str]) -> None:
    # 500 s apart (> 300 s lifetime): the session has expired by the far replica's clock.
    guest = _guest(replicas)
    assert guest.auth(replicas["behind"]).status_code == 200
    response = guest.attest(replicas["far"])
    assert response.status_code == 401, response.text
    assert "expired" in response.json()["detail"]
    # A token minted by the replica behind is expired for the far one: refused, never released.
    assert guest.attest(replicas["behind"]).status_code == 200
    refused = guest.resource(replicas["far"], RESOURCE, bearer=True)
    assert refused.status_code == 401, refused.text
    assert error_type(refused) in {"TokenVerifierError", "TokenNotFound"}
    assert "exp" in refused.json()["detail"].lower()
    refused = guest.resource(replicas["far"], RESOURCE)  # the attested cookie: expired too
    assert refused.status_code == 401, refused.text

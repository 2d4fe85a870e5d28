"""schemathesis against the KBS's own OpenAPI document (GET /kbs/v0/openapi.json) on a live server.

Every operation gets generated requests (valid and invalid); the KBS must never answer 5xx other
than the documented 503, must answer only documented status codes and content types, and its
bodies must match the documented schemas.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks as st_checks

from teegate.kbs.admin_auth import load_or_create_admin_key, mint_admin_token
from teegate.kbs.app import build_app
from teegate.kbs.config import KbsSettings
from teegate.kbs.paths import admin_key_path
from teegate.kbs.storage import StorageSettings
from teegate.sim import SimPlatform
from tests.integration.kbs_flow.harness import serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("openapi-kbs")


@pytest.fixture(scope="module")
def kbs_url(data_dir: Path) -> Iterator[str]:
    data = data_dir
    platform = SimPlatform.create(data / "platform")
    settings_ = KbsSettings(
        data_dir=data / "kbs",
        storage=StorageSettings(data_dir=data / "kbs"),
        trust_simulated=True,
        sim_platform=Path(platform.directory),
    )
    with serve(build_app(settings_)) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(kbs_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{kbs_url}/kbs/v0/openapi.json")


_CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
]


def _run_all(
    api_schema: schemathesis.BaseSchema,
    kbs_url: str,
    checks: list[Any],
    headers: dict[str, str] | None = None,
) -> list[str]:
    # Driven by hand (schemathesis' pytest plugin does not load under pytest 9): one bounded
    # hypothesis run per documented operation; every operation's failure is collected.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=kbs_url, headers=headers, checks=checks)

        try:
            run()
        except Exception as exc:
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:600]}")
    return failures


def test_kbs_conforms_to_its_openapi(api_schema: schemathesis.BaseSchema, kbs_url: str) -> None:
    failures = _run_all(api_schema, kbs_url, _CHECKS)
    assert not failures, "\n\n".join(failures)


def test_admin_api_with_a_valid_token_conforms_and_never_answers_5xx(
    api_schema: schemathesis.BaseSchema, kbs_url: str, data_dir: Path
) -> None:
    # With a real admin token the generated bodies reach the admin handlers and storage; every
    # answer must be a documented status code, and none a server error.
    key = load_or_create_admin_key(admin_key_path(data_dir / "kbs"))
    token = mint_admin_token(key, role="admin", now=datetime.now(UTC), ttl_seconds=900)
    failures = _run_all(api_schema, kbs_url, _CHECKS, {"Authorization": f"Bearer {token}"})
    assert not failures, "\n\n".join(failures)

"""schemathesis against the KBS's own OpenAPI document (GET /kbs/v0/openapi.json) on a live server.

Every operation gets generated requests (valid and invalid); the KBS must never answer 5xx other
than the documented 503, must answer only documented status codes and content types, and its
bodies must match the documented schemas.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks as st_checks

from teegate.kbs.app import build_app
from teegate.kbs.config import KbsSettings
from teegate.kbs.storage import StorageSettings
from teegate.sim import SimPlatform
from tests.integration.kbs_flow.harness import serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def kbs_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data = tmp_path_factory.mktemp("openapi-kbs")
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


def test_kbs_conforms_to_its_openapi(api_schema: schemathesis.BaseSchema, kbs_url: str) -> None:
    # Driven by hand (schemathesis' pytest plugin does not load under this pytest): one
    # bounded hypothesis run per documented operation.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=kbs_url, checks=_CHECKS)

        try:
            run()
        except Exception as exc:  # collect every operation's failure, then report all
            failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:600]}")
    assert not failures, "\n\n".join(failures)

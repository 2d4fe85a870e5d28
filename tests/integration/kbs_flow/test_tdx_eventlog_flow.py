"""A TDX handshake carrying go-tdx-guest's real CCEL: the KBS replays it against the quote's RTMRs.

The quote is simulated (sim anchor trusted) with RTMRs set to the real log's replay, so the full
/auth → /attest path runs with our runtime-data binding.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from teegate.dcap.eventlog import parse_cc_eventlog, replay_rtmrs
from teegate.kbs.app import build_app
from teegate.kbs.config import KbsSettings
from teegate.kbs.protocol import pad_report_data
from teegate.kbs.storage import StorageSettings
from teegate.sim import SimPlatform
from tests.integration.kbs_flow.harness import Guest, error_type, serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimPlatform:
    return SimPlatform.create(tmp_path_factory.mktemp("sim") / "platform")


@pytest.fixture
def kbs(tmp_path: Path, platform: SimPlatform) -> Iterator[str]:
    settings = KbsSettings(
        data_dir=tmp_path,
        storage=StorageSettings(data_dir=tmp_path),
        trust_simulated=True,
        sim_platform=platform.directory,
        dev=True,
    )
    with serve(build_app(settings)) as url:
        yield url


def _token_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


def test_tdx_eventlog_replayed_and_exposed(kbs: str, platform: SimPlatform, vectors: Path) -> None:
    ccel = (vectors / "raw/go-tdx-guest/ccel/ccel_data.dat").read_bytes()
    log = parse_cc_eventlog(ccel)
    sent = base64.b64encode(ccel[: log.length] + b"\xff" * 8).decode()  # as guest-components sends it
    guest = Guest(kbs, tee="tdx")
    try:
        assert guest.auth().status_code == 200
        report = pad_report_data(guest.digest())
        # RTMR2 differs from the log's replay: refused, naming the register.
        rtmrs = list(replay_rtmrs(log))
        rtmrs[2] = bytes(48)
        bad = {
            "cc_eventlog": sent,
            "quote": base64.b64encode(platform.tdx_quote(report, rtmrs=rtmrs)).decode(),
        }
        response = guest.attest(guest.attestation(bad))
        assert response.status_code == 401, response.text
        assert error_type(response) == "AttestationError"
        assert "EVENTLOG_RTMR_MISMATCH" in response.json()["detail"] and "RTMR2" in response.json()["detail"]
        # Matching RTMRs: accepted, and the events are in the token.
        assert guest.auth().status_code == 200  # a refused challenge is spent
        report = pad_report_data(guest.digest())
        quote = platform.tdx_quote(report, rtmrs=list(replay_rtmrs(log)))
        good = {"cc_eventlog": sent, "quote": base64.b64encode(quote).decode()}
        response = guest.attest(guest.attestation(good))
        assert response.status_code == 200, response.text
        cpu0 = _token_claims(response.json()["token"])["submods"]["cpu0"]  # type: ignore[index]
        events = cpu0["ear.veraison.annotated-evidence"]["tdx"]["uefi_event_logs"]
        assert len(events) == len(log.events) == 43
        assert events[0]["digests"][0]["alg"] == "SHA-384"
    finally:
        guest.close()

"""RVPS message round trip and the audit log."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from teegate.kbs.audit import AuditLog, AuditRecord, claims_digest, measurement_of
from teegate.kbs.rvps import MAX_RVPS_VALUES_PER_MESSAGE, Rvps, RvpsError, parse_message
from teegate.kbs.storage import ReferenceValueNotFound, Storage
from teegate.kbs.storage.base import ValueTooLarge
from tests.unit.kbs_policy.conftest import rv_message

pytestmark = pytest.mark.timeout(30)

NOW = datetime(2026, 1, 31, 12, 0, 0, tzinfo=UTC)


async def test_rvps_round_trip(storage: Storage) -> None:
    clock = [NOW]
    rvps = Rvps(storage.reference_values, clock=lambda: clock[0])
    # Exactly what `kbs-client config set-sample-reference-value mr_td abcd` sends.
    message = (
        '{"payload":"'
        + base64.b64encode(b'{"mr_td":["abcd"]}').decode()
        + '","type":"sample","version":"0.1.0"}'
    )
    assert await rvps.register(message) == ["mr_td"]
    stored = json.loads(await storage.reference_values.get("mr_td"))
    assert stored == {
        "version": "0.1.0",
        "name": "mr_td",
        "expiration": "2027-01-31T12:00:00Z",
        "value": ["abcd"],
    }
    assert await rvps.query("mr_td") == ["abcd"]
    assert (await rvps.get("mr_td")).value == ["abcd"]
    assert await rvps.query("absent") is None
    assert await rvps.query_many(["mr_td", "absent"]) == {"mr_td": ["abcd"], "absent": None}
    # Re-registering replaces; the local cache is dropped at once.
    await rvps.register(rv_message({"mr_td": ["ef"], "svn": 2}))
    assert await rvps.query_many(["mr_td", "svn"]) == {"mr_td": ["ef"], "svn": 2}
    assert await rvps.query_all(limit=10) == {"mr_td": ["ef"], "svn": 2}
    # Expired values read as absent for policies; an admin get still shows them.
    clock[0] = NOW + timedelta(days=400)
    assert await rvps.query("svn") is None
    assert (await rvps.get("svn")).value == 2
    with pytest.raises(ReferenceValueNotFound):
        await rvps.get("absent")


def test_rvps_message_checks() -> None:
    ok = parse_message(rv_message({"a": 1}), now=NOW)
    assert [(v.name, v.value) for v in ok] == [("a", 1)]
    # A message without "version" gets Trustee's default.
    assert parse_message(
        '{"type":"sample","payload":"' + base64.b64encode(b'{"b":2}').decode() + '"}', now=NOW
    )
    bad = {
        "not json": "{",
        "not object": "[]",
        "unknown member": '{"type":"sample","payload":"e30=","provenance":"x"}',
        "version": '{"version":"1.0.0","type":"sample","payload":"e30="}',
        "type": '{"version":"0.1.0","type":"swid","payload":"e30="}',
        "payload type": '{"version":"0.1.0","type":"sample","payload":1}',
        "payload base64": '{"version":"0.1.0","type":"sample","payload":"e30=!"}',
        "payload json": '{"version":"0.1.0","type":"sample","payload":"'
        + base64.b64encode(b"{x").decode()
        + '"}',
        "empty": rv_message({}),
        "bad name": rv_message({"a b": 1}),
        "too many": rv_message({f"n{i}": i for i in range(MAX_RVPS_VALUES_PER_MESSAGE + 1)}),
        "duplicate": '{"type":"sample","type":"sample","payload":"e30="}',
    }
    for name, message in bad.items():
        with pytest.raises(RvpsError):
            parse_message(message, now=NOW)
            pytest.fail(name)
    with pytest.raises(ValueTooLarge):
        parse_message(rv_message({"big": "x" * 300_000}), now=NOW)


def test_audit_records_denials_in_a_bounded_ring(caplog: pytest.LogCaptureFixture) -> None:
    audit = AuditLog(capacity=3, clock=lambda: NOW)
    token = {
        "submods": {
            "cpu0": {
                "ear.status": "contraindicated",
                "ear.trustworthiness-vector": {"configuration": 96},
                "ear.veraison.annotated-evidence": {
                    "tdx": {"quote": {"body": {"mr_td": "ab" * 48}}, "td_attributes": {"debug": True}},
                    "runtime_data_claims": {"tee-pubkey": {"kty": "EC", "x": "public"}},
                    "init_data_claims": {"anything": "the workload put here"},
                },
            }
        }
    }
    assert measurement_of(token) == "ab" * 48
    with caplog.at_level(logging.INFO, logger="teegate.kbs.audit"):
        for i in range(5):
            audit.record(
                "denial",
                tee="tdx",
                resource_path=f"r/t/{i}",
                verdict="denied",
                policy_id="p",
                reason="no",
                claims=token,
            )
        release = audit.record("release", tee="tdx", resource_path="r/t/x", verdict="released", claims=token)
    recent = audit.recent_denials(10)
    assert [r.resource_path for r in recent] == ["r/t/4", "r/t/3", "r/t/2"]
    assert audit.recent_denials(1)[0].sequence == 5 and release.sequence == 6
    assert recent[0].measurement == "ab" * 48 and recent[0].claims_digest == claims_digest(token)
    assert recent[0].claims["tdx"] == {"td_attributes": {"debug": True}, "quote.body.mr_td": "ab" * 48}
    assert recent[0].claims["submods"]["cpu0"]["ear.status"] == "contraindicated"
    # Only the explaining fields leave: no init data claims, no key material.
    assert "the workload put here" not in json.dumps(recent[0].to_json())
    assert "public" not in json.dumps(recent[0].to_json())
    lines = [json.loads(r.getMessage())["audit"] for r in caplog.records if r.name == "teegate.kbs.audit"]
    assert len(lines) == 6 and lines[0]["kind"] == "denial" and lines[0]["time"] == "2026-01-31T12:00:00Z"
    assert [r.levelno for r in caplog.records][-2:] == [logging.WARNING, logging.INFO]
    assert audit.counts == {"denial": 5, "release": 1}
    audit.record("attestation", tee="tdx", verdict="contraindicated", claims={})
    refused = audit.record("attestation", tee="tdx", verdict="refused", reason="PCK_REVOKED: revoked")
    assert audit.recent_denials(2) == [refused, recent[0]]
    with pytest.raises(ValueError):
        audit.record("secret", verdict="x")  # type: ignore[arg-type]


def test_audit_record_json_covers_every_field_and_takes_a_given_digest() -> None:
    audit = AuditLog(logger=logging.getLogger("teegate.test.audit.silent"))
    logging.getLogger("teegate.test.audit.silent").setLevel(logging.CRITICAL)  # no line is built
    claims = {"submods": {"cpu0": {"ear.status": "warning"}}}
    record = audit.record(
        "denial", tee="tdx", verdict="denied", claims=claims, claims_digest_hex="ab" * 48, reasons=["r"]
    )
    document = record.to_json()
    assert set(document) == {f.name for f in dataclasses.fields(AuditRecord)}
    assert document["claims_digest"] == "ab" * 48 and document["reasons"] == ["r"]
    assert audit.recent_denials(1) == [record] and audit.counts == {"denial": 1}


def test_audit_line_escapes_non_ascii_so_no_separator_splits_it(caplog: pytest.LogCaptureFixture) -> None:
    audit = AuditLog(clock=lambda: NOW)
    forged = 'nope\u2028{"audit":{"verdict":"released"}}\u0085é'
    with caplog.at_level(logging.INFO, logger="teegate.kbs.audit"):
        audit.record("denial", tee="tdx", resource_path="r/t/x", verdict="denied", reason=forged)
        audit.record("release", tee="tdx", resource_path="r/t/x", verdict="released")
    denial, release = (r.getMessage() for r in caplog.records if r.name == "teegate.kbs.audit")
    assert denial.isascii() and "\\u2028" in denial and "\\u0085" in denial
    assert json.loads(denial)["audit"]["reason"] == forged  # escaped, not altered
    assert release.isascii() and json.loads(release)["audit"]["verdict"] == "released"

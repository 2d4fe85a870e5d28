"""The handshake with simulated TDX/SGX quotes verified by the DCAP core (sim anchor trusted)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from jwcrypto import jwe as jw_jwe
from jwcrypto import jwk as jw_jwk

from teegate.kbs.app import build_app
from teegate.kbs.config import KbsSettings
from teegate.kbs.protocol import pad_report_data
from teegate.kbs.storage import StorageSettings
from teegate.sim import SimPlatform
from tests.integration.kbs_flow.harness import Guest, error_type, put_resource, serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SECRET = b"tdx-disk-passphrase"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimPlatform:
    return SimPlatform.create(tmp_path_factory.mktemp("sim") / "platform")


def _settings(tmp_path: Path, platform: SimPlatform, **extra: object) -> KbsSettings:
    values: dict[str, object] = {
        "trust_simulated": True,
        "sim_platform": platform.directory,
        "dev": True,
    }
    values.update(extra)
    return KbsSettings(data_dir=tmp_path, storage=StorageSettings(data_dir=tmp_path), **values)  # type: ignore[arg-type]


@pytest.fixture
def kbs(tmp_path: Path, platform: SimPlatform) -> Iterator[str]:
    put_resource(tmp_path, "default/tdx-vm-disk/passphrase", SECRET)
    with serve(build_app(_settings(tmp_path, platform))) as url:
        yield url


def _tdx_evidence(platform: SimPlatform, digest: bytes, **td: object) -> dict[str, object]:
    quote = platform.tdx_quote(pad_report_data(digest), **td)
    return {"cc_eventlog": None, "quote": base64.b64encode(quote).decode()}


def _jwcrypto_decrypt(body: dict[str, str], guest: Guest) -> bytes:
    pem = guest.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    token = jw_jwe.JWE()
    token.deserialize(json.dumps(body), key=jw_jwk.JWK.from_pem(pem))
    return bytes(token.payload)


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_sim_tdx_handshake_releases_and_token_has_ear_layout(kbs: str, platform: SimPlatform) -> None:
    guest = Guest(kbs, tee="tdx")
    try:
        assert guest.auth().status_code == 200
        attest = guest.attest(guest.attestation(_tdx_evidence(platform, guest.digest())))
        assert attest.status_code == 200, attest.text
        claims = _claims(attest.json()["token"])
        cpu0 = claims["submods"]["cpu0"]  # type: ignore[index]
        assert cpu0["ear.appraisal-policy-id"] == "default"
        assert "ear.trustworthiness-vector" in cpu0 and "ear.status" in cpu0
        evidence = cpu0["ear.veraison.annotated-evidence"]
        assert evidence["tdx"]["simulated"] is True
        assert evidence["runtime_data_claims"]["tee-pubkey"] == guest.jwk.to_jwk()
        assert evidence["report_data"] == pad_report_data(guest.digest()).hex()
        response = guest.resource("default/tdx-vm-disk/passphrase")
        assert response.status_code == 200, response.text
        assert _jwcrypto_decrypt(response.json(), guest) == SECRET
        # The same token works as a Bearer token from a fresh client (passport mode).
        bearer = Guest(kbs, tee="tdx", key=guest.key)
        try:
            again = bearer.resource(
                "default/tdx-vm-disk/passphrase",
                headers={"Authorization": f"Bearer {attest.json()['token']}"},
            )
            assert again.status_code == 200, again.text
            assert _jwcrypto_decrypt(again.json(), guest) == SECRET
        finally:
            bearer.close()
    finally:
        guest.close()


def test_sim_tdx_wrong_report_data_refused(kbs: str, platform: SimPlatform) -> None:
    guest = Guest(kbs, tee="tdx")
    try:
        assert guest.auth().status_code == 200
        other = Guest(kbs, tee="tdx")  # a different TEE key: the binding no longer holds
        evidence = _tdx_evidence(platform, guest.digest(jwk=other.jwk))
        other.close()
        response = guest.attest(guest.attestation(evidence))
        assert response.status_code == 401
        assert error_type(response) == "AttestationError"
        assert "REPORT_DATA_MISMATCH" in response.json()["detail"]
    finally:
        guest.close()


def test_sim_tdx_tampered_quote_refused(kbs: str, platform: SimPlatform) -> None:
    guest = Guest(kbs, tee="tdx")
    try:
        assert guest.auth().status_code == 200
        quote = bytearray(platform.tdx_quote(pad_report_data(guest.digest())))
        quote[200] ^= 0x01  # inside the TD report body (signed region)
        evidence = {"cc_eventlog": None, "quote": base64.b64encode(bytes(quote)).decode()}
        response = guest.attest(guest.attestation(evidence))
        assert response.status_code == 401
        assert error_type(response) == "AttestationError"
    finally:
        guest.close()


def test_sim_debug_td_is_not_affirming(kbs: str, platform: SimPlatform) -> None:
    """A debug TD gets a non-affirming EAR status (configuration contraindicated)."""
    guest = Guest(kbs, tee="tdx")
    try:
        assert guest.auth().status_code == 200
        attest = guest.attest(guest.attestation(_tdx_evidence(platform, guest.digest(), debug=True)))
        assert attest.status_code == 200, attest.text
        cpu0 = _claims(attest.json()["token"])["submods"]["cpu0"]  # type: ignore[index]
        assert cpu0["ear.status"] != "affirming"
        assert cpu0["ear.trustworthiness-vector"]["configuration"] >= 96
    finally:
        guest.close()


def test_simulated_quote_refused_without_sim_anchor(tmp_path: Path, platform: SimPlatform) -> None:
    settings = KbsSettings(
        data_dir=tmp_path,
        storage=StorageSettings(data_dir=tmp_path),
        collateral={"sim_platform": str(platform.directory)},  # collateral available, root not trusted
    )
    with serve(build_app(settings)) as url:
        guest = Guest(url, tee="tdx")
        try:
            assert guest.auth().status_code == 200
            response = guest.attest(guest.attestation(_tdx_evidence(platform, guest.digest())))
            assert response.status_code == 401
            assert error_type(response) == "AttestationError"
        finally:
            guest.close()


INIT_DATA = 'version = "0.1.0"\nalgorithm = "sha384"\n[data]\n"aa.toml" = "x"\npolicy = "allow"\n'


def test_init_data_bound_to_mrconfigid(kbs: str, platform: SimPlatform) -> None:
    import hashlib

    guest = Guest(kbs, tee="tdx")
    try:
        digest = hashlib.sha384(INIT_DATA.encode()).digest()
        assert guest.auth().status_code == 200
        body = guest.attestation(_tdx_evidence(platform, guest.digest(), mr_config_id=digest))
        body["init-data"] = {"format": "toml", "body": INIT_DATA}
        attest = guest.attest(body)
        assert attest.status_code == 200, attest.text
        evidence = _claims(attest.json()["token"])["submods"]["cpu0"]["ear.veraison.annotated-evidence"]  # type: ignore[index]
        assert evidence["init_data_claims"] == {"aa.toml": "x", "policy": "allow"}
        assert evidence["init_data"] == digest.hex()
        # Init data that is not what the TD measured is refused.
        assert guest.auth().status_code == 200
        body = guest.attestation(_tdx_evidence(platform, guest.digest(), mr_config_id=b"\x07" * 48))
        body["init-data"] = {"format": "toml", "body": INIT_DATA}
        response = guest.attest(body)
        assert response.status_code == 401 and "MRCONFIGID" in response.json()["detail"]
    finally:
        guest.close()


def test_sim_sgx_and_tdx_v5(kbs: str, platform: SimPlatform) -> None:
    guest = Guest(kbs, tee="sgx")
    try:
        assert guest.auth().status_code == 200
        quote = platform.sgx_quote(pad_report_data(guest.digest()))
        attest = guest.attest(guest.attestation({"quote": base64.b64encode(quote).decode()}))
        assert attest.status_code == 200, attest.text
        assert "sgx" in _claims(attest.json()["token"])["submods"]["cpu0"]["ear.veraison.annotated-evidence"]  # type: ignore[index]
        assert guest.resource("default/tdx-vm-disk/passphrase").status_code == 200
    finally:
        guest.close()
    guest = Guest(kbs, tee="tdx")
    try:
        assert guest.auth().status_code == 200
        attest = guest.attest(guest.attestation(_tdx_evidence(platform, guest.digest(), version=5)))
        assert attest.status_code == 200, attest.text
    finally:
        guest.close()


def test_sgx_quote_in_tdx_session_refused(kbs: str, platform: SimPlatform) -> None:
    guest = Guest(kbs, tee="tdx")
    try:
        assert guest.auth().status_code == 200
        quote = platform.sgx_quote(pad_report_data(guest.digest()))
        response = guest.attest(guest.attestation({"quote": base64.b64encode(quote).decode()}))
        assert response.status_code == 401 and "TEE_MISMATCH" in response.json()["detail"]
    finally:
        guest.close()


def test_out_of_date_tcb_under_strict_policy_is_denied(tmp_path: Path) -> None:
    stale = SimPlatform.create(tmp_path / "stale", tcb_status="OutOfDate")
    data = tmp_path / "kbs"
    put_resource(data, "default/tdx-vm-disk/passphrase", SECRET)
    settings = KbsSettings(
        data_dir=data,
        storage=StorageSettings(data_dir=data),
        trust_simulated=True,
        sim_platform=stale.directory,
        attestation_policy_id="strict",
    )
    with serve(build_app(settings)) as url:
        guest = Guest(url, tee="tdx")
        try:
            assert guest.auth().status_code == 200
            attest = guest.attest(guest.attestation(_tdx_evidence(stale, guest.digest())))
            assert attest.status_code == 200, attest.text
            cpu0 = _claims(attest.json()["token"])["submods"]["cpu0"]  # type: ignore[index]
            assert cpu0["ear.veraison.annotated-evidence"]["tdx"]["tcb_status"] == "OutOfDate"
            assert cpu0["ear.status"] == "contraindicated"
            response = guest.resource("default/tdx-vm-disk/passphrase")
            assert response.status_code == 401 and error_type(response) == "PolicyDeny"
        finally:
            guest.close()

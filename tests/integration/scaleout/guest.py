"""A simulated TDX guest that sends each handshake step to a URL of its choosing (raw HTTP)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from teegate.kbs.jwe import decrypt
from teegate.kbs.protocol import (
    PROTOCOL_VERSION,
    Attestation,
    Challenge,
    TeePubKey,
    pad_report_data,
    runtime_data_digest,
)
from teegate.sim import SimPlatform

COOKIE = "kbs-session-id"


def _cookie(response: httpx.Response) -> str:
    value = response.cookies.get(COOKIE)
    assert value, f"no {COOKIE} cookie in {response.status_code} {response.text[:200]}"
    return value


@dataclass
class StepGuest:
    """auth → attest → resource, each step to the URL given; the session cookie carried by hand."""

    platform: SimPlatform
    debug: bool = False
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    nonce: str = ""
    cookie: str = ""
    token: str = ""

    @property
    def jwk(self) -> TeePubKey:
        return TeePubKey.from_public_key(self.key.public_key())

    def auth(self, url: str) -> httpx.Response:
        body = {"version": PROTOCOL_VERSION, "tee": "tdx", "extra-params": {}}
        response = httpx.post(f"{url}/kbs/v0/auth", json=body, timeout=30)
        if response.status_code == 200:
            self.nonce = Challenge.parse(response.json()).nonce
            self.cookie = _cookie(response)
        return response

    def attestation(self) -> dict[str, object]:
        digest = runtime_data_digest(self.nonce, self.jwk, "")
        quote = self.platform.tdx_quote(pad_report_data(digest), debug=self.debug)
        evidence = {"cc_eventlog": None, "quote": base64.b64encode(quote).decode()}
        return Attestation(self.nonce, self.jwk, evidence, "").to_json()

    def attest(self, url: str) -> httpx.Response:
        response = httpx.post(
            f"{url}/kbs/v0/attest", json=self.attestation(), cookies={COOKIE: self.cookie}, timeout=30
        )
        if response.status_code == 200:
            self.token = response.json()["token"]
            self.cookie = _cookie(response)
        return response

    def resource(self, url: str, path: str, *, bearer: bool = False) -> httpx.Response:
        if bearer:
            return httpx.get(
                f"{url}/kbs/v0/resource/{path}", headers={"Authorization": f"Bearer {self.token}"}, timeout=30
            )
        return httpx.get(f"{url}/kbs/v0/resource/{path}", cookies={COOKIE: self.cookie}, timeout=30)

    def open(self, response: httpx.Response) -> bytes:
        assert response.status_code == 200, response.text
        return decrypt(response.json(), self.key)


def error_type(response: httpx.Response) -> str:
    return str(response.json()["type"]).rsplit("/", 1)[-1]

"""A small KBS speaking protocol 0.4.0 for the sample TEE, for client unit tests only.

It checks the runtime-data binding like a KBS would and can be told to misbehave: answer
garbage, refuse, fail with 503, send oversized bodies or a JWE for another key. Integration
tests use the real teegate KBS instead.
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from teegate.kbs import jwe
from teegate.kbs.protocol import Attestation, TeePubKey, runtime_data_digest


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Behaviour:
    resources: dict[str, bytes] = field(default_factory=lambda: {"default/key/1": b"s3cret"})
    fail_503: int = 0  # first N requests answer 503
    auth_body: bytes | None = None  # replace the challenge
    attest_refusal: str | None = None  # 401 PolicyDeny with this detail
    resource_status: tuple[int, bytes] | None = None
    resource_body: bytes | None = None  # raw body for a 200 resource answer
    wrong_key: bool = False  # JWE to another key
    oversize: int = 0  # bytes of padding in the challenge
    token_ttl: int = 300
    reject_tokens: bool = False  # every resource GET answers 401 (token expired/revoked)


class FakeKbs:
    def __init__(
        self, behaviour: Behaviour | None = None, *, tls: ssl.SSLContext | None = None, port: int = 0
    ) -> None:
        self.behaviour = behaviour or Behaviour()
        self.requests: list[str] = []
        self.sessions: dict[str, dict[str, Any]] = {}
        self.handshakes = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, variant: str, detail: str) -> None:
                body = json.dumps(
                    {
                        "type": f"https://github.com/confidential-containers/kbs/errors/{variant}",
                        "detail": detail,
                    }
                )
                self._reply(status, body.encode())

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length", "0"))
                return json.loads(self.rfile.read(length))

            def _cookie(self) -> str | None:
                raw = self.headers.get("Cookie", "")
                for part in raw.split(";"):
                    name, _, value = part.strip().partition("=")
                    if name == "kbs-session-id":
                        return value
                return None

            def do_POST(self) -> None:
                outer.requests.append(f"POST {self.path}")
                b = outer.behaviour
                if b.fail_503 > 0:
                    b.fail_503 -= 1
                    self._error(503, "ServiceUnavailable", "collateral unavailable")
                    return
                if self.path == "/kbs/v0/auth":
                    request = self._body()
                    if request.get("version") != "0.4.0":
                        self._error(401, "AttestationError", "version mismatch")
                        return
                    if b.auth_body is not None:
                        self._reply(200, b.auth_body)
                        return
                    outer.handshakes += 1
                    sid = secrets.token_hex(16)
                    nonce = base64.b64encode(secrets.token_bytes(32)).decode()
                    outer.sessions[sid] = {"nonce": nonce, "tee": request["tee"]}
                    challenge: dict[str, Any] = {"nonce": nonce, "extra-params": ""}
                    if b.oversize:
                        challenge["pad"] = "x" * b.oversize
                    self._reply(
                        200,
                        json.dumps(challenge).encode(),
                        {"Set-Cookie": f"kbs-session-id={sid}; Expires=Wed, 21 Oct 2099 07:28:00 GMT"},
                    )
                elif self.path == "/kbs/v0/attest":
                    sid = self._cookie()
                    session = outer.sessions.get(sid or "")
                    if session is None:
                        self._error(401, "AttestationError", "no session")
                        return
                    attestation = Attestation.parse(self._body())
                    expected = runtime_data_digest(
                        session["nonce"], attestation.tee_pubkey, attestation.additional_evidence
                    )
                    evidence = attestation.primary_evidence
                    if (
                        attestation.nonce != session["nonce"]
                        or base64.b64decode(evidence["report_data"]) != expected
                    ):
                        self._error(401, "AttestationError", "report data does not bind the runtime data")
                        return
                    if b.attest_refusal is not None:
                        self._error(401, "PolicyDeny", b.attest_refusal)
                        return
                    session["key"] = attestation.tee_pubkey
                    now = int(time.time())
                    token = ".".join(
                        [
                            _b64url(b'{"alg":"ES256"}'),
                            _b64url(json.dumps({"iat": now, "exp": now + b.token_ttl, "sid": sid}).encode()),
                            _b64url(b"sig"),
                        ]
                    )
                    session["token"] = token
                    self._reply(
                        200, json.dumps({"token": token}).encode(), {"Set-Cookie": f"kbs-session-id={sid}"}
                    )
                else:
                    self._error(404, "InvalidRequestPath", self.path)

            def do_GET(self) -> None:
                outer.requests.append(f"GET {self.path}")
                b = outer.behaviour
                if b.fail_503 > 0:
                    b.fail_503 -= 1
                    self._error(503, "ServiceUnavailable", "storage unavailable")
                    return
                prefix = "/kbs/v0/resource/"
                if not self.path.startswith(prefix):
                    self._error(404, "InvalidRequestPath", self.path)
                    return
                session = outer.sessions.get(self._cookie() or "")
                auth = self.headers.get("Authorization", "")
                if (
                    session is None
                    or "key" not in session
                    or auth != f"Bearer {session['token']}"
                    or b.reject_tokens
                ):
                    self._error(401, "TokenVerifierError", "token expired")
                    return
                if b.resource_status is not None:
                    self._reply(*b.resource_status)
                    return
                if b.resource_body is not None:
                    self._reply(200, b.resource_body)
                    return
                path = self.path[len(prefix) :]
                data = b.resources.get(path)
                if data is None:
                    self._error(401, "PluginInternalError", f"resource not found: {path}")
                    return
                key: TeePubKey = session["key"]
                if b.wrong_key:
                    key = TeePubKey.from_public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
                self._reply(200, json.dumps(jwe.encrypt(data, key)).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.scheme = "https" if tls else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeKbs:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

"""A small admin-API HTTP server for CLI tests: records every request byte for byte.

It authenticates with :func:`teegate.kbs.admin_auth.authorize` and answers with Trustee's
shapes (200 empty on writes, JSON lists for list calls, Trustee error bodies otherwise), keeping
state in memory so a set is visible to a later list or get.
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from teegate.kbs.admin_auth import AdminAuthConfig, AdminAuthError, authorize


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # like a real server's backlog; the default 5 drops bursts
    daemon_threads = True


_ERR = "https://github.com/confidential-containers/kbs/errors/"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class RecordingAdminServer:
    def __init__(self, config: AdminAuthConfig) -> None:
        self.config = config
        self.requests: list[Recorded] = []
        self.resources: dict[str, bytes] = {}
        self.resource_policy: bytes | None = None
        self.attestation_policies: dict[str, bytes] = {}
        self.reference_values: dict[str, Any] = {}
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def start(self, tls: ssl.SSLContext | None = None) -> str:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record = Recorded(
                    self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
                )
                with owner._lock:
                    owner.requests.append(record)
                    status, payload = owner.dispatch(record)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _handle

        self._server = _Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        scheme = "https" if tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @staticmethod
    def _error(status: int, variant: str, detail: str) -> tuple[int, bytes]:
        return status, json.dumps({"type": _ERR + variant, "detail": detail}).encode()

    def dispatch(self, r: Recorded) -> tuple[int, bytes]:
        try:
            authorize(self.config, r.headers, r.method, r.path, datetime.now(UTC))
        except AdminAuthError as exc:
            return self._error(exc.http_status, exc.trustee_error, str(exc))
        path = r.path
        if path.startswith("/kbs/v0/resource/"):
            name = path[len("/kbs/v0/resource/") :]
            if r.method == "POST":
                self.resources[name] = r.body
                return 200, b""
            if r.method == "DELETE":
                if self.resources.pop(name, None) is None:
                    return self._error(401, "PluginInternalError", f"resource {name} not found")
                return 200, b""
        if path == "/kbs/v0/resource" and r.method == "GET":
            return 200, json.dumps(sorted(self.resources)).encode()
        if path == "/kbs/v0/resource-policy":
            if r.method == "POST":
                policy = json.loads(r.body)["policy"]
                self.resource_policy = base64.urlsafe_b64decode(policy + "=" * (-len(policy) % 4))
                return 200, b""
            return 200, b'["resource-policy"]'
        if path == "/kbs/v0/attestation-policy" and r.method == "POST":
            body = json.loads(r.body)
            policy = body["policy"]
            self.attestation_policies[body["policy_id"]] = base64.urlsafe_b64decode(
                policy + "=" * (-len(policy) % 4)
            )
            return 200, b""
        if path == "/kbs/v0/reference-value" and r.method == "POST":
            message = json.loads(r.body)
            self.reference_values.update(json.loads(base64.b64decode(message["payload"])))
            return 200, b""
        if path.startswith("/kbs/v0/reference-value/") and r.method == "GET":
            name = path[len("/kbs/v0/reference-value/") :]
            if name not in self.reference_values:
                return self._error(401, "RvpsError", f"reference value {name} not found")
            return 200, json.dumps(self.reference_values[name]).encode()
        return self._error(404, "InvalidRequestPath", f"no route {r.method} {path}")

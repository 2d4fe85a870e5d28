"""A faithful in-test Vault HTTP server: KV secrets engine v1 and v2 with token auth.

HashiCorp Vault is not packaged for Debian and has no dev-server on PyPI, so this implements
the documented HTTP API (developer.hashicorp.com/vault/api-docs/secret/kv/kv-v1 and kv-v2):

* every request needs ``X-Vault-Token`` (403 ``{"errors":["permission denied"]}`` otherwise);
* v1 ``GET/POST/PUT/DELETE /v1/<mount>/<path>``, ``LIST`` (or ``GET ?list=true``) → ``{"data":{"keys":[…]}}``
  with folders suffixed ``/``, 404 ``{"errors":[]}`` when nothing is there; writes answer 204;
* v2 ``/v1/<mount>/data/<path>`` (GET → ``{"data":{"data":…,"metadata":{…,"version":n}}}``,
  POST/PUT ``{"data":{…}}`` → 200 with the version metadata, DELETE soft-deletes the latest
  version: GET then answers 404 with ``data.data = null`` and the deletion time),
  ``/v1/<mount>/metadata/<path>`` (LIST as in v1, DELETE removes every version).

It also records requests so tests can check exactly what the backend sent.
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # like a real server's backlog; the default 5 drops bursts
    daemon_threads = True


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _V2Secret:
    versions: list[dict[str, Any]] = field(default_factory=list)  # {"data", "created", "deleted"}


class FakeVault:
    """State of one Vault with one KV mount."""

    def __init__(self, *, token: str, mount: str = "secret", kv_version: int = 2) -> None:
        self.token = token
        self.mount = mount
        self.kv_version = kv_version
        self.v1: dict[str, dict[str, Any]] = {}
        self.v2: dict[str, _V2Secret] = {}
        self.requests: list[tuple[str, str, bytes]] = []
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- server lifecycle -------------------------------------------------------------------

    def start(self, tls: ssl.SSLContext | None = None) -> str:
        vault = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with vault.lock:
                    vault.requests.append((self.command, self.path, body))
                    status, payload = vault.dispatch(self.command, self.path, self.headers, body)
                raw = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                if raw:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = do_PUT = do_DELETE = do_LIST = _handle

        server = _Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        scheme = "https" if tls is not None else "http"
        return f"{scheme}://127.0.0.1:{server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    # --- the API ----------------------------------------------------------------------------

    def dispatch(self, method: str, target: str, headers: Any, body: bytes) -> tuple[int, Any]:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        if headers.get("X-Vault-Token") != self.token:
            return 403, {"errors": ["permission denied"]}
        if method == "GET" and query.get("list") == ["true"]:
            method = "LIST"
        prefix = f"/v1/{self.mount}/"
        if not parts.path.startswith(prefix):
            return 404, {"errors": [f"no handler for route {parts.path!r}. route entry not found."]}
        rest = parts.path[len(prefix) :]
        payload: Any = None
        if body:
            try:
                payload = json.loads(body)
            except ValueError:
                return 400, {"errors": ["failed to parse JSON input"]}
            if not isinstance(payload, dict):
                return 400, {"errors": ["failed to parse JSON input"]}
        if self.kv_version == 1:
            return self._v1(method, rest, payload)
        return self._v2(method, rest, payload)

    @staticmethod
    def _list(keys: list[str], prefix: str) -> tuple[int, Any]:
        children: set[str] = set()
        for key in keys:
            if key.startswith(prefix):
                tail = key[len(prefix) :]
                head, sep, _ = tail.partition("/")
                children.add(head + sep)
        if not children:
            return 404, {"errors": []}
        return 200, {"request_id": "r", "data": {"keys": sorted(children)}}

    def _v1(self, method: str, path: str, payload: Any) -> tuple[int, Any]:
        if method == "LIST":
            prefix = path if path.endswith("/") or not path else path + "/"
            return self._list(list(self.v1), prefix)
        if not path or path.endswith("/"):
            return 405, {"errors": ["1 error occurred:\n\t* unsupported operation\n\n"]}
        if method == "GET":
            if path not in self.v1:
                return 404, {"errors": []}
            return 200, {"request_id": "r", "lease_duration": 2764800, "data": dict(self.v1[path])}
        if method in ("POST", "PUT"):
            if not payload:
                return 400, {"errors": ["missing data fields"]}
            self.v1[path] = dict(payload)
            return 204, None
        if method == "DELETE":
            self.v1.pop(path, None)
            return 204, None
        return 405, {"errors": ["unsupported operation"]}

    def _live(self) -> list[str]:
        return [k for k, s in self.v2.items() if s.versions]

    def _v2(self, method: str, rest: str, payload: Any) -> tuple[int, Any]:
        area, _, path = rest.partition("/")
        if area == "metadata":
            if method == "LIST":
                prefix = path if path.endswith("/") or not path else path + "/"
                return self._list(self._live(), prefix)
            if method == "DELETE":
                self.v2.pop(path, None)
                return 204, None
            return 405, {"errors": ["unsupported operation"]}
        if area != "data" or not path:
            return 404, {"errors": ["no handler for route"]}
        if method == "GET":
            secret = self.v2.get(path)
            if secret is None or not secret.versions:
                return 404, {"errors": []}
            latest = secret.versions[-1]
            metadata = {
                "created_time": latest["created"],
                "custom_metadata": None,
                "deletion_time": latest["deleted"] or "",
                "destroyed": False,
                "version": len(secret.versions),
            }
            if latest["deleted"]:
                return 404, {"data": {"data": None, "metadata": metadata}}
            return 200, {"request_id": "r", "data": {"data": dict(latest["data"]), "metadata": metadata}}
        if method in ("POST", "PUT"):
            if not isinstance(payload, dict) or not isinstance(payload.get("data"), dict):
                return 400, {"errors": ["no data provided"]}
            secret = self.v2.setdefault(path, _V2Secret())
            created = _now()
            secret.versions.append({"data": dict(payload["data"]), "created": created, "deleted": None})
            return 200, {
                "request_id": "r",
                "data": {
                    "created_time": created,
                    "custom_metadata": None,
                    "deletion_time": "",
                    "destroyed": False,
                    "version": len(secret.versions),
                },
            }
        if method == "DELETE":
            secret = self.v2.get(path)
            if secret is not None and secret.versions:
                secret.versions[-1]["deleted"] = _now()
            return 204, None
        return 405, {"errors": ["unsupported operation"]}

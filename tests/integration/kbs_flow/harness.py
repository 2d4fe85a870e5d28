"""Run a KBS app under uvicorn on 127.0.0.1 (ephemeral port) in a thread, and a guest client."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette

from teegate.kbs.httpserver import CoalescingHttpToolsProtocol
from teegate.kbs.protocol import (
    PROTOCOL_VERSION,
    Attestation,
    Challenge,
    TeePubKey,
    runtime_data_digest,
)
from teegate.kbs.storage import ResourcePath, StorageSettings, open_storage


def put_resource(data_dir: Path, path: str, data: bytes) -> None:
    """Store resource ``path`` in the KBS's default (SQLite) store under ``data_dir``."""

    async def put() -> None:
        storage = await open_storage(StorageSettings(data_dir=data_dir))
        try:
            await storage.resources.set(ResourcePath.parse(path), data)
        finally:
            await storage.close()

    asyncio.run(put())


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Serve ``app`` on loopback; yields the base URL; stops the server on exit."""
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="on",
        http=CoalescingHttpToolsProtocol,  # as `teegate kbs serve`
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("KBS test server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


class Guest:
    """A guest as guest-components behaves: auth → attest → resource, cookies kept."""

    def __init__(self, url: str, tee: str = "sample", key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self.client = httpx.Client(base_url=url, timeout=20)
        self.tee = tee
        self.key = key or ec.generate_private_key(ec.SECP256R1())
        self.jwk = TeePubKey.from_public_key(self.key.public_key())
        self.nonce = ""

    def close(self) -> None:
        self.client.close()

    def auth(self, version: str = PROTOCOL_VERSION, tee: str | None = None) -> httpx.Response:
        body = {"version": version, "tee": tee or self.tee, "extra-params": {}}
        response = self.client.post("/kbs/v0/auth", json=body)
        if response.status_code == 200:
            self.nonce = Challenge.parse(response.json()).nonce
        return response

    def digest(self, additional: str = "", nonce: str | None = None, jwk: TeePubKey | None = None) -> bytes:
        return runtime_data_digest(nonce or self.nonce, jwk or self.jwk, additional)

    def sample_evidence(self, digest: bytes | None = None) -> dict[str, Any]:
        return {"svn": "1", "report_data": base64.b64encode(digest or self.digest()).decode()}

    def attestation(self, evidence: Any, additional: str = "", nonce: str | None = None) -> dict[str, Any]:
        return Attestation(
            nonce=nonce or self.nonce,
            tee_pubkey=self.jwk,
            primary_evidence=evidence,
            additional_evidence=additional,
        ).to_json()

    def attest(self, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.client.post("/kbs/v0/attest", json=body or self.attestation(self.sample_evidence()))

    def resource(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(f"/kbs/v0/resource/{path}", **kwargs)


def error_type(response: httpx.Response) -> str:
    body = json.loads(response.content)
    assert set(body) == {"type", "detail"}, body
    prefix = "https://github.com/confidential-containers/kbs/errors/"
    assert body["type"].startswith(prefix), body
    return str(body["type"][len(prefix) :])

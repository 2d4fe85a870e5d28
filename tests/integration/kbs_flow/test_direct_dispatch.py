"""The protocol routes' direct dispatch (KbsApp) answers exactly as Starlette's routing would."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from teegate.kbs.app import KbsApp, build_app
from teegate.kbs.config import KbsSettings
from teegate.kbs.storage import StorageSettings
from tests.integration.kbs_flow.harness import Guest, put_resource, serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# (method, path, body, headers): refusals and routing edges whose answers are deterministic.
_REQUESTS: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("POST", "/kbs/v0/auth", b"{not json", {}),
    ("POST", "/kbs/v0/auth", b'{"version":"0.1.0","tee":"sample","extra-params":{}}', {}),
    ("POST", "/kbs/v0/auth", b'{"version":"0.4.0","tee":"nope","extra-params":{}}', {}),
    ("POST", "/kbs/v0/attest", b"{}", {}),
    ("POST", "/kbs/v0/attest", b"{}", {"cookie": "kbs-session-id=v1.forged"}),
    ("GET", "/kbs/v0/resource/default/key/1", None, {}),
    ("GET", "/kbs/v0/resource/default/key/1", None, {"authorization": "Bearer a.b.c"}),
    ("GET", "/kbs/v0/resource/default/key", None, {}),
    ("GET", "/kbs/v0/resource/default/../etc/passwd", None, {}),
    ("GET", "/kbs/v0/resource/a%0Ab/c/d", None, {}),  # newline: not the resource route
    ("GET", "/kbs/v0/resource/", None, {}),
    ("HEAD", "/kbs/v0/resource/default/key/1", None, {}),
    ("GET", "/kbs/v0/auth", None, {}),
    ("PUT", "/kbs/v0/attest", b"{}", {}),
    ("POST", "/kbs/v0/auth/", b"{}", {}),
    ("POST", "/kbs/v0/nothing", b"{}", {}),
]


def _answers(url: str) -> list[tuple[int, bytes, str | None]]:
    out = []
    with httpx.Client(base_url=url, timeout=20, follow_redirects=False) as client:
        for method, path, body, headers in _REQUESTS:
            response = client.request(method, path, content=body, headers=headers)
            out.append((response.status_code, response.content, response.headers.get("content-type")))
    return out


def test_direct_dispatch_matches_starlette_routing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    put_resource(tmp_path, "default/key/1", b"secret")
    settings = KbsSettings(
        data_dir=tmp_path, storage=StorageSettings(data_dir=tmp_path), allow_sample=True, dev=True
    )
    with serve(build_app(settings)) as url:
        direct = _answers(url)
        guest = Guest(url)
        try:  # and a whole handshake through it
            assert guest.auth().status_code == 200
            assert guest.attest().status_code == 200
            released = guest.resource("default/key/1")
            assert released.status_code == 200 and set(released.json()) >= {"protected", "ciphertext", "tag"}
        finally:
            guest.close()
    monkeypatch.setattr(KbsApp, "__call__", Starlette.__call__)
    with serve(build_app(settings)) as url:
        routed = _answers(url)
    for request, one, other in zip(_REQUESTS, direct, routed, strict=True):
        assert one == other, request
    statuses = [status for status, _, _ in direct]
    assert statuses[1] == 401 and statuses[9] == 405 and statuses[12] == 405


async def test_a_guest_gone_mid_body_is_answered_without_an_internal_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = KbsSettings(
        data_dir=tmp_path, storage=StorageSettings(data_dir=tmp_path), allow_sample=True, dev=True
    )
    app = build_app(settings)
    messages = [
        {"type": "http.request", "body": b'{"version":', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/kbs/v0/auth",
        "raw_path": b"/kbs/v0/auth",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }
    with caplog.at_level("ERROR"):
        await app(scope, receive, send)
    assert sent[0]["status"] == 400
    assert b"client disconnected" in sent[1]["body"]  # type: ignore[operator]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]

"""``teegate register`` against a recording HTTP server on loopback, with an efivars directory."""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from teegate.errors import CollateralUnavailable, ConfigError, ParseError
from teegate.node.register import Outcome, RegisterSettings, register, register_simulated
from teegate.sim import SimPlatform

REQUEST_VAR = "SgxRegistrationServerRequest-304e0796-d515-4698-ac6e-e76cb1a71c28"
RESPONSE_VAR = "SgxRegistrationServerResponse-89589c7b-b2d9-4fc9-bcda-463b983b2fb7"
STATUS_VAR = "SgxRegistrationStatus-f236c5dc-a491-4bbe-bcdd-88885770df45"
MANIFEST_GUID = bytes.fromhex("178E874B49E44AA599BB3057170925B4")


@dataclass
class Recorder:
    url: str
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    status: int = 201
    reply: bytes = b"RS-RESPONSE"


@pytest.fixture
def service() -> Iterator[Recorder]:
    recorder = Recorder("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            recorder.requests.append((self.path, dict(self.headers.items()), body))
            self.send_response(recorder.status)
            self.send_header("Content-Length", str(len(recorder.reply)))
            self.end_headers()
            self.wfile.write(recorder.reply)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()


def _efivar(directory: Path, name: str, data: bytes) -> None:
    (directory / name).write_bytes(struct.pack("<I", 7) + data)


def _manifest(payload: bytes = b"\xaa" * 200) -> bytes:
    return struct.pack("<16sHH12s", MANIFEST_GUID, len(payload), 1, bytes(12)) + payload


def _settings(tmp_path: Path, url: str) -> RegisterSettings:
    efi = tmp_path / "efivars"
    efi.mkdir(exist_ok=True)
    return RegisterSettings(url=url, efi_dir=efi, state_dir=tmp_path / "run")


def test_registers_manifest_once_per_boot(tmp_path: Path, service: Recorder) -> None:
    settings = _settings(tmp_path, service.url)
    manifest = _manifest()
    _efivar(settings.efi_dir, REQUEST_VAR, manifest)
    _efivar(settings.efi_dir, STATUS_VAR, struct.pack("<HHHB", 1, 7, 0, 0))
    result = register(settings)
    assert (result.outcome, result.http_status) == (Outcome.REGISTERED, 201)
    path, headers, body = service.requests[0]
    assert path == "/sgx/registration/v1/platform"
    assert headers["Content-Type"] == "application/octet-stream"
    assert body == manifest
    assert (settings.efi_dir / RESPONSE_VAR).read_bytes() == struct.pack("<I", 7) + b"RS-RESPONSE"
    status = (settings.efi_dir / STATUS_VAR).read_bytes()[4:]
    assert struct.unpack("<HHHB", status)[2] & 1 == 1
    assert register(settings).outcome is Outcome.ALREADY_THIS_BOOT
    assert len(service.requests) == 1


def test_nothing_pending_and_already_registered(tmp_path: Path, service: Recorder) -> None:
    settings = _settings(tmp_path, service.url)
    assert register(settings).outcome is Outcome.NOTHING_PENDING
    other = RegisterSettings(url=service.url, efi_dir=settings.efi_dir, state_dir=tmp_path / "run2")
    _efivar(settings.efi_dir, STATUS_VAR, struct.pack("<HHHB", 1, 7, 1, 0))
    _efivar(settings.efi_dir, REQUEST_VAR, _manifest())
    assert register(other).outcome is Outcome.ALREADY_REGISTERED
    assert service.requests == []


def test_bios_error_and_bad_requests_are_refused(tmp_path: Path, service: Recorder) -> None:
    settings = _settings(tmp_path, service.url)
    _efivar(settings.efi_dir, STATUS_VAR, struct.pack("<HHHB", 1, 7, 0, 0x05))
    with pytest.raises(ConfigError, match="BIOS reported"):
        register(settings)
    _efivar(settings.efi_dir, STATUS_VAR, struct.pack("<HHHB", 1, 7, 0, 0))
    _efivar(settings.efi_dir, REQUEST_VAR, b"\x01" * 16 + _manifest()[16:])
    with pytest.raises(ParseError, match="not PLATFORM_MANIFEST"):
        register(settings)
    _efivar(settings.efi_dir, REQUEST_VAR, _manifest() + b"extra")
    with pytest.raises(ParseError, match=r"header\.size"):
        register(settings)
    assert service.requests == []


def test_server_failure_leaves_no_marker(tmp_path: Path, service: Recorder) -> None:
    settings = _settings(tmp_path, service.url)
    _efivar(settings.efi_dir, REQUEST_VAR, _manifest())
    service.status = 503
    with pytest.raises(CollateralUnavailable, match="503"):
        register(settings)
    service.status = 201
    assert register(settings).outcome is Outcome.REGISTERED  # the retry goes through


def test_simulated_platform_registers_with_pccs(tmp_path: Path, service: Recorder) -> None:
    settings = RegisterSettings(url=service.url, state_dir=tmp_path / "run", user_token="user-secret")
    platform = SimPlatform.create(tmp_path / "sim")
    result = register_simulated(settings, platform)
    assert result.outcome is Outcome.REGISTERED
    path, headers, body = service.requests[0]
    assert path == "/sgx/certification/v4/platforms"
    assert headers["user-token"] == "user-secret"
    doc = json.loads(body)
    assert set(doc) == {"qe_id", "pce_id", "cpu_svn", "pce_svn", "enc_ppid", "platform_manifest"}
    assert len(doc["enc_ppid"]) == 768 and len(doc["cpu_svn"]) == 32 and len(doc["pce_svn"]) == 4
    assert doc == platform.registration()
    assert doc["cpu_svn"] != "00" * 16
    assert register_simulated(settings, platform).outcome is Outcome.ALREADY_THIS_BOOT

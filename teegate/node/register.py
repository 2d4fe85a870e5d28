"""Platform registration (the MPA's job): deliver the BIOS's registration request once per boot.

Real mode reads ``SgxRegistrationServerRequest-<GUID>`` from efivarfs, POSTs its
PLATFORM_MANIFEST to ``<url>/sgx/registration/v1/platform`` and writes the answer back to
``SgxRegistrationServerResponse`` and the registered bit to ``SgxRegistrationStatus``.
Simulated mode registers a simulated platform with a PCCS (``POST /sgx/certification/v4/platforms``).
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

import httpx

from teegate.errors import CollateralUnavailable, ConfigError, EvidenceError, ParseError

__all__ = [
    "DEFAULT_EFI_DIR",
    "DEFAULT_STATE_DIR",
    "Outcome",
    "RegisterSettings",
    "RegistrationResult",
    "register",
    "register_simulated",
]

_log = logging.getLogger("teegate.node.register")

DEFAULT_EFI_DIR = Path("/sys/firmware/efi/efivars")
#: /run is emptied at every boot, so a marker there means "done this boot".
DEFAULT_STATE_DIR = Path("/run/teegate")
_MARKER = "registered"

_REQUEST_VAR = "SgxRegistrationServerRequest-304e0796-d515-4698-ac6e-e76cb1a71c28"
_RESPONSE_VAR = "SgxRegistrationServerResponse-89589c7b-b2d9-4fc9-bcda-463b983b2fb7"
_STATUS_VAR = "SgxRegistrationStatus-f236c5dc-a491-4bbe-bcdd-88885770df45"
#: efivarfs files start with the variable's 4-byte attributes; NV|BS|RT for ours.
_EFI_ATTRIBUTES = struct.pack("<I", 0x7)
#: StructureHeader { u8 guid[16]; u16 size; u16 version; u8 reserved[12]; }
_STRUCT_HEADER = struct.Struct("<16sHH12s")
_PLATFORM_MANIFEST_GUID = bytes.fromhex("178E874B49E44AA599BB3057170925B4")
#: RegistrationStatusUEFI { u16 version; u16 size; u16 status; u8 errorCode; }
_STATUS = struct.Struct("<HHHB")
_STATUS_REGISTERED = 0x1
_ERROR_FROM_AGENT = 0x80
#: Bounds on what BIOS variables and the server may hand us.
MAX_REQUEST_SIZE = 64 * 1024
MAX_RESPONSE_SIZE = 64 * 1024


class Outcome(Enum):
    """What one run did."""

    REGISTERED = "registered"
    ALREADY_THIS_BOOT = "already-done-this-boot"
    ALREADY_REGISTERED = "platform-already-registered"
    NOTHING_PENDING = "no-request-pending"


@dataclass(frozen=True, slots=True)
class RegisterSettings:
    """Configuration of ``teegate register``."""

    url: str
    efi_dir: Path = DEFAULT_EFI_DIR
    state_dir: Path = DEFAULT_STATE_DIR
    timeout: float = 30.0
    user_token: str | None = None
    verify_tls: bool | str = True

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")):
            raise ConfigError(f"registration URL {self.url!r} must be http(s)://")

    @property
    def insecure(self) -> list[str]:
        """Insecure options in force."""
        out = []
        if self.url.startswith("http://"):
            out.append("plain HTTP registration URL")
        if self.verify_tls is False:
            out.append("TLS certificate verification disabled")
        return out


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    """The run's outcome and, when something was posted, the server's status code."""

    outcome: Outcome
    http_status: int | None = None
    detail: str = ""


def _read_var(efi_dir: Path, name: str) -> bytes | None:
    path = efi_dir / name
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_REQUEST_SIZE + 5)
    except FileNotFoundError:
        return None
    if len(raw) < 4:
        raise ParseError(name, f"{len(raw)} bytes: shorter than the 4-byte efivarfs attribute prefix")
    if len(raw) > MAX_REQUEST_SIZE + 4:
        raise ParseError(name, f"larger than MAX_REQUEST_SIZE {MAX_REQUEST_SIZE}")
    return raw[4:]


def _write_var(efi_dir: Path, name: str, data: bytes) -> None:
    # A real efivarfs needs the file's immutable flag cleared first (chattr -i), as Intel's agent does.
    (efi_dir / name).write_bytes(_EFI_ATTRIBUTES + data)


def _marker(settings: RegisterSettings) -> Path:
    return settings.state_dir / _MARKER


def _mark_done(settings: RegisterSettings, outcome: Outcome) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    _marker(settings).write_text(outcome.value + "\n")


def _post(
    settings: RegisterSettings, path: str, *, content: bytes | None = None, json_body: object = None
) -> httpx.Response:
    headers = {"user-token": settings.user_token} if settings.user_token else {}
    if content is not None:
        headers["Content-Type"] = "application/octet-stream"
    url = settings.url.rstrip("/") + path
    try:
        with httpx.Client(timeout=settings.timeout, verify=settings.verify_tls) as client:
            if content is not None:
                response = client.post(url, headers=headers, content=content)
            else:
                response = client.post(url, headers=headers, json=json_body)
    except httpx.HTTPError as exc:
        raise CollateralUnavailable(f"registration service {url} unreachable: {exc}") from exc
    if len(response.content) > MAX_RESPONSE_SIZE:
        raise CollateralUnavailable(
            f"registration service {url} answered more than {MAX_RESPONSE_SIZE} bytes"
        )
    if response.status_code >= 500:
        raise CollateralUnavailable(
            f"registration service {url} answered {response.status_code}; retry later"
        )
    if response.status_code >= 400:
        raise EvidenceError(
            f"registration service {url} refused the request: {response.status_code} {response.text[:200]!r}"
        )
    return response


def register(settings: RegisterSettings) -> RegistrationResult:
    """One boot's registration: read the BIOS request, POST it, write status and response back."""
    if _marker(settings).exists():
        return RegistrationResult(Outcome.ALREADY_THIS_BOOT)
    status_raw = _read_var(settings.efi_dir, _STATUS_VAR)
    if status_raw is not None:
        if len(status_raw) < _STATUS.size:
            raise ParseError(_STATUS_VAR, f"{len(status_raw)} bytes, need {_STATUS.size}")
        version, size, status, error = _STATUS.unpack_from(status_raw)
        if error and not error & _ERROR_FROM_AGENT:
            raise ConfigError(
                f"BIOS reported SGX registration error 0x{error:02x}; check the BIOS SGX settings"
            )
        if status & _STATUS_REGISTERED:
            _mark_done(settings, Outcome.ALREADY_REGISTERED)
            return RegistrationResult(Outcome.ALREADY_REGISTERED)
    else:
        version, size, status = 1, _STATUS.size, 0
    request = _read_var(settings.efi_dir, _REQUEST_VAR)
    if request is None:
        _mark_done(settings, Outcome.NOTHING_PENDING)
        return RegistrationResult(Outcome.NOTHING_PENDING)
    if len(request) < _STRUCT_HEADER.size:
        raise ParseError(_REQUEST_VAR, f"{len(request)} bytes: shorter than its 32-byte StructureHeader")
    guid, body_size, _version, _reserved = _STRUCT_HEADER.unpack_from(request)
    if guid != _PLATFORM_MANIFEST_GUID:
        raise ParseError(
            f"{_REQUEST_VAR}.header.guid",
            f"{guid.hex()} is not PLATFORM_MANIFEST; only platform registration is implemented",
        )
    if _STRUCT_HEADER.size + body_size != len(request):
        raise ParseError(
            f"{_REQUEST_VAR}.header.size", f"{body_size} + 32 != {len(request)} bytes in the variable"
        )
    response = _post(settings, "/sgx/registration/v1/platform", content=request)
    _write_var(settings.efi_dir, _RESPONSE_VAR, response.content)
    _write_var(settings.efi_dir, _STATUS_VAR, _STATUS.pack(version, size, status | _STATUS_REGISTERED, 0))
    _mark_done(settings, Outcome.REGISTERED)
    _log.info("platform manifest registered (%d bytes, HTTP %d)", len(request), response.status_code)
    return RegistrationResult(Outcome.REGISTERED, response.status_code)


class SimulatedRegistrant(Protocol):
    """What ``register_simulated`` needs: ``teegate.sim.SimPlatform`` provides it."""

    def registration(self) -> dict[str, str | None]: ...


def register_simulated(settings: RegisterSettings, platform: SimulatedRegistrant) -> RegistrationResult:
    """Register a simulated platform with a PCCS (``POST /sgx/certification/v4/platforms``).

    The identifiers are the simulated platform's own (``SimPlatform.registration()``): QE ID,
    PCE ID, CPUSVN and PCE SVN; a simulated platform has no Intel-encrypted PPID, so
    ``enc_ppid`` is 384 zero bytes.
    """
    if _marker(settings).exists():
        return RegistrationResult(Outcome.ALREADY_THIS_BOOT)
    body = platform.registration()
    missing = {"qe_id", "pce_id", "cpu_svn", "pce_svn", "enc_ppid"} - set(body)
    if missing:
        raise ParseError("simulated registration", f"missing {', '.join(sorted(missing))}")
    response = _post(settings, "/sgx/certification/v4/platforms", json_body=body)
    _mark_done(settings, Outcome.REGISTERED)
    return RegistrationResult(Outcome.REGISTERED, response.status_code, f"qe_id {body['qe_id']}")

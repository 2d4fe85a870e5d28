"""Quoting backends: what turns a TDREPORT (or an SGX report) into a signed DCAP quote.

* :class:`SimBackend` — the simulated platform (``teegate.sim``). It cannot check the
  TDREPORT's MAC (only the TDX module can), so any well-formed report is quoted; its quotes
  chain to the simulated root and are NOT hardware-backed.
* :class:`DcapQlBackend` — Intel's quoting library ``libsgx-dcap-ql`` via ctypes, loaded only
  where it is installed (a TDX/SGX host with the DCAP packages).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from teegate.errors import CollateralUnavailable, ConfigError, EvidenceError
from teegate.node.qgs.messages import MAX_QUOTE_SIZE, CollateralResponse, PlatformInfoResponse, check_tdreport

__all__ = [
    "SGX_REPORT_SIZE",
    "DcapQlBackend",
    "QuotingBackend",
    "SimBackend",
    "open_backend",
]

#: sizeof(sgx_report_t): 384-byte body, 32-byte key id, 16-byte MAC.
SGX_REPORT_SIZE = 432
_SGX_REPORT_BODY_SIZE = 384
#: Collateral struct version QGS reports (sgx_ql_qve_collateral_t 3.1 = TDX).
_COLLATERAL_VERSION = (3, 1)


@runtime_checkable
class QuotingBackend(Protocol):
    """What QGS and the AESM helper need from a quoting engine."""

    @property
    def name(self) -> str:
        """Short name for logs and metrics."""
        ...

    @property
    def hardware(self) -> bool:
        """True when quotes are signed by a real platform's QE."""
        ...

    def quote_from_tdreport(self, tdreport: bytes) -> bytes:
        """A TDX quote for a 1024-byte TDREPORT."""
        ...

    def quote_from_sgx_report(self, report: bytes) -> bytes:
        """An SGX v3 quote for a 432-byte ``sgx_report_t``."""
        ...

    def platform_info(self) -> PlatformInfoResponse:
        """TD-QE / PCE SVNs, platform id and CPUSVN."""
        ...

    def collateral(self, fmspc: bytes, pck_ca: str) -> CollateralResponse:
        """Verification collateral for the platform."""
        ...


def _check_quote(quote: bytes) -> bytes:
    if not quote or len(quote) > MAX_QUOTE_SIZE:
        raise CollateralUnavailable(
            f"quoting backend returned a {len(quote)}-byte quote (limit {MAX_QUOTE_SIZE})"
        )
    return quote


def _check_sgx_report(report: bytes) -> None:
    if len(report) != SGX_REPORT_SIZE:
        raise EvidenceError(f"sgx_report_t is {len(report)} bytes, expected {SGX_REPORT_SIZE}")


@dataclass(frozen=True, slots=True)
class SimBackend:
    """The simulated platform as a quoting backend (quotes are NOT hardware-backed)."""

    platform: Any  # teegate.sim.SimPlatform; typed loosely so this module imports without it
    directory: Path
    version: int = 4

    name = "sim"
    hardware = False

    @classmethod
    def load(cls, directory: Path, *, version: int = 4) -> SimBackend:
        """Load a simulated platform created by ``teegate sim`` from ``directory``."""
        if version not in (4, 5):
            raise ConfigError(f"TDX quote version {version} is not 4 or 5")
        try:
            sim = importlib.import_module("teegate.sim")
        except ImportError as exc:
            raise ConfigError(f"the simulated platform (teegate.sim) is not available: {exc}") from exc
        return cls(sim.SimPlatform.load(directory), directory, version)

    def quote_from_tdreport(self, tdreport: bytes) -> bytes:
        check_tdreport(tdreport)
        return _check_quote(bytes(self.platform.quote_from_tdreport(tdreport, version=self.version)))

    def quote_from_sgx_report(self, report: bytes) -> bytes:
        _check_sgx_report(report)
        return _check_quote(bytes(self.platform.quote_from_sgx_report(report[:_SGX_REPORT_BODY_SIZE])))

    def platform_info(self) -> PlatformInfoResponse:
        info = getattr(self.platform, "platform_info", None)
        if callable(info):
            tdqe, pce, platform_id, cpusvn = info()
            return PlatformInfoResponse(int(tdqe), int(pce), bytes(platform_id), bytes(cpusvn))
        raise CollateralUnavailable(
            "the simulated platform does not expose platform info (SimPlatform.platform_info)"
        )

    def collateral(self, fmspc: bytes, pck_ca: str) -> CollateralResponse:
        col = self.platform.collateral("tdx", now=datetime.now(UTC))
        return collateral_response(col)


def collateral_response(col: Any) -> CollateralResponse:
    """Map a :class:`teegate.dcap.collateral.Collateral` onto the QGS collateral items.

    Text items are NUL-terminated as in ``sgx_ql_qve_collateral_t``; TCB Info and QE Identity
    are re-wrapped as PCS serves them (``{"tcbInfo":…,"signature":"hex"}``).
    """

    def text(value: str) -> bytes:
        return value.encode() + b"\0"

    tcb = f'{{"tcbInfo":{col.tcb_info},"signature":"{bytes(col.tcb_info_signature).hex()}"}}'
    qe = f'{{"enclaveIdentity":{col.qe_identity},"signature":"{bytes(col.qe_identity_signature).hex()}"}}'
    return CollateralResponse(
        *_COLLATERAL_VERSION,
        pck_crl_issuer_chain=text(col.pck_crl_issuer_chain),
        root_ca_crl=bytes(col.root_ca_crl),
        pck_crl=bytes(col.pck_crl),
        tcb_info_issuer_chain=text(col.tcb_info_issuer_chain),
        tcb_info=text(tcb),
        qe_identity_issuer_chain=text(col.qe_identity_issuer_chain),
        qe_identity=text(qe),
    )


# --- Intel libsgx-dcap-ql -------------------------------------------------------------------

_DCAP_QL_NAMES = ("libsgx_dcap_ql.so.1", "libsgx_dcap_ql.so")
_TDX_ATTEST_NAMES = ("libtdx_attest.so.1", "libtdx_attest.so")
_SGX_TARGET_INFO_SIZE = 512


class DcapQlBackend:
    """Intel's quoting library (``libsgx-dcap-ql``) through ctypes.

    SGX: ``sgx_qe_get_target_info`` / ``sgx_qe_get_quote_size`` / ``sgx_qe_get_quote``.
    TDX host-side quoting of a guest TDREPORT needs ``tdx_qe_get_quote`` (exported by
    ``libsgx-dcap-ql`` builds with TDX support); it is used when present.
    """

    name = "dcap-ql"
    hardware = True

    def __init__(self, library: ctypes.CDLL) -> None:
        missing = [n for n in ("sgx_qe_get_quote_size", "sgx_qe_get_quote") if not hasattr(library, n)]
        if missing:
            raise ConfigError(
                f"{library._name} is not Intel's quoting library: it lacks {', '.join(missing)}"
            )
        self._lib = library
        u32p = ctypes.POINTER(ctypes.c_uint32)
        # quote3_error_t sgx_qe_get_quote_size(uint32_t *);
        # quote3_error_t sgx_qe_get_quote(const sgx_report_t *, uint32_t, uint8_t *);
        library.sgx_qe_get_quote_size.argtypes = [u32p]
        library.sgx_qe_get_quote_size.restype = ctypes.c_uint32
        library.sgx_qe_get_quote.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_char_p]
        library.sgx_qe_get_quote.restype = ctypes.c_uint32

    @classmethod
    def load(cls, path: str | None = None) -> DcapQlBackend:
        """Load the library, or raise :class:`ConfigError` naming the package to install."""
        candidates = [path] if path else [*_DCAP_QL_NAMES, ctypes.util.find_library("sgx_dcap_ql")]
        errors: list[str] = []
        for candidate in candidates:
            if not candidate:
                continue
            try:
                return cls(ctypes.CDLL(candidate))
            except OSError as exc:
                errors.append(f"{candidate}: {exc}")
        raise ConfigError(
            "hardware quoting backend unavailable: libsgx_dcap_ql.so.1 not found "
            "(install Intel's libsgx-dcap-ql package, or use --backend sim); "
            f"tried {'; '.join(errors) or 'nothing'}"
        )

    def _quote_size_checked(self, rc: int, size: int, what: str) -> int:
        if rc != 0:
            raise CollateralUnavailable(f"{what} failed with quote3_error_t 0x{rc:04x}")
        if not 0 < size <= MAX_QUOTE_SIZE:
            raise CollateralUnavailable(f"{what} reported a {size}-byte quote (limit {MAX_QUOTE_SIZE})")
        return size

    def quote_from_tdreport(self, tdreport: bytes) -> bytes:
        check_tdreport(tdreport)
        fn = getattr(self._lib, "tdx_qe_get_quote", None)
        size_fn = getattr(self._lib, "tdx_qe_get_quote_size", None)
        if fn is None or size_fn is None:
            raise ConfigError(
                "this libsgx-dcap-ql has no tdx_qe_get_quote; install the TDX-enabled DCAP packages"
            )
        size = ctypes.c_uint32(0)
        rc = size_fn(ctypes.byref(size))
        n = self._quote_size_checked(rc, size.value, "tdx_qe_get_quote_size")
        buf = ctypes.create_string_buffer(n)
        rc = fn(ctypes.c_char_p(tdreport), ctypes.c_uint32(n), buf)
        self._quote_size_checked(rc, n, "tdx_qe_get_quote")
        return buf.raw

    def quote_from_sgx_report(self, report: bytes) -> bytes:
        _check_sgx_report(report)
        size = ctypes.c_uint32(0)
        rc = self._lib.sgx_qe_get_quote_size(ctypes.byref(size))
        n = self._quote_size_checked(rc, size.value, "sgx_qe_get_quote_size")
        buf = ctypes.create_string_buffer(n)
        rc = self._lib.sgx_qe_get_quote(ctypes.c_char_p(report), ctypes.c_uint32(n), buf)
        self._quote_size_checked(rc, n, "sgx_qe_get_quote")
        return buf.raw

    def platform_info(self) -> PlatformInfoResponse:
        raise CollateralUnavailable("platform info is not exposed by libsgx-dcap-ql; query the PCCS instead")

    def collateral(self, fmspc: bytes, pck_ca: str) -> CollateralResponse:
        raise CollateralUnavailable(
            "collateral via libsgx-dcap-ql is not wired; the verifier should use the PCCS"
        )


def open_backend(kind: str, platform_dir: Path | None) -> QuotingBackend:
    """Build the backend named on the command line (``sim`` needs ``platform_dir``)."""
    if kind == "sim":
        if platform_dir is None:
            raise ConfigError("--backend sim needs --platform SIMDIR (create one with `teegate sim init`)")
        return SimBackend.load(platform_dir)
    if kind == "dcap-ql":
        return DcapQlBackend.load()
    raise ConfigError(f"unknown quoting backend {kind!r}; choose 'sim' or 'dcap-ql'")

"""SimPlatform: a persistent simulated TDX/SGX platform (test PKI, keys, quoting, collateral).

A platform lives in a directory: ``platform.json`` (identifiers, TCB, certificates) plus one PEM
private key per role (mode 0600, written atomically), so separate processes — QGS, the AESM
helper, a KBS, a PCCS — load the same platform. Nothing it signs chains to Intel: a verifier
accepts its quotes only when given :meth:`SimPlatform.anchor` explicitly.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from teegate.dcap.anchors import TrustAnchor
from teegate.dcap.collateral import Collateral
from teegate.errors import ConfigError
from teegate.files import read_bounded, write_private
from teegate.sim import pki
from teegate.sim.collateral import TCB_STATUSES, CollateralInputs, build_collateral
from teegate.sim.engine import QeParams, QuoteEngine
from teegate.sim.layout import (
    TD_ATTR_DEBUG,
    EnclaveReport,
    TdReport,
    TeeTcb,
    pad_report_data,
)

__all__ = ["DEFAULT_FMSPC", "PLATFORM_FILE", "SimPlatform"]

PLATFORM_FILE = "platform.json"
_FORMAT = "teegate-sim-platform/1"
#: Upper bound on platform.json (a few KiB in practice).
MAX_PLATFORM_FILE = 256 * 1024
MAX_KEY_FILE = 16 * 1024
DEFAULT_FMSPC = "00C0FFEE0000"
_KEYS = ("root-ca", "platform-ca", "pck", "tcb-signing", "attestation")

# The simulated platform's TCB: SGX components / PCESVN / CPUSVN of a recent Xeon, a TDX 1.5
# module (major 1, minor 5, late microcode 2). Names and measurements are visibly simulated.
_SGX_COMPONENTS = (3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0)
_PCE_SVN = 13
_TEE_TCB_SVN = bytes([5, 1, 2]) + bytes(13)
_TDQE_SVN = 4
_QE_SVN = 8


def _digest(label: str, size: int) -> bytes:
    h = hashlib.sha384 if size == 48 else hashlib.sha256
    return h(f"teegate SIMULATED {label}".encode()).digest()[:size]


#: Default measurements of a simulated TD and enclave.
DEFAULT_MR_TD = _digest("TD firmware (TDVF)", 48)
DEFAULT_RTMRS = tuple(_digest(f"RTMR{i}", 48) for i in range(4))
DEFAULT_MR_ENCLAVE = _digest("enclave", 32)
DEFAULT_MR_SIGNER = _digest("enclave signer", 32)


@dataclass(frozen=True, slots=True)
class _State:
    """Everything in platform.json."""

    fmspc: str
    tcb_status: str
    ppid: bytes
    platform_instance_id: bytes
    qe_id: bytes
    pce_id: bytes = b"\0\0"
    sgx_tcb_components: tuple[int, ...] = _SGX_COMPONENTS
    pce_svn: int = _PCE_SVN
    tee_tcb_svn: bytes = _TEE_TCB_SVN
    tee_tcb_svn2: bytes = _TEE_TCB_SVN
    mr_seam: bytes = _digest("TDX module", 48)
    mr_signer_seam: bytes = bytes(48)
    td_qe: QeParams = field(
        default=QeParams(_digest("TD_QE", 32), _digest("TD_QE signer", 32), isv_prod_id=2, isv_svn=_TDQE_SVN)
    )
    sgx_qe: QeParams = field(
        default=QeParams(_digest("QE", 32), _digest("QE signer", 32), isv_prod_id=1, isv_svn=_QE_SVN)
    )
    certificates: dict[str, str] = field(default_factory=dict)

    @property
    def cpu_svn(self) -> bytes:
        return bytes(self.sgx_tcb_components)

    def to_json(self) -> str:
        def qe(p: QeParams) -> dict[str, Any]:
            return {
                "mr_enclave": p.mr_enclave.hex(),
                "mr_signer": p.mr_signer.hex(),
                "isv_prod_id": p.isv_prod_id,
                "isv_svn": p.isv_svn,
            }

        doc = {
            "format": _FORMAT,
            "simulated": True,
            "fmspc": self.fmspc,
            "tcb_status": self.tcb_status,
            "ppid": self.ppid.hex(),
            "platform_instance_id": self.platform_instance_id.hex(),
            "qe_id": self.qe_id.hex(),
            "pce_id": self.pce_id.hex(),
            "sgx_tcb_components": list(self.sgx_tcb_components),
            "pce_svn": self.pce_svn,
            "tee_tcb_svn": self.tee_tcb_svn.hex(),
            "tee_tcb_svn2": self.tee_tcb_svn2.hex(),
            "mr_seam": self.mr_seam.hex(),
            "mr_signer_seam": self.mr_signer_seam.hex(),
            "td_qe": qe(self.td_qe),
            "sgx_qe": qe(self.sgx_qe),
            "certificates": self.certificates,
        }
        return json.dumps(doc, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, where: Path) -> _State:
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
                raise ValueError(f"format is not {_FORMAT!r}")

            def qe(p: dict[str, Any]) -> QeParams:
                return QeParams(
                    bytes.fromhex(p["mr_enclave"]),
                    bytes.fromhex(p["mr_signer"]),
                    int(p["isv_prod_id"]),
                    int(p["isv_svn"]),
                )

            state = cls(
                fmspc=_check_fmspc(str(doc["fmspc"])),
                tcb_status=_check_status(str(doc["tcb_status"])),
                ppid=bytes.fromhex(doc["ppid"]),
                platform_instance_id=bytes.fromhex(doc["platform_instance_id"]),
                qe_id=bytes.fromhex(doc["qe_id"]),
                pce_id=bytes.fromhex(doc["pce_id"]),
                sgx_tcb_components=tuple(int(v) for v in doc["sgx_tcb_components"]),
                pce_svn=int(doc["pce_svn"]),
                tee_tcb_svn=bytes.fromhex(doc["tee_tcb_svn"]),
                tee_tcb_svn2=bytes.fromhex(doc["tee_tcb_svn2"]),
                mr_seam=bytes.fromhex(doc["mr_seam"]),
                mr_signer_seam=bytes.fromhex(doc["mr_signer_seam"]),
                td_qe=qe(doc["td_qe"]),
                sgx_qe=qe(doc["sgx_qe"]),
                certificates={
                    k: str(doc["certificates"][k]) for k in ("root", "platform_ca", "pck", "tcb_signing")
                },
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{where}: not a simulated platform file ({exc})") from None
        state.validate(where)
        return state

    def validate(self, where: Path) -> None:
        """Refuse sizes and ranges the quote formats cannot carry."""
        sizes = {
            "ppid": (self.ppid, 16),
            "platform_instance_id": (self.platform_instance_id, 16),
            "qe_id": (self.qe_id, 16),
            "pce_id": (self.pce_id, 2),
            "tee_tcb_svn": (self.tee_tcb_svn, 16),
            "tee_tcb_svn2": (self.tee_tcb_svn2, 16),
            "mr_seam": (self.mr_seam, 48),
            "mr_signer_seam": (self.mr_signer_seam, 48),
            "td_qe.mr_enclave": (self.td_qe.mr_enclave, 32),
            "td_qe.mr_signer": (self.td_qe.mr_signer, 32),
            "sgx_qe.mr_enclave": (self.sgx_qe.mr_enclave, 32),
            "sgx_qe.mr_signer": (self.sgx_qe.mr_signer, 32),
        }
        for name, (value, size) in sizes.items():
            if len(value) != size:
                raise ConfigError(f"{where}: {name} is {len(value)} bytes, expected {size}")
        if len(self.sgx_tcb_components) != 16 or not all(0 <= c <= 0xFF for c in self.sgx_tcb_components):
            raise ConfigError(f"{where}: sgx_tcb_components must be 16 values in 0..255")
        if max(self.tee_tcb_svn[0], self.tee_tcb_svn[2], self.sgx_tcb_components[0]) == 0xFF:
            raise ConfigError(f"{where}: the first SVNs must leave room for a newer simulated TCB level")
        svns: tuple[tuple[str, int], ...] = (
            ("pce_svn", self.pce_svn),
            ("td_qe.isv_svn", self.td_qe.isv_svn),
            ("td_qe.isv_prod_id", self.td_qe.isv_prod_id),
            ("sgx_qe.isv_svn", self.sgx_qe.isv_svn),
            ("sgx_qe.isv_prod_id", self.sgx_qe.isv_prod_id),
        )
        for svn_name, svn in svns:
            if not 0 <= svn <= 0xFFFF:
                raise ConfigError(f"{where}: {svn_name} {svn} is outside 0..65535")


def _check_fmspc(fmspc: str) -> str:
    value = fmspc.strip().upper()
    if len(value) != 12 or any(c not in "0123456789ABCDEF" for c in value):
        raise ConfigError(f"FMSPC must be 12 hex digits (6 bytes), got {fmspc!r}")
    return value


def _check_status(status: str) -> str:
    for known in TCB_STATUSES:
        if status.lower() == known.lower():
            return known
    raise ConfigError(f"unknown TCB status {status!r}; choose one of {', '.join(TCB_STATUSES)}")


class SimPlatform:
    """A simulated TDX/SGX platform. Build with :meth:`create` or :meth:`load`."""

    pck_ca = "platform"

    def __init__(self, directory: Path, state: _State, keys: dict[str, ec.EllipticCurvePrivateKey]) -> None:
        self.directory = directory
        self._state = state
        self._keys = keys
        try:
            certs = {
                name: x509.load_pem_x509_certificate(pem.encode()) for name, pem in state.certificates.items()
            }
        except ValueError as exc:
            raise ConfigError(
                f"{directory}: a certificate in {PLATFORM_FILE} is not valid PEM ({exc})"
            ) from None
        self.certificates = pki.CertSet(
            root=certs["root"],
            platform_ca=certs["platform_ca"],
            pck=certs["pck"],
            tcb_signing=certs["tcb_signing"],
        )
        for cert_name, key_name in (
            ("root", "root-ca"),
            ("platform_ca", "platform-ca"),
            ("pck", "pck"),
            ("tcb_signing", "tcb-signing"),
        ):
            if certs[cert_name].public_key() != keys[key_name].public_key():
                raise ConfigError(
                    f"{directory}: the {cert_name} certificate does not match {key_name}.key.pem"
                )
        self._engine = QuoteEngine(
            attestation_key=keys["attestation"],
            pck_key=keys["pck"],
            pck_chain_pem=self.pck_chain_pem.encode(),
            cpu_svn=state.cpu_svn,
            pce_svn=state.pce_svn,
            qe_id=state.qe_id,
            sgx_qe=state.sgx_qe,
            td_qe=state.td_qe,
        )
        self._tee_tcb = TeeTcb(
            tee_tcb_svn=state.tee_tcb_svn,
            mr_seam=state.mr_seam,
            mr_signer_seam=state.mr_signer_seam,
            tee_tcb_svn2=state.tee_tcb_svn2,
        )
        self._mac_key = hashlib.sha256(b"teegate SIMULATED report MAC key" + state.qe_id).digest()
        self._collateral_inputs = CollateralInputs(
            fmspc=state.fmspc,
            pce_id=state.pce_id,
            sgx_tcb_components=state.sgx_tcb_components,
            pce_svn=state.pce_svn,
            tee_tcb_svn=state.tee_tcb_svn,
            mr_signer_seam=state.mr_signer_seam,
            sgx_qe=state.sgx_qe,
            td_qe=state.td_qe,
            root=certs["root"],
            platform_ca=certs["platform_ca"],
            tcb_signing=certs["tcb_signing"],
            root_key=keys["root-ca"],
            platform_ca_key=keys["platform-ca"],
            tcb_signing_key=keys["tcb-signing"],
        )

    # --- persistence ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls, directory: str | os.PathLike[str], *, fmspc: str = DEFAULT_FMSPC, tcb_status: str = "UpToDate"
    ) -> SimPlatform:
        """Create a new platform in ``directory`` (made if missing); refuses to overwrite one."""
        path = Path(directory)
        fmspc = _check_fmspc(fmspc)
        tcb_status = _check_status(tcb_status)
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise ConfigError(
                f"cannot create a simulated platform in {path}: {exc.strerror or exc}"
            ) from None
        # An advisory lock on the directory itself serializes creators (released if one dies);
        # loaders need none: platform.json appears last, after every key is in place.
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
            if (path / PLATFORM_FILE).exists():
                raise ConfigError(f"{path} already holds a simulated platform; refusing to overwrite it")
            state, keys = cls._write_new(path, fmspc=fmspc, tcb_status=tcb_status)
        finally:
            os.close(dir_fd)  # releases the lock
        return cls(path, state, keys)

    @staticmethod
    def _write_new(
        path: Path, *, fmspc: str, tcb_status: str
    ) -> tuple[_State, dict[str, ec.EllipticCurvePrivateKey]]:
        keys = {name: ec.generate_private_key(ec.SECP256R1()) for name in _KEYS}
        state = _State(
            fmspc=fmspc,
            tcb_status=tcb_status,
            ppid=secrets.token_bytes(16),
            platform_instance_id=secrets.token_bytes(16),
            qe_id=secrets.token_bytes(16),
        )
        certs = pki.issue_pki(
            root_key=keys["root-ca"],
            platform_ca_key=keys["platform-ca"],
            pck_key=keys["pck"],
            tcb_signing_key=keys["tcb-signing"],
            pck=pki.PckFields(
                ppid=state.ppid,
                sgx_tcb_components=state.sgx_tcb_components,
                pce_svn=state.pce_svn,
                cpu_svn=state.cpu_svn,
                pce_id=state.pce_id,
                fmspc=bytes.fromhex(fmspc),
                platform_instance_id=state.platform_instance_id,
            ),
        )
        state = replace(
            state,
            certificates={
                "root": certs.root.public_bytes(Encoding.PEM).decode(),
                "platform_ca": certs.platform_ca.public_bytes(Encoding.PEM).decode(),
                "pck": certs.pck.public_bytes(Encoding.PEM).decode(),
                "tcb_signing": certs.tcb_signing.public_bytes(Encoding.PEM).decode(),
            },
        )
        for name, key in keys.items():
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_private(path / f"{name}.key.pem", pem)
        # platform.json last and without overwriting (os.link fails if the name exists).
        fd, tmp = tempfile.mkstemp(dir=path, prefix=".platform.json.")
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(state.to_json())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path / PLATFORM_FILE)
            except FileExistsError:
                raise ConfigError(
                    f"{path} already holds a simulated platform; refusing to overwrite it"
                ) from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        return state, keys

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> SimPlatform:
        """Load the platform stored in ``directory``."""
        path = Path(directory)
        state = _State.from_json(
            read_bounded(path / PLATFORM_FILE, MAX_PLATFORM_FILE, "platform file", ConfigError).decode(
                "utf-8", "replace"
            ),
            path / PLATFORM_FILE,
        )
        keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        for name in _KEYS:
            key_path = path / f"{name}.key.pem"
            try:
                key = serialization.load_pem_private_key(
                    read_bounded(key_path, MAX_KEY_FILE, "key file", ConfigError), password=None
                )
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"{key_path}: not an unencrypted PEM private key ({exc})") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
                raise ConfigError(f"{key_path}: expected an ECDSA P-256 private key")
            keys[name] = key
        return cls(path, state, keys)

    # --- identity ------------------------------------------------------------------------------

    @property
    def fmspc(self) -> str:
        """The platform's FMSPC as 12 upper-case hex digits."""
        return self._state.fmspc

    @property
    def tcb_status(self) -> str:
        """The TCB status the platform's collateral gives it by default."""
        return self._state.tcb_status

    @property
    def qe_id(self) -> bytes:
        return self._state.qe_id

    @property
    def attestation_public_key(self) -> bytes:
        """The attestation key as it appears in quotes (X || Y, 64 bytes)."""
        return self._engine.attestation_public_key

    @property
    def pck_chain_pem(self) -> str:
        """PCK leaf, platform CA, root — the type-5 certification data of every quote."""
        c = self.certificates
        return "".join(x.public_bytes(Encoding.PEM).decode() for x in (c.pck, c.platform_ca, c.root))

    @property
    def root_ca_der(self) -> bytes:
        """The simulated root certificate (DER), e.g. for ``dcap_qvl.verify_with_root_ca``."""
        return self.certificates.root.public_bytes(Encoding.DER)

    def anchor(self) -> TrustAnchor:
        """The simulated root as a ``TrustAnchor(simulated=True)``; pass it explicitly to trust sim quotes."""
        fingerprint = hashlib.sha256(self.root_ca_der).hexdigest()[:16]
        return TrustAnchor.from_key(
            f"{pki.ROOT_CA_CN} ({fingerprint})",
            self._keys["root-ca"].public_key(),
            simulated=True,
        )

    def platform_info(self) -> tuple[int, int, bytes, bytes]:
        """``(tdqe_isvsvn, pce_isvsvn, platform_id, cpusvn)`` as QGS GET_PLATFORM_INFO reports."""
        s = self._state
        return s.td_qe.isv_svn, s.pce_svn, s.qe_id, s.cpu_svn

    def registration(self) -> dict[str, str | None]:
        """What ``teegate register`` posts to a PCCS for this platform (hex strings).

        A simulated platform has no PPID encrypted to Intel's key, so ``enc_ppid`` is zero.
        """
        s = self._state
        return {
            "qe_id": s.qe_id.hex(),
            "pce_id": s.pce_id.hex(),
            "cpu_svn": s.cpu_svn.hex(),
            "pce_svn": s.pce_svn.to_bytes(2, "big").hex(),
            "enc_ppid": bytes(384).hex(),
            "platform_manifest": None,
        }

    # --- quoting -------------------------------------------------------------------------------

    def td_report(
        self,
        report_data: bytes = b"",
        *,
        debug: bool = False,
        mr_td: bytes | None = None,
        rtmrs: tuple[bytes, bytes, bytes, bytes] | None = None,
        mr_config_id: bytes | None = None,
        mr_owner: bytes | None = None,
        mr_owner_config: bytes | None = None,
        td_attributes: int | None = None,
        xfam: int | None = None,
        mr_servicetd: bytes | None = None,
        tee_tcb_svn: bytes | None = None,
    ) -> TdReport:
        """A simulated TD's report (defaults: simulated TDVF/RTMR values, production attributes)."""
        report = TdReport(
            tcb=self._tee_tcb,
            report_data=pad_report_data(report_data),
            mr_td=DEFAULT_MR_TD if mr_td is None else mr_td,
            rtmrs=(DEFAULT_RTMRS[0], DEFAULT_RTMRS[1], DEFAULT_RTMRS[2], DEFAULT_RTMRS[3])
            if rtmrs is None
            else rtmrs,
        )
        changes: dict[str, Any] = {}
        for name, value in (
            ("mr_config_id", mr_config_id),
            ("mr_owner", mr_owner),
            ("mr_owner_config", mr_owner_config),
            ("td_attributes", td_attributes),
            ("xfam", xfam),
            ("mr_servicetd", mr_servicetd),
        ):
            if value is not None:
                changes[name] = value
        report = replace(report, **changes)
        if tee_tcb_svn is not None:
            # The module the TD was launched on (TD-preserving updates since then show in tee_tcb_svn2).
            report = replace(report, tcb=replace(report.tcb, tee_tcb_svn=tee_tcb_svn))
        if debug:
            report = replace(report, td_attributes=report.td_attributes | TD_ATTR_DEBUG)
        return report

    def tdx_quote(
        self,
        report_data: bytes,
        *,
        version: int = 4,
        body_type: int | None = None,
        debug: bool = False,
        **td: Any,
    ) -> bytes:
        """A TDX quote (v4, or v5 with body type 3 by default) for a simulated TD.

        Keyword arguments as :meth:`td_report` (``mr_td``, ``rtmrs``, ``td_attributes`` …).
        """
        report = self.td_report(report_data, debug=debug, **td)
        return self._engine.tdx_quote(report, version=version, body_type=body_type)

    def tdreport(self, report_data: bytes = b"", *, debug: bool = False, **td: Any) -> bytes:
        """The 1024-byte TDREPORT a simulated TD would get for ``report_data``."""
        report = self.td_report(report_data, debug=debug, **td)
        return report.tdreport(cpu_svn=self._state.cpu_svn, mac_key=self._mac_key)

    def quote_from_tdreport(self, tdreport: bytes, version: int = 4) -> bytes:
        """Quote a TDREPORT as the TD-QE does (QGS backend). Its MAC is not checked."""
        return self._engine.tdx_quote_from_tdreport(bytes(tdreport), version=version)

    def sgx_report(
        self,
        report_data: bytes = b"",
        *,
        debug: bool = False,
        mr_enclave: bytes = DEFAULT_MR_ENCLAVE,
        mr_signer: bytes = DEFAULT_MR_SIGNER,
        isv_prod_id: int = 0,
        isv_svn: int = 0,
    ) -> EnclaveReport:
        """The REPORT body of a simulated enclave on this platform."""
        report = EnclaveReport(
            report_data=pad_report_data(report_data),
            cpu_svn=self._state.cpu_svn,
            mr_enclave=mr_enclave,
            mr_signer=mr_signer,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
        )
        if debug:
            flags = report.attributes[0] | 0x02
            report = replace(report, attributes=bytes([flags]) + report.attributes[1:])
        return report

    def sgx_quote(self, report_data: bytes, **enclave: Any) -> bytes:
        """An SGX v3 quote for a simulated enclave (keywords as :meth:`sgx_report`)."""
        return self._engine.sgx_enclave_quote(self.sgx_report(report_data, **enclave))

    def quote_from_sgx_report(self, report_body: bytes) -> bytes:
        """Quote a 384-byte SGX REPORT body as the QE does (AESM backend)."""
        return self._engine.sgx_quote(bytes(report_body))

    # --- collateral ----------------------------------------------------------------------------

    def collateral(
        self,
        tee: Literal["sgx", "tdx"],
        *,
        now: datetime,
        tcb_status: str | None = None,
        fmspc: str | None = None,
        revoke_pck: bool = False,
        expired: bool = False,
    ) -> Collateral:
        """Collateral for this platform valid around ``now``.

        Scenarios: ``tcb_status`` (default: the platform's), ``fmspc`` (a wrong FMSPC in the TCB
        Info), ``revoke_pck`` (the PCK leaf on the PCK CRL), ``expired`` (validity window in the past).
        """
        if tee not in ("sgx", "tdx"):
            raise ConfigError(f"TEE type must be 'sgx' or 'tdx', not {tee!r}")
        if now.tzinfo is None:
            raise ConfigError("collateral time must be timezone-aware (UTC)")
        return build_collateral(
            self._collateral_inputs,
            tee,
            now=now,
            status=_check_status(tcb_status or self._state.tcb_status),
            fmspc=None if fmspc is None else _check_fmspc(fmspc),
            revoked_pck_serials=(self.certificates.pck.serial_number,) if revoke_pck else (),
            expired=expired,
        )

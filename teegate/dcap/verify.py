"""Intel DCAP quote verification (SGX v3, TDX v4/v5) — pure: the time is an argument.

The numbered steps below are Intel's QVL order (shared/spec/dcap.md §2.4; docs/verification.md
explains each and the attack it stops):

1. Quote parsed (teegate.dcap.quote) — version, key type, TEE type, QE vendor, sizes.
2. PCK certificate chain: leaf → PCK Platform/Processor CA → root whose *key* is pinned.
3. CRLs: Root CA CRL (by the root) and PCK CRL (by the leaf's CA), signatures and windows;
   neither the PCK leaf nor any CA is revoked.
4. TCB Info: TCB Signing chain, signature over the exact JSON, issueDate..nextUpdate, id and
   version fit the TEE, FMSPC and PCE-ID equal the PCK certificate's.
5. QE Identity: same chain, signature and window checks; id fits the TEE (QE / TD_QE).
6. QE report signature by the PCK leaf key.
7. QE report data == SHA-256(attestation key || QE auth data) || 32 zero bytes.
8. QE report vs QE Identity: masked MISCSELECT/ATTRIBUTES, MRSIGNER, ISVPRODID, ISVSVN → QE TCB level.
9. Quote signature by the attestation key over header+body.
10. TDX module identity (TDX): MRSIGNERSEAM/SEAMATTRIBUTES vs tdxModule / TDX_%02X.
11. TCB level: SGX components + PCESVN (and TEE TCB SVN for TDX) → platform TCB level.
12. Merged status: module and QE convergence, TD relaunch check (TDX 1.5), advisory IDs, TCB
    date, collateral expiration.

Warm caches (per :class:`QuoteVerifier`, bounded): checked collateral keyed by the collateral
value and valid for the time window in which every check holds; the verified PCK chain keyed
by (chain PEM, collateral); verified QE reports keyed by (report, signature, chain PEM). What
differs per quote — quote signature, QE report data binding, QE identity match, TCB level for
this quote's SVNs and the merge — is always computed.

Cold (a fresh verifier) does nine P-256 verifications, each once: PCK←PCK CA, PCK CA←root,
TCB Signing←root, Root CA CRL, PCK CRL, TCB Info, QE Identity, QE report, quote. The
verifier's :class:`~teegate.dcap.certs.CertMemo` parses each certificate once (the root and
PCK CA recur across chains) and checks each (certificate, issuer) link once.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec

from teegate.dcap.anchors import TrustAnchor, TrustAnchors
from teegate.dcap.certs import (
    CertMemo,
    VerifiedChain,
    VerifiedCrl,
    load_crl,
    load_pem_chain,
    public_key_from_point,
    verify_chain,
    verify_crl,
    verify_raw_signature,
)
from teegate.dcap.claims import quote_claims
from teegate.dcap.collateral import Collateral
from teegate.dcap.pck import PckExtensions, parse_pck_extensions, pck_ca_of
from teegate.dcap.qe_identity import QeIdentity, match_qe_report, parse_qe_identity
from teegate.dcap.quote import INTEL_QE_VENDOR_ID, Quote, TdReport10, TdReport15, parse_quote
from teegate.dcap.tcb_info import (
    TCB_STATUS_NAMES,
    ModuleTcbLevel,
    TcbInfo,
    TcbMatch,
    match_tcb_levels,
    parse_tcb_info,
    tdx_module_status,
)
from teegate.errors import CollateralError, ParseError, VerificationError

__all__ = [
    "MAX_CACHED_ENTRIES",
    "STATUSES",
    "STEP_COLLATERAL_CRLS",
    "STEP_MERGE",
    "STEP_PARSE",
    "STEP_PCK_CHAIN",
    "STEP_QE_IDENTITY",
    "STEP_QE_IDENTITY_MATCH",
    "STEP_QE_REPORT_DATA",
    "STEP_QE_REPORT_SIGNATURE",
    "STEP_QUOTE_SIGNATURE",
    "STEP_TCB_INFO",
    "STEP_TCB_LEVEL",
    "STEP_TDX_MODULE",
    "QuoteVerifier",
    "Verdict",
    "verdict_claims",
    "verify_collateral",
    "verify_quote",
]

STEP_PARSE: Final = "1 quote format"
STEP_PCK_CHAIN: Final = "2 PCK chain"
STEP_COLLATERAL_CRLS: Final = "3 CRLs"
STEP_TCB_INFO: Final = "4 TCB Info"
STEP_QE_IDENTITY: Final = "5 QE Identity"
STEP_QE_REPORT_SIGNATURE: Final = "6 QE report signature"
STEP_QE_REPORT_DATA: Final = "7 QE report data"
STEP_QE_IDENTITY_MATCH: Final = "8 QE report vs QE Identity"
STEP_QUOTE_SIGNATURE: Final = "9 quote signature"
STEP_TDX_MODULE: Final = "10 TDX module"
STEP_TCB_LEVEL: Final = "11 TCB level"
STEP_MERGE: Final = "12 merged status"

#: Every status a verdict can carry (TCB status names as Intel spells them): a TCB level's, or
#: one of the two that merging a TDX module identity adds.
STATUSES: Final = (*TCB_STATUS_NAMES, "TDRelaunchAdvised", "TDRelaunchAdvisedConfigurationNeeded")

#: Entries kept in each warm cache of a verifier (platforms, PCK chains, QE reports).
MAX_CACHED_ENTRIES: Final = 256

_ZERO32 = bytes(32)
_CONFIG_NEEDED = frozenset(
    {
        "ConfigurationNeeded",
        "OutOfDateConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
        "TDRelaunchAdvisedConfigurationNeeded",
    }
)


@dataclass(frozen=True)
class Verdict:
    """The outcome of verifying one quote with one collateral bundle at one time."""

    quote: Quote
    #: Merged TCB status (one of :data:`STATUSES`).
    status: str
    #: Advisory IDs of the selected platform, TDX module and QE levels (dcap-qvl's order).
    advisory_ids: tuple[str, ...]
    #: tcbDate of the platform TCB level (ISO 8601 as Intel wrote it).
    tcb_date: str
    #: True only when the verifier accepts expired collateral and some of it was expired.
    collateral_expired: bool
    #: Status of the selected platform TCB level (TDX level for TDX, converged with the module).
    platform_status: str
    #: QE Identity TCB status of the quoting enclave (UpToDate, OutOfDate, Revoked).
    qe_status: str
    #: TDX module identity level status (None for SGX; UpToDate for TDX 1.0 module numbering).
    tdx_module_status: str | None
    fmspc: str
    anchor: TrustAnchor
    #: The TD's DEBUG attribute (TDX) or the enclave's DEBUG attribute (SGX): reported, not refused.
    debug: bool
    pck: PckExtensions
    pck_ca: str
    tcb_evaluation_data_number: int
    earliest_issue_date: datetime
    latest_issue_date: datetime
    earliest_expiration_date: datetime


@dataclass(frozen=True)
class _CheckedCollateral:
    """Collateral whose signatures, chains and CRLs verified; valid for now in [not_before, not_after]."""

    anchor: TrustAnchor
    root_crl: VerifiedCrl
    pck_crl: VerifiedCrl
    tcb_info: TcbInfo
    qe_identity: QeIdentity
    not_before: datetime
    not_after: datetime
    #: Earliest nextUpdate / CRL nextUpdate: after it the collateral is expired.
    expires: datetime
    expired: bool
    earliest_issue: datetime
    latest_issue: datetime

    def usable_at(self, now: datetime) -> bool:
        return self.not_before <= now <= self.not_after


@dataclass(frozen=True)
class _CheckedPck:
    chain: VerifiedChain
    ext: PckExtensions
    ca: str
    key: ec.EllipticCurvePublicKey
    fmspc: str


def _check_time(now: datetime) -> None:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise TypeError("now must be a timezone-aware datetime")


def _window(
    what: str, start: datetime, end: datetime, now: datetime, *, step: str, code: str, accept_expired: bool
) -> bool:
    """Check ``start <= now <= end``; returns True if expired and ``accept_expired``."""
    if now < start:
        raise VerificationError(
            f"{code}_NOT_YET_VALID",
            f"{what} is valid from {start.isoformat()}, now is {now.isoformat()}",
            step=step,
        )
    if now > end:
        if accept_expired:
            return True
        raise VerificationError(
            f"{code}_EXPIRED", f"{what} expired at {end.isoformat()}, now is {now.isoformat()}", step=step
        )
    return False


def _check_collateral(
    collateral: Collateral,
    anchors: TrustAnchors,
    now: datetime,
    *,
    accept_expired: bool,
    memo: CertMemo,
) -> _CheckedCollateral:
    # Step 3 (collateral half): CRLs and the PCK CA that signs the PCK CRL.
    step = STEP_COLLATERAL_CRLS
    crl_chain = load_pem_chain(collateral.pck_crl_issuer_chain, "pck_crl_issuer_chain", cache=memo)
    root_cert = crl_chain[-1]
    root_crl_raw = load_crl(collateral.root_ca_crl, "root_ca_crl", cache=memo)
    pck_crl_raw = load_crl(collateral.pck_crl, "pck_crl", cache=memo)
    root_crl = verify_crl(root_crl_raw, root_cert, what="Root CA CRL", step=step, memo=memo)
    expired = _window(
        "Root CA CRL",
        root_crl.this_update,
        root_crl.next_update,
        now,
        step=step,
        code="CRL",
        accept_expired=accept_expired,
    )
    crl_issuer = verify_chain(
        crl_chain, anchors, now, what="PCK CRL issuer chain", step=step, crls=(root_crl,), memo=memo
    )
    if root_crl.is_revoked(root_cert):
        raise VerificationError("ROOT_CA_REVOKED", "the root CA is listed in its own CRL", step=step)
    pck_crl = verify_crl(pck_crl_raw, crl_issuer.leaf, what="PCK CRL", step=step, memo=memo)
    expired |= _window(
        "PCK CRL",
        pck_crl.this_update,
        pck_crl.next_update,
        now,
        step=step,
        code="CRL",
        accept_expired=accept_expired,
    )
    anchor = crl_issuer.anchor

    # Step 4 (collateral half): TCB Info signature by the TCB Signing chain and its window.
    step = STEP_TCB_INFO
    tcb_chain = verify_chain(
        load_pem_chain(collateral.tcb_info_issuer_chain, "tcb_info_issuer_chain", cache=memo),
        anchors,
        now,
        what="TCB Info signing chain",
        step=step,
        crls=(root_crl,),
        leaf_revoked_code="TCB_SIGNING_CERT_REVOKED",
        memo=memo,
    )
    if tcb_chain.anchor != anchor:
        raise VerificationError("ROOT_CA_MISMATCH", "TCB Info chain ends at another root", step=step)
    if not verify_raw_signature(
        memo.info(tcb_chain.leaf).p256_key(), collateral.tcb_info_signature, collateral.tcb_info.encode()
    ):
        raise VerificationError(
            "INVALID_TCB_INFO_SIGNATURE",
            "TCB Info signature does not verify with the TCB Signing key",
            step=step,
        )
    # Parsed only once its signature holds: unsigned text never reaches the parser's decisions.
    tcb_info = parse_tcb_info(collateral.tcb_info)
    expired |= _window(
        "TCB Info",
        tcb_info.issue_date,
        tcb_info.next_update,
        now,
        step=step,
        code="TCB_INFO",
        accept_expired=accept_expired,
    )

    # Step 5 (collateral half): QE Identity signature and window.
    step = STEP_QE_IDENTITY
    qe_chain_pem = collateral.qe_identity_issuer_chain
    if qe_chain_pem == collateral.tcb_info_issuer_chain:
        qe_chain = tcb_chain
    else:
        qe_chain = verify_chain(
            load_pem_chain(qe_chain_pem, "qe_identity_issuer_chain", cache=memo),
            anchors,
            now,
            what="QE Identity signing chain",
            step=step,
            crls=(root_crl,),
            leaf_revoked_code="TCB_SIGNING_CERT_REVOKED",
            memo=memo,
        )
        if qe_chain.anchor != anchor:
            raise VerificationError("ROOT_CA_MISMATCH", "QE Identity chain ends at another root", step=step)
    if not verify_raw_signature(
        memo.info(qe_chain.leaf).p256_key(), collateral.qe_identity_signature, collateral.qe_identity.encode()
    ):
        raise VerificationError(
            "INVALID_QE_IDENTITY_SIGNATURE",
            "QE Identity signature does not verify with the TCB Signing key",
            step=step,
        )
    qe_identity = parse_qe_identity(collateral.qe_identity)
    expired |= _window(
        "QE Identity",
        qe_identity.issue_date,
        qe_identity.next_update,
        now,
        step=step,
        code="QE_IDENTITY",
        accept_expired=accept_expired,
    )

    starts = (root_crl.this_update, pck_crl.this_update, tcb_info.issue_date, qe_identity.issue_date)
    ends = (root_crl.next_update, pck_crl.next_update, tcb_info.next_update, qe_identity.next_update)
    cert_before = max(crl_issuer.not_before, tcb_chain.not_before, qe_chain.not_before)
    cert_after = min(crl_issuer.not_after, tcb_chain.not_after, qe_chain.not_after)
    expires = min(ends)
    return _CheckedCollateral(
        anchor=anchor,
        root_crl=root_crl,
        pck_crl=pck_crl,
        tcb_info=tcb_info,
        qe_identity=qe_identity,
        not_before=max(cert_before, *starts),
        # With expired collateral accepted the cache entry covers only the instant checked.
        not_after=now if expired else min(cert_after, expires),
        expires=expires,
        expired=expired,
        earliest_issue=min(starts),
        latest_issue=max(starts),
    )


def verify_collateral(
    collateral: Collateral, *, anchors: TrustAnchors, now: datetime, accept_expired: bool = False
) -> None:
    """Check every collateral signature, chain, CRL and validity window at ``now``; raise if any fails."""
    _check_time(now)
    _check_collateral(collateral, anchors, now, accept_expired=accept_expired, memo=CertMemo())


class QuoteVerifier:
    """Verifies quotes against pinned roots, keeping warm per-platform caches (bounded LRU).

    ``accept_expired_collateral`` makes expired TCB Info / QE Identity / CRLs a flag on the
    verdict (``collateral_expired``, as Intel's QvE reports it) instead of an error; off by
    default. Certificates are always required to be valid at ``now``.
    """

    def __init__(
        self, anchors: TrustAnchors | None = None, *, accept_expired_collateral: bool = False
    ) -> None:
        self.anchors = anchors if anchors is not None else TrustAnchors.intel()
        self.accept_expired_collateral = accept_expired_collateral
        self._collateral: OrderedDict[Collateral, _CheckedCollateral] = OrderedDict()
        self._pck: OrderedDict[tuple[str, Collateral], _CheckedPck] = OrderedDict()
        self._qe_reports: OrderedDict[tuple[bytes, bytes, str], None] = OrderedDict()
        self._att_keys: OrderedDict[bytes, ec.EllipticCurvePublicKey] = OrderedDict()
        self._qe_levels: OrderedDict[tuple[Collateral, bytes], ModuleTcbLevel] = OrderedDict()
        self._tcb_levels: OrderedDict[tuple[Any, ...], tuple[ModuleTcbLevel | None, TcbMatch]] = OrderedDict()
        self._certs = CertMemo()
        self._lock = threading.Lock()

    # -- caches -------------------------------------------------------------------------------

    def _remember(self, cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        with self._lock:  # verifiers are shared by server threads
            cache[key] = value
            cache.move_to_end(key)
            while len(cache) > MAX_CACHED_ENTRIES:
                cache.popitem(last=False)

    def _checked_collateral(self, collateral: Collateral, now: datetime) -> _CheckedCollateral:
        cached = self._collateral.get(collateral)
        if cached is not None and cached.usable_at(now):
            return cached
        checked = _check_collateral(
            collateral,
            self.anchors,
            now,
            accept_expired=self.accept_expired_collateral,
            memo=self._certs,
        )
        self._remember(self._collateral, collateral, checked)
        return checked

    def _checked_pck(
        self, quote: Quote, collateral: Collateral, checked: _CheckedCollateral, now: datetime
    ) -> _CheckedPck:
        key = (quote.pck_chain_pem, collateral)
        cached = self._pck.get(key)
        if cached is not None and cached.chain.not_before <= now <= cached.chain.not_after:
            return cached
        # Step 2: PCK chain to a pinned root; step 3: revocation of leaf and CA by the CRLs.
        certs = load_pem_chain(
            quote.pck_chain_pem, "PCK certificate chain", error=ParseError, cache=self._certs
        )
        chain = verify_chain(
            certs,
            self.anchors,
            now,
            what="PCK certificate chain",
            step=STEP_PCK_CHAIN,
            crls=(checked.root_crl, checked.pck_crl),
            leaf_revoked_code="PCK_REVOKED",
            min_length=3,
            memo=self._certs,
            revocation_step=STEP_COLLATERAL_CRLS,
        )
        if chain.anchor != checked.anchor:
            raise VerificationError(
                "ROOT_CA_MISMATCH",
                f"PCK chain ends at {chain.anchor.name!r}, the collateral at {checked.anchor.name!r}",
                step=STEP_PCK_CHAIN,
            )
        ext = parse_pck_extensions(chain.leaf)
        leaf = self._certs.info(chain.leaf)
        # Step 4 (platform half): the TCB Info is for this platform's FMSPC and PCE.
        info = checked.tcb_info
        if info.fmspc != ext.fmspc_hex:
            raise VerificationError(
                "TCB_INFO_MISMATCH",
                f"TCB Info is for FMSPC {info.fmspc}, the PCK certificate has {ext.fmspc_hex}",
                step=STEP_TCB_INFO,
            )
        if info.pce_id != ext.pce_id_hex:
            raise VerificationError(
                "TCB_INFO_MISMATCH",
                f"TCB Info is for PCE-ID {info.pce_id}, the PCK certificate has {ext.pce_id_hex}",
                step=STEP_TCB_INFO,
            )
        result = _CheckedPck(
            chain=chain,
            ext=ext,
            ca=pck_ca_of(chain.leaf, issuer_der=leaf.issuer),
            key=leaf.p256_key(),
            fmspc=ext.fmspc_hex,
        )
        self._remember(self._pck, key, result)
        return result

    # -- verification -------------------------------------------------------------------------

    def verify(self, quote: bytes | Quote, collateral: Collateral, *, now: datetime) -> Verdict:
        """Verify ``quote`` with ``collateral`` at ``now``; raise an EvidenceError subclass on failure."""
        _check_time(now)
        if not isinstance(collateral, Collateral):
            raise CollateralError("collateral must be a teegate.dcap.collateral.Collateral")
        # Step 1: quote format.
        q = quote if isinstance(quote, Quote) else parse_quote(quote)
        if q.header.qe_vendor_id != INTEL_QE_VENDOR_ID:
            raise VerificationError(
                "UNSUPPORTED_QE_VENDOR",
                f"QE vendor {q.header.qe_vendor_id.hex()} is not Intel's",
                step=STEP_PARSE,
            )
        is_tdx = q.is_tdx
        if is_tdx != isinstance(q.body, TdReport10):
            raise VerificationError(
                "UNSUPPORTED_QUOTE_FORMAT", "TEE type and body type disagree", step=STEP_PARSE
            )

        # Steps 3-5 (collateral): CRLs, TCB Info, QE Identity — cached per platform.
        checked = self._checked_collateral(collateral, now)
        # Steps 2-3 (quote): PCK chain and its revocation.
        pck = self._checked_pck(q, collateral, checked, now)

        # Step 4 (quote half): TCB Info is for this TEE (platform match checked with the PCK chain).
        info = checked.tcb_info
        if is_tdx and not (info.id == "TDX" and info.version >= 3):
            raise VerificationError("TCB_INFO_MISMATCH", "TDX quote with SGX TCB Info", step=STEP_TCB_INFO)
        if not is_tdx and info.id != "SGX":
            raise VerificationError("TCB_INFO_MISMATCH", "SGX quote with TDX TCB Info", step=STEP_TCB_INFO)
        # Step 5 (quote half): the QE Identity is the one for this TEE's quoting enclave.
        identity = checked.qe_identity
        if is_tdx and not (identity.id == "TD_QE" and identity.version in (2, 3)):
            raise VerificationError(
                "QE_IDENTITY_MISMATCH",
                f"TDX quote with {identity.id} v{identity.version} identity",
                step=STEP_QE_IDENTITY,
            )
        if not is_tdx and not (identity.id == "QE" and identity.version == 2):
            raise VerificationError(
                "QE_IDENTITY_MISMATCH",
                f"SGX quote with {identity.id} v{identity.version} identity",
                step=STEP_QE_IDENTITY,
            )

        # Step 6: QE report signed by the PCK key (cached per report, signature and chain).
        qe_key = (q.qe_report_raw, q.qe_report_signature, q.pck_chain_pem)
        if qe_key not in self._qe_reports:
            if not verify_raw_signature(pck.key, q.qe_report_signature, q.qe_report_raw):
                raise VerificationError(
                    "INVALID_QE_REPORT_SIGNATURE",
                    "QE report signature does not verify with the PCK key",
                    step=STEP_QE_REPORT_SIGNATURE,
                )
            self._remember(self._qe_reports, qe_key, None)

        # Step 7: QE report data binds the attestation key and QE authentication data.
        digest = hashlib.sha256(q.attestation_key + q.qe_auth_data).digest()
        report_data = q.qe_report.report_data
        if report_data[:32] != digest or report_data[32:] != _ZERO32:
            raise VerificationError(
                "INVALID_QE_REPORT_DATA",
                "QE report data is not SHA-256(attestation key || QE auth data) || zeros",
                step=STEP_QE_REPORT_DATA,
            )

        # Step 8: QE report against QE Identity → QE TCB level (the QE report repeats in every
        # quote of a platform: matched once per collateral and report; failures are not kept).
        qe_level_key = (collateral, q.qe_report_raw)
        qe_level = self._qe_levels.get(qe_level_key)
        if qe_level is None:
            qe_level = match_qe_report(identity, q.qe_report, step=STEP_QE_IDENTITY_MATCH)
            self._remember(self._qe_levels, qe_level_key, qe_level)

        # Step 9: quote signature by the attestation key.
        att_key = self._att_keys.get(q.attestation_key)
        if att_key is None:
            att_key = public_key_from_point(q.attestation_key, "attestation key")
            self._remember(self._att_keys, q.attestation_key, att_key)
        if not verify_raw_signature(att_key, q.signature, q.signed_region):
            raise VerificationError(
                "INVALID_QUOTE_SIGNATURE",
                "quote signature does not verify with the attestation key",
                step=STEP_QUOTE_SIGNATURE,
            )

        # Step 10: TDX module identity; step 11: TCB levels. Both depend only on the collateral,
        # the PCK certificate and the TD's TCB fields, which repeat for every quote of a platform
        # and TDX module: evaluated once per such key (failures are not kept).
        module_level: ModuleTcbLevel | None = None
        module_status: str | None = None
        tee_tcb_svn: bytes | None = None
        body = q.body
        if isinstance(body, TdReport10):
            tee_tcb_svn = body.tee_tcb_svn
            tcb_key: tuple[Any, ...] = (
                collateral,
                q.pck_chain_pem,
                tee_tcb_svn,
                body.mr_signer_seam,
                body.seam_attributes,
            )
        else:
            tcb_key = (collateral, q.pck_chain_pem)
        levels = self._tcb_levels.get(tcb_key)
        if levels is None:
            if isinstance(body, TdReport10):
                _identity, module_level = tdx_module_status(
                    info, body.tee_tcb_svn, body.mr_signer_seam, body.seam_attributes, step=STEP_TDX_MODULE
                )
            match = match_tcb_levels(
                info, pck.ext.tcb.sgx_components, pck.ext.tcb.pcesvn, tee_tcb_svn, step=STEP_TCB_LEVEL
            )
            self._remember(self._tcb_levels, tcb_key, (module_level, match))
        else:
            module_level, match = levels
        if isinstance(body, TdReport10):
            module_status = module_level.status if module_level is not None else "UpToDate"

        # Step 12: merge platform, TDX module and QE statuses (Intel QVL convergence).
        sgx_status = match.sgx_level.status
        level = match.tdx_level if match.tdx_level is not None else match.sgx_level
        platform_status = level.status
        if module_status is not None:
            platform_status = _converge_module(platform_status, module_status)
            if platform_status != "Revoked" and isinstance(body, TdReport15):
                platform_status = _relaunch(
                    body,
                    info,
                    sgx_status=sgx_status,
                    tdx_status=platform_status,
                    module_status=module_status,
                    qe_status=qe_level.status,
                )
        status = (
            platform_status
            if platform_status == "Revoked"
            else _converge_qe(platform_status, qe_level.status)
        )

        advisories: list[str] = []
        for source in (
            level.advisory_ids,
            module_level.advisory_ids if module_level else (),
            qe_level.advisory_ids,
        ):
            for adv in source:
                if adv not in advisories:
                    advisories.append(adv)

        return Verdict(
            quote=q,
            status=status,
            advisory_ids=tuple(advisories),
            tcb_date=level.tcb_date_text,
            collateral_expired=checked.expired or now > checked.expires,
            platform_status=platform_status,
            qe_status=qe_level.status,
            tdx_module_status=module_status,
            fmspc=pck.fmspc,
            anchor=checked.anchor,
            debug=q.debug,
            pck=pck.ext,
            pck_ca=pck.ca,
            tcb_evaluation_data_number=info.tcb_evaluation_data_number,
            earliest_issue_date=checked.earliest_issue,
            latest_issue_date=checked.latest_issue,
            earliest_expiration_date=checked.expires,
        )


def _converge_module(tcb_status: str, module_status: str) -> str:
    """Intel QVL ``convergeTcbStatusWithTdxModuleStatus``."""
    if module_status == "OutOfDate":
        if tcb_status in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if tcb_status in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    if module_status == "Revoked":
        return "Revoked"
    return tcb_status


def _converge_qe(tcb_status: str, qe_status: str) -> str:
    """Intel QVL ``convergeTcbStatusWithQeTcbStatus``."""
    if qe_status == "OutOfDate":
        if tcb_status in ("UpToDate", "SWHardeningNeeded"):
            return "OutOfDate"
        if tcb_status in ("ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"):
            return "OutOfDateConfigurationNeeded"
    if qe_status == "Revoked":
        return "Revoked"
    return tcb_status


def _relaunch(
    body: TdReport15, info: TcbInfo, *, sgx_status: str, tdx_status: str, module_status: str, qe_status: str
) -> str:
    """Intel QVL ``checkForRelaunch`` (TDX 1.5 bodies): a TD-preserving update already fixed the TCB."""
    if qe_status in ("OutOfDate", "Revoked"):
        return tdx_status
    if sgx_status not in (
        "UpToDate",
        "SWHardeningNeeded",
        "ConfigurationNeeded",
        "ConfigurationAndSWHardeningNeeded",
    ):
        return tdx_status
    if tdx_status not in ("OutOfDate", "OutOfDateConfigurationNeeded") or module_status != "OutOfDate":
        return tdx_status
    latest = info.tcb_levels[0]
    latest_tdx = latest.tdx_svns or (0,) * 16
    svn2 = body.tee_tcb_svn2
    if svn2[1] == 0:
        fixed = svn2[0] >= latest_tdx[0] and svn2[2] >= latest_tdx[2]
    else:
        identity = info.module_identity(svn2[1])
        if identity is None:
            raise VerificationError(
                "TDX_MODULE_MISMATCH",
                f"TCB Info has no TDX module identity TDX_{svn2[1]:02X} for TEE_TCB_SVN2",
                step=STEP_MERGE,
            )
        fixed = svn2[0] >= identity.tcb_levels[0].isvsvn and svn2[2] >= latest_tdx[2]
    if not fixed:
        return tdx_status
    if sgx_status in _CONFIG_NEEDED or tdx_status in _CONFIG_NEEDED:
        return "TDRelaunchAdvisedConfigurationNeeded"
    return "TDRelaunchAdvised"


def verify_quote(
    quote: bytes | Quote,
    collateral: Collateral,
    *,
    now: datetime,
    anchors: TrustAnchors | None = None,
    accept_expired_collateral: bool = False,
) -> Verdict:
    """Verify one quote with a fresh verifier (no warm caches)."""
    verifier = QuoteVerifier(anchors, accept_expired_collateral=accept_expired_collateral)
    return verifier.verify(quote, collateral, now=now)


def verdict_claims(verdict: Verdict) -> dict[str, Any]:
    """Flat claims with Trustee's names: the quote's claims plus the DCAP verification results."""
    pck = verdict.pck
    claims = dict(quote_claims(verdict.quote, pck))
    config = pck.configuration
    claims.update(
        {
            "tcb_status": verdict.status,
            "advisory_ids": list(verdict.advisory_ids),
            "tcb_date": verdict.tcb_date,
            "collateral_expired": verdict.collateral_expired,
            "collateral_expiration_status": "1" if verdict.collateral_expired else "0",
            "tcb_eval_num": verdict.tcb_evaluation_data_number,
            "earliest_issue_date": _iso(verdict.earliest_issue_date),
            "latest_issue_date": _iso(verdict.latest_issue_date),
            "earliest_expiration_date": _iso(verdict.earliest_expiration_date),
            "sgx_type": pck.sgx_type_name,
            "fmspc": verdict.fmspc,
            "pck_ca": verdict.pck_ca,
            "platform_tcb_status": verdict.platform_status,
            "qe_tcb_status": verdict.qe_status,
            "simulated": verdict.anchor.simulated,
        }
    )
    if verdict.tdx_module_status is not None:
        claims["tdx_module_tcb_status"] = verdict.tdx_module_status
    if config is not None:
        for name, value in (
            ("is_dynamic_platform", config.dynamic_platform),
            ("is_cached_keys", config.cached_keys),
            ("is_smt_enabled", config.smt_enabled),
        ):
            if value is not None:
                claims[name] = value
    return claims


@functools.lru_cache(maxsize=256)
def _iso(moment: datetime) -> str:
    """RFC 3339 UTC text of a collateral date (the same few dates recur for every quote)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")

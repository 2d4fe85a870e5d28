"""A parsed quote as claims with Trustee's names and layout, so Trustee's Rego policies read them.

Mirrors Trustee's ``deps/verifier/src/tdx/claims.rs`` and ``sgx/claims.rs``
(shared/spec/kbs-protocol.md §3.4): every byte field is lower-case hex of its wire bytes
(integers little-endian as on the wire: ``version`` 4 is ``"0400"``), TD attributes are also
given as named booleans, ``init_data`` is MRCONFIGID (TDX) or CONFIGID (SGX) and
``platform_instance_id`` comes from the PCK certificate when it has one (byte-reversed, as
Trustee prints it). The verdict claims
(``tcb_status``, ``advisory_ids``, …) are added by teegate.dcap.verify.
"""

from __future__ import annotations

from typing import Any

from teegate.dcap.pck import PckExtensions, parse_pck_extensions
from teegate.dcap.quote import HEADER_BYTES, Quote, QuoteHeader, SgxReportBody, TdReport10, TdReport15

_V5_PREFIX = HEADER_BYTES + 6  # header, u16 body type, u32 body size

__all__ = ["quote_claims", "sgx_body_claims", "td_attributes_claims", "tdx_body_claims"]


def _u16(value: int) -> str:
    return value.to_bytes(2, "little").hex()


def tdx_body_claims(body: TdReport10) -> dict[str, str]:
    """A TD report body with Trustee's ``quote.body`` names."""
    out = {
        "tcb_svn": body.tee_tcb_svn.hex(),
        "mr_seam": body.mr_seam.hex(),
        "mrsigner_seam": body.mr_signer_seam.hex(),
        "seam_attributes": body.seam_attributes.hex(),
        "td_attributes": body.td_attributes.hex(),
        "xfam": body.xfam.hex(),
        "mr_td": body.mr_td.hex(),
        "mr_config_id": body.mr_config_id.hex(),
        "mr_owner": body.mr_owner.hex(),
        "mr_owner_config": body.mr_owner_config.hex(),
        "rtmr_0": body.rtmrs[0].hex(),
        "rtmr_1": body.rtmrs[1].hex(),
        "rtmr_2": body.rtmrs[2].hex(),
        "rtmr_3": body.rtmrs[3].hex(),
        "report_data": body.report_data.hex(),
    }
    if isinstance(body, TdReport15):
        out["tee_tcb_svn2"] = body.tee_tcb_svn2.hex()
        out["mr_servicetd"] = body.mr_servicetd.hex()
    return out


def td_attributes_claims(body: TdReport10) -> dict[str, bool]:
    """TD_ATTRIBUTES flags by Trustee's names."""
    return {
        "debug": body.debug,
        "key_locker": body.key_locker,
        "perfmon": body.perfmon,
        "protection_keys": body.protection_keys,
        "septve_disable": body.sept_ve_disable,
    }


def sgx_body_claims(body: SgxReportBody) -> dict[str, str]:
    """An SGX report body with Trustee's ``body`` names."""
    return {
        "cpu_svn": body.cpu_svn.hex(),
        "misc_select": body.misc_select.to_bytes(4, "little").hex(),
        "reserved1": body.reserved1.hex(),
        "isv_ext_prod_id": body.isv_ext_prod_id.hex(),
        "attributes.flags": body.attributes[:8].hex(),
        "attributes.xfrm": body.attributes[8:].hex(),
        "mr_enclave": body.mr_enclave.hex(),
        "reserved2": body.reserved2.hex(),
        "mr_signer": body.mr_signer.hex(),
        "reserved3": body.reserved3.hex(),
        "config_id": body.config_id.hex(),
        "isv_prod_id": _u16(body.isv_prod_id),
        "isv_svn": _u16(body.isv_svn),
        "config_svn": _u16(body.config_svn),
        "reserved4": body.reserved4.hex(),
        "isv_family_id": body.isv_family_id.hex(),
        "report_data": body.report_data.hex(),
    }


def _tdx_header(h: QuoteHeader) -> dict[str, str]:
    return {
        "version": _u16(h.version),
        "att_key_type": _u16(h.att_key_type),
        "tee_type": h.tee_type.to_bytes(4, "little").hex(),
        "reserved": h.reserved.hex(),
        "vendor_id": h.qe_vendor_id.hex(),
        "user_data": h.user_data.hex(),
    }


def _sgx_header(h: QuoteHeader) -> dict[str, str]:
    return {
        "version": _u16(h.version),
        "att_key_type": _u16(h.att_key_type),
        "att_key_data_0": h.tee_type.to_bytes(4, "little").hex(),
        "qe_svn": _u16(h.qe_svn),
        "pce_svn": _u16(h.pce_svn),
        "vendor_id": h.qe_vendor_id.hex(),
        "user_data": h.user_data.hex(),
    }


def quote_claims(quote: Quote, pck: PckExtensions | None = None) -> dict[str, Any]:
    """Trustee's parsed claims for a quote (TDX: ``quote.header/body``, ``td_attributes``; SGX:
    ``header``, ``body``), plus ``report_data``, ``init_data`` and ``platform_instance_id``.

    ``pck`` saves decoding the PCK leaf again when the caller already has its extensions.
    """
    if pck is None:
        pck = parse_pck_extensions(quote.pck_leaf)
    body = quote.body
    claims: dict[str, Any]
    if isinstance(body, TdReport10):
        inner: dict[str, Any] = {"header": _tdx_header(quote.header), "body": tdx_body_claims(body)}
        if quote.body_type is not None:
            inner["type"] = _u16(quote.body_type)
            inner["size"] = (len(quote.signed_region) - _V5_PREFIX).to_bytes(4, "little").hex()
        claims = {
            "quote": inner,
            "td_attributes": td_attributes_claims(body),
            "report_data": body.report_data.hex(),
            "init_data": body.mr_config_id.hex(),
        }
    else:
        claims = {
            "header": _sgx_header(quote.header),
            "body": sgx_body_claims(body),
            "report_data": body.report_data.hex(),
            "init_data": body.config_id.hex(),
        }
        if quote.body_type is not None:
            claims["type"] = _u16(quote.body_type)
            claims["size"] = (len(quote.signed_region) - _V5_PREFIX).to_bytes(4, "little").hex()
    if pck.platform_instance_id is not None:
        # Trustee reads the OCTET STRING as a little-endian GUID and prints it big-endian.
        claims["platform_instance_id"] = pck.platform_instance_id[::-1].hex()
    return claims

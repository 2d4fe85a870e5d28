"""The SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1), decoded strictly. Pure.

Layout: shared/spec/dcap.md §2.3 (Intel "SGX PCK Certificate and CRL Profile"). The extension
is a DER SEQUENCE of (OID, value) pairs; the TCB and Configuration values are themselves such
sequences. A small bounded DER reader decodes it: definite minimal lengths only, expected tags
only, no duplicate or unknown OIDs, no bytes left over — every refusal a
:class:`teegate.errors.ParseError` naming the OID concerned.
"""

from __future__ import annotations

import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cryptography import x509
from cryptography.x509.oid import NameOID

from teegate.dcap.collateral import CollateralKey
from teegate.errors import ParseError

if TYPE_CHECKING:
    from teegate.dcap.quote import Quote

__all__ = [
    "MAX_SGX_EXTENSION_BYTES",
    "SGX_EXTENSION_OID",
    "PckConfiguration",
    "PckExtensions",
    "PckTcb",
    "collateral_key",
    "encode_oid",
    "parse_pck_extensions",
    "parse_sgx_extension",
    "pck_ca_of",
]

SGX_EXTENSION_OID = "1.2.840.113741.1.13.1"
#: Upper bound on the DER of the SGX extension (real ones: ~550 bytes).
MAX_SGX_EXTENSION_BYTES = 4096

_BOOLEAN = 0x01
_INTEGER = 0x02
_OCTET_STRING = 0x04
_OID = 0x06
_ENUMERATED = 0x0A
_SEQUENCE = 0x30

_SGX_TYPES = {0: "Standard", 1: "Scalable", 2: "ScalableWithIntegrity"}


def encode_oid(dotted: str) -> bytes:
    """DER content octets of an OBJECT IDENTIFIER (base-128 arcs, first two arcs combined)."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            chunk.append(0x80 | (rest & 0x7F))
            rest >>= 7
        out += bytes(reversed(chunk))
    return bytes(out)


_KNOWN_OIDS: dict[bytes, str] = {
    encode_oid(o): o
    for o in (
        [f"{SGX_EXTENSION_OID}.{i}" for i in range(1, 8)]
        + [f"{SGX_EXTENSION_OID}.2.{i}" for i in range(1, 19)]
        + [f"{SGX_EXTENSION_OID}.7.{i}" for i in (1, 2, 3)]
    )
}


def _tcb_template() -> re.Pattern[bytes]:
    """The TCB SEQUENCE body as Intel writes it: its 18 (OID, value) pairs in order.

    A fast path only: a match is exactly what the generic walk accepts, with the same values
    (minimal non-negative INTEGERs: SVNs 0..255, PCESVN 0..32767; CPUSVN 16 bytes); anything
    else (another order, a longer PCESVN, any malformation) goes through the generic walk.
    Each INTEGER is matched in its one-byte form (group 2k) or its two-byte form (group 2k+1).
    """
    parts = []
    for i in range(1, 18):
        oid = encode_oid(f"{SGX_EXTENSION_OID}.2.{i}")
        head = bytes([_OID, len(oid)]) + oid
        one = re.escape(bytes([5 + len(oid)]) + head + b"\x02\x01") + b"([\x00-\x7f])"
        # Two content bytes: 0x00 then >= 0x80 (SVN 128..255), or for PCESVN 0x01..0x7f then any.
        second = b"(\x00[\x80-\xff])" if i <= 16 else b"(\x00[\x80-\xff]|[\x01-\x7f][\x00-\xff])"
        two = re.escape(bytes([6 + len(oid)]) + head + b"\x02\x02") + second
        parts.append(b"\x30(?:" + one + b"|" + two + b")")
    oid = encode_oid(f"{SGX_EXTENSION_OID}.2.18")
    parts.append(
        re.escape(bytes([_SEQUENCE, 20 + len(oid), _OID, len(oid)]) + oid + b"\x04\x10") + b"(.{16})"
    )
    return re.compile(b"".join(parts), re.DOTALL)


_TCB_TEMPLATE = _tcb_template()
_TOP_ALLOWED = frozenset(f"{SGX_EXTENSION_OID}.{i}" for i in range(1, 8))
_TOP_REQUIRED = frozenset(f"{SGX_EXTENSION_OID}.{i}" for i in range(1, 6))


@dataclass(frozen=True, slots=True)
class PckTcb:
    """The TCB the PCK certificate was issued for (``…13.1.2``)."""

    #: SGX TCB component SVNs 01..16 (``…13.1.2.1`` … ``.2.16``): what TCB level matching uses.
    sgx_components: tuple[int, ...]
    pcesvn: int
    cpusvn: bytes


@dataclass(frozen=True, slots=True)
class PckConfiguration:
    """Platform configuration (``…13.1.7``, Platform CA certificates only); None = absent."""

    dynamic_platform: bool | None
    cached_keys: bool | None
    smt_enabled: bool | None


@dataclass(frozen=True, slots=True)
class PckExtensions:
    """Decoded SGX extension of a PCK certificate."""

    ppid: bytes
    tcb: PckTcb
    pce_id: bytes
    fmspc: bytes
    #: 0 Standard, 1 Scalable, 2 Scalable with integrity.
    sgx_type: int
    platform_instance_id: bytes | None = None
    configuration: PckConfiguration | None = None

    @property
    def fmspc_hex(self) -> str:
        """FMSPC as 12 upper-case hex digits (how PCS and collateral name it)."""
        return self.fmspc.hex().upper()

    @property
    def pce_id_hex(self) -> str:
        """PCE-ID as 4 upper-case hex digits (as in TCB Info ``pceId``)."""
        return self.pce_id.hex().upper()

    @property
    def sgx_type_name(self) -> str:
        return _SGX_TYPES.get(self.sgx_type, f"Unknown({self.sgx_type})")


class _Der:
    """A strict reader over one DER buffer: definite, minimally encoded lengths only."""

    __slots__ = ("_data", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._what = what

    def fail(self, msg: str, offset: int) -> ParseError:
        return ParseError(self._what, msg, offset=offset)

    def tlv(self, offset: int, end: int) -> tuple[int, int, int]:
        """(tag, value start, value end) of the element at ``offset``, which must fit before ``end``."""
        data = self._data
        if offset + 2 > end:
            raise self.fail("truncated DER element", offset)
        tag = data[offset]
        if tag & 0x1F == 0x1F:
            raise self.fail(f"multi-byte DER tag 0x{tag:02x}", offset)
        first = data[offset + 1]
        pos = offset + 2
        if first < 0x80:
            length = first
        elif first == 0x80:
            raise self.fail("indefinite length (BER, not DER)", offset + 1)
        else:
            nbytes = first & 0x7F
            if nbytes > 2:
                raise self.fail(f"length of {nbytes} bytes", offset + 1)
            if pos + nbytes > end:
                raise self.fail("truncated DER length", offset + 1)
            length = int.from_bytes(data[pos : pos + nbytes], "big")
            if length < 0x80 or data[pos] == 0:
                raise self.fail("length not minimally encoded", offset + 1)
            pos += nbytes
        if pos + length > end:
            raise self.fail(f"DER element of {length} bytes runs past its container", offset)
        return tag, pos, pos + length

    def expect(self, offset: int, end: int, tag: int, name: str) -> tuple[int, int]:
        got, start, stop = self.tlv(offset, end)
        if got != tag:
            raise self.fail(f"{name}: expected DER tag 0x{tag:02x}, got 0x{got:02x}", offset)
        return start, stop

    def oid(self, start: int, end: int) -> str:
        data = self._data
        if start == end:
            raise self.fail("empty OBJECT IDENTIFIER", start)
        arcs: list[int] = []
        value = 0
        fresh = True
        for i in range(start, end):
            b = data[i]
            if fresh and b == 0x80:
                raise self.fail("OBJECT IDENTIFIER arc not minimally encoded", i)
            value = (value << 7) | (b & 0x7F)
            fresh = not b & 0x80
            if fresh:
                arcs.append(value)
                value = 0
            elif value.bit_length() > 64:
                raise self.fail("OBJECT IDENTIFIER arc too large", i)
        if not fresh:
            raise self.fail("truncated OBJECT IDENTIFIER", end)
        first = arcs[0]
        head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
        return ".".join(str(a) for a in head + arcs[1:])

    def raw(self, start: int, end: int) -> bytes:
        return self._data[start:end]

    def integer(self, start: int, end: int, name: str, maximum: int) -> int:
        data = self._data
        if start == end:
            raise self.fail(f"{name}: empty INTEGER", start)
        if data[start] & 0x80:
            raise self.fail(f"{name}: negative INTEGER", start)
        if end - start > 1 and data[start] == 0 and not data[start + 1] & 0x80:
            raise self.fail(f"{name}: INTEGER not minimally encoded", start)
        value = int.from_bytes(data[start:end], "big")
        if value > maximum:
            raise self.fail(f"{name}: {value} is more than {maximum}", start)
        return value

    def octets(self, start: int, end: int, name: str, size: int) -> bytes:
        if end - start != size:
            raise self.fail(f"{name}: OCTET STRING of {end - start} bytes, must be {size}", start)
        return self._data[start:end]

    def boolean(self, start: int, end: int, name: str) -> bool:
        if end - start != 1 or self._data[start] not in (0x00, 0xFF):
            raise self.fail(f"{name}: BOOLEAN must be one byte, 0x00 or 0xff", start)
        return self._data[start] == 0xFF


def _pairs(der: _Der, start: int, end: int, parent: str) -> dict[str, tuple[int, int, int, int]]:
    """Decode a SEQUENCE OF SEQUENCE { OID, value } body into oid -> (offset, tag, vstart, vend)."""
    out: dict[str, tuple[int, int, int, int]] = {}
    offset = start
    while offset < end:
        tag, vs, ve = der.tlv(offset, end)
        if tag != _SEQUENCE:
            raise der.fail(f"{parent}: entry must be a SEQUENCE, got tag 0x{tag:02x}", offset)
        if vs == ve:
            raise der.fail(f"{parent}: entry must hold (OID, value), is empty", offset)
        o_off = vs
        o_tag, o_vs, o_ve = der.tlv(o_off, ve)
        if o_tag != _OID:
            raise der.fail(f"{parent}: entry must start with an OID", o_off)
        if o_ve == ve:
            raise der.fail(f"{parent}: entry must hold (OID, value), has no value", offset)
        v_tag, v_vs, v_ve = der.tlv(o_ve, ve)
        if v_ve != ve:
            raise der.fail(f"{parent}: entry must hold (OID, value), holds more", v_ve)
        value = (o_ve, v_tag, v_vs, v_ve)
        offset = ve
        # Known OIDs are matched by their encoding (fast path); others are decoded for the error.
        oid = _KNOWN_OIDS.get(der.raw(o_vs, o_ve)) or der.oid(o_vs, o_ve)
        if oid in out:
            raise ParseError(oid, f"appears twice in {parent}", offset=o_off)
        out[oid] = value
    return out


def _only(
    found: dict[str, tuple[int, int, int, int]],
    allowed: AbstractSet[str],
    required: AbstractSet[str],
    parent: str,
) -> None:
    for oid, (offset, *_rest) in found.items():
        if oid not in allowed:
            raise ParseError(oid, f"unknown OID in {parent}", offset=offset)
    for oid in sorted(required - found.keys(), key=lambda o: [int(a) for a in o.split(".")]):
        raise ParseError(oid, f"missing from {parent}")


def _value(der: _Der, item: tuple[int, int, int, int], tag: int, oid: str) -> tuple[int, int]:
    offset, got, vs, ve = item
    if got != tag:
        raise ParseError(oid, f"expected DER tag 0x{tag:02x}, got 0x{got:02x}", offset=offset)
    return vs, ve


def parse_sgx_extension(der_bytes: bytes) -> PckExtensions:
    """Decode the DER value of the SGX extension (OID 1.2.840.113741.1.13.1)."""
    root = SGX_EXTENSION_OID
    if len(der_bytes) > MAX_SGX_EXTENSION_BYTES:
        raise ParseError(root, f"{len(der_bytes)} bytes, more than {MAX_SGX_EXTENSION_BYTES}")
    data = bytes(der_bytes)
    der = _Der(data, root)
    start, end = der.expect(0, len(der_bytes), _SEQUENCE, "extension")
    if end != len(der_bytes):
        raise der.fail(f"{len(der_bytes) - end} bytes after the extension's SEQUENCE", end)
    top = _pairs(der, start, end, root)
    p = root + "."
    _only(top, _TOP_ALLOWED, _TOP_REQUIRED, root)

    vs, ve = _value(der, top[p + "1"], _OCTET_STRING, p + "1")
    ppid = der.octets(vs, ve, p + "1 (PPID)", 16)

    tcb_oid = p + "2"
    vs, ve = _value(der, top[tcb_oid], _SEQUENCE, tcb_oid)
    fast = _TCB_TEMPLATE.fullmatch(data, vs, ve)
    if fast is not None:
        values = fast.groups()
        ints = [int.from_bytes(value, "big") for value in values[:34] if value is not None]
        svns, pcesvn, cpusvn = ints[:16], ints[16], values[34]
    else:
        svns, pcesvn, cpusvn = _tcb_generic(der, vs, ve, tcb_oid)

    vs, ve = _value(der, top[p + "3"], _OCTET_STRING, p + "3")
    pce_id = der.octets(vs, ve, p + "3 (PCE-ID)", 2)
    vs, ve = _value(der, top[p + "4"], _OCTET_STRING, p + "4")
    fmspc = der.octets(vs, ve, p + "4 (FMSPC)", 6)
    vs, ve = _value(der, top[p + "5"], _ENUMERATED, p + "5")
    sgx_type = der.integer(vs, ve, p + "5 (SGX type)", 0xFF)
    if sgx_type not in _SGX_TYPES:
        raise ParseError(p + "5", f"unknown SGX type {sgx_type} (0, 1, 2)", offset=vs)

    piid = None
    if p + "6" in top:
        vs, ve = _value(der, top[p + "6"], _OCTET_STRING, p + "6")
        piid = der.octets(vs, ve, p + "6 (PlatformInstanceID)", 16)
    config = None
    if p + "7" in top:
        cfg_oid = p + "7"
        vs, ve = _value(der, top[cfg_oid], _SEQUENCE, cfg_oid)
        cfg = _pairs(der, vs, ve, cfg_oid)
        names = [f"{cfg_oid}.{i}" for i in (1, 2, 3)]
        _only(cfg, set(names), set(), cfg_oid)
        flags: list[bool | None] = []
        for oid in names:
            if oid in cfg:
                bs, be = _value(der, cfg[oid], _BOOLEAN, oid)
                flags.append(der.boolean(bs, be, oid))
            else:
                flags.append(None)
        config = PckConfiguration(flags[0], flags[1], flags[2])

    return PckExtensions(
        ppid=ppid,
        tcb=PckTcb(tuple(svns), pcesvn, cpusvn),
        pce_id=pce_id,
        fmspc=fmspc,
        sgx_type=sgx_type,
        platform_instance_id=piid,
        configuration=config,
    )


def _tcb_generic(der: _Der, vs: int, ve: int, tcb_oid: str) -> tuple[list[int], int, bytes]:
    """The TCB SEQUENCE body by the generic strict walk: (16 SVNs, PCESVN, CPUSVN)."""
    tcb = _pairs(der, vs, ve, tcb_oid)
    comp = [f"{tcb_oid}.{i}" for i in range(1, 19)]
    _only(tcb, set(comp), set(comp), tcb_oid)
    svns = []
    for oid in comp[:16]:
        cs, ce = _value(der, tcb[oid], _INTEGER, oid)
        svns.append(der.integer(cs, ce, oid, 0xFF))
    cs, ce = _value(der, tcb[comp[16]], _INTEGER, comp[16])
    pcesvn = der.integer(cs, ce, comp[16] + " (PCESVN)", 0xFFFF)
    cs, ce = _value(der, tcb[comp[17]], _OCTET_STRING, comp[17])
    cpusvn = der.octets(cs, ce, comp[17] + " (CPUSVN)", 16)
    return svns, pcesvn, cpusvn


def parse_pck_extensions(cert: x509.Certificate) -> PckExtensions:
    """Decode the SGX extension of a PCK leaf certificate; ParseError if absent or malformed."""
    try:
        ext = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID))
    except x509.ExtensionNotFound:
        raise ParseError(SGX_EXTENSION_OID, "the certificate has no SGX extension") from None
    except ValueError as exc:  # duplicate or malformed extensions in the certificate
        raise ParseError(SGX_EXTENSION_OID, f"certificate extensions unreadable: {exc}") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):
        raise ParseError(SGX_EXTENSION_OID, "unexpected extension type")
    return parse_sgx_extension(value.value)


_CN_OID_DER = b"\x06\x03\x55\x04\x03"
#: Name string types decoded on the raw fast path (UTF8String, PrintableString); others use Name.
_RAW_STRING_CODECS = {0x0C: "utf-8", 0x13: "ascii"}


def _raw_common_names(name_der: bytes) -> list[str] | None:
    """The CN values of a DER Name, or None when it is not the plain shape this fast path reads.

    Strict: one SEQUENCE OF SET OF SEQUENCE {OID, value}, nothing left over; only UTF8String
    and PrintableString values are decoded here (anything else: None, the caller uses Name).
    """
    der = _Der(name_der, "pck_leaf.issuer")
    try:
        start, end = der.expect(0, len(name_der), _SEQUENCE, "Name")
        if end != len(name_der):
            return None
        names: list[str] = []
        rdn = start
        while rdn < end:
            set_start, set_end = der.expect(rdn, end, 0x31, "RelativeDistinguishedName")
            atv = set_start
            if atv == set_end:
                return None
            while atv < set_end:
                seq_start, seq_end = der.expect(atv, set_end, _SEQUENCE, "AttributeTypeAndValue")
                _oid_start, oid_end = der.expect(seq_start, seq_end, _OID, "AttributeType")
                tag, value_start, value_end = der.tlv(oid_end, seq_end)
                if value_end != seq_end:
                    return None
                if name_der[seq_start:oid_end] == _CN_OID_DER:
                    codec = _RAW_STRING_CODECS.get(tag)
                    if codec is None:
                        return None
                    names.append(name_der[value_start:value_end].decode(codec))
                atv = seq_end
            rdn = set_end
    except (ParseError, UnicodeDecodeError):
        return None
    return names


def pck_ca_of(cert: x509.Certificate, *, issuer_der: bytes | None = None) -> Literal["platform", "processor"]:
    """Which PCK CA issued ``cert``, from its issuer CN ("… PCK Platform CA" / "… PCK Processor CA").

    ``issuer_der`` (the issuer Name's DER as in the certificate) lets plain names be read
    without building Name objects; unusual encodings fall back to the Name path.
    """
    names_raw = _raw_common_names(issuer_der) if issuer_der is not None else None
    if names_raw is not None:
        return _ca_from_common_names(names_raw)
    try:
        names = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    except ValueError as exc:
        raise ParseError("pck_leaf.issuer", f"unreadable issuer name: {exc}") from None
    values = [n.value if isinstance(n.value, str) else n.value.decode("utf-8", "replace") for n in names]
    return _ca_from_common_names(values)


def _ca_from_common_names(names: list[str]) -> Literal["platform", "processor"]:
    if len(names) != 1:
        raise ParseError("pck_leaf.issuer", f"{len(names)} common names, expected 1")
    cn = names[0]
    if cn.endswith("PCK Platform CA"):
        return "platform"
    if cn.endswith("PCK Processor CA"):
        return "processor"
    raise ParseError("pck_leaf.issuer", f"issuer {cn!r} is neither a PCK Platform CA nor a PCK Processor CA")


def collateral_key(quote: Quote) -> CollateralKey:
    """The key collateral is fetched and cached by: TEE type, the PCK leaf's FMSPC and issuing CA."""
    leaf = quote.pck_leaf
    return CollateralKey(tee=quote.tee, fmspc=parse_pck_extensions(leaf).fmspc_hex, ca=pck_ca_of(leaf))

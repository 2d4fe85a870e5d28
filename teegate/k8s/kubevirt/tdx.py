"""Make a libvirt domain a TDX guest by editing its XML text at four points only.

``<launchSecurity type='tdx'>`` goes before ``</domain>``; the TDX firmware ``<loader>``
replaces the existing one (or goes before ``</os>``); a ``<nvram>`` is removed because TDX
firmware is a stateless ROM; ``<pmu state='off'/>`` joins ``<features>`` (as KubeVirt does).
Every other byte is left as it was: the text is never re-serialized, and the result is
re-parsed to prove it is well-formed and says what we meant. SMM or an enabled PMU is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from teegate.errors import ConfigError, EvidenceError

__all__ = [
    "ANNOTATION_PREFIX",
    "DEFAULT_POLICY",
    "MAX_DOMAIN_XML",
    "MAX_VMI_JSON",
    "QGS_ANNOTATION",
    "DomainError",
    "TdxSettings",
    "settings_for_vmi",
    "with_tdx",
]

#: QEMU's default TD attributes: SEPT_VE_DISABLE (bit 28); bit 0 would be DEBUG.
DEFAULT_POLICY = 0x10000000
_DEBUG_BIT = 1
MAX_DOMAIN_XML = 4 * 1024 * 1024
MAX_VMI_JSON = 2 * 1024 * 1024
_MR_BYTES = 48
QGS_ANNOTATION = "kubevirt.io/qgs-socket-path"
ANNOTATION_PREFIX = "tdx.teegate.io/"


class DomainError(EvidenceError):
    """The domain XML or VMI cannot be made a TDX guest as given."""


def _mr(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{name}: not base64 ({exc})") from exc
    if len(raw) != _MR_BYTES:
        raise ConfigError(f"{name}: {len(raw)} bytes, a SHA-384 value is {_MR_BYTES}")
    return value


@dataclass(frozen=True)
class TdxSettings:
    """What goes into ``<launchSecurity type='tdx'>`` and which firmware boots the TD."""

    policy: int = DEFAULT_POLICY
    mr_config_id: str | None = None
    mr_owner: str | None = None
    mr_owner_config: str | None = None
    qgs_socket: str | None = "/var/run/tdx-qgs/qgs.socket"
    firmware: str = "/usr/share/OVMF/OVMF.inteltdx.fd"
    allow_debug: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.policy < 1 << 64:
            raise ConfigError(f"policy {self.policy:#x}: not a 64-bit value")
        if self.policy & _DEBUG_BIT and not self.allow_debug:
            raise ConfigError(
                "policy sets the DEBUG bit: the host could read the TD; refused unless allow_debug"
            )
        _mr("mrConfigId", self.mr_config_id)
        _mr("mrOwner", self.mr_owner)
        _mr("mrOwnerConfig", self.mr_owner_config)
        for name, path in (("qgs_socket", self.qgs_socket), ("firmware", self.firmware)):
            if path is not None and (not posixpath.isabs(path) or any(c in path for c in "<>&'\"\n")):
                raise ConfigError(f"{name} {path!r}: must be an absolute path without XML metacharacters")

    def launch_security(self, indent: str, unit: str) -> str:
        inner = [f"<policy>0x{self.policy:08x}</policy>"]
        for tag, value in (
            ("mrConfigId", self.mr_config_id),
            ("mrOwner", self.mr_owner),
            ("mrOwnerConfig", self.mr_owner_config),
        ):
            if value is not None:
                inner.append(f"<{tag}>{escape(value)}</{tag}>")
        if self.qgs_socket is not None:
            inner.append(f"<quoteGenerationService path={quoteattr(self.qgs_socket)}/>")
        body = "".join(f"\n{indent}{unit}{line}" for line in inner)
        return f"<launchSecurity type='tdx'>{body}\n{indent}</launchSecurity>"

    def loader(self) -> str:
        return f"<loader type='rom' stateless='yes'>{escape(self.firmware)}</loader>"


def settings_for_vmi(base: TdxSettings, vmi: Mapping[str, Any]) -> TdxSettings:
    """Apply the VMI's annotations (``tdx.teegate.io/*``, KubeVirt's QGS path) over ``base``."""
    meta = vmi.get("metadata") or {}
    ann = meta.get("annotations") or {}
    if not isinstance(ann, dict):
        raise DomainError("vmi.metadata.annotations: not an object")
    changes: dict[str, Any] = {}
    for key in (
        QGS_ANNOTATION,
        *(ANNOTATION_PREFIX + k for k in ("policy", "mr-config-id", "mr-owner", "mr-owner-config")),
    ):
        if key in ann and not isinstance(ann[key], str):
            raise DomainError(f"VMI annotation {key}: not a string")
    if QGS_ANNOTATION in ann:
        changes["qgs_socket"] = ann[QGS_ANNOTATION]
    if ANNOTATION_PREFIX + "policy" in ann:
        text = str(ann[ANNOTATION_PREFIX + "policy"])
        try:
            changes["policy"] = int(text, 16 if text.lower().startswith("0x") else 10)
        except ValueError as exc:
            raise DomainError(f"{ANNOTATION_PREFIX}policy {text!r}: not an integer") from exc
    for key, attr in (
        ("mr-config-id", "mr_config_id"),
        ("mr-owner", "mr_owner"),
        ("mr-owner-config", "mr_owner_config"),
    ):
        if ANNOTATION_PREFIX + key in ann:
            changes[attr] = ann[ANNOTATION_PREFIX + key]
    try:
        return replace(base, **changes)
    except ConfigError as exc:  # annotation values are the VMI author's input
        raise DomainError(f"VMI annotation: {exc}") from exc


def parse_vmi(data: bytes) -> dict[str, Any]:
    """The VMI JSON virt-launcher passes (empty means no VMI)."""
    if len(data) > MAX_VMI_JSON:
        raise DomainError(f"VMI JSON of {len(data)} bytes exceeds {MAX_VMI_JSON}")
    if not data.strip():
        return {}
    try:
        vmi = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise DomainError(f"VMI is not JSON: {exc}") from exc
    if not isinstance(vmi, dict):
        raise DomainError("VMI JSON is not an object")
    return vmi


_OPEN_DOMAIN = re.compile(r"<domain\b[^>]*>")
_CLOSE_DOMAIN = re.compile(r"([ \t]*)</domain>\s*\Z")
_OS = re.compile(r"<os\b[^>]*>(.*?)</os>", re.DOTALL)
_LOADER = re.compile(r"<loader\b[^>]*?(?:/>|>.*?</loader>)", re.DOTALL)
_NVRAM = re.compile(r"\n[ \t]*<nvram\b[^>]*?(?:/>|>.*?</nvram>)|<nvram\b[^>]*?(?:/>|>.*?</nvram>)", re.DOTALL)
_CHILD_INDENT = re.compile(r"\n([ \t]*)<")


def _parse(text: str, what: str) -> ET.Element:
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise DomainError(f"{what}: DTDs and entities are not accepted")
    try:
        return ET.fromstring(text)  # noqa: S314 -- DTD/entities refused above
    except ET.ParseError as exc:
        raise DomainError(f"{what}: not well-formed XML: {exc}") from exc


def _insert_before_close(text: str, close_at: int, indent: str, element: str) -> str:
    """Insert ``element`` as the last child of the element whose closing tag starts at ``close_at``."""
    line_start = close_at
    while line_start > 0 and text[line_start - 1] in " \t":
        line_start -= 1
    if line_start > 0 and text[line_start - 1] == "\n":
        # Pretty-printed: a line of its own, indented like its siblings.
        return text[:line_start] + f"{indent}{element}\n" + text[line_start:]
    return text[:close_at] + element + text[close_at:]


_FEATURES = re.compile(r"<features\b[^>]*?(?:/>|>(.*?)</features>)", re.DOTALL)
_PMU_OFF = "<pmu state='off'/>"


def _pmu_off(text: str, child_indent: str, unit: str) -> str:
    """Add ``<pmu state='off'/>`` to ``<features>`` (KubeVirt does the same for TDX guests)."""
    match = _FEATURES.search(text)
    if match is None:
        closed = _CLOSE_DOMAIN.search(text)
        if closed is None:
            raise DomainError("could not locate </domain>")
        nl = "\n" if "\n" in text else ""
        block = f"<features>{nl}{child_indent}{unit if nl else ''}{_PMU_OFF}{nl}{child_indent}</features>"
        return _insert_before_close(text, closed.start() + len(closed.group(1)), child_indent, block)
    if match.group(1) is None:  # <features/>
        return text[: match.start()] + f"<features>{_PMU_OFF}</features>" + text[match.end() :]
    start, end = match.span(1)
    body = _insert_before_close(match.group(1), len(match.group(1)), child_indent + unit, _PMU_OFF)
    return text[:start] + body + text[end:]


def with_tdx(domain_xml: str, settings: TdxSettings) -> str:
    """``domain_xml`` with TDX launch security and firmware; unchanged if already TDX."""
    if len(domain_xml.encode()) > MAX_DOMAIN_XML:
        raise DomainError(f"domain XML exceeds {MAX_DOMAIN_XML} bytes")
    root = _parse(domain_xml, "domain XML")
    if root.tag != "domain":
        raise DomainError(f"root element is <{root.tag}>, expected <domain>")
    existing = root.findall("launchSecurity")
    if existing:
        if len(existing) == 1 and existing[0].get("type") == "tdx":
            return domain_xml
        raise DomainError(f"domain already has launchSecurity type={existing[0].get('type')!r}")
    if len(root.findall("os")) != 1 or len(root.findall("features")) > 1:
        raise DomainError("domain must have exactly one <os> and at most one <features> element")
    smm = root.find("features/smm")
    if smm is not None and smm.get("state", "on") != "off":
        raise DomainError(
            "SMM is on; TDX guests cannot use SMM (set spec.domain.features.smm.enabled: false)"
        )
    pmu = root.find("features/pmu")
    if pmu is not None and pmu.get("state", "on") != "off":
        raise DomainError("the PMU is on; TDX guests run with <pmu state='off'/> (remove the pmu feature)")

    opened = _OPEN_DOMAIN.search(domain_xml)
    closed = _CLOSE_DOMAIN.search(domain_xml)
    os_match = _OS.search(domain_xml)
    if opened is None or closed is None or os_match is None:
        raise DomainError("could not locate <domain>, </domain> or <os>…</os> in the text")
    child = _CHILD_INDENT.search(domain_xml, opened.end())
    child_indent = child.group(1) if child else ""
    close_indent = closed.group(1)
    unit = child_indent[len(close_indent) :] if child_indent.startswith(close_indent) else "  "
    unit = unit or "  "

    # <os>: drop <nvram>, replace or add <loader> (edits inside the os element only).
    os_body = os_match.group(1)
    os_body = _NVRAM.sub("", os_body)
    loader_match = _LOADER.search(os_body)
    if loader_match:
        os_body = os_body[: loader_match.start()] + settings.loader() + os_body[loader_match.end() :]
    else:
        os_body = _insert_before_close(os_body, len(os_body), child_indent + unit, settings.loader())
    start, end = os_match.span(1)
    text = domain_xml[:start] + os_body + domain_xml[end:]

    if pmu is None:
        text = _pmu_off(text, child_indent, unit)

    closed = _CLOSE_DOMAIN.search(text)
    if closed is None:
        raise DomainError("could not locate </domain> after editing <os>")
    block = settings.launch_security(child_indent, unit)
    text = _insert_before_close(text, closed.start() + len(closed.group(1)), child_indent, block)

    result = _parse(text, "rewritten domain XML")
    sec = result.findall("launchSecurity")
    loaders = result.findall("os/loader")
    if (
        len(sec) != 1
        or sec[0].get("type") != "tdx"
        or len(loaders) != 1
        or loaders[0].text != settings.firmware
        or result.find("features/pmu") is None
    ):
        raise DomainError("domain XML layout not understood (comments or CDATA around <os>/<domain>?)")
    return text

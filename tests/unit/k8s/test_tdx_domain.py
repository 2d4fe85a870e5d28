"""Pure TDX domain edits and their refusals."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from teegate.errors import ConfigError
from teegate.k8s.kubevirt.tdx import DomainError, TdxSettings, parse_vmi, settings_for_vmi, with_tdx

MR = "ERERERERERERERERERERERERERERERERERERERERERERERERERERERERERERERER"


def test_single_line_domain_and_self_closing_loader() -> None:
    dom = "<domain type='kvm'><os><type>hvm</type><loader type='pflash'/><nvram/></os></domain>"
    out = with_tdx(dom, TdxSettings(qgs_socket=None))
    assert out == (
        "<domain type='kvm'><os><type>hvm</type><loader type='rom' stateless='yes'>"
        "/usr/share/OVMF/OVMF.inteltdx.fd</loader></os><features><pmu state='off'/></features>"
        "<launchSecurity type='tdx'>\n"
        "  <policy>0x10000000</policy>\n</launchSecurity></domain>"
    )


@pytest.mark.parametrize(
    ("xml", "needle"),
    [
        ("<domain><name>x</name></domain>", "exactly one <os>"),
        ("<domain><os/><features><smm state='on'/></features></domain>", "SMM"),
        ("<domain><os/><features><pmu/></features></domain>", "PMU"),
        ("<vm><os/></vm>", "expected <domain>"),
        ("<!DOCTYPE d [<!ENTITY e 'x'>]><domain><os/></domain>", "DTD"),
        ("<domain><os><type>hvm</type></os><launchSecurity type='sev-snp'/></domain>", "sev-snp"),
    ],
)
def test_refused_domains(xml: str, needle: str) -> None:
    with pytest.raises(DomainError, match=needle):
        with_tdx(xml, TdxSettings())


def test_settings_validation_and_vmi_overrides() -> None:
    with pytest.raises(ConfigError, match="DEBUG"):
        TdxSettings(policy=0x10000001)
    assert TdxSettings(policy=0x10000001, allow_debug=True).policy & 1
    with pytest.raises(ConfigError, match="48"):
        TdxSettings(mr_owner="AAAA")
    with pytest.raises(ConfigError, match="absolute"):
        TdxSettings(qgs_socket="qgs.sock")
    vmi = {
        "metadata": {
            "annotations": {
                "tdx.teegate.io/policy": "0x0",
                "tdx.teegate.io/mr-owner": MR,
                "kubevirt.io/qgs-socket-path": "/run/qgs/q.sock",
            }
        }
    }
    s = settings_for_vmi(TdxSettings(), vmi)
    assert (s.policy, s.mr_owner, s.qgs_socket) == (0, MR, "/run/qgs/q.sock")
    with pytest.raises(DomainError, match="not an integer"):
        settings_for_vmi(TdxSettings(), {"metadata": {"annotations": {"tdx.teegate.io/policy": "zz"}}})
    with pytest.raises(DomainError, match="VMI annotation"):
        settings_for_vmi(TdxSettings(), {"metadata": {"annotations": {"tdx.teegate.io/mr-owner": "AA=="}}})
    assert parse_vmi(b"") == {}
    with pytest.raises(DomainError):
        parse_vmi(b"[1]")


_names = st.sampled_from(
    ["name", "memory", "vcpu", "devices", "clock", "features", "cpu", "resource", "sysinfo"]
)
_text = st.text(alphabet="abcXYZ0123 -_/.:", max_size=20)
_indent = st.sampled_from(["", "  ", "    ", "\t"])


@st.composite
def _domains(draw: st.DrawFn) -> str:
    ind = draw(_indent)
    nl = "\n" if ind or draw(st.booleans()) else ""
    children = []
    for tag in draw(st.lists(_names, max_size=6, unique=True)):
        attr = draw(st.sampled_from(["", ' a="1"', " b='x y'"]))
        children.append(f"{nl}{ind}<{tag}{attr}>{escape(draw(_text))}</{tag}>")
    os_children = f'{nl}{ind}{ind}<type arch="x86_64">hvm</type>'
    if draw(st.booleans()):
        os_children += f'{nl}{ind}{ind}<loader readonly="yes" type="pflash">/x/CODE.fd</loader>'
    if draw(st.booleans()):
        os_children += f'{nl}{ind}{ind}<nvram template="/x/VARS.fd">/var/nv.fd</nvram>'
    pos = draw(st.integers(0, len(children)))
    children.insert(pos, f"{nl}{ind}<os>{os_children}{nl}{ind}</os>")
    return f'<domain type="kvm">{"".join(children)}{nl}</domain>{nl}'


def _strip(text: str) -> str:
    nl = r"(?:\n[ \t]*)?"
    text = re.sub(nl + r"<launchSecurity type='tdx'>.*?</launchSecurity>", "", text, flags=re.DOTALL)
    text = re.sub(nl + r"<loader\b[^>]*>[^<]*</loader>", "", text)
    text = re.sub(nl + r"<nvram\b[^>]*>[^<]*</nvram>", "", text)
    text = re.sub(nl + r"<pmu state='off'/>", "", text)
    return re.sub(nl + r"<features>(?:\n[ \t]*)?</features>", "", text)


@settings(max_examples=150, deadline=None)
@given(_domains())
def test_everything_but_the_edit_points_is_byte_identical(domain: str) -> None:
    out = with_tdx(domain, TdxSettings(mr_config_id=MR))
    root = ET.fromstring(out)
    assert root.find("launchSecurity/mrConfigId").text == MR  # type: ignore[union-attr]
    assert len(root.findall("os/loader")) == 1 and root.find("os/nvram") is None
    assert root.find("features/pmu").get("state") == "off"  # type: ignore[union-attr]
    assert _strip(out) == _strip(domain)
    assert with_tdx(out, TdxSettings()) == out

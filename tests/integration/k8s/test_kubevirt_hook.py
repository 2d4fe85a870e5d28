"""The KubeVirt hook sidecar over gRPC on a unix socket, with real domain XML in and out."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import grpc
import pytest

from teegate.k8s.kubevirt.hook import HookServer
from teegate.k8s.kubevirt.hooks.info import api_info_pb2, api_info_pb2_grpc
from teegate.k8s.kubevirt.hooks.v1alpha2 import api_v1alpha2_pb2, api_v1alpha2_pb2_grpc
from teegate.k8s.kubevirt.hooks.v1alpha3 import api_v1alpha3_pb2, api_v1alpha3_pb2_grpc
from teegate.k8s.kubevirt.tdx import TdxSettings

pytestmark = pytest.mark.integration

DATA = Path(__file__).resolve().parent / "data"
MR = "ERERERERERERERERERERERERERERERERERERERERERERERERERERERERERERERER"


def _strip_tdx_edits(text: str) -> str:
    """Remove what the hook may touch: the launchSecurity block, loader and nvram lines."""
    text = re.sub(r"\n[ \t]*<launchSecurity type='tdx'>.*?</launchSecurity>", "", text, flags=re.DOTALL)
    text = re.sub(r"\n[ \t]*<loader\b[^>]*>[^<]*</loader>", "", text)
    text = re.sub(r"\n[ \t]*<nvram\b[^>]*>[^<]*</nvram>", "", text)
    return re.sub(r"\n[ \t]*<pmu state='off'/>", "", text)


def _check_domain(original: str, result: str, *, qgs: str = "/var/run/tdx-qgs/qgs.socket") -> None:
    root = ET.fromstring(result)
    sec = root.findall("launchSecurity")
    assert len(sec) == 1 and sec[0].get("type") == "tdx"
    assert sec[0].findtext("policy") == "0x10000000"
    assert sec[0].findtext("mrConfigId") == MR
    assert sec[0].find("mrOwner") is None
    qgs_el = sec[0].find("quoteGenerationService")
    assert qgs_el is not None and qgs_el.get("path") == qgs
    loader = root.find("os/loader")
    assert loader is not None
    assert (loader.get("type"), loader.get("stateless"), loader.text) == (
        "rom",
        "yes",
        "/usr/share/OVMF/OVMF.inteltdx.fd",
    )
    assert root.find("os/nvram") is None
    pmu = root.find("features/pmu")
    assert pmu is not None and pmu.get("state") == "off"
    # Field by field, everything else is what it was.
    before = ET.fromstring(original)
    for path in ("name", "memory", "os/type", "os/smbios", "devices/disk/source", "cpu", "vcpu"):
        assert [ET.tostring(e) for e in before.findall(path)] == [ET.tostring(e) for e in root.findall(path)]
    assert [c.tag for c in root] == [c.tag for c in before] + ["launchSecurity"]
    # And byte for byte outside the three edit points.
    assert _strip_tdx_edits(result) == _strip_tdx_edits(original)


async def test_info_and_on_define_domain_both_versions(tmp_path: Path) -> None:
    import tempfile

    hooks_dir = Path(tempfile.mkdtemp(prefix="tg-hk-", dir="/tmp"))
    server = HookServer(TdxSettings(), hooks_dir)
    await server.start()
    domain = (DATA / "domain-efi.xml").read_text()
    vmi = (DATA / "vmi.json").read_bytes()
    try:
        async with grpc.aio.insecure_channel(f"unix://{server.socket_path}") as channel:
            info = await api_info_pb2_grpc.InfoStub(channel).Info(api_info_pb2.InfoParams())
            assert info.name == "teegate-tdx"
            assert list(info.versions) == ["v1alpha3", "v1alpha2"]
            assert [(h.name, h.priority) for h in info.hookPoints] == [("OnDefineDomain", 0)]

            v3 = api_v1alpha3_pb2_grpc.CallbacksStub(channel)
            out3 = await v3.OnDefineDomain(
                api_v1alpha3_pb2.OnDefineDomainParams(domainXML=domain.encode(), vmi=vmi)
            )
            _check_domain(domain, out3.domainXML.decode())

            v2 = api_v1alpha2_pb2_grpc.CallbacksStub(channel)
            out2 = await v2.OnDefineDomain(
                api_v1alpha2_pb2.OnDefineDomainParams(domainXML=domain.encode(), vmi=vmi)
            )
            assert out2.domainXML == out3.domainXML

            # Chained sidecars / a second call: already TDX → unchanged.
            again = await v3.OnDefineDomain(
                api_v1alpha3_pb2.OnDefineDomainParams(domainXML=out3.domainXML, vmi=vmi)
            )
            assert again.domainXML == out3.domainXML

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await v3.OnDefineDomain(
                    api_v1alpha3_pb2.OnDefineDomainParams(domainXML=b"<domain><os>", vmi=vmi)
                )
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            sev = domain.replace(
                "</domain>", "  <launchSecurity type='sev'><policy>0x1</policy></launchSecurity>\n</domain>"
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await v3.OnDefineDomain(
                    api_v1alpha3_pb2.OnDefineDomainParams(domainXML=sev.encode(), vmi=vmi)
                )
            assert "sev" in (err.value.details() or "")
            debug_vmi = vmi.replace(
                b'"annotations":{', b'"annotations":{"tdx.teegate.io/policy":"0x10000001",'
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await v3.OnDefineDomain(
                    api_v1alpha3_pb2.OnDefineDomainParams(domainXML=domain.encode(), vmi=debug_vmi)
                )
            assert "DEBUG" in (err.value.details() or "")

            cloud = await v3.PreCloudInitIso(
                api_v1alpha3_pb2.PreCloudInitIsoParams(cloudInitData=b"{}", vmi=vmi)
            )
            assert cloud.cloudInitData == b"{}"
            await v3.Shutdown(api_v1alpha3_pb2.ShutdownParams())
            assert server.shutdown_requested.is_set()
    finally:
        await server.stop()
        hooks_dir.rmdir()


def test_domain_without_loader_gets_one(tmp_path: Path) -> None:
    from teegate.k8s.kubevirt.tdx import with_tdx

    domain = '<domain type="kvm">\n  <name>x</name>\n  <os>\n    <type>hvm</type>\n  </os>\n</domain>\n'
    out = with_tdx(domain, TdxSettings(qgs_socket=None, mr_owner=MR))
    assert out == (
        '<domain type="kvm">\n  <name>x</name>\n  <os>\n    <type>hvm</type>\n'
        "    <loader type='rom' stateless='yes'>/usr/share/OVMF/OVMF.inteltdx.fd</loader>\n  </os>\n"
        "  <features>\n    <pmu state='off'/>\n  </features>\n"
        "  <launchSecurity type='tdx'>\n    <policy>0x10000000</policy>\n"
        f"    <mrOwner>{MR}</mrOwner>\n  </launchSecurity>\n</domain>\n"
    )

"""Small pure pieces: resource URIs, the CCEL trimmer, the tdx_guest ioctl, the clevis key, deploy scripts."""

from __future__ import annotations

import base64
import struct
import subprocess
from pathlib import Path

import pytest

from teegate.attester.cli import clevis_jwk
from teegate.attester.errors import EvidenceUnavailable
from teegate.attester.providers.eventlog import read_eventlog, trim_ccel
from teegate.attester.providers.tdx_guest import (
    TDX_CMD_GET_REPORT0,
    TdxGuestProvider,
    mr_config_id,
    read_tdreport,
)
from teegate.attester.uri import parse_resource
from teegate.errors import ConfigError

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_resource_forms() -> None:
    plain = parse_resource("default/kbsres1/key1")
    assert plain.path == "default/kbsres1/key1" and plain.kbs_host is None
    uri = parse_resource("kbs://kbs.example:8080/repo/type/tag?version=2")
    assert (uri.repository, uri.type, uri.tag, uri.kbs_host, uri.query) == (
        "repo",
        "type",
        "tag",
        "kbs.example:8080",
        "version=2",
    )
    assert parse_resource("kbs:///a/b/c.d").tag == "c.d"
    for bad in ("a/b", "a/b/c/d", "a/../c", "x://a/b/c", "a/b/" + "c" * 2000, "a/b c/d"):
        with pytest.raises(ConfigError):
            parse_resource(bad)


def test_ioctl_number_matches_linux() -> None:
    assert TDX_CMD_GET_REPORT0 == 0xC4405401  # _IOWR('T', 1, struct tdx_report_req)


def test_tdx_guest_on_a_non_device(tmp_path: Path) -> None:
    fake = tmp_path / "tdx_guest"
    fake.write_bytes(b"")
    with pytest.raises(EvidenceUnavailable, match=r"TDX_CMD_GET_REPORT0"):
        read_tdreport(bytes(48), fake)
    with pytest.raises(EvidenceUnavailable, match=r"does not exist"):
        TdxGuestProvider(tmp_path / "absent")


def test_mr_config_id_offset() -> None:
    report = bytearray(1024)
    report[576 : 576 + 48] = b"\x11" * 48
    assert mr_config_id(bytes(report)) == b"\x11" * 48


def test_ccel_without_terminator_is_refused(tmp_path: Path) -> None:
    header = struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", 0)
    with pytest.raises(EvidenceUnavailable, match=r"end marker"):
        trim_ccel(header + b"\x01" * 3)
    event = struct.pack("<IIIH", 1, 1, 1, 0x99) + bytes(4)
    with pytest.raises(EvidenceUnavailable, match=r"digest algorithm 0x99"):
        trim_ccel(header + event)


def test_aael_alone_gets_the_spec_id_header(tmp_path: Path) -> None:
    aael = tmp_path / "aael"
    aael.write_bytes(b"AAEL")
    log = base64.b64decode(read_eventlog(tmp_path / "no-ccel", aael) or "")
    assert len(log) == 69 + 4 + 8 and log.endswith(b"AAEL" + b"\xff" * 8)
    assert read_eventlog(tmp_path / "no-ccel", tmp_path / "no-aael") is None


def test_clevis_key_is_derived_not_the_resource() -> None:
    jwk = clevis_jwk(b"k" * 32)
    key = base64.urlsafe_b64decode(jwk["k"] + "=")
    assert len(key) == 32 and key != b"k" * 32 and jwk["kty"] == "oct"


@pytest.mark.parametrize(
    "script",
    sorted(
        str(p.relative_to(DEPLOY))
        for p in [*DEPLOY.glob("clevis/**/*"), *DEPLOY.glob("dracut/**/*"), *DEPLOY.glob("systemd/*")]
        if p.is_file() and p.suffix not in (".service", ".conf")
    ),
)
def test_deploy_scripts_parse(script: str) -> None:
    path = DEPLOY / script
    assert path.stat().st_mode & 0o111, f"{script} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_dracut_ships_the_same_unit() -> None:
    assert (DEPLOY / "dracut/90teegate/teegate-luks-key.service").read_text() == (
        DEPLOY / "systemd/teegate-luks-key.service"
    ).read_text()


def test_aesm_down_is_retryable(tmp_path: Path) -> None:
    from teegate.attester.providers.aesm import AesmProvider
    from teegate.sim import SimPlatform

    SimPlatform.create(tmp_path / "platform")
    provider = AesmProvider(tmp_path / "platform", tmp_path / "no-aesm.socket")
    with pytest.raises(EvidenceUnavailable, match=r"sgx-aesm: .*no-aesm.socket") as info:
        provider.evidence(bytes(48))
    assert info.value.retryable
    with pytest.raises(EvidenceUnavailable, match=r"needs --sim-platform"):
        AesmProvider(None)


def test_sim_provider_needs_a_platform(tmp_path: Path) -> None:
    from teegate.attester.providers import ProviderOptions, select_provider
    from teegate.attester.providers.sim import SimTdProvider

    with pytest.raises(EvidenceUnavailable, match=r"needs --sim-platform"):
        select_provider("sim", ProviderOptions())
    with pytest.raises(EvidenceUnavailable, match=r"cannot load the simulated platform"):
        SimTdProvider(tmp_path / "absent")

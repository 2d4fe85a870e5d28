"""A platform directory is shared by processes: same keys, same certificates; never overwritten."""

from __future__ import annotations

import hashlib
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from teegate.errors import ConfigError
from teegate.sim import SimPlatform

_PROBE = """
import sys, hashlib
from teegate.sim import SimPlatform
p = SimPlatform.load(sys.argv[1])
print(p.attestation_public_key.hex(), hashlib.sha256(p.root_ca_der).hexdigest(), p.qe_id.hex(), p.fmspc)
"""


def test_two_processes_load_identical_platform(tmp_path: Path) -> None:
    created = SimPlatform.create(tmp_path / "p", fmspc="30606a000000", tcb_status="outofdate")
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path / "p")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    assert out == [
        created.attestation_public_key.hex(),
        hashlib.sha256(created.root_ca_der).hexdigest(),
        created.qe_id.hex(),
        "30606A000000",
    ]
    loaded = SimPlatform.load(tmp_path / "p")
    assert loaded.tcb_status == "OutOfDate"
    assert loaded.pck_chain_pem == created.pck_chain_pem
    assert loaded.anchor() == created.anchor()


def test_key_files_are_private(platform_dir: Path) -> None:
    keys = sorted(platform_dir.glob("*.key.pem"))
    assert len(keys) == 5
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert not list(platform_dir.glob(".*"))  # no temp files left behind
    doc = json.loads((platform_dir / "platform.json").read_text())
    assert doc["simulated"] is True
    assert "PRIVATE" not in (platform_dir / "platform.json").read_text()


def test_create_refuses_to_overwrite(platform_dir: Path) -> None:
    before = (platform_dir / "platform.json").read_bytes()
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        SimPlatform.create(platform_dir)
    assert (platform_dir / "platform.json").read_bytes() == before


def test_bad_settings_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FMSPC"):
        SimPlatform.create(tmp_path / "a", fmspc="XYZ")
    with pytest.raises(ConfigError, match="TCB status"):
        SimPlatform.create(tmp_path / "b", tcb_status="Great")


def test_broken_directories_refused(tmp_path: Path, platform_dir: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        SimPlatform.load(tmp_path / "missing")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "platform.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a simulated platform"):
        SimPlatform.load(broken)
    # a key that does not belong to the certificate
    mixed = tmp_path / "mixed"
    SimPlatform.create(mixed)
    (mixed / "pck.key.pem").write_bytes((platform_dir / "pck.key.pem").read_bytes())
    with pytest.raises(ConfigError, match="does not match"):
        SimPlatform.load(mixed)
    (mixed / "pck.key.pem").write_text("garbage")
    with pytest.raises(ConfigError, match="PEM"):
        SimPlatform.load(mixed)


def test_create_on_a_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot create"):
        SimPlatform.create(tmp_path / "file")


def test_corrupt_certificate_is_a_config_error(tmp_path: Path, platform_dir: Path) -> None:
    import shutil

    d = tmp_path / "p"
    shutil.copytree(platform_dir, d)
    doc = json.loads((d / "platform.json").read_text())
    doc["certificates"]["pck"] = doc["certificates"]["pck"].replace("M", "A", 5)
    (d / "platform.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError):
        SimPlatform.load(d)


@pytest.mark.parametrize(
    ("member", "value", "message"),
    [
        ("pce_svn", 70000, "pce_svn"),
        ("qe_id", "00", "qe_id"),
        ("sgx_tcb_components", [1] * 15, "sgx_tcb_components"),
        ("mr_seam", "zz", "not a simulated platform"),
    ],
)
def test_out_of_range_values_refused(
    tmp_path: Path, platform_dir: Path, member: str, value: object, message: str
) -> None:
    import shutil

    d = tmp_path / "p"
    shutil.copytree(platform_dir, d)
    doc = json.loads((d / "platform.json").read_text())
    doc[member] = value
    (d / "platform.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=message):
        SimPlatform.load(d)

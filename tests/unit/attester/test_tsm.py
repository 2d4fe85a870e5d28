"""configfs-tsm provider against a tree that behaves like the kernel's, success and every error path."""

from __future__ import annotations

import base64
import errno
import struct
from pathlib import Path

import pytest

from teegate.attester.errors import EvidenceUnavailable
from teegate.attester.providers import ProviderOptions, select_provider
from teegate.attester.providers.tsm import TsmProvider
from tests.unit.attester.fake_tsm import FakeTsm

pytestmark = pytest.mark.timeout(20)

DIGEST = bytes(range(48))


def _provider(fake: FakeTsm, tmp_path: Path, **kw: object) -> TsmProvider:
    return TsmProvider(
        fake.root, ops=fake.ops, ccel_path=tmp_path / "no-ccel", aael_path=tmp_path / "no-aael", **kw
    )  # type: ignore[arg-type]


def test_success_writes_padded_inblob_and_cleans_up(tmp_path: Path) -> None:
    fake = FakeTsm(tmp_path / "tsm")
    provider = _provider(fake, tmp_path)
    assert provider.tee == "tdx" and provider.provider == "tdx_guest"
    evidence = provider.evidence(DIGEST)
    fake.join()
    assert base64.b64decode(evidence["quote"]) == b"QUOTE:" + DIGEST + bytes(16)
    assert evidence["cc_eventlog"] is None
    assert fake.inblobs == [DIGEST + bytes(16)]
    assert list(fake.root.iterdir()) == []  # probe entry and report entry both removed
    assert len(fake.created) == 2


def test_eventlog_attached_from_ccel(tmp_path: Path) -> None:
    # A minimal CCEL: spec-ID EV_NO_ACTION event with no data, one SHA-384 event, then the terminator.
    header = struct.pack("<II", 0, 3) + bytes(20) + struct.pack("<I", 0)
    event = struct.pack("<IIIH", 1, 0x80000001, 1, 0x0C) + bytes(48) + struct.pack("<I", 2) + b"ab"
    ccel = tmp_path / "CCEL"
    ccel.write_bytes(header + event + b"\xff" * 8 + b"garbage after the end")
    fake = FakeTsm(tmp_path / "tsm")
    provider = TsmProvider(fake.root, ops=fake.ops, ccel_path=ccel, aael_path=tmp_path / "none")
    log = base64.b64decode(provider.evidence(DIGEST)["cc_eventlog"])
    assert log == header + event + b"\xff" * 8


def test_wrong_provider(tmp_path: Path) -> None:
    fake = FakeTsm(tmp_path / "tsm", provider="arm_cca_guest")
    with pytest.raises(EvidenceUnavailable, match=r"provider 'arm_cca_guest' is not supported"):
        _provider(fake, tmp_path)
    assert list(fake.root.iterdir()) == []


def test_provider_changed_between_probe_and_report(tmp_path: Path) -> None:
    fake = FakeTsm(tmp_path / "tsm")
    provider = _provider(fake, tmp_path)
    fake.provider = "sev_guest"
    with pytest.raises(EvidenceUnavailable, match=r"entry provider is 'sev_guest', expected 'tdx_guest'"):
        provider.evidence(DIGEST)
    assert list(fake.root.iterdir()) == []


def test_generation_race_is_detected_and_retryable(tmp_path: Path) -> None:
    fake = FakeTsm(tmp_path / "tsm", extra_writers=1)
    provider = _provider(fake, tmp_path)
    with pytest.raises(EvidenceUnavailable, match=r"generation went 0 -> 2") as info:
        provider.evidence(DIGEST)
    assert info.value.retryable
    assert list(fake.root.iterdir()) == []


def test_missing_outblob(tmp_path: Path) -> None:
    fake = FakeTsm(tmp_path / "tsm", omit_outblob=True)
    provider = _provider(fake, tmp_path)
    with pytest.raises(EvidenceUnavailable, match=r"reading outblob.*missing|outblob is missing") as info:
        provider.evidence(DIGEST)
    assert not info.value.retryable
    assert list(fake.root.iterdir()) == []


def test_permission_denied(tmp_path: Path) -> None:
    fake = FakeTsm(tmp_path / "tsm", mkdir_error=errno.EACCES)
    with pytest.raises(EvidenceUnavailable, match=r"permission denied.*run the attester as root"):
        _provider(fake, tmp_path)


def test_no_tsm_provider_registered(tmp_path: Path) -> None:
    fake = FakeTsm(tmp_path / "tsm", mkdir_error=errno.ENXIO)
    with pytest.raises(EvidenceUnavailable, match=r"no TSM provider is registered"):
        _provider(fake, tmp_path)


def test_busy_quote_service_is_retryable(tmp_path: Path) -> None:
    fake = FakeTsm(tmp_path / "tsm", mkdir_error=errno.EBUSY)
    with pytest.raises(EvidenceUnavailable) as info:
        _provider(fake, tmp_path)
    assert info.value.retryable


def test_root_missing(tmp_path: Path) -> None:
    with pytest.raises(EvidenceUnavailable, match=r"does not exist"):
        TsmProvider(tmp_path / "absent")


def test_oversized_report_data_refused(tmp_path: Path) -> None:
    fake = FakeTsm(tmp_path / "tsm")
    with pytest.raises(EvidenceUnavailable, match=r"exceeds 64"):
        _provider(fake, tmp_path).evidence(bytes(65))


def test_auto_selection_never_falls_back_to_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SGX_AESM_ADDR", raising=False)
    options = ProviderOptions(tsm_root=tmp_path / "none", tdx_device=tmp_path / "no-dev")
    with pytest.raises(EvidenceUnavailable, match=r"no TEE evidence source found.*--evidence sample"):
        select_provider("auto", options)
    provider, why = select_provider("sample", options)
    assert provider.name == "sample" and why == "requested"


def test_initdata_checked_against_mrconfigid(tmp_path: Path) -> None:
    measurements = tmp_path / "measurements"
    measurements.mkdir()
    digest = bytes(range(48))
    (measurements / "mrconfigid").write_bytes(digest)
    fake = FakeTsm(tmp_path / "tsm")
    provider = TsmProvider(
        fake.root,
        ops=fake.ops,
        ccel_path=tmp_path / "x",
        aael_path=tmp_path / "x",
        measurements=measurements,
        device=tmp_path / "x",
    )
    assert provider.evidence(DIGEST, init_data_digest=digest)["quote"]
    with pytest.raises(EvidenceUnavailable, match=r"does not match this TD's MRCONFIGID"):
        provider.evidence(DIGEST, init_data_digest=bytes(48))

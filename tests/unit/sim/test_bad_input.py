"""Garbage in: only teegate's own errors come out (hypothesis)."""

from __future__ import annotations

import contextlib
import shutil
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teegate.errors import ConfigError, ParseError
from teegate.sim import SimPlatform

_settings = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_settings
@given(st.binary(max_size=2048))
def test_quote_from_tdreport_garbage(platform: SimPlatform, data: bytes) -> None:
    try:
        quote = platform.quote_from_tdreport(data)
    except ParseError:
        return
    assert len(data) == 1024 and data[0] == 0x81
    assert quote[568:632] == data[128:192]


@_settings
@given(st.binary(min_size=1024, max_size=1024))
def test_any_well_typed_tdreport_is_quoted(platform: SimPlatform, data: bytes) -> None:
    report = bytes((0x81, 0, 0, 0)) + data[4:]
    quote = platform.quote_from_tdreport(report, version=5)
    assert quote[54 + 136 : 54 + 184] == report[512 + 16 : 512 + 64]  # MRTD copied from TDINFO


@_settings
@given(st.binary(max_size=1024))
def test_quote_from_sgx_report_garbage(platform: SimPlatform, data: bytes) -> None:
    try:
        quote = platform.quote_from_sgx_report(data)
    except ParseError:
        return
    assert quote[48:432] == data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.binary(max_size=300),
    st.sampled_from(["platform.json", "attestation.key.pem", "root-ca.key.pem"]),
    st.booleans(),
)
def test_corrupt_platform_files(
    tmp_path_factory: pytest.TempPathFactory, platform_dir: Path, data: bytes, name: str, splice: bool
) -> None:
    d = tmp_path_factory.mktemp("corrupt") / "p"
    shutil.copytree(platform_dir, d)
    original = (d / name).read_bytes()
    # either replace the file, or overwrite a slice of the real one
    (d / name).write_bytes(original[:100] + data + original[100 + len(data) :] if splice else data)
    if splice:  # may still be a valid file (e.g. another valid key): only teegate errors may escape
        with contextlib.suppress(ConfigError):
            SimPlatform.load(d)
        return
    with pytest.raises(ConfigError):
        SimPlatform.load(d)


def test_concurrent_creators_exactly_one_wins(tmp_path: Path) -> None:
    target = tmp_path / "race"
    results: list[str] = []

    def create() -> None:
        try:
            SimPlatform.create(target)
            results.append("created")
        except ConfigError:
            results.append("refused")

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == ["created"] + ["refused"] * 5
    SimPlatform.load(target)  # whatever won is complete and consistent

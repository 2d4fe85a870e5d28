"""Quotes from the simulated platform (teegate.sim, ADR 0001) parse into what was asked for."""

from __future__ import annotations

from pathlib import Path

import pytest

from teegate.dcap.claims import quote_claims
from teegate.dcap.pck import collateral_key, parse_pck_extensions
from teegate.dcap.quote import SgxReportBody, TdReport10, TdReport15, parse_quote
from teegate.sim import SimPlatform


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimPlatform:
    return SimPlatform.create(Path(tmp_path_factory.mktemp("sim")) / "platform")


@pytest.mark.parametrize(
    ("kw", "body_cls", "body_type"),
    [
        ({}, TdReport10, None),
        ({"version": 5}, TdReport15, 3),
        ({"version": 5, "body_type": 2}, TdReport10, 2),
    ],
)
def test_tdx(platform: SimPlatform, kw: dict[str, int], body_cls: type, body_type: int | None) -> None:
    rd = bytes(range(64))
    q = parse_quote(platform.tdx_quote(rd, **kw))
    assert type(q.body) is body_cls and q.body_type == body_type
    assert q.report_data == rd and q.tee == "tdx" and not q.debug
    key = collateral_key(q)
    assert (key.tee, key.fmspc, key.ca) == ("tdx", platform.fmspc, platform.pck_ca)
    assert quote_claims(q)["quote"]["body"]["report_data"] == rd.hex()


def test_tdx_debug(platform: SimPlatform) -> None:
    q = parse_quote(platform.tdx_quote(bytes(64), debug=True))
    assert q.debug
    assert quote_claims(q)["td_attributes"]["debug"] is True


def test_sgx(platform: SimPlatform) -> None:
    rd = bytes(range(1, 65))
    q = parse_quote(platform.sgx_quote(rd))
    assert isinstance(q.body, SgxReportBody)
    assert q.version == 3 and q.tee == "sgx" and q.report_data == rd
    pck = parse_pck_extensions(q.pck_leaf)
    assert pck.fmspc_hex == platform.fmspc
    assert quote_claims(q, pck)["body"]["report_data"] == rd.hex()

"""DirectorySource and BundleSource over real recorded PCS documents."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from teegate.collateral import BundleSource, DirectorySource
from teegate.collateral._documents import signed_document
from teegate.dcap.collateral import Collateral, CollateralKey
from teegate.errors import CollateralUnavailable, ParseError

pytestmark = pytest.mark.timeout(30)

NOW = datetime(2023, 6, 28, 8, 3, 58, tzinfo=UTC)
KEY = CollateralKey("tdx", "50806F000000", "platform")


@pytest.fixture
def docs(vectors: Path, tmp_path: Path) -> Path:
    raw = vectors / "raw" / "go-tdx-guest"
    d = tmp_path / "docs"
    d.mkdir()
    shutil.copy(raw / "sample_tcbInfo_response", d / "tcb_info_tdx_50806F000000.json")
    shutil.copy(raw / "sample_qeIdentity_response", d / "qe_identity_tdx.json")
    shutil.copy(raw / "tcbInfoIssuerChain.pem", d / "tcb_info_issuer_chain.pem")
    shutil.copy(raw / "qeIdentityIssuerChain.pem", d / "qe_identity_issuer_chain.pem")
    shutil.copy(raw / "pckCrlIssuerChain.pem", d / "pck_crl_issuer_chain.pem")
    shutil.copy(raw / "pckcrl", d / "pck_crl_platform.der")
    shutil.copy(raw / "rootcrl.der", d / "root_ca_crl.der")
    return d


async def test_directory_equals_recorded_collateral_set(vectors: Path, docs: Path) -> None:
    expected = Collateral.from_json(
        (vectors / "_collateral_sets" / "gotdx_tdx_50806F000000_2023-06.json").read_text()
    )
    assert await DirectorySource(docs).get(KEY, now=NOW) == expected
    # The Root CA CRL as hex text (PCCS style) is the same CRL.
    (docs / "root_ca_crl.der").write_text((docs / "root_ca_crl.der").read_bytes().hex())
    assert await DirectorySource(docs).get(KEY, now=NOW) == expected


async def test_directory_missing_item_named(docs: Path) -> None:
    (docs / "qe_identity_tdx.json").unlink()
    with pytest.raises(CollateralUnavailable, match=r"QE Identity: .*qe_identity_tdx.json does not exist"):
        await DirectorySource(docs).get(KEY, now=NOW)
    with pytest.raises(CollateralUnavailable, match=r"tcb_info_sgx_50806F000000.json does not exist"):
        await DirectorySource(docs).get(CollateralKey("sgx", "50806F000000", "platform"), now=NOW)


async def test_directory_garbage_named(docs: Path) -> None:
    (docs / "pck_crl_platform.der").write_bytes(b"\x30\x03garbage")
    with pytest.raises(
        CollateralUnavailable, match=r"pck_crl_platform\.der: 4 unexpected bytes after the DER CRL"
    ):
        await DirectorySource(docs).get(KEY, now=NOW)


async def test_bundle_file_and_directory(vectors: Path, tmp_path: Path) -> None:
    path = vectors / "_collateral_sets" / "teepotpcs_sgx_00906ED50000_2025-05.json"
    key = CollateralKey("sgx", "00906ED50000", "processor")
    got = await BundleSource(path).get(key, now=NOW)
    assert got == Collateral.from_json(path.read_text())
    with pytest.raises(
        CollateralUnavailable, match="holds collateral for sgx FMSPC 00906ED50000 CA processor, not tdx"
    ):
        await BundleSource(path).get(KEY, now=NOW)
    with pytest.raises(CollateralUnavailable, match="CA processor, not sgx FMSPC 00906ED50000 CA platform"):
        await BundleSource(path).get(CollateralKey("sgx", "00906ED50000", "platform"), now=NOW)
    d = tmp_path / "bundles"
    d.mkdir()
    shutil.copy(path, d / "sgx-00906ed50000.json")
    assert await BundleSource(d).get(key, now=NOW) == got
    (d / "sgx-00906ed50000.json").write_text('{"pck_crl": 1}')
    with pytest.raises(CollateralUnavailable, match=r"collateral bundle .*sgx-00906ed50000\.json"):
        await BundleSource(d).get(key, now=NOW)


def test_signed_text_is_the_exact_substring(vectors: Path) -> None:
    body = (vectors / "raw" / "go-tdx-guest" / "sample_tcbinfo_response_v5").read_text()
    doc = signed_document(body, "tcbInfo")
    assert body.index(doc.text) == len('{"tcbInfo":')
    assert doc.signature.hex() in body
    spaced = '{ "signature" : "' + doc.signature.hex() + '" ,\n "tcbInfo" :' + doc.text + " }"
    assert signed_document(spaced, "tcbInfo") == doc


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "not a JSON object"),
        ("[1]", "not a JSON object"),
        ('{"tcbInfo":{}}', "missing member"),
        ('{"tcbInfo":{},"signature":"00","x":1}', "unexpected member"),
        ('{"tcbInfo":{},"tcbInfo":{},"signature":"00"}', "duplicate member"),
        ('{"tcbInfo":[],"signature":"' + "00" * 64 + '"}', "not a JSON object"),
        ('{"tcbInfo":{},"signature":"' + "zz" * 64 + '"}', "not hex"),
        ('{"tcbInfo":{"a":1},"signature":"' + "00" * 64 + '"} x', "trailing data"),
        ('{"tcbInfo":{"a":', "bad JSON value"),
        ("{" + "[" * 100000, "bad JSON"),
    ],
)
def test_signed_document_refuses_garbage(body: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        signed_document(body, "tcbInfo")

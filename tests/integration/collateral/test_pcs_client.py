"""PcsClient against a loopback server replaying Intel PCS's recorded responses."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from teegate.collateral import PcsClient
from teegate.dcap.collateral import Collateral, CollateralKey
from teegate.errors import CollateralUnavailable

from .fake_pcs import V4, Canned, gotdx_fake, serve, teepotpcs_fake

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

NOW = datetime(2025, 6, 11, 19, 23, 55, tzinfo=UTC)


def _expected(vectors: Path, name: str) -> Collateral:
    return Collateral.from_json((vectors / "_collateral_sets" / f"{name}.json").read_text())


@pytest.mark.parametrize(
    ("key", "collateral_set"),
    [
        (CollateralKey("tdx", "00806F050000", "platform"), "teepotpcs_tdx_00806F050000_2025-05"),
        (CollateralKey("sgx", "00906ED50000", "processor"), "teepotpcs_sgx_00906ED50000_2025-05"),
    ],
)
async def test_bundle_equals_recorded_collateral_set(
    vectors: Path, key: CollateralKey, collateral_set: str
) -> None:
    fake = teepotpcs_fake(vectors)
    with serve(fake.app()) as url:
        got = await PcsClient(url).get(key, now=NOW)
    assert got == _expected(vectors, collateral_set)
    assert f"{V4}/pckcrl?ca={key.ca}&encoding=der" in fake.hits


async def test_go_tdx_guest_recording_with_der_root_crl(vectors: Path) -> None:
    fake = gotdx_fake(vectors)
    with serve(fake.app()) as url:
        got = await PcsClient(url + "/sgx/certification/v4/").get(
            CollateralKey("tdx", "50806F000000", "platform"), now=NOW
        )
    assert got == _expected(vectors, "gotdx_tdx_50806F000000_2023-06")


async def test_unknown_fmspc_names_url_and_fmspc(vectors: Path) -> None:
    with (
        serve(teepotpcs_fake(vectors).app()) as url,
        pytest.raises(CollateralUnavailable, match=r"FMSPC 00A067110000.*404") as err,
    ):
        await PcsClient(url).get(CollateralKey("tdx", "00A067110000", "platform"), now=NOW)
    assert "/tdx/certification/v4/tcb?fmspc=00A067110000" in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda f: f.routes["/tdx/certification/v4/tcb?fmspc=00806F050000"].headers.clear(),
            "lacks the TCB-Info-Issuer-Chain header",
        ),
        (
            lambda f: setattr(f.routes["/tdx/certification/v4/qe/identity"], "body", b"<html>oops</html>"),
            "QE Identity .* malformed",
        ),
        (
            lambda f: setattr(
                f.routes["/tdx/certification/v4/qe/identity"],
                "body",
                b'{"enclaveIdentity":{},"signature":"zz"}',
            ),
            "signature",
        ),
        (lambda f: setattr(f.routes[f"{V4}/rootcacrl"], "body", b"not a crl"), "Root CA CRL .* malformed"),
        (
            lambda f: setattr(f.routes[f"{V4}/pckcrl?ca=platform&encoding=der"], "body", b"0" * (2 << 20)),
            "exceeds MAX_RESPONSE_BYTES",
        ),
        (
            lambda f: f.routes[f"{V4}/pckcrl?ca=platform&encoding=der"].headers.update(
                {"SGX-PCK-CRL-Issuer-Chain": "garbage"}
            ),
            "SGX-PCK-CRL-Issuer-Chain header: text after the last PEM certificate",
        ),
        (
            lambda f: f.routes.__setitem__(f"{V4}/pckcrl?ca=platform&encoding=der", Canned(503, b"busy")),
            "HTTP 503",
        ),
        (
            lambda f: setattr(
                f.routes["/tdx/certification/v4/tcb?fmspc=00806F050000"],
                "body",
                f.routes["/tdx/certification/v4/tcb?fmspc=00806F050000"].body + b"trailing",
            ),
            "trailing data",
        ),
    ],
)
async def test_bad_responses_are_named(vectors: Path, mutate: object, message: str) -> None:
    fake = teepotpcs_fake(vectors)
    mutate(fake)  # type: ignore[operator]
    with serve(fake.app()) as url, pytest.raises(CollateralUnavailable, match=message):
        await PcsClient(url).get(CollateralKey("tdx", "00806F050000", "platform"), now=NOW)


async def test_wrong_fmspc_answer_refused(vectors: Path) -> None:
    fake = teepotpcs_fake(vectors)
    fake.routes["/tdx/certification/v4/tcb?fmspc=111111111111"] = fake.routes[
        "/tdx/certification/v4/tcb?fmspc=00806F050000"
    ]
    with (
        serve(fake.app()) as url,
        pytest.raises(
            CollateralUnavailable,
            match="holds collateral for tdx FMSPC 00806F050000 CA platform, not tdx FMSPC 111111111111",
        ),
    ):
        await PcsClient(url).get(CollateralKey("tdx", "111111111111", "platform"), now=NOW)


async def test_unreachable_server_named() -> None:
    with pytest.raises(CollateralUnavailable, match=r"127\.0\.0\.1:9/.*unreachable"):
        await PcsClient("http://127.0.0.1:9", timeout=2).get(
            CollateralKey("tdx", "00806F050000", "platform"), now=NOW
        )


async def test_der_recording_of_processor_crl_accepted(vectors: Path) -> None:
    import base64

    fake = teepotpcs_fake(vectors)
    recorded = json.loads((vectors / "raw/pcs-api-responses/pck_crl_processor_der.json").read_text())
    der = base64.b64decode(recorded["crl_data_base64"])
    fake.routes[f"{V4}/pckcrl?ca=processor&encoding=der"].body = der
    with serve(fake.app()) as url:
        got = await PcsClient(url).get(CollateralKey("sgx", "00906ED50000", "processor"), now=NOW)
    assert got.pck_crl == der


async def test_retries_then_succeeds_and_sends_api_key(vectors: Path) -> None:
    fake = teepotpcs_fake(vectors)
    fake.fail_first = 3
    with serve(fake.app()) as url:
        client = PcsClient(url, api_key="k3y", retry_times=3, retry_delay=0.01)
        got = await client.get(CollateralKey("tdx", "00806F050000", "platform"), now=NOW)
    assert got == _expected(vectors, "teepotpcs_tdx_00806F050000_2025-05")
    assert len(fake.hits) == 4 + 3
    assert set(fake.api_keys) == {"k3y"}


async def test_no_retry_gives_up_with_503(vectors: Path) -> None:
    fake = teepotpcs_fake(vectors)
    fake.fail_first = 1
    with serve(fake.app()) as url, pytest.raises(CollateralUnavailable, match="HTTP 503"):
        await PcsClient(url).get(CollateralKey("tdx", "00806F050000", "platform"), now=NOW)


async def test_missing_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    from teegate.errors import ConfigError

    with pytest.raises(ConfigError, match="TLS CA bundle"):
        await PcsClient("https://127.0.0.1:9", verify=str(tmp_path / "nope.pem")).get(
            CollateralKey("tdx", "00806F050000", "platform"), now=NOW
        )


async def test_tls_verified_by_default(
    vectors: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.netutil import self_signed

    cert, key = self_signed(tmp_path)
    tdx = CollateralKey("tdx", "00806F050000", "platform")
    with serve(teepotpcs_fake(vectors).app(), certfile=cert, keyfile=key) as url:
        assert url.startswith("https://")
        with pytest.raises(
            CollateralUnavailable, match=r"unreachable: ConnectError.*CERTIFICATE_VERIFY_FAILED"
        ):
            await PcsClient(url).get(tdx, now=NOW)
        trusted = await PcsClient(url, verify=str(cert)).get(tdx, now=NOW)
        insecure = PcsClient(url, verify=False)
        assert await insecure.get(tdx, now=NOW) == trusted
    assert trusted == _expected(vectors, "teepotpcs_tdx_00806F050000_2025-05")
    assert insecure.insecure == ["use_secure_cert=false: TLS certificate verification disabled"]
    assert "INSECURE collateral client option: use_secure_cert=false" in caplog.text

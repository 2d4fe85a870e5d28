"""QCNL configuration parsing (Intel's JSON-with-comments and legacy formats) and settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from teegate.collateral import (
    BundleSource,
    CachedSource,
    CollateralSettings,
    PcsClient,
    QcnlConfig,
    source_from_settings,
)
from teegate.errors import ConfigError

INTEL_DEFAULT = """\
{
  // *** ATTENTION : This file is in JSON format so the keys are case sensitive. Don't change them.

  //PCCS server address
  "pccs_url": "https://localhost:8081/sgx/certification/v4/",

  // To accept insecure HTTPS certificate, set this option to false
  "use_secure_cert": false,

  // You can use the Intel PCS or another PCCS to get quote verification collateral.
  "collateral_service": "https://api.trustedservices.intel.com/sgx/certification/v4/",

  /* PCCS API version */
  "pccs_api_version": "3.1",

  // Maximum retry times for QCNL. If RETRY is not defined or set to 0, no retry will be performed.
  "retry_times": 6,
  "retry_delay": 10,
  "local_pck_url": "http://169.254.169.254/metadata/THIM/sgx/certification/v4/",
  "pck_cache_expire_hours": 168,
  "verify_collateral_cache_expire_hours": 168,
  "custom_request_options" : {"get_cert" : {"headers": {"metadata": "true"}, "params": {"api-version": "2021-07-22-preview"}}}
}
"""


def test_intel_default_conf(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "sgx_default_qcnl.conf"
    path.write_text(INTEL_DEFAULT)
    conf = QcnlConfig.load(path)
    assert conf.pccs_url == "https://localhost:8081/sgx/certification/v4/"
    assert conf.use_secure_cert is False
    assert conf.retry_times == 6 and conf.retry_delay == 10
    assert conf.local_pck_url == "http://169.254.169.254/metadata/THIM/sgx/certification/v4/"
    assert conf.pccs_api_version == "3.1"
    client = conf.client()
    assert client.base_url == "https://localhost:8081"
    assert client.collateral_root == "https://api.trustedservices.intel.com"
    assert client.root_ca_crl_url == "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
    assert "use_secure_cert=false: TLS certificate verification disabled" in client.insecure
    assert "INSECURE collateral client option: use_secure_cert=false" in caplog.text


def test_comment_markers_inside_strings_survive() -> None:
    conf = QcnlConfig.parse(
        '{"pccs_url": "https://pccs.example:8081//x/*y*/", /* c */ "use_secure_cert": true}'
    )
    assert conf.pccs_url == "https://pccs.example:8081//x/*y*/"
    assert conf.client().collateral_root == "https://pccs.example:8081//x/*y*"


def test_legacy_format() -> None:
    conf = QcnlConfig.parse(
        "# legacy\nPCCS_URL=https://pccs:8081/sgx/certification/v4/\nUSE_SECURE_CERT=TRUE\nRETRY_TIMES=2\n"
    )
    assert conf.pccs_url == "https://pccs:8081/sgx/certification/v4/"
    assert conf.use_secure_cert is True and conf.retry_times == 2
    assert conf.client().root_ca_crl_url == "https://pccs:8081/sgx/certification/v4/rootcacrl"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ('{"use_secure_cert": true}', "pccs_url is required"),
        ('{"pccs_url": "ftp://x"}', "must be http"),
        ('{"pccs_url": "https://x", "use_secure_cert": "maybe"}', "use_secure_cert must be true or false"),
        ('{"pccs_url": "https://x", "retry_times": 1000}', "retry_times must be 0..20"),
        ('{"pccs_url": "https://x", "retry_delay": 1e400}', "retry_delay must be an integer"),
        ('{"pccs_url": "http://[::1"}', "Invalid IPv6 URL"),
        ('{"pccs_url": "https://x"} /* open', "unterminated"),
        ("PCCS_URL", "expected KEY=value"),
    ],
)
def test_bad_conf_named(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QcnlConfig.parse(text).client()


def test_settings_build_sources(tmp_path: Path) -> None:
    assert isinstance(source_from_settings(CollateralSettings(pccs_url="https://pccs:8081")), PcsClient)
    cached = source_from_settings(CollateralSettings(bundle=tmp_path / "b.json", cache_dir=tmp_path / "c"))
    assert isinstance(cached, CachedSource) and isinstance(cached.inner, BundleSource)
    offline = source_from_settings(
        CollateralSettings.from_mapping({"cache_dir": str(tmp_path), "offline": True})
    )
    assert isinstance(offline, CachedSource) and offline.offline
    with pytest.raises(ConfigError, match="unknown setting"):
        CollateralSettings.from_mapping({"pccs": "x"})
    with pytest.raises(ConfigError, match="give one source"):
        CollateralSettings(pccs_url="https://x", directory=tmp_path)
    with pytest.raises(ConfigError, match="offline mode needs a cache"):
        CollateralSettings(offline=True)
    assert "secret" not in repr(CollateralSettings(pccs_url="https://x", api_key="secret"))

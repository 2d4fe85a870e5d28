"""kbs.toml parsing: Trustee-like sections, unknown keys refused, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from teegate.errors import ConfigError
from teegate.kbs.config import KbsSettings, is_loopback, load_settings, parse_listen
from teegate.kbs.storage import Backend, StateBackend, StorageSettings


def test_defaults_without_config(tmp_path: Path) -> None:
    settings = load_settings(None, environ={"TEEGATE_DATA_DIR": str(tmp_path)})
    assert settings.data_dir == tmp_path and settings.listen == ("127.0.0.1", 8080)
    assert not settings.allow_sample and not settings.trust_simulated and settings.verify_tdx
    assert settings.storage.backend is Backend.SQLITE and settings.session_timeout_seconds == 300
    assert settings.policy_vm == "builtin" and settings.policy_refresh_seconds == 1.0
    assert settings.insecure_options() == []
    settings.check_transport()


def test_trustee_like_config(tmp_path: Path) -> None:
    (tmp_path / "policy.rego").write_text("package policy\ndefault allow := false\n")
    config = tmp_path / "kbs.toml"
    config.write_text(
        """
[http_server]
sockets = ["0.0.0.0:8080"]
insecure_http = true
payload_request_size = 4

[attestation_token]
insecure_key = false
duration_min = 10

[attestation_service]
timeout = 2

[policy_engine]
policy_path = "policy.rego"
policy_vm = "all"
refresh_seconds = 0

[verifiers]
sample = true
"""
    )
    settings = load_settings(
        config,
        environ={
            "TEEGATE_DATA_DIR": str(tmp_path / "d"),
            "TEEGATE_KBS_RESOURCES_DIR": str(tmp_path / "res"),
            "TEEGATE_KBS_POSTGRES_URL": "postgresql://kbs@db/kbs",
        },
    )
    assert settings.listen == ("0.0.0.0", 8080) and settings.insecure_http
    assert settings.max_body_bytes == 4 * 1024 * 1024 and settings.token_ttl_seconds == 600
    assert settings.session_timeout_seconds == 120 and settings.allow_sample
    assert settings.resource_policy_path == tmp_path / "policy.rego" and settings.policy_vm == "all"
    assert settings.policy_refresh_seconds == 0.0
    assert (
        settings.storage.backend is Backend.DIRECTORY and settings.storage.directory_root == tmp_path / "res"
    )
    assert settings.storage.effective_state_backend is StateBackend.POSTGRES
    assert "insecure_http (plain HTTP off loopback)" in settings.insecure_options()
    assert "sample-evidence" in settings.insecure_options()
    settings.check_transport()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[nonsense]\na = 1\n", "unknown section"),
        ("[http_server]\nsockts = []\n", "unknown keys"),
        ("[http_server]\ninsecure_http = 'yes'\n", "wrong type"),
        ("[attestation_service]\ntype = 'coco_as_grpc'\n", "coco_as_builtin"),
        ("[verifiers]\ntrust_simulated = true\n", "sim_platform"),
        ("[policy_engine]\npolicy_vm = 'fast'\n", "policy_vm must be one of"),
        ("[policy_engine]\nrefresh_seconds = -1\n", "refresh_seconds must be between"),
        ("[policy_engine]\nrefresh_seconds = nan\n", "refresh_seconds must be between"),
        ("[policy_engine]\nrefresh_seconds = true\n", "wrong type"),
        ("not toml = = =", "kbs.toml"),
    ],
)
def test_bad_configs_refused(tmp_path: Path, text: str, match: str) -> None:
    config = tmp_path / "kbs.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_settings(config, environ={"TEEGATE_DATA_DIR": str(tmp_path)})


def test_plain_http_off_loopback_refused_and_dev_loopback_only(tmp_path: Path) -> None:
    storage = StorageSettings(data_dir=tmp_path)
    with pytest.raises(ConfigError, match="refusing plain HTTP"):
        KbsSettings(data_dir=tmp_path, storage=storage, listen=("0.0.0.0", 8080)).check_transport()
    with pytest.raises(ConfigError, match="loopback only"):
        KbsSettings(data_dir=tmp_path, storage=storage, listen=("10.0.0.1", 8080), dev=True)
    assert parse_listen("[::1]:9000") == ("::1", 9000) and is_loopback("::1") and not is_loopback("10.1.2.3")
    with pytest.raises(ConfigError):
        parse_listen("nohost")


def test_kubevirt_example_config_loads(tmp_path: Path) -> None:
    """The example KbsConfig's kbs-config.toml (deploy/k8s) is accepted as is."""
    import yaml

    root = Path(__file__).resolve().parents[3]
    documents = list(yaml.safe_load_all((root / "deploy/k8s/examples/kubevirt-tdx/kbs.yaml").read_text()))
    config_map = next(d for d in documents if d and d.get("metadata", {}).get("name") == "kbs-config")
    config = tmp_path / "kbs-config.toml"
    config.write_text(config_map["data"]["kbs-config.toml"])
    settings = load_settings(config, environ={"TEEGATE_DATA_DIR": str(tmp_path)})
    assert settings.listen == ("0.0.0.0", 8080) and settings.insecure_http
    settings.check_transport()
    assert settings.resource_policy_path == Path("/etc/teegate/policy/resource/policy.rego")

"""Issue 5 end to end on one machine, every piece a real process speaking its real protocol:

simulated TD → TDREPORT → QGS Unix socket → DCAP quote → KBS /attest → the KBS fetches the
platform's collateral from teegate's PCCS (which the platform registered with, REQ mode) →
verifies → releases the resource, JWE-encrypted to the guest's key.

And the other way round: with the PCCS gone and nothing cached, the KBS answers 503-class
"collateral unavailable" and releases nothing.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from teegate.sim import SimPlatform
from tests.integration.attester.stack import (
    Daemon,
    Kbs,
    attester,
    free_port,
    running,
    start,
    start_qgs,
    teegate,
    wait_kbs,
)

pytestmark = pytest.mark.timeout(180)


def _wait_http(url: str, daemon: Daemon, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise RuntimeError(f"daemon exited: {daemon.output()}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up: {daemon.output()}")


@pytest.fixture
def platform_dir(tmp_path: Path) -> Path:
    return SimPlatform.create(tmp_path / "platform").directory


def _start_pccs(tmp_path: Path, platform_dir: Path) -> tuple[Daemon, str, Path]:
    port = free_port()
    token = tmp_path / "pccs-user-token"
    token.write_text(secrets.token_hex(16))
    admin = tmp_path / "pccs-admin-token"
    admin.write_text(secrets.token_hex(16))
    daemon = start(
        [
            "pccs",
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--data-dir",
            str(tmp_path / "pccs"),
            "--sim-platform",
            str(platform_dir),
            "--mode",
            "req",
            "--user-token-file",
            str(token),
            "--admin-token-file",
            str(admin),
        ],
        tmp_path / "pccs.log",
    )
    url = f"http://127.0.0.1:{port}"
    _wait_http(f"{url}/healthz", daemon)
    return daemon, url, token


def _start_kbs(tmp_path: Path, platform_dir: Path, pccs_url: str) -> Kbs:
    port = free_port()
    config = tmp_path / "kbs.toml"
    config.write_text(f'[verifiers]\nsim_collateral = "source"\n\n[collateral]\npccs_url = "{pccs_url}"\n')
    data = tmp_path / f"kbs-{port}"
    daemon = start(
        [
            "kbs",
            "serve",
            "--dev",
            "--config",
            str(config),
            "--data-dir",
            str(data),
            "--sim-platform",
            str(platform_dir),
            "--listen",
            f"127.0.0.1:{port}",
            "--log-format",
            "text",
        ],
        tmp_path / f"kbs-{port}.log",
    )
    kbs = Kbs(daemon, f"http://127.0.0.1:{port}", data)
    wait_kbs(kbs)
    return kbs


@pytest.fixture
def stack(tmp_path: Path, platform_dir: Path) -> Iterator[tuple[Kbs, Daemon, Daemon, Path]]:
    pccs, pccs_url, user_token = _start_pccs(tmp_path, platform_dir)
    with running(pccs):
        registered = teegate(
            "register",
            "--url",
            pccs_url,
            "--sim-platform",
            str(platform_dir),
            "--state-dir",
            str(tmp_path / "run"),
            "--user-token-file",
            str(user_token),
            "--json",
        )
        assert '"registered"' in registered.stdout, registered.stdout + registered.stderr
        kbs = _start_kbs(tmp_path, platform_dir, pccs_url)
        sock = tmp_path / "qgs.sock"
        qgs = start_qgs(tmp_path, platform_dir, sock)
        with running(kbs.daemon, qgs):
            yield kbs, pccs, qgs, sock


def _get_resource(kbs: Kbs, platform_dir: Path, sock: Path, *extra: str) -> tuple[int, str, str]:
    result = attester(
        "--url",
        kbs.url,
        "--evidence",
        "sim",
        "--sim-platform",
        str(platform_dir),
        "--qgs-socket",
        str(sock),
        *extra,
        "get-resource",
        "--path",
        "default/kbsres1/key1",
        timeout=120,
    )
    return result.returncode, result.stdout, result.stderr


def test_td_quote_through_qgs_verified_with_pccs_collateral_releases_the_key(
    stack: tuple[Kbs, Daemon, Daemon, Path], platform_dir: Path
) -> None:
    kbs, pccs, _qgs, sock = stack
    secret = secrets.token_bytes(32)
    kbs.set_resource("default/kbsres1/key1", secret)

    code, out, err = _get_resource(kbs, platform_dir, sock)

    assert code == 0, err
    assert base64.b64decode(out.strip()) == secret
    # The collateral really came through the PCCS: it served the TDX TCB Info and QE Identity.
    metrics = httpx.get(_pccs_url(pccs) + "/metrics", timeout=5).text
    for route in ("tcb", "qe/identity", "pckcrl", "rootcacrl"):
        assert f'teegate_pccs_requests_total{{route="{route}",status="200"}}' in metrics, metrics


def test_without_pccs_and_cache_nothing_is_released(
    stack: tuple[Kbs, Daemon, Daemon, Path], platform_dir: Path
) -> None:
    kbs, pccs, _qgs, sock = stack
    kbs.set_resource("default/kbsres1/key1", b"never-released")
    pccs.stop()

    code, out, err = _get_resource(kbs, platform_dir, sock, "--retries", "1", "--deadline", "20")

    assert code != 0
    assert out.strip() == ""
    assert "collateral" in err.lower(), err


def _pccs_url(daemon: Daemon) -> str:
    args = daemon.process.args
    assert isinstance(args, list)
    return "http://" + str(args[args.index("--listen") + 1])

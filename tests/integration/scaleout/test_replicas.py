"""Several `teegate kbs serve` replicas over one PostgreSQL behind the round-robin proxy (issue 7).

One topology for the module: its own PostgreSQL (the restart test stops it), 2 replicas sharing
the session key and database, the proxy, a simulated QGS.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from teegate.attester.client import KbsClient, RetryPolicy
from teegate.attester.providers.sim import SimTdProvider
from teegate.attester.uri import parse_resource
from tests.integration.scaleout.guest import StepGuest, error_type
from tests.integration.scaleout.storm import StormResult, run_storm
from tests.integration.scaleout.topology import Topology

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SECRET = b"replicated-disk-passphrase"
RESOURCE = "default/vm/passphrase"


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    topo = Topology.create(tmp_path_factory.mktemp("scaleout"))
    try:
        topo.start_replicas(2)
        topo.start_proxy()
        topo.start_qgs()
        topo.set_resource(topo.proxy_url, RESOURCE, SECRET)
        topo.set_resource_policy(topo.proxy_url)
        yield topo
    finally:
        topo.close()


def _storm(topo: Topology, vms: int, out: list[StormResult], threads: int = 8) -> threading.Thread:
    assert topo.qgs_socket is not None
    thread = threading.Thread(
        target=lambda: out.append(
            run_storm(
                topo.proxy_url,
                topo.platform.directory,
                topo.qgs_socket,  # type: ignore[arg-type]
                vms=vms,
                resource=RESOURCE,
                secret=SECRET,
                threads=threads,
            )
        ),
        daemon=True,
    )
    thread.start()
    return thread


def test_each_step_on_another_replica(topology: Topology) -> None:
    first, second = topology.replica_urls
    guest = StepGuest(topology.platform)
    assert guest.auth(first).status_code == 200
    assert guest.attest(second).status_code == 200
    assert guest.open(guest.resource(first, RESOURCE)) == SECRET
    # The token minted by the second replica is accepted by the first as a Bearer token too.
    assert guest.open(guest.resource(first, RESOURCE, bearer=True)) == SECRET


def test_debug_td_refused_on_every_replica(topology: Topology) -> None:
    first, second = topology.replica_urls
    guest = StepGuest(topology.platform, debug=True)
    assert guest.auth(second).status_code == 200
    assert guest.attest(first).status_code == 200  # attested, but not releasable
    for url in (first, second, topology.proxy_url):
        response = guest.resource(url, RESOURCE)
        assert response.status_code == 401 and error_type(response) == "PolicyDeny", response.text


def test_forged_session_refused_by_other_replica(topology: Topology) -> None:
    first, second = topology.replica_urls
    guest = StepGuest(topology.platform)
    assert guest.auth(first).status_code == 200
    head, _, body = guest.cookie.partition(".")
    guest.cookie = f"{head}.{body[:-4]}AAAA"
    response = guest.attest(second)
    assert response.status_code == 401
    assert "does not authenticate" in response.json()["detail"]


def test_proxy_spreads_one_client_over_replicas(topology: Topology) -> None:
    # Keep-alive from the client does not pin it: consecutive requests alternate replicas.
    before = [int(_metric(url, "kbs_http_requests_total", 'route="auth"')) for url in topology.replica_urls]
    with httpx.Client(base_url=topology.proxy_url, timeout=30) as client:
        for _ in range(6):
            body = {"version": "0.4.0", "tee": "tdx", "extra-params": {}}
            assert client.post("/kbs/v0/auth", json=body).status_code == 200
    after = [int(_metric(url, "kbs_http_requests_total", 'route="auth"')) for url in topology.replica_urls]
    assert [a - b for a, b in zip(after, before, strict=True)] == [3, 3]


def _metric(url: str, name: str, label: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_replica_killed_mid_handshake_client_completes_elsewhere(
    topology: Topology, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = topology.replica_urls
    # A handshake begun on the first replica…
    guest = StepGuest(topology.platform)
    assert guest.auth(first).status_code == 200
    # …which hangs with requests in flight (a 20-VM storm and one attester through the proxy)…
    results: list[StormResult] = []
    topology.replicas[0].freeze()
    thread = _storm(topology, 20, results)
    assert topology.qgs_socket is not None
    attester = KbsClient(
        topology.proxy_url,
        SimTdProvider(topology.platform.directory, topology.qgs_socket),
        retry=RetryPolicy(attempts=5, deadline=60, initial_delay=0.2, max_delay=1.0),
    )
    got: list[bytes] = []
    caplog.set_level(logging.WARNING, logger="teegate.attester")
    single = threading.Thread(target=lambda: got.append(attester.get_resource(parse_resource(RESOURCE))))
    single.start()
    time.sleep(1.0)
    topology.replicas[0].kill()  # …and dies: its held requests get 502 from the proxy
    try:
        single.join(timeout=60)
        attester.close()
        assert got == [SECRET]
        retries = [r.getMessage() for r in caplog.records if "502" in r.getMessage()]
        assert retries, "the attester never saw the dead replica's 502"
        # The guest carries on through the proxy: its sealed session is valid on the survivor.
        assert guest.attest(topology.proxy_url).status_code == 200
        assert guest.open(guest.resource(topology.proxy_url, RESOURCE)) == SECRET
        thread.join(timeout=90)
        assert results, "storm did not finish"
        assert results[0].delivered == 20, results[0].report()
        assert results[0].wrong_releases == 0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{first}/healthz", timeout=2)
        assert httpx.get(f"{second}/healthz", timeout=5).status_code == 200
    finally:
        topology.restart_replica(0)
    assert StepGuest(topology.platform).auth(first).status_code == 200


def test_small_storm_releases_only_to_good_vms(topology: Topology) -> None:
    assert topology.qgs_socket is not None
    result = run_storm(
        topology.proxy_url,
        topology.platform.directory,
        topology.qgs_socket,
        vms=20,
        bad_vms=4,
        resource=RESOURCE,
        secret=SECRET,
        threads=8,
    )
    assert result.delivered == 16, result.report()
    assert result.wrong_releases == 0 and result.refused_bad == 4, result.report()
    assert "keys delivered: 16/16" in result.report()


def _recovered(topology: Topology, deadline: float = 30.0) -> float:
    """Seconds until every replica attests 3 times in a row again after the database is back."""
    began = time.monotonic()
    streak = dict.fromkeys(topology.replica_urls, 0)
    while min(streak.values()) < 3:
        assert time.monotonic() - began < deadline, f"no recovery within {deadline}s: {streak}"
        for url in topology.replica_urls:
            guest = StepGuest(topology.platform)
            assert guest.auth(url).status_code == 200
            status = guest.attest(url).status_code
            assert status in (200, 503), status
            streak[url] = streak[url] + 1 if status == 200 else 0
    return time.monotonic() - began


def test_postgres_restart_under_load_503_then_recovery(topology: Topology) -> None:
    marker = b"stored-before-the-outage"
    topology.set_resource(topology.proxy_url, "default/vm/marker", marker)
    results: list[StormResult] = []
    thread = _storm(topology, 30, results, threads=4)
    time.sleep(0.5)
    topology.postgres.stop("immediate")  # a crash: no checkpoint
    try:
        # While the database is down an attested client gets 503 ServiceUnavailable, not a 500.
        guest = StepGuest(topology.platform)
        assert guest.auth(topology.replica_urls[0]).status_code == 200
        response = guest.attest(topology.replica_urls[1])
        assert response.status_code == 503, response.text
        assert error_type(response) == "ServiceUnavailable"
        assert "PostgreSQL" in response.json()["detail"]
        time.sleep(1.5)
    finally:
        topology.postgres.start()
    assert _recovered(topology) < 30
    thread.join(timeout=100)
    assert results, "storm did not finish"
    assert results[0].delivered == 30, results[0].report()
    assert results[0].wrong_releases == 0
    # Nothing stored was lost: both resources are still served by every replica.
    for url in topology.replica_urls:
        guest = StepGuest(topology.platform)
        assert guest.auth(url).status_code == 200
        assert guest.attest(url).status_code == 200
        assert guest.open(guest.resource(url, "default/vm/marker")) == marker
        assert guest.open(guest.resource(url, RESOURCE)) == SECRET

"""KBS client behaviour against a protocol-speaking test KBS: success, reuse, retry, refusal, malice."""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest

from teegate.attester.client import KbsClient, RetryPolicy
from teegate.attester.errors import (
    AttestationRefused,
    KbsProtocolError,
    KbsTlsError,
    KbsUnreachable,
    ResourceMissing,
)
from teegate.attester.keys import KeyAlgorithm
from teegate.attester.providers.sample import SampleProvider
from teegate.attester.uri import parse_resource
from teegate.errors import ConfigError
from tests.netutil import free_port
from tests.unit.attester.fake_kbs import Behaviour, FakeKbs
from tests.unit.attester.tlsutil import make_ca, server_context

pytestmark = pytest.mark.timeout(30)

REF = parse_resource("default/key/1")


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def _client(url: str, **kw: object) -> KbsClient:
    kw.setdefault("retry", RetryPolicy(attempts=4, deadline=30, initial_delay=0.01, max_delay=0.05))
    return KbsClient(url, SampleProvider(), rng=random.Random(7), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", list(KeyAlgorithm))
def test_get_resource_each_key_type(algorithm: KeyAlgorithm) -> None:
    with FakeKbs() as kbs, _client(kbs.url, key_algorithm=algorithm) as client:
        assert client.get_resource(REF) == b"s3cret"
        assert kbs.requests == [
            "POST /kbs/v0/auth",
            "POST /kbs/v0/attest",
            "GET /kbs/v0/resource/default/key/1",
        ]


def test_token_reused_then_rehandshake_after_401() -> None:
    with FakeKbs() as kbs, _client(kbs.url) as client:
        client.get_resource(REF)
        client.get_resource(REF)
        assert kbs.handshakes == 1
        kbs.sessions.clear()  # the KBS forgot us (restart): 401 → one new handshake
        assert client.get_resource(REF) == b"s3cret"
        assert kbs.handshakes == 2


def test_attest_returns_token() -> None:
    with FakeKbs() as kbs, _client(kbs.url) as client:
        token = client.attest()
        assert token.count(".") == 2


def test_refusal_stops_at_once_with_the_kbs_detail() -> None:
    sleeps = Sleeps()
    with (
        FakeKbs(Behaviour(attest_refusal="TCB status OutOfDate is not allowed")) as kbs,
        _client(kbs.url, sleep=sleeps) as client,
    ):
        with pytest.raises(AttestationRefused, match=r"PolicyDeny.*TCB status OutOfDate") as info:
            client.get_resource(REF)
        assert info.value.detail == "TCB status OutOfDate is not allowed"
        assert sleeps.calls == [] and kbs.handshakes == 1


def test_missing_resource() -> None:
    with (
        FakeKbs() as kbs,
        _client(kbs.url) as client,
        pytest.raises(ResourceMissing, match=r"default/key/absent"),
    ):
        client.get_resource(parse_resource("kbs:///default/key/absent"))


def test_resource_denied_by_policy_is_refusal() -> None:
    body = b'{"type":"https://github.com/confidential-containers/kbs/errors/PolicyDeny","detail":"resource policy denied"}'
    with (
        FakeKbs(Behaviour(resource_status=(401, body))) as kbs,
        _client(kbs.url) as client,
        pytest.raises(AttestationRefused, match=r"resource policy denied"),
    ):
        client.get_resource(REF)


def test_503_is_retried_with_backoff() -> None:
    sleeps = Sleeps()
    with FakeKbs(Behaviour(fail_503=2)) as kbs, _client(kbs.url, sleep=sleeps) as client:
        assert client.get_resource(REF) == b"s3cret"
    assert len(sleeps.calls) == 2
    assert 0.005 <= sleeps.calls[0] <= 0.01 and 0.01 <= sleeps.calls[1] <= 0.02  # doubling, jittered


def test_down_kbs_exhausts_attempts() -> None:
    sleeps = Sleeps()
    client = _client(f"http://127.0.0.1:{free_port()}", sleep=sleeps)
    with pytest.raises(KbsUnreachable) as info:
        client.get_resource(REF)
    assert len(sleeps.calls) == 3
    assert "gave up on resource default/key/1 after 4 attempt(s)" in info.value.__notes__[0]


def test_kbs_down_then_up_succeeds_within_deadline() -> None:
    port = free_port()
    kbs = FakeKbs(port=port)
    starter = threading.Timer(1.0, kbs.__enter__)
    started = time.monotonic()
    starter.start()
    try:
        client = _client(
            kbs.url, retry=RetryPolicy(attempts=50, deadline=15, initial_delay=0.1, max_delay=0.4)
        )
        assert client.get_resource(REF) == b"s3cret"
        elapsed = time.monotonic() - started
        assert 1.0 <= elapsed < 5
    finally:
        starter.join()
        kbs.__exit__()


def test_deadline_bounds_total_time() -> None:
    client = _client(
        f"http://127.0.0.1:{free_port()}",
        retry=RetryPolicy(attempts=1000, deadline=1.5, initial_delay=0.2, max_delay=0.2),
    )
    started = time.monotonic()
    with pytest.raises(KbsUnreachable):
        client.get_resource(REF)
    assert time.monotonic() - started < 2.5


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        (Behaviour(auth_body=b"<html>not json"), "challenge is not JSON"),
        (Behaviour(auth_body=b'{"nonce": 5}'), "challenge is malformed"),
        (Behaviour(auth_body=b"[1,2]"), "not a JSON object"),
        (Behaviour(oversize=2 * 1024 * 1024), "exceeds"),
        (Behaviour(wrong_key=True), "does not decrypt with this TEE key"),
        (Behaviour(resource_body=b"garbage"), "not a JWE"),
        (Behaviour(resource_status=(302, b"moved")), "HTTP 302"),
        (
            Behaviour(
                resource_body=json.dumps(
                    {
                        "protected": "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0",
                        "encrypted_key": "",
                        "iv": "",
                        "ciphertext": "",
                        "tag": "",
                    }
                ).encode()
            ),
            "alg='dir'",
        ),
        (Behaviour(resource_body=b"{" * 100000), "not a JWE"),
        (Behaviour(resource_body=b"x" * (8 * 1024 * 1024 + 10)), "exceeds"),
    ],
)
def test_malicious_kbs_gets_a_clear_error_and_no_secret(behaviour: Behaviour, message: str) -> None:
    sleeps = Sleeps()
    with (
        FakeKbs(behaviour) as kbs,
        _client(kbs.url, sleep=sleeps) as client,
        pytest.raises(KbsProtocolError, match=message),
    ):
        client.get_resource(REF)
    assert sleeps.calls == []  # a broken KBS is not retried


def test_tls_custom_ca(tmp_path: Path) -> None:
    ca_path, ca_key, ca_cert = make_ca(tmp_path, "good-ca")
    other_ca, _, _ = make_ca(tmp_path, "wrong-ca")
    with FakeKbs(tls=server_context(tmp_path, ca_key, ca_cert)) as kbs:
        with _client(kbs.url, cert_file=ca_path) as client:
            assert client.get_resource(REF) == b"s3cret"
        sleeps = Sleeps()
        with (
            _client(kbs.url, cert_file=other_ca, sleep=sleeps) as client,
            pytest.raises(KbsTlsError, match=r"does not verify against the trusted CA"),
        ):
            client.get_resource(REF)
        assert sleeps.calls == []
        assert kbs.handshakes == 1


def test_plain_http_off_loopback_needs_the_insecure_flag() -> None:
    with pytest.raises(ConfigError, match=r"plain HTTP off loopback"):
        KbsClient("http://10.0.0.1:8080", SampleProvider())
    KbsClient("http://10.0.0.1:8080", SampleProvider(), insecure_http=True).close()
    with pytest.raises(ConfigError, match=r"must be http"):
        KbsClient("ftp://kbs", SampleProvider())

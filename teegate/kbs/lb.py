"""A small round-robin HTTP reverse proxy in front of KBS replicas, with no affinity.

Every request goes to the next replica in turn, whatever connection it came on, so the three
steps of one handshake (``/auth``, ``/attest``, ``/resource``) normally land on three different
replicas: that is the point (docs/adr/0005-round-robin-proxy.md). It is a test and benchmark
tool for the scale-out topology on one machine, not a production load balancer (use the
Kubernetes Service or an ingress there).

Failover is passive and safe: when a replica refuses the connection (nothing was sent), the
request goes to the next one and the refusing replica is skipped for :data:`COOLDOWN_SECONDS`.
A replica that dies while holding a request yields ``502``; the client retries. Request bodies
are bounded (:data:`MAX_BODY_BYTES`), hop-by-hop headers are dropped, and the proxy speaks plain
HTTP on loopback only unless told ``insecure_http`` (it terminates nothing).

    python -m teegate.kbs.lb --listen 127.0.0.1:8080 --backend 127.0.0.1:8081 --backend 127.0.0.1:8082
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import httpx

from teegate.errors import ConfigError
from teegate.kbs.config import is_loopback, parse_listen

__all__ = [
    "COOLDOWN_SECONDS",
    "MAX_BODY_BYTES",
    "Backend",
    "RoundRobinProxy",
    "main",
    "parse_backend",
]

_log = logging.getLogger("teegate.kbs.lb")

#: Largest request body forwarded (the KBS's own limit is 2 MiB by default; resources 1 MiB).
MAX_BODY_BYTES: Final = 8 * 1024 * 1024
#: Largest response body relayed.
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
#: How long a replica that refused a connection is skipped.
COOLDOWN_SECONDS: Final = 1.0
#: Connections kept open to each replica.
_POOL_PER_BACKEND: Final = 64
_HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_ERROR_PREFIX: Final = "https://github.com/confidential-containers/kbs/errors"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(slots=True)
class Backend:
    """One replica: ``http://host:port`` plus counters."""

    url: str
    down_until: float = 0.0
    requests: int = 0
    failures: int = 0


def parse_backend(text: str) -> str:
    """``HOST:PORT`` or ``http://HOST:PORT`` → ``http://HOST:PORT`` (plain HTTP to loopback only)."""
    target = text.strip()
    if target.startswith("https://"):
        raise ConfigError(f"backend {text!r}: the proxy speaks plain HTTP to replicas on this machine")
    target = target.removeprefix("http://").rstrip("/")
    host, _port = parse_listen(target)
    if not is_loopback(host):
        raise ConfigError(f"backend {text!r} is not on loopback: the proxy is for one-machine topologies")
    return f"http://{target}"


def _error(status: int, variant: str, detail: str) -> tuple[int, bytes]:
    body = json.dumps({"type": f"{_ERROR_PREFIX}/{variant}", "detail": detail}, separators=(",", ":"))
    return status, body.encode()


@dataclass
class RoundRobinProxy:
    """An ASGI app forwarding each request to the next live backend."""

    backends: Sequence[str]
    timeout: float = 60.0
    clock: Callable[[], float] = time.monotonic
    _pool: list[Backend] = field(init=False)
    _order: itertools.cycle[int] = field(init=False)
    _client: httpx.AsyncClient | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not self.backends:
            raise ConfigError("the proxy needs at least one --backend")
        self._pool = [Backend(parse_backend(b)) for b in self.backends]
        self._order = itertools.cycle(range(len(self._pool)))

    @property
    def pool(self) -> list[Backend]:
        """The backends with their counters (for logs and tests)."""
        return self._pool

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(
                max_connections=_POOL_PER_BACKEND * len(self._pool),
                max_keepalive_connections=_POOL_PER_BACKEND * len(self._pool),
                keepalive_expiry=2.0,  # below uvicorn's 5 s so the proxy, not the replica, closes idle ones
            )
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=2.0), limits=limits, follow_redirects=False
            )
        return self._client

    def _candidates(self) -> list[Backend]:
        """All backends starting at the next in turn; those cooling down go last."""
        start = next(self._order)
        ordered = [self._pool[(start + i) % len(self._pool)] for i in range(len(self._pool))]
        now = self.clock()
        return [b for b in ordered if b.down_until <= now] + [b for b in ordered if b.down_until > now]

    async def forward(
        self, method: str, target: str, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send one request to the next live backend; ``(status, headers, body)``."""
        out_headers = [(k, v) for k, v in headers if k.decode("latin-1").lower() not in _HOP_BY_HOP]
        last = ""
        for backend in self._candidates():
            backend.requests += 1
            try:
                response = await self._http().request(
                    method, backend.url + target, headers=out_headers, content=body
                )
            except httpx.ConnectError as exc:
                # Nothing reached the replica: safe to try the next one.
                backend.failures += 1
                backend.down_until = self.clock() + COOLDOWN_SECONDS
                last = f"{backend.url}: {exc or type(exc).__name__}"
                continue
            except httpx.HTTPError as exc:
                backend.failures += 1
                status, text = _error(
                    502,
                    "ServiceUnavailable",
                    f"replica {backend.url} failed mid-request ({type(exc).__name__})",
                )
                return status, [(b"content-type", b"application/json")], text
            content = response.content
            if len(content) > MAX_RESPONSE_BYTES:
                status, text = _error(502, "ServiceUnavailable", "replica response too large")
                return status, [(b"content-type", b"application/json")], text
            relay = [
                (k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in _HOP_BY_HOP
            ]
            return response.status_code, relay, content
        status, text = _error(503, "ServiceUnavailable", f"no KBS replica accepted the connection ({last})")
        return status, [(b"content-type", b"application/json")], text

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        chunks: list[bytes] = []
        total = 0
        too_large = False
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                too_large = True
            elif chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if too_large:
            status, body = _error(413, "PayloadTooLarge", f"request body exceeds {MAX_BODY_BYTES} bytes")
            headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json")]
        else:
            target = scope.get("raw_path") or scope["path"].encode()
            query = scope.get("query_string", b"")
            path = target.decode("latin-1") + (("?" + query.decode("latin-1")) if query else "")
            status, headers, body = await self.forward(
                scope["method"], path, list(scope.get("headers", [])), b"".join(chunks)
            )
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                    self._client = None
                await send({"type": "lifespan.shutdown.complete"})
                return


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m teegate.kbs.lb --listen HOST:PORT --backend HOST:PORT …``."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="teegate-kbs-lb", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to listen on")
    parser.add_argument("--backend", action="append", default=[], help="replica HOST:PORT (repeat)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per forwarded request")
    parser.add_argument(
        "--insecure-http", action="store_true", help="INSECURE: listen with plain HTTP off loopback"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forwarded request otherwise
    try:
        host, port = parse_listen(args.listen)
        if not is_loopback(host) and not args.insecure_http:
            raise ConfigError(f"refusing plain HTTP on {host}; pass --insecure-http to allow it")
        proxy = RoundRobinProxy(args.backend, timeout=args.timeout)
    except ConfigError as exc:
        print(f"teegate-kbs-lb: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    insecure = "plain HTTP off loopback" if not is_loopback(host) else "none"
    _log.info(
        "round-robin proxy on http://%s:%d → %s (no affinity); insecure options: %s",
        host,
        port,
        ", ".join(b.url for b in proxy.pool),
        insecure,
    )
    config = uvicorn.Config(
        proxy,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        backlog=4096,
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()

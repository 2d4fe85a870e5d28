"""A small round-robin HTTP/1.1 reverse proxy in front of KBS replicas, with no affinity.

Every request goes to the next replica in turn, whatever client connection it came on, so the
three steps of one handshake (``/auth``, ``/attest``, ``/resource``) normally land on different
replicas: that is the point (docs/adr/0007-scaleout-proxy.md). It is the test and benchmark
front of the scale-out topology on one machine, not a production load balancer (a Kubernetes
Service or an ingress does that job there).

Failover is passive and safe: when a replica refuses the connection (nothing was sent), the
request goes to the next one and the refusing replica is skipped for :data:`COOLDOWN_SECONDS`.
A replica that dies while holding a request yields ``502``; the client retries (only a read or
``/auth`` found unanswered on a kept-alive connection is sent again, as the replica may just have
closed it idle: an attestation is never sent twice). Bounded: request
head (:data:`MAX_HEAD_BYTES`), request body (:data:`MAX_BODY_BYTES`), response body
(:data:`MAX_RESPONSE_BYTES`). Request bodies must carry ``Content-Length`` (``Transfer-Encoding``
is refused with 501). Hop-by-hop headers are dropped. Plain HTTP on loopback only unless
``--insecure-http``; backends on loopback only.

    python -m teegate.kbs.lb --listen 127.0.0.1:8080 --backend 127.0.0.1:8081 --backend 127.0.0.1:8082
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from teegate.errors import ConfigError
from teegate.kbs.config import is_loopback, parse_listen

__all__ = [
    "COOLDOWN_SECONDS",
    "MAX_BODY_BYTES",
    "MAX_HEAD_BYTES",
    "MAX_RESPONSE_BYTES",
    "Backend",
    "RoundRobinProxy",
    "main",
    "parse_backend",
]

_log = logging.getLogger("teegate.kbs.lb")

#: Largest request or response head (request line / status line plus headers).
MAX_HEAD_BYTES: Final = 64 * 1024
#: Largest request body forwarded (the KBS's own default limit is 2 MiB).
MAX_BODY_BYTES: Final = 8 * 1024 * 1024
#: Largest response body relayed.
MAX_RESPONSE_BYTES: Final = 16 * 1024 * 1024
#: How long a replica that refused a connection is skipped.
COOLDOWN_SECONDS: Final = 1.0
#: Idle connections to a replica are dropped after this (below uvicorn's 5 s keep-alive, so the
#: proxy closes an idle connection before the replica does and never writes into a closing one).
KEEPALIVE_SECONDS: Final = 2.0
#: Idle client connections are closed after this.
CLIENT_IDLE_SECONDS: Final = 30.0
_CONNECT_TIMEOUT: Final = 2.0
_MAX_IDLE_PER_BACKEND: Final = 128
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
_ERROR_PREFIX: Final = "https://github.com/confidential-containers/kbs/errors"
_NO_BODY_STATUS: Final = frozenset({204, 304})


class _HttpError(Exception):
    """A request the proxy answers itself (status, Trustee-style error variant, detail)."""

    def __init__(self, status: int, variant: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.variant = variant
        self.detail = detail


_REPLAYABLE_POSTS: Final = (b"POST /kbs/v0/auth ", b"POST /kbs/v0/auth?")


def _replayable(request: bytes) -> bool:
    """Whether sending ``request`` twice is harmless: reads, and ``/auth`` (a new challenge)."""
    return request.startswith((b"GET ", b"HEAD ")) or request.startswith(_REPLAYABLE_POSTS)


class _UpstreamFailed(Exception):
    """The replica failed after the request may have reached it (not retried: 502)."""


@dataclass(slots=True)
class Backend:
    """One replica (``host``, ``port``), its idle connections and counters."""

    host: str
    port: int
    down_until: float = 0.0
    requests: int = 0
    failures: int = 0
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def parse_backend(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``http://HOST:PORT`` → (host, port); replicas must be on loopback."""
    target = text.strip()
    if target.startswith("https://"):
        raise ConfigError(f"backend {text!r}: the proxy speaks plain HTTP to replicas on this machine")
    host, port = parse_listen(target.removeprefix("http://").rstrip("/"))
    if not is_loopback(host):
        raise ConfigError(f"backend {text!r} is not on loopback: the proxy is for one-machine topologies")
    return host, port


def _error_response(status: int, variant: str, detail: str, *, close: bool) -> bytes:
    body = json.dumps({"type": f"{_ERROR_PREFIX}/{variant}", "detail": detail}, separators=(",", ":"))
    reason = {413: "Payload Too Large", 431: "Request Header Fields Too Large", 501: "Not Implemented"}
    head = (
        f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n" + ("connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode("latin-1") + body.encode()


def _parse_head(head: bytes, what: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """(start line, [(lower-case name, value)]) of an HTTP/1.x head; malformed → 400."""
    lines = head[:-4].split(b"\r\n")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip() or line[:1] in (b" ", b"\t"):
            raise _HttpError(400, "InvalidRequest", f"malformed {what} header line")
        headers.append((name.lower(), value.strip()))
    return lines[0], headers


def _content_length(headers: list[tuple[bytes, bytes]], limit: int, what: str) -> int | None:
    values = {v for k, v in headers if k == b"content-length"}
    if not values:
        return None
    if len(values) != 1 or not next(iter(values)).isdigit() or len(next(iter(values))) > 12:
        raise _HttpError(400, "InvalidRequest", f"bad Content-Length in {what}")
    size = int(next(iter(values)))
    if size > limit:
        raise _HttpError(413, "PayloadTooLarge", f"{what} body of {size} bytes exceeds {limit}")
    return size


def _connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    return {t.strip().lower() for k, v in headers if k == b"connection" for t in v.split(b",")}


class RoundRobinProxy:
    """Forwards each request to the next live backend; :meth:`serve` runs it."""

    def __init__(
        self, backends: Sequence[str], *, timeout: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not backends:
            raise ConfigError("the proxy needs at least one --backend")
        self.pool = [Backend(*parse_backend(b)) for b in backends]
        self.timeout = timeout
        self._clock = clock
        self._order = itertools.cycle(range(len(self.pool)))

    def _candidates(self) -> list[Backend]:
        """All backends starting at the next in turn; those cooling down go last."""
        start = next(self._order)
        ordered = [self.pool[(start + i) % len(self.pool)] for i in range(len(self.pool))]
        now = self._clock()
        return [b for b in ordered if b.down_until <= now] + [b for b in ordered if b.down_until > now]

    # --- upstream ----------------------------------------------------------------------------

    def _take_idle(self, backend: Backend) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        now = self._clock()
        while backend.idle:
            reader, writer, since = backend.idle.pop()
            if now - since < KEEPALIVE_SECONDS and not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        return None

    def _give_back(
        self, backend: Backend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if len(backend.idle) < _MAX_IDLE_PER_BACKEND:
            backend.idle.append((reader, writer, self._clock()))
        else:
            writer.close()

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, method: bytes
    ) -> tuple[bytes, bool]:
        """Send ``request``, read one response; (raw response, connection reusable)."""
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, headers = _parse_head(head, "response")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
            raise _UpstreamFailed("malformed status line")
        status = int(parts[1])
        reusable = b"close" not in _connection_tokens(headers) and parts[0] == b"HTTP/1.1"
        if method == b"HEAD" or status in _NO_BODY_STATUS or 100 <= status < 200:
            body = b""
        elif any(k == b"transfer-encoding" for k, _ in headers):
            body = await self._read_chunked(reader)
        else:
            try:
                length = _content_length(headers, MAX_RESPONSE_BYTES, "response")
            except _HttpError as exc:
                raise _UpstreamFailed(exc.detail) from None
            if length is None:
                body = await reader.read(MAX_RESPONSE_BYTES + 1)
                reusable = False
            else:
                body = await reader.readexactly(length)
        if len(body) > MAX_RESPONSE_BYTES:
            raise _UpstreamFailed("response too large")
        kept = [(k, v) for k, v in headers if k not in _HOP_BY_HOP]
        out = bytearray(status_line + b"\r\n")
        for name, value in kept:
            out += name + b": " + value + b"\r\n"
        out += b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        return bytes(out), reusable

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _UpstreamFailed("bad chunk size") from None
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return bytes(body)
            if len(body) + size > MAX_RESPONSE_BYTES:
                raise _UpstreamFailed("response too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)

    async def forward(self, method: bytes, request: bytes) -> bytes:
        """Send one (already rewritten, Host-less) request to the next live backend."""
        last = "no replica configured"
        for backend in self._candidates():
            backend.requests += 1
            host_line = f"host: {backend.host}:{backend.port}\r\n".encode()
            line_end = request.index(b"\r\n") + 2
            wire = request[:line_end] + host_line + request[line_end:]
            pooled = self._take_idle(backend)
            if pooled is not None:
                try:
                    response, reusable = await asyncio.wait_for(
                        self._exchange(*pooled, wire, method), self.timeout
                    )
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    # A kept-alive connection that had been closed: if nothing came back, the
                    # replica closed it idle, or died holding the request. Only a request that
                    # may arrive twice is sent again (on a fresh connection below): a re-sent
                    # attestation would find its challenge consumed (401), where a 502 makes the
                    # guest start a fresh handshake.
                    pooled[1].close()
                    if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                        backend.failures += 1
                        return self._bad_gateway(backend, "closed mid-response")
                    if not _replayable(request):
                        backend.failures += 1
                        return self._bad_gateway(backend, "closed before answering")
                except (TimeoutError, asyncio.LimitOverrunError, _UpstreamFailed, _HttpError, OSError) as exc:
                    pooled[1].close()
                    backend.failures += 1
                    return self._bad_gateway(backend, type(exc).__name__)
                else:
                    if reusable:
                        self._give_back(backend, *pooled)
                    else:
                        pooled[1].close()
                    return response
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(backend.host, backend.port, limit=MAX_HEAD_BYTES),
                    _CONNECT_TIMEOUT,
                )
            except (OSError, TimeoutError) as exc:
                # Nothing reached this replica: safe to try the next one.
                backend.failures += 1
                backend.down_until = self._clock() + COOLDOWN_SECONDS
                last = (
                    f"{backend.url}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc!r}"
                )
                continue
            try:
                response, reusable = await asyncio.wait_for(
                    self._exchange(reader, writer, wire, method), self.timeout
                )
            except (
                TimeoutError,
                asyncio.IncompleteReadError,
                asyncio.LimitOverrunError,
                _UpstreamFailed,
                _HttpError,
                OSError,
            ) as exc:
                writer.close()
                backend.failures += 1
                return self._bad_gateway(backend, type(exc).__name__)
            if reusable:
                self._give_back(backend, reader, writer)
            else:
                writer.close()
            return response
        return _error_response(
            503, "ServiceUnavailable", f"no KBS replica accepted the connection ({last})", close=False
        )

    @staticmethod
    def _bad_gateway(backend: Backend, why: str) -> bytes:
        detail = f"replica {backend.url} failed mid-request ({why}); retry"
        return _error_response(502, "ServiceUnavailable", detail, close=False)

    # --- downstream --------------------------------------------------------------------------

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes, bool] | None:
        """One client request → (method, rewritten request, keep the client connection)."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLIENT_IDLE_SECONDS)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            return None
        except asyncio.LimitOverrunError:
            raise _HttpError(431, "InvalidRequest", f"request head exceeds {MAX_HEAD_BYTES} bytes") from None
        request_line, headers = _parse_head(head, "request")
        parts = request_line.split(b" ")
        if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1].startswith(b"/"):
            raise _HttpError(400, "InvalidRequest", "malformed request line")
        method, target, version = parts
        if any(k == b"transfer-encoding" for k, _ in headers):
            raise _HttpError(501, "InvalidRequest", "Transfer-Encoding request bodies are not supported")
        length = _content_length(headers, MAX_BODY_BYTES, "request")
        body = await reader.readexactly(length) if length else b""
        tokens = _connection_tokens(headers)
        keep = b"close" not in tokens if version == b"HTTP/1.1" else b"keep-alive" in tokens
        dropped = _HOP_BY_HOP | tokens
        out = bytearray(method + b" " + target + b" HTTP/1.1\r\n")
        for name, value in headers:
            if name not in dropped:
                out += name + b": " + value + b"\r\n"
        if length is not None or method in (b"POST", b"PUT", b"PATCH"):
            out += b"content-length: " + str(len(body)).encode() + b"\r\n"
        out += b"\r\n" + body
        return method, bytes(out), keep

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection: requests in order, each to the next replica."""
        try:
            while True:
                try:
                    request = await self._read_request(reader)
                except _HttpError as exc:
                    writer.write(_error_response(exc.status, exc.variant, exc.detail, close=True))
                    await writer.drain()
                    return
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if request is None:
                    return
                method, wire, keep = request
                response = await self.forward(method, wire)
                if not keep:
                    end = response.index(b"\r\n\r\n")
                    response = response[:end] + b"\r\nconnection: close" + response[end:]
                writer.write(response)
                await writer.drain()
                if not keep:
                    return
        except ConnectionError:
            return
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    async def serve(self, host: str, port: int, *, ready: Callable[[int], None] | None = None) -> None:
        """Listen on ``host:port`` (0: any free port, reported to ``ready``) until cancelled."""
        server = await asyncio.start_server(self.handle, host, port, limit=MAX_HEAD_BYTES, backlog=4096)
        bound = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready(bound)
        async with server:
            await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m teegate.kbs.lb --listen HOST:PORT --backend HOST:PORT …``."""
    parser = argparse.ArgumentParser(prog="teegate-kbs-lb", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT to listen on")
    parser.add_argument("--backend", action="append", default=[], help="replica HOST:PORT (repeat)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per forwarded request")
    parser.add_argument(
        "--insecure-http", action="store_true", help="INSECURE: listen with plain HTTP off loopback"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    try:
        host, port = parse_listen(args.listen)
        if not is_loopback(host) and not args.insecure_http:
            raise ConfigError(f"refusing plain HTTP on {host}; pass --insecure-http to allow it")
        proxy = RoundRobinProxy(args.backend, timeout=args.timeout)
    except ConfigError as exc:
        print(f"teegate-kbs-lb: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)

    def ready(bound: int) -> None:
        insecure = "plain HTTP off loopback" if not is_loopback(host) else "none"
        _log.info(
            "round-robin proxy on http://%s:%d → %s (no affinity); insecure options: %s",
            host,
            bound,
            ", ".join(b.url for b in proxy.pool),
            insecure,
        )

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        asyncio.run(proxy.serve(host, port, ready=ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"teegate-kbs-lb: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

"""The real admin API (teegate.kbs.admin_api) under uvicorn on 127.0.0.1, for tests.

The server runs its own event loop in a thread; :meth:`AdminApiServer.run` executes a coroutine
there (to inspect or seed the real store). An optional ASGI recorder keeps every request byte
for byte so the CLI wire tests written against the recording double run unchanged here.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Coroutine, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from teegate.kbs.admin_api import AdminContext, admin_routes
from teegate.kbs.admin_auth import AdminAuthConfig, JwksFileProvider
from teegate.kbs.audit import AuditLog
from teegate.kbs.policy import PolicyEngine
from teegate.kbs.storage import PolicyKind, ReferenceValueNotFound, ResourcePath, Storage, open_storage
from teegate.kbs.storage.base import RESOURCE_POLICY_ID, PolicyNotFound, StorageSettings
from tests.integration.kbs_storage.admin_server import Recorded

T = TypeVar("T")


class _Recorder:
    """ASGI middleware: buffer each HTTP request body, record it, replay it to the app."""

    def __init__(self, app: ASGIApp, sink: list[Recorded]) -> None:
        self.app = app
        self.sink = sink

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path = scope["path"] + (("?" + scope["query_string"].decode()) if scope.get("query_string") else "")
        self.sink.append(Recorded(scope["method"], path, headers, body))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class AdminApiServer:
    """Real storage (SQLite under ``data_dir``), real policy engine, real admin routes."""

    def __init__(
        self,
        data_dir: Path,
        auth: AdminAuthConfig,
        *,
        dev: bool = False,
        record: bool = False,
        jwks: Sequence[JwksFileProvider] = (),
    ) -> None:
        self.data_dir = data_dir
        self.auth = auth
        self.dev = dev
        self.jwks = tuple(jwks)
        self.requests: list[Recorded] = []
        self._record = record
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Future[None] | None = None
        self.storage: Storage | None = None
        self.ctx: AdminContext | None = None
        self.url = ""

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        """Run ``coro`` on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _open(self) -> None:
        self.storage = await open_storage(StorageSettings(data_dir=self.data_dir))
        engine = PolicyEngine(self.storage.policies, self.storage.reference_values, dev=self.dev)
        self.ctx = AdminContext(
            storage=self.storage, admin_auth=self.auth, policy=engine, audit=AuditLog(), jwks=self.jwks
        )
        app: ASGIApp = Starlette(routes=admin_routes(self.ctx))
        if self._record:
            app = _Recorder(app, self.requests)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)
        self._task = asyncio.ensure_future(self._server.serve(sockets=[sock]))
        for _ in range(500):
            if self._server.started:
                return
            await asyncio.sleep(0.01)
        raise RuntimeError("uvicorn did not start")

    def start(self) -> str:
        self._thread.start()
        self.run(self._open())
        return self.url

    async def _close(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, 10)
        if self.storage is not None:
            await self.storage.close()

    def stop(self) -> None:
        try:
            self.run(self._close(), timeout=20)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    # --- views of the real store, shaped like the recording double's attributes ---

    @property
    def resources(self) -> _Resources:
        return _Resources(self)

    @property
    def resource_policy(self) -> bytes | None:
        assert self.storage is not None
        try:
            stored = self.run(self.storage.policies.get(PolicyKind.RESOURCE, RESOURCE_POLICY_ID))
        except PolicyNotFound:
            return None
        return stored.text.encode()

    @property
    def attestation_policies(self) -> _AttestationPolicies:
        return _AttestationPolicies(self)

    @property
    def reference_values(self) -> _ReferenceValues:
        return _ReferenceValues(self)


class _Resources:
    def __init__(self, server: AdminApiServer) -> None:
        self._s = server
        assert server.storage is not None
        self._store = server.storage.resources

    def update(self, items: dict[str, bytes]) -> None:
        for path, data in items.items():
            self._s.run(self._store.set(ResourcePath.parse(path), data))

    def __getitem__(self, path: str) -> bytes:
        return self._s.run(self._store.get(ResourcePath.parse(path)))

    def __iter__(self) -> Iterator[str]:
        return iter([str(p) for p in self._s.run(self._store.list_paths())])


class _AttestationPolicies:
    def __init__(self, server: AdminApiServer) -> None:
        self._s = server

    def __getitem__(self, policy_id: str) -> bytes:
        assert self._s.storage is not None
        return self._s.run(self._s.storage.policies.get(PolicyKind.ATTESTATION, policy_id)).text.encode()


class _ReferenceValues:
    def __init__(self, server: AdminApiServer) -> None:
        self._s = server

    def __getitem__(self, name: str) -> Any:
        assert self._s.ctx is not None
        try:
            return self._s.run(self._s.ctx.policy.rvps.get(name)).value
        except ReferenceValueNotFound:
            raise KeyError(name) from None


def now() -> datetime:
    return datetime.now(UTC)

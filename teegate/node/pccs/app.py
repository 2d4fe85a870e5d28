"""A PCCS: Intel PCS v4-compatible collateral API served from storage, filled from any source.

Paths and headers are PCS's (``/sgx|tdx/certification/v4/{tcb,qe/identity}``,
``/sgx/certification/v4/{pckcrl,rootcacrl,pckcert,platforms}``), so :class:`PcsClient` and
Intel's QCNL work against it unchanged. Caching modes as Intel's PCCS ``CachingFillMode``:

* ``lazy`` — a miss (or an entry past its nextUpdate) is fetched from the upstream, stored, served;
* ``req`` — collateral is fetched when a platform registers (``POST …/platforms``); misses are 404;
* ``offline`` — only what is stored (imported by an admin, or kept from earlier runs).

Reads are open. Writes need a token: ``POST …/platforms`` the user or admin token,
``PUT /teegate/v1/collateral`` (import a dcap-qvl bundle) the admin token; tokens are read from
files and compared with :func:`hmac.compare_digest`. No token file, no writes.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from teegate.collateral._documents import bundle_info, document_next_update, pcs_body
from teegate.collateral.pcs import PcsClient
from teegate.collateral.sim import SimSource
from teegate.collateral.source import CollateralSource
from teegate.dcap.collateral import MAX_BUNDLE_BYTES, Collateral, CollateralKey
from teegate.errors import CollateralUnavailable, ConfigError, EvidenceError, TeegateError
from teegate.node.pccs.store import Item, SqlStore

__all__ = ["MAX_REGISTRATION_BYTES", "Mode", "PccsService", "build_app"]

_log = logging.getLogger("teegate.node.pccs")

Mode = Literal["lazy", "req", "offline"]
#: Upper bound on a registration or import request body.
MAX_REGISTRATION_BYTES = 64 * 1024
#: Bound on token files.
_MAX_TOKEN_BYTES = 4096
#: Upstream attempts for one item that names no FMSPC.
_MAX_HINT_KEYS = 8
_FMSPC = re.compile(r"\A[0-9A-Fa-f]{12}\Z")
_REG_FIELDS: dict[str, tuple[int, int, bool]] = {
    # name: (min hex length, max hex length, required)
    "qe_id": (1, 260, True),
    "pce_id": (4, 4, True),
    "cpu_svn": (32, 32, False),
    "pce_svn": (4, 4, False),
    "enc_ppid": (0, 768, False),
}
_HEXCHARS = set("0123456789abcdefABCDEF")


def _read_token(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_TOKEN_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"token file {path}: {exc}") from None
    token = data.strip()
    if not token or len(data) > _MAX_TOKEN_BYTES:
        raise ConfigError(f"token file {path} is empty or larger than {_MAX_TOKEN_BYTES} bytes")
    return token


def _quote_chain(chain: str | None) -> str:
    return urllib.parse.quote(chain or "", safe="")


@dataclass
class _Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "teegate_pccs_requests",
            "PCCS requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.fetches = Counter(
            "teegate_pccs_upstream_fetches",
            "Upstream fetches by outcome.",
            ["outcome"],
            registry=self.registry,
        )


class PccsService:
    """Storage + fill policy behind the HTTP routes."""

    def __init__(
        self,
        store: SqlStore,
        source: CollateralSource | None,
        *,
        mode: Mode = "lazy",
        admin_token_file: Path | None = None,
        user_token_file: Path | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if mode not in ("lazy", "req", "offline"):
            raise ConfigError(f"PCCS mode {mode!r} must be lazy, req or offline")
        if mode != "offline" and source is None:
            raise ConfigError(
                f"PCCS mode {mode} needs an upstream (--upstream, --sim-platform or --directory)"
            )
        self.store = store
        self.source = source
        self.mode = mode
        self.clock = clock
        self._admin = _read_token(admin_token_file)
        self._user = _read_token(user_token_file)
        self.metrics = _Metrics()
        self._inflight: dict[str, asyncio.Future[None]] = {}

    # --- storing -----------------------------------------------------------------------------

    def store_bundle(self, collateral: Collateral, now: datetime) -> CollateralKey:
        """Split a bundle into its PCS items and store them."""
        info = bundle_info(collateral)
        ca = info.ca or "platform"
        nu = info.next_updates
        items = [
            Item(
                f"tcb/{info.tee}/{info.fmspc}",
                pcs_body("tcbInfo", collateral.tcb_info, collateral.tcb_info_signature).encode(),
                collateral.tcb_info_issuer_chain,
                nu["TCB Info"],
            ),
            Item(
                f"qe/{info.tee}",
                pcs_body(
                    "enclaveIdentity", collateral.qe_identity, collateral.qe_identity_signature
                ).encode(),
                collateral.qe_identity_issuer_chain,
                nu["QE Identity"],
            ),
            Item(f"pckcrl/{ca}", collateral.pck_crl, collateral.pck_crl_issuer_chain, nu["PCK CRL"]),
            Item("rootcacrl", collateral.root_ca_crl, None, nu["Root CA CRL"]),
        ]
        for item in items:
            self.store.put(item, now)
        return CollateralKey(info.tee, info.fmspc, ca)

    async def _fill_bundle(self, key: CollateralKey, now: datetime) -> None:
        assert self.source is not None
        try:
            collateral = await self.source.get(key, now=now)
            await asyncio.to_thread(self.store_bundle, collateral, now)
        except (CollateralUnavailable, EvidenceError):
            self.metrics.fetches.labels("error").inc()
            raise
        self.metrics.fetches.labels("ok").inc()

    async def _fill(self, name: str, key: CollateralKey) -> None:
        """Fetch ``name`` (sharing concurrent fetches of the same item)."""
        future = self._inflight.get(name)
        if future is None:
            future = asyncio.ensure_future(self._fetch_item(name, key, self.clock()))
            self._inflight[name] = future
            future.add_done_callback(lambda _f: self._inflight.pop(name, None))
        await asyncio.shield(future)

    async def _fetch_item(self, name: str, key: CollateralKey, now: datetime) -> None:
        if not isinstance(self.source, PcsClient):
            await self._fill_bundle(key, now)
            return
        # A PCS upstream serves items one by one, as Intel's PCCS fetches them.
        pcs = self.source
        nxt: datetime | None
        try:
            async with pcs._client() as client:
                kind = name.split("/", maxsplit=1)[0]
                if kind == "tcb":
                    text, sig, chain = await pcs.tcb_info(client, key.tee, key.fmspc)
                    body, nxt = pcs_body("tcbInfo", text, sig).encode(), document_next_update(text, name)
                elif kind == "qe":
                    text, sig, chain = await pcs.qe_identity(client, key.tee)
                    body, nxt = (
                        pcs_body("enclaveIdentity", text, sig).encode(),
                        document_next_update(text, name),
                    )
                elif kind == "pckcrl":
                    body, chain = await pcs.pck_crl(client, key.ca)
                    nxt = x509.load_der_x509_crl(body).next_update_utc
                else:
                    body, chain = await pcs.root_ca_crl(client), ""
                    nxt = x509.load_der_x509_crl(body).next_update_utc
        except CollateralUnavailable:
            self.metrics.fetches.labels("error").inc()
            raise
        except EvidenceError as exc:
            self.metrics.fetches.labels("error").inc()
            raise CollateralUnavailable(f"{name} from {pcs.collateral_root}: {exc}") from None
        if nxt is None:
            raise CollateralUnavailable(f"{name} from {pcs.collateral_root} has no nextUpdate")
        when = nxt
        await asyncio.to_thread(self.store.put, Item(name, body, chain or None, when), now)
        self.metrics.fetches.labels("ok").inc()

    def hint_keys(self, tee: str | None, ca: str | None) -> list[CollateralKey]:
        """Keys whose bundles hold an item that names no FMSPC (QE Identity, CRLs)."""
        if isinstance(self.source, PcsClient):
            # Fetched item by item: the FMSPC is not part of the request.
            return [CollateralKey(tee or "sgx", "000000000000", ca or "platform")]  # type: ignore[arg-type]
        candidates: list[tuple[str, str]] = []
        available = getattr(self.source, "available_keys", None)
        if callable(available):
            candidates += [(k.fmspc, k.ca) for k in available() if tee in (None, k.tee)]
        candidates += self.store.known_fmspcs()
        for name in self.store.names("tcb/"):
            _, t, f = name.split("/")
            if tee in (None, t):
                candidates.append((f, "platform"))
        keys: list[CollateralKey] = []
        for fmspc, c in candidates:
            for t in (tee,) if tee else ("tdx", "sgx"):
                k = CollateralKey(t, fmspc.upper(), ca or c)  # type: ignore[arg-type]
                if k not in keys:
                    keys.append(k)
        return keys[:_MAX_HINT_KEYS]

    async def item(self, name: str, keys: list[CollateralKey]) -> Item | None:
        """The stored item, filled from upstream first in lazy mode when missing or stale."""
        now = self.clock()
        stored = await asyncio.to_thread(self.store.get, name)
        if self.mode != "lazy" or (stored is not None and now < stored.next_update):
            return stored
        errors = []
        for key in keys:
            try:
                await self._fill(name, key)
            except (CollateralUnavailable, EvidenceError) as exc:
                errors.append(str(exc))
                continue
            filled = await asyncio.to_thread(self.store.get, name)
            if filled is not None:
                return filled
        if stored is not None:
            _log.warning("serving stale %s: upstream failed: %s", name, "; ".join(errors))
            return stored
        if errors:
            _log.info("%s unavailable upstream: %s", name, "; ".join(errors))
        return None

    # --- tokens ------------------------------------------------------------------------------

    @property
    def writes_enabled(self) -> bool:
        return self._admin is not None or self._user is not None

    def authorised(self, request: Request, *, admin_only: bool) -> bool:
        admin = request.headers.get("admin-token", "").encode()
        user = request.headers.get("user-token", "").encode()
        if self._admin is not None and admin and hmac.compare_digest(admin, self._admin):
            return True
        return (
            not admin_only and self._user is not None and bool(user) and hmac.compare_digest(user, self._user)
        )

    # --- registration --------------------------------------------------------------------------

    async def register(self, registration: dict[str, Any]) -> tuple[str | None, str | None]:
        """Store a platform registration; in req mode fetch its collateral now."""
        now = self.clock()
        found = None
        if isinstance(self.source, SimSource):
            found = self.source.lookup_platform(registration)
        elif isinstance(self.source, PcsClient) and registration.get("enc_ppid"):
            cert = await self.source.pck_certificate(
                encrypted_ppid=registration["enc_ppid"],
                cpusvn=registration.get("cpu_svn") or "",
                pcesvn=registration.get("pce_svn") or "",
                pceid=registration["pce_id"],
            )
            if cert.fmspc:
                from teegate.collateral.sim import RegisteredPlatform

                cert_ca = "processor" if (cert.ca or "").upper() == "PROCESSOR" else "platform"
                found = RegisteredPlatform(cert.fmspc.upper(), cert_ca, cert.pem + cert.issuer_chain)
        fmspc, ca = (found.fmspc, found.ca) if found else (None, None)
        await asyncio.to_thread(
            self.store.register, registration, fmspc, ca, found.pck_chain_pem if found else None, now
        )
        if self.mode == "req" and found is not None:
            for tee in ("tdx", "sgx"):
                try:
                    await self._fill_bundle(CollateralKey(tee, found.fmspc, found.ca), now)  # type: ignore[arg-type]
                except (CollateralUnavailable, EvidenceError) as exc:
                    _log.info("registration prefetch of %s collateral for %s: %s", tee, found.fmspc, exc)
        return fmspc, ca


def _validate_registration(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise EvidenceError("registration: expected a JSON object")
    unknown = sorted(set(body) - set(_REG_FIELDS) - {"platform_manifest"})
    if unknown:
        raise EvidenceError(f"registration: unknown member(s) {', '.join(unknown)}")
    for name, (low, high, required) in _REG_FIELDS.items():
        value = body.get(name)
        if value is None:
            if required:
                raise EvidenceError(f"registration: {name} is required")
            continue
        if not isinstance(value, str) or not low <= len(value) <= high or not set(value) <= _HEXCHARS:
            raise EvidenceError(f"registration: {name} must be {low}..{high} hex digits")
    manifest = body.get("platform_manifest")
    if manifest is not None and (not isinstance(manifest, str) or not set(manifest) <= _HEXCHARS):
        raise EvidenceError("registration: platform_manifest must be a hex string or null")
    if manifest is None and not all(body.get(n) for n in ("cpu_svn", "pce_svn", "enc_ppid")):
        raise EvidenceError(
            "registration: cpu_svn, pce_svn and enc_ppid are required without platform_manifest"
        )
    return body


async def _bounded_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_REGISTRATION_BYTES):
        raise EvidenceError(f"request body larger than MAX_REGISTRATION_BYTES ({MAX_REGISTRATION_BYTES})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REGISTRATION_BYTES:
            raise EvidenceError(f"request body larger than MAX_REGISTRATION_BYTES ({MAX_REGISTRATION_BYTES})")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(service: PccsService) -> Starlette:
    """The PCCS HTTP application over ``service``."""

    def counted(
        route: str, handler: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                response = await handler(request)
            except TeegateError as exc:
                status = exc.http_status if exc.http_status in (400, 401, 403, 404, 503) else 500
                response = JSONResponse({"error": str(exc)}, status_code=status)
            service.metrics.requests.labels(route, str(response.status_code)).inc()
            return response

        return wrapped

    def not_found(what: str) -> Response:
        return PlainTextResponse(
            f"{what} not found\n", status_code=404, headers={"Error-Message": f"{what} not found"}
        )

    async def tcb(request: Request) -> Response:
        tee = request.path_params["tee"]
        if tee not in ("sgx", "tdx"):
            return not_found(request.url.path)
        fmspc = request.query_params.get("fmspc", "")
        if not _FMSPC.match(fmspc):
            return PlainTextResponse("fmspc must be 12 hex digits\n", status_code=400)
        fmspc = fmspc.upper()
        keys = [CollateralKey(tee, fmspc, "platform"), CollateralKey(tee, fmspc, "processor")]
        item = await service.item(f"tcb/{tee}/{fmspc}", keys)
        if item is None:
            return not_found(f"{tee.upper()} TCB Info for FMSPC {fmspc}")
        return Response(
            item.body,
            media_type="application/json",
            headers={"TCB-Info-Issuer-Chain": _quote_chain(item.chain)},
        )

    async def qe_identity(request: Request) -> Response:
        tee = request.path_params["tee"]
        if tee not in ("sgx", "tdx"):
            return not_found(request.url.path)
        item = await service.item(f"qe/{tee}", await asyncio.to_thread(service.hint_keys, tee, None))
        if item is None:
            return not_found(f"{tee.upper()} QE Identity")
        return Response(
            item.body,
            media_type="application/json",
            headers={"SGX-Enclave-Identity-Issuer-Chain": _quote_chain(item.chain)},
        )

    async def pck_crl(request: Request) -> Response:
        ca = request.query_params.get("ca", "")
        if ca not in ("platform", "processor"):
            return PlainTextResponse("ca must be platform or processor\n", status_code=400)
        item = await service.item(f"pckcrl/{ca}", await asyncio.to_thread(service.hint_keys, None, ca))
        if item is None:
            return not_found(f"PCK CRL (ca={ca})")
        headers = {"SGX-PCK-CRL-Issuer-Chain": _quote_chain(item.chain)}
        if request.query_params.get("encoding") == "der":
            return Response(item.body, media_type="application/pkix-crl", headers=headers)
        pem = x509.load_der_x509_crl(item.body).public_bytes(Encoding.PEM)
        return Response(pem, media_type="application/x-pem-file", headers=headers)

    async def root_ca_crl(request: Request) -> Response:
        item = await service.item("rootcacrl", await asyncio.to_thread(service.hint_keys, None, None))
        if item is None:
            return not_found("Root CA CRL")
        # PCCS serves the Root CA CRL as a hex string "for backward compatibility".
        return PlainTextResponse(item.body.hex())

    async def pck_cert(request: Request) -> Response:
        qeid = request.query_params.get("qeid")
        if not qeid:
            return not_found("PCK certificate (qeid missing)")
        found = await asyncio.to_thread(service.store.platform, qeid, request.query_params.get("pceid"))
        if found is None or not found[2]:
            return not_found(f"PCK certificate for qeid {qeid[:64]}")
        fmspc, ca, chain = found
        certs = x509.load_pem_x509_certificates((chain or "").encode())
        leaf = certs[0].public_bytes(Encoding.PEM)
        issuer = "".join(c.public_bytes(Encoding.PEM).decode() for c in certs[1:])
        return Response(
            leaf,
            media_type="application/x-pem-file",
            headers={
                "SGX-PCK-Certificate-Issuer-Chain": _quote_chain(issuer),
                "SGX-FMSPC": fmspc or "",
                "SGX-PCK-Certificate-CA-Type": (ca or "platform").upper(),
            },
        )

    async def platforms(request: Request) -> Response:
        if not service.authorised(request, admin_only=False):
            return PlainTextResponse(
                "a valid user-token or admin-token header is required\n", status_code=401
            )
        raw = await _bounded_body(request)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise EvidenceError("registration: body is not JSON") from None
        registration = _validate_registration(body)
        fmspc, _ca = await service.register(registration)
        return JSONResponse({"registered": True, "fmspc": fmspc}, status_code=201)

    async def import_bundle(request: Request) -> Response:
        if not service.authorised(request, admin_only=True):
            return PlainTextResponse("a valid admin-token header is required\n", status_code=401)
        raw = await _bundle(request)
        try:
            collateral = Collateral.from_json(raw)
        except RecursionError:
            raise EvidenceError("collateral bundle: JSON nested too deeply") from None
        key = await asyncio.to_thread(service.store_bundle, collateral, service.clock())
        return JSONResponse({"stored": {"tee": key.tee, "fmspc": key.fmspc, "ca": key.ca}}, status_code=201)

    async def _bundle(request: Request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BUNDLE_BYTES:
                raise EvidenceError(f"bundle larger than MAX_BUNDLE_BYTES ({MAX_BUNDLE_BYTES})")
            chunks.append(chunk)
        return b"".join(chunks)

    async def healthz(request: Request) -> Response:
        await asyncio.to_thread(service.store.platform_count)
        return JSONResponse({"status": "ok", "mode": service.mode})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    tee = "{tee:str}"
    routes = [
        Route(f"/{tee}/certification/v4/tcb", counted("tcb", tcb), methods=["GET"]),
        Route(f"/{tee}/certification/v4/qe/identity", counted("qe/identity", qe_identity), methods=["GET"]),
        Route("/sgx/certification/v4/pckcrl", counted("pckcrl", pck_crl), methods=["GET"]),
        Route("/sgx/certification/v4/rootcacrl", counted("rootcacrl", root_ca_crl), methods=["GET"]),
        Route("/sgx/certification/v4/pckcert", counted("pckcert", pck_cert), methods=["GET"]),
        Route("/sgx/certification/v4/platforms", counted("platforms", platforms), methods=["POST"]),
        Route("/teegate/v1/collateral", counted("import", import_bundle), methods=["PUT"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]

    app = Starlette(routes=routes)
    app.state.service = service
    return app

"""A minimal Kubernetes API server stand-in, for running the real kopf operator in tests.

Written from the public API conventions (https://kubernetes.io/docs/reference/using-api/api-concepts/):
discovery documents, namespaced and cluster-scoped collections, list with ``resourceVersion``, watch
streams of newline-delimited ``{"type", "object"}`` events, create/get/replace/patch/delete, the
``status`` subresource, optimistic concurrency (409 Conflict), finalizers with ``deletionTimestamp``,
and background garbage collection through ``ownerReferences`` (what kube-controller-manager does).

Deliberate simplifications, each one stated:

* TLS with a throw-away CA (clients verify it); no authentication or authorisation: the server
  listens on 127.0.0.1 only, for one test.
* No OpenAPI schema validation; only the CRD's top-level ``spec`` defaults are applied.
* Server-side apply (``application/apply-patch+yaml``) creates the object or merges the applied
  configuration into it like a JSON merge patch (no managed-fields bookkeeping);
  strategic-merge-patch is treated as a JSON merge patch.
* Selectors: ``labelSelector`` with ``key=value`` terms only; anything else is refused (400).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAX_BODY = 1 << 20  # request bodies above this are refused (413)
WATCH_MAX_SECONDS = 300


@dataclass(frozen=True)
class ApiResource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str
    subresources: tuple[str, ...] = ()
    spec_defaults: tuple[tuple[str, Any], ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


_VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]

BUILTIN = (
    ApiResource("", "v1", "namespaces", "Namespace", False, "namespace"),
    ApiResource("", "v1", "secrets", "Secret", True, "secret"),
    ApiResource("", "v1", "configmaps", "ConfigMap", True, "configmap"),
    ApiResource("", "v1", "services", "Service", True, "service", ("status",)),
    ApiResource("", "v1", "events", "Event", True, "event"),
    ApiResource("apps", "v1", "deployments", "Deployment", True, "deployment", ("status",)),
    ApiResource(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        "",
        ("status",),
    ),
)


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch: the ``test``, ``add``, ``replace`` and ``remove`` operations."""
    doc = copy.deepcopy(doc)
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "JSON patch must be a list")
    for op in ops:
        parts = _pointer(op["path"])
        parent: Any = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.get(part)
            if parent is None:
                raise ApiError(422, "Invalid", f"path {op['path']!r} does not exist")
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op["value"]:
                raise ApiError(422, "Invalid", f"test failed at {op['path']!r}")
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                del parent[int(last)]
            else:
                parent.pop(last)
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON patch op {kind!r}")
    return doc


Key = tuple[str, str, str, str]  # group, plural, namespace ("" if cluster-scoped), name


@dataclass
class _Event:
    rv: int
    type: str
    resource: ApiResource
    namespace: str
    obj: dict[str, Any]


@dataclass
class Store:
    resources: dict[tuple[str, str, str], ApiResource] = field(default_factory=dict)
    objects: dict[Key, dict[str, Any]] = field(default_factory=dict)
    log: list[_Event] = field(default_factory=list)
    rv: int = 1
    requests: list[tuple[str, str, str, str]] = field(default_factory=list)  # method, path, type, agent

    def register(self, res: ApiResource) -> None:
        self.resources[(res.group, res.version, res.plural)] = res

    def _record(self, typ: str, res: ApiResource, ns: str, obj: dict[str, Any]) -> None:
        self.log.append(_Event(self.rv, typ, res, ns, copy.deepcopy(obj)))

    def _bump(self, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    def items(self, res: ApiResource, ns: str | None) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(o)
            for (g, p, n, _), o in sorted(self.objects.items())
            if g == res.group and p == res.plural and (ns is None or n == ns)
        ]

    def get(self, res: ApiResource, ns: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((res.group, res.plural, ns, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{res.plural}.{res.group or "core"} "{name}" not found')
        return obj

    def create(self, res: ApiResource, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
        if not isinstance(name, str) or not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        if res.namespaced and meta.get("namespace", ns) != ns:
            raise ApiError(400, "BadRequest", "the namespace of the object does not match the request")
        if res.namespaced and ("", "namespaces", "", ns) not in self.objects:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found')
        key = (res.group, res.plural, ns, name)
        if key in self.objects:
            raise ApiError(
                409, "AlreadyExists", f'{res.plural}.{res.group or "core"} "{name}" already exists'
            )
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = res.group_version, res.kind
        meta = obj["metadata"]
        meta["name"] = name
        if res.namespaced:
            meta["namespace"] = ns
        for k in ("deletionTimestamp", "resourceVersion"):
            meta.pop(k, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if res.spec_defaults:
            spec = obj.setdefault("spec", {})
            for k, v in res.spec_defaults:
                spec.setdefault(k, copy.deepcopy(v))
        if "status" in res.subresources:
            obj.pop("status", None)
        self._bump(obj)
        self.objects[key] = obj
        self._record("ADDED", res, ns, obj)
        return copy.deepcopy(obj)

    def update(
        self, res: ApiResource, ns: str, name: str, new: dict[str, Any], *, subresource: str, check_rv: bool
    ) -> dict[str, Any]:
        """Replace the object with ``new`` under the API server's rules for what a client may change."""
        key = (res.group, res.plural, ns, name)
        old = self.get(res, ns, name)
        new = copy.deepcopy(new)
        new_meta = new.setdefault("metadata", {})
        if check_rv and new_meta.get("resourceVersion") not in (None, old["metadata"]["resourceVersion"]):
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {res.plural} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
            )
        if new_meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the request")
        if subresource == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status")
            if merged["status"] is None:
                merged.pop("status")
        else:
            merged = new
            merged["apiVersion"], merged["kind"] = res.group_version, res.kind
            meta = merged["metadata"]
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "generation", "namespace"):
                if k in old["metadata"]:
                    meta[k] = old["metadata"][k]
                else:
                    meta.pop(k, None)
            if "status" in res.subresources:
                if "status" in old:
                    merged["status"] = old["status"]
                else:
                    merged.pop("status", None)
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if "deletionTimestamp" in meta and added:
                raise ApiError(
                    422, "Invalid", "metadata.finalizers: Forbidden: no new finalizers can be added"
                )
            changed = {k: v for k, v in merged.items() if k not in ("metadata", "status")} != {
                k: v for k, v in old.items() if k not in ("metadata", "status")
            }
            if changed:
                meta["generation"] = old["metadata"].get("generation", 1) + 1
        if merged == old:
            return copy.deepcopy(old)
        self._bump(merged)
        self.objects[key] = merged
        self._record("MODIFIED", res, ns, merged)
        if "deletionTimestamp" in merged["metadata"] and not merged["metadata"].get("finalizers"):
            self._remove(res, ns, name)
        return copy.deepcopy(merged)

    def delete(self, res: ApiResource, ns: str, name: str) -> dict[str, Any]:
        obj = self.get(res, ns, name)
        if obj["metadata"].get("finalizers"):
            if "deletionTimestamp" not in obj["metadata"]:
                obj = copy.deepcopy(obj)
                obj["metadata"]["deletionTimestamp"] = _now()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                self._bump(obj)
                self.objects[(res.group, res.plural, ns, name)] = obj
                self._record("MODIFIED", res, ns, obj)
            return copy.deepcopy(obj)
        return self._remove(res, ns, name)

    def _remove(self, res: ApiResource, ns: str, name: str) -> dict[str, Any]:
        obj = self.objects.pop((res.group, res.plural, ns, name))
        self._bump(obj)
        self._record("DELETED", res, ns, obj)
        uid = obj["metadata"]["uid"]
        for (g, p, n, nm), dep in list(self.objects.items()):  # background garbage collection
            owners = dep["metadata"].get("ownerReferences") or []
            if any(o.get("uid") == uid for o in owners):
                dep_res = next(r for r in self.resources.values() if r.group == g and r.plural == p)
                if (g, p, n, nm) in self.objects:
                    self.delete(dep_res, n, nm)
        return copy.deepcopy(obj)

    def events_after(self, rv: int, res: ApiResource, ns: str | None) -> Iterator[_Event]:
        for ev in self.log:
            if ev.rv > rv and ev.resource == res and (ns is None or ev.namespace == ns):
                yield ev


def resource_from_crd(crd: dict[str, Any]) -> list[ApiResource]:
    spec = crd["spec"]
    out = []
    for ver in spec["versions"]:
        if not ver.get("served", True):
            continue
        schema = ver.get("schema", {}).get("openAPIV3Schema", {})
        props = schema.get("properties", {}).get("spec", {}).get("properties", {})
        defaults = tuple((k, v["default"]) for k, v in props.items() if "default" in v)
        out.append(
            ApiResource(
                spec["group"],
                ver["name"],
                spec["names"]["plural"],
                spec["names"]["kind"],
                spec["scope"] == "Namespaced",
                spec["names"].get("singular", spec["names"]["kind"].lower()),
                tuple(sorted(ver.get("subresources", {}))),
                defaults,
            )
        )
    return out


def _selector_filter(query: Any) -> Any:
    if "fieldSelector" in query:
        raise ApiError(400, "BadRequest", "fieldSelector is not supported by this stand-in")
    terms = [t for t in query.get("labelSelector", "").split(",") if t]
    wanted: dict[str, str] = {}
    for term in terms:
        k, sep, v = term.partition("=")
        if not sep or v.startswith("=") or k.endswith("!"):
            raise ApiError(400, "BadRequest", f"unsupported labelSelector term {term!r}")
        wanted[k] = v

    def ok(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(labels.get(k) == v for k, v in wanted.items())

    return ok


def make_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A throw-away CA and a serving certificate for 127.0.0.1; returns the server context and CA path."""
    now = datetime.now(UTC)

    def cert(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name | None,
        signer: ec.EllipticCurvePrivateKey,
    ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(hours=1))
        )
        if issuer is None:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("stand-in-ca", ca_key, None, ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = cert("kube-apiserver", key, ca.subject, ca_key)
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "apiserver.pem",
        directory / "apiserver.key",
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx, ca_path


class FakeApiServer:
    """The stand-in, served by aiohttp over TLS on 127.0.0.1 in its own thread (``start``/``stop``)."""

    def __init__(self, crd_paths: list[Path], tls_dir: Path) -> None:
        self._ssl, self.ca_path = make_tls(tls_dir)
        self.store = Store()
        for res in BUILTIN:
            self.store.register(res)
        namespaces = self.store.resources[("", "v1", "namespaces")]
        for ns in ("default", "kube-system"):
            self.store.create(namespaces, "", {"metadata": {"name": ns}})
        for path in crd_paths:
            crd = yaml.safe_load(path.read_text())
            for res in resource_from_crd(crd):
                self.store.register(res)
            crd_res = self.store.resources[("apiextensions.k8s.io", "v1", "customresourcedefinitions")]
            self.store.create(crd_res, "", crd)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._changed: asyncio.Condition | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-apiserver", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def stop(self) -> None:
        async def _stop() -> None:
            self._stopping = True
            assert self._changed is not None
            async with self._changed:
                self._changed.notify_all()
            if self._runner is not None:
                await self._runner.cleanup()

        try:
            asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(store, ...)`` on the server's loop (the store is not thread-safe) and notify watchers."""

        async def _run() -> Any:
            result = fn(self.store, *args, **kwargs)
            assert self._changed is not None
            async with self._changed:
                self._changed.notify_all()
            return result

        return asyncio.run_coroutine_threadsafe(_run(), self._loop).result(10)

    def resource(self, group: str, version: str, plural: str) -> ApiResource:
        return self.store.resources[(group, version, plural)]

    # -- HTTP --------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        agent = request.headers.get("User-Agent", "")
        self.store.requests.append((request.method, request.path_qs, request.content_type, agent))
        try:
            return await self._route(request)
        except ApiError as exc:
            return web.json_response(exc.status(), status=exc.code)
        except (AttributeError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
            err = ApiError(400, "BadRequest", f"malformed request: {exc!r}")
            return web.json_response(err.status(), status=400)

    def _discovery(self, group: str, version: str) -> dict[str, Any]:
        resources: list[dict[str, Any]] = []
        for r in self.store.resources.values():
            if (r.group, r.version) != (group, version):
                continue
            resources.append(
                {
                    "name": r.plural,
                    "singularName": r.singular,
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": _VERBS,
                }
            )
            for sub in r.subresources:
                resources.append(
                    {
                        "name": f"{r.plural}/{sub}",
                        "singularName": "",
                        "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        if not resources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}".lstrip("/"),
            "resources": resources,
        }

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["version"]:
            return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.0-teegate-stand-in"})
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if parts == ["apis"]:
            groups: dict[str, list[str]] = {}
            for r in self.store.resources.values():
                if r.group and r.version not in groups.setdefault(r.group, []):
                    groups[r.group].append(r.version)
            return web.json_response(
                {
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [
                        {
                            "name": g,
                            "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                            "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                        }
                        for g, vs in groups.items()
                    ],
                }
            )
        if parts and parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts and parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if not rest:
            if request.method != "GET":
                raise ApiError(405, "MethodNotAllowed", "method not allowed")
            return web.json_response(self._discovery(group, version))
        known = {plural for (g, v, plural) in self.store.resources if (g, v) == (group, version)}
        ns: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in known:
            ns, rest = rest[1], rest[2:]
        if len(rest) > 3 or rest[0] not in known:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        res = self.store.resources[(group, version, rest[0])]
        if res.namespaced != (ns is not None) and len(rest) > 1:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else ""
        if sub and sub not in res.subresources:
            raise ApiError(404, "NotFound", f"subresource {sub!r} not found")
        if name is None:
            if request.method == "GET":
                if request.query.get("watch") in ("true", "1"):
                    return await self._watch(request, res, ns)
                return self._list(request, res, ns)
            if request.method == "POST":
                if res.namespaced and ns is None:
                    raise ApiError(405, "MethodNotAllowed", "create needs a namespace")
                body = await self._body(request)
                return await self._mutate(lambda s: s.create(res, ns or "", body), 201)
            raise ApiError(405, "MethodNotAllowed", "method not allowed")
        return await self._item(request, res, ns or "", name, sub)

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        if len(raw) > MAX_BODY:
            raise ApiError(413, "RequestEntityTooLarge", "request body too large")
        if request.content_type == "application/apply-patch+yaml":
            return yaml.safe_load(raw)
        return json.loads(raw)

    async def _mutate(self, fn: Any, code: int = 200) -> web.Response:
        result = fn(self.store)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()
        return web.json_response(result, status=code)

    def _list(self, request: web.Request, res: ApiResource, ns: str | None) -> web.Response:
        ok = _selector_filter(request.query)
        items = [o for o in self.store.items(res, ns) if ok(o)]
        return web.json_response(
            {
                "kind": f"{res.kind}List",
                "apiVersion": res.group_version,
                "metadata": {"resourceVersion": str(self.store.rv)},
                "items": items,
            }
        )

    async def _watch(self, request: web.Request, res: ApiResource, ns: str | None) -> web.StreamResponse:
        ok = _selector_filter(request.query)
        timeout = min(float(request.query.get("timeoutSeconds", WATCH_MAX_SECONDS)), WATCH_MAX_SECONDS)
        since_raw = request.query.get("resourceVersion", "")
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        if since_raw in ("", "0"):
            since = self.store.rv
            for obj in self.store.items(res, ns):
                if ok(obj):
                    await resp.write(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
        else:
            since = int(since_raw)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        assert self._changed is not None
        try:
            while not self._stopping:
                for ev in list(self.store.events_after(since, res, ns)):
                    since = ev.rv
                    if ok(ev.obj):
                        await resp.write(json.dumps({"type": ev.type, "object": ev.obj}).encode() + b"\n")
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), min(remaining, 1.0))
            await resp.write_eof()
        except ConnectionResetError:  # the client went away (aiohttp's reset error subclasses it)
            pass
        return resp

    async def _item(
        self, request: web.Request, res: ApiResource, ns: str, name: str, sub: str
    ) -> web.StreamResponse:
        store = self.store
        if request.method == "GET":
            return web.json_response(store.get(res, ns, name))
        if request.method == "DELETE":
            return await self._mutate(lambda s: s.delete(res, ns, name))
        if request.method == "PUT":
            body = await self._body(request)
            return await self._mutate(lambda s: s.update(res, ns, name, body, subresource=sub, check_rv=True))
        if request.method != "PATCH":
            raise ApiError(405, "MethodNotAllowed", "method not allowed")
        body = await self._body(request)
        ctype = request.content_type
        if ctype == "application/apply-patch+yaml":
            if not request.query.get("fieldManager"):
                raise ApiError(400, "BadRequest", "fieldManager is required for apply requests")
            if not isinstance(body, dict) or body.get("kind") != res.kind:
                raise ApiError(400, "BadRequest", "apply body must be an object of the resource's kind")
            if (res.group, res.plural, ns, name) not in store.objects:
                return await self._mutate(lambda s: s.create(res, ns, body), 201)
        elif ctype not in (
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/json-patch+json",
        ):
            raise ApiError(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {ctype}"
            )
        current = store.get(res, ns, name)
        patched = (
            json_patch(current, body)
            if ctype == "application/json-patch+json"
            else merge_patch(current, body)
        )
        return await self._mutate(lambda s: s.update(res, ns, name, patched, subresource=sub, check_rv=True))

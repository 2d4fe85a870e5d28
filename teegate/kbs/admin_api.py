"""The KBS admin HTTP API, on the wire exactly as Trustee's kbs-client calls it.

Routes (all under ``/kbs/v0``; every one authorised by :func:`teegate.kbs.admin_auth.authorize`
before its body is read):

==========================================  =====================================================
``POST   /resource/{repo}/{type}/{tag}``    raw body (``application/octet-stream``) → 200 empty
``DELETE /resource/{repo}/{type}/{tag}``    → 200 empty; missing → 401 PluginInternalError
``GET    /resource``                        → JSON array of ``"repo/type/tag"``
``POST   /resource-policy``                 ``{"policy": b64url(rego)}`` → 200 empty
``GET    /resource-policy``                 → JSON array of policy ids (``["resource-policy"]``)
``POST   /attestation-policy``              ``{"type": "rego", "policy_id", "policy": b64url}``
``GET    /attestation-policy``              → JSON array of ids, stored and built-in (teegate)
``GET    /attestation-policy/{id}``         → the Rego text (teegate)
``POST   /reference-value``                 RVPS message ``{"version","type":"sample","payload"}``
``GET    /reference-value/{name}``          → JSON value; missing → 401 RvpsError
``GET    /admin/denials?limit=N``           → ``{"denials": [...]}`` newest first (teegate)
==========================================  =====================================================

``GET /resource/{repo}/{type}/{tag}`` (a release to an attested client) is the protocol's, not
this module's: its route is registered by :mod:`teegate.kbs.app` on the same path with method GET.

Errors are Trustee bodies ``{"type": ".../kbs/errors/<Variant>", "detail"}``: 401/403
AdminAuthAccess, 400 for malformed input (ParsePolicyError, RvpsError, SerdeError), 413
PayloadTooLarge, 404 InvalidRequestPath for bad paths, Trustee's 401 for missing items, 503
ServiceUnavailable when the store is down. Input is validated completely before anything is
written, so a bad request never changes stored state.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from teegate.errors import CollateralUnavailable, TeegateError
from teegate.kbs.admin_auth import AdminAuthConfig, AdminAuthError, JwksFileProvider, authorize
from teegate.kbs.audit import AuditLog
from teegate.kbs.errors import error_body
from teegate.kbs.policy import PolicyEngine, PolicyEvaluationError, PolicySyntaxError
from teegate.kbs.rvps import MAX_RVPS_MESSAGE_BYTES, RvpsError
from teegate.kbs.storage.base import (
    MAX_POLICY_BYTES,
    MAX_RESOURCE_BYTES,
    RESOURCE_POLICY_ID,
    InvalidName,
    PolicyNotFound,
    ReferenceValueNotFound,
    ResourceNotFound,
    ResourcePath,
    Storage,
    StorageReadOnly,
    ValueTooLarge,
    check_resource,
    validate_policy_id,
    validate_reference_value_name,
)

__all__ = [
    "ADMIN_PREFIX",
    "MAX_DENIALS_LIMIT",
    "MAX_POLICY_REQUEST_BYTES",
    "AdminContext",
    "admin_routes",
]

ADMIN_PREFIX: Final = "/kbs/v0"
#: Largest policy request body: a MAX_POLICY_BYTES policy in base64url plus the JSON around it.
MAX_POLICY_REQUEST_BYTES: Final = (MAX_POLICY_BYTES * 4) // 3 + 4096
#: Most denials one request may ask for.
MAX_DENIALS_LIMIT: Final = 1000
_DEFAULT_DENIALS: Final = 50
_JSON: Final = "application/json"
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*={0,2}")

_log = logging.getLogger("teegate.kbs.admin")


@dataclass
class AdminContext:
    """What the admin routes need; built once by the app at start."""

    storage: Storage
    admin_auth: AdminAuthConfig
    policy: PolicyEngine
    audit: AuditLog
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    jwks: Sequence[JwksFileProvider] = ()


class _BadRequest(TeegateError):
    """Malformed admin input; ``variant`` is the Trustee error name used in the body."""

    http_status = 400

    def __init__(self, variant: str, detail: str) -> None:
        self.variant = variant
        super().__init__(detail)


class _TooLarge(TeegateError):
    http_status = 413


def _error(status: int, variant: str, detail: str) -> Response:
    return Response(error_body(variant, detail), status_code=status, media_type=_JSON)


def _ok(body: bytes = b"", media_type: str | None = None) -> Response:
    return Response(body, status_code=200, media_type=media_type)


def _json(value: Any) -> Response:
    return _ok(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"), _JSON)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) past ``limit`` bytes without reading the rest."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise _BadRequest("SerdeError", "Content-Length is not a number") from None
        if size > limit:
            raise _TooLarge(f"request body is {size} bytes; at most {limit} accepted here")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _TooLarge(f"request body is over {limit} bytes; at most {limit} accepted here")
        chunks.append(chunk)
    return b"".join(chunks)


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("repeated member name")
    return result


def _json_object(body: bytes, variant: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(body, object_pairs_hook=_unique)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise _BadRequest(variant, f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _BadRequest(variant, f"{what} must be a JSON object")
    return value


def _policy_text(value: Any, what: str) -> str:
    """Decode kbs-client's base64url (no padding) policy member into UTF-8 Rego text."""
    if not isinstance(value, str):
        raise _BadRequest("ParsePolicyError", f"`policy` field is not a string in {what}")
    if not _B64URL_RE.fullmatch(value):
        raise _BadRequest("ParsePolicyError", f"`policy` in {what} is not base64url (A-Z a-z 0-9 - _)")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value.rstrip("=")) % 4))
    except (binascii.Error, ValueError) as exc:
        raise _BadRequest("ParsePolicyError", f"`policy` in {what} is not base64url: {exc}") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise _TooLarge(f"policy is {len(raw)} bytes; at most {MAX_POLICY_BYTES}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _BadRequest("ParsePolicyError", f"policy in {what} is not UTF-8 text") from None


_Handler = Callable[[Request, "AdminContext"], Awaitable[Response]]


def _admin(ctx: AdminContext, handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authorise, run, and turn every failure into a Trustee error body."""

    async def endpoint(request: Request) -> Response:
        try:
            now = ctx.clock()
            providers = None
            if ctx.jwks:
                providers = [*ctx.admin_auth.providers, *(p.provider(now) for p in ctx.jwks)]
            identity = authorize(
                ctx.admin_auth, request.headers, request.method, request.url.path, now, providers=providers
            )
            if identity.insecure:
                _log.warning(
                    "INSECURE admin access without authentication: %s %s", request.method, request.url.path
                )
            response = await handler(request, ctx)
            _log.info(
                "admin %s %s by role %s (%s): %d",
                request.method,
                request.url.path,
                identity.role,
                identity.subject or "-",
                response.status_code,
            )
            return response
        except AdminAuthError as exc:
            return _error(exc.http_status, exc.trustee_error, str(exc))
        except _BadRequest as exc:
            return _error(400, exc.variant, str(exc))
        except (_TooLarge, ValueTooLarge) as exc:
            return _error(413, "PayloadTooLarge", str(exc))
        except PolicySyntaxError as exc:
            return _error(400, "ParsePolicyError", str(exc))
        except RvpsError as exc:
            return _error(400, "RvpsError", str(exc))
        except InvalidName as exc:
            return _error(404, "InvalidRequestPath", str(exc))
        except ResourceNotFound as exc:
            return _error(401, "PluginInternalError", str(exc))
        except ReferenceValueNotFound as exc:
            return _error(401, "RvpsError", str(exc))
        except (PolicyNotFound, PolicyEvaluationError) as exc:
            return _error(401, "PolicyEngineError", str(exc))
        except StorageReadOnly as exc:
            return _error(405, "MethodNotAllowed", str(exc))
        except CollateralUnavailable as exc:
            return _error(503, "ServiceUnavailable", str(exc))
        except Exception:
            _log.exception("admin %s %s failed", request.method, request.url.path)
            return _error(500, "PluginInternalError", "internal error; see the KBS log")

    return endpoint


# --- handlers ---------------------------------------------------------------------------------


def _path_of(request: Request) -> ResourcePath:
    params = request.path_params
    return ResourcePath(str(params["repo"]), str(params["type"]), str(params["tag"]))


async def _set_resource(request: Request, ctx: AdminContext) -> Response:
    path = _path_of(request)
    data = check_resource(await _read_body(request, MAX_RESOURCE_BYTES))
    await ctx.storage.resources.set(path, data)
    _log.info("resource %s set (%d bytes)", path, len(data))
    return _ok()


async def _delete_resource(request: Request, ctx: AdminContext) -> Response:
    path = _path_of(request)
    await ctx.storage.resources.delete(path)
    _log.info("resource %s deleted", path)
    return _ok()


async def _list_resources(request: Request, ctx: AdminContext) -> Response:
    return _json([str(p) for p in await ctx.storage.resources.list_paths()])


async def _set_resource_policy(request: Request, ctx: AdminContext) -> Response:
    body = _json_object(
        await _read_body(request, MAX_POLICY_REQUEST_BYTES), "ParsePolicyError", "SetPolicy request"
    )
    if "policy" not in body:
        raise _BadRequest("ParsePolicyError", "No `policy` field inside SetPolicy request JSON")
    text = _policy_text(body["policy"], "SetPolicy request")
    version = await ctx.policy.set_resource_policy(text)
    _log.info("resource policy set (version %d)", version)
    return _ok()


async def _list_resource_policies(request: Request, ctx: AdminContext) -> Response:
    # The effective resource policy always exists (a built-in one when none is stored).
    return _json([RESOURCE_POLICY_ID])


async def _set_attestation_policy(request: Request, ctx: AdminContext) -> Response:
    body = _json_object(
        await _read_body(request, MAX_POLICY_REQUEST_BYTES), "ParsePolicyError", "SetPolicyInput"
    )
    kind = body.get("type", "rego")
    if not isinstance(kind, str) or kind.lower() != "rego":
        raise _BadRequest("ParsePolicyError", f"policy type {kind!r} is not supported; only 'rego'")
    policy_id = body.get("policy_id")
    if not isinstance(policy_id, str):
        raise _BadRequest("ParsePolicyError", "SetPolicyInput needs a string `policy_id`")
    try:
        validate_policy_id(policy_id)
    except InvalidName as exc:
        raise _BadRequest("ParsePolicyError", str(exc)) from None
    if "policy" not in body:
        raise _BadRequest("ParsePolicyError", "SetPolicyInput needs a `policy` field")
    text = _policy_text(body["policy"], "SetPolicyInput")
    version = await ctx.policy.set_attestation_policy(policy_id, text)
    if policy_id == "default":
        _log.warning(
            "attestation policy id 'default' set: the KBS evaluates 'default_<tee class>' "
            "(e.g. default_cpu) first, so this one applies only when that is absent"
        )
    _log.info("attestation policy %s set (version %d)", policy_id, version)
    return _ok()


async def _list_attestation_policies(request: Request, ctx: AdminContext) -> Response:
    return _json(await ctx.policy.list_attestation_policies())


async def _get_attestation_policy(request: Request, ctx: AdminContext) -> Response:
    policy_id = str(request.path_params["policy_id"])
    try:
        validate_policy_id(policy_id)
    except InvalidName as exc:
        raise _BadRequest("ParsePolicyError", str(exc)) from None
    text = await ctx.policy.attestation_policy_text(policy_id)
    return _ok(text.encode("utf-8"), "text/plain; charset=utf-8")


async def _set_reference_value(request: Request, ctx: AdminContext) -> Response:
    body = await _read_body(request, MAX_RVPS_MESSAGE_BYTES)
    names = await ctx.policy.rvps.register(body)
    _log.info("reference values registered: %s", ", ".join(names))
    return _ok(media_type=_JSON)


async def _get_reference_value(request: Request, ctx: AdminContext) -> Response:
    name = str(request.path_params["name"])
    try:
        validate_reference_value_name(name)
    except InvalidName as exc:
        raise ReferenceValueNotFound(f"reference value {name[:100]!r}: {exc}") from None
    item = await ctx.policy.rvps.get(name)
    return _json(item.value)


async def _recent_denials(request: Request, ctx: AdminContext) -> Response:
    raw = request.query_params.get("limit", str(_DEFAULT_DENIALS))
    try:
        limit = int(raw)
    except ValueError:
        raise _BadRequest("SerdeError", f"limit {raw[:20]!r} is not an integer") from None
    if not 1 <= limit <= MAX_DENIALS_LIMIT:
        raise _BadRequest("SerdeError", f"limit must be between 1 and {MAX_DENIALS_LIMIT}")
    denials = [record.to_json() for record in ctx.audit.recent_denials(limit)]
    return _json({"denials": denials, "capacity": ctx.audit.capacity})


def admin_routes(ctx: AdminContext) -> list[BaseRoute]:
    """The admin routes; mount them beside the protocol routes (no path clashes but the
    resource path, where the protocol owns GET and these own POST and DELETE)."""
    p = ADMIN_PREFIX
    resource = f"{p}/resource/{{repo}}/{{type}}/{{tag}}"
    return [
        Route(resource, _admin(ctx, _set_resource), methods=["POST"], name="admin_set_resource"),
        Route(resource, _admin(ctx, _delete_resource), methods=["DELETE"], name="admin_delete_resource"),
        Route(f"{p}/resource", _admin(ctx, _list_resources), methods=["GET"], name="admin_list_resources"),
        Route(f"{p}/resource-policy", _admin(ctx, _set_resource_policy), methods=["POST"]),
        Route(f"{p}/resource-policy", _admin(ctx, _list_resource_policies), methods=["GET"]),
        Route(f"{p}/attestation-policy", _admin(ctx, _set_attestation_policy), methods=["POST"]),
        Route(f"{p}/attestation-policy", _admin(ctx, _list_attestation_policies), methods=["GET"]),
        Route(f"{p}/attestation-policy/{{policy_id}}", _admin(ctx, _get_attestation_policy), methods=["GET"]),
        Route(f"{p}/reference-value", _admin(ctx, _set_reference_value), methods=["POST"]),
        Route(f"{p}/reference-value/{{name:path}}", _admin(ctx, _get_reference_value), methods=["GET"]),
        Route(f"{p}/admin/denials", _admin(ctx, _recent_denials), methods=["GET"]),
    ]

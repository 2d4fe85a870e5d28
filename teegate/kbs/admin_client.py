"""A client for the KBS admin API that sends exactly Trustee's request shapes.

Each call mirrors Trustee's kbs-client (shared/spec/kbs-protocol.md §1.1, §3.8, §4.1), so it
works against a teegate KBS and a Trustee KBS alike:

* resources: ``POST|DELETE /kbs/v0/resource/<repo>/<type>/<tag>`` (raw bytes,
  ``application/octet-stream``); list: ``GET /kbs/v0/resource`` → JSON list of paths;
* resource policy: ``POST /kbs/v0/resource-policy`` ``{"policy":"<b64url-nopad>"}``;
  ``GET /kbs/v0/resource-policy`` → JSON list of policy ids;
* attestation policy: ``POST /kbs/v0/attestation-policy``
  ``{"type":"rego","policy_id":"<id>","policy":"<b64url-nopad>"}``;
* reference values: ``POST /kbs/v0/reference-value`` with an RVPS message
  ``{"payload":"<b64(JSON {name: value})>","type":"sample","version":"0.1.0"}``;
  ``GET /kbs/v0/reference-value/<name>``.

Only HTTP 200 is success; a failure raises :class:`AdminRequestFailed` with Trustee's error
type and detail when the server sent them.
"""

from __future__ import annotations

import base64
import json
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from teegate.errors import ConfigError, TeegateError
from teegate.kbs.storage.base import ResourcePath, validate_policy_id, validate_reference_value_name

__all__ = [
    "DEFAULT_KBS_URL",
    "MAX_ADMIN_RESPONSE_BYTES",
    "SAMPLE_RESOURCE_POLICIES",
    "AdminClient",
    "AdminRequestFailed",
    "attestation_policy_body",
    "reference_value_body",
    "resource_policy_body",
    "sample_reference_value",
]

DEFAULT_KBS_URL = "http://127.0.0.1:8080"
#: Largest admin API response read.
MAX_ADMIN_RESPONSE_BYTES = 4 * 1024 * 1024
_PREFIX = "/kbs/v0"

#: The resource policies behind ``--allow-all``, ``--deny-all`` and ``--affirming`` (same
#: semantics as Trustee's kbs/sample_policies/{allow_all,deny_all,affirming}.rego).
SAMPLE_RESOURCE_POLICIES: dict[str, str] = {
    "allow-all": """package policy
import rego.v1

default allow := false

# Any attested client may fetch any resource of the resource plugin.
allow if data.plugin == "resource"
""",
    "deny-all": """package policy
import rego.v1

default allow := false
""",
    "affirming": """package policy
import rego.v1

default allow := false

# Release only when there is at least one submodule and every one is affirming.
allow if {
\tdata.plugin == "resource"
\tcount(input.submods) > 0
\tevery submod in input.submods {
\t\tsubmod["ear.status"] == "affirming"
\t}
}
""",
}


class AdminRequestFailed(TeegateError):
    """The KBS answered an admin request with a non-200 status."""

    def __init__(self, method: str, path: str, status: int, error_type: str | None, detail: str) -> None:
        self.status = status
        self.error_type = error_type
        self.detail = detail
        self.http_status = status
        kind = f" {error_type}" if error_type else ""
        super().__init__(f"{method} {path} failed: HTTP {status}{kind}: {detail}")


def _b64url_nopad(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def resource_policy_body(policy: bytes) -> bytes:
    """``{"policy":"<b64url-nopad>"}`` as kbs-client sends it."""
    return _compact({"policy": _b64url_nopad(policy)})


def attestation_policy_body(
    policy: bytes, *, policy_id: str = "default_cpu", policy_type: str = "rego"
) -> bytes:
    """``{"type":…,"policy_id":…,"policy":"<b64url-nopad>"}`` in kbs-client's field order."""
    validate_policy_id(policy_id)
    return _compact({"type": policy_type, "policy_id": policy_id, "policy": _b64url_nopad(policy)})


def sample_reference_value(
    value: str | Sequence[str],
    *,
    as_integer: bool = False,
    as_bool: bool = False,
    as_single_value: bool = False,
) -> Any:
    """kbs-client's conversion: string (or int / bool), wrapped in a list unless single."""
    values = [value] if isinstance(value, str) else list(value)
    if not values:
        raise ConfigError("set-sample-reference-value needs at least one VALUE")
    if as_integer and as_bool:
        raise ConfigError("--as-integer and --as-bool are exclusive")
    parsed: list[Any] = []
    for item in values:
        if as_integer:
            try:
                number = int(item, 10)
            except ValueError:
                raise ConfigError(f"--as-integer: {item!r} is not an integer") from None
            if not -(2**31) <= number < 2**31:
                raise ConfigError(f"--as-integer: {item} does not fit a 32-bit integer")
            parsed.append(number)
        elif as_bool:
            if item not in ("true", "false"):
                raise ConfigError(f"--as-bool: {item!r} is not 'true' or 'false'")
            parsed.append(item == "true")
        else:
            parsed.append(item)
    if as_single_value:
        if len(parsed) != 1:
            raise ConfigError("--as-single-value takes exactly one VALUE")
        return parsed[0]
    return parsed


def reference_value_body(name: str, value: Any) -> bytes:
    """The RVPS sample message (keys sorted as kbs-client's ``json!`` serialises them)."""
    validate_reference_value_name(name)
    payload = base64.standard_b64encode(_compact({name: value})).decode("ascii")
    return _compact({"payload": payload, "type": "sample", "version": "0.1.0"})


class AdminClient:
    """Synchronous admin API client; ``token`` None sends anonymous requests (as kbs-client)."""

    def __init__(
        self,
        url: str = DEFAULT_KBS_URL,
        *,
        token: str | None,
        cert_file: Path | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"--url {url!r} must start with http:// or https://")
        verify: ssl.SSLContext | bool = True
        if cert_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(cert_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"--cert-file {cert_file}: {exc}") from None
        headers = {"User-Agent": "teegate-kbs-admin"}
        if token is not None:
            if not token or any(c.isspace() for c in token) or not token.isascii():
                raise ConfigError("the admin token is empty or contains whitespace or non-ASCII characters")
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            base_url=url.rstrip("/"),
            headers=headers,
            verify=verify,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(
        self, method: str, path: str, *, body: bytes | None = None, content_type: str | None = None
    ) -> bytes:
        headers = {"Content-Type": content_type} if content_type else {}
        try:
            with self._client.stream(method, path, content=body, headers=headers) as response:
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > MAX_ADMIN_RESPONSE_BYTES:
                        raise AdminRequestFailed(
                            method,
                            path,
                            response.status_code,
                            None,
                            f"response over {MAX_ADMIN_RESPONSE_BYTES} bytes",
                        )
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise AdminRequestFailed(method, path, 0, None, f"cannot reach the KBS: {exc}") from exc
        raw = b"".join(chunks)
        if response.status_code != 200:
            error_type, detail = None, raw.decode("utf-8", "replace")[:2000] or response.reason_phrase
            try:
                document = json.loads(raw)
            except (ValueError, RecursionError):
                document = None
            if isinstance(document, dict) and isinstance(document.get("type"), str):
                error_type = document["type"].rsplit("/", 1)[-1]
                detail = str(document.get("detail", ""))
            raise AdminRequestFailed(method, path, response.status_code, error_type, detail)
        return raw

    def set_resource(self, path: ResourcePath, data: bytes) -> None:
        """Store a resource."""
        self._send("POST", f"{_PREFIX}/resource/{path}", body=data, content_type="application/octet-stream")

    def delete_resource(self, path: ResourcePath) -> None:
        """Delete a resource."""
        self._send("DELETE", f"{_PREFIX}/resource/{path}")

    def list_resources(self) -> list[str]:
        """Every stored resource path."""
        return self._string_list(self._send("GET", f"{_PREFIX}/resource"), "resource list")

    def set_resource_policy(self, policy: bytes) -> None:
        """Replace the resource policy (Rego source)."""
        self._send(
            "POST",
            f"{_PREFIX}/resource-policy",
            body=resource_policy_body(policy),
            content_type="application/json",
        )

    def list_resource_policies(self) -> list[str]:
        """The ids of stored resource policies (Trustee returns ids, not text)."""
        return self._string_list(self._send("GET", f"{_PREFIX}/resource-policy"), "policy list")

    def set_attestation_policy(
        self, policy: bytes, *, policy_id: str = "default_cpu", policy_type: str = "rego"
    ) -> None:
        """Set an attestation policy by id."""
        body = attestation_policy_body(policy, policy_id=policy_id, policy_type=policy_type)
        self._send("POST", f"{_PREFIX}/attestation-policy", body=body, content_type="application/json")

    def set_sample_reference_value(self, name: str, value: Any) -> None:
        """Register a reference value through the RVPS sample extractor."""
        body = reference_value_body(name, value)
        self._send("POST", f"{_PREFIX}/reference-value", body=body, content_type="application/json")

    def get_reference_value(self, name: str) -> str:
        """The stored reference value's JSON text."""
        validate_reference_value_name(name)
        raw = self._send("GET", f"{_PREFIX}/reference-value/{name}", content_type="application/json")
        return raw.decode("utf-8", "replace")

    @staticmethod
    def _string_list(raw: bytes, what: str) -> list[str]:
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            raise AdminRequestFailed("GET", what, 200, None, f"{what} is not JSON") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise AdminRequestFailed("GET", what, 200, None, f"{what} is not a JSON list of strings")
        return value

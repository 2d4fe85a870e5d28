"""Resources in HashiCorp Vault (or OpenBao) KV secrets engine, version 1 or 2.

Layout as Trustee's Vault backend: secret ``<mount>/<repo>/<type>/<tag>`` holding the resource
as the string under key ``"data"``. Resources that are not UTF-8 are stored base64 under
``"data_base64"`` instead (Trustee stores UTF-8 strings only). Token auth (``X-Vault-Token``);
TLS is always verified, plain HTTP only to a loopback address. KV v2 delete removes every
version (metadata delete), so a deleted secret cannot be undeleted from the KBS's mount.
"""

from __future__ import annotations

import base64
import binascii
import json
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from teegate.errors import ConfigError, StorageUnavailable
from teegate.kbs.storage.base import (
    MAX_LIST_ITEMS,
    MAX_RESOURCE_BYTES,
    InvalidName,
    ResourceNotFound,
    ResourcePath,
    check_resource,
)
from teegate.net import is_loopback

__all__ = ["MAX_VAULT_RESPONSE_BYTES", "MAX_VAULT_TOKEN_BYTES", "VaultResourceStore"]

#: Largest Vault response body read (a resource base64-encoded plus JSON framing).
MAX_VAULT_RESPONSE_BYTES = MAX_RESOURCE_BYTES * 2 + 64 * 1024
#: Largest Vault token file accepted.
MAX_VAULT_TOKEN_BYTES = 4096


class VaultResourceStore:
    """A :class:`~teegate.kbs.storage.base.ResourceStore` over a Vault KV mount."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        mount: str = "secret",
        kv_version: int = 2,
        ca_file: Path | None = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(f"storage: vault_url {url!r} must be an https:// URL")
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            raise ConfigError(
                f"storage: vault_url {url!r} is plain HTTP to a non-loopback host; use https://"
            )
        if kv_version not in (1, 2):
            raise ConfigError(f"storage: vault_kv_version must be 1 or 2, not {kv_version}")
        if not token or any(c.isspace() for c in token) or not token.isprintable():
            raise ConfigError("storage: the Vault token is empty or contains whitespace/control characters")
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"storage: cannot load vault_ca_file {ca_file}: {exc}") from None
        self._mount = mount.strip("/")
        self._kv_version = kv_version
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"X-Vault-Token": token},
            verify=verify,
            timeout=timeout,
            follow_redirects=False,
            trust_env=False,
        )

    @classmethod
    def from_token_file(
        cls,
        url: str,
        token_file: Path,
        *,
        mount: str = "secret",
        kv_version: int = 2,
        ca_file: Path | None = None,
        timeout: float = 10.0,
    ) -> VaultResourceStore:
        """Read the token from ``token_file`` (surrounding whitespace stripped)."""
        try:
            raw = token_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"storage: cannot read vault_token_file {token_file}: {exc.strerror}") from None
        if len(raw) > MAX_VAULT_TOKEN_BYTES:
            raise ConfigError(
                f"storage: vault_token_file {token_file} is larger than {MAX_VAULT_TOKEN_BYTES}"
            )
        try:
            token = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ConfigError(f"storage: vault_token_file {token_file} is not ASCII") from None
        return cls(url, token, mount=mount, kv_version=kv_version, ca_file=ca_file, timeout=timeout)

    async def close(self) -> None:
        """Close the HTTP connection pool."""
        await self._client.aclose()

    def _data_url(self, path: str) -> str:
        return f"/v1/{self._mount}/data/{path}" if self._kv_version == 2 else f"/v1/{self._mount}/{path}"

    def _list_url(self, path: str) -> str:
        prefix = f"/v1/{self._mount}/metadata" if self._kv_version == 2 else f"/v1/{self._mount}"
        return f"{prefix}/{path}" if path else f"{prefix}/"

    async def _exchange(self, method: str, url: str, body: Any, what: str) -> tuple[int, bytes]:
        request = self._client.build_request(
            method,
            url,
            content=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"} if body is not None else None,
        )
        response = await self._client.send(request, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > MAX_VAULT_RESPONSE_BYTES:
                    raise StorageUnavailable(
                        f"Vault answer to {what} exceeds {MAX_VAULT_RESPONSE_BYTES} bytes"
                    )
                chunks.append(chunk)
        finally:
            await response.aclose()
        return response.status_code, b"".join(chunks)

    async def _request(self, method: str, url: str, *, body: Any = None, what: str) -> dict[str, Any] | None:
        # One retry on connection-level failures: a keep-alive connection the server (or a load
        # balancer) closed is common, and every KV call here is idempotent.
        for attempt in (1, 2):
            try:
                status, raw = await self._exchange(method, url, body, what)
                break
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                if attempt == 2:
                    raise StorageUnavailable(
                        f"Vault unreachable during {what}: {type(exc).__name__}: {exc}"
                    ) from exc
            except httpx.HTTPError as exc:
                raise StorageUnavailable(
                    f"Vault unreachable during {what}: {type(exc).__name__}: {exc}"
                ) from exc
        if status in {404, 204}:
            return None
        if status in (401, 403):
            raise StorageUnavailable(f"Vault refused {what} (HTTP {status}): check the token and its policy")
        if status >= 300:
            raise StorageUnavailable(f"Vault answered {what} with HTTP {status}")
        if not raw:
            return None
        try:
            document = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise StorageUnavailable(f"Vault answered {what} with a body that is not JSON") from None
        if not isinstance(document, dict):
            raise StorageUnavailable(f"Vault answered {what} with a non-object JSON body")
        return document

    def _secret_fields(self, document: dict[str, Any], path: ResourcePath) -> dict[str, Any]:
        data = document.get("data")
        if self._kv_version == 2 and isinstance(data, dict):
            data = data.get("data")
        if not isinstance(data, dict):
            raise StorageUnavailable(f"Vault secret for {path} has no data object")
        return data

    async def get(self, path: ResourcePath) -> bytes:
        """Read the secret; :class:`ResourceNotFound` when Vault answers 404."""
        document = await self._request("GET", self._data_url(str(path)), what=f"read of {path}")
        if document is None:
            raise ResourceNotFound(f"resource {path} not found")
        fields = self._secret_fields(document, path)
        text, encoded = fields.get("data"), fields.get("data_base64")
        if isinstance(text, str):
            value = text.encode("utf-8")
        elif isinstance(encoded, str):
            try:
                value = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise StorageUnavailable(f"Vault secret for {path} has invalid data_base64") from None
        else:
            raise StorageUnavailable(f"Vault secret for {path} has neither a 'data' nor 'data_base64' string")
        if len(value) > MAX_RESOURCE_BYTES:
            raise StorageUnavailable(f"Vault secret for {path} exceeds {MAX_RESOURCE_BYTES} bytes")
        return value

    async def set(self, path: ResourcePath, data: bytes) -> None:
        """Write the secret (one Vault write; Vault applies it atomically)."""
        data = check_resource(data)
        try:
            fields: dict[str, str] = {"data": data.decode("utf-8")}
        except UnicodeDecodeError:
            fields = {"data_base64": base64.b64encode(data).decode("ascii")}
        body: dict[str, Any] = {"data": fields} if self._kv_version == 2 else fields
        await self._request("POST", self._data_url(str(path)), body=body, what=f"write of {path}")

    async def delete(self, path: ResourcePath) -> None:
        """Delete the secret (all versions on KV v2); :class:`ResourceNotFound` if absent."""
        document = await self._request("GET", self._data_url(str(path)), what=f"read of {path}")
        if document is None:
            raise ResourceNotFound(f"resource {path} not found")
        url = f"/v1/{self._mount}/metadata/{path}" if self._kv_version == 2 else self._data_url(str(path))
        await self._request("DELETE", url, what=f"delete of {path}")

    async def _keys(self, prefix: str) -> list[str]:
        document = await self._request("LIST", self._list_url(prefix), what=f"list of {prefix!r}")
        if document is None:
            return []
        data = document.get("data")
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise StorageUnavailable(f"Vault list of {prefix!r} has no string keys")
        return keys

    async def list_paths(self) -> Sequence[ResourcePath]:
        """Every secret three levels deep whose names are valid resource segments."""
        found: list[ResourcePath] = []
        for repo in await self._keys(""):
            if not repo.endswith("/"):
                continue
            for type_ in await self._keys(repo):
                if not type_.endswith("/"):
                    continue
                for tag in await self._keys(repo + type_):
                    if tag.endswith("/"):
                        continue
                    try:
                        found.append(ResourcePath(repo[:-1], type_[:-1], tag))
                    except InvalidName:
                        continue
                    if len(found) > MAX_LIST_ITEMS:
                        raise StorageUnavailable(f"more than {MAX_LIST_ITEMS} resources; refusing to list")
        return sorted(found, key=str)

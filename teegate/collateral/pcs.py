"""Intel PCS v4 client (also speaks to a PCCS, which serves the same paths).

Fetches PCK CRL, TCB Info, QE Identity and the Root CA CRL for one (TEE, FMSPC, CA) and
assembles a dcap-qvl bundle holding the exact signed texts. Every response body is bounded
(:data:`MAX_RESPONSE_BYTES`); TLS is verified unless the caller passes ``verify=False``, which
is logged as insecure. Anything wrong upstream (unreachable, HTTP error, missing issuer-chain
header, malformed or oversized body) raises :class:`CollateralUnavailable` naming the URL and
the item.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import httpx

from teegate.collateral._documents import (
    MAX_CHAIN_BYTES,
    MAX_DOCUMENT_BYTES,
    check_bundle_key,
    crl_to_der,
    issuer_chain,
    signed_document,
)
from teegate.dcap.collateral import Collateral, CollateralKey
from teegate.errors import CollateralUnavailable, ConfigError, ParseError

__all__ = [
    "INTEL_PCS_URL",
    "INTEL_ROOT_CA_CRL_URL",
    "MAX_RESPONSE_BYTES",
    "PckCertificate",
    "PcsClient",
    "api_root",
]

_log = logging.getLogger("teegate.collateral.pcs")

INTEL_PCS_URL = "https://api.trustedservices.intel.com"
#: Intel PCS has no rootcacrl path; the Root CA CRL lives at the root certificate's CDP.
INTEL_ROOT_CA_CRL_URL = "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
#: Upper bound on one response body from PCS/PCCS.
MAX_RESPONSE_BYTES = MAX_DOCUMENT_BYTES

_PCK_CRL_CHAIN = ("SGX-PCK-CRL-Issuer-Chain",)
_TCB_CHAIN = ("TCB-Info-Issuer-Chain", "SGX-TCB-Info-Issuer-Chain")
_QE_CHAIN = ("SGX-Enclave-Identity-Issuer-Chain",)
_PCK_CERT_CHAIN = ("SGX-PCK-Certificate-Issuer-Chain",)


def api_root(url: str) -> str:
    """``https://host:8081/sgx/certification/v4/`` or ``https://host:8081`` → ``https://host:8081``."""
    try:
        parsed = urllib.parse.urlsplit(url.strip())
    except ValueError as exc:
        raise ConfigError(f"PCS/PCCS URL {url!r}: {exc}") from None
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise ConfigError(f"PCS/PCCS URL {url!r} must be http(s)://HOST[:PORT][/…]")
    path = parsed.path.rstrip("/")
    for prefix in ("/sgx/certification/v4", "/tdx/certification/v4", "/sgx/certification/v3"):
        if path.endswith(prefix):
            path = path[: -len(prefix)]
            break
    return urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, path, "", ""))


@dataclass(frozen=True, slots=True)
class _Reply:
    url: str
    status: int
    headers: httpx.Headers
    body: bytes


@dataclass(frozen=True, slots=True)
class PckCertificate:
    """A PCK certificate as PCS/PCCS serves it, with its issuer chain and platform facts."""

    pem: str
    issuer_chain: str
    fmspc: str | None
    ca: str | None
    tcbm: str | None


class PcsClient:
    """Intel PCS v4 / PCCS client; a :class:`~teegate.collateral.CollateralSource`."""

    def __init__(
        self,
        base_url: str = INTEL_PCS_URL,
        *,
        api_key: str | None = None,
        verify: bool | str = True,
        timeout: float = 30.0,
        collateral_url: str | None = None,
        root_ca_crl_url: str | None = None,
        tcb_update: Literal["standard", "early"] = "standard",
        retry_times: int = 0,
        retry_delay: float = 1.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = api_root(base_url)
        self.collateral_root = api_root(collateral_url) if collateral_url else self.base_url
        if root_ca_crl_url is None:
            host = urllib.parse.urlsplit(self.collateral_root).hostname
            root_ca_crl_url = (
                INTEL_ROOT_CA_CRL_URL
                if host == "api.trustedservices.intel.com"
                else f"{self.collateral_root}/sgx/certification/v4/rootcacrl"
            )
        self.root_ca_crl_url = root_ca_crl_url
        if tcb_update not in ("standard", "early"):
            raise ConfigError(f"tcb_update {tcb_update!r} must be 'standard' or 'early'")
        if not 0 <= retry_times <= 20 or not 0 <= retry_delay <= 600:
            raise ConfigError("retry_times must be 0..20 and retry_delay 0..600 seconds")
        self._api_key = api_key
        self._verify = verify
        self._timeout = timeout
        self._tcb_update = tcb_update
        self._retry_times = retry_times
        self._retry_delay = retry_delay
        self._transport = transport
        self._ssl_context: ssl.SSLContext | None = None
        for option in self.insecure:
            _log.warning("INSECURE collateral client option: %s (%s)", option, self.collateral_root)

    @property
    def insecure(self) -> list[str]:
        """Insecure options in force, named."""
        out = []
        if self._verify is False:
            out.append("use_secure_cert=false: TLS certificate verification disabled")
        if any(u.startswith("http://") for u in (self.base_url, self.collateral_root, self.root_ca_crl_url)):
            out.append("plain HTTP collateral service")
        return out

    def __repr__(self) -> str:
        return f"PcsClient({self.collateral_root!r})"

    def _ssl(self) -> ssl.SSLContext | bool:
        """One TLS context per client: building one (loading the CA store) costs tens of ms."""
        if self._verify is False:
            return False
        if self._ssl_context is None:
            cafile = self._verify if isinstance(self._verify, str) else None
            if cafile is None:
                import certifi

                cafile = certifi.where()
            try:
                self._ssl_context = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"TLS CA bundle {cafile}: {exc}") from None
        return self._ssl_context

    def _client(self) -> httpx.AsyncClient:
        headers = {"Ocp-Apim-Subscription-Key": self._api_key} if self._api_key else {}
        return httpx.AsyncClient(
            verify=self._ssl(), timeout=self._timeout, headers=headers, transport=self._transport
        )

    async def _get(self, client: httpx.AsyncClient, url: str, what: str) -> _Reply:
        attempt = 0
        while True:
            try:
                reply = await self._get_once(client, url, what)
            except CollateralUnavailable:
                if attempt >= self._retry_times:
                    raise
            else:
                if reply.status < 500 and reply.status != 429:
                    return reply
                if attempt >= self._retry_times:
                    return reply
            attempt += 1
            await asyncio.sleep(self._retry_delay)

    async def _get_once(self, client: httpx.AsyncClient, url: str, what: str) -> _Reply:
        try:
            async with client.stream("GET", url) as response:
                length = response.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > MAX_RESPONSE_BYTES:
                    raise CollateralUnavailable(
                        f"{what} from {url}: body of {length} bytes exceeds MAX_RESPONSE_BYTES "
                        f"({MAX_RESPONSE_BYTES})"
                    )
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > MAX_RESPONSE_BYTES:
                        raise CollateralUnavailable(
                            f"{what} from {url}: body exceeds MAX_RESPONSE_BYTES ({MAX_RESPONSE_BYTES})"
                        )
                    chunks.append(chunk)
                return _Reply(url, response.status_code, response.headers, b"".join(chunks))
        except httpx.HTTPError as exc:
            raise CollateralUnavailable(f"{what}: {url} unreachable: {type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _ok(reply: _Reply, what: str) -> _Reply:
        if reply.status == 200:
            return reply
        detail = reply.headers.get("Error-Message") or reply.headers.get("Error-Code") or ""
        if reply.status == 404:
            raise CollateralUnavailable(f"{what} not found at {reply.url} (HTTP 404) {detail}".rstrip())
        raise CollateralUnavailable(f"{what}: {reply.url} answered HTTP {reply.status} {detail}".rstrip())

    @staticmethod
    def _chain(reply: _Reply, names: tuple[str, ...], what: str) -> str:
        for name in names:
            raw = reply.headers.get(name)
            if raw is not None:
                if len(raw) > 3 * MAX_CHAIN_BYTES:
                    raise CollateralUnavailable(f"{what} from {reply.url}: {name} header too large")
                try:
                    return issuer_chain(urllib.parse.unquote(raw), f"{name} header")
                except ParseError as exc:
                    raise CollateralUnavailable(f"{what} from {reply.url}: {exc}") from None
        raise CollateralUnavailable(f"{what} from {reply.url}: response lacks the {names[0]} header")

    def _tcb_url(self, tee: str, fmspc: str) -> str:
        update = "&update=early" if self._tcb_update == "early" else ""
        return f"{self.collateral_root}/{tee}/certification/v4/tcb?fmspc={fmspc}{update}"

    async def pck_crl(self, client: httpx.AsyncClient, ca: str) -> tuple[bytes, str]:
        """(DER PCK CRL, issuer chain) for the ``platform`` or ``processor`` CA."""
        url = f"{self.collateral_root}/sgx/certification/v4/pckcrl?ca={ca}&encoding=der"
        what = f"PCK CRL (ca={ca})"
        reply = self._ok(await self._get(client, url, what), what)
        chain = self._chain(reply, _PCK_CRL_CHAIN, what)
        try:
            return crl_to_der(reply.body, what), chain
        except ParseError as exc:
            raise CollateralUnavailable(f"{what} from {url} is malformed: {exc}") from None

    async def tcb_info(self, client: httpx.AsyncClient, tee: str, fmspc: str) -> tuple[str, bytes, str]:
        """(exact signed tcbInfo text, signature, issuer chain)."""
        url = self._tcb_url(tee, fmspc)
        what = f"{tee.upper()} TCB Info for FMSPC {fmspc}"
        reply = self._ok(await self._get(client, url, what), what)
        chain = self._chain(reply, _TCB_CHAIN, what)
        try:
            doc = signed_document(reply.body, "tcbInfo")
        except ParseError as exc:
            raise CollateralUnavailable(f"{what} from {url} is malformed: {exc}") from None
        return doc.text, doc.signature, chain

    async def qe_identity(self, client: httpx.AsyncClient, tee: str) -> tuple[str, bytes, str]:
        """(exact signed enclaveIdentity text, signature, issuer chain) of the QE (TD_QE for TDX)."""
        url = f"{self.collateral_root}/{tee}/certification/v4/qe/identity"
        if self._tcb_update == "early":
            url += "?update=early"
        what = f"{tee.upper()} QE Identity"
        reply = self._ok(await self._get(client, url, what), what)
        chain = self._chain(reply, _QE_CHAIN, what)
        try:
            doc = signed_document(reply.body, "enclaveIdentity")
        except ParseError as exc:
            raise CollateralUnavailable(f"{what} from {url} is malformed: {exc}") from None
        return doc.text, doc.signature, chain

    async def root_ca_crl(self, client: httpx.AsyncClient) -> bytes:
        """The Root CA CRL as DER (PCCS serves it hex-encoded, Intel's CDP as DER: both accepted)."""
        what = "Root CA CRL"
        reply = self._ok(await self._get(client, self.root_ca_crl_url, what), what)
        try:
            return crl_to_der(reply.body, what)
        except ParseError as exc:
            raise CollateralUnavailable(f"{what} from {self.root_ca_crl_url} is malformed: {exc}") from None

    async def get(self, key: CollateralKey, *, now: datetime) -> Collateral:
        """Fetch the four documents concurrently and assemble the bundle for ``key``."""
        async with self._client() as client:
            (
                (pck_crl, pck_chain),
                (tcb, tcb_sig, tcb_chain),
                (qe, qe_sig, qe_chain),
                root,
            ) = await asyncio.gather(
                self.pck_crl(client, key.ca),
                self.tcb_info(client, key.tee, key.fmspc),
                self.qe_identity(client, key.tee),
                self.root_ca_crl(client),
            )
        collateral = Collateral(
            pck_crl_issuer_chain=pck_chain,
            root_ca_crl=root,
            pck_crl=pck_crl,
            tcb_info_issuer_chain=tcb_chain,
            tcb_info=tcb,
            tcb_info_signature=tcb_sig,
            qe_identity_issuer_chain=qe_chain,
            qe_identity=qe,
            qe_identity_signature=qe_sig,
        )
        check_bundle_key(collateral, key, self.collateral_root)
        return collateral

    async def pck_certificate(
        self, *, encrypted_ppid: str, cpusvn: str, pcesvn: str, pceid: str, qeid: str | None = None
    ) -> PckCertificate:
        """``GET /sgx/certification/v4/pckcert`` (from the PCK source, ``base_url``)."""
        params = {"encrypted_ppid": encrypted_ppid, "cpusvn": cpusvn, "pcesvn": pcesvn, "pceid": pceid}
        if qeid is not None:
            params = {"qeid": qeid, **params}
        url = f"{self.base_url}/sgx/certification/v4/pckcert?{urllib.parse.urlencode(params)}"
        what = "PCK certificate"
        async with self._client() as client:
            reply = self._ok(await self._get(client, url, what), what)
        chain = self._chain(reply, _PCK_CERT_CHAIN, what)
        try:
            pem = issuer_chain(reply.body, what)
        except ParseError as exc:
            raise CollateralUnavailable(f"{what} from {url} is malformed: {exc}") from None
        return PckCertificate(
            pem=pem,
            issuer_chain=chain,
            fmspc=reply.headers.get("SGX-FMSPC"),
            ca=reply.headers.get("SGX-PCK-Certificate-CA-Type"),
            tcbm=reply.headers.get("SGX-TCBm"),
        )

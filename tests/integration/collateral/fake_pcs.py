"""A real HTTP server on loopback playing Intel PCS v4 from recorded responses.

Responses come from ../shared/vectors/raw (bodies exactly as recorded, issuer chains
percent-encoded into the response headers as PCS sends them). Tests may edit ``routes`` to
serve garbage, drop headers or grow bodies.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

V4 = "/sgx/certification/v4"


@dataclass
class Canned:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakePcs:
    """Routes keyed by path + sorted query string; counts every request."""

    routes: dict[str, Canned] = field(default_factory=dict)
    hits: list[str] = field(default_factory=list)
    api_keys: list[str | None] = field(default_factory=list)
    #: Answer 503 to this many requests first (to exercise retries).
    fail_first: int = 0

    def app(self) -> Starlette:
        async def handle(request: Request) -> Response:
            query = urllib.parse.urlencode(sorted(request.query_params.multi_items()))
            target = request.url.path + (f"?{query}" if query else "")
            self.hits.append(target)
            self.api_keys.append(request.headers.get("Ocp-Apim-Subscription-Key"))
            if self.fail_first > 0:
                self.fail_first -= 1
                return Response(b"busy", status_code=503, headers={"Retry-After": "0"})
            canned = self.routes.get(target)
            if canned is None:
                return Response(b"", status_code=404)
            return Response(canned.body, status_code=canned.status, headers=canned.headers)

        return Starlette(routes=[Route("/{path:path}", handle, methods=["GET"])])


def _chain_header(pem: str) -> str:
    return urllib.parse.quote(pem, safe="")


def add_tcb(
    fake: FakePcs, tee: str, fmspc: str, body: bytes, chain: str, *, legacy_header: bool = False
) -> None:
    name = "SGX-TCB-Info-Issuer-Chain" if legacy_header else "TCB-Info-Issuer-Chain"
    fake.routes[f"/{tee}/certification/v4/tcb?fmspc={fmspc}"] = Canned(
        200, body, {name: _chain_header(chain), "Content-Type": "application/json"}
    )


def add_qe(fake: FakePcs, tee: str, body: bytes, chain: str) -> None:
    fake.routes[f"/{tee}/certification/v4/qe/identity"] = Canned(
        200,
        body,
        {"SGX-Enclave-Identity-Issuer-Chain": _chain_header(chain), "Content-Type": "application/json"},
    )


def add_pck_crl(fake: FakePcs, ca: str, pem_or_der: bytes, chain: str) -> None:
    """PEM when asked without encoding, DER with encoding=der (the same CRL, as PCS does)."""
    if pem_or_der.startswith(b"-----BEGIN"):
        pem = pem_or_der
        der = x509.load_pem_x509_crl(pem).public_bytes(Encoding.DER)
    else:
        der = pem_or_der
        pem = x509.load_der_x509_crl(der).public_bytes(Encoding.PEM)
    headers = {"SGX-PCK-CRL-Issuer-Chain": _chain_header(chain)}
    fake.routes[f"{V4}/pckcrl?ca={ca}"] = Canned(200, pem, headers)
    fake.routes[f"{V4}/pckcrl?ca={ca}&encoding=der"] = Canned(200, der, headers)


def add_root_crl(fake: FakePcs, der: bytes, *, as_hex: bool) -> None:
    fake.routes[f"{V4}/rootcacrl"] = Canned(200, der.hex().encode() if as_hex else der)


def _recorded(vectors: Path, name: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((vectors / "raw" / "pcs-api-responses" / name).read_text())
    return data


def teepotpcs_fake(vectors: Path) -> FakePcs:
    """PCS as recorded in raw/pcs-api-responses (May 2025): TDX 00806F050000, SGX 00906ED50000.

    The Root CA CRL is not among those recordings; it is served (hex, as PCCS does) from the
    teepotpcs collateral set that was assembled from the same PCS responses.
    """
    fake = FakePcs()
    tcb = _recorded(vectors, "tdx_tcb_info_00806F050000.json")
    add_tcb(fake, "tdx", "00806F050000", tcb["tcb_info_json"].encode(), tcb["issuer_chain"])
    tcb = _recorded(vectors, "sgx_tcb_info_00906ED50000.json")
    add_tcb(
        fake, "sgx", "00906ED50000", tcb["tcb_info_json"].encode(), tcb["issuer_chain"], legacy_header=True
    )
    for tee, name in (("tdx", "tdx_qe_identity.json"), ("sgx", "sgx_qe_identity.json")):
        qe = _recorded(vectors, name)
        add_qe(fake, tee, qe["enclave_identity_json"].encode(), qe["issuer_chain"])
    for ca in ("platform", "processor"):
        crl = _recorded(vectors, f"pck_crl_{ca}.json")
        add_pck_crl(fake, ca, crl["crl_data"].encode(), crl["issuer_chain"])
    collateral_set = json.loads(
        (vectors / "_collateral_sets" / "teepotpcs_tdx_00806F050000_2025-05.json").read_text()
    )
    add_root_crl(fake, bytes.fromhex(collateral_set["root_ca_crl"]), as_hex=True)
    return fake


def gotdx_fake(vectors: Path) -> FakePcs:
    """PCS as recorded by go-tdx-guest (June 2023): TDX 50806F000000, DER Root CA CRL."""
    raw = vectors / "raw" / "go-tdx-guest"
    fake = FakePcs()
    add_tcb(
        fake,
        "tdx",
        "50806F000000",
        (raw / "sample_tcbInfo_response").read_bytes(),
        (raw / "tcbInfoIssuerChain.pem").read_text(),
    )
    add_qe(
        fake,
        "tdx",
        (raw / "sample_qeIdentity_response").read_bytes(),
        (raw / "qeIdentityIssuerChain.pem").read_text(),
    )
    add_pck_crl(fake, "platform", (raw / "pckcrl").read_bytes(), (raw / "pckCrlIssuerChain.pem").read_text())
    add_root_crl(fake, (raw / "rootcrl.der").read_bytes(), as_hex=False)
    return fake


@contextmanager
def serve(app: Starlette, *, certfile: Path | None = None, keyfile: Path | None = None) -> Iterator[str]:
    """Run ``app`` with uvicorn on an ephemeral loopback port (HTTPS with a cert); yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    tls = {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile)} if certfile and keyfile else {}
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", **tls))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test HTTP server did not start")
        time.sleep(0.01)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()

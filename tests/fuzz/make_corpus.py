"""Regenerate the seed corpus under tests/fuzz/corpus/ (checked in): ``python -m tests.fuzz.make_corpus``.

Seeds are teegate's own simulated quotes and protocol bodies (never the real DCAP vectors).
Regression inputs found by fuzzing are added by hand as ``corpus/<target>/regress-<bug>``.
"""

from __future__ import annotations

import base64
import json
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from teegate.kbs.jwe import encrypt
from teegate.kbs.protocol import Attestation, TeePubKey, pad_report_data, runtime_data_digest
from teegate.sim import SimPlatform
from tests.fuzz.harnesses import fixed_key

CORPUS = Path(__file__).resolve().parent / "corpus"


def _write(target: str, name: str, data: bytes) -> None:
    (CORPUS / target).mkdir(parents=True, exist_ok=True)
    (CORPUS / target / name).write_bytes(data)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        platform = SimPlatform.create(Path(tmp) / "platform")
        report = pad_report_data(b"\x11" * 48)
        quotes = {
            "tdx-v4": platform.tdx_quote(report),
            "tdx-v5": platform.tdx_quote(report, version=5),
            "sgx-v3": platform.sgx_quote(report),
        }
    for name, quote in quotes.items():
        _write("quote", f"{name}.bin", quote)
    _write("quote", "tdx-v4.b64", base64.b64encode(quotes["tdx-v4"]))
    _write("quote", "header-only.bin", quotes["tdx-v4"][:48])

    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    p521 = ec.generate_private_key(ec.SECP521R1()).public_key()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    jwks = {
        "ec-p256": TeePubKey.from_public_key(ec_key),
        "ec-p521": TeePubKey.from_public_key(p521),
        "rsa-oaep": TeePubKey.from_public_key(rsa_key),
    }
    for name, jwk in jwks.items():
        _write("jwe", f"jwk-{name}.json", json.dumps(jwk.to_jwk()).encode())
    fixed = TeePubKey.from_public_key(fixed_key().public_key())
    _write("jwe", "jwe-fixed-key.json", json.dumps(encrypt(b"corpus secret", fixed)).encode())

    nonce = base64.b64encode(b"\x22" * 32).decode()
    digest = runtime_data_digest(nonce, jwks["ec-p256"], "")
    evidence = {"cc_eventlog": None, "quote": base64.b64encode(quotes["tdx-v4"]).decode()}
    plain = Attestation(nonce, jwks["ec-p256"], evidence, "")
    _write("attestation", "tdx.json", json.dumps(plain.to_json()).encode())
    sample = {"svn": "1", "report_data": base64.b64encode(digest).decode()}
    additional = json.dumps({"sample": sample})
    with_extra = Attestation(nonce, jwks["rsa-oaep"], sample, additional).to_json()
    with_extra["init-data"] = {"format": "toml", "body": 'algorithm = "sha384"\nversion = "0.1.0"\n[data]\n'}
    _write("attestation", "sample-additional-initdata.json", json.dumps(with_extra).encode())


if __name__ == "__main__":
    main()

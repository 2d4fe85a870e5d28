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
from tests.unit.kbs_policy.conftest import TDX_RVS, tdx_claims, uefi_event_logs

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
    policy_seeds()


def policy_seeds() -> None:
    """Claims for the policy target: TDX (reference values matching, event log, init data), SGX,
    sample; the shapes teegate's verifiers produce."""
    kernel, cmdline = "c1" * 48, "c2" * 48
    tdx = tdx_claims(uefi_event_logs=uefi_event_logs(kernel, cmdline))
    references = {
        **TDX_RVS,
        "tdvfkernel": kernel,
        "tdvfkernelparams": cmdline,
    }
    containers = [
        {
            "OCI": {
                "Annotations": {"io.kubernetes.cri.image-name": "registry/app:1"},
                "Process": {"User": {"UID": 1000}},
            }
        }
    ]
    seeds = {
        "tdx-affirming.json": {"tee": "tdx", "claims": tdx, "reference_values": references},
        "tdx-initdata.json": {
            "tee": "tdx",
            "claims": {**tdx, "td_attributes": {"debug": True}, "tcb_status": "OutOfDate"},
            "init_data_claims": {"agent_policy_claims": {"containers": containers}},
            "reference_values": references,
        },
        "sgx.json": {
            "tee": "sgx",
            "claims": {
                "header": {"version": "0300", "vendor_id": "939a7233f79c4ca9940a0db3957f0607"},
                "body": {
                    "attributes.flags": "0500000000000000",
                    "mr_enclave": "d1" * 32,
                    "mr_signer": "d2" * 32,
                },
                "tcb_status": "SWHardeningNeeded",
                "collateral_expiration_status": "0",
            },
            "reference_values": {"mr_enclave": ["d1" * 32]},
        },
        "sample.json": {
            "tee": "sample",
            "claims": {
                "svn": "1",
                "launch_digest": "abcde",
                "platform_version": {"major": 1, "minor": 4},
                "debug": False,
            },
            "reference_values": {
                "svn": ["1"],
                "launch_digest": ["abcde"],
                "major_version": 1,
                "minimum_minor_version": 2,
            },
        },
    }
    for name, seed in seeds.items():
        _write("policy", name, json.dumps(seed).encode())


if __name__ == "__main__":
    main()

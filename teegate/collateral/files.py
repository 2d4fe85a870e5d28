"""Collateral from local files: a directory of PCS documents, or dcap-qvl JSON bundles.

``DirectorySource(path)`` reads files named by what they are (the PCS bodies as served)::

    root_ca_crl.der                     Root CA CRL (DER, PEM or hex)
    pck_crl_platform.der                PCK CRL of the Platform CA (DER, PEM or hex)
    pck_crl_processor.der               PCK CRL of the Processor CA
    pck_crl_issuer_chain.pem            PEM chain that signed the PCK CRLs
    tcb_info_<tee>_<FMSPC>.json         PCS body {"tcbInfo":{…},"signature":"…"}; tee = sgx|tdx
    tcb_info_issuer_chain.pem           PEM chain that signed TCB Info
    qe_identity_<tee>.json              PCS body {"enclaveIdentity":{…},"signature":"…"}
    qe_identity_issuer_chain.pem        PEM chain that signed QE Identity (defaults to the TCB one)

``BundleSource(path)`` reads one dcap-qvl ``QuoteCollateralV3`` JSON file, or a directory of
them named ``<tee>-<FMSPC>-<ca>.json`` or ``<tee>-<FMSPC>.json`` (the cache's layout). A bundle
is served only for the key it is for (its TCB Info's id and FMSPC, its PCK CRL's issuer).
"""

from __future__ import annotations

import asyncio
import os
from datetime import datetime
from pathlib import Path

from teegate.collateral._documents import (
    MAX_CHAIN_BYTES,
    MAX_DOCUMENT_BYTES,
    bundle_info,
    check_bundle_key,
    crl_to_der,
    issuer_chain,
    signed_document,
)
from teegate.dcap.collateral import MAX_BUNDLE_BYTES, Collateral, CollateralKey
from teegate.errors import CollateralUnavailable, EvidenceError

__all__ = ["BundleSource", "DirectorySource"]


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise CollateralUnavailable(f"{what}: {path} does not exist") from None
    except OSError as exc:
        raise CollateralUnavailable(f"{what}: {path} unreadable: {exc}") from None
    if len(data) > limit:
        raise CollateralUnavailable(f"{what}: {path} is larger than {limit} bytes")
    return data


class DirectorySource:
    """Collateral from a directory of PCS documents (layout in the module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"DirectorySource({str(self.path)!r})"

    def _load(self, key: CollateralKey) -> Collateral:
        d = self.path
        what = f"{key.tee.upper()} collateral for FMSPC {key.fmspc}"
        try:
            tcb_path = d / f"tcb_info_{key.tee}_{key.fmspc}.json"
            if not tcb_path.exists():
                lower = d / f"tcb_info_{key.tee}_{key.fmspc.lower()}.json"
                tcb_path = lower if lower.exists() else tcb_path
            tcb = signed_document(_read(tcb_path, MAX_DOCUMENT_BYTES, f"{what}: TCB Info"), "tcbInfo")
            qe = signed_document(
                _read(d / f"qe_identity_{key.tee}.json", MAX_DOCUMENT_BYTES, f"{what}: QE Identity"),
                "enclaveIdentity",
            )
            tcb_chain_file = d / "tcb_info_issuer_chain.pem"
            tcb_chain = issuer_chain(
                _read(tcb_chain_file, MAX_CHAIN_BYTES, "TCB Info issuer chain"), str(tcb_chain_file)
            )
            qe_chain_file = d / "qe_identity_issuer_chain.pem"
            qe_chain = (
                issuer_chain(
                    _read(qe_chain_file, MAX_CHAIN_BYTES, "QE Identity issuer chain"), str(qe_chain_file)
                )
                if qe_chain_file.exists()
                else tcb_chain
            )
            pck_chain_file = d / "pck_crl_issuer_chain.pem"
            pck_chain = issuer_chain(
                _read(pck_chain_file, MAX_CHAIN_BYTES, "PCK CRL issuer chain"), str(pck_chain_file)
            )
            pck_crl_file = d / f"pck_crl_{key.ca}.der"
            pck_crl = crl_to_der(
                _read(pck_crl_file, MAX_DOCUMENT_BYTES, f"PCK CRL ({key.ca} CA)"), str(pck_crl_file)
            )
            root_file = d / "root_ca_crl.der"
            root = crl_to_der(_read(root_file, MAX_DOCUMENT_BYTES, "Root CA CRL"), str(root_file))
        except EvidenceError as exc:
            raise CollateralUnavailable(f"{what} in {d}: {exc}") from None
        collateral = Collateral(
            pck_crl_issuer_chain=pck_chain,
            root_ca_crl=root,
            pck_crl=pck_crl,
            tcb_info_issuer_chain=tcb_chain,
            tcb_info=tcb.text,
            tcb_info_signature=tcb.signature,
            qe_identity_issuer_chain=qe_chain,
            qe_identity=qe.text,
            qe_identity_signature=qe.signature,
        )
        check_bundle_key(collateral, key, str(d))
        return collateral

    async def get(self, key: CollateralKey, *, now: datetime) -> Collateral:
        return await asyncio.to_thread(self._load, key)

    def available_keys(self) -> list[CollateralKey]:
        """Keys this directory can serve (one per TCB Info file and PCK CRL present)."""
        cas = [ca for ca in ("platform", "processor") if (self.path / f"pck_crl_{ca}.der").is_file()]
        keys = []
        for tcb in sorted(self.path.glob("tcb_info_*_*.json")):
            _, _, tee, fmspc = tcb.stem.split("_", 3)
            if tee in ("sgx", "tdx") and len(fmspc) == 12:
                for ca in cas:
                    try:
                        keys.append(CollateralKey(tee, fmspc.upper(), ca))  # type: ignore[arg-type]
                    except ValueError:
                        continue
        return keys


class BundleSource:
    """A dcap-qvl JSON bundle file, or a directory of bundles named ``<tee>-<FMSPC>[-<ca>].json``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"BundleSource({str(self.path)!r})"

    def _file(self, key: CollateralKey) -> Path:
        if not self.path.is_dir():
            return self.path
        for name in (
            f"{key.tee}-{key.fmspc}-{key.ca}.json",
            f"{key.tee}-{key.fmspc}.json",
            f"{key.tee}-{key.fmspc.lower()}-{key.ca}.json",
            f"{key.tee}-{key.fmspc.lower()}.json",
        ):
            if (self.path / name).is_file():
                return self.path / name
        raise CollateralUnavailable(
            f"no bundle for {key.tee.upper()} FMSPC {key.fmspc} (CA {key.ca}) in {self.path} "
            f"(expected {key.tee}-{key.fmspc}-{key.ca}.json or {key.tee}-{key.fmspc}.json)"
        )

    def _load(self, key: CollateralKey) -> Collateral:
        path = self._file(key)
        raw = _read(path, MAX_BUNDLE_BYTES, "collateral bundle")
        try:
            collateral = Collateral.from_json(raw)
        except EvidenceError as exc:
            raise CollateralUnavailable(f"collateral bundle {path}: {exc}") from None
        check_bundle_key(collateral, key, str(path))
        return collateral

    async def get(self, key: CollateralKey, *, now: datetime) -> Collateral:
        return await asyncio.to_thread(self._load, key)

    def available_keys(self) -> list[CollateralKey]:
        """Keys the bundle(s) can serve (a single file is read to learn its key)."""
        if not self.path.is_dir():
            try:
                raw = _read(self.path, MAX_BUNDLE_BYTES, "collateral bundle")
                info = bundle_info(Collateral.from_json(raw))
            except (EvidenceError, CollateralUnavailable):
                return []
            return [CollateralKey(info.tee, info.fmspc, info.ca or "platform")]
        keys = []
        for path in sorted(self.path.glob("*.json")):
            parts = path.stem.split("-")
            if len(parts) not in (2, 3) or parts[0] not in ("sgx", "tdx") or len(parts[1]) != 12:
                continue
            for ca in [parts[2]] if len(parts) == 3 else ["platform", "processor"]:
                try:
                    keys.append(CollateralKey(parts[0], parts[1].upper(), ca))  # type: ignore[arg-type]
                except ValueError:
                    continue
        return keys

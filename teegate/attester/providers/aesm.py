"""SGX out-of-process quoting (``sgx-aesm``): the enclave's report quoted by the node's AESM.

As libsgx-quote-ex does when ``SGX_AESM_ADDR`` is set: select the attestation key, init the
quote, get its size, send the 432-byte ``sgx_report_t`` over ``/var/run/aesmd/aesm.socket``.
A Python process is not an enclave, so the report is the simulated enclave's (from a
simulated platform); the AESM side is the real protocol.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any, Final

from teegate.attester.errors import EvidenceUnavailable
from teegate.attester.providers.base import pad_report_data
from teegate.errors import CollateralUnavailable, EvidenceError, TeegateError

__all__ = ["AESM_ENV", "DEFAULT_AESM_SOCKET", "AesmProvider"]

AESM_ENV: Final = "SGX_AESM_ADDR"
DEFAULT_AESM_SOCKET: Final = Path("/var/run/aesmd/aesm.socket")
_KEY_ID_AND_MAC: Final = bytes(32 + 16)


class AesmProvider:
    """SGX evidence ``{"quote": b64}`` from AESM for the simulated enclave's report."""

    name = "sgx-aesm"
    tee = "sgx"

    def __init__(self, platform_dir: Path | None, socket_path: Path | None = None) -> None:
        if platform_dir is None:
            raise EvidenceUnavailable(
                "sgx-aesm: needs --sim-platform (the simulated enclave producing the report)"
            )
        from teegate.sim import SimPlatform

        try:
            self._platform = SimPlatform.load(platform_dir)
        except (TeegateError, OSError) as exc:
            raise EvidenceUnavailable(
                f"sgx-aesm: cannot load the simulated platform {platform_dir}: {exc}"
            ) from None
        self._socket = socket_path or DEFAULT_AESM_SOCKET

    @staticmethod
    def requested() -> bool:
        """True when the container opted in to out-of-process quoting (``SGX_AESM_ADDR`` set)."""
        return bool(os.environ.get(AESM_ENV))

    def describe(self) -> str:
        return f"SGX out-of-process quoting via AESM at {self._socket} (simulated enclave)"

    def evidence(self, report_data: bytes, *, init_data_digest: bytes | None = None) -> dict[str, Any]:
        from teegate.node.aesm.client import AesmClient

        report = self._platform.sgx_report(pad_report_data(report_data)).encode() + _KEY_ID_AND_MAC
        try:
            quote = AesmClient(self._socket).quote(report)
        except CollateralUnavailable as exc:
            raise EvidenceUnavailable(f"sgx-aesm: {exc}", retryable=True) from None
        except EvidenceError as exc:
            raise EvidenceUnavailable(f"sgx-aesm: {exc}") from None
        return {"quote": base64.b64encode(quote).decode("ascii")}

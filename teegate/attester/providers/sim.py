"""The simulated TD: a TDREPORT from teegate's simulated platform, quoted by a real QGS socket.

Exactly the path of a real TD under QEMU (TDREPORT → QGS GET_QUOTE → quote), with a software
TDX module. Its quotes chain to the simulated root CA, which a KBS trusts only when told to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from teegate.attester.errors import EvidenceUnavailable
from teegate.attester.providers.base import pad_report_data
from teegate.attester.providers.tdx_guest import quote_tdreport, tdx_evidence
from teegate.errors import TeegateError
from teegate.node.qgs.client import Address

__all__ = ["DEFAULT_QGS_SOCKET", "SimTdProvider"]

#: QGS's Unix socket when ``port = 0`` in /etc/qgs.conf.
DEFAULT_QGS_SOCKET: Final = Path("/var/run/tdx-qgs/qgs.socket")
_MR_CONFIG_ID_SIZE: Final = 48


class SimTdProvider:
    """Simulated TDX evidence; the quote comes from a QGS over ``qgs``."""

    name = "sim"
    tee = "tdx"

    def __init__(self, platform_dir: Path, qgs: Address = DEFAULT_QGS_SOCKET) -> None:
        from teegate.sim import SimPlatform

        try:
            self._platform = SimPlatform.load(platform_dir)
        except TeegateError as exc:
            raise EvidenceUnavailable(
                f"sim: cannot load the simulated platform {platform_dir}: {exc}"
            ) from None
        except OSError as exc:
            raise EvidenceUnavailable(
                f"sim: cannot load the simulated platform {platform_dir}: {exc}"
            ) from None
        self._platform_dir = platform_dir
        self._qgs = qgs

    def describe(self) -> str:
        return f"simulated TD (platform {self._platform_dir}) + QGS at {self._qgs} (NOT hardware-backed)"

    def evidence(self, report_data: bytes, *, init_data_digest: bytes | None = None) -> dict[str, Any]:
        launch: dict[str, Any] = {}
        if init_data_digest is not None:
            # The simulated VMM launched this TD with the init-data digest as MRCONFIGID.
            launch["mr_config_id"] = init_data_digest[:_MR_CONFIG_ID_SIZE].ljust(_MR_CONFIG_ID_SIZE, b"\0")
        tdreport = self._platform.tdreport(pad_report_data(report_data), **launch)
        return tdx_evidence(quote_tdreport(self._qgs, tdreport), None)

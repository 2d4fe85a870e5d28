"""Fixtures: a real SQLite store in a temporary directory, and a policy engine over it."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from teegate.kbs.policy import PolicyEngine
from teegate.kbs.storage import Storage, StorageSettings, open_storage


@pytest.fixture
async def storage(tmp_path: Path) -> AsyncIterator[Storage]:
    store = await open_storage(StorageSettings(data_dir=tmp_path / "kbs"))
    yield store
    await store.close()


@pytest.fixture
def engine(storage: Storage) -> PolicyEngine:
    return PolicyEngine(storage.policies, storage.reference_values)


def rv_message(values: dict[str, Any]) -> str:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return json.dumps({"version": "0.1.0", "type": "sample", "payload": payload})


MR_TD = "a1" * 48
RTMR1 = "b1" * 48
RTMR2 = "b2" * 48
XFAM = "e702060000000000"
TDX_RVS = {"mr_td": [MR_TD], "rtmr_1": [RTMR1], "rtmr_2": [RTMR2], "xfam": [XFAM]}


def tdx_claims(
    *, debug: bool = False, tcb: str = "UpToDate", mr_td: str = MR_TD, **extra: Any
) -> dict[str, Any]:
    return {
        "quote": {
            "header": {
                "version": "0400",
                "tee_type": "81000000",
                "vendor_id": "939a7233f79c4ca9940a0db3957f0607",
            },
            "body": {"mr_td": mr_td, "rtmr_1": RTMR1, "rtmr_2": RTMR2, "xfam": XFAM},
        },
        "td_attributes": {"debug": debug},
        "tcb_status": tcb,
        "collateral_expiration_status": "0",
        "report_data": "00" * 64,
        **extra,
    }


def uefi_event_logs(kernel: str, cmdline: str) -> list[dict[str, Any]]:
    """A TD's UEFI event log claims: the kernel and its command line, as the verifier reports them."""
    return [
        {
            "type_name": "EV_EFI_BOOT_SERVICES_APPLICATION",
            "details": {"device_paths": ["File(kernel)"]},
            "digests": [{"alg": "SHA-384", "digest": kernel}],
        },
        {
            "type_name": "EV_EVENT_TAG",
            "details": {"string": "LOADED_IMAGE::LoadOptions"},
            "digests": [{"alg": "SHA-384", "digest": cmdline}],
        },
    ]


def sample_claims(debug: bool = False) -> dict[str, Any]:
    return {
        "svn": "1",
        "report_data": "cmQ=",
        "launch_digest": "abcde",
        "platform_version": {"major": 1, "minor": 4},
        "debug": debug,
    }

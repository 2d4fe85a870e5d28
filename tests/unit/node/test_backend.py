"""Quoting backends: what this machine allows of the hardware path, and backend selection."""

from __future__ import annotations

import ctypes.util
from pathlib import Path

import pytest

from teegate.errors import ConfigError
from teegate.node.qgs.backend import DcapQlBackend, open_backend


def test_dcap_ql_loads_where_installed_else_config_error_naming_the_package() -> None:
    if ctypes.util.find_library("sgx_dcap_ql"):
        assert DcapQlBackend.load().hardware
        return
    with pytest.raises(ConfigError, match="libsgx-dcap-ql"):
        DcapQlBackend.load()


def test_a_library_without_the_quoting_symbols_is_refused() -> None:
    libc = ctypes.util.find_library("c")
    assert libc is not None
    with pytest.raises(ConfigError, match="lacks sgx_qe_get_quote_size"):
        DcapQlBackend.load(libc)


def test_open_backend_refuses_unknown_and_sim_without_platform(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown quoting backend"):
        open_backend("tpm", None)
    with pytest.raises(ConfigError, match="--platform"):
        open_backend("sim", None)

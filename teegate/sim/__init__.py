"""A simulated TDX/SGX platform: test PKI, software quoting engine, collateral for it.

Quotes are in the real binary formats (SGX v3, TDX v4, TDX v5) and chain to a test root named
"teegate SIMULATED SGX Root CA"; a verifier accepts them only when given :meth:`SimPlatform.anchor`.
"""

from __future__ import annotations

from teegate.sim.platform import DEFAULT_FMSPC, PLATFORM_FILE, SimPlatform

__all__ = ["DEFAULT_FMSPC", "PLATFORM_FILE", "SimPlatform"]

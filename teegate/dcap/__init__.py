"""DCAP core: pure parsing and verification of Intel SGX and TDX quotes (no I/O, no clock)."""

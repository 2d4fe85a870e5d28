"""Node services: QGS (TDX), AESM quote helper (SGX), PCCS, platform registration."""

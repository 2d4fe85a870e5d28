"""Host readiness checks for TDX/SGX (``teegate host check``)."""

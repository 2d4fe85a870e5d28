"""SGX out-of-process quote helper: the AESM socket protocol subset libsgx-quote-ex uses."""

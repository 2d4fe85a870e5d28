"""Key Broker Service: Trustee-compatible protocol (``protocol``, ``session``, ``jwe``, ``token``,
``app``), policies (``policy``), storage (``storage``), admin API and audit."""

"""Small network helpers shared by the servers and clients."""

from __future__ import annotations

import ipaddress

__all__ = ["is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name, an IP address, or a bracketed IPv6 address) is loopback:
    ``localhost`` or an address in 127.0.0.0/8 or ::1. Other names are not (no DNS lookup)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

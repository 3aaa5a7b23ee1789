"""Where a network listener (OSC, the web remote) is reachable from: they bind loopback by default, and a
listener on any other address is LAN access, which each of them makes opt-in (an allow-list, a token)."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps the listener on this machine ('localhost', 127.x, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

"""Servers the tests start on loopback (real ones where they can run here, protocol-level test
servers for Exchange and Microsoft 365), and what they share."""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """A loopback port the OS has just given out (never a fixed or guessed one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

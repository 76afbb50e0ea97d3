"""The settings of the IMAP target (sinks/imap.py).

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from core.config import ImapServer, SecretRef

__all__ = ["ImapTarget"]


class ImapTarget(ImapServer):
    """The IMAP server mail lands in (Open-Xchange's Dovecot or any other)."""

    type: Literal["imap"] = "imap"
    passwords: dict[str, SecretRef] = Field(default_factory=dict, description="target login -> password")
    folder_names: dict[str, str] = Field(
        default_factory=dict,
        description="special-use folder -> its name at the target (e.g. Sent: Gesendet), when the server has no "
                    "SPECIAL-USE")

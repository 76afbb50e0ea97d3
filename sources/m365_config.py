"""The settings of the Microsoft 365 mailbox source (sources/m365.py).

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from typing import Literal

from core.config import SOURCE_NAME
from sources.graph_config import GraphApp

__all__ = ["M365Source"]


class M365Source(GraphApp):
    """Microsoft 365 mailboxes through Graph: mail, calendars and contacts."""

    type: Literal["m365"] = "m365"
    name: str = SOURCE_NAME
    mail: bool = True
    calendars: bool = True
    contacts: bool = True

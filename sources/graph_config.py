"""The settings every Microsoft Graph source shares (sources/graph.py: OneDrive, SharePoint, Microsoft 365 mailboxes).

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from pydantic import Field

from core.config import SecretRef, Tls, url_host

__all__ = ["GraphApp"]


class GraphApp(Tls):
    """An Entra ID application with app-only (client credentials) access to Microsoft Graph."""

    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretRef
    authority: str = Field(default="https://login.microsoftonline.com",
                           description="the identity platform (national clouds have their own)")
    graph_url: str = Field(default="https://graph.microsoft.com/v1.0")
    concurrency: int = Field(default=4, ge=1, le=16, description="requests at once per mailbox / drive")

    def host_name(self) -> str:
        """graph.microsoft.com for every Graph source: Microsoft throttles per tenant and
        application, so that is where a limit belongs."""
        return url_host(self.graph_url)

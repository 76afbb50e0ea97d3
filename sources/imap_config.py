"""The settings of the IMAP source (sources/imap.py).

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ByteSize, Field, model_validator

from core.config import SOURCE_NAME, ImapServer, Model, SecretRef

__all__ = ["ImapSource", "ImapOAuth"]


class ImapOAuth(Model):
    """An application that gets its own IMAP access tokens (OAuth 2.0 client credentials), as Microsoft
    365's app-only IMAP access works: one token opens every mailbox the application may read."""

    authority: str | None = Field(default=None, pattern=r"^https://",
                                  description="the identity platform with the tenant, "
                                              "`https://login.microsoftonline.com/<tenant id>` (OpenID metadata)")
    token_url: str | None = Field(default=None, pattern=r"^https?://",
                                  description="instead of `authority`: any OAuth 2.0 token endpoint (Keycloak, …)")
    client_id: str = Field(min_length=1)
    client_secret: SecretRef
    scope: str = Field(default="https://outlook.office365.com/.default", min_length=1)
    ca_file: Path | None = Field(default=None, description="a CA bundle (PEM) to trust for the identity platform "
                                                           "instead of the system's (relative to the department file)")

    @model_validator(mode="after")
    def _one_endpoint(self):
        if (self.authority is None) == (self.token_url is None):
            raise ValueError("give exactly one of authority (Entra ID, other OpenID providers) and token_url")
        return self


class ImapSource(ImapServer):
    """Any IMAP server: a master user (Dovecot `user*master`), one password per user, or OAuth (XOAUTH2)."""

    type: Literal["imap"] = "imap"
    name: str = SOURCE_NAME
    passwords: dict[str, SecretRef] = Field(default_factory=dict, description="source login -> password")
    oauth_tokens: dict[str, SecretRef] = Field(default_factory=dict,
                                               description="source login -> OAuth access token (XOAUTH2)")
    oauth: ImapOAuth | None = Field(default=None, description="get access tokens for every mailbox (XOAUTH2) "
                                                              "from an identity platform, renewed as they expire")
    bandwidth: ByteSize | None = Field(default=None, gt=0,
                                       description="bytes per second this process reads from this host at most "
                                                   "(e.g. 4MB), shared by all its threads "
                                                   "(imapsync's --maxbytespersecond)")

    @model_validator(mode="after")
    def _one_way_for_all(self):
        # both would claim every mailbox: the master user's password would never be used
        if self.oauth is not None and (self.master_user is not None or self.password is not None):
            raise ValueError("oauth logs every mailbox in with the application's token: remove master_user and "
                             "password (a mailbox's own passwords / oauth_tokens entry still takes precedence)")
        return self

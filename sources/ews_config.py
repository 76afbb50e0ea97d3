"""The settings of the Exchange (EWS) source (sources/ews.py).

A light module: it imports no client library, so that the department model can know every
system's settings (core/plugins.py registers this model) without loading any of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from core.config import SOURCE_NAME, SecretRef, Tls, url_host

__all__ = ["EwsSource"]


class EwsSource(Tls):
    """Exchange on-premises over EWS, with a service account that impersonates each user."""

    type: Literal["ews"] = "ews"
    name: str = SOURCE_NAME
    url: str = Field(pattern=r"^https?://", description="the EWS endpoint, …/EWS/Exchange.asmx")
    username: str = Field(min_length=1)
    password: SecretRef

    auth: Literal["ntlm", "basic"] = "ntlm"
    impersonation: bool = Field(default=True, description="impersonate each mailbox (ApplicationImpersonation); "
                                                      "false: the account's own or delegated access")
    mail: bool = True
    calendars: bool = True
    contacts: bool = True
    max_connections: int = Field(default=4, ge=1, le=32, description="HTTP connections to the server at once")
    max_wait: float = Field(default=300, gt=0, description="longest single back-off (seconds) a busy server may ask "
                                                          "for before the item is retried later instead")
    page_size: int = Field(default=200, ge=1, le=512, description="changes per SyncFolderItems request")
    sync_state_dir: Path | None = Field(default=None, description="where each mailbox's sync state is kept between "
                                                                  "runs (default: only while the process runs)")

    @field_validator("sync_state_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("must be an absolute path (sync states must not depend on where umstieg runs)")
        return value

    def host_name(self) -> str:
        return url_host(self.url)

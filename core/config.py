"""The building blocks of every configuration model: a strict model that refuses unknown settings
and URLs with a secret in them, references to secrets, TLS settings, S3 buckets, and the fields
every source has. The department model (core/department.py) and each system's own model
(`sources/<system>_config.py`, `sinks/<system>_config.py`) are made of these, so that every part
of a department file is checked the same way.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from core.errors import ConfigError
from core.retry import RetryPolicy

__all__ = ["Model", "url_host", "SecretRef", "literal_secret_in_url", "Tls", "ImapServer", "S3Bucket", "SOURCE_NAME",
           "TARGET_FOLDER", "READ_PERMISSIONS", "MiB"]


def url_host(url: str) -> str:
    """The host of a URL, in lower case (the URL itself when it has none)."""
    return (urlsplit(url).hostname or url).lower()


class Model(BaseModel):
    """Strict and frozen: a misspelt setting is an error, never silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def host_name(self) -> str:
        """The host a source or target of this kind talks to, where the per-host limits count
        (flows/limits.py): `local` for folders and files of this machine; a system with a server
        says which."""
        return "local"

    @field_validator("*")
    @classmethod
    def _no_secret_in_url(cls, value, info):
        """Every URL of a department file (ledger, servers, identity platforms, clusters) is refused
        when it carries a literal secret: a password in its user part, or a query parameter named
        like one (`password=`, `token=`, `sig=`, …). Secrets go in their own fields, as references."""
        for text in (value if isinstance(value, list) else [value]):
            if isinstance(text, str) and "://" in text:
                why = literal_secret_in_url(text, database=info.field_name == "ledger")
                if why:
                    where = ("give the password as `ledger_password: env:NAME`" if info.field_name == "ledger"
                             else "give the secret in the field meant for it, as a reference (`env:NAME`)")
                    raise ValueError(f"{why}: a secret is never written in the file; remove it from the URL and "
                                     f"{where}")
        return value


#: Query parameters that carry a secret (passwords, tokens, signatures of pre-signed URLs, API keys).
_SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|signature|^sig$|api_?key|credential", re.IGNORECASE)


def literal_secret_in_url(url: str, database: bool = False) -> str | None:
    """What literal secret `url` carries (never the secret itself), or None. A `database` URL is
    read as SQLAlchemy reads it (its password runs to the last `@` and may hold a `/`)."""
    from urllib.parse import parse_qsl
    try:
        if database:
            from sqlalchemy.engine import make_url
            u = make_url(url)
            password, query = u.password, list(u.query)
        else:
            parts = urlsplit(url)
            password, query = parts.password, [n for n, _ in parse_qsl(parts.query, keep_blank_values=True)]
    except (ValueError, TypeError):
        return None                    # not a URL these readers understand: the field's own checks say why
    if password:
        return "the URL holds a password (user:password@)"
    for name in query:
        if _SECRET_PARAMETER.search(name):
            return f"the URL holds a secret in its query parameter {name!r}"
    return None


class SecretRef(str):
    """A reference to a secret: `env:NAME` or `prefect-secret:BLOCK`; never the secret itself."""

    _PATTERN = re.compile(r"^(env|prefect-secret):[A-Za-z0-9_.\-/]+$")

    @classmethod
    def __get_pydantic_core_schema__(cls, source, handler):
        from pydantic_core import core_schema
        return core_schema.no_info_after_validator_function(cls._check, core_schema.str_schema())

    @classmethod
    def _check(cls, value: str) -> SecretRef:
        if not cls._PATTERN.match(value):
            raise ValueError("a secret must be a reference, `env:NAME` or `prefect-secret:BLOCK`, "
                             "never the secret itself")
        kind, _, name = value.partition(":")
        if kind == "prefect-secret" and not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
            raise ValueError(f"{name!r} cannot be a Prefect block name: Prefect names blocks with lowercase "
                             "letters, digits and dashes")
        return cls(value)

    def resolve(self) -> SecretStr:
        """The secret's value, wrapped so that it is never printed by accident."""
        kind, _, name = self.partition(":")
        if kind == "env":
            if name not in os.environ:
                raise ConfigError(f"the secret {self} is not set: export {name} before running")
            return SecretStr(os.environ[name])
        from prefect.blocks.system import Secret
        try:
            block: Any = Secret.load(name)           # Prefect's sync-or-async wrapper: synchronous here
            return SecretStr(block.get())
        except ValueError as exc:
            raise ConfigError(f"the Prefect Secret block {name!r} does not exist") from exc



#: The fields every source has: its name, and (file sources) where its files land.
SOURCE_NAME = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$",
                    description="what items of this source are filed under")
TARGET_FOLDER = Field(default="", description="where this source's files land inside each user's target folder "
                                               "(e.g. `OneDrive`); needed when several sources hold files")
READ_PERMISSIONS = Field(default=True, description="read who an item is shared with (one request per shared "
                                                    "item) for the sharing report")


#: One mebibyte, the unit of chunk and part sizes.
MiB = 1024 * 1024


class Tls(Model):
    """How a client trusts a server: the system's CAs, a CA bundle, or (tests only) nobody."""

    verify_tls: bool = True
    ca_file: Path | None = Field(default=None, description="a CA bundle (PEM) to trust instead of the system's")
    timeout: float = Field(default=60, gt=0, description="seconds to wait for the server before retrying")
    retry: RetryPolicy | None = Field(default=None, description="how often and how long a busy server is asked "
                                                                "again; unset fields keep the system's defaults "
                                                                "(core/retry.py)")

    @model_validator(mode="after")
    def _tls(self):
        if self.ca_file is not None and not self.verify_tls:
            raise ValueError("ca_file and verify_tls: false contradict each other")
        return self


class ImapServer(Tls):
    """An IMAP server and how umstieg logs in to it: as a master user for every mailbox (Dovecot's
    `user*master`) or with each login's own password (`passwords`, in the IMAP source and target)."""

    host: str = Field(min_length=1)
    port: int = Field(default=993, ge=1, le=65535)
    security: Literal["ssl", "starttls", "none"] = "ssl"
    master_user: str | None = Field(default=None, description="log in as `<user>*<master_user>` (Dovecot)")
    password: SecretRef | None = Field(default=None, description="the master user's password")

    def host_name(self) -> str:
        return self.host.lower()


class S3Bucket(Tls):
    """An S3 bucket, at AWS or on an S3-compatible server, and the keys that open it."""

    bucket: str = Field(min_length=3)
    endpoint_url: str | None = Field(default=None, description="for S3-compatible servers (MinIO, Ceph, …)")
    region: str = "us-east-1"
    access_key_id: SecretRef | None = Field(default=None, description="default: the AWS credential chain")
    secret_access_key: SecretRef | None = None

    def host_name(self) -> str:
        return url_host(self.endpoint_url) if self.endpoint_url else "s3.amazonaws.com"

    @model_validator(mode="after")
    def _key_pair(self):
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        return self


"""A department's migration, as a YAML file validated before anything moves.

Errors name the file, the line, the field and what was expected, all at once, so that a person
can fix the file in one go. Secrets are never written in the file: a field that needs one holds
a reference (`env:NAME` or `prefect-secret:BLOCK`), resolved only when used and never logged.
"""

from __future__ import annotations

import os
import re
import typing
from collections import Counter
from datetime import time as dtime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (BaseModel, ByteSize, ConfigDict, Field, SecretStr, ValidationError, field_validator,
                      model_validator)

from core.errors import ConfigError

__all__ = ["Department", "User", "FolderSource", "SmbSource", "S3Source", "OneDriveSource", "SharePointSource",
           "M365Source", "EwsSource", "ImapSource", "ImapOAuth", "ExportSource", "SourceConfig",
           "LocalDirTarget", "NextcloudTarget", "OXDriveTarget", "S3ArchiveTarget",
           "ImapTarget", "CalDavTarget", "CardDavTarget", "TargetConfig",
           "Conversion", "KeepOriginal", "Sharing", "MailOptions", "FolderRename",
           "Schedule", "Limits", "Cluster", "SecretRef", "UsersFrom", "LdapDirectory", "load_department", "identity_problems",
           "with_users"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

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
    from urllib.parse import parse_qsl, urlsplit
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
    def _check(cls, value: str) -> "SecretRef":
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
            return SecretStr(Secret.load(name).get())
        except ValueError as exc:
            raise ConfigError(f"the Prefect Secret block {name!r} does not exist") from exc


class User(_Model):
    """One person: who they are at the source, and who they become at the target."""

    source: str = Field(min_length=1, description="login at the source (also their folder name)")
    target: str = Field(min_length=1, description="login at the target")
    folder: str | None = Field(default=None, description="their folder under a source's root, if not `source`")
    folders: dict[str, str] = Field(
        default_factory=dict,
        description="source name -> their folder, drive or mailbox in that source, where it differs from "
                    "`folder` (e.g. a OneDrive's UPN beside a home folder's name)")
    email: str | None = Field(default=None, description="primary e-mail address (from the directory); the "
                                                         "identity check compares it with the target account's")
    display_name: str | None = Field(default=None, description="display name (from the directory); the identity "
                                                               "check compares it with the target account's")

    @field_validator("source", "target", "folder")
    @classmethod
    def _no_path_tricks(cls, value: str | None) -> str | None:
        if value is not None and (value in (".", "..") or "/" in value or "\\" in value or "\0" in value):
            raise ValueError("must be a plain name (no '/', '\\', '.' or '..')")
        return value

    @field_validator("folders")
    @classmethod
    def _plain_folders(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value.values():
            cls._no_path_tricks(name)
        return value

    def folder_in(self, source_name: str) -> str:
        """What this user is called in the source `source_name`: their folder, drive or mailbox."""
        return self.folders.get(source_name) or self.folder or self.source


class LdapDirectory(_Model):
    """An LDAP directory (Active Directory, OpenLDAP, Univention) that lists the department's users:
    the members of `group`, or the entries below `base` that match `filter` (an OU)."""

    url: str = Field(pattern=r"^ldaps?://", description="ldap://host:389 or ldaps://host:636")
    bind_dn: str | None = Field(default=None, description="the account that reads the directory")
    password: SecretRef | None = Field(default=None, description="the bind account's password")
    base: str = Field(min_length=1, description="where the users are searched (the OU of the department)")
    filter: str = Field(default="(objectClass=person)", description="which entries below base are users")
    group: str | None = Field(default=None, description="DN of a group: only its members (member, uniqueMember "
                                                        "or memberUid) are the department's users")
    source_attr: str = Field(default="uid", description="attribute holding the source login "
                                                        "(sAMAccountName or userPrincipalName in Active Directory)")
    target_attr: str = Field(default="uid", description="attribute holding the target login")
    mail_attr: str = Field(default="mail", description="attribute holding the primary e-mail address")
    name_attr: str = Field(default="displayName", description="attribute holding the display name")
    ca_file: Path | None = Field(default=None, description="the CA that signed the directory's certificate")
    start_tls: bool = Field(default=False, description="upgrade an ldap:// connection with StartTLS")
    page_size: int = Field(default=500, ge=1, le=5000, description="entries per page of a paged search")

    @model_validator(mode="after")
    def _bind(self):
        if (self.bind_dn is None) != (self.password is None):
            raise ValueError("bind_dn and password go together (or neither, for an anonymous read)")
        return self


class UsersFrom(_Model):
    """Where the department's users come from when they are not listed under `users:`."""

    csv: Path | None = Field(default=None, description="a CSV file (columns: source, target, folder, "
                                                       "folder:NAME, email, display_name)")
    ldap: LdapDirectory | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.csv is None) == (self.ldap is None):
            raise ValueError("give exactly one of csv or ldap")
        return self


_NAME = Field(min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$", description="what items of this source are filed under")
_TARGET_FOLDER = Field(default="", description="where this source's files land inside each user's target folder "
                                               "(e.g. `OneDrive`); needed when several sources hold files")
_READ_PERMISSIONS = Field(default=True, description="read who an item is shared with (one request per shared "
                                                    "item) for the sharing report")


class FolderSource(_Model):
    """A folder tree on this machine (or a mounted share) with one sub-folder per user."""

    type: Literal["folder"] = "folder"
    name: str = _NAME
    root: Path
    target_folder: str = _TARGET_FOLDER


class _Tls(_Model):
    """How a client trusts a server: the system's CAs, a CA bundle, or (tests only) nobody."""

    verify_tls: bool = True
    ca_file: Path | None = Field(default=None, description="a CA bundle (PEM) to trust instead of the system's")
    timeout: float = Field(default=60, gt=0, description="seconds to wait for the server before retrying")

    @model_validator(mode="after")
    def _tls(self):
        if self.ca_file is not None and not self.verify_tls:
            raise ValueError("ca_file and verify_tls: false contradict each other")
        return self


class SmbSource(_Tls):
    """A Windows (SMB 2/3) share read with a service account: `\\\\server\\share\\path\\<user folder>`."""

    type: Literal["smb"] = "smb"
    name: str = _NAME
    target_folder: str = _TARGET_FOLDER
    server: str = Field(min_length=1, description="host name or address of the file server")
    port: int = Field(default=445, ge=1, le=65535)
    share: str = Field(min_length=1, description="the share's name")
    path: str = Field(default="", description="folder inside the share that holds one folder per user")
    username: str = Field(min_length=1, description="service account (DOMAIN\\user or user@domain)")
    password: SecretRef
    encrypt: bool = Field(default=False, description="require SMB 3 encryption")
    read_acl: bool = Field(default=True, description="read owners and ACL entries for the sharing report")


class _S3Bucket(_Tls):
    """An S3 bucket, at AWS or on an S3-compatible server, and the keys that open it."""

    bucket: str = Field(min_length=3)
    endpoint_url: str | None = Field(default=None, description="for S3-compatible servers (MinIO, Ceph, …)")
    region: str = "us-east-1"
    access_key_id: SecretRef | None = Field(default=None, description="default: the AWS credential chain")
    secret_access_key: SecretRef | None = None

    @model_validator(mode="after")
    def _key_pair(self):
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key go together")
        return self


class S3Source(_S3Bucket):
    """An S3 bucket (or prefix) holding an exported share: `<prefix>/<user folder>/...`."""

    type: Literal["s3"] = "s3"
    name: str = _NAME
    target_folder: str = _TARGET_FOLDER
    prefix: str = Field(default="", description="key prefix that holds one folder per user")
    page_size: int = Field(default=1000, ge=1, le=1000, description="keys asked for per listing request")


class _GraphApp(_Tls):
    """An Entra ID application with app-only (client credentials) access to Microsoft Graph."""

    tenant_id: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretRef
    authority: str = Field(default="https://login.microsoftonline.com",
                           description="the identity platform (national clouds have their own)")
    graph_url: str = Field(default="https://graph.microsoft.com/v1.0")
    concurrency: int = Field(default=4, ge=1, le=16, description="requests at once per mailbox / drive")


class OneDriveSource(_GraphApp):
    """Each user's OneDrive (the user's source login is their UPN at Microsoft 365)."""

    type: Literal["onedrive"] = "onedrive"
    name: str = _NAME
    target_folder: str = _TARGET_FOLDER
    path: str = Field(default="", description="a folder in each drive to migrate (default: the whole drive)")
    read_permissions: bool = _READ_PERMISSIONS


class SharePointSource(_GraphApp):
    """A SharePoint document library with one folder per user (or a shared folder per group)."""

    type: Literal["sharepoint"] = "sharepoint"
    name: str = _NAME
    target_folder: str = _TARGET_FOLDER
    site: str = Field(min_length=1, description="`host:/sites/name` or a site id")
    library: str = Field(default="Documents", description="the document library's name")
    path: str = Field(default="", description="folder in the library that holds one folder per user")
    read_permissions: bool = _READ_PERMISSIONS


class M365Source(_GraphApp):
    """Microsoft 365 mailboxes through Graph: mail, calendars and contacts."""

    type: Literal["m365"] = "m365"
    name: str = _NAME
    mail: bool = True
    calendars: bool = True
    contacts: bool = True


class EwsSource(_Tls):
    """Exchange on-premises over EWS, with a service account that impersonates each user."""

    type: Literal["ews"] = "ews"
    name: str = _NAME
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


class ImapOAuth(_Model):
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


class ImapSource(_Tls):
    """Any IMAP server: a master user (Dovecot `user*master`), one password per user, or OAuth (XOAUTH2)."""

    type: Literal["imap"] = "imap"
    name: str = _NAME
    host: str = Field(min_length=1)
    port: int = Field(default=993, ge=1, le=65535)
    security: Literal["ssl", "starttls", "none"] = "ssl"
    master_user: str | None = Field(default=None, description="log in as `<user>*<master_user>` (Dovecot)")
    password: SecretRef | None = Field(default=None, description="the master user's password")
    passwords: dict[str, SecretRef] = Field(default_factory=dict, description="source login -> password")
    oauth_tokens: dict[str, SecretRef] = Field(default_factory=dict,
                                               description="source login -> OAuth access token (XOAUTH2)")
    oauth: ImapOAuth | None = Field(default=None, description="get access tokens for every mailbox (XOAUTH2) "
                                                              "from an identity platform, renewed as they expire")
    bandwidth: ByteSize | None = Field(default=None, gt=0,
                                       description="bytes per second this process reads from this host at most "
                                                   "(e.g. 4MB), shared by all its threads (imapsync's --maxbytespersecond)")

    @model_validator(mode="after")
    def _one_way_for_all(self):
        # both would claim every mailbox: the master user's password would never be used
        if self.oauth is not None and (self.master_user is not None or self.password is not None):
            raise ValueError("oauth logs every mailbox in with the application's token: remove master_user and "
                             "password (a mailbox's own passwords / oauth_tokens entry still takes precedence)")
        return self


class ExportSource(_Model):
    """Export files on this machine, one folder per user: PST/OST, MBOX, EML, MSG, ICS, VCF."""

    type: Literal["export"] = "export"
    name: str = _NAME
    root: Path


SourceConfig = Annotated[FolderSource | SmbSource | S3Source | OneDriveSource | SharePointSource | M365Source
                         | EwsSource | ImapSource | ExportSource, Field(discriminator="type")]


class LocalDirTarget(_Model):
    """A local directory tree laid out per user: `<root>/<target login>/<path>`."""

    type: Literal["localdir"] = "localdir"
    root: Path


_MiB = 1024 * 1024


class _WebDavTarget(_Model):
    """What every WebDAV target needs: where it is, who logs in, how long to wait, which TLS."""

    url: str = Field(pattern=r"^https?://[^\s/?#@]+(/[^\s?#]*)?$",
                     description="the server's address (no user, no query)")
    username: str | None = Field(default=None, min_length=1,
                                 description="a service account that writes every user's files")
    password: SecretRef | None = Field(default=None, description="the service account's (app) password")
    app_passwords: dict[str, SecretRef] = Field(
        default_factory=dict,
        description="target login -> that user's app password (files go to the user's own account)")
    folder: str | None = Field(
        default=None,
        description="where each user's files land below the account's root; `{user}` is the target login "
                    "(default: `{user}` for the service account, the account's root otherwise)")
    timeout: float = Field(default=60, gt=0, description="seconds to wait for the server before retrying")
    verify_tls: bool = True
    ca_file: Path | None = Field(default=None, description="a CA bundle (PEM) to trust instead of the system's")

    @field_validator("folder")
    @classmethod
    def _plain_folder(cls, value: str | None) -> str | None:
        if value is not None and (value.startswith("/") or any(p in (".", "..") for p in value.split("/"))):
            raise ValueError("must be a relative path without '.' or '..'")
        return value

    @model_validator(mode="after")
    def _credentials(self):
        problems = []
        if (self.username is None) != (self.password is None):
            problems.append("username and password go together (a service account and its app password)")
        elif self.username is None and not self.app_passwords:
            problems.append("needs credentials: username and password (a service account), "
                            "or app_passwords (one per target user)")
        if self.username is not None and self.folder is not None and "{user}" not in self.folder:
            problems.append("with a service account, folder must contain {user}: "
                            "otherwise every user's files would land in one folder")
        if self.ca_file is not None and not self.verify_tls:
            problems.append("ca_file and verify_tls: false contradict each other")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def root(self) -> str:
        """What names this target in concurrency tags (`target:<root>`) and messages."""
        return self.url.rstrip("/")


class NextcloudTarget(_WebDavTarget):
    """Nextcloud files over WebDAV: `<url>/remote.php/dav/files/<account>/<folder>/<path>`."""

    type: Literal["nextcloud"] = "nextcloud"
    chunk_threshold: int = Field(default=64 * _MiB, ge=0,
                                 description="files of this size (bytes) and larger go up in chunks")
    chunk_size: int = Field(default=64 * _MiB, ge=5 * _MiB, le=5 * 1024 * _MiB,
                            description="bytes per chunk (Nextcloud: 5 MiB to 5 GiB)")

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if "/remote.php" in value:
            raise ValueError("is the Nextcloud's address without /remote.php/… (e.g. https://cloud.example.org)")
        return value


class OXDriveTarget(_WebDavTarget):
    """OX Drive (Open-Xchange) over WebDAV: `<url>/<folder>/<path>`, plain PUTs."""

    type: Literal["oxdrive"] = "oxdrive"


class S3ArchiveTarget(_S3Bucket):
    """An S3 bucket that receives every converted document's Office original, for the record."""

    type: Literal["s3"] = "s3"
    prefix: str = Field(default="", description="key prefix; keys are `<prefix>/<department>/<user>/<path>`")
    multipart_threshold: int = Field(default=64 * 1024 * 1024, ge=5 * 1024 * 1024,
                                     description="files of this size (bytes) and larger go up in parts")
    part_size: int = Field(default=16 * 1024 * 1024, ge=5 * 1024 * 1024, le=5 * 1024 * 1024 * 1024,
                           description="bytes per part of a multipart upload (S3: 5 MiB to 5 GiB)")


class ImapTarget(_Tls):
    """The IMAP server mail lands in (Open-Xchange's Dovecot or any other)."""

    type: Literal["imap"] = "imap"
    host: str = Field(min_length=1)
    port: int = Field(default=993, ge=1, le=65535)
    security: Literal["ssl", "starttls", "none"] = "ssl"
    master_user: str | None = Field(default=None, description="log in as `<user>*<master_user>` (Dovecot)")
    password: SecretRef | None = Field(default=None, description="the master user's password")
    passwords: dict[str, SecretRef] = Field(default_factory=dict, description="target login -> password")
    folder_names: dict[str, str] = Field(
        default_factory=dict,
        description="special-use folder -> its name at the target (e.g. Sent: Gesendet), when the server has no "
                    "SPECIAL-USE")


class _DavAccount(_WebDavTarget):
    """A CalDAV or CardDAV server: `<url>/<home>` per user."""

    flavour: Literal["nextcloud", "ox", "generic"] = "generic"


class CalDavTarget(_DavAccount):
    """Calendars: Nextcloud (`/remote.php/dav/calendars/USER/`), OX (`/servlet/dav`) or any CalDAV server."""

    type: Literal["caldav"] = "caldav"
    max_instances: int | None = Field(
        default=None, ge=1,
        description="the server's cap on occurrences of one recurring event (default: what the calendar "
                    "announces, else 3500 for Nextcloud); a longer series fails as too_many_instances")
    invitations: Literal["suppress", "server"] = Field(
        default="suppress",
        description="suppress: ORGANIZER and ATTENDEE are marked SCHEDULE-AGENT=CLIENT (RFC 6638) so that "
                    "the server sends no invitation for a migrated meeting; server: the server schedules "
                    "as for a meeting just created (mail to every attendee)")
    max_calendars: int | None = Field(
        default=None, ge=-1,
        description="calendars (and subscriptions) one account may have, -1 for no limit (default: 30 for "
                    "Nextcloud, its app config dav/maximumCalendarsSubscriptions; none for other servers)")
    new_calendars_per_period: int | None = Field(
        default=None, ge=1,
        description="new calendars one account may make per calendar_creation_period (default: 10 for "
                    "Nextcloud, dav/rateLimitCalendarCreation; none for other servers)")
    calendar_creation_period: int = Field(
        default=3600, ge=1,
        description="seconds of that window (Nextcloud: dav/rateLimitPeriodCalendarCreation, 3600)")


class CardDavTarget(_DavAccount):
    """Address books: Nextcloud (`/remote.php/dav/addressbooks/users/USER/`), OX or any CardDAV server."""

    type: Literal["carddav"] = "carddav"


TargetConfig = Annotated[LocalDirTarget | NextcloudTarget | OXDriveTarget, Field(discriminator="type")]


class KeepOriginal(StrEnum):
    """Whether the Office original travels beside its ODF copy."""

    NEVER = "never"
    ALWAYS = "always"
    BELOW_SCORE = "below_score"


class Conversion(_Model):
    """How Office documents are converted on the way."""

    enabled: bool = True
    workers: int | None = Field(default=None, ge=1, description="local LibreOffice workers (default: CPU cores)")
    timeout: float = Field(default=120, gt=0)
    recycle_after: int = Field(default=200, ge=1)
    memory_limit_mb: int | None = Field(
        default=None, ge=0, description="a document that grows LibreOffice beyond this (MiB) is stopped and fails "
                                        "as conversion_too_large (default 6144, UMSTIEG_MEMORY_LIMIT_MB; 0: none)")
    keep_original: KeepOriginal = KeepOriginal.BELOW_SCORE
    keep_original_below: int = Field(default=90, ge=0, le=100,
                                     description="with below_score: keep the original when fidelity is below this")
    originals_folder: str | None = Field(default=None,
                                         description="sub-folder for kept originals (default: beside the ODF copy)")
    fidelity: list[Literal["structural", "visual"]] = Field(default_factory=lambda: ["structural"])


class Sharing(_Model):
    """How permissions read at the source (NTFS ACL entries, SharePoint/OneDrive permissions) become
    shares at the target. What cannot be mapped is listed in the report, never dropped silently."""

    users: dict[str, str] = Field(default_factory=dict,
                                  description="source principal (DOMAIN\\name, UPN or e-mail) -> target login")
    groups: dict[str, str] = Field(default_factory=dict, description="source group -> target group")
    match_logins: bool = Field(default=True,
                               description="a principal whose account name is a user's source login maps to "
                                           "that user's target login without being listed")


class Schedule(_Model):
    """When the department's deployment runs (for `prefect deploy`)."""

    cron: str | None = None
    timezone: str = "Europe/Berlin"
    window_start: dtime | None = Field(
        default=None, description="runs start no earlier than this (local time in `timezone`)")
    window_end: dtime | None = Field(
        default=None, description="no chunk starts after this; before window_start, the window spans midnight")

    @model_validator(mode="after")
    def _window(self):
        if self.window_start is not None and self.window_start == self.window_end:
            raise ValueError("window_start and window_end are equal: the window would never open "
                             "(leave both out to run at any time)")
        return self

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)") from exc
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None and len(value.split()) != 5:
            raise ValueError("a cron schedule has five fields: minute hour day-of-month month day-of-week")
        return value


class Limits(_Model):
    """Concurrency limits, applied by the flow before a chunk starts (flows/limits.py), with or
    without a Prefect server, on threads or on Dask."""

    converter: int = Field(default=0, ge=0,
                           description="documents converting at once on each converting host (0 = its workers)")
    source: int = Field(default=4, ge=1, description="chunks reading from one source host at once")
    target: int = Field(default=4, ge=1, description="chunks writing to one target host at once")
    chunk_size: int = Field(default=50, ge=1, le=5000, description="items per Prefect task")


class Cluster(_Model):
    """An existing Dask cluster to run conversion chunks on."""

    address: str = Field(pattern=r"^(tcp|tls|inproc)://.+")


class FolderRename(_Model):
    """One folder rename: a regular expression on the source folder (levels joined by "/") and what
    it becomes (imapsync's `--regextrans2`; `\\1` refers to a group)."""

    pattern: str = Field(min_length=1, description="regular expression searched in the source folder's name")
    to: str = Field(description="its replacement (re.sub syntax: \\1 is the first group)")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


class MailOptions(_Model):
    """What of each mailbox moves and where its folders land (imapsync's selection options)."""

    include: list[str] = Field(default_factory=list, description="folders to take (names, shell patterns, or "
                                                                 "re:<regex>); a folder taken takes its sub-folders. "
                                                                 "Empty: every folder")
    exclude: list[str] = Field(default_factory=list, description="folders left out, with their sub-folders "
                                                                 "(same forms as include); wins over include")
    folder_map: dict[str, str] = Field(default_factory=dict,
                                       description="source folder -> target folder, exactly (imapsync's --f1f2)")
    renames: list[FolderRename] = Field(default_factory=list,
                                        description="renames by pattern, applied in order (imapsync's --regextrans2)")
    max_age_days: float | None = Field(default=None, gt=0, description="only messages at most this old (--maxage)")
    min_age_days: float | None = Field(default=None, ge=0, description="only messages at least this old (--minage)")
    max_size: ByteSize | None = Field(default=None, gt=0, description="only messages at most this large (--maxsize)")
    min_size: ByteSize | None = Field(default=None, ge=0, description="only messages at least this large (--minsize)")
    folders_only: bool = Field(default=False, description="create the folders at the target, move no message")
    dry_run: bool = Field(default=False, description="a run lists what would move per folder and moves nothing")
    subscriptions: Literal["all", "source", "none"] = Field(
        default="all", description="subscribe at the target every folder made (all), those the source had "
                                   "subscribed (source; all where a source has no subscriptions), or none")

    @field_validator("include", "exclude")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern.strip("/"):
                raise ValueError("an empty folder name matches nothing")
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _ranges(self):
        if self.max_age_days is not None and self.min_age_days is not None and self.min_age_days >= self.max_age_days:
            raise ValueError(f"min_age_days ({self.min_age_days}) must be less than max_age_days "
                             f"({self.max_age_days}): no message would move")
        if self.max_size is not None and self.min_size is not None and self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) is more than max_size ({self.max_size}): no message "
                             "would move")
        return self


class Department(_Model):
    """One department's migration."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    description: str = ""
    language: Literal["de", "en", "fr"] = Field(default="en", description="language of the department's reports "
                                                "(run, status, risk scan) and their exports")
    ledger: str | None = Field(default=None, description="SQLAlchemy URL (default: SQLite in work_dir)")
    ledger_password: SecretRef | None = Field(default=None, description="for a PostgreSQL ledger")
    work_dir: Path = Field(description="staging area, ledger (by default) and reports")
    users: list[User] = Field(default_factory=list, description="the users, listed here (or see users_from)")
    users_from: UsersFrom | None = Field(default=None, description="read the users from a CSV file or LDAP")
    sources: list[SourceConfig] = Field(min_length=1)
    target: TargetConfig = Field(description="where files and documents land")
    mail_target: ImapTarget | None = Field(default=None, description="where mail lands")
    calendar_target: CalDavTarget | None = Field(default=None, description="where calendars land")
    contacts_target: CardDavTarget | None = Field(default=None, description="where address books land")
    archive: S3ArchiveTarget | None = Field(default=None,
                                            description="every converted document's original is also kept here")
    sharing: Sharing | None = Field(default=None, description="recreate source permissions as target shares")
    conversion: Conversion = Conversion()
    schedule: Schedule = Schedule()
    limits: Limits = Limits()
    cluster: Cluster | None = None
    mail: MailOptions = Field(default_factory=MailOptions,
                              description="which folders and messages of each mailbox move, and where they land")
    skip: list[str] = Field(
        default_factory=lambda: ["~$*", "Thumbs.db", "desktop.ini", ".DS_Store"],
        description="file names (shell patterns) recorded as skipped, not moved: Office lock files and the "
                    "system's folder caches by default")
    delete_at_target: bool = Field(default=False,
                                   description="remove target copies of items deleted at the source")
    allow_merge: list[str] = Field(default_factory=list,
                                   description="target logins that several source users may map to")
    source_file: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _identity_map(self) -> "Department":
        if not self.users and self.users_from is None:
            raise ValueError("no users: list them under users, or read them with users_from")
        problems = identity_problems([(u.source, u.target) for u in self.users], self.allow_merge)
        problems += [f"source name {name!r} is used {n} times"
                     for name, n in Counter(s.name for s in self.sources).items() if n > 1]
        file_sources = [s for s in self.sources if s.type in FILE_SOURCE_TYPES]
        folders = {s.name: _plain_target_folder(s.target_folder) for s in file_sources}
        problems += [f"sources {a!r} and {b!r} put files into overlapping folders of each user "
                     f"({folders[a] or 'the top'!s} and {folders[b] or 'the top'!s}): give each its own "
                     "target_folder, side by side, or one file's copy could replace another's"
                     for i, a in enumerate(folders) for b in list(folders)[i + 1:]
                     if folders[a] is not None and folders[b] is not None
                     and _overlap(folders[a], folders[b])]
        problems += [f"source {s.name!r}: target_folder must be a relative path without '.' or '..'"
                     for s in file_sources if _plain_target_folder(s.target_folder) is None]
        names = {s.name for s in self.sources}
        problems += [f"user {u.source!r} has a folder in source {name!r}, which the department does not have"
                     for u in self.users for name in u.folders if name not in names]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def user(self, source_login: str) -> User:
        """The user with this source login."""
        for u in self.users:
            if u.source == source_login:
                return u
        raise KeyError(source_login)

    @property
    def ledger_url(self) -> str:
        """Where the ledger lives (the password, if any, is added when connecting)."""
        return self.ledger or f"sqlite:///{(self.work_dir / 'ledger.sqlite').resolve()}"

    def open_ledger(self):
        """A new connection to the ledger, `ledger_password` resolved only now (the caller closes it)."""
        from core.ledger import Ledger
        password = self.ledger_password.resolve().get_secret_value() if self.ledger_password else None
        return Ledger(self.ledger_url, password=password)


#: Source types whose items are files (and so land in `target`, below their `target_folder`).
FILE_SOURCE_TYPES = ("folder", "smb", "s3", "onedrive", "sharepoint")


def _plain_target_folder(value: str) -> str | None:
    """`value` without surrounding slashes, or None when it leaves the user's folder."""
    parts = [p for p in value.strip("/").split("/") if p]
    if any(p in (".", "..") or "\\" in p for p in parts):
        return None
    return "/".join(parts)


def _overlap(a: str, b: str) -> bool:
    """Whether one folder is the other or inside it ("" is the top, around everything)."""
    return a == b or not a or not b or a.startswith(b + "/") or b.startswith(a + "/")


def with_users(dept: Department, users: list[User]) -> Department:
    """The department with its users resolved (from a directory), checked as a listed map is:
    a target login that receives two source users is refused unless allow_merge names it."""
    resolved = dept.model_copy(update={"users": users})
    try:
        return resolved._identity_map()
    except ValueError as exc:
        raise ConfigError(f"{dept.source_file or dept.name}: users from the directory: {exc}") from None


def identity_problems(pairs: list[tuple[str, str]], allow_merge: list[str]) -> list[str]:
    """What is wrong with an identity map (source login, target login): a message must never
    land in the wrong mailbox, so duplicates are errors unless a merge is declared."""
    problems = [f"source user {login!r} is listed {n} times"
                for login, n in Counter(src for src, _ in pairs).items() if n > 1]
    problems += [f"target user {login!r} receives {n} source users; list it in allow_merge "
                 "if these accounts are really to be merged"
                 for login, n in Counter(tgt for _, tgt in pairs).items() if n > 1 and login not in allow_merge]
    return problems


def _resolve_relative(data: dict, base: Path) -> dict:
    """Paths in the file are relative to the file's folder, not to wherever umstieg runs."""
    def fix(value):
        p = Path(os.path.expanduser(str(value)))
        return str(p if p.is_absolute() else (base / p).resolve())
    if isinstance(data.get("work_dir"), str):
        data["work_dir"] = fix(data["work_dir"])
    sources = data.get("sources") if isinstance(data.get("sources"), list) else []
    blocks = [*sources, *(data.get(name) for name in _ENDPOINTS)]
    blocks += [b.get("oauth") for b in sources if isinstance(b, dict)]     # an IMAP source's identity platform
    users_from = data.get("users_from")
    if isinstance(users_from, dict):
        if isinstance(users_from.get("csv"), str):
            users_from["csv"] = fix(users_from["csv"])
        blocks.append(users_from.get("ldap"))
    for block in blocks:
        for key in ("root", "ca_file"):
            if isinstance(block, dict) and isinstance(block.get(key), str):
                block[key] = fix(block[key])
    return data


#: The fields that hold a source or a target chosen by its `type`.
_ENDPOINTS = ("target", "mail_target", "calendar_target", "contacts_target", "archive")


def _without_type_tags(loc: tuple) -> tuple:
    """pydantic puts the chosen `type` into an error's location (`sources.0.smb.port`): leave it out,
    people know the field as `sources.0.port`."""
    unions = {"sources": (2, SourceConfig), "target": (1, TargetConfig)}
    if not loc or loc[0] not in unions:
        return loc
    tag_at, union = unions[loc[0]]
    tags = {m.model_fields["type"].default for m in typing.get_args(typing.get_args(union)[0])}
    return loc[:tag_at] + loc[tag_at + 1:] if len(loc) > tag_at and loc[tag_at] in tags else loc


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The line (1-based) in the YAML file where the value at `loc` is, or its nearest parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == key), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            match = node.value[key]
        else:
            match = None
        if match is None:
            break
        node = match
        line = node.start_mark.line + 1
    return line


def _users_from_csv(data: dict) -> list[str]:
    """Put the users of `users_from: {csv: FILE}` into `data` (every valid row) and say what is
    wrong with the others, each with its line in the CSV file, all at once."""
    source = data.get("users_from")
    if isinstance(source, dict) and data.get("users"):
        return ["users_from: the users come either from users or from users_from, not both"]
    if not isinstance(source, dict) or not isinstance(source.get("csv"), str):
        return []
    from core.directory import read_users_csv
    rows, problems = read_users_csv(Path(source["csv"]))
    users = []
    for row in rows:
        line = row.pop("line")
        try:
            users.append(User(**row).model_dump())
        except ValidationError as exc:
            problems += [f"{source['csv']}:{line}: {'.'.join(str(x) for x in err['loc']) or 'row'}: "
                         f"{err['msg'].removeprefix('Value error, ')}" for err in exc.errors()]
    data["users"] = users              # the department checks the identity map (duplicates, merges)
    return problems


def load_department(path: Path | str) -> Department:
    """Read and validate a department file, or raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the department file: {exc.strerror}") from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a department file is a YAML mapping (name:, users:, sources:, target:, …)")
    data = _resolve_relative(data, path.resolve().parent)
    csv_lines = _users_from_csv(data)
    try:
        dept = Department(**data, source_file=path.resolve())
        if csv_lines:
            raise ConfigError("the department's users file has problems:\n  " + "\n  ".join(csv_lines))
        return dept
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = _without_type_tags(err["loc"])
            field = ".".join(str(x) for x in loc) or "(file)"
            line = _line_of(root, loc)
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                msg = "is required"
            elif err["type"] == "extra_forbidden":
                msg = "is not a known setting (check the spelling)"
            lines.append(f"{path}:{line or 1}: {field}: {msg}")
        lines += csv_lines
        if not any(err["loc"][:1] == ("users",) or err["loc"] == () for err in exc.errors()):
            # field errors stop pydantic before the identity map is checked: check it anyway
            users = data.get("users") if isinstance(data.get("users"), list) else []
            pairs = [(str(u.get("source")), str(u.get("target"))) for u in users if isinstance(u, dict)]
            merge = data.get("allow_merge") if isinstance(data.get("allow_merge"), list) else []
            lines += [f"{path}:{_line_of(root, ('users',)) or 1}: users: {p}" for p in identity_problems(pairs, merge)]
        raise ConfigError("the department file has problems:\n  " + "\n  ".join(lines)) from None

"""A department's migration, as a YAML file validated before anything moves.

Errors name the file, the line, the field and what was expected, all at once, so that a person
can fix the file in one go. Secrets are never written in the file: a field that needs one holds
a reference (`env:NAME` or `prefect-secret:BLOCK`), resolved only when used and never logged.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from datetime import time as dtime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeAlias, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import ByteSize, Field, ValidationError, field_validator, model_validator

from core import plugins
from core.config import Model as _Model
from core.config import SecretRef, literal_secret_in_url
from core.errors import ConfigError
from core.plugins import Role

__all__ = ["Department", "User", "SourceConfig", "TargetConfig", "MailTargetConfig", "CalendarTargetConfig",
           "ContactsTargetConfig", "ArchiveConfig", "FILE_SOURCE_TYPES",
           "Conversion", "KeepOriginal", "Sharing", "MailOptions", "FolderRename",
           "Schedule", "Limits", "Cluster", "SecretRef", "UsersFrom", "LdapDirectory", "load_department",
           "identity_problems", "with_users", "literal_secret_in_url"]


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


def _union(role: Role) -> Any:
    """The model of a department field filled by a system of `role`: the registered models, told apart
    by their `type` (one model alone is that model, so that its errors read as before)."""
    choices = plugins.models(role)
    if len(choices) == 1:
        return choices[0]
    return Annotated[Union[choices], Field(discriminator="type")]  # noqa: UP007 - a union built at run time


# The models of the fields a registered system fills, built from the registry (core/plugins.py):
# a new system is registered there, never named here.
if TYPE_CHECKING:
    SourceConfig: TypeAlias = Any
    TargetConfig: TypeAlias = Any
    MailTargetConfig: TypeAlias = Any
    CalendarTargetConfig: TypeAlias = Any
    ContactsTargetConfig: TypeAlias = Any
    ArchiveConfig: TypeAlias = Any
else:
    SourceConfig = _union("source")
    TargetConfig = _union("target")
    MailTargetConfig = _union("mail_target")
    CalendarTargetConfig = _union("calendar_target")
    ContactsTargetConfig = _union("contacts_target")
    ArchiveConfig = _union("archive")

#: The systems' own models, once defined here: `from core.department import SmbSource` still works
#: (new code imports them from the system's config module).
_MOVED = {"_Tls": "core.config:Tls", "_S3Bucket": "core.config:S3Bucket", "_GraphApp": "sources.graph_config:GraphApp",
          "ImapOAuth": "sources.imap_config:ImapOAuth", "_WebDavTarget": "sinks.webdav_config:WebDavTarget",
          "_DavAccount": "sinks.groupware_config:DavAccount"}


def __getattr__(name: str) -> Any:
    for system in plugins.SYSTEMS:
        if system.config.rpartition(":")[2] == name:
            return system.model()
    if name in _MOVED:
        return plugins._load(_MOVED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")



class KeepOriginal(StrEnum):
    """Whether the Office original travels beside its ODF copy."""

    NEVER = "never"
    ALWAYS = "always"
    BELOW_SCORE = "below_score"


#: The fidelity tiers measured unless a department says otherwise.
_STRUCTURAL: list[Literal["structural", "visual"]] = ["structural"]


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
    fidelity: list[Literal["structural", "visual"]] = Field(default_factory=lambda: list(_STRUCTURAL))


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
    mail_target: MailTargetConfig | None = Field(default=None, description="where mail lands")
    calendar_target: CalendarTargetConfig | None = Field(default=None, description="where calendars land")
    contacts_target: ContactsTargetConfig | None = Field(default=None, description="where address books land")
    archive: ArchiveConfig | None = Field(default=None,
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
    def _identity_map(self) -> Department:
        if not self.users and self.users_from is None:
            raise ValueError("no users: list them under users, or read them with users_from")
        problems = identity_problems([(u.source, u.target) for u in self.users], self.allow_merge)
        problems += [f"source name {name!r} is used {n} times"
                     for name, n in Counter(s.name for s in self.sources).items() if n > 1]
        file_sources = [s for s in self.sources if s.type in FILE_SOURCE_TYPES]
        folders = {s.name: f for s in file_sources if (f := _plain_target_folder(s.target_folder)) is not None}
        problems += [f"sources {a!r} and {b!r} put files into overlapping folders of each user "
                     f"({folders[a] or 'the top'!s} and {folders[b] or 'the top'!s}): give each its own "
                     "target_folder, side by side, or one file's copy could replace another's"
                     for i, a in enumerate(folders) for b in list(folders)[i + 1:]
                     if _overlap(folders[a], folders[b])]
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
FILE_SOURCE_TYPES = tuple(s.type for s in plugins.registered("source") if s.files)


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
        return resolved._identity_map()     # type: ignore[operator]  # pydantic's validator, callable
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
    sources = data.get("sources")
    sources = sources if isinstance(sources, list) else []
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


#: The fields that hold a source or a target chosen by its `type`: the registry's roles besides "source".
_ENDPOINTS: tuple[Role, ...] = tuple(r for r in plugins.ROLES if r != "source")


def _without_type_tags(loc: tuple) -> tuple:
    """pydantic puts the chosen `type` into an error's location (`sources.0.smb.port`): leave it out,
    people know the field as `sources.0.port`. (A field only one system can fill has no tag.)"""
    role: Role | None = "source" if loc[:1] == ("sources",) else next((r for r in _ENDPOINTS if loc[:1] == (r,)), None)
    if role is None or len(plugins.registered(role)) < 2:
        return loc
    tag_at = 2 if role == "source" else 1
    tags = {s.type for s in plugins.registered(role)}
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
            users = data.get("users")
            pairs = [(str(u.get("source")), str(u.get("target"))) for u in (users if isinstance(users, list) else [])
                     if isinstance(u, dict)]
            merge = data.get("allow_merge")
            merge = merge if isinstance(merge, list) else []
            lines += [f"{path}:{_line_of(root, ('users',)) or 1}: users: {p}" for p in identity_problems(pairs, merge)]
        raise ConfigError("the department file has problems:\n  " + "\n  ".join(lines)) from None

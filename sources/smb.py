"""Windows file shares (SMB 2/3) read over the network with a service account, through smbprotocol.

`\\\\server\\share\\<path>\\<user folder>\\...` is walked like a local folder tree (sources/fileshare.py):
one item per file, its version `<mtime in ns>:<size>`, its key `<owner>/<relative path>`. Bytes are
read in 1 MiB blocks straight into the staging file, so a 5 GB file needs no more memory than a
small one. No local mount is needed, and the share is never written to.

With `read_acl` (the default), each file's owner and access control entries travel in the item's
`meta` for the sharing step:

    {"mtime": 1767225600.0, "owner": "BUILTIN\\Administrators",
     "permissions": [{"principal": "S-1-5-21-…-1104", "kind": "user" | "group" | "unknown",
                      "rights": "read" | "write" | "full" | "other:0x…", "deny": false, "inherited": true}]}

Principals are named from a table of well-known SIDs (Everyone, BUILTIN\\Users, Domain Users, …,
and Samba's `Unix User\\…` / `Unix Group\\…`); any other account keeps its SID string, since
resolving it would need the server's LSA service (DCE/RPC), which smbprotocol does not speak.

Failures are decided here: the server unreachable, the connection dropped or timed out →
`TransientError` (the connection is made anew on the next try); a file that is locked by another
program, that the account may not read, or that vanished → `ItemError` for that file; the account
refused → `FatalError` (its password stopped working mid-run). A folder that cannot be listed
(access denied) is not silently left out: it is listed as one item whose extraction fails with the
reason, so that the report shows it. No message carries the password.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import smbclient
from smbclient import ClientConfig
from smbprotocol.connection import Connection
from smbprotocol.exceptions import (AccessDenied, BadNetworkName, LogonFailure, NtStatus, PasswordExpired,
                                    SMBAuthenticationError, SMBConnectionClosed, SMBException, SMBOSError,
                                    SMBResponseException, WrongPassword)
from smbprotocol.file_info import InfoType
from smbprotocol.open import FilePipePrinterAccessMask, SMB2QueryInfoRequest, SMB2QueryInfoResponse
from smbprotocol.security_descriptor import AccessAllowedAce, AccessDeniedAce, AceFlags, SMB2CreateSDBuffer
from smbclient._io import SMBFileIO, SMBFileTransaction, SMBRawIO, query_info   # no public helper for these
from smbprotocol.file_info import FileAttributes, FileAttributeTagInformation, FileInternalInformation
from pydantic import SecretStr

from core.plugins import Account, PerProcess, ProbeMemo
from sources.smb_config import SmbSource
from core.errors import FatalError, ItemError, TransientError
from core.items import ItemRef, Kind
from core.localtree import ChangedAtSource

__all__ = ["SmbShare", "source_for", "permissions_of", "principal_name", "BLOCK"]

log = logging.getLogger("umstieg.sources.smb")

#: Bytes read from the share and written to the staging file at a time.
BLOCK = 1 << 20

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_US = dt.timedelta(microseconds=1)

#: NT statuses that mean "this one file cannot be read now", with the words the report uses.
_FILE_REFUSALS = {
    NtStatus.STATUS_SHARING_VIOLATION: "it is open in another program (sharing violation)",
    0xC0000054: "part of it is locked by another program (lock conflict)",          # FILE_LOCK_CONFLICT
    NtStatus.STATUS_ACCESS_DENIED: "the service account may not read it (access denied)",
    NtStatus.STATUS_DELETE_PENDING: "it is being deleted at the source",
}
_VANISHED = {NtStatus.STATUS_OBJECT_NAME_NOT_FOUND, NtStatus.STATUS_OBJECT_PATH_NOT_FOUND,
             NtStatus.STATUS_NOT_FOUND, 0xC0000128}                                   # FILE_CLOSED
#: NT statuses after which the connection (or session) is gone: a new one may do better.
_CONNECTION_GONE = {0xC000020C, 0xC0000203, 0xC00000C9, 0xC000035C, 0xC0000205, 0xC00000B5,
                    0xC0000120}   # CONNECTION_DISCONNECTED, USER_SESSION_DELETED, NETWORK_NAME_DELETED,
                                  # NETWORK_SESSION_EXPIRED, INSUFF_SERVER_RESOURCES, IO_TIMEOUT, CANCELLED
_LOGON_REFUSED = (LogonFailure, WrongPassword, PasswordExpired, SMBAuthenticationError)

#: How often, and how long at first, a request waits for SMB credits before it counts as failed.
CREDIT_WAITS = 60
CREDIT_WAIT = 0.02

_READ_CONTROL = 0x00020000
_SECURITY_INFO = 0x1 | 0x4          # OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION

# ------------------------------------------------------------------------------------- principals
#: Well-known SIDs ([MS-DTYP] 2.4.2.4) a report can name without asking the server.
_WELL_KNOWN = {
    "S-1-1-0": ("Everyone", "group"),
    "S-1-3-0": ("CREATOR OWNER", "user"),
    "S-1-3-1": ("CREATOR GROUP", "group"),
    "S-1-5-2": ("NT AUTHORITY\\NETWORK", "group"),
    "S-1-5-4": ("NT AUTHORITY\\INTERACTIVE", "group"),
    "S-1-5-7": ("NT AUTHORITY\\ANONYMOUS LOGON", "user"),
    "S-1-5-11": ("NT AUTHORITY\\Authenticated Users", "group"),
    "S-1-5-18": ("NT AUTHORITY\\SYSTEM", "user"),
    "S-1-5-19": ("NT AUTHORITY\\LOCAL SERVICE", "user"),
    "S-1-5-20": ("NT AUTHORITY\\NETWORK SERVICE", "user"),
    "S-1-5-32-544": ("BUILTIN\\Administrators", "group"),
    "S-1-5-32-545": ("BUILTIN\\Users", "group"),
    "S-1-5-32-546": ("BUILTIN\\Guests", "group"),
    "S-1-5-32-547": ("BUILTIN\\Power Users", "group"),
    "S-1-5-32-551": ("BUILTIN\\Backup Operators", "group"),
}
#: Relative ids of a domain's well-known accounts (`S-1-5-21-<domain>-<rid>`).
_DOMAIN_RIDS = {500: ("Administrator", "user"), 501: ("Guest", "user"), 512: ("Domain Admins", "group"),
                513: ("Domain Users", "group"), 514: ("Domain Guests", "group"),
                515: ("Domain Computers", "group"), 519: ("Enterprise Admins", "group")}


def principal_name(sid: str) -> tuple[str, str]:
    """(name, kind) of a SID: a well-known name where one is known, else the SID string itself.

    Domain accounts keep a readable name only for the domain's well-known relative ids; Samba maps
    unix accounts it cannot place in a domain to `S-1-22-1-<uid>` (users) and `S-1-22-2-<gid>`.
    """
    if sid in _WELL_KNOWN:
        return _WELL_KNOWN[sid]
    parts = sid.split("-")
    if sid.startswith("S-1-22-1-") and len(parts) == 5:
        return f"Unix User\\{parts[4]}", "user"
    if sid.startswith("S-1-22-2-") and len(parts) == 5:
        return f"Unix Group\\{parts[4]}", "group"
    if sid.startswith("S-1-5-21-") and len(parts) == 8 and parts[7].isdigit() and int(parts[7]) in _DOMAIN_RIDS:
        name, kind = _DOMAIN_RIDS[int(parts[7])]
        return f"{'-'.join(parts[:7])}\\{name}", kind
    return sid, "unknown"


_FILE_ALL_ACCESS = 0x001F01FF
_GENERIC_ALL, _GENERIC_WRITE, _GENERIC_READ, _GENERIC_EXECUTE = 0x10000000, 0x40000000, 0x80000000, 0x20000000
_WRITE_BITS = 0x2 | 0x4 | _GENERIC_WRITE           # FILE_WRITE_DATA | FILE_APPEND_DATA | GENERIC_WRITE
_READ_BITS = 0x1 | _GENERIC_READ | _GENERIC_EXECUTE   # FILE_READ_DATA | GENERIC_READ | GENERIC_EXECUTE


def _rights(mask: int) -> str:
    """What an access mask means to a person sharing files: read, write (change), full, or other."""
    if mask & _GENERIC_ALL or mask & _FILE_ALL_ACCESS == _FILE_ALL_ACCESS:
        return "full"
    if mask & _WRITE_BITS:
        return "write"
    if mask & _READ_BITS:
        return "read"
    return f"other:{mask:#x}"


def permissions_of(sd: SMB2CreateSDBuffer) -> dict:
    """`{"owner": ..., "permissions": [...]}` of a security descriptor (the format the sharing step reads).

    Entries of other types than allow and deny (object, callback, audit) say nothing about who may
    read the file through a share and are left out.
    """
    owner_sid = sd.get_owner()
    out: dict = {"owner": principal_name(str(owner_sid))[0] if owner_sid is not None else None, "permissions": []}
    dacl = sd.get_dacl()
    for ace in (dacl["aces"].get_value() if dacl is not None else []):
        if not isinstance(ace, AccessAllowedAce | AccessDeniedAce):
            continue
        name, kind = principal_name(str(ace["sid"].get_value()))
        flags = ace["ace_flags"].get_value()
        out["permissions"].append({
            "principal": name, "kind": kind, "rights": _rights(ace["mask"].get_value()),
            "deny": isinstance(ace, AccessDeniedAce), "inherited": bool(flags & AceFlags.INHERITED_ACE)})
    return out


# ------------------------------------------------------------------------------------- the source
def _mtime_ns(when: dt.datetime) -> int:
    """Nanoseconds since the epoch of an SMB timestamp (smbprotocol keeps microseconds)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return (when - _EPOCH) // _US * 1000


class _Unlisted(ItemError):
    reason = "unlisted_folder"


class SmbShare(ProbeMemo):
    """An SMB share as a source: `\\\\server\\share\\<path>\\<user folder>\\...`, one item per file."""

    def __init__(self, config: SmbSource) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._cache: dict = {}                 # this source's own smbprotocol connection pool
        self._password: SecretStr | None = None

    @property
    def name(self) -> str:
        return self.config.name

    # ------------------------------------------------------------------- addressing, connection
    @property
    def _where(self) -> str:
        return f"\\\\{self.config.server}\\{self.config.share}"

    def _unc(self, *parts: str) -> str:
        """The UNC path of `parts` (posix or Windows separators) below the configured path."""
        segments = [self._where]
        for part in (self.config.path, *parts):
            segments += [p for p in part.replace("/", "\\").split("\\") if p]
        return "\\".join(segments)

    def _kwargs(self) -> dict:
        return {"connection_cache": self._cache, "port": self.config.port}

    def _connect(self) -> None:
        """Make (or re-use) the connection and session; one at a time, shared by every thread."""
        cfg = self.config
        with self._lock:
            if self._password is None:
                self._password = cfg.password.resolve()     # ConfigError names the reference, never the value
            key = f"{cfg.server.lower()}:{cfg.port}"         # smbclient's key for a connection in its pool
            conn = self._cache.get(key)
            if conn is None or not conn.transport.connected:
                conn = Connection(ClientConfig().client_guid, cfg.server, cfg.port, require_signing=True)
                # smbprotocol waits for answers without a time limit; its receiver sends an echo after this
                # many idle seconds and closes the connection when that goes unanswered as long again, which
                # wakes every waiting request (SMBConnectionClosed). The default is 600 s: a server that
                # stops answering without closing the connection is noticed after `timeout` instead.
                conn._receive_timeout = max(1, int(cfg.timeout // 2))
                conn.connect(timeout=cfg.timeout)
                self._cache[key] = conn
            smbclient.register_session(cfg.server, username=cfg.username,
                                       password=self._password.get_secret_value(), port=cfg.port,
                                       encrypt=cfg.encrypt or None, connection_timeout=cfg.timeout,
                                       connection_cache=self._cache)

    def _drop_connection(self) -> None:
        """Forget a broken connection, so that the next call dials anew."""
        with self._lock:
            try:
                smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self._cache)
            except Exception:                 # noqa: BLE001 - it is broken already; nothing to save
                self._cache.clear()

    def _translate(self, exc: BaseException, what: str) -> Exception:
        """The taxonomy's error for a failure of `what` (a file or folder, as the report names it)."""
        server = f"{self.config.server}:{self.config.port}"
        if isinstance(exc, _LOGON_REFUSED):
            return FatalError(f"source {self.name}: the file server {server} refused the account "
                              f"{self.config.username!r}: check its password")
        status = getattr(exc, "ntstatus", None) if isinstance(exc, SMBOSError) else getattr(exc, "status", None)
        if status in _CONNECTION_GONE or isinstance(exc, SMBConnectionClosed | ConnectionError | TimeoutError) \
                or (isinstance(exc, ValueError) and "Failed to connect" in str(exc)) \
                or (type(exc) is SMBException):    # smbprotocol's own time-outs and dead worker thread
            self._drop_connection()
            return TransientError(f"{what}: the connection to {server} failed or timed out "
                                  f"({type(exc).__name__})")
        if status in _FILE_REFUSALS:
            return ItemError(f"cannot read {what} at the source: {_FILE_REFUSALS[status]}")
        if status in _VANISHED:
            return ItemError(f"{what} vanished at the source")
        if isinstance(exc, BadNetworkName):
            return ItemError(f"the share {self._where} does not exist (any more)")
        if isinstance(exc, OSError):
            return ItemError(f"cannot read {what} at the source: {exc.strerror or type(exc).__name__}")
        return ItemError(f"cannot read {what} at the source ({type(exc).__name__})")

    # ------------------------------------------------------------------------------ check
    def check(self, folders: list[str]) -> list[str]:
        """Server unreachable, account refused, share or path missing, user folders missing or not
        listable: every problem at once, in words a person can act on (never the password)."""
        cfg = self.config
        server = f"{cfg.server}:{cfg.port}"
        try:
            self._connect()
        except _LOGON_REFUSED:
            return [f"source {self.name}: the file server {server} refused the account {cfg.username!r} "
                    "(logon failure): check the user name and its password"]
        except (ValueError, OSError, SMBConnectionClosed) as exc:
            return [f"source {self.name}: cannot reach the file server {server} "
                    f"({_reason(exc)}): is the server name right and port {cfg.port} open?"]
        except SMBException as exc:
            return [f"source {self.name}: the file server {server} did not accept the connection "
                    f"({type(exc).__name__}); with encrypt: true it must speak SMB 3"]
        root = self._unc()
        try:
            if not smbclient.path.isdir(self._unc(), **self._kwargs()):
                return [f"source {self.name}: folder {root} does not exist on the share"]
        except BadNetworkName:
            return [f"source {self.name}: the share {self._where} does not exist "
                    f"(check `share`, the name as shown in \\\\{cfg.server})"]
        except (SMBOSError, SMBResponseException) as exc:
            if isinstance(exc, AccessDenied) or getattr(exc, "ntstatus", None) == NtStatus.STATUS_ACCESS_DENIED:
                return [f"source {self.name}: the account {cfg.username!r} may not open the share {self._where}"]
            return [f"source {self.name}: cannot open {root} ({_reason(exc)})"]
        problems = []
        for folder in folders:
            path = self._unc(folder)
            try:
                self._open_folder(path)
            except SMBOSError as exc:
                if exc.errno == 2 or exc.ntstatus in _VANISHED or exc.ntstatus == 0xC0000103:   # NOT_A_DIRECTORY
                    problems.append(f"source {self.name}: user folder {path} does not exist")
                elif exc.ntstatus == NtStatus.STATUS_ACCESS_DENIED:
                    problems.append(f"source {self.name}: the account {cfg.username!r} may not list "
                                    f"user folder {path} (access denied)")
                else:
                    problems.append(f"source {self.name}: cannot list user folder {path} ({_reason(exc)})")
            except (SMBException, OSError, ValueError) as exc:
                problems.append(f"source {self.name}: cannot list user folder {path} ({_reason(exc)})")
        return problems

    def _open_folder(self, path: str) -> None:
        """List the first entry of a user folder: `check` and the identity check both ask it, once
        per folder while `probing()`."""
        def ask() -> None:
            with smbclient.scandir(path, **self._kwargs()) as entries:
                next(iter(entries), None)
        self._once(("list", path), ask)

    def accounts(self, names: list[str]) -> dict[str, Account]:
        """Each user folder exists and the service account may list it (the identity check; SMB
        tells no e-mail or name). A server out of reach or refusing the service account concerns
        everyone: nobody is blamed (`check` says so)."""
        try:
            self._connect()
        except Exception:                      # noqa: BLE001 - check() tells what is wrong with the server
            return {name: Account(None) for name in names}
        found = {}
        for folder in names:
            path = self._unc(folder)
            try:
                self._open_folder(path)
                found[folder] = Account(True)
            except SMBOSError as exc:
                if exc.errno == 2 or exc.ntstatus in _VANISHED or exc.ntstatus == 0xC0000103:   # NOT_A_DIRECTORY
                    found[folder] = Account(False, why=f"no user folder {path}")
                elif exc.ntstatus == NtStatus.STATUS_ACCESS_DENIED:
                    found[folder] = Account(False, why=f"the account {self.config.username!r} may not list user "
                                                       f"folder {path} (access denied)")
                else:
                    found[folder] = Account(None)
            except (SMBException, OSError, ValueError):
                found[folder] = Account(None)
        return found

    # ------------------------------------------------------------------------------ discover
    def discover(self, owner: str, folder: str) -> Iterator[ItemRef]:
        """Every file in the user's folder, sorted, recursively, with mtime+size as its version.

        A folder that cannot be listed becomes one item (location ending in `/`) whose extraction
        fails with the reason, so that the report shows what could not be read.
        """
        self._connect_or_raise(folder)
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            try:
                entries = _waiting_for_credits(self._list, self._unc(folder, rel_dir))
            except SMBOSError as exc:
                if exc.ntstatus in _VANISHED and rel_dir == "":
                    return                                 # no folder for this user: check() said so
                if exc.ntstatus in _VANISHED:
                    continue                               # removed while we walked
                translated = self._translate(exc, f"folder {rel_dir or '.'}")
                if isinstance(translated, TransientError):
                    raise translated from None
                log.warning("source %s: %s/%s cannot be listed: %s", self.name, owner, rel_dir, translated)
                location = f"{rel_dir}/" if rel_dir else "./"
                yield ItemRef(source=self.name, key=f"{owner}/{location}", kind=Kind.FILE, owner=owner,
                              location=location, version=f"unlisted:{uuid.uuid5(uuid.NAMESPACE_URL, str(translated))}",
                              size=None, meta={"unlisted": str(translated)})
                continue
            except (SMBException, OSError, ValueError) as exc:
                raise self._translate(exc, f"folder {rel_dir or '.'}") from None
            subdirs = []
            for entry in entries:
                rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
                info = entry.smb_info
                link = _link_kind(info.file_attributes, info.ea_size)   # ea_size holds a reparse point's tag
                if link:                                   # never entered nor read: it may lead anywhere
                    yield ItemRef(source=self.name, key=f"{owner}/{rel}", kind=Kind.FILE, owner=owner, location=rel,
                                  version=f"link:{_mtime_ns(info.last_write_time)}", size=None,
                                  meta={"skipped": "skipped_link",
                                        "why": f"a {link} on the share: links are not followed (it could lead "
                                               "outside the user's folder); copy what it points to by hand if it "
                                               "belongs here"})
                    continue
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append(rel)
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue                               # nothing else exists on a share
                mtime_ns = _mtime_ns(info.last_write_time)
                meta = {"mtime": mtime_ns / 1e9, "file_id": str(info.file_id)}
                if self.config.read_acl:
                    meta.update(_waiting_for_credits(self._acl, self._unc(folder, rel), rel))
                yield ItemRef(source=self.name, key=f"{owner}/{rel}", kind=Kind.FILE, owner=owner, location=rel,
                              version=f"{mtime_ns}:{info.end_of_file}", size=info.end_of_file, meta=meta)
            stack.extend(reversed(subdirs))               # depth first, in name order

    def _connect_or_raise(self, what: str) -> None:
        try:
            self._connect()
        except (SMBException, OSError, ValueError) as exc:
            raise self._translate(exc, what) from None

    def _list(self, path: str) -> list:
        """The entries of one folder, sorted by name, the listing finished before anything is yielded."""
        with smbclient.scandir(path, **self._kwargs()) as entries:
            return sorted(entries, key=lambda e: e.name)

    def _acl(self, path: str, rel: str) -> dict:
        """Owner and DACL entries of one file; `{"acl_error": why}` when the server will not say."""
        try:
            raw = SMBRawIO(path, mode="rb", share_access="rwd",
                           desired_access=_READ_CONTROL | FilePipePrinterAccessMask.FILE_READ_ATTRIBUTES,
                           **self._kwargs())
            request = SMB2QueryInfoRequest()
            request["info_type"] = InfoType.SMB2_0_INFO_SECURITY
            request["output_buffer_length"] = 65536
            request["additional_information"] = _SECURITY_INFO
            transaction = SMBFileTransaction(raw)

            def receive(req):
                response = SMB2QueryInfoResponse()
                response.unpack(raw.fd.connection.receive(req)["data"].get_value())
                sd = SMB2CreateSDBuffer()
                sd.unpack(response["buffer"].get_value())
                return sd
            request["file_id"] = raw.fd.file_id          # before the open: "the file opened in this compound"
            transaction += (request, receive)
            transaction.commit()
            return permissions_of(transaction.results[0])
        except (SMBException, OSError, ValueError) as exc:
            if _out_of_credits(exc):
                raise
            translated = self._translate(exc, rel)
            if isinstance(translated, TransientError | FatalError):
                raise translated from None
            return {"acl_error": str(translated)}

    # ------------------------------------------------------------------------------ extract
    #: extract() compares what it opens with what discovery listed (`listed`: the item's meta)
    compares_with_listing = True

    def extract(self, folder: str, location: str, dst: Path, key: str | None = None,
                listed: dict | None = None) -> tuple[int, float]:
        """Copy one file's bytes to `dst` in 1 MiB blocks; returns (size, mtime).

        The open answers with the file's id (compounded with the open: no extra round trip),
        which must be the one discovery listed (`listed["file_id"]`): a file that was swapped for
        a link after listing, which the server (Samba follows links inside a share itself) or
        smbprotocol (it follows a Windows server's symbolic links within the share) would lead
        elsewhere, opens another file, and is `changed_at_source`: nothing of it is written."""
        if location.endswith("/"):
            raise _Unlisted(f"folder {location.rstrip('/') or '.'} could not be listed at the source; "
                            "give the service account the right to list it, then run again")
        if (listed or {}).get("skipped"):
            raise ItemError(f"{location} is not a regular file at the source: {(listed or {}).get('why')}")
        parts = PurePosixPath(location).parts
        if not parts or PurePosixPath(location).is_absolute() or ".." in parts:
            raise ItemError(f"refusing a location outside the user's folder: {location!r}")
        self._connect_or_raise(location)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            return _waiting_for_credits(self._copy, self._unc(folder, location), dst, location,
                                        (listed or {}).get("file_id"))
        except OSError as exc:
            if not isinstance(exc, SMBOSError) and exc.filename == str(dst):
                raise   # our own disk, not the share: the flow decides (a full disk is fatal)
            raise self._translate(exc, location) from None
        except (SMBException, ValueError) as exc:
            raise self._translate(exc, location) from None

    def _copy(self, path: str, dst: Path, location: str, file_id: str | None) -> tuple[int, float]:
        size = 0
        fin = SMBFileIO(path, mode="rb", share_access="rw", **self._kwargs())
        transaction = SMBFileTransaction(fin)
        fin.open(transaction=transaction)                    # the open and the id query: one compound request
        query_info(transaction, FileInternalInformation)
        query_info(transaction, FileAttributeTagInformation)
        try:
            transaction.commit()
        except BaseException:
            if not fin.closed:
                fin.close()
            raise
        with fin:
            opened_id, tag = transaction.results[1], transaction.results[2]
            if _link_kind(tag["file_attributes"].get_value(), tag["reparse_tag"].get_value()):
                raise ChangedAtSource(f"{location} is a link at the source now; nothing was read")
            if file_id is not None and str(opened_id["index_number"].get_value()) != file_id:
                raise ChangedAtSource(f"{location} was replaced (by a link or another file) after it was listed; "
                                      "nothing was read, the next run lists it again")
            mtime = _mtime_ns(fin.fd.last_write_time) / 1e9      # from the open's answer: no extra call
            with open(dst, "wb") as fout:
                buf = bytearray(BLOCK)
                view = memoryview(buf)
                while True:
                    n = fin.readinto(view)
                    if not n:
                        break
                    fout.write(view[:n])
                    size += n
        return size, mtime


#: A reparse point whose tag has the name-surrogate bit ([MS-FSCC] 2.1.2.1) stands for another
#: name: a symbolic link or a junction (mount point). Others (deduplicated, cloud, HSM files) are
#: files with data and are read as such.
_NAME_SURROGATE = 0x20000000
_REPARSE_WORDS = {0xA000000C: "symbolic link", 0xA0000003: "junction (mount point)"}


def _link_kind(attributes: int, tag: int) -> str | None:
    """What link an entry is (from its attributes and reparse tag), or None for a file or folder."""
    if not attributes & FileAttributes.FILE_ATTRIBUTE_REPARSE_POINT or not tag & _NAME_SURROGATE:
        return None
    return _REPARSE_WORDS.get(tag, f"link (reparse point {tag:#x})")


def _out_of_credits(exc: BaseException) -> bool:
    """smbprotocol refuses to send when the connection's credit window is used up by requests in
    flight (many threads on one connection). It raises a plain SMBException, told apart only by its
    text; nothing was sent, so the request can simply wait for answers to return credits."""
    return type(exc) is SMBException and "credits are available" in str(exc)


def _waiting_for_credits(step, *args):
    """`step(*args)`, repeated while smbprotocol has no credits to send it (see `_out_of_credits`)."""
    for attempt in range(CREDIT_WAITS):
        try:
            return step(*args)
        except SMBException as exc:
            if not _out_of_credits(exc) or attempt == CREDIT_WAITS - 1:
                raise
            time.sleep(min(CREDIT_WAIT * (attempt + 1), 0.5))


def _reason(exc: BaseException) -> str:
    """A short reason for a connection failure, without anything the caller passed in."""
    if isinstance(exc, SMBOSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, ValueError) and "Failed to connect" in str(exc):
        cause = exc.__cause__
        return getattr(cause, "strerror", None) or type(cause).__name__ if cause else "connection failed"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    return type(exc).__name__


#: This process's source for a configuration (one connection shared by every thread; at exit it logs off
#: (smbclient only closes its default pool)).
source_for = PerProcess(SmbShare, close="_drop_connection")

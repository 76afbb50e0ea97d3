"""Which module serves a configured source or target: dispatch on the configuration's `type`.

Modules are imported only when a department configures them, so that a department of folders
never loads smbprotocol, boto3 or exchangelib.
"""

from __future__ import annotations

import importlib

from core.department import Department
from core.errors import ItemError
from core.items import Kind
from core.plugins import Sink, Source
from sinks.localdir import LocalDir
from sources.fileshare import FolderShare

__all__ = ["source_of", "sink_for", "target_of", "targets_of", "NoTarget", "TARGET_FIELD"]

#: configured `type` -> module offering `source_for(config)`; imported only when configured, so that a
#: department of folders never loads smbprotocol, boto3 or exchangelib
_SOURCE_MODULES = {"smb": "sources.smb", "s3": "sources.s3", "onedrive": "sources.onedrive",
                   "sharepoint": "sources.onedrive", "m365": "sources.m365", "ews": "sources.ews",
                   "imap": "sources.imap", "export": "sources.export"}
#: configured target `type` -> module offering `sink_for(config)`
_SINK_MODULES = {"nextcloud": "sinks.webdav", "oxdrive": "sinks.webdav", "imap": "sinks.imap",
                 "caldav": "sinks.groupware", "carddav": "sinks.groupware", "s3": "sinks.s3"}
#: which department field receives items of which kind
TARGET_FIELD = {Kind.FILE: "target", Kind.MESSAGE: "mail_target", Kind.EVENT: "calendar_target",
                 Kind.CONTACT: "contacts_target"}


class NoTarget(ItemError):
    """The department has no target for this kind of item (e.g. mail without a mail_target)."""

    reason = "no_target"


def source_of(dept: Department, name: str) -> Source:
    """The source module for the configured source called `name` (dispatch on its `type`)."""
    cfg = next(s for s in dept.sources if s.name == name)
    if cfg.type == "folder":
        return FolderShare(cfg)
    return importlib.import_module(_SOURCE_MODULES[cfg.type]).source_for(cfg)


def sink_for(config) -> Sink:
    """The sink module for one configured target (dispatch on its `type`)."""
    if config.type == "localdir":
        return LocalDir(config)
    return importlib.import_module(_SINK_MODULES[config.type]).sink_for(config)


def target_of(dept: Department, kind: Kind | str = Kind.FILE) -> Sink:
    """The sink that receives items of `kind` in this department."""
    field_name = TARGET_FIELD[Kind(kind)]
    config = getattr(dept, field_name)
    if config is None:
        raise NoTarget(f"the department has no {field_name} for items of kind {Kind(kind).value}; "
                       f"add one to the department file and rerun")
    return sink_for(config)


def targets_of(dept: Department) -> dict[str, Sink]:
    """Every configured target, by its department field (for checks before anything moves)."""
    return {name: sink_for(getattr(dept, name)) for name in (*TARGET_FIELD.values(), "archive")
            if getattr(dept, name) is not None}

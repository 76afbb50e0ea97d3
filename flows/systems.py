"""Which module serves a configured source or target: dispatch through the registry (core/plugins.py).

A system's code is imported only when a department configures it (`System.make`), so that a
department of folders never loads smbprotocol, boto3 or exchangelib.
"""

from __future__ import annotations

from typing import cast

from pydantic import BaseModel

from core import plugins
from core.department import Department
from core.errors import ItemError
from core.items import Kind
from core.plugins import Sink, Source

__all__ = ["source_of", "sink_for", "target_of", "targets_of", "NoTarget", "TARGET_FIELD"]

#: which department field receives items of which kind
TARGET_FIELD = {Kind.FILE: "target", Kind.MESSAGE: "mail_target", Kind.EVENT: "calendar_target",
                 Kind.CONTACT: "contacts_target"}


class NoTarget(ItemError):
    """The department has no target for this kind of item (e.g. mail without a mail_target)."""

    reason = "no_target"


def source_of(dept: Department, name: str) -> Source:
    """The source for the configured source called `name` (its registered system's factory)."""
    cfg = next(s for s in dept.sources if s.name == name)
    return cast(Source, plugins.system_of(cfg).make(cfg))


def sink_for(config: BaseModel) -> Sink:
    """The sink for one configured target (its registered system's factory)."""
    return cast(Sink, plugins.system_of(config).make(config))


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
    return {name: sink_for(getattr(dept, name)) for name in plugins.ROLES
            if name != "source" and getattr(dept, name) is not None}

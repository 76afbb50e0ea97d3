"""Source permissions become target shares, and what cannot be mapped is written down.

A source tells each item's permissions in `meta["permissions"]` (SMB: the DACL's entries; OneDrive
and SharePoint: the item's permissions and sharing links), one entry per principal:
`{"principal", "kind": user|group|link|unknown, "rights": read|write|full|other:…, "deny",
"inherited", "link_scope"}`. The department's `sharing:` block says which source principals are
which target users and groups. This module turns the entries into grants for the target and a list
of entries it cannot carry over, each with its reason; the load step applies the grants and keeps
both lists in the ledger, and the run report lists every entry that was not carried over.

Rules, chosen so that nobody gets access they did not have, and losses are visible:
- the item's owner and the accounts every Windows server lists (SYSTEM, Administrators, CREATOR
  OWNER, …) are not shares: they are counted as `ignored`, not listed one by one;
- deny entries have no equivalent in Nextcloud: listed, so a person can check who must not see it;
- sharing links (anonymous, organisation) are not recreated: listed with their scope;
- an entry whose principal is not mapped (or is Everyone / Authenticated Users without a group
  mapping) is listed;
- an entry inherited from a folder above is granted on the item's folder (NTFS and SharePoint
  inherit down the tree; the item's folder is the nearest place known to carry it), an explicit
  one on the item itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.department import Department

__all__ = ["Grant", "plan_shares"]

#: Principals every Windows file server lists on every file: their access is the administrators',
#: not a share (names as Samba and Windows spell them, and their well-known SIDs).
_SYSTEM = {"s-1-5-18", "s-1-5-32-544", "s-1-3-0", "s-1-3-1", "s-1-5-19", "s-1-5-20", "s-1-5-32-549",
           "s-1-5-32-551", "nt authority\\system", "builtin\\administrators", "creator owner", "creator group",
           "nt authority\\local service", "nt authority\\network service", "builtin\\server operators",
           "builtin\\backup operators", "system", "administrators"}
#: Principals that mean "everybody": a share only if the department maps them to a group.
_EVERYONE = {"s-1-1-0", "s-1-5-11", "everyone", "nt authority\\authenticated users", "authenticated users",
             "\\everyone"}
_RIGHTS = ("read", "write", "full")


@dataclass(frozen=True)
class Grant:
    """One share to make at the target: `with_kind` user or group `with_name`, on the item or its folder."""

    with_kind: str
    with_name: str
    rights: str
    folder: bool

    def as_dict(self) -> dict:
        return {"with": f"{self.with_kind}:{self.with_name}", "rights": self.rights,
                "on": "folder" if self.folder else "item"}


def _account_name(principal: str) -> str:
    """`DOMAIN\\anna` → `anna`; `anna@example.org` and SIDs stay as they are."""
    return principal.rsplit("\\", 1)[-1]


def plan_shares(dept: Department, owner: str, permissions: list[dict]) -> tuple[list[Grant], list[dict], int]:
    """(grants, entries not carried over with their reason, number of entries ignored) for one item
    of the source user `owner`."""
    sharing = dept.sharing
    users = {k.casefold(): v for k, v in (sharing.users if sharing else {}).items()}
    groups = {k.casefold(): v for k, v in (sharing.groups if sharing else {}).items()}
    logins = {u.source.casefold(): u.target for u in dept.users} if sharing is None or sharing.match_logins else {}
    me = dept.user(owner)
    my_names = {n.casefold() for n in (me.source, me.target, me.folder, *me.folders.values()) if n}
    best: dict[tuple[str, str, bool], str] = {}
    unmapped: list[dict] = []
    ignored = 0

    def skip(entry: dict, reason: str) -> None:
        unmapped.append({"principal": str(entry.get("principal", "?")), "rights": str(entry.get("rights", "?")),
                         "reason": reason})

    for entry in permissions or []:
        principal = str(entry.get("principal") or "")
        key = principal.casefold()
        kind = entry.get("kind", "unknown")
        if key in _SYSTEM or _account_name(key) in my_names or key in my_names:
            ignored += 1
            continue
        if kind == "link":
            skip(entry, f"sharing link ({entry.get('link_scope') or 'unknown scope'}): links are not recreated; "
                        "the owner can make a new one at the target")
            continue
        if entry.get("deny"):
            skip(entry, "deny entry: the target has no deny; check that the people it names do not get access "
                        "through a group")
            continue
        rights = entry.get("rights")
        if rights not in _RIGHTS:
            skip(entry, f"rights {rights!r} have no share equivalent")
            continue
        if key in groups or (kind == "group" and _account_name(key) in groups):
            target = ("group", groups.get(key) or groups[_account_name(key)])
        elif key in users:
            target = ("user", users[key])
        elif kind != "group" and (key in logins or _account_name(key) in logins):
            target = ("user", logins.get(key) or logins[_account_name(key)])
        elif key in _EVERYONE:
            skip(entry, "everybody in the organisation: map it to a target group under sharing.groups")
            continue
        else:
            skip(entry, f"no target {'group' if kind == 'group' else 'user'} is mapped to this "
                        f"{'group' if kind == 'group' else 'principal'} "
                        f"(sharing.{'groups' if kind == 'group' else 'users'})")
            continue
        if target == ("user", me.target):
            ignored += 1
            continue
        slot = (*target, bool(entry.get("inherited")))
        if _RIGHTS.index(rights) > _RIGHTS.index(best.get(slot, "read")) or slot not in best:
            best[slot] = rights
    grants = [Grant(k, n, r, folder) for (k, n, folder), r in sorted(best.items())]
    return grants, unmapped, ignored

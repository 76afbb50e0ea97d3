"""Proof that every pair of the identity map is the same person, before one byte moves.

For each user: does the account exist at every source (the user's folder, drive, prefix,
mailbox) and at every target (the account, the mail login, the calendar home), and do the
attributes every side knows agree (primary e-mail address and display name from the directory,
from Microsoft 365's user, from Nextcloud's account, from a DAV principal)? Sources and sinks
that can tell offer `accounts` (core.plugins.ChecksUsers); the others leave their users 'not
checked'. A user who fails waits with the reason; the others go on. Users read from LDAP are
resolved here, as flows may talk to systems and core may not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from core.department import Department, with_users
from core.errors import ConfigError, FatalError, TransientError
from core.plugins import Account, ChecksUsers

__all__ = ["UserCheck", "resolve_users", "check_identities", "identity_waits"]

OK, NOT_CHECKED = "ok", "not checked"
#: the accounts exist, but no side tells an e-mail address or a name the other knows (IMAP, S3, …)
NOTHING_TO_COMPARE = "exists; no attributes to compare"


@dataclass
class UserCheck:
    """One pair of the identity map with the result of each check ('ok', 'not checked' or why not)."""

    source: str
    target: str
    email: str | None
    display_name: str | None
    source_account: str = NOT_CHECKED
    target_account: str = NOT_CHECKED
    attributes: str = NOT_CHECKED

    @property
    def problem(self) -> str | None:
        """Why this user must wait, or None when nothing found is wrong."""
        for what, result in (("source", self.source_account), ("target", self.target_account),
                             ("attributes", self.attributes)):
            if result not in (OK, NOT_CHECKED, NOTHING_TO_COMPARE):
                return f"identity: {what}: {result}"
        return None

    def row(self) -> dict:
        return {**asdict(self), "verdict": "wait: " + self.problem if self.problem else "go"}


def resolve_users(dept: Department) -> Department:
    """The department with its users read from LDAP when `users_from: {ldap: ...}` says so (every
    entry that cannot be a user is reported at once); otherwise the department as it is."""
    if dept.users_from is None or dept.users_from.ldap is None:
        return dept
    from sources.directory import users_from_ldap
    users, problems = users_from_ldap(dept.users_from.ldap)
    if problems:
        raise ConfigError("users from the directory have problems:\n  " + "\n  ".join(problems))
    if not users:
        raise ConfigError(f"the directory {dept.users_from.ldap.url} lists no users for this department "
                          "(check base, filter and group)")
    return with_users(dept, users)


def _same(ours: str, theirs: str, casefold: bool) -> bool:
    a, b = " ".join(ours.split()), " ".join(theirs.split())
    return a.casefold() == b.casefold() if casefold else a == b


def _accounts(system, names: list[str]) -> dict[str, Account]:
    """What a source or a sink says about each name, if it can tell (core.plugins.ChecksUsers);
    nothing for one that cannot (its users stay 'not checked'), nor for one whose configuration or
    server fails as a whole (a secret not set, a client that cannot be made): that concerns
    everyone, and the department check before the run says so."""
    if not isinstance(system, ChecksUsers) or not names:
        return {}
    try:
        return system.accounts(sorted(set(names)))
    except (ConfigError, TransientError, FatalError):
        return {}


def _verdict(sides: list[tuple[str, Account]]) -> str:
    """One column's result over every system of one side: the first refusal with its reason,
    'ok' when every system that could tell found the account, else 'not checked'."""
    for where, account in sides:
        if account.exists is False:
            return f"{where}: {account.why}" if where else str(account.why)
    return OK if any(a.exists for _, a in sides) else NOT_CHECKED


def _attributes(check: UserCheck, sources: list[tuple[str, Account]], targets: list[tuple[str, Account]]) -> str:
    """Whether the directory's e-mail address and display name and those every side tells agree
    (e-mail without regard to case, names as written; runs of spaces do not count)."""
    told = [("here", check.email, check.display_name)]
    told += [(where, a.email, a.display_name) for where, a in sources + targets if a.exists]
    wrong, compared = [], False
    for index, label, casefold in ((1, "e-mail", True), (2, "name", False)):
        values = [(t[0], said) for t in told if (said := t[index])]
        compared |= len(values) > 1
        first_where, first = values[0] if values else ("", "")
        wrong += [f"{label} {first!r} {first_where}, {value!r} {where}" for where, value in values[1:]
                  if not _same(first, value, casefold)]
    if wrong:
        return "; ".join(wrong)
    if compared:
        return OK
    return NOTHING_TO_COMPARE if any(a.exists for _, a in targets) else NOT_CHECKED


def check_identities(dept: Department, users: list[str] | None = None) -> list[UserCheck]:
    """Every chosen user's checks (`users`: source logins; all when None): each source and each
    target that can tell (core.plugins.ChecksUsers) is asked once for all chosen users."""
    from flows.systems import source_of, targets_of
    chosen = [u for u in dept.users if users is None or u.source in users]
    checks = [UserCheck(u.source, u.target, u.email, u.display_name) for u in chosen]
    sources: list[list[tuple[str, Account]]] = [[] for _ in chosen]
    targets: list[list[tuple[str, Account]]] = [[] for _ in chosen]
    for cfg in dept.sources:
        found = _accounts(source_of(dept, cfg.name), [u.folder_in(cfg.name) for u in chosen])
        for i, user in enumerate(chosen):
            if user.folder_in(cfg.name) in found:
                sources[i].append((f"source {cfg.name!r}", found[user.folder_in(cfg.name)]))
    for field_name, sink in targets_of(dept).items():
        found = _accounts(sink, [u.target for u in chosen])
        where = "" if field_name == "target" else field_name.replace("_", " ")
        for i, user in enumerate(chosen):
            if user.target in found:
                targets[i].append((where, found[user.target]))
    for check, source_sides, target_sides in zip(checks, sources, targets):
        check.source_account = _verdict(source_sides)
        check.target_account = _verdict(target_sides)
        check.attributes = _attributes(check, [(f"at {w}", a) for w, a in source_sides],
                                       [(f"at the {w or 'target'}", a) for w, a in target_sides])
    return checks


def identity_waits(dept: Department, users: list[str] | None = None) -> dict[str, str]:
    """Users who must wait because a pair is not proven to be one person, by source login, with why."""
    return {c.source: c.problem for c in check_identities(dept, users) if c.problem}

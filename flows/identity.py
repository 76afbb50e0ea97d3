"""Proof that every pair of the identity map is the same person, before one byte moves.

For each user: does the source account exist (where a source can tell cheaply: a folder source's
user folder), does the target account exist (Nextcloud: the OCS user API), and do the attributes
both sides know agree (primary e-mail address, display name from the directory against the
Nextcloud account's `email` and `displayname`)? A user who fails waits with the reason; the others
go on. Users read from LDAP are resolved here, as flows may talk to systems and core may not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from core.department import Department, with_users
from core.errors import ConfigError

__all__ = ["UserCheck", "resolve_users", "check_identities", "identity_waits"]

OK, NOT_CHECKED = "ok", "not checked"


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
            if result not in (OK, NOT_CHECKED):
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


def _same(ours: str | None, theirs: str | None, casefold: bool) -> bool:
    if not ours or not theirs:
        return True                        # one side does not know it: nothing to compare
    a, b = " ".join(ours.split()), " ".join(theirs.split())
    return a.casefold() == b.casefold() if casefold else a == b


def _nextcloud_accounts(target, logins: list[str]) -> dict[str, dict | str]:
    """Each login's OCS user record ({'email', 'displayname'}) or why there is none. Asked as the
    user with their own app password (a user may always read themselves), or as the service
    account: files then land in the service account's own tree, the target login need not be an
    account, and Nextcloud answers 404 for accounts a non-admin may not see, so only an answer
    with data counts (its attributes are compared). One keep-alive client for thousands of users."""
    import httpx
    verify = str(target.ca_file) if target.ca_file else target.verify_tls
    out: dict[str, dict | str] = {login: NOT_CHECKED for login in logins}
    with httpx.Client(base_url=target.url.rstrip("/"), verify=verify, timeout=getattr(target, "timeout", 60),
                      headers={"OCS-APIRequest": "true"}) as client:
        for login in logins:
            try:
                if target.username is not None:
                    auth = (target.username, target.password.resolve().get_secret_value())
                elif login in target.app_passwords:
                    auth = (login, target.app_passwords[login].resolve().get_secret_value())
                else:
                    continue              # no credentials: the target's own probe makes them wait
            except ConfigError:
                return out                # a secret not set concerns everyone: check_department says so
            client.cookies.clear()        # the server's session cookie would answer as the previous account
            try:
                r = client.get(f"/ocs/v2.php/cloud/users/{login}", params={"format": "json"}, auth=auth)
            except httpx.HTTPError:
                return out                # the server out of reach concerns everyone, not this user
            if r.status_code == 401:
                out[login] = "the target refused the login (no such account, or a wrong password)"
            elif r.status_code == 404 and target.username is None:
                out[login] = "no such account at the target"
            elif r.status_code >= 400:
                continue                  # not allowed to read it, or a server error: not this user's fault
            else:
                try:
                    data = r.json()["ocs"]["data"]
                    out[login] = {"email": data.get("email"), "displayname": data.get("displayname")}
                except (ValueError, KeyError, TypeError, AttributeError):
                    continue              # not Nextcloud's answer (a proxy's page): the target check says so
    return out


def _imap_mailboxes(dept: Department, name: str, chosen: list, checks: list[UserCheck]) -> None:
    """Each user's mailbox logs in (as the user, or as `<user>*<master>`, which Dovecot allows only
    for a user who exists). A server out of reach concerns everyone (the department check says
    so) and blames no user; so does a master user whom the server refuses for every mailbox."""
    from core.errors import TransientError
    from clients.imap import TlsFailed, TokenRefused
    from flows.systems import source_of
    source = source_of(dept, name)
    found: dict[int, str] = {}
    for i, user in enumerate(chosen):
        mailbox = user.folder_in(name)
        try:
            client = source.connect(mailbox)
        except (TlsFailed, TokenRefused, TransientError, OSError):
            return
        except ConfigError as exc:        # this login refused, or no credentials for this mailbox
            found[i] = f"mailbox {mailbox!r} in source {name!r} cannot be opened: {exc}"
            continue
        try:
            client.logout()
        except Exception:                 # noqa: BLE001 - the check is done; a closing error changes nothing
            pass
        found[i] = OK
    if getattr(source.config, "master_user", None) and found and OK not in found.values():
        return                            # the master user's own login, most likely: everyone's problem
    for i, result in found.items():
        if checks[i].source_account in (OK, NOT_CHECKED):
            checks[i].source_account = result


def check_identities(dept: Department, users: list[str] | None = None) -> list[UserCheck]:
    """Every chosen user's checks (`users`: source logins; all when None)."""
    chosen = [u for u in dept.users if users is None or u.source in users]
    checks = [UserCheck(u.source, u.target, u.email, u.display_name) for u in chosen]
    folder_sources = [s for s in dept.sources if s.type == "folder"]
    for user, check in zip(chosen, checks):
        missing = [s.name for s in folder_sources if not (s.root / user.folder_in(s.name)).is_dir()]
        if folder_sources:
            check.source_account = (OK if not missing else
                                    f"no user folder {user.folder_in(missing[0])!r} in source {missing[0]!r}")
    for cfg in dept.sources:
        if cfg.type == "imap":
            _imap_mailboxes(dept, cfg.name, chosen, checks)
    target = dept.target
    if target.type == "nextcloud":
        accounts = _nextcloud_accounts(target, sorted({c.target for c in checks}))
        for check in checks:
            found = accounts[check.target]
            if isinstance(found, str):
                check.target_account = found
                continue
            check.target_account = OK
            wrong = []
            if not _same(check.email, found["email"], casefold=True):
                wrong.append(f"e-mail {check.email!r} here, {found['email']!r} at the target")
            if not _same(check.display_name, found["displayname"], casefold=False):
                wrong.append(f"name {check.display_name!r} here, {found['displayname']!r} at the target")
            check.attributes = "; ".join(wrong) if wrong else (
                OK if (check.email and found["email"]) or (check.display_name and found["displayname"])
                else NOT_CHECKED)
    elif target.type == "localdir":
        for check in checks:
            # a local tree has no accounts: the user's folder (and the root) is made on first write
            check.target_account = OK if (target.root / check.target).is_dir() else NOT_CHECKED
    return checks


def identity_waits(dept: Department, users: list[str] | None = None) -> dict[str, str]:
    """Users who must wait because a pair is not proven to be one person, by source login, with why."""
    return {c.source: c.problem for c in check_identities(dept, users) if c.problem}

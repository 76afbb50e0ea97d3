"""Logins, roles, the signed session cookie and CSRF tokens of the dashboard.

Passwords are kept only as scrypt hashes (hashlib, no extra dependency): `umstieg dashboard
--hash-password` prints one for the users file. Sessions are kept on the server
(umstieg/dashboard/store.py); the cookie (HttpOnly, SameSite=Strict) holds only a random token.
The login form carries a token signed with itsdangerous, so that a login is posted from this
dashboard's own form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer

from core.errors import ConfigError

__all__ = ["Role", "Account", "hash_password", "check_password", "load_accounts", "Sessions", "SESSION_COOKIE"]

SESSION_COOKIE = "umstieg_session"
#: scrypt cost: 2**15 × 8 × 1 takes ~0.1 s and 32 MiB here, far above what a guesser can afford per try
_N, _R, _P = 2 ** 15, 8, 1


class Role(StrEnum):
    VIEWER = "viewer"        # reads every page and export
    OPERATOR = "operator"    # also reruns failed items and annotates items


@dataclass(frozen=True)
class Account:
    name: str
    role: Role
    password_hash: str

    def __repr__(self) -> str:                      # never print the hash
        return f"Account({self.name!r}, {self.role.value})"


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash` (base64) for the users file."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=2 ** 26)
    b64 = lambda b: base64.b64encode(b).decode()        # noqa: E731
    return f"scrypt${_N}${_R}${_P}${b64(salt)}${b64(digest)}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=2 ** 26, dklen=len(want))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


def load_accounts(path: Path) -> dict[str, Account]:
    """The users file: YAML `users: {login: {role: viewer|operator, password_hash: scrypt$...}}`."""
    import yaml
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the dashboard users file: {exc}") from exc
    accounts, problems = {}, []
    for name, entry in (data.get("users") or {}).items():
        entry = entry or {}
        role, stored = entry.get("role"), str(entry.get("password_hash") or "")
        if role not in {r.value for r in Role}:
            problems.append(f"users.{name}.role: must be viewer or operator")
        if "password" in entry:
            problems.append(f"users.{name}: a plaintext password is not accepted; "
                            f"put the output of `umstieg dashboard --hash-password` in password_hash")
        if not stored.startswith("scrypt$") or stored.count("$") != 5:
            problems.append(f"users.{name}.password_hash: not a hash from `umstieg dashboard --hash-password`")
        if not problems:
            accounts[str(name)] = Account(str(name), Role(str(role)), stored)
    if problems:
        raise ConfigError(f"{path}:\n  " + "\n  ".join(problems))
    return accounts


class Sessions:
    """The login form's signed token (the sessions themselves: store.Store)."""

    def __init__(self, secret: str | bytes) -> None:
        self._login = URLSafeTimedSerializer(secret, salt="umstieg-dashboard-login")

    def login_token(self) -> str:
        return self._login.dumps(secrets.token_urlsafe(8))

    def login_token_ok(self, token: str | None) -> bool:
        try:
            self._login.loads(token or "", max_age=3600)
            return True
        except BadSignature:
            return False

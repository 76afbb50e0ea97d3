"""The dashboard's own state: sessions, failed logins, and the audit log of each department.

Sessions live on the server, in a small SQLite file of the dashboard (not in the ledger: they are
the web face's business, and a ledger may be a PostgreSQL that other machines share). The cookie
holds only a random token; the file keeps its SHA-256, so a copy of the file opens no session.
Logging out deletes the row: a copied cookie stops working at once. Several dashboard processes
on one machine may share the file (WAL, a busy timeout).

Failed logins are kept in the same file, per login and per client address, so that guessing is
slowed down across restarts and across processes. So are the reruns this dashboard started (who,
when, with which filters, the child's host and pid, its log file): what became of one is read from
the ledger by that host and pid, so a rerun's page comes back after a restart.

The audit log is a JSON-lines file in each department's work_dir (`audit/dashboard.jsonl`), beside
its ledger and reports, kept as long as the department's records are: who (login, client
address) did what (logged in, failed to, reran, annotated) to what, and when. It is outside the
report folder, so the dashboard never serves it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["Store", "Throttle", "Audit", "SESSION_HOURS"]

#: A session ends this long after the login, whatever happens.
SESSION_HOURS = 8


@dataclass(frozen=True)
class Throttle:
    """How many failed logins are let through before the next tries are refused, and for how long.

    Per login: a guesser aiming at one account is slowed to `per_login` tries per `window`
    seconds. Per client address: one address trying many logins is slowed as well. A refused try
    is not checked at all (no password hash is computed), and is not counted again.
    """

    per_login: int = 5
    per_address: int = 20
    window: int = 15 * 60


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY, login TEXT NOT NULL, role TEXT NOT NULL, csrf TEXT NOT NULL,
    client TEXT, created REAL NOT NULL, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ix_sessions_expires ON sessions (expires);
CREATE TABLE IF NOT EXISTS failed_logins (login TEXT NOT NULL, client TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS ix_failed_login ON failed_logins (login, at);
CREATE INDEX IF NOT EXISTS ix_failed_client ON failed_logins (client, at);
CREATE TABLE IF NOT EXISTS reruns (
    id INTEGER PRIMARY KEY AUTOINCREMENT, department TEXT NOT NULL, filters TEXT NOT NULL, started TEXT NOT NULL,
    by_login TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, log TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS ix_reruns_department ON reruns (department, id);
"""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Store:
    """Sessions and failed logins in `path` (SQLite)."""

    def __init__(self, path: Path, throttle: Throttle = Throttle(), max_age: int = SESSION_HOURS * 3600) -> None:
        self.path, self.throttle, self.max_age = Path(path), throttle, max_age
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.executescript(_SCHEMA)
        os.chmod(self.path, 0o600)

    def _db(self) -> sqlite3.Connection:
        # one connection per thread (the web server answers from a thread pool); `with` commits
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
        return db

    # ------------------------------------------------------------------ sessions
    def open_session(self, login: str, role: str, client: str) -> str:
        """A new session for `login`; returns the cookie's token (never stored as it is)."""
        token, now = secrets.token_urlsafe(32), time.time()
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (_digest(token), login, role, secrets.token_urlsafe(24), client, now, now + self.max_age))
        return token

    def session(self, token: str | None) -> dict | None:
        """{"u": login, "r": role, "c": CSRF token} of a live session, else None."""
        if not token or len(token) > 200:
            return None
        row = self._db().execute("SELECT login, role, csrf FROM sessions WHERE token_hash = ? AND expires > ?",
                                 (_digest(token), time.time())).fetchone()
        return {"u": row[0], "r": row[1], "c": row[2]} if row else None

    def end_session(self, token: str | None) -> None:
        if token:
            with self._db() as db:
                db.execute("DELETE FROM sessions WHERE token_hash = ?", (_digest(token),))

    def end_sessions_of(self, login: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE login = ?", (login,))

    # ------------------------------------------------------------------ failed logins
    def refused_for(self, login: str, client: str) -> tuple[str, int] | None:
        """("login" or "address", seconds to wait) when a login try must be refused, else None."""
        now, t = time.time(), self.throttle
        since = now - t.window
        db = self._db()
        for what, column, value, limit in (("login", "login", login, t.per_login),
                                           ("address", "client", client, t.per_address)):
            rows = db.execute(f"SELECT at FROM failed_logins WHERE {column} = ? AND at > ? ORDER BY at DESC LIMIT ?",
                              (value, since, limit)).fetchall()
            if len(rows) >= limit:
                return what, max(1, int(rows[-1][0] + t.window - now) + 1)
        return None

    def failed(self, login: str, client: str) -> None:
        now = time.time()
        with self._db() as db:
            db.execute("DELETE FROM failed_logins WHERE at < ?", (now - self.throttle.window,))
            db.execute("INSERT INTO failed_logins VALUES (?, ?, ?)", (login, client, now))

    def succeeded(self, login: str) -> None:
        """A right password clears the login's failures (the address's stay counted)."""
        with self._db() as db:
            db.execute("DELETE FROM failed_logins WHERE login = ?", (login,))

    # ------------------------------------------------------------------ reruns
    def add_rerun(self, department: str, filters: dict, started: datetime, by: str, host: str, pid: int,
                  log: Path) -> int:
        """Note a rerun that was started; returns its number (never reused, also after a restart)."""
        with self._db() as db:
            cur = db.execute("INSERT INTO reruns (department, filters, started, by_login, host, pid, log) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (department, json.dumps(filters), started.isoformat(), by, host, pid, str(log)))
            if cur.lastrowid is None:          # (sqlite3 sets it after every INSERT into a rowid table)
                raise RuntimeError("the rerun got no number")
            return int(cur.lastrowid)

    def rerun(self, number: int) -> dict | None:
        row = self._db().execute(f"SELECT {_RERUN_COLUMNS} FROM reruns WHERE id = ?", (number,)).fetchone()
        return _rerun_row(row) if row else None

    def reruns_of(self, department: str, limit: int = 10) -> list[dict]:
        """The department's latest reruns, newest first."""
        rows = self._db().execute(f"SELECT {_RERUN_COLUMNS} FROM reruns WHERE department = ? ORDER BY id DESC "
                                  "LIMIT ?", (department, limit)).fetchall()
        return [_rerun_row(r) for r in rows]


_RERUN_COLUMNS = "id, department, filters, started, by_login, host, pid, log"


def _rerun_row(row) -> dict:
    number, department, filters, started, by, host, pid, log = row
    return {"id": number, "department": department, "filters": json.loads(filters),
            "started": datetime.fromisoformat(started), "by": by, "host": host, "pid": pid, "log": Path(log)}


class Audit:
    """Appends one JSON line per action to `<work_dir>/audit/dashboard.jsonl` of a department."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @staticmethod
    def path(work_dir: Path) -> Path:
        return Path(work_dir) / "audit" / "dashboard.jsonl"

    def write(self, work_dirs: list[Path], *, client: str, user: str, action: str, target: str = "",
              **details) -> None:
        entry = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "client": client,
                 "user": user[:200], "action": action, "target": target, **details}
        line = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            for work_dir in dict.fromkeys(Path(w) for w in work_dirs):
                path = self.path(work_dir)
                path.parent.mkdir(parents=True, exist_ok=True)
                # one write of one line with O_APPEND: lines of several processes never interleave
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)

"""What one process (the flow's, or a Dask worker's) keeps between tasks: its ledger connection
and its LibreOffice pool; and what it needs to know of its surroundings: whether a Prefect server
is configured, and what a failure of the machine (ledger, disk) means for the person running it.

Starting LibreOffice costs seconds, so each process starts its pool once, on the first chunk that
needs it, and closes it at exit. Tasks receive item ids and the department file's path, never
documents or open connections, so that they can run in any process of a Dask cluster.
"""

from __future__ import annotations

import atexit
import errno
import os
import shutil
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.department import Department, load_department
from core.errors import ConfigError, FatalError, UmstiegError
from core.settings import ConversionSettings, usable_cpus
from core.messages import clip

if TYPE_CHECKING:                      # imported when used: starting a run needs neither at once
    from converters.pool import ConverterPool
    from core.ledger import Ledger

__all__ = ["department", "ledger", "pool_settings", "converter_pool", "close_all", "prefect_configured",
           "plain_failure"]

_lock = threading.Lock()
_departments: dict[str, tuple[float, Department]] = {}
_ledgers: dict[str, Ledger] = {}
_pools: dict[tuple, ConverterPool] = {}


def department(path: str | Path) -> Department:
    """The department file, validated once per process (again if the file changed)."""
    path = str(Path(path).resolve())
    mtime = Path(path).stat().st_mtime
    with _lock:
        cached = _departments.get(path)
        if cached is None or cached[0] != mtime:
            from flows.identity import resolve_users     # users_from: {ldap: ...} is read here
            _departments[path] = (mtime, resolve_users(load_department(path)))
        return _departments[path][1]


def ledger(dept: Department) -> Ledger:
    """The department's ledger, migrated to the newest schema on first use in this process.

    A database that refuses the login or cannot be reached is a ConfigError or FatalError that
    says so (`plain_failure`), not the driver's traceback."""
    url = dept.ledger_url
    with _lock:
        if url not in _ledgers:
            led = dept.open_ledger()
            try:
                led.migrate()
            except Exception as exc:
                led.close()
                plain = plain_failure(exc, dept)
                if plain is not None:
                    raise plain from exc
                raise
            _ledgers[url] = led
        return _ledgers[url]


def pool_settings(dept: Department) -> ConversionSettings:
    """The department's LibreOffice pool for one process: its workers, at most `limits.converter`."""
    conv = dept.conversion
    workers = conv.workers or usable_cpus()
    if dept.limits.converter:                     # documents converting at once on this host
        workers = min(workers, dept.limits.converter)
    limit: dict[str, Any] = {} if conv.memory_limit_mb is None else {"memory_limit_mb": conv.memory_limit_mb}
    return ConversionSettings(workers=workers, timeout=conv.timeout, recycle_after=conv.recycle_after, **limit)


def converter_pool(dept: Department) -> ConverterPool:
    """This process's LibreOffice pool, started on first use."""
    from converters.pool import ConverterPool
    settings = pool_settings(dept)
    key = (settings.workers, settings.timeout, settings.recycle_after, settings.memory_limit_mb)
    with _lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = ConverterPool(settings).start()
        return pool


def close_all() -> None:
    """Stop this process's LibreOffice pools and close its ledger connections."""
    with _lock:
        for pool in _pools.values():
            pool.close()
        _pools.clear()
        for led in _ledgers.values():
            led.close()
        _ledgers.clear()


atexit.register(close_all)


# ------------------------------------------------------------------------------ surroundings
def prefect_configured() -> bool:
    """Whether runs started here report to a Prefect server: PREFECT_API_URL is set in the
    environment, in the active Prefect profile (`prefect config set PREFECT_API_URL=...`), or in
    the prefect.toml, pyproject.toml ([tool.prefect]) or .env of the current folder, the places
    Prefect itself reads. Read without importing Prefect, which alone takes a second to import."""
    if os.environ.get("PREFECT_API_URL", "").strip():
        return True
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    profiles = _toml(Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml"))
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active") or "ephemeral"
    if str(profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL") or "").strip():
        return True
    here = Path.cwd()
    for table in (_toml(here / "prefect.toml"), _toml(here / "pyproject.toml").get("tool", {}).get("prefect", {})):
        if str((table.get("api") or {}).get("url") or "").strip():
            return True
    try:
        lines = (here / ".env").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    return any(line.strip().removeprefix("export ").startswith("PREFECT_API_URL=")
               and line.split("=", 1)[1].strip().strip("'\"") for line in lines)


def _toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


#: errno values that mean the disk (or the user's quota on it) is full
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
#: sqlite3's result code for "database or disk is full"
_SQLITE_FULL = 13
_SQLITE_IOERR = 10


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and what led to it (causes, contexts, a database driver's original error), each once."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]


def _no_space(exc: BaseException, dept: Department) -> str | None:
    """Where the disk is full, when that is what `exc` comes down to (else None)."""
    for e in _causes(exc):
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return e.filename or str(dept.work_dir)
        if getattr(e, "sqlite_errorcode", None) == _SQLITE_FULL:
            return _sqlite_file(dept) or str(dept.work_dir)
        # opening the ledger on a full disk (its WAL and shared-memory files cannot be made) is
        # only a "disk I/O error" to SQLite: the free space of the ledger's disk tells the cause
        if (getattr(e, "sqlite_errorcode", None) or 0) & 0xFF == _SQLITE_IOERR and _no_room_for(_sqlite_file(dept)):
            return _sqlite_file(dept)
    return None


def _no_room_for(path: str | None) -> bool:
    """Whether the disk holding `path` has (next to) no space left."""
    if not path:
        return False
    try:
        return shutil.disk_usage(Path(path).parent).free < 1 << 20
    except OSError:
        return False


def _sqlite_file(dept: Department) -> str | None:
    from sqlalchemy.engine import make_url
    url = make_url(dept.ledger_url)
    return url.database if url.get_backend_name() == "sqlite" else None


def plain_failure(exc: BaseException, dept: Department) -> UmstiegError | None:
    """What a person can act on when `exc` is a failure of the machine rather than of an item, in
    one or two lines: a full disk (work_dir, its staging area, the ledger's file), the ledger's
    database refusing the login or gone. A ConfigError (wrong settings) or a FatalError (the
    run cannot go on: fix the cause and run again); None for anything else, which keeps its own
    words. The ledger holds every item in the last state it really reached, so each message can
    promise that the next run goes on from there."""
    if isinstance(exc, (ConfigError, FatalError)):      # already says what to do
        return None
    resume = "every item keeps the state it reached and the next run goes on from there"
    full = _no_space(exc, dept)
    if full is not None:
        work_dir = str(Path(dept.work_dir).resolve())
        where = f"work_dir {work_dir}" if str(Path(full).resolve()).startswith(work_dir) \
            else f"the disk of {full}"
        return FatalError(f"{dept.name}: no space left in {where} (writing {full}): free space there, or point "
                          f"work_dir at a larger disk, then run again; {resume}")
    from sqlalchemy.exc import DBAPIError
    db = next((e for e in _causes(exc) if isinstance(e, DBAPIError)), None)
    if db is None:
        return None
    from sqlalchemy.engine import make_url
    url = make_url(dept.ledger_url)
    where = f"the ledger {url.render_as_string(hide_password=True)}"
    said = clip((str(db.orig).strip().splitlines() or [type(db.orig).__name__])[0], 300)
    state = getattr(db.orig, "sqlstate", None) or ""
    # libpq gives no SQLSTATE for a refused connection; it does say whether the server asked for
    # the password (and so was reached): then the password, the user or the database is wrong
    pgconn = getattr(db.orig, "pgconn", None)
    asked = pgconn is not None and (getattr(pgconn, "used_password", False) or getattr(pgconn, "needs_password", False))
    if state.startswith("28") or asked:    # invalid authorization: a wrong password or user
        return ConfigError(f"{dept.name}: {where} refused the login ({said}): check ledger_password, and the "
                           "user and database in `ledger:`, in the department file")
    if state == "3D000":                   # no such database
        return ConfigError(f"{dept.name}: {where} does not exist ({said}): create the database or fix `ledger:`")
    if db.connection_invalidated or state.startswith(("08", "57P")) or \
            (url.get_backend_name() != "sqlite" and not state):
        return FatalError(f"{dept.name}: {where} cannot be reached ({said}): start the database or fix `ledger:`, "
                          f"then run again; {resume}")
    return None

"""What one process (the flow's, or a Dask worker's) keeps between tasks: its ledger connection
and its LibreOffice pool.

Starting LibreOffice costs seconds, so each process starts its pool once, on the first chunk that
needs it, and closes it at exit. Tasks receive item ids and the department file's path, never
documents or open connections, so that they can run in any process of a Dask cluster.
"""

from __future__ import annotations

import atexit
import threading
from pathlib import Path

from converters.pool import ConverterPool
from core.department import Department, load_department
from core.ledger import Ledger
from core.settings import ConversionSettings, usable_cpus

__all__ = ["department", "ledger", "pool_settings", "converter_pool", "close_all"]

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
            _departments[path] = (mtime, load_department(path))
        return _departments[path][1]


def ledger(dept: Department) -> Ledger:
    """The department's ledger, migrated to the newest schema on first use in this process."""
    url = dept.ledger_url
    with _lock:
        if url not in _ledgers:
            led = dept.open_ledger()
            led.migrate()
            _ledgers[url] = led
        return _ledgers[url]


def pool_settings(dept: Department) -> ConversionSettings:
    """The department's LibreOffice pool for one process: its workers, at most `limits.converter`."""
    conv = dept.conversion
    workers = conv.workers or usable_cpus()
    if dept.limits.converter:                     # documents converting at once on this host
        workers = min(workers, dept.limits.converter)
    limit = {} if conv.memory_limit_mb is None else {"memory_limit_mb": conv.memory_limit_mb}
    return ConversionSettings(workers=workers, timeout=conv.timeout, recycle_after=conv.recycle_after, **limit)


def converter_pool(dept: Department) -> ConverterPool:
    """This process's LibreOffice pool, started on first use."""
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

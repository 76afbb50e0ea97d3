"""What one dashboard serves: its departments (by file), their ledgers, who may log in, which
host names it answers to."""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from core.department import Department, load_department
from core.errors import ConfigError
from core.ledger import Ledger
from reports import dashboard as data
from umstieg.dashboard.auth import Account
from umstieg.dashboard.store import Throttle

__all__ = ["Site", "is_loopback", "LOOPBACK_HOSTS"]

#: Host names the dashboard answers to without logins (loopback only): a web page elsewhere that
#: points a name of its own at 127.0.0.1 (DNS rebinding) is refused by its Host header.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Site:
    """What one dashboard serves: its departments (by file), their ledgers, who may log in."""

    department_files: list[Path]
    accounts: dict[str, Account] = field(default_factory=dict)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    secure_cookies: bool = False
    #: where sessions and failed logins are kept (default: the first department's work_dir/dashboard)
    state_dir: Path | None = None
    #: Host header values answered (None: any when logins are configured, loopback names otherwise)
    allowed_hosts: list[str] | None = None
    throttle: Throttle = field(default_factory=Throttle)
    departments: dict[str, Department] = field(default_factory=dict, init=False)
    files: dict[str, Path] = field(default_factory=dict, init=False)
    ledgers: dict[str, Ledger] = field(default_factory=dict, init=False)      # url -> ledger
    ledger_of: dict[str, Ledger] = field(default_factory=dict, init=False)    # department -> ledger

    def __post_init__(self) -> None:
        for path in self.department_files:
            dept = load_department(path)
            if dept.name in self.departments:
                raise ConfigError(f"{path}: department {dept.name!r} is already served from {self.files[dept.name]}")
            self.departments[dept.name] = dept
            self.files[dept.name] = Path(path).resolve()
            led = self.ledgers.get(dept.ledger_url)
            if led is None:
                led = self.ledgers[dept.ledger_url] = dept.open_ledger()
                led.migrate()
            self.ledger_of[dept.name] = led
        if not self.departments:
            raise ConfigError("the dashboard needs at least one department file")
        if self.state_dir is None:
            self.state_dir = Path(next(iter(self.departments.values())).work_dir) / "dashboard"
        if self.allowed_hosts is None and not self.accounts:
            self.allowed_hosts = list(LOOPBACK_HOSTS)

    def host_allowed(self, host_header: str | None) -> bool:
        if self.allowed_hosts is None:
            return True
        host = (host_header or "").strip().lower()
        if host.startswith("["):                       # [::1]:8350
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        return host in {h.lower() for h in self.allowed_hosts}

    def work_dirs(self, name: str | None = None) -> list[Path]:
        """The work_dir of one department (None: of every department served here)."""
        names = [name] if name else list(self.departments)
        return [Path(self.departments[n].work_dir) for n in names if n in self.departments]

    def all_departments(self) -> list[tuple[str, Ledger]]:
        """Every department of every ledger (also those without a department file here)."""
        seen: dict[str, Ledger] = {}
        for led in self.ledgers.values():
            for name in data.departments_in(led):
                seen.setdefault(name, led)
        for name, led in self.ledger_of.items():
            seen.setdefault(name, led)
        return sorted(seen.items())

    def report_dir(self, name: str) -> Path | None:
        dept = self.departments.get(name)
        return dept.work_dir / "reports" if dept else None

    def close(self) -> None:
        for led in self.ledgers.values():
            led.close()

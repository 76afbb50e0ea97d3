"""Settings shared by the faces and the flows.

Values come from keyword arguments, then `UMSTIEG_*` environment variables, then the defaults
below. Department files (a later layer) validate into the same models.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

__all__ = ["ConversionSettings", "RemoteWorker", "usable_cpus", "url_host"]


def url_host(host: str) -> str:
    """`host` as it goes into a URL: IPv6 addresses in brackets (`[::1]`), others unchanged."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


class RemoteWorker(BaseModel):
    """A unoserver already running on another host that joins the pool.

    `host` is kept bare (an IPv6 address without brackets, `::1`); `url_host` and `str()` put the
    brackets back wherever a port follows, as URLs need (`http://[::1]:2003`).
    """

    host: str
    port: int = Field(ge=1, le=65535)

    @field_validator("host")
    @classmethod
    def _bare_host(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
        if not value or any(c in value for c in "[]/ "):
            raise ValueError(f"not a host name or address: {value!r}")
        return value

    @classmethod
    def parse(cls, text: str) -> "RemoteWorker":
        """Read `host:port` (IPv6 hosts in brackets: `[::1]:2003`)."""
        host, sep, port = text.strip().rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"remote worker {text!r}: expected host:port, e.g. 10.0.0.5:2003")
        if ":" in host and not (host.startswith("[") and host.endswith("]")):
            raise ValueError(f"remote worker {text!r}: an IPv6 address goes in brackets, e.g. [::1]:2003")
        return cls(host=host, port=int(port))

    @property
    def url_host(self) -> str:
        """The host as written in a URL: IPv6 addresses in brackets."""
        return url_host(self.host)

    @property
    def url(self) -> str:
        """unoserver's XML-RPC address, e.g. `http://[::1]:2003`."""
        return f"http://{self.url_host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.url_host}:{self.port}"


def usable_cpus() -> int:
    """CPUs this process may run on (not the host's count, which containers often report)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:          # not on Linux
        return os.cpu_count() or 1


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"UMSTIEG_{name}", default)


def _env_number(name: str, kind: type, default, *, least: float | None = None, above: float | None = None,
                what: str = ""):
    """`UMSTIEG_<name>` read as a number (`kind` int or float) within its bounds, else `default`.

    Pydantic does not validate defaults, so a value from the environment is checked here, and a
    bad one is a ConfigError naming the variable, what it is for and what it holds: a value
    out of range would otherwise surface far away (UMSTIEG_WORKERS=-3 as "no LibreOffice worker
    is left"), and int("two")'s message names neither the variable nor the setting.
    """
    var = f"UMSTIEG_{name}"
    raw = os.environ.get(var)
    if raw is None or not raw.strip():
        return default() if callable(default) else default
    expected = "a whole number" if kind is int else "a number"
    bound = ((f" of at least {least:g}" if least is not None else "")
             + (f" above {above:g}" if above is not None else ""))
    try:
        value = kind(raw.strip())
    except ValueError:
        value = None
    if value is None or (least is not None and value < least) or (above is not None and value <= above) \
            or value != value:                               # NaN
        from core.errors import ConfigError
        raise ConfigError(f"{var}={raw!r} in the environment: expected {expected}{bound} ({what}); "
                          f"fix or unset {var}")
    return value


def _env_remote_workers() -> list[RemoteWorker]:
    raw = _env("REMOTE_WORKERS", "") or ""
    try:
        return [RemoteWorker.parse(x) for x in raw.split(",") if x.strip()]
    except ValueError as exc:
        from core.errors import ConfigError
        raise ConfigError(f"UMSTIEG_REMOTE_WORKERS={raw!r} in the environment: {exc}") from None


class ConversionSettings(BaseModel):
    """How the LibreOffice converter pool runs."""

    workers: int = Field(
        default_factory=lambda: _env_number("WORKERS", int, usable_cpus, least=0, what="local LibreOffice workers"),
        ge=0, description="local LibreOffice workers (0 = remote workers only)")
    timeout: float = Field(
        default_factory=lambda: _env_number("TIMEOUT", float, 120.0, above=0, what="seconds per document"),
        gt=0, description="seconds one document may take before its worker is killed")
    recycle_after: int = Field(
        default_factory=lambda: _env_number("RECYCLE_AFTER", int, 200, least=1, what="conversions per worker"),
        ge=1, description="conversions after which a worker is replaced, to bound memory")
    recycle_above_mb: int = Field(
        default_factory=lambda: _env_number("RECYCLE_ABOVE_MB", int, 1024, least=1, what="MiB per worker"),
        ge=1, description="a worker whose LibreOffice grows beyond this (MiB) is replaced")
    memory_limit_mb: int = Field(
        default_factory=lambda: _env_number("MEMORY_LIMIT_MB", int, 6144, least=0,
                                            what="MiB one document may take; 0: no limit"), ge=0,
        description="a document that makes LibreOffice grow beyond this (MiB) while converting is stopped "
                    "and reported too_large (0: no limit); a 410 KB workbook of empty sheets reaches 18 GB")
    startup_timeout: float = Field(default=90.0, gt=0,
                                   description="seconds a new worker may take to answer")
    remote_cooldown: float = Field(
        default_factory=lambda: _env_number("REMOTE_COOLDOWN", float, 60.0, above=0, what="seconds"), gt=0,
        description="seconds a remote worker that failed is left out before it is tried again")
    remote_give_up: float = Field(
        default_factory=lambda: _env_number("REMOTE_GIVE_UP", float, 600.0, above=0, what="seconds"), gt=0,
        description="seconds a remote worker may stay unreachable before the pool drops it for the rest of the run")
    remote: list[RemoteWorker] = Field(default_factory=_env_remote_workers)
    soffice: str = Field(default_factory=lambda: _env("SOFFICE", "soffice") or "soffice",
                         description="LibreOffice executable")
    runtime_dir: Path | None = Field(default_factory=lambda: Path(p) if (p := _env("RUNTIME_DIR")) else None,
                                     description="where worker profiles live (default: a temporary directory)")

    @field_validator("remote", mode="before")
    @classmethod
    def _parse_remote(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [RemoteWorker.parse(v) if isinstance(v, str) else v for v in value]
        return value

"""`umstieg dashboard`: serve the conversion dashboard for project managers and operators."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from core.errors import ConfigError
from umstieg.console import console, print_error

__all__ = ["dashboard"]


def dashboard(department_files: list[Path] = typer.Argument(None, exists=True, dir_okay=False,
                                                            help="department files to show (YAML)"),
              host: str = typer.Option("127.0.0.1", help="address to listen on"),
              port: int = typer.Option(8350, help="port to listen on"),
              users: Path = typer.Option(None, "--users", exists=True, dir_okay=False,
                                         envvar="UMSTIEG_DASHBOARD_USERS",
                                         help="the users file (logins, roles, password hashes)"),
              allowed_hosts: list[str] = typer.Option(None, "--allowed-host",
                                                      help="a host name the dashboard answers to (repeatable; "
                                                           "default: any with logins, loopback names without)"),
              state_dir: Path = typer.Option(None, "--state-dir", file_okay=False,
                                             help="where sessions and failed logins are kept "
                                                  "(default: the first department's work_dir/dashboard)"),
              secure_cookies: bool = typer.Option(False, "--secure-cookies",
                                                  help="send the session cookie over HTTPS only (behind a TLS proxy)"),
              hash_password: bool = typer.Option(
                  False, "--hash-password", help="ask for a password and print its hash for the users file")) -> None:
    """Serve the dashboard: overview, departments, documents, risk scan; reruns and annotations.

    Without a users file it serves read-only, and only on a loopback address.
    """
    from umstieg.dashboard.auth import hash_password as make_hash, load_accounts
    if hash_password:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
        print(make_hash(password))
        return
    if not department_files:
        print_error(ConfigError("name at least one department file"))
        raise typer.Exit(2)
    from umstieg.dashboard import Site, create_app, is_loopback
    try:
        accounts = load_accounts(users) if users else {}
        if not accounts and not is_loopback(host):
            raise ConfigError(f"refusing to serve on {host} without logins: configure a users file (--users) "
                              f"or listen on 127.0.0.1")
        if not accounts and allowed_hosts and not all(is_loopback(h) for h in allowed_hosts):
            raise ConfigError("without logins the dashboard answers only to loopback names "
                              "(127.0.0.1, localhost, ::1): configure a users file (--users) for others")
        # a fixed secret keeps login forms valid across restarts and across several dashboard processes
        secret: dict[str, Any] = ({"secret": os.environ["UMSTIEG_DASHBOARD_SECRET"]}
                                  if os.environ.get("UMSTIEG_DASHBOARD_SECRET") else {})
        site = Site(list(department_files), accounts=accounts, secure_cookies=secure_cookies,
                    allowed_hosts=list(allowed_hosts) if allowed_hosts else None, state_dir=state_dir, **secret)
    except ConfigError as exc:
        print_error(exc)
        raise typer.Exit(2) from exc
    import uvicorn
    mode = "read-only, no logins" if not accounts else f"{len(accounts)} login(s)"
    console.print(f"dashboard of {', '.join(site.departments)} on http://{host}:{port}/ ({mode})")
    uvicorn.run(create_app(site), host=host, port=port, log_level="warning", proxy_headers=False)

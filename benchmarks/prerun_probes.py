"""What the check before a run costs a Nextcloud target: requests and seconds for N users.

Before anything moves, a run asks every target (and source) about each user it takes: who must
wait (`stopped_users`: the account missing, refusing the login, full; the identity check's OCS
record) and what stops the department (`check_department`). This benchmark runs exactly that
phase (`flows.migrate.prerun`, as `_execute` does) for N users who log in with their own app
passwords, against a real Nextcloud 27 behind a counting proxy (tests/servers/faultproxy.py, no
faults), and prints the requests the server got (in all, per user, the most any one resource was
asked) and the seconds the phase took. One round: the figure is for the phase as a run meets it
(the accounts' sessions not yet made). `--login-passwords`: the users log in with their login
passwords instead (Nextcloud checks each with argon2, ~0.65 s, once per account and session).

Needs ../shared/nextcloud and PHP (bin/setup installs it).

    .venv/bin/python benchmarks/prerun_probes.py [--users 50] [--login-passwords]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from servers.faultproxy import FaultProxy  # noqa: E402
from servers.nextcloud import NextcloudServer, nextcloud_missing  # noqa: E402


def department(tmp: Path, url: str, users: list, env_prefix: str, login_passwords: bool = False) -> Path:
    """A department of `users` (NextcloudUser) with empty home folders, the target at `url`."""
    home = tmp / "home"
    for i, _ in enumerate(users):
        (home / f"u{i:04d}").mkdir(parents=True, exist_ok=True)
    config = {
        "name": "prerun-bench", "work_dir": str(tmp / "work"),
        "users": [{"source": f"u{i:04d}", "target": u.login} for i, u in enumerate(users)],
        "sources": [{"name": "homes", "type": "folder", "root": str(home)}],
        "target": {"type": "nextcloud", "url": url, "timeout": 120,
                   "app_passwords": {u.login: f"env:{env_prefix}{i:04d}" for i, u in enumerate(users)}},
        "conversion": {"enabled": False},
    }
    for i, u in enumerate(users):
        os.environ[f"{env_prefix}{i:04d}"] = u.password if login_passwords else u.app_password
    path = tmp / "department.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def measure(dept_file: Path, proxy: FaultProxy, logins: list[str]) -> dict:
    from core.department import load_department
    from flows.migrate import prerun
    dept = load_department(dept_file)
    proxy.clear()
    started = time.perf_counter()
    stopped, problems = prerun(dept)
    seconds = time.perf_counter() - started
    seen = proxy.seen()
    per_user = Counter()
    for r in seen:
        for login in logins:
            if login in r["path"]:
                per_user[login] += 1
    asked = Counter((r["method"], r["path"]) for r in seen)
    return {"users": len(logins), "seconds": round(seconds, 2), "requests": len(seen),
            "requests_per_user_max": max(per_user.values(), default=0),
            "same_request_asked_most": max(asked.values(), default=0),
            "by_kind": dict(Counter(f"{r['method']} {'ocs' if '/ocs/' in r['path'] else r['path'].split('/')[3]}"
                                    for r in seen)),
            "stopped": len(stopped), "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--login-passwords", action="store_true")
    args = parser.parse_args()
    reason = nextcloud_missing()
    if reason:
        sys.exit(f"no Nextcloud to measure against: {reason}")
    tmp = Path(tempfile.mkdtemp(prefix="umstieg-prerun-bench-"))
    nc = NextcloudServer(tmp / "nextcloud")
    try:
        nc.start()
        users = [nc.new_user("pr", app_password=not args.login_passwords) for _ in range(args.users)]
        with FaultProxy(nc.url) as proxy:
            dept_file = department(tmp, proxy.url, users, "PRERUN_BENCH_PW_", args.login_passwords)
            print(json.dumps(measure(dept_file, proxy, [u.login for u in users]), indent=2))
    finally:
        nc.remove()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

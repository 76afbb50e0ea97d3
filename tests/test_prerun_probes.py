"""The check before a run asks each user's account once per system, not once per question.

Before anything moves, three questions are asked about every user: who must wait (the target
account missing, refusing the login, full), whether the pair is one person (the identity check),
and what stops the department. `flows.migrate.prerun` asks them inside `probing`, where each
source and target keeps the answers it got. Counted at the real servers: the requests a real
Nextcloud 27 gets (through the counting proxy of tests/servers/faultproxy.py) and the LOGINs a
real Dovecot writes to its log. The answers must be exactly those the questions give when each
is asked on its own.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest
import yaml

from helpers import MASTER, make_department
from servers.dovecot import dovecot_factory  # noqa: F401  (a fixture)
from servers.faultproxy import FaultProxy


@pytest.fixture(scope="module", autouse=True)
def _close_runtime_pools():
    yield
    from flows import runtime
    runtime.close_all()


def _fresh(dept_file):
    """The department as a new run reads it (its sources and sinks made anew: no answers kept)."""
    from flows import runtime
    runtime.close_all()
    return runtime.department(str(dept_file))


def test_a_nextcloud_account_is_asked_once_before_a_run(nextcloud_server, tmp_path, monkeypatch):
    from flows.migrate import check_department, prerun, stopped_users
    nc = nextcloud_server
    fine = [nc.new_user("pp") for _ in range(4)]
    full = nc.new_user("pp-full")
    nc.set_quota(full.login, "0 B")
    ghost = "pp-ghost-never-made"
    people = {f"p{i}": u for i, u in enumerate(fine)} | {"full": full}
    secrets = {p: u.app_password for p, u in people.items()} | {"ghost": "Ghost-App-Pass-0000"}
    logins = {p: u.login for p, u in people.items()} | {"ghost": ghost}
    for person, secret in secrets.items():
        monkeypatch.setenv(f"PRERUN_PW_{person.upper()}", secret)
    with FaultProxy(nc.url) as proxy:
        dept_file = make_department(tmp_path, users=tuple(logins), docs_per_user=1)
        cfg = yaml.safe_load(dept_file.read_text())
        cfg["users"] = [{"source": p, "target": login} for p, login in logins.items()]
        cfg["conversion"]["enabled"] = False
        refs = {login: f"env:PRERUN_PW_{p.upper()}" for p, login in logins.items()}
        cfg["target"] = {"type": "nextcloud", "url": proxy.url, "timeout": 120, "app_passwords": refs}
        for field_name, kind in (("calendar_target", "caldav"), ("contacts_target", "carddav")):
            cfg[field_name] = {"type": kind, "url": proxy.url, "flavour": "nextcloud", "timeout": 120,
                               "app_passwords": refs}
        dept_file.write_text(yaml.safe_dump(cfg, allow_unicode=True))

        # each question on its own, as before: the answers to compare with
        alone_stopped = stopped_users(_fresh(dept_file))
        alone_problems = check_department(_fresh(dept_file), waiting=alone_stopped)

        proxy.clear()
        stopped, problems = prerun(_fresh(dept_file))
        seen = proxy.seen()

    assert stopped == alone_stopped and problems == alone_problems == []
    assert sorted(stopped) == ["full", "ghost"]
    assert "no space left" in stopped["full"] and "refused the login" in stopped["ghost"]
    assert all(secret not in why for why in stopped.values() for secret in secrets.values())

    # three systems on one server: the files target (one PROPFIND of the user's files, one OCS
    # record), the calendar and the contacts target (one PROPFIND of the user's home each, and
    # each asks once who owns it: the same principal, once per system); the chunked-upload
    # endpoint, the server's, once for the whole check
    asked = Counter((r["method"], r["path"]) for r in seen)
    twice = {path: n for (_, path), n in asked.items() if n > 1}
    assert all("/dav/principals/users/" in path and n == 2 for path, n in twice.items()), twice
    for person, login in logins.items():
        mine = [(r["method"], r["path"]) for r in seen if f"/{login}" in r["path"]]
        kinds = Counter("ocs" if "/ocs/" in path else path.split("/dav/")[1].split("/")[0] for _, path in mine)
        at_most = {"files": 1, "ocs": 1, "calendars": 1, "addressbooks": 1, "principals": 2, "uploads": 1}
        assert all(kinds[k] <= n for k, n in at_most.items()) and set(kinds) <= set(at_most), (person, mine)
        assert kinds["files"] == kinds["ocs"] == kinds["calendars"] == kinds["addressbooks"] == 1, (person, mine)
    assert len([r for r in seen if "/dav/uploads/" in r["path"]]) == 1


def _logins(server) -> Counter:
    """LOGINs the Dovecot server accepted or refused, by the user they were for (from its log)."""
    text = server.log.read_text(errors="replace")
    found = Counter()
    for line in text.splitlines():
        if "imap-login:" not in line:
            continue
        m = re.search(r"user=<([^>*]*)", line)
        if m and ("Login:" in line or "Aborted login" in line or "Disconnected" in line):
            found[m.group(1)] += 1
    return found


def test_an_imap_mailbox_logs_in_once_per_server_before_a_run(dovecot_factory, tmp_path, monkeypatch):  # noqa: F811
    from flows.migrate import check_department, prerun, stopped_users
    people = ("anna", "ben", "cem", "dora")
    source = dovecot_factory(users={p: f"{p}-pw-1" for p in people}, master=MASTER, penalty=False)
    target = dovecot_factory(users={f"t-{p}": f"t-{p}-pw-1" for p in people[:3]}, master=MASTER, penalty=False)
    monkeypatch.setenv("IMAP_MASTER", MASTER[1])
    dept_file = tmp_path / "department.yaml"
    dept_file.write_text(yaml.safe_dump({
        "name": "mailamt", "work_dir": str(tmp_path / "work"),
        "users": [{"source": p, "target": f"t-{p}"} for p in people],
        "sources": [{"name": "imap", "type": "imap", "host": source.host, "port": source.port, "security": "none",
                     "master_user": MASTER[0], "password": "env:IMAP_MASTER"}],
        "target": {"type": "localdir", "root": str(tmp_path / "files")},
        "mail_target": {"type": "imap", "host": target.host, "port": target.port, "security": "none",
                        "master_user": MASTER[0], "password": "env:IMAP_MASTER"},
    }), encoding="utf-8")

    alone_stopped = stopped_users(_fresh(dept_file))
    alone_problems = check_department(_fresh(dept_file), waiting=alone_stopped)
    before_source, before_target = _logins(source), _logins(target)
    assert sum(before_source.values()) and sum(before_target.values()), "the log names no logins"

    stopped, problems = prerun(_fresh(dept_file))
    assert stopped == alone_stopped and problems == alone_problems == []
    assert list(stopped) == ["dora"] and "t-dora" in stopped["dora"] and MASTER[1] not in stopped["dora"]

    at_source = _logins(source) - before_source
    at_target = _logins(target) - before_target
    assert at_source == Counter({p: 1 for p in people}), at_source
    assert at_target == Counter({f"t-{p}": 1 for p in people}), at_target

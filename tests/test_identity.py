"""The identity check before anything moves, against the real Nextcloud 27 and a real slapd: users
come from the directory; one user's e-mail differs between the directory and the Nextcloud account,
one user has no account at the target. Those two wait with their reasons; the others move."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servers.slapd import ADMIN_DN, SUFFIX, Slapd, group_ldif, person_ldif
from helpers import ledger_rows, make_department

UMSTIEG = [sys.executable, "-m", "umstieg"]

pytestmark = pytest.mark.skipif(not Path("/usr/sbin/slapd").exists(),
                                reason="Debian's slapd is not installed (bin/setup installs it)")


@pytest.fixture(scope="module", autouse=True)
def _close_runtime_pools():
    yield
    from flows import runtime
    runtime.close_all()


@pytest.fixture
def directory_department(nextcloud_server, tmp_path, monkeypatch):
    """anna and ben match; cem's directory mail differs from his Nextcloud account's; dora has no
    account at the target. Users come from a group in slapd."""
    nc = nextcloud_server
    anna = nc.new_user("id-anna", email="anna@amt.test", display_name="Anna Müller")
    ben = nc.new_user("id-ben", email="ben@amt.test", display_name="Ben Krause")
    cem = nc.new_user("id-cem", email="cem.old@amt.test", display_name="Cem Yılmaz")
    people = {"anna": (anna.login, "ANNA@amt.test", "Anna  Müller"),      # case and spaces do not matter
              "ben": (ben.login, "ben@amt.test", "Ben Krause"),
              "cem": (cem.login, "cem@amt.test", "Cem Yılmaz"),
              "dora": ("id-dora-never-made", "dora@amt.test", "Dora")}
    ldif = "".join(person_ldif("people", p, mail=m, name=n, sam=t) for p, (t, m, n) in people.items())
    ldif += group_ldif("groups", "amt", member_uids=list(people))
    with Slapd(ldif) as server:                     # stopped even when the set-up below fails
        dept_file = make_department(tmp_path, users=tuple(people), docs_per_user=1)
        cfg = yaml.safe_load(dept_file.read_text())
        del cfg["users"]
        cfg["conversion"]["enabled"] = False
        cfg["users_from"] = {"ldap": {"url": server.url, "bind_dn": ADMIN_DN, "password": "env:LDAP_PW",
                                      "base": f"ou=people,{SUFFIX}", "group": f"cn=amt,ou=groups,{SUFFIX}",
                                      "source_attr": "uid", "target_attr": "sAMAccountName"}}
        secrets = {anna.login: anna.secret, ben.login: ben.secret, cem.login: cem.secret,
                   "id-dora-never-made": "Ghost-Pass-0000"}
        cfg["target"] = {"type": "nextcloud", "url": nc.url, "timeout": 120,
                         "app_passwords": {login: f"env:IDPW_{i}" for i, login in enumerate(secrets)}}
        env = {"LDAP_PW": server.admin_password, **{f"IDPW_{i}": s for i, s in enumerate(secrets.values())}}
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        dept_file.write_text(yaml.safe_dump(cfg, allow_unicode=True))
        yield dept_file, people, env


def test_mismatch_and_missing_account_wait_the_others_move(directory_department, nextcloud_server):
    from flows.identity import check_identities, resolve_users
    from flows.migrate import run_flow, stopped_users
    from core.department import load_department
    dept_file, people, _ = directory_department
    dept = resolve_users(load_department(dept_file))

    checks = {c.source: c for c in check_identities(dept)}
    assert {p: (c.source_account, c.target_account, c.attributes) for p, c in checks.items() if p != "cem"} == {
        "anna": ("ok", "ok", "ok"), "ben": ("ok", "ok", "ok"),
        "dora": ("ok", "the target refused the login (no such account, or a wrong password)", "not checked")}
    assert "e-mail 'cem@amt.test' here, 'cem.old@amt.test' at the target" in checks["cem"].attributes
    waiting = stopped_users(dept)
    assert sorted(waiting) == ["cem", "dora"] and "cem.old@amt.test" in waiting["cem"]

    summary = run_flow("migrate", dept_file)
    assert sorted(summary["stopped_users"]) == ["cem", "dora"]
    rows = ledger_rows(dept_file)
    assert {r["state"] for r in rows if r["owner"] in ("anna", "ben")} == {"verified"}
    assert not [r for r in rows if r["owner"] in ("cem", "dora") and r["target_ref"]]


def test_users_command_table_json_csv(directory_department):
    dept_file, people, env = directory_department
    env = {**os.environ, **env, "COLUMNS": "250"}
    out = subprocess.run(UMSTIEG + ["users", str(dept_file), "--json"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert out.returncode == 1, out.stderr                    # cem and dora wait: a script sees it
    rows = {r["source"]: r for r in json.loads(out.stdout)}
    assert rows["anna"]["verdict"] == "go" and rows["cem"]["verdict"].startswith("wait: identity: attributes")
    assert rows["dora"]["target"] == "id-dora-never-made" and rows["ben"]["email"] == "ben@amt.test"
    csv_out = subprocess.run(UMSTIEG + ["users", str(dept_file), "--csv"], capture_output=True, text=True,
                             env=env, timeout=600)
    assert csv_out.stdout.splitlines()[0].startswith("source,target,email,display_name")
    assert len(csv_out.stdout.splitlines()) == 5
    table = subprocess.run(UMSTIEG + ["users", str(dept_file)], capture_output=True, text=True, env=env, timeout=600)
    assert "cem.old@amt.test" in " ".join(table.stdout.split())
    assert "4 users: 2 go, 2 wait" in table.stderr
    assert table.returncode == 1                              # not everyone can go: a script sees it
    for secret in env.values():
        if secret.startswith(("Ghost", "admin-pw")):
            assert secret not in table.stdout + table.stderr


def test_assessment_shows_the_identity_map(directory_department):
    from flows.migrate import run_flow
    dept_file, people, _ = directory_department
    result = run_flow("assess", dept_file)
    rows = {r["source"]: r for r in result["identities"]}
    assert rows["anna"]["verdict"] == "go" and rows["dora"]["verdict"].startswith("wait: identity: target")
    text = Path(result["markdown"]).read_text(encoding="utf-8")
    section = text.split("## Identity map", 1)[1].split("\n## ", 1)[0]
    assert "4 user(s): 2 go, 2 wait" in section
    lines = [line for line in section.splitlines() if line.startswith("| ") and "verdict" not in line]
    assert {line.split("|")[1].strip() for line in lines[:2]} == {"cem", "dora"}     # who waits comes first


def test_imap_source_mailbox_checked_with_the_master_user(tmp_path, monkeypatch):
    """Dovecot lets `<user>*<master>` in only for a user who exists: a mailbox that is not there
    makes that user wait; when the master user itself is refused, nobody is blamed."""
    from servers.dovecot import Dovecot
    from core.department import load_department
    from flows.identity import check_identities
    with Dovecot(users={"erik": "erik-pw-1", "fritz": "fritz-pw-2"}, tls=False, penalty=False) as server:
        monkeypatch.setenv("IMAP_MASTER", server.master[1])
        path = tmp_path / "department.yaml"
        cfg = {"name": "postamt", "work_dir": str(tmp_path / "work"),
               "users": [{"source": s, "target": f"t-{s}"} for s in ("erik", "fritz", "gone")],
               "sources": [{"name": "imap", "type": "imap", "host": server.host, "port": server.port,
                            "security": "none", "master_user": server.master[0], "password": "env:IMAP_MASTER"}],
               "target": {"type": "localdir", "root": str(tmp_path / "files")}}
        path.write_text(yaml.safe_dump(cfg))
        checks = {c.source: c for c in check_identities(load_department(path))}
        assert checks["erik"].source_account == "ok" and checks["fritz"].source_account == "ok"
        assert "'gone'" in checks["gone"].source_account and checks["gone"].problem.startswith("identity: source")
        monkeypatch.setenv("IMAP_MASTER", "not-the-master-pw")
        assert all(c.source_account == "not checked" for c in check_identities(load_department(path)))


def test_nextcloud_service_account_compares_only_what_it_may_see(nextcloud_server, tmp_path, monkeypatch):
    """A plain service account cannot see other accounts (files land in its own tree): nobody is
    blamed. An administrator service account sees them: a different e-mail makes that user wait."""
    from core.department import load_department
    from flows.identity import check_identities
    nc = nextcloud_server
    anna = nc.new_user("sa-anna", app_password=False, email="anna@amt.test")
    ben = nc.new_user("sa-ben", app_password=False, email="ben.old@amt.test")
    plain, admin = nc.new_user("sa-svc"), nc.new_user("sa-admin", groups=("admin",))
    path = make_department(tmp_path, users=("anna", "ben"), docs_per_user=1)
    cfg = yaml.safe_load(path.read_text())
    cfg["users"] = [{"source": "anna", "target": anna.login, "email": "anna@amt.test"},
                    {"source": "ben", "target": ben.login, "email": "ben@amt.test"}]
    for svc in (plain, admin):
        monkeypatch.setenv("SVC_PW", svc.secret)
        cfg["target"] = {"type": "nextcloud", "url": nc.url, "username": svc.login, "password": "env:SVC_PW",
                         "folder": "Migration/{user}"}
        path.write_text(yaml.safe_dump(cfg))
        checks = {c.source: c for c in check_identities(load_department(path))}
        if svc is plain:
            assert [c.problem for c in checks.values()] == [None, None]
            assert checks["ben"].target_account == "not checked"
        else:
            assert checks["anna"].problem is None and checks["anna"].attributes == "ok"
            assert "'ben.old@amt.test' at the target" in checks["ben"].problem

"""The check before a run, against a real Nextcloud 27: a user whose own account cannot take files
(missing at the target, a wrong app password, a quota used up) waits with the reason and the
others go on; only what concerns everyone (the server out of reach, a service account's secret)
stops the department."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from servers import free_port
from helpers import ledger_rows, make_department

UMSTIEG = [sys.executable, "-m", "umstieg"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module", autouse=True)
def _close_runtime_pools():
    yield
    from flows import runtime
    runtime.close_all()


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha(p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def four_users(nextcloud_server, tmp_path, monkeypatch):
    """anna is fine; ben's account does not exist at the target; cem's app password is wrong;
    dora's quota is used up. Returns (department file, {person: login}, anna's account)."""
    nc = nextcloud_server
    anna, cem, dora = nc.new_user("t-anna"), nc.new_user("t-cem"), nc.new_user("t-dora")
    nc.set_quota(dora.login, "0 B")
    logins = {"anna": anna.login, "ben": "t-ben-never-made", "cem": cem.login, "dora": dora.login}
    secrets = {"anna": anna.secret, "ben": "Ghost-Pass-0000", "cem": "Wrong-App-Pass-1234", "dora": dora.secret}
    dept_file = make_department(tmp_path, users=tuple(logins), docs_per_user=2)
    cfg = yaml.safe_load(dept_file.read_text())
    cfg["users"] = [{"source": p, "target": login} for p, login in logins.items()]
    cfg["conversion"]["enabled"] = False
    cfg["target"] = {"type": "nextcloud", "url": nc.url, "timeout": 120,
                     "app_passwords": {login: f"env:NCPW_{p.upper()}" for p, login in logins.items()}}
    env = {}
    for p, secret in secrets.items():
        monkeypatch.setenv(f"NCPW_{p.upper()}", secret)
        env[f"NCPW_{p.upper()}"] = secret
    dept_file.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return dept_file, logins, anna, secrets


def test_unusable_accounts_wait_with_their_reason_and_the_others_go_on(four_users, nextcloud_server, tmp_path):
    from flows.migrate import run_flow, stopped_users
    from core.department import load_department
    dept_file, logins, anna, secrets = four_users

    # the check before the run names each unusable account with its own cause
    waiting = stopped_users(load_department(dept_file))
    assert sorted(waiting) == ["ben", "cem", "dora"]
    assert "refused the login" in waiting["ben"] and "does not exist at the target" in waiting["ben"]
    assert "refused the login" in waiting["cem"] and "app password is wrong" in waiting["cem"]
    assert "no space left" in waiting["dora"] and "quota" in waiting["dora"]

    before = set(nextcloud_server.tree(anna))                # what a new account holds (the server's skeleton)
    summary = run_flow("migrate", dept_file)

    assert sorted(summary["stopped_users"]) == ["ben", "cem", "dora"]
    rows = ledger_rows(dept_file)
    # anna's files arrived, all of them, in her account; nothing of the others moved
    assert {r["state"] for r in rows if r["owner"] == "anna"} == {"verified"}
    held = {k: sha(v) for k, v in nextcloud_server.tree(anna).items() if k not in before}
    assert held == _files(tmp_path / "home" / "anna")
    assert not [r for r in rows if r["owner"] != "anna" and (r["state"] != "discovered" or r["target_ref"])]
    report = Path(summary["report"]).read_text(encoding="utf-8")
    section = report.split("## Users who wait", 1)[1].split("\n## ", 1)[0]
    for person in ("ben", "cem", "dora"):
        row = next(line for line in section.splitlines() if line.startswith(f"| {person} |"))
        assert "nothing of theirs moved" in row
    assert "identity map" not in report                      # a full quota is not an identity problem
    for secret in secrets.values():
        assert secret not in report and all(secret not in why for why in summary["stopped_users"].values())

    # one user at a time: only the users a run takes are checked, and the healthy one goes
    alone = run_flow("migrate", dept_file, users=["anna"])
    assert not alone.get("stopped_users") and alone["this_run"] == {}
    again = run_flow("rerun", dept_file, user="anna")
    assert not again.get("stopped_users")

    # the command line says who waits and why, and its status says not everything moved
    env = dict(os.environ, COLUMNS="250", **{f"NCPW_{p.upper()}": s for p, s in secrets.items()})
    result = subprocess.run(UMSTIEG + ["run", str(dept_file)], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 1, result.stdout + result.stderr
    out = " ".join((result.stdout + result.stderr).split())
    for person in ("ben", "cem", "dora"):
        assert f"{person} waits:" in out
    assert "anna waits" not in out and "no space left" in out
    ok = subprocess.run(UMSTIEG + ["run", str(dept_file), "-u", "anna"], capture_output=True, text=True, env=env,
                        timeout=900)
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_what_concerns_everyone_still_stops_the_department(tmp_path, monkeypatch):
    from core.department import load_department
    from flows.migrate import check_department, stopped_users
    dept_file = make_department(tmp_path, users=("anna", "ben"), docs_per_user=1)
    cfg = yaml.safe_load(dept_file.read_text())
    monkeypatch.setenv("NCPW_ANNA", "x")
    monkeypatch.setenv("NCPW_BEN", "y")
    # nobody listens there: the server is out of reach for everyone, no user is blamed
    cfg["target"] = {"type": "nextcloud", "url": f"http://127.0.0.1:{free_port()}", "timeout": 5,
                     "app_passwords": {"t-anna": "env:NCPW_ANNA", "t-ben": "env:NCPW_BEN"}}
    dept_file.write_text(yaml.safe_dump(cfg))
    dept = load_department(dept_file)
    assert stopped_users(dept) == {}
    problems = check_department(dept, waiting=stopped_users(dept))
    assert len(problems) == 1 and "cannot connect" in problems[0]
    # a service account whose secret is missing: the department stops, no user waits for it
    cfg["target"] = {"type": "nextcloud", "url": f"http://127.0.0.1:{free_port()}", "timeout": 5,
                     "username": "svc", "password": "env:NCPW_SERVICE_UNSET"}
    monkeypatch.delenv("NCPW_SERVICE_UNSET", raising=False)
    dept_file.write_text(yaml.safe_dump(cfg))
    dept = load_department(dept_file)
    assert stopped_users(dept) == {}
    problems = check_department(dept, waiting=stopped_users(dept))
    assert problems and all("NCPW_SERVICE_UNSET" in p for p in problems)

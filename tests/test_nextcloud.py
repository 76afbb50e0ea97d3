"""A department loaded into a real Nextcloud 27 server (../shared/nextcloud), every user of it.

The server is started once per test session (conftest's `nextcloud_server`); each test makes its
own accounts, with app passwords as migration teams give them, and one with a login password.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import yaml

from helpers import ledger_rows, make_department

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module", autouse=True)
def _close_runtime_pools():
    yield
    from flows import runtime
    runtime.close_all()


def test_every_user_of_a_department_lands_in_their_own_account(nextcloud_server, tmp_path, monkeypatch):
    """Three users with app passwords and one with a login password: each one's files arrive in
    that user's account (a client that kept Nextcloud's session cookie acted as the first user for
    all of them, and every later user's MKCOL was refused)."""
    from flows.migrate import migrate_body as migrate
    nc = nextcloud_server
    people = ("anna", "ben", "cem", "dora")
    accounts = {p: nc.new_user(f"t-{p}", app_password=(p != "dora")) for p in people}
    dept_file = make_department(tmp_path, users=people, docs_per_user=2)
    cfg = yaml.safe_load(dept_file.read_text())
    cfg["users"] = [{"source": p, "target": accounts[p].login} for p in people]
    cfg["conversion"]["enabled"] = False
    cfg["target"] = {"type": "nextcloud", "url": nc.url, "timeout": 120,
                     "app_passwords": {a.login: f"env:NCPW_{p.upper()}" for p, a in accounts.items()}}
    for p, a in accounts.items():
        monkeypatch.setenv(f"NCPW_{p.upper()}", a.secret)
    dept_file.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    home = tmp_path / "home"
    (home / "ben" / "Ordner" / "Unterordner").mkdir(parents=True)
    (home / "ben" / "Ordner" / "Unterordner" / "tief.bin").write_bytes(os.urandom(3000))

    summary = migrate(str(dept_file))

    rows = ledger_rows(dept_file)
    assert rows and all(r["state"] == "verified" for r in rows), [r for r in rows if r["state"] != "verified"][:3]
    assert summary["totals"] == {"verified": len(rows)}
    for person in people:
        sources = {p.relative_to(home / person).as_posix(): p.read_bytes()
                   for p in (home / person).rglob("*") if p.is_file()}
        # exactly the user's own files, byte for byte, in the user's own account
        held = nc.tree(accounts[person])
        assert {k: sha(v) for k, v in held.items()} == {k: sha(v) for k, v in sources.items()}, person
        mine = [r for r in rows if r["owner"] == person]
        assert mine and all(f"/remote.php/dav/files/{accounts[person].login}/" in r["target_ref"] for r in mine)
    # the second pass finds everything there: nothing moves again
    again = migrate(str(dept_file))
    assert again["this_run"] == {}

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


# --- every source and target kind that has accounts: one exists, one is missing, one is named otherwise ----

def _department(tmp_path: Path, users: list[dict], sources: list[dict], **extra) -> Path:
    """A department file of these users and sources (files land in a local tree unless `target` says)."""
    path = tmp_path / "department.yaml"
    cfg = {"name": "idamt", "work_dir": str(tmp_path / "work"), "users": users, "sources": sources,
           "target": {"type": "localdir", "root": str(tmp_path / "target")}, **extra}
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def _checks(path: Path, **kw) -> dict:
    from core.department import load_department
    from flows.identity import check_identities
    return {c.source: c for c in check_identities(load_department(path), **kw)}


def _waits_alone(path: Path, waiting: set[str]) -> None:
    """Exactly these users wait, and the department check (which stops everyone) says nothing of them."""
    from core.department import load_department
    from flows.migrate import check_department, stopped_users
    dept = load_department(path)
    stopped = stopped_users(dept)
    assert set(stopped) == waiting, stopped
    assert check_department(dept, waiting=stopped) == []
    assert check_department(dept) != []                     # without the identity check, everyone would stop


def test_smb_user_folder_missing_or_closed_waits_alone(tmp_path, monkeypatch):
    """Samba: anna's folder opens; ben's exists but the service account may not list it; cem has none."""
    from servers.samba import SambaServer, smbd_missing
    if smbd_missing():
        pytest.skip(smbd_missing())
    with SambaServer(password="smb-id-pw-7Hq") as server:
        for user in ("anna", "ben"):
            (server.root / "Abteilung" / user).mkdir(parents=True)
            (server.root / "Abteilung" / user / "notiz.txt").write_text("Notiz\n", encoding="utf-8")
        server.make_readable()
        os.chmod(server.root / "Abteilung" / "ben", 0)
        monkeypatch.setenv("SMB_ID_PW", "smb-id-pw-7Hq")
        path = _department(tmp_path, [{"source": u, "target": f"t-{u}"} for u in ("anna", "ben", "cem")], [
            {"name": "share", "type": "smb", "server": "127.0.0.1", "port": server.port, "share": server.share,
             "path": "Abteilung", "username": server.username, "password": "env:SMB_ID_PW", "timeout": 10}])
        checks = _checks(path)
        assert checks["anna"].source_account == "ok" and checks["anna"].problem is None
        assert checks["ben"].source_account.startswith("source 'share': the account") and \
            "access denied" in checks["ben"].source_account
        assert checks["cem"].source_account == "source 'share': no user folder \\\\127.0.0.1\\data\\Abteilung\\cem"
        _waits_alone(path, {"ben", "cem"})
        os.chmod(server.root / "Abteilung" / "ben", 0o755)


def test_s3_prefix_without_objects_waits_and_the_others_move(tmp_path, monkeypatch):
    """S3 (moto): anna's prefix holds objects, ben's none. The run moves anna's files; ben waits."""
    import boto3
    from flows import runtime
    from flows.migrate import run_flow
    from servers.s3 import MotoS3
    with MotoS3() as moto:
        monkeypatch.setenv("S3_ID_KEY", "AKIAUMSTIEGIDTEST001")
        monkeypatch.setenv("S3_ID_SECRET", "s3-id-secret-Qw3")
        s3 = boto3.client("s3", endpoint_url=moto.url, region_name="us-east-1",
                          aws_access_key_id="AKIAUMSTIEGIDTEST001", aws_secret_access_key="s3-id-secret-Qw3")
        s3.create_bucket(Bucket="ablage")
        s3.put_object(Bucket="ablage", Key="export/anna/Bericht.txt", Body=b"Bericht\n")
        s3.put_object(Bucket="ablage", Key="export/anna-alt/alt.txt", Body=b"not anna's\n")
        path = _department(tmp_path, [{"source": u, "target": f"t-{u}"} for u in ("anna", "ben")], [
            {"name": "bucket", "type": "s3", "bucket": "ablage", "prefix": "export", "endpoint_url": moto.url,
             "access_key_id": "env:S3_ID_KEY", "secret_access_key": "env:S3_ID_SECRET"}],
            conversion={"enabled": False})
        checks = _checks(path)
        assert checks["anna"].source_account == "ok"
        assert checks["ben"].source_account == "source 'bucket': no objects under s3://ablage/export/ben/"
        _waits_alone(path, {"ben"})
        try:
            summary = run_flow("migrate", path)
        finally:
            runtime.close_all()
        assert list(summary["stopped_users"]) == ["ben"]
        assert (tmp_path / "target" / "t-anna" / "Bericht.txt").read_bytes() == b"Bericht\n"
        assert not (tmp_path / "target" / "t-ben").exists()


def test_graph_users_drives_mailboxes_and_their_attributes(tmp_path, monkeypatch):
    """Graph (the protocol-level test server): OneDrive users exist with their drive and tell their
    e-mail address and name; one is named otherwise than in the directory, one does not exist.
    Microsoft 365: a user without a mailbox waits. SharePoint: a user's folder in the library."""
    from servers.graph import GraphTestServer
    monkeypatch.setenv("GRAPH_ID_SECRET", "graph-id-secret-4Kp")
    with GraphTestServer(tmp_path, client_secret="graph-id-secret-4Kp") as graph:
        app = {"tenant_id": graph.tenant, "client_id": graph.client_id, "client_secret": "env:GRAPH_ID_SECRET",
               "authority": graph.authority, "graph_url": graph.graph_url, "ca_file": str(graph.ca_file)}
        for upn, mail, name in (("anna@amt.example", "anna@amt.example", "Anna Müller"),
                                ("ben@amt.example", "ben.alt@amt.example", "Ben Krause"),
                                ("dora@amt.example", "dora@amt.example", "Dora Weiß")):
            graph.add_user(upn)
            graph.set_profile(upn, mail=mail, display_name=name)
        graph.add_mailbox("anna@amt.example")
        users = [{"source": u.split("@")[0], "target": f"t-{u.split('@')[0]}", "folder": u, "email": u}
                 for u in ("anna@amt.example", "ben@amt.example", "cem@amt.example", "dora@amt.example")]
        users[0]["display_name"] = "Anna  Müller"
        checks = _checks(_department(tmp_path, users, [{"name": "od", "type": "onedrive", **app}]))
        assert (checks["anna"].source_account, checks["anna"].attributes) == ("ok", "ok")
        assert checks["ben"].source_account == "ok"
        assert checks["ben"].attributes == "e-mail 'ben@amt.example' here, 'ben.alt@amt.example' at source 'od'"
        assert checks["ben"].problem.startswith("identity: attributes")
        assert checks["cem"].source_account == "source 'od': no user 'cem@amt.example' at Microsoft 365"
        assert checks["dora"].problem is None

        checks = _checks(_department(tmp_path, users, [{"name": "exo", "type": "m365", **app}]))
        assert checks["anna"].source_account == "ok" and checks["anna"].problem is None
        assert checks["dora"].source_account == "source 'exo': user 'dora@amt.example' has no mailbox at Microsoft 365"
        assert checks["cem"].source_account == "source 'exo': no user 'cem@amt.example' at Microsoft 365"

        lib = graph.add_site("amt.sharepoint.example:/sites/Ablage", "Dokumente")
        graph.put_file(lib, "Persönlich/anna/Reise.docx", b"anna")
        checks = _checks(_department(tmp_path, [{"source": u, "target": f"t-{u}"} for u in ("anna", "ben")], [
            {"name": "sp", "type": "sharepoint", "site": "amt.sharepoint.example:/sites/Ablage",
             "library": "Dokumente", "path": "Persönlich", **app}]))
        assert checks["anna"].source_account == "ok"
        assert checks["ben"].source_account == "source 'sp': no user folder 'Persönlich/ben' in the library"


def test_ews_mailbox_missing_or_not_impersonable_waits(tmp_path, monkeypatch):
    """EWS (the protocol-level test server, unmodified exchangelib): anna's mailbox opens and
    Exchange's directory names her as the department's directory does; dora's opens but is named
    otherwise; bert's exists but the service account may not impersonate it; carl has none."""
    from exchangelib.protocol import Protocol
    from servers.ews import EwsTestServer
    monkeypatch.setenv("EWS_ID_PW", "ews-id-pw-9Lk")
    Protocol.clear_cache()
    try:
        with EwsTestServer(users={"svc": "ews-id-pw-9Lk"},
                           impersonation={"svc": {"anna@amt.example", "dora@amt.example"}}) as server:
            server.mailbox("anna@amt.example").display_name = "Anna Müller"
            server.mailbox("dora@amt.example").display_name = "Dora Weiss"
            server.mailbox("bert@amt.example")
            users = [{"source": u, "target": f"t-{u}", "folder": f"{u}@amt.example", "email": f"{u}@AMT.example",
                      "display_name": name}
                     for u, name in (("anna", "Anna Müller"), ("bert", None), ("carl", None), ("dora", "Dora Weiß"))]
            checks = _checks(_department(tmp_path, users, [
                {"name": "exchange", "type": "ews", "url": server.url, "username": "svc", "password": "env:EWS_ID_PW",
                 "auth": "basic"}]))
    finally:
        Protocol.clear_cache()
    assert (checks["anna"].source_account, checks["anna"].attributes, checks["anna"].problem) == ("ok", "ok", None)
    assert checks["dora"].source_account == "ok"
    assert checks["dora"].attributes == "name 'Dora Weiß' here, 'Dora Weiss' at source 'exchange'"
    assert checks["bert"].source_account == "source 'exchange': svc may not impersonate bert@amt.example"
    assert checks["carl"].source_account.startswith("source 'exchange': no mailbox carl@amt.example on ")


def test_export_files_missing_or_none_waits_alone(tmp_path):
    """Export files: anna's folder holds an MBOX; ben's folder holds none; cem has no folder."""
    root = tmp_path / "exports"
    (root / "anna" / "Archiv").mkdir(parents=True)
    (root / "anna" / "Archiv" / "Posteingang.mbox").write_bytes(b"From a@b Mon Jan  1 00:00:00 2024\nSubject: x\n\nx\n")
    (root / "ben").mkdir()
    (root / "ben" / "liesmich.txt").write_text("nichts exportiert\n")
    path = _department(tmp_path, [{"source": u, "target": f"t-{u}"} for u in ("anna", "ben", "cem")],
                       [{"name": "pst", "type": "export", "root": str(root)}])
    checks = _checks(path)
    assert checks["anna"].source_account == "ok"
    assert checks["ben"].source_account == (f"source 'pst': user folder {root / 'ben'} holds no export files "
                                            "(PST, OST, MBOX, EML, MSG, ICS, VCF)")
    assert checks["cem"].source_account == f"source 'pst': no user folder {root / 'cem'}"
    _waits_alone(path, {"ben", "cem"})
    out = subprocess.run(UMSTIEG + ["users", str(path), "--json"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "COLUMNS": "250"})
    assert out.returncode == 1, out.stderr
    rows = {r["source"]: r for r in json.loads(out.stdout)}
    assert rows["anna"]["verdict"] == "go"
    assert rows["cem"]["verdict"] == f"wait: identity: source: source 'pst': no user folder {root / 'cem'}"
    assert "3 users: 1 go, 2 wait" in out.stderr


def test_imap_target_login_and_nothing_to_compare(tmp_path, monkeypatch):
    """Dovecot as the mail target (master user): erik's mailbox exists (IMAP tells no e-mail or
    name: 'exists; no attributes to compare'); 'gone' has no account and waits."""
    from servers.dovecot import Dovecot
    with Dovecot(users={"erik": "erik-pw-1"}, tls=False, penalty=False) as server:
        monkeypatch.setenv("IMAP_ID_MASTER", server.master[1])
        (tmp_path / "home" / "erik").mkdir(parents=True)
        (tmp_path / "home" / "gone-src").mkdir(parents=True)
        path = _department(tmp_path, [{"source": "erik", "target": "erik", "email": "erik@amt.example"},
                                      {"source": "gone-src", "target": "gone", "email": "gone@amt.example"}],
                           [{"name": "homes", "type": "folder", "root": str(tmp_path / "home")}],
                           mail_target={"type": "imap", "host": server.host, "port": server.port, "security": "none",
                                        "master_user": server.master[0], "password": "env:IMAP_ID_MASTER"})
        checks = _checks(path)
        assert (checks["erik"].target_account, checks["erik"].attributes) == ("ok", "exists; no attributes to compare")
        assert checks["erik"].problem is None
        assert checks["gone-src"].target_account.startswith("mail target: ")
        assert "'gone*" in checks["gone-src"].target_account
        assert checks["gone-src"].problem.startswith("identity: target")


def test_caldav_principal_display_name_compared(tmp_path, monkeypatch):
    """Radicale: each principal's display name (set as its owner would) is compared with the
    directory's; a login the server refuses waits."""
    import httpx
    from servers.radicale import RadicaleServer
    people = {"anna": ("Anna Müller", "Anna Müller"), "ben": ("Ben Krause", "Bernd Alt")}
    with RadicaleServer(tmp_path / "radicale", {u: f"{u}-cal-pw" for u in people}) as server:
        for user, (_, theirs) in people.items():
            with httpx.Client(auth=(user, f"{user}-cal-pw")) as client:
                client.request("PROPFIND", f"{server.url}/{user}/", headers={"Depth": "0"})    # makes the home
                r = client.request("PROPPATCH", f"{server.url}/{user}/", content=(
                    '<?xml version="1.0"?><d:propertyupdate xmlns:d="DAV:"><d:set><d:prop>'
                    f"<d:displayname>{theirs}</d:displayname></d:prop></d:set></d:propertyupdate>").encode())
                assert r.status_code == 207
        for user in (*people, "gone"):
            monkeypatch.setenv(f"CAL_{user.upper()}", f"{user}-cal-pw")
        (tmp_path / "home").mkdir()
        path = _department(tmp_path, [{"source": u, "target": u, "display_name": ours}
                                      for u, (ours, _) in {**people, "gone": ("Gone", "")}.items()],
                           [{"name": "homes", "type": "folder", "root": str(tmp_path / "home")}],
                           calendar_target={"type": "caldav", "url": server.url,
                                            "app_passwords": {u: f"env:CAL_{u.upper()}" for u in (*people, "gone")}})
        checks = _checks(path)
    assert (checks["anna"].target_account, checks["anna"].attributes) == ("ok", "ok")
    assert checks["ben"].attributes == "name 'Ben Krause' here, 'Bernd Alt' at the calendar target"
    assert checks["gone"].target_account.startswith("calendar target: the CalDAV server refused the login of 'gone'")


def test_nextcloud_calendar_principal_tells_email_and_name(nextcloud_server, tmp_path, monkeypatch):
    """Nextcloud's CalDAV principal tells the account's e-mail address (Sabre's email-address)
    and display name: a different address in the directory makes that user wait."""
    nc = nextcloud_server
    anna = nc.new_user("idcal-anna", email="anna@amt.test", display_name="Anna Müller")
    ben = nc.new_user("idcal-ben", email="ben.alt@amt.test", display_name="Ben Krause")
    (tmp_path / "home").mkdir()
    for i, u in enumerate((anna, ben)):
        monkeypatch.setenv(f"NCCAL_{i}", u.secret)
    path = _department(tmp_path, [{"source": "anna", "target": anna.login, "email": "anna@amt.test",
                                   "display_name": "Anna Müller"},
                                  {"source": "ben", "target": ben.login, "email": "ben@amt.test"}],
                       [{"name": "homes", "type": "folder", "root": str(tmp_path / "home")}],
                       calendar_target={"type": "caldav", "url": nc.url, "flavour": "nextcloud", "timeout": 120,
                                        "app_passwords": {anna.login: "env:NCCAL_0", ben.login: "env:NCCAL_1"}})
    checks = _checks(path)
    assert (checks["anna"].target_account, checks["anna"].attributes) == ("ok", "ok")
    assert checks["ben"].attributes == "e-mail 'ben@amt.test' here, 'ben.alt@amt.test' at the calendar target"

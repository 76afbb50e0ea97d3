"""Source permissions become Nextcloud shares (OCS share API, against a real Nextcloud 27); what
cannot be carried over is listed with its reason."""

from __future__ import annotations

import pytest

from core.department import Department
from core.errors import ItemError
from flows.sharing import Grant, plan_shares


def department(**sharing) -> Department:
    return Department(name="bauamt", work_dir="/tmp/unused", users=[
        {"source": "anna", "target": "t-anna"}, {"source": "ben", "target": "t-ben"},
        {"source": "carl@bauamt.example", "target": "t-carl"}],
        sources=[{"type": "folder", "name": "homes", "root": "/tmp/unused"}],
        target={"type": "localdir", "root": "/tmp/unused"}, sharing=sharing or None)


def entry(principal, rights="read", kind="user", **more) -> dict:
    return {"principal": principal, "rights": rights, "kind": kind, "deny": False, "inherited": False, **more}


def test_permissions_map_to_grants_and_the_rest_is_listed_with_a_reason():
    dept = department(users={"BAUAMT\\dora.extern": "t-ben"}, groups={"BAUAMT\\Statik": "statik"})
    grants, unmapped, ignored = plan_shares(dept, "anna", [
        entry("BAUAMT\\anna", "full"),                         # the owner herself
        entry("NT AUTHORITY\\SYSTEM", "full"), entry("S-1-5-32-544", "full", "group"),   # every server lists these
        entry("BAUAMT\\ben", "write"),                         # a department user by login
        entry("BAUAMT\\ben", "read", inherited=True),          # the same person, inherited: on the folder
        entry("BAUAMT\\dora.extern", "read"),                  # mapped explicitly
        entry("carl@bauamt.example", "read"),                  # a UPN login
        entry("BAUAMT\\Statik", "write", "group", inherited=True),
        entry("BAUAMT\\Kantine", "read", "group"),             # group without mapping
        entry("BAUAMT\\eve", "read", deny=True),
        entry("Everyone", "read", "group"),
        entry("anyone with the link", "read", "link", link_scope="anonymous"),
        entry("BAUAMT\\frank", "other:0x100000"),
    ])
    assert ignored == 3
    assert set(grants) == {Grant("user", "t-ben", "write", False), Grant("user", "t-ben", "read", True),
                           Grant("user", "t-carl", "read", False), Grant("group", "statik", "write", True)}
    reasons = {u["principal"]: u["reason"] for u in unmapped}
    assert set(reasons) == {"BAUAMT\\Kantine", "BAUAMT\\eve", "Everyone", "anyone with the link", "BAUAMT\\frank"}
    assert "sharing.groups" in reasons["BAUAMT\\Kantine"]
    assert "deny" in reasons["BAUAMT\\eve"]
    assert "map it to a target group" in reasons["Everyone"]
    assert "anonymous" in reasons["anyone with the link"]
    # the mapping itself is the user's: dora maps to t-ben because the department says so
    assert Grant("user", "t-ben", "read", False) not in grants      # write wins over read for one person


def test_the_strongest_right_wins_and_logins_can_be_left_unmatched():
    grants, _, _ = plan_shares(department(), "anna", [entry("ben", "read"), entry("BAUAMT\\ben", "full"),
                                                      entry("ben", "write")])
    assert grants == [Grant("user", "t-ben", "full", False)]
    grants, unmapped, _ = plan_shares(department(match_logins=False), "anna", [entry("ben", "read")])
    assert grants == [] and unmapped[0]["principal"] == "ben"


def test_shares_are_made_once_with_the_rights_a_file_or_folder_can_have(nextcloud_server, tmp_path, monkeypatch):
    import httpx
    from core.department import NextcloudTarget
    from sinks.webdav import Nextcloud
    nc = nextcloud_server
    group = f"statik-{tmp_path.name[-6:]}"
    anna, ben = nc.new_user("t-anna", groups=(group,)), nc.new_user("t-ben")
    monkeypatch.setenv("SHARE_PW_ANNA", anna.secret)
    sink = Nextcloud(NextcloudTarget(url=nc.url, app_passwords={anna.login: "env:SHARE_PW_ANNA"}, timeout=120))
    src = tmp_path / "plan.odt"
    src.write_bytes(b"plan")
    sink.put(anna.login, "Projekte/Brücke/plan.odt", src)
    sink.share(anna.login, "Projekte/Brücke/plan.odt", "user", ben.login, "write")
    sink.share(anna.login, "Projekte/Brücke/plan.odt", "group", group, "full", folder=True)
    again = sink.share(anna.login, "Projekte/Brücke/plan.odt", "user", ben.login, "write")   # a rerun
    assert "already shared" in again
    with pytest.raises(ItemError, match="valid user|not exist|unknown"):
        sink.share(anna.login, "Projekte/Brücke/plan.odt", "user", "t-nobody-at-all", "read")
    with pytest.raises(ItemError, match="root folder"):
        sink.share(anna.login, "plan.odt", "user", ben.login, "read", folder=True)
    sink.close()
    r = httpx.get(f"{nc.url}/ocs/v2.php/apps/files_sharing/api/v1/shares", timeout=120,
                  params={"format": "json", "path": "/Projekte/Brücke", "subfiles": "true"},
                  auth=(anna.login, anna.secret), headers={"OCS-APIRequest": "true"})
    made = {(s["path"], int(s["share_type"]), s["share_with"]): int(s["permissions"])
            for s in r.json()["ocs"]["data"]}
    r = httpx.get(f"{nc.url}/ocs/v2.php/apps/files_sharing/api/v1/shares", timeout=120,
                  params={"format": "json", "path": "/Projekte/Brücke"}, auth=(anna.login, anna.secret),
                  headers={"OCS-APIRequest": "true"})
    made |= {(s["path"], int(s["share_type"]), s["share_with"]): int(s["permissions"])
             for s in r.json()["ocs"]["data"]}
    # read + update: all a file can take; a folder takes everything
    assert made == {("/Projekte/Brücke/plan.odt", 0, ben.login): 3, ("/Projekte/Brücke", 1, group): 31}
    # the recipient sees the file in his own files
    assert nc.download(ben, "plan.odt") == b"plan"

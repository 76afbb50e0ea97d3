"""Files end to end: a department whose users keep files on a Windows share (real smbd, with ACL
entries) and in their OneDrive (the Graph test server, read by the real msal + httpx code) lands in
a real Nextcloud 27 — Office documents converted, modification times kept, checksums verified,
names Nextcloud refuses mapped, originals kept per policy, the share's and OneDrive's permissions
made Nextcloud shares that the recipient really sees, or listed. A second run moves nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import CORPUS
from docgen import make_docx, make_pptx, make_xlsx
from servers.graph import GraphTestServer
from servers.nextcloud import NextcloudServer, NextcloudUser
from servers.samba import SambaServer, smbd_missing

pytestmark = pytest.mark.skipif(smbd_missing() is not None, reason=f"Samba test server unavailable: {smbd_missing()}")

MiB = 1024 * 1024
SMB_PW, GRAPH_SECRET = "smb-e2e-pw-5Hd", "graph-e2e-secret-1Qa"
ANNA_UPN, BEN_UPN = "anna@bauamt.example", "ben@bauamt.example"
MTIME = 1_672_531_200            # 2023-01-01: what the share and OneDrive say the files were last changed


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def office_file(folder: Path, name: str, corpus_rel: str) -> Path:
    """A real Office file from the corpus when it is there, else one generated for the test."""
    dst = folder / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    if (CORPUS / corpus_rel).is_file():
        shutil.copy(CORPUS / corpus_rel, dst)
    else:
        {".docx": make_docx, ".xlsx": make_xlsx, ".pptx": make_pptx}[dst.suffix](dst)
    return dst


#: The unix account (uid) the share's ACL gives write access to ben's copy of anna's report: smbd
#: shows it as `Unix User\\2`, which the department maps to ben's Nextcloud account.
COLLEAGUE_UID = 2


@pytest.fixture
def servers(tmp_path, monkeypatch, nextcloud_server):
    if shutil.which("setfacl") is None:
        pytest.fail("setfacl is missing (Debian package acl): run bin/setup")
    monkeypatch.setenv("E2E_SMB_PW", SMB_PW)
    monkeypatch.setenv("E2E_GRAPH_SECRET", GRAPH_SECRET)
    group = f"bauamt-alle-{os.urandom(3).hex()}"
    accounts = {p: nextcloud_server.new_user(f"t-{p}", groups=(group,)) for p in ("anna", "ben")}
    for person, account in accounts.items():
        monkeypatch.setenv(f"E2E_PW_{person.upper()}", account.secret)
    (tmp_path / "graph").mkdir()
    with SambaServer(password=SMB_PW) as smb, \
            GraphTestServer(tmp_path / "graph", client_secret=GRAPH_SECRET, page_size=4) as graph:
        yield smb, graph, nextcloud_server, accounts, group


def shared_with(nc: NextcloudServer, user: NextcloudUser) -> dict[tuple[str, str], int]:
    """What `user` sees shared with them ((path in their files, "user" or "group") → permissions),
    asked as them."""
    import httpx
    r = httpx.get(f"{nc.url}/ocs/v2.php/apps/files_sharing/api/v1/shares", timeout=120,
                  params={"format": "json", "shared_with_me": "true"}, auth=(user.login, user.secret),
                  headers={"OCS-APIRequest": "true"})
    r.raise_for_status()
    return {(s["path"], {0: "user", 1: "group"}[int(s["share_type"])]): int(s["permissions"])
            for s in r.json()["ocs"]["data"]}


def fill_share(smb: SambaServer) -> dict[str, bytes]:
    home = smb.root / "Abteilung"
    anna = home / "anna"
    office_file(anna / "Ablage", "Bericht.docx", "documents/testWORD_features.docx")
    office_file(anna / "Ablage", "Haushalt.xlsx", "spreadsheets/testEXCEL_charts.xlsx")
    (anna / "Ablage" / " Leerzeichen vorn.txt").write_text("Windows erlaubt das, Nextcloud nicht\n", encoding="utf-8")
    (anna / "Ablage" / "Entwurf.part").write_bytes(b"ein Dateiname, den Nextcloud ablehnt\n")
    (anna / "Scans").mkdir()
    with open(anna / "Scans" / "Scan 2026.pdf", "wb") as f:
        for _ in range(12):                                     # over the chunk threshold: chunked upload
            f.write(os.urandom(MiB))
    (anna / "~$Bericht.docx").write_bytes(b"\x05anna" + bytes(157))     # Word's lock file: skipped
    (home / "ben").mkdir()
    (home / "ben" / "notiz.txt").write_text("Ben\n", encoding="utf-8")
    files = {}
    for path in home.rglob("*"):
        if path.is_file():
            os.utime(path, (MTIME, MTIME))
            files[f"{path.relative_to(home).as_posix()}"] = path.read_bytes()
    smb.make_readable()
    # anna's report: her colleague may change it (an NTFS-style explicit entry, as POSIX ACL)
    subprocess.run(["setfacl", "-m", f"u:{COLLEAGUE_UID}:rw", str(anna / "Ablage" / "Bericht.docx")], check=True)
    return files


def fill_onedrive(graph: GraphTestServer, tmp_path: Path) -> None:
    anna = graph.add_user(ANNA_UPN)
    deck = office_file(tmp_path / "od", "Präsentation.pptx", "presentations/testPPT_comment.pptx")
    graph.put_file(anna, "Projekte/Präsentation.pptx", deck.read_bytes(), mtime=MTIME, shared=True, permissions=[
        {"id": "1", "roles": ["owner"], "grantedToV2": {"user": {"email": ANNA_UPN}}},
        {"id": "2", "roles": ["write"], "grantedToV2": {"user": {"email": BEN_UPN}}},
        {"id": "3", "roles": ["read"], "link": {"scope": "anonymous", "type": "view"}},
    ])
    graph.put_file(anna, "Projekte/Liste.csv", b"a;b\n1;2\n", mtime=MTIME)
    ben = graph.add_user(BEN_UPN)
    graph.put_file(ben, "Ben.docx", make_docx(tmp_path / "od" / "Ben.docx").read_bytes(), mtime=MTIME)


def department(tmp_path: Path, smb: SambaServer, graph: GraphTestServer, nc: NextcloudServer,
               accounts: dict[str, NextcloudUser], group: str) -> Path:
    anna, ben = accounts["anna"].login, accounts["ben"].login
    config = {
        "name": "bauamt", "work_dir": str(tmp_path / "work"),
        "users": [{"source": "anna", "target": anna, "folders": {"onedrive": ANNA_UPN}},
                  {"source": "ben", "target": ben, "folders": {"onedrive": BEN_UPN}}],
        "sources": [
            {"name": "share", "type": "smb", "server": "127.0.0.1", "port": smb.port, "share": smb.share,
             "path": "Abteilung", "username": smb.username, "password": "env:E2E_SMB_PW", "timeout": 20,
             "target_folder": "H-Laufwerk"},
            {"name": "onedrive", "type": "onedrive", "tenant_id": graph.tenant, "client_id": graph.client_id,
             "client_secret": "env:E2E_GRAPH_SECRET", "authority": graph.authority, "graph_url": graph.graph_url,
             "ca_file": str(graph.ca_file), "target_folder": "OneDrive"},
        ],
        "target": {"type": "nextcloud", "url": nc.url, "timeout": 120, "chunk_threshold": 8 * MiB,
                   "chunk_size": 5 * MiB, "app_passwords": {anna: "env:E2E_PW_ANNA", ben: "env:E2E_PW_BEN"}},
        "conversion": {"workers": 1, "timeout": 120, "keep_original": "always", "originals_folder": "Originale"},
        "sharing": {"users": {BEN_UPN: ben, f"Unix User\\{COLLEAGUE_UID}": ben}, "groups": {"Everyone": group}},
        "limits": {"chunk_size": 3},
    }
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def test_a_share_and_onedrives_land_in_nextcloud_converted_verified_and_shared(servers, tmp_path):
    from flows import runtime
    from flows.migrate import migrate_body as migrate
    from helpers import ledger_rows
    smb, graph, nc, accounts, group = servers
    anna, ben = accounts["anna"], accounts["ben"]
    share_files = fill_share(smb)
    fill_onedrive(graph, tmp_path)
    dept_file = department(tmp_path, smb, graph, nc, accounts, group)
    try:
        summary = migrate(str(dept_file))
    finally:
        runtime.close_all()
    rows = {(r["owner"], r["location"]): r for r in ledger_rows(dept_file)}
    lock = rows[("anna", "~$Bericht.docx")]
    assert lock["state"] == "skipped"
    moved = {k: r for k, r in rows.items() if r is not lock}
    not_verified = [r for r in moved.values() if r["state"] != "verified"]
    assert not not_verified, not_verified
    assert len(moved) == len(share_files) - 1 + 3 and not summary.get("stopped_users")

    held = nc.tree(anna)
    # Office documents converted, originals kept beside them in a sub-folder, as the policy says
    for odf, original in [("H-Laufwerk/Ablage/Bericht.odt", "H-Laufwerk/Ablage/Originale/Bericht.docx"),
                          ("H-Laufwerk/Ablage/Haushalt.ods", "H-Laufwerk/Ablage/Originale/Haushalt.xlsx"),
                          ("OneDrive/Projekte/Präsentation.odp", "OneDrive/Projekte/Originale/Präsentation.pptx")]:
        assert odf in held and original in held, (odf, sorted(held))
        assert held[odf][:2] == b"PK" and b"opendocument" in held[odf][:100]
    assert held["H-Laufwerk/Ablage/Originale/Bericht.docx"] == share_files["anna/Ablage/Bericht.docx"]
    assert held["H-Laufwerk/Scans/Scan 2026.pdf"] == share_files["anna/Scans/Scan 2026.pdf"]   # chunked upload
    assert "OneDrive/Projekte/Liste.csv" in held and "OneDrive/Ben.odt" in nc.tree(ben)
    # every byte verified: what the ledger says arrived is what the server holds
    for r in moved.values():
        login, _, path = r["target_ref"].split("/remote.php/dav/files/", 1)[1].partition("/")
        assert sha(nc.download(accounts[r["owner"]], path)) == r["target_digest"]
    # modification times survive, from the share (plain and chunked uploads) and from OneDrive
    assert mtime_of(nc, anna, "H-Laufwerk/Scans/Scan 2026.pdf") == MTIME
    assert mtime_of(nc, anna, "H-Laufwerk/Ablage/Originale/Bericht.docx") == MTIME
    assert mtime_of(nc, anna, "OneDrive/Projekte/Liste.csv") == MTIME
    # names Nextcloud refuses arrive under a reversible mapping the ledger shows
    mapped = [p for p in held if p.startswith("H-Laufwerk/Ablage/") and ("Leerzeichen" in p or "Entwurf" in p)]
    assert len(mapped) == 2 and "H-Laufwerk/Ablage/ Leerzeichen vorn.txt" not in held
    assert "H-Laufwerk/Ablage/Entwurf.part" not in held
    # permissions, seen by the recipient himself: the share's ACL entry and OneDrive's write grant
    # became shares with write rights (read + update: all a file can take) ...
    with_ben = shared_with(nc, ben)
    assert with_ben.get(("/Präsentation.odp", "user")) == 3, with_ben
    assert with_ben.get(("/Bericht.odt", "user")) == 3, with_ben
    # the share's "Everyone may read" became a read share with the group everyone is in
    assert with_ben.get(("/Haushalt.ods", "group")) == 1, with_ben
    # ... that ben can open in his own files
    assert nc.download(ben, "Bericht.odt") == held["H-Laufwerk/Ablage/Bericht.odt"]
    # the anonymous link is listed, not recreated
    report = Path(summary["report"]).read_text(encoding="utf-8")
    assert "Not carried over" in report and "links are not recreated" in report
    before = {k: sha(v) for k, v in nc.tree(anna).items()}

    try:
        again = migrate(str(dept_file))                      # the delta pass: nothing changed, nothing moves
    finally:
        runtime.close_all()
    assert again["this_run"] == {}
    assert {k: sha(v) for k, v in nc.tree(anna).items()} == before
    assert shared_with(nc, ben) == with_ben                  # no share made twice


def mtime_of(nc: NextcloudServer, user: NextcloudUser, rel: str) -> int:
    """The modification time Nextcloud keeps for a file (getlastmodified), in seconds."""
    import email.utils
    import xml.etree.ElementTree as ET
    from urllib.parse import quote
    with nc.dav(user) as client:
        r = client.request("PROPFIND", quote(f"/remote.php/dav/files/{user.login}/{rel}"),
                           headers={"Depth": "0"})
    r.raise_for_status()
    text = ET.fromstring(r.content).findtext(".//{DAV:}getlastmodified")
    return int(email.utils.parsedate_to_datetime(text).timestamp())

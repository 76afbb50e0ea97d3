"""Files end to end: a department whose users keep files on a Windows share (real smbd) and in
their OneDrive (the Graph test server, read by the real msal + httpx code) lands in Nextcloud (the
Nextcloud protocol test server) — Office documents converted, modification times kept, checksums
verified, names Nextcloud refuses mapped, originals kept per policy, permissions shared or listed —
while the target throttles, fails and loses answers on the way. A second run moves nothing."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import CORPUS
from docgen import make_docx, make_pptx, make_xlsx
from servers.graph import GraphTestServer
from servers.nextcloud_dav import Fault, NextcloudDav
from servers.samba import SambaServer, smbd_missing

pytestmark = pytest.mark.skipif(smbd_missing() is not None, reason=f"Samba test server unavailable: {smbd_missing()}")

MiB = 1024 * 1024
PASSWORDS = {"t-anna": "anna-app-pw-2Lm", "t-ben": "ben-app-pw-8Tr"}
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


@pytest.fixture
def servers(tmp_path, monkeypatch):
    monkeypatch.setenv("E2E_SMB_PW", SMB_PW)
    monkeypatch.setenv("E2E_GRAPH_SECRET", GRAPH_SECRET)
    for login, password in PASSWORDS.items():
        monkeypatch.setenv(f"E2E_PW_{login[2:].upper()}", password)
    (tmp_path / "graph").mkdir()
    with SambaServer(password=SMB_PW) as smb, \
            GraphTestServer(tmp_path / "graph", client_secret=GRAPH_SECRET, page_size=4) as graph, \
            NextcloudDav(tmp_path / "nextcloud", dict(PASSWORDS), groups={"bauamt-alle"}) as nc:
        yield smb, graph, nc
    assert not nc.errors, nc.errors[0]


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


def department(tmp_path: Path, smb: SambaServer, graph: GraphTestServer, nc: NextcloudDav) -> Path:
    config = {
        "name": "bauamt", "work_dir": str(tmp_path / "work"),
        "users": [{"source": "anna", "target": "t-anna", "folders": {"onedrive": ANNA_UPN}},
                  {"source": "ben", "target": "t-ben", "folders": {"onedrive": BEN_UPN}}],
        "sources": [
            {"name": "share", "type": "smb", "server": "127.0.0.1", "port": smb.port, "share": smb.share,
             "path": "Abteilung", "username": smb.username, "password": "env:E2E_SMB_PW", "timeout": 20,
             "target_folder": "H-Laufwerk"},
            {"name": "onedrive", "type": "onedrive", "tenant_id": graph.tenant, "client_id": graph.client_id,
             "client_secret": "env:E2E_GRAPH_SECRET", "authority": graph.authority, "graph_url": graph.graph_url,
             "ca_file": str(graph.ca_file), "target_folder": "OneDrive"},
        ],
        "target": {"type": "nextcloud", "url": nc.url, "timeout": 5, "chunk_threshold": 8 * MiB, "chunk_size": 5 * MiB,
                   "app_passwords": {"t-anna": "env:E2E_PW_ANNA", "t-ben": "env:E2E_PW_BEN"}},
        "conversion": {"workers": 1, "timeout": 120, "keep_original": "always", "originals_folder": "Originale"},
        "sharing": {"users": {BEN_UPN: "t-ben"}, "groups": {"Everyone": "bauamt-alle"}},
        "limits": {"chunk_size": 3},
    }
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


def test_a_share_and_onedrives_land_in_nextcloud_converted_verified_and_shared(servers, tmp_path):
    from flows import runtime
    from flows.migrate import migrate
    from test_flows import ledger_rows
    smb, graph, nc = servers
    share_files = fill_share(smb)
    fill_onedrive(graph, tmp_path)
    dept_file = department(tmp_path, smb, graph, nc)
    # the target misbehaves, at most once per path so that the flow's retries always suffice
    nc.faults = [Fault(status=503, retry_after="0", every=5, once_per_path=True, path_contains="/files/"),
                 Fault(status=429, retry_after="0", every=7, once_per_path=True),
                 Fault(stall=6, after_work=True, methods=("PUT",), path_contains="/files/", times=1)]   # answer lost
    try:
        summary = migrate(str(dept_file))
    finally:
        runtime.close_all()
    rows = {(r["owner"], r["location"]): r for r in ledger_rows(dept_file)}
    lock = rows[("anna", "~$Bericht.docx")]
    assert lock["state"] == "skipped"
    moved = {k: r for k, r in rows.items() if r is not lock}
    assert all(r["state"] == "verified" for r in moved.values()), [r for r in moved.values() if r["state"] != "verified"]
    assert len(moved) == len(share_files) - 1 + 3 and not summary.get("stopped_users")
    assert all(f.hits for f in nc.faults)

    anna = nc.files("t-anna")
    # Office documents converted, originals kept beside them in a sub-folder, as the policy says
    for odf, original in [("H-Laufwerk/Ablage/Bericht.odt", "H-Laufwerk/Ablage/Originale/Bericht.docx"),
                          ("H-Laufwerk/Ablage/Haushalt.ods", "H-Laufwerk/Ablage/Originale/Haushalt.xlsx"),
                          ("OneDrive/Projekte/Präsentation.odp", "OneDrive/Projekte/Originale/Präsentation.pptx")]:
        assert odf in anna and original in anna, (odf, sorted(anna))
    assert anna["H-Laufwerk/Ablage/Originale/Bericht.docx"].read_bytes() == share_files["anna/Ablage/Bericht.docx"]
    assert "OneDrive/Projekte/Liste.csv" in anna and "OneDrive/Ben.odt" in nc.files("t-ben")
    # every byte verified: what the ledger says arrived is what the server holds
    for r in moved.values():
        user, _, path = r["target_ref"].split("/remote.php/dav/files/", 1)[1].partition("/")
        assert sha(nc.file(user, path).read_bytes()) == r["target_digest"]
    # modification times survive, from the share (plain and chunked uploads) and from OneDrive
    assert int(anna["H-Laufwerk/Scans/Scan 2026.pdf"].stat().st_mtime) == MTIME
    assert int(anna["OneDrive/Projekte/Liste.csv"].stat().st_mtime) == MTIME
    assert any("/uploads/t-anna/" in r["path"] for r in nc.requests("MOVE"))
    # names Nextcloud refuses arrive under a reversible mapping the ledger shows
    mapped = [p for p in anna if p.startswith("H-Laufwerk/Ablage/") and ("Leerzeichen" in p or "Entwurf" in p)]
    assert len(mapped) == 2 and "H-Laufwerk/Ablage/ Leerzeichen vorn.txt" not in anna
    assert "H-Laufwerk/Ablage/Entwurf.part" not in anna
    # permissions: ben may write anna's presentation; the anonymous link is listed, not recreated
    shares = {(s["path"], s["share_with"]) for s in nc.shares}
    assert ("/OneDrive/Projekte/Präsentation.odp", "t-ben") in shares
    report = Path(summary["report"]).read_text(encoding="utf-8")
    assert "Not carried over" in report and "links are not recreated" in report
    writes = nc.writes()
    assert set(writes.values()) == {1}, {k: v for k, v in writes.items() if v != 1}      # none sent twice

    try:
        again = migrate(str(dept_file))                      # the delta pass: nothing changed, nothing moves
    finally:
        runtime.close_all()
    assert again["this_run"] == {} and nc.writes() == writes

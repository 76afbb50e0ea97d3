"""OneDrive and SharePoint sources: the real msal + httpx clients against the Graph test server."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from core.department import OneDriveSource, SharePointSource
from core.errors import ConfigError, TransientError
from core.items import Kind
from sources.graph import GraphClient
from sources.onedrive import DriveSource, permission_of
from servers.graph import GraphTestServer

SECRET = "s3cret-value-Zq9"
UPN = "anna@contoso.example"


@pytest.fixture
def graph(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPH_TEST_SECRET", SECRET)
    with GraphTestServer(tmp_path, client_secret=SECRET, page_size=3) as server:
        yield server


def _config(server: GraphTestServer, cls=OneDriveSource, **extra):
    fields = {"name": "od", "tenant_id": server.tenant, "client_id": server.client_id,
              "client_secret": "env:GRAPH_TEST_SECRET", "authority": server.authority, "graph_url": server.graph_url,
              "ca_file": server.ca_file, "timeout": 10}
    return cls(**{**fields, **extra})


class Sleeps(list):
    """Records the waits the client asked for, instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _source(server, cls=OneDriveSource, sleeps=None, **extra) -> DriveSource:
    config = _config(server, cls, **extra)
    return DriveSource(config, client=GraphClient(config, sleep=sleeps if sleeps is not None else Sleeps()))


def _fill(server: GraphTestServer):
    drive = server.add_user(UPN)
    files = {
        "Bericht.docx": b"docx bytes",
        "Ablage/2025/Haushalt.xlsx": b"x" * 5000,
        "Ablage/2025/Notizen.txt": "Grüße".encode(),
        "Ablage/Plan.odt": b"odt",
        "Projekte/Umzug/Liste.csv": b"a;b\n1;2\n",
        "Projekte/Umzug/Foto.jpg": os.urandom(2000),
        "leer.bin": b"",
    }
    made = {path: server.put_file(drive, path, data, mtime=1_700_000_000 + i * 60)
            for i, (path, data) in enumerate(files.items())}
    server.put_package(drive, "Notizbuch")
    server.folder(drive, "Leerer Ordner")
    return drive, files, made


def test_discover_pages_through_delta_and_rebuilds_paths(graph):
    drive, files, made = _fill(graph)
    src = _source(graph)
    refs = list(src.discover(UPN, UPN))
    assert sorted(r.location for r in refs) == sorted(files)              # no folders, no OneNote package
    by_loc = {r.location: r for r in refs}
    ref = by_loc["Ablage/2025/Haushalt.xlsx"]
    assert ref.kind is Kind.FILE and ref.owner == UPN and ref.source == "od"
    assert ref.key == made["Ablage/2025/Haushalt.xlsx"]["id"]
    assert ref.version == made["Ablage/2025/Haushalt.xlsx"]["cTag"] and ref.size == 5000
    assert ref.meta["mtime"] == 1_700_000_000 + 60 and ref.meta["owner"] == UPN
    assert "permissions" not in ref.meta                                    # not shared: no extra request
    delta_requests = [p for m, p, _ in graph.log if p.endswith("/root/delta")]
    assert len(delta_requests) >= 4                                         # 12 entries, pages of 3
    assert not any("/permissions" in p for _, p, _ in graph.log)


def test_extract_follows_the_redirect_without_the_token_and_streams(graph, tmp_path):
    drive = graph.add_user(UPN)
    data = os.urandom(3 * 1024 * 1024 + 17)
    item = graph.put_file(drive, "Groß/Archiv.zip", data)
    src = _source(graph)
    (ref,) = list(src.discover(UPN, UPN))
    dst = tmp_path / "out" / "Archiv.zip"
    size, mtime = src.extract(UPN, ref.location, dst, key=ref.key)
    assert size == len(data) and dst.read_bytes() == data and mtime is None
    content = [(p, auth) for m, p, auth in graph.log if p.endswith(f"/items/{item['id']}/content")]
    downloads = [(p, auth) for m, p, auth in graph.log if p.startswith("/download/")]
    assert content == [(content[0][0], True)] and downloads == [(downloads[0][0], False)]
    assert not (dst.parent / "Archiv.zip.part").exists()


def test_second_pass_yields_only_the_changes(graph):
    drive, files, made = _fill(graph)
    src = _source(graph)
    first = list(src.discover(UPN, UPN))
    assert len(first) == len(files)
    graph.put_file(drive, "Bericht.docx", b"docx bytes, second version")
    graph.put_file(drive, "Neu/Antrag.pdf", b"%PDF-1.4")
    graph.delete(drive, made["Ablage/Plan.odt"]["id"])
    changes = src.changes(UPN, UPN)
    assert not changes.resynced
    assert sorted(r.location for r in changes.changed) == ["Bericht.docx", "Neu/Antrag.pdf"]
    assert changes.removed == [made["Ablage/Plan.odt"]["id"]]
    new_version = next(r for r in changes.changed if r.location == "Bericht.docx").version
    assert new_version != next(r for r in first if r.location == "Bericht.docx").version
    assert src.changes(UPN, UPN).changed == []                            # nothing since
    again = list(src.discover(UPN, UPN))                                    # a listing is always complete
    assert len(again) == len(files) + 1 - 1


def test_expired_delta_link_means_a_full_listing_reported(graph):
    drive, files, _ = _fill(graph)
    src = _source(graph)
    list(src.discover(UPN, UPN))
    graph.expire_deltas(drive)
    changes = src.changes(UPN, UPN)
    assert changes.resynced and src.client.resyncs == 1
    assert sorted(r.location for r in changes.changed) == sorted(files)


def test_throttling_waits_as_asked_then_hands_over(graph):
    _fill(graph)
    sleeps = Sleeps()
    src = _source(graph, sleeps=sleeps)
    graph.throttle(2, retry_after="7")
    refs = list(src.discover(UPN, UPN))
    assert len(refs) == 7
    assert sleeps == [7.0, 7.0] and src.client.waits == 2
    graph.throttle(4, retry_after="3", status=503)
    with pytest.raises(TransientError) as info:
        list(src.discover(UPN, UPN))
    assert info.value.retry_after == 3.0 and sleeps[2:] == [3.0, 3.0, 3.0]


def test_wrong_secret_is_a_clear_problem_without_the_secret(graph, monkeypatch):
    graph.add_user(UPN)
    monkeypatch.setenv("GRAPH_TEST_SECRET", "wrong-secret-Xy7")
    src = _source(graph)
    problems = src.check([UPN])
    assert len(problems) == 1
    assert "invalid_client" in problems[0] and "env:GRAPH_TEST_SECRET" in problems[0]
    assert "wrong-secret-Xy7" not in problems[0] and SECRET not in problems[0]
    with pytest.raises(ConfigError) as info:
        list(src.discover(UPN, UPN))
    assert "wrong-secret-Xy7" not in str(info.value)


def test_check_names_a_missing_user_and_a_missing_permission(graph):
    graph.add_user(UPN)
    src = _source(graph)
    assert src.check([UPN]) == []
    problems = src.check(["nobody@contoso.example"])
    assert len(problems) == 1 and "404" in problems[0] and "nobody@contoso.example" in problems[0]
    graph.denied.add("/drive")
    fresh = _source(graph)
    (problem,) = fresh.check([UPN])
    assert "403" in problem and "Files.Read.All" in problem


def test_permissions_of_shared_items_go_into_meta(graph):
    drive = graph.add_user(UPN)
    perms = [
        {"id": "1", "roles": ["owner"], "grantedToV2": {"user": {"email": UPN, "displayName": "Anna"}}},
        {"id": "2", "roles": ["write"], "grantedToV2": {"user": {"email": "ben@contoso.example"}},
         "inheritedFrom": {"id": "x"}},
        {"id": "3", "roles": ["read"], "grantedToV2": {"group": {"displayName": "Kämmerei", "id": "g1"}}},
        {"id": "4", "roles": ["read"], "link": {"scope": "anonymous", "type": "view"}},
        {"id": "5", "roles": ["write"], "link": {"scope": "users", "type": "edit"},
         "grantedToIdentitiesV2": [{"user": {"email": "carl@extern.example"}},
                                   {"user": {"email": "dora@extern.example"}}]},
        {"id": "6", "roles": ["read"], "link": {"scope": "organization", "type": "view"}},
    ]
    graph.put_file(drive, "geteilt.docx", b"s", shared=True, permissions=perms)
    graph.put_file(drive, "privat.docx", b"p")
    src = _source(graph)
    refs = {r.location: r for r in src.discover(UPN, UPN)}
    assert refs["geteilt.docx"].meta["permissions"] == [
        {"principal": UPN, "kind": "user", "rights": "full", "deny": False, "inherited": False},
        {"principal": "ben@contoso.example", "kind": "user", "rights": "write", "deny": False, "inherited": True},
        {"principal": "Kämmerei", "kind": "group", "rights": "read", "deny": False, "inherited": False},
        {"principal": "anyone", "kind": "link", "rights": "read", "deny": False, "inherited": False,
         "link_scope": "anonymous"},
        {"principal": "carl@extern.example", "kind": "user", "rights": "write", "deny": False, "inherited": False,
         "link_scope": "users"},
        {"principal": "dora@extern.example", "kind": "user", "rights": "write", "deny": False, "inherited": False,
         "link_scope": "users"},
        {"principal": "organization", "kind": "link", "rights": "read", "deny": False, "inherited": False,
         "link_scope": "organization"},
    ]
    assert "permissions" not in refs["privat.docx"].meta
    assert {p for _, p, _ in graph.log if "/permissions" in p} == {
        f"/v1.0/drives/{drive.id}/items/{refs['geteilt.docx'].key}/permissions"}      # two pages, one item
    off = _source(graph, read_permissions=False)
    assert all("permissions" not in r.meta for r in off.discover(UPN, UPN))


def test_permission_of_a_sharepoint_site_user_login():
    entry = permission_of({"roles": ["sp.full control"], "grantedToV2": {
        "siteUser": {"loginName": "i:0#.f|membership|eva@contoso.example", "displayName": "Eva"}}})
    assert entry == [{"principal": "eva@contoso.example", "kind": "user", "rights": "full", "deny": False,
                      "inherited": False}]


def test_sharepoint_library_with_one_folder_per_user(graph, tmp_path):
    lib = graph.add_site("contoso.sharepoint.com:/sites/Finanzen", "Dokumente")
    graph.put_file(lib, "Personal/anna/Reise.docx", b"anna 1")
    graph.put_file(lib, "Personal/anna/2026/Q1.xlsx", b"anna 2")
    graph.put_file(lib, "Personal/ben/Ben.docx", b"ben")
    graph.put_file(lib, "Allgemein.docx", b"all")
    src = _source(graph, SharePointSource, site="contoso.sharepoint.com:/sites/Finanzen", library="Dokumente",
                  path="Personal")
    assert src.check(["anna", "ben"]) == []
    refs = list(src.discover(UPN, "anna"))
    assert sorted(r.location for r in refs) == ["2026/Q1.xlsx", "Reise.docx"]
    ref = next(r for r in refs if r.location == "Reise.docx")
    dst = tmp_path / "Reise.docx"
    assert src.extract("anna", ref.location, dst, key=ref.key) == (6, None) and dst.read_bytes() == b"anna 1"
    (problem,) = src.check(["carla"])
    assert "carla" in problem and "404" in problem
    wrong = _source(graph, SharePointSource, site="contoso.sharepoint.com:/sites/Finanzen", library="Documents")
    (problem,) = wrong.check(["anna"])
    assert "no document library 'Documents'" in problem and "Dokumente" in problem


def test_at_most_concurrency_requests_per_drive(graph, tmp_path):
    drive = graph.add_user(UPN)
    for i in range(8):
        graph.put_file(drive, f"f{i}.bin", bytes([i]) * 100)
    src = _source(graph, concurrency=2)
    refs = list(src.discover(UPN, UPN))
    graph.delay = 0.05
    errors = []

    def pull(ref):
        try:
            src.extract(UPN, ref.location, tmp_path / ref.location, key=ref.key)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=pull, args=(r,)) for r in refs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert graph.max_in_flight == 2
    assert all((tmp_path / r.location).read_bytes() == bytes([int(r.location[1])]) * 100 for r in refs)


@pytest.mark.corpus
def test_office_files_from_the_corpus_arrive_byte_for_byte(graph, corpus, tmp_path):
    drive = graph.add_user(UPN)
    picked = [p for sub in ("documents", "spreadsheets", "presentations")
              for p in sorted((corpus / sub).rglob("*.*x"))[:3]]
    assert picked
    for p in picked:
        graph.put_file(drive, f"{p.parent.name}/{p.name}", p.read_bytes())
    src = _source(graph)
    refs = list(src.discover(UPN, UPN))
    assert len(refs) == len(picked)
    for ref in refs:
        dst = tmp_path / "x" / ref.location
        size, _ = src.extract(UPN, ref.location, dst, key=ref.key)
        original = next(p for p in picked if f"{p.parent.name}/{p.name}" == ref.location)
        assert size == original.stat().st_size
        assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(original.read_bytes()).digest()


def test_a_token_graph_no_longer_accepts_is_replaced_once(graph):
    _fill(graph)
    src = _source(graph)
    list(src.discover(UPN, UPN))
    assert graph.token_requests == 1
    graph.tokens.clear()                                  # revoked (or expired early) at the service
    assert len(list(src.discover(UPN, UPN))) == 7
    assert graph.token_requests == 2


def test_a_server_that_does_not_answer_in_time_is_transient(graph, tmp_path):
    _fill(graph)
    src = _source(graph, timeout=0.5)
    src.client.token()
    graph.delay = 1.5
    with pytest.raises(TransientError) as info:
        list(src.discover(UPN, UPN))
    assert "did not answer within 0.5 s" in str(info.value)


def test_the_department_pipeline_moves_a_onedrive(graph, tmp_path):
    """discover → extract → load → verify through flows.steps, into a local directory target."""
    import yaml
    from flows import runtime
    from flows.discovery import discover
    from flows.steps import process_chunk

    drive, files, _ = _fill(graph)
    config = {
        "name": "od-amt", "work_dir": str(tmp_path / "work"),
        "users": [{"source": UPN, "target": "t-anna"}],
        "sources": [{"name": "od", "type": "onedrive", "tenant_id": graph.tenant, "client_id": graph.client_id,
                     "client_secret": "env:GRAPH_TEST_SECRET", "authority": graph.authority,
                     "graph_url": graph.graph_url, "ca_file": str(graph.ca_file)}],
        "target": {"type": "localdir", "root": str(tmp_path / "target")},
        "conversion": {"enabled": False},
    }
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    dept = runtime.department(path)
    ledger = runtime.ledger(dept)
    run_id = ledger.start_run(dept.name, "test")
    found = discover(dept, ledger, run_id)
    assert found.new[UPN] == len(files)
    counts = process_chunk(str(path), run_id, UPN, 1, found.todo[UPN])
    assert counts == {"verified": len(files)}
    target = tmp_path / "target" / "t-anna"
    for rel, data in files.items():
        assert (target / rel).read_bytes() == data
    assert (target / "Ablage/2025/Haushalt.xlsx").stat().st_mtime == 1_700_000_000 + 60
    ledger.finish_run(run_id, "completed")
    graph.put_file(drive, "Bericht.docx", b"second version")
    again = discover(dept, ledger, ledger.start_run(dept.name, "test"))
    assert again.changed[UPN] == 1 and again.unchanged[UPN] == len(files) - 1


def test_every_request_names_umstieg_and_no_log_line_carries_a_secret(graph, tmp_path, caplog):
    import logging
    import importlib.metadata
    _fill(graph)
    caplog.set_level(logging.DEBUG)
    src = _source(graph)
    for ref in src.discover(UPN, UPN):
        src.extract(UPN, ref.location, tmp_path / ref.location, key=ref.key)
    assert graph.user_agents == {f"umstieg/{importlib.metadata.version('umstieg')}"}
    assert caplog.records                                       # msal and httpx did log at DEBUG
    assert SECRET not in caplog.text
    assert not any(token in caplog.text for token in graph.tokens)


def test_an_unreachable_identity_platform_or_unknown_tenant_is_reported(graph):
    graph.add_user(UPN)
    closed = _source(graph, authority="https://127.0.0.1:9", timeout=2)
    (problem,) = closed.check([UPN])
    assert "cannot reach the identity platform at https://127.0.0.1:9/" in problem
    config = _config(graph, tenant_id="other-tenant")
    (problem,) = DriveSource(config, client=GraphClient(config)).check([UPN])
    assert "other-tenant" in problem and SECRET not in problem


def test_one_refused_or_vanished_file_fails_alone(graph, tmp_path):
    from core.errors import ItemError
    drive, files, made = _fill(graph)
    src = _source(graph)
    refs = {r.location: r for r in src.discover(UPN, UPN)}
    graph.denied.add(f"/items/{made['Bericht.docx']['id']}/content")
    with pytest.raises(ItemError) as info:
        src.extract(UPN, "Bericht.docx", tmp_path / "a", key=refs["Bericht.docx"].key)
    assert "403" in str(info.value) and "Files.Read.All" in str(info.value)
    graph.delete(drive, made["Ablage/Plan.odt"]["id"])
    with pytest.raises(ItemError) as info:
        src.extract(UPN, "Ablage/Plan.odt", tmp_path / "b", key=refs["Ablage/Plan.odt"].key)
    assert "404" in str(info.value)
    ref = refs["Ablage/2025/Haushalt.xlsx"]                          # the others still come
    assert src.extract(UPN, ref.location, tmp_path / "c", key=ref.key)[0] == 5000


def test_a_library_is_walked_once_for_all_its_users_and_each_folder_sees_its_own_changes(graph):
    lib = graph.add_site("contoso.sharepoint.com:/sites/Finanzen", "Dokumente")
    for user in ("anna", "ben", "carl"):
        for i in range(4):
            graph.put_file(lib, f"Personal/{user}/Akte{i}.docx", f"{user} {i}".encode())
    src = _source(graph, SharePointSource, site="contoso.sharepoint.com:/sites/Finanzen", library="Dokumente",
                  path="Personal")
    listings = {user: sorted(r.location for r in src.discover(user, user)) for user in ("anna", "ben", "carl")}
    assert listings == {user: [f"Akte{i}.docx" for i in range(4)] for user in ("anna", "ben", "carl")}
    walks = [p for _, p, _ in graph.log if p.endswith("/root/delta")]
    assert len(walks) == 6 + 2                 # 17 entries in pages of 3 once, then one short pass per user
    graph.put_file(lib, "Personal/anna/Akte0.docx", b"anna changed")
    graph.put_file(lib, "Personal/ben/Neu.docx", b"ben new")
    anna = src.changes("anna", "anna")
    assert [r.location for r in anna.changed] == ["Akte0.docx"] and anna.removed == []
    ben = src.changes("ben", "ben")                # anna's pass already fetched ben's change: he still sees it
    assert [r.location for r in ben.changed] == ["Neu.docx"]
    assert src.changes("carl", "carl").changed == [] and src.changes("ben", "ben").changed == []


def test_a_sharepoint_site_given_by_its_id(graph):
    lib = graph.add_site("contoso.sharepoint.com:/sites/Bau", "Dokumente")
    graph.put_file(lib, "eva/Plan.pdf", b"%PDF")
    site_id = graph.sites["contoso.sharepoint.com:/sites/Bau"]["id"]
    src = _source(graph, SharePointSource, site=site_id, library="Dokumente")
    assert src.check(["eva"]) == []
    assert [r.location for r in src.discover("eva", "eva")] == ["Plan.pdf"]

"""The department's mail options (imapsync's selection options) and counts that add up, against
real Dovecot servers (tests/servers/dovecot.py): a source and a target, each test with its own users.

What is counted at the target is read over plain IMAP (imapclient), independently of the sink.
"""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from imapclient import IMAPClient
from sqlalchemy import select

from core.department import MailOptions, load_department
from core.errors import ConfigError
from core.ledger import Item
from core.mailselection import MailSelection
from servers.dovecot import Dovecot, dovecot_factory  # noqa: F401  (a fixture)
from helpers import MASTER, fill, message

_ids = iter(range(10_000))


@pytest.fixture(scope="module", autouse=True)
def _secrets():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAP_MASTER", MASTER[1])
        yield


@pytest.fixture(scope="module")
def servers(dovecot_factory):
    return (dovecot_factory(users={}, master=MASTER, special_use={"Gesendete Elemente": "\\Sent"}),
            dovecot_factory(users={}, master=MASTER))


def pair(servers, name: str) -> tuple[str, str]:
    """A new user at the source and its account at the target."""
    n = next(_ids)
    source, target = f"{name}{n}", f"t-{name}{n}"
    servers[0].add_user(source, f"{source}-pw")
    servers[1].add_user(target, f"{target}-pw")
    return source, target


def department(tmp_path: Path, servers, users: list[tuple[str, str]], mail: dict | None = None,
               sources: list[dict] | None = None, **extra) -> Path:
    source_server, target_server = servers
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump({
        "name": "postamt", "work_dir": str(tmp_path / "work"),
        "users": [{"source": s, "target": t} for s, t in users],
        "sources": sources or [{"name": "imap", "type": "imap", "host": source_server.host,
                                "port": source_server.port, "security": "none", "master_user": MASTER[0],
                                "password": "env:IMAP_MASTER"}],
        "target": {"type": "localdir", "root": str(tmp_path / "files")},
        "mail_target": {"type": "imap", "host": target_server.host, "port": target_server.port,
                        "security": "none", "master_user": MASTER[0], "password": "env:IMAP_MASTER"},
        **({"mail": mail} if mail is not None else {}), **extra,
    }), encoding="utf-8")
    return path


def run(dept_file: Path, flow: str = "migrate") -> dict:
    from flows import runtime
    from flows.migrate import run_flow
    try:
        return run_flow(flow, dept_file)
    finally:
        runtime.close_all()


def target_counts(server: Dovecot, user: str) -> dict[str, int]:
    """Messages per folder at the server, as STATUS counts them (every folder, empty ones too)."""
    with IMAPClient(server.host, server.port, ssl=False) as c:
        c.login(f"{user}*{MASTER[0]}", MASTER[1])
        return {name: c.folder_status(name, ["MESSAGES"])[b"MESSAGES"]
                for flags, _, name in c.list_folders() if b"\\Noselect" not in flags}


def subscribed(server: Dovecot, user: str) -> set[str]:
    with IMAPClient(server.host, server.port, ssl=False) as c:
        c.login(f"{user}*{MASTER[0]}", MASTER[1])
        return {name for _, _, name in c.list_sub_folders()}


def create_folders(server: Dovecot, user: str, folders: list[str], subscribe: bool = True) -> None:
    with IMAPClient(server.host, server.port, ssl=False) as c:
        c.login(f"{user}*{MASTER[0]}", MASTER[1])
        for name in folders:
            c.create_folder(name)
            if subscribe:
                c.subscribe_folder(name)


def ledger_rows(dept_file: Path) -> list[Item]:
    from flows import runtime
    try:
        dept = runtime.department(dept_file)
        with runtime.ledger(dept).session() as s:
            return list(s.scalars(select(Item).where(Item.department == dept.name)))
    finally:
        runtime.close_all()


def when(days_ago: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(days=days_ago)).strftime("%d-%b-%Y %H:%M:%S +0000")


# ------------------------------------------------------------------ counts that add up
def test_identical_messages_each_arrive_and_every_count_agrees(servers, tmp_path):
    """Byte-identical messages of a folder each get their own copy (imapsync's --syncduplicates), in
    the folder the target must create and in one that exists; a rerun adds nothing. The target's
    count, the ledger's verified items and the run report's count are one number."""
    source, target = pair(servers, "dup")
    twin, other = message(next(_ids)), message(next(_ids))
    create_folders(servers[1], target, ["Projekte"])
    fill(servers[0], source, {
        "INBOX": [(twin, "(\\Seen)", when(3)), (twin, "(\\Seen)", when(3)), (other, "()", when(2))],
        "Projekte": [(twin, "()", when(3)), (twin, "()", when(3)), (twin, "()", when(3))],
        "Neu": [(other, "()", when(1)), (other, "()", when(1))]})
    dept_file = department(tmp_path, servers, [(source, target)], limits={"chunk_size": 2})
    summary = run(dept_file)
    at_target = target_counts(servers[1], target)
    assert (at_target["INBOX"], at_target["Projekte"], at_target["Neu"]) == (3, 3, 2)
    rows = ledger_rows(dept_file)
    verified = [r for r in rows if r.state == "verified"]
    assert len(verified) == len(rows) == 8 == sum(at_target.values())
    assert len({r.target_ref for r in verified}) == 8            # each its own copy
    assert summary["totals"] == {"verified": 8}
    report = json.loads(Path(summary["report"]).with_suffix(".json").read_text())
    assert report["totals"]["verified"] == sum(at_target.values())
    assert f"| {source} | 0 | 0 | 0 | 0 | 8 | 0 | 0 | 8 |" in Path(summary["report"]).read_text()
    run(dept_file)                                               # nothing new: nothing twice
    assert target_counts(servers[1], target) == at_target


def test_a_lost_ledger_rerun_finds_each_copy_once(servers, tmp_path):
    """The ledger gone (a new work_dir), a run finds every identical copy already there, one per
    source message, and appends none."""
    source, target = pair(servers, "relost")
    twin = message(next(_ids))
    fill(servers[0], source, {"INBOX": [(twin, "()", when(1))] * 3})
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run(department(tmp_path / "a", servers, [(source, target)]))
    assert target_counts(servers[1], target)["INBOX"] == 3
    fill(servers[0], source, {"INBOX": [(twin, "()", when(1))]})        # a fourth at the source
    dept_file = department(tmp_path / "b", servers, [(source, target)])
    run(dept_file)
    assert target_counts(servers[1], target)["INBOX"] == 4
    rows = ledger_rows(dept_file)
    assert [r.state for r in rows] == ["verified"] * 4 and len({r.target_ref for r in rows}) == 4


@pytest.mark.corpus
def test_corpus_files_differing_only_in_line_ends_are_two_messages(servers, tmp_path, corpus):
    """Two corpus .eml that differ only in line endings are one message in IMAP's CRLF form: both
    arrive (the export source, the per-item path), and target, ledger and report agree."""
    pairs = [("attachment_pdf.eml", "attachment_pdf_lf.eml"),
             ("attachment_pdf_non_ascii.eml", "attachment_pdf_non_ascii_lf.eml")]
    folder = corpus / "mail" / "ruby-mail" / "attachment_emails"
    if not all((folder / name).is_file() for p in pairs for name in p):
        pytest.skip(f"the corpus lacks the line-end pairs in {folder}")
    _, target = pair(servers, "eml")
    user_dir = tmp_path / "export" / "eml"
    (user_dir / "Anhänge").mkdir(parents=True)
    for a, b in pairs:
        shutil.copy(folder / a, user_dir / "Anhänge" / a)
        shutil.copy(folder / b, user_dir / "Anhänge" / b)
    assert (user_dir / "Anhänge" / pairs[0][0]).read_bytes() != (user_dir / "Anhänge" / pairs[0][1]).read_bytes()
    dept_file = department(tmp_path, servers, [("eml", target)],
                           sources=[{"name": "export", "type": "export", "root": str(tmp_path / "export")}])
    summary = run(dept_file)
    at_target = target_counts(servers[1], target)
    assert at_target["Anhänge"] == 4
    assert summary["totals"] == {"verified": 4} and len({r.target_ref for r in ledger_rows(dept_file)}) == 4
    run(dept_file)
    assert target_counts(servers[1], target)["Anhänge"] == 4


# ------------------------------------------------------------------ folders
def test_empty_folders_are_created_with_the_sources_subscriptions(servers, tmp_path):
    source, target = pair(servers, "empty")
    create_folders(servers[0], source, ["Leer", "Leer/Unterordner", "Abo-los"], subscribe=False)
    create_folders(servers[0], source, ["Abonniert"], subscribe=True)
    fill(servers[0], source, {"INBOX": [(message(next(_ids)), "()", when(1))]})
    run(department(tmp_path, servers, [(source, target)], mail={"subscriptions": "source"}))
    at_target = target_counts(servers[1], target)
    assert {"Leer", "Leer/Unterordner", "Abo-los", "Abonniert"} <= set(at_target)
    assert at_target["Leer"] == 0 and at_target["INBOX"] == 1
    subs = subscribed(servers[1], target)
    assert "Abonniert" in subs and not {"Leer", "Leer/Unterordner", "Abo-los"} & subs


def test_folders_only_makes_the_tree_and_moves_no_message(servers, tmp_path):
    source, target = pair(servers, "tree")
    fill(servers[0], source, {"INBOX": [(message(next(_ids)), "()", when(1))],
                              "Akten": [(message(next(_ids)), "()", when(1))],
                              "Akten/2023": [(message(next(_ids)), "()", when(1))],
                              "Gesendete Elemente": [(message(next(_ids)), "()", when(1))]})
    dept_file = department(tmp_path, servers, [(source, target)], mail={"folders_only": True})
    summary = run(dept_file)
    at_target = target_counts(servers[1], target)
    assert at_target["Akten"] == at_target["Akten/2023"] == at_target["Sent"] == at_target["INBOX"] == 0
    assert not ledger_rows(dept_file) and summary.get("totals", {}) == {}
    # the messages follow once the option is off, into the folders made before
    dept_file.write_text(dept_file.read_text().replace("folders_only: true", "folders_only: false"))
    run(dept_file)
    assert sum(target_counts(servers[1], target).values()) == 4


# ------------------------------------------------------------------ selection and renames
def test_include_exclude_renames_age_and_size_select_what_moves(servers, tmp_path):
    source, target = pair(servers, "sel")
    big = message(next(_ids), size=40_000)
    fill(servers[0], source, {
        "INBOX": [(message(next(_ids)), "()", when(2)), (message(next(_ids)), "()", when(400)), (big, "()", when(1))],
        "Projekte": [(message(next(_ids)), "()", when(3))],
        "Projekte/Alt": [(message(next(_ids)), "()", when(3))],
        "Projekte/Alt/Tief": [(message(next(_ids)), "()", when(3))],
        "Privat": [(message(next(_ids)), "()", when(3))],
        "Privat/Fotos": [(message(next(_ids)), "()", when(3))],
        "Junk": [(message(next(_ids)), "()", when(3))],
        "Gesendete Elemente": [(message(next(_ids)), "()", when(3))]})
    mail = {"include": ["INBOX", "Projekte", "Gesendete Elemente", "Privat"],
            "exclude": ["Privat", "re:^Projekte/Alt$"],
            "renames": [{"pattern": "^Projekte", "to": "Archiv/Projekte"}],
            "folder_map": {"Gesendete Elemente": "Ausgang"},
            "max_age_days": 30, "max_size": "20KB"}
    dept_file = department(tmp_path, servers, [(source, target)], mail=mail)
    run(dept_file)
    at_target = target_counts(servers[1], target)
    assert at_target["INBOX"] == 1                           # the old one and the big one stay behind
    assert at_target["Archiv/Projekte"] == 1                 # renamed by pattern
    assert "Archiv/Projekte/Alt" not in at_target and "Archiv/Projekte/Alt/Tief" not in at_target   # recursive
    assert at_target["Ausgang"] == 1 and at_target["Sent"] == 0       # f1f2 wins over the special use
    assert not {"Privat", "Privat/Fotos", "Projekte"} & set(at_target) and at_target["Junk"] == 0
    rows = ledger_rows(dept_file)
    assert len(rows) == 3 and {r.state for r in rows} == {"verified"}
    # left out is not deleted at the source: the next run, with everything selected, adds the rest
    dept_file.write_text(yaml.safe_dump({**yaml.safe_load(dept_file.read_text()), "mail": {},
                                         "delete_at_target": True}))
    summary = run(dept_file)
    assert summary["removed_this_run"]["count"] == 0
    assert sum(target_counts(servers[1], target).values()) == 10


def test_minimum_age_and_size(servers, tmp_path):
    source, target = pair(servers, "min")
    fill(servers[0], source, {"INBOX": [(message(next(_ids)), "()", when(1)),
                                        (message(next(_ids)), "()", when(100)),
                                        (message(next(_ids), size=30_000), "()", when(100))]})
    run(department(tmp_path, servers, [(source, target)], mail={"min_age_days": 10, "min_size": "10KB"}))
    assert target_counts(servers[1], target)["INBOX"] == 1


def test_a_dry_run_lists_each_folder_and_moves_nothing(servers, tmp_path):
    source, target = pair(servers, "dry")
    fill(servers[0], source, {"INBOX": [(message(next(_ids)), "()", when(1)), (message(next(_ids)), "()", when(90))],
                              "Projekte": [(message(next(_ids), size=5000), "()", when(1))],
                              "Junk": [(message(next(_ids)), "()", when(1))]})
    create_folders(servers[0], source, ["Leer"])
    dept_file = department(tmp_path, servers, [(source, target)],
                           mail={"dry_run": True, "exclude": ["Junk"], "max_age_days": 30,
                                 "renames": [{"pattern": "^Projekte$", "to": "Ablage"}]})
    result = run(dept_file)
    assert result["dry_run"] is True
    at_target = target_counts(servers[1], target)
    assert not {"Projekte", "Ablage", "Leer"} & set(at_target) and sum(at_target.values()) == 0
    assert not ledger_rows(dept_file)
    rows = {r["folder"]: r for r in result["mail"]}
    assert (rows["INBOX"]["messages"], rows["INBOX"]["selected_messages"]) == (2, 1)
    assert (rows["Junk"]["messages"], rows["Junk"]["selected_messages"]) == (1, 0)
    assert rows["Leer"]["messages"] == 0
    assert rows["Projekte"]["target_folder"] == "Ablage" and rows["Projekte"]["selected_bytes"] > 5000
    assert rows["Projekte"]["bytes"] == rows["Projekte"]["selected_bytes"]
    markdown = Path(result["markdown"]).read_text()
    assert "dry run: nothing moved" in markdown and "| Ablage |" in markdown


def test_assess_counts_mail_per_folder_without_moving_it(servers, tmp_path):
    source, target = pair(servers, "ass")
    fill(servers[0], source, {"INBOX": [(message(next(_ids), size=100_000), "()", when(1))] * 3,
                              "Akten/2024": [(message(next(_ids)), "()", when(1))]})
    dept_file = department(tmp_path, servers, [(source, target)])
    result = run(dept_file, "assess")
    rows = {r["folder"]: r for r in result["mail"]}
    with IMAPClient(servers[0].host, servers[0].port, ssl=False) as c:
        c.login(f"{source}*{MASTER[0]}", MASTER[1])
        c.select_folder("INBOX", readonly=True)
        inbox_bytes = sum(d[b"RFC822.SIZE"] for d in c.fetch(c.search("ALL"), ["RFC822.SIZE"]).values())
    assert (rows["INBOX"]["messages"], rows["INBOX"]["bytes"]) == (3, inbox_bytes)
    assert rows["Akten/2024"]["messages"] == 1 and result["mail_bytes"] > 300_000
    assert "## Mail" in Path(result["markdown"]).read_text()
    assert not ledger_rows(dept_file)


# ------------------------------------------------------------------ bandwidth
def test_the_bandwidth_of_a_source_host_is_kept(servers, tmp_path):
    """4 messages of ~60 kB at 100 kB/s: reading them cannot take less than the budget allows."""
    from sources.imap import ImapMailboxes
    from core.department import ImapSource
    source, _ = pair(servers, "bw")
    fill(servers[0], source, {"INBOX": [(message(next(_ids), size=60_000), "()", when(1)) for _ in range(4)]})
    rate = 100_000 + next(_ids)                  # a budget of its own (budgets are per host and rate)
    cfg = ImapSource(name="imap", host=servers[0].host, port=servers[0].port, security="none",
                     master_user=MASTER[0], password="env:IMAP_MASTER", bandwidth=rate)
    mailboxes = ImapMailboxes(cfg)
    try:
        refs = list(mailboxes.discover(source, source))
        started = time.monotonic()
        got = [len(data) for _, data in mailboxes.fetch_messages(source, refs, batch_count=1)]
        elapsed = time.monotonic() - started
    finally:
        mailboxes.close()
    # the first read goes at once, each later one waits for the bytes before it
    assert len(got) == 4 and elapsed >= sum(got[:-1]) / rate


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("options, words", [
    ({"exclude": ["re:(unclosed"]}, "not a regular expression"),
    ({"renames": [{"pattern": "[", "to": "x"}]}, "not a regular expression"),
    ({"min_age_days": 30, "max_age_days": 7}, "min_age_days"),
    ({"min_size": "2MB", "max_size": "1MB"}, "min_size"),
    ({"max_size": "lots"}, "max_size"),
    ({"include": ["/"]}, "empty folder name"),
    ({"subscriptions": "some"}, "subscriptions"),
    ({"maxage": 3}, "maxage"),
])
def test_mail_options_are_validated(tmp_path, options, words):
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "work_dir": str(tmp_path), "users": [{"source": "a", "target": "a"}],
                                    "sources": [{"name": "e", "type": "export", "root": str(tmp_path)}],
                                    "target": {"type": "localdir", "root": str(tmp_path)}, "mail": options}))
    with pytest.raises(ConfigError) as info:
        load_department(path)
    assert words in str(info.value)


def test_selection_matches_names_patterns_and_sub_folders():
    sel = MailSelection(MailOptions(include=["INBOX", "Projekte/*"], exclude=["re:(?i)privat"]))
    assert sel.folder_taken("INBOX") and sel.folder_taken("inbox/Unter")
    assert sel.folder_taken("Projekte/A") and sel.folder_taken("Projekte/A/B") and not sel.folder_taken("Projekte")
    assert not sel.folder_taken("Projekte/Privat") and not sel.folder_taken("Sonstiges")
    ren = MailSelection(MailOptions(renames=[{"pattern": r"^Archiv/(\d+)$", "to": r"Alt/\1"},
                                             {"pattern": "^Archiv", "to": "Alt"}]))
    assert ren.target_folder("Archiv/2020") == "Alt/2020" and ren.target_folder("Archiv/x") == "Alt/x"
    assert ren.target_folder("INBOX") is None


# ------------------------------------------------------------------ what the run says
def test_a_full_target_mailbox_is_reported_once_per_run(servers, tmp_path, caplog):
    """Four chunks of one user hit the quota side by side: the warning is said once."""
    import logging
    source, _ = pair(servers, "quota")
    fill(servers[0], source, {"INBOX": [(message(next(_ids), size=60_000), "()", when(1)) for _ in range(8)]})
    with Dovecot(users={"t-quota": "t-quota-pw"}, master=MASTER, tls=False, quota_kb=40) as small:
        dept_file = department(tmp_path, (servers[0], small), [(source, "t-quota")], limits={"chunk_size": 2})
        with caplog.at_level(logging.WARNING, logger="umstieg"):
            summary = run(dept_file)
    said = [r for r in caplog.records if "stops" in r.getMessage() and "full" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert "t-quota" in str(summary["stopped_users"])


def test_the_deleted_at_the_source_table_names_each_message(servers, tmp_path):
    source, target = pair(servers, "gone")
    first, second = message(next(_ids)), message(next(_ids))
    fill(servers[0], source, {"INBOX": [(first, "()", when(1)), (second, "()", when(1))]})
    dept_file = department(tmp_path, servers, [(source, target)])
    run(dept_file)
    with IMAPClient(servers[0].host, servers[0].port, ssl=False) as c:       # the second is deleted at the source
        c.login(f"{source}*{MASTER[0]}", MASTER[1])
        c.select_folder("INBOX")
        c.delete_messages([max(c.search("ALL"))])
        c.expunge()
    summary = run(dept_file)
    report = Path(summary["report"]).read_text()
    mid = second.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode()
    line = next(row for row in report.splitlines() if mid in row)
    assert "Grüße" in line and "| INBOX |" in line and "left at the target" in line
    assert first.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode() not in report


# ------------------------------------------------------------------ assess: other mail sources
def _assess(tmp_path: Path, source: dict, users: list[dict]) -> dict:
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump({"name": "amt", "work_dir": str(tmp_path / "work"), "users": users,
                                    "sources": [source], "target": {"type": "localdir", "root": str(tmp_path / "f")}}))
    return run(path, "assess")


def test_assess_counts_mail_per_folder_from_graph(tmp_path, monkeypatch):
    """Microsoft 365: totalItemCount per folder and the messages' PidTagMessageSize, nothing downloaded."""
    from servers.graph import GraphTestServer
    monkeypatch.setenv("GRAPH_TEST_SECRET", "m365-secret-Qw3")
    with GraphTestServer(tmp_path, client_secret="m365-secret-Qw3", page_size=3) as server:
        box = server.add_mailbox("anna@contoso.example")
        projects = server.add_mail_folder(box, "Projekte", box.well_known["inbox"])
        server.add_mail_folder(box, "Leer")
        mimes = [message(next(_ids), size=n) for n in (0, 2000, 9000, 500)]
        for data in mimes[:3]:
            server.put_message(box, box.well_known["inbox"], data)
        server.put_message(box, projects["id"], mimes[3])
        source = {"name": "exo", "type": "m365", "tenant_id": server.tenant, "client_id": server.client_id,
                  "client_secret": "env:GRAPH_TEST_SECRET", "authority": server.authority,
                  "graph_url": server.graph_url, "ca_file": str(server.ca_file), "calendars": False,
                  "contacts": False}
        result = _assess(tmp_path, source, [{"source": "anna", "target": "anna",
                                             "folders": {"exo": "anna@contoso.example"}}])
        assert server.log and not [path for _, path, _ in server.log if path.endswith("$value")]   # nothing read
    rows = {r["folder"]: r for r in result["mail"]}
    assert (rows["INBOX"]["messages"], rows["INBOX"]["bytes"]) == (3, sum(map(len, mimes[:3])))
    assert (rows["INBOX/Projekte"]["messages"], rows["INBOX/Projekte"]["bytes"]) == (1, len(mimes[3]))
    assert rows["Leer"]["messages"] == 0


def test_assess_counts_mail_per_folder_from_ews(tmp_path, monkeypatch):
    from exchangelib.protocol import Protocol
    from servers.ews import EwsTestServer
    monkeypatch.setenv("EWS_TEST_PASSWORD", "Pa55-w0rd-EWS-svc")
    Protocol.clear_cache()
    try:
        with EwsTestServer(users={"svc": "Pa55-w0rd-EWS-svc"}, impersonation={"svc": {"anna@example.org"}}) as server:
            mb = server.mailbox("anna@example.org")
            mimes = [message(next(_ids), size=n) for n in (0, 3000, 700)]
            mb.add_message(mimes[0])
            mb.add_message(mimes[1])
            mb.add_message(mimes[2], folder=mb.add_folder("Ablage 2025"))
            mb.add_folder("Leer")
            source = {"name": "exchange", "type": "ews", "url": server.url, "username": "svc",
                      "password": "env:EWS_TEST_PASSWORD", "auth": "basic", "calendars": False, "contacts": False}
            if server.ca_file is not None:
                source["ca_file"] = str(server.ca_file)
            result = _assess(tmp_path, source, [{"source": "anna", "target": "anna",
                                                 "folders": {"exchange": "anna@example.org"}}])
            assert "SyncFolderItems" in server.log and "GetItem" not in server.log      # no message read
    finally:
        Protocol.clear_cache()
    rows = {r["folder"]: r for r in result["mail"]}
    inbox = next(r for f, r in rows.items() if f.lower() in ("inbox", "posteingang"))
    assert inbox["messages"] == 2 and inbox["bytes"] >= len(mimes[0]) + len(mimes[1])
    assert rows["Ablage 2025"]["messages"] == 1 and rows["Leer"]["messages"] == 0


def test_assess_counts_mail_per_folder_from_export_files(tmp_path):
    user = tmp_path / "export" / "anna"
    (user / "Akten").mkdir(parents=True)
    first, second = message(next(_ids)), message(next(_ids), size=4000)
    (user / "eins.eml").write_bytes(first)
    (user / "Akten" / "zwei.eml").write_bytes(second)
    result = _assess(tmp_path, {"name": "export", "type": "export", "root": str(tmp_path / "export")},
                     [{"source": "anna", "target": "anna"}])
    rows = {r["folder"]: r for r in result["mail"]}
    assert (rows["INBOX"]["messages"], rows["INBOX"]["bytes"]) == (1, len(first))
    assert (rows["Akten"]["messages"], rows["Akten"]["bytes"]) == (1, len(second))
    assert result["mail_bytes"] == len(first) + len(second)


def test_the_commands_show_mail_per_folder_and_a_dry_run_moves_nothing(servers, tmp_path):
    """`umstieg assess` says how much mail there is; `umstieg run` with mail.dry_run lists each
    folder with what would move, and exits without moving anything."""
    import os
    import subprocess
    import sys
    source, target = pair(servers, "cli")
    fill(servers[0], source, {"INBOX": [(message(next(_ids), size=200_000), "()", when(1))] * 2,
                              "Junk": [(message(next(_ids)), "()", when(1))]})
    dept_file = department(tmp_path, servers, [(source, target)], mail={"dry_run": True, "exclude": ["Junk"]})
    env = {**os.environ, "UMSTIEG_RUNTIME_DIR": str(tmp_path / "rt"), "COLUMNS": "200"}
    env.pop("PREFECT_API_URL", None)
    assess = subprocess.run([sys.executable, "-m", "umstieg", "assess", str(dept_file)], capture_output=True,
                            text=True, timeout=300, env=env)
    assert assess.returncode == 0, assess.stderr
    assert "mail: 3 message(s), 0.4 MiB in" in " ".join((assess.stdout + assess.stderr).split())
    dry = subprocess.run([sys.executable, "-m", "umstieg", "run", str(dept_file)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert dry.returncode == 0, dry.stderr
    out = " ".join((dry.stdout + dry.stderr).split())
    assert "selected to move: 2 message(s)" in out and "Dry run (mail.dry_run): nothing moved" in out
    assert "Junk" in out and "INBOX" in out
    assert sum(target_counts(servers[1], target).values()) == 0 and not ledger_rows(dept_file)

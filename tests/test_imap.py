"""Mail over IMAP: a real Dovecot as the source and another as the target.

The source is read through `sources.imap` (EXAMINE, BODY.PEEK), the target written through
`sinks.imap` (APPEND with flags and internal date, folders mapped by special use and by
Exchange's localised names), and both are checked over plain imaplib connections.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from conftest import CORPUS
from core.department import ImapSource, ImapTarget
from core.errors import ConfigError, ItemError, TransientError, UserStopped
from helpers import MASTER, fill, message
from servers.dovecot import Dovecot, dovecot_factory  # noqa: F401  (a fixture)
from sinks.imap import ImapSink, canonical, parse_ref
from sources.imap import ImapMailboxes, UnreadableMessage

USERS = {"anna": "anna-pw-1", "ben": "ben-pw-2"}
#: The source announces special use on German names (as an Exchange with German folders does)
#: and has English Exchange names without any special use.
SOURCE_SPECIAL = {"Gesendete Elemente": "\\Sent", "Entwürfe": "\\Drafts"}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module", autouse=True)
def _secrets():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMAP_MASTER", MASTER[1])
        mp.setenv("IMAP_BAD_MASTER", "not-the-password-Q8")
        for user, pw in USERS.items():
            mp.setenv(f"IMAP_PW_{user.upper()}", pw)
        yield


@pytest.fixture(scope="module")
def servers(dovecot_factory):
    """(source, target) Dovecot servers for the module."""
    return (dovecot_factory(users=dict(USERS), master=MASTER, special_use=SOURCE_SPECIAL, oauth=True),
            dovecot_factory(users=dict(USERS), master=MASTER))


def source_of(server: Dovecot, **overrides) -> ImapMailboxes:
    cfg = {"name": "imap", "host": server.host, "port": server.port, "security": "none",
           "master_user": MASTER[0], "password": "env:IMAP_MASTER", "timeout": 10, **overrides}
    return ImapMailboxes(ImapSource(**cfg))


def sink_of(server: Dovecot, **overrides) -> ImapSink:
    cfg = {"host": server.host, "port": server.port, "security": "none", "master_user": MASTER[0],
           "password": "env:IMAP_MASTER", "timeout": 10, **overrides}
    return ImapSink(ImapTarget(**cfg))


def snapshot(server: Dovecot, user: str) -> dict:
    """Every folder's messages: folder -> sorted [(sha256, flags, internal date as UTC instant)]."""
    from imapclient import IMAPClient
    with IMAPClient(server.host, server.port, ssl=False) as c:
        c.login(user, server.users[user])
        c.normalise_times = False
        out = {}
        for flags, _, name in c.list_folders():
            if {b"\\Noselect", b"\\NonExistent"} & set(flags):
                continue
            c.select_folder(name, readonly=True)
            uids = c.search("ALL")
            data = c.fetch(uids, ["FLAGS", "INTERNALDATE", "BODY.PEEK[]"]) if uids else {}
            out[name] = sorted((sha(d[b"BODY[]"]), tuple(sorted(f.decode() for f in d[b"FLAGS"]
                                                                   if f != b"\\Recent")),
                                d[b"INTERNALDATE"].astimezone(timezone.utc).isoformat())
                               for d in data.values())
        return out


def modseqs(server: Dovecot, user: str) -> dict:
    """HIGHESTMODSEQ of every folder: any flag change at all makes it grow."""
    conn = server.connect(user)
    try:
        out = {}
        for line in conn.list()[1]:
            name = line.decode().rsplit(' "/" ', 1)[1]
            typ, data = conn.status(name, "(HIGHESTMODSEQ MESSAGES)")
            out[name] = data[0].decode()
        return out
    finally:
        conn.logout()


def copy_items(source: ImapMailboxes, sink: ImapSink, owner: str, target_owner: str, work: Path,
               mailbox: str | None = None) -> dict:
    """The per-item path the flow takes: discover, extract, digest, find or put, verify."""
    counts = {"put": 0, "found": 0}
    refs = {}
    for ref in source.discover(owner, mailbox or owner):
        dst = work / ref.key.replace("/", "_")
        size, _ = source.extract(mailbox or owner, ref.location, dst, ref.key)
        assert size == dst.stat().st_size == ref.size
        digest = sink.digest(dst)
        target_ref = sink.find(target_owner, ref.location, digest, ref.meta)
        counts["found" if target_ref else "put"] += 1
        target_ref = target_ref or sink.put(target_owner, ref.location, dst, None, ref.meta)
        assert sink.verify(target_ref, digest) is None
        refs[ref.key] = target_ref
    return {**counts, "refs": refs}


BERLIN = "+0100"
LAYOUT = {
    "INBOX": [(message(1), "(\\Seen)", f"05-Feb-2024 10:00:00 {BERLIN}"),
              (message(2, 3000), "()", "06-Feb-2024 11:30:00 +0000"),
              (message(3, 3_000_000), "(\\Seen \\Flagged)", "07-Feb-2024 08:15:00 -0500"),
              (message(4, message_id=False), "(\\Answered \\Seen $Forwarded)", "08-Feb-2024 09:00:00 +0200")],
    "Gesendete Elemente": [(message(5), "(\\Seen)", "09-Feb-2024 12:00:00 +0100")],
    "Entwürfe": [(message(6), "(\\Draft)", "10-Feb-2024 12:00:00 +0100")],
    "Deleted Items": [(message(7), "(\\Seen \\Deleted)", "11-Feb-2024 12:00:00 +0100")],
    "Junk E-mail": [(message(8), "()", "12-Feb-2024 12:00:00 +0100")],
    "Projekte": [(message(9), "(\\Seen)", "13-Feb-2024 12:00:00 +0100")],
    "Projekte/2024/Bauamt & Co": [(message(10), "(\\Flagged)", "14-Feb-2024 12:00:00 +0100")],
}
#: where each source folder must land at the target (whose special folders are the defaults)
EXPECTED = {"INBOX": "INBOX", "Gesendete Elemente": "Sent", "Entwürfe": "Drafts", "Deleted Items": "Trash",
            "Junk E-mail": "Junk", "Projekte": "Projekte", "Projekte/2024/Bauamt & Co": "Projekte/2024/Bauamt & Co"}


@pytest.fixture(scope="module")
def copied(servers, tmp_path_factory):
    """anna's mailbox filled at the source and copied item by item to the target."""
    source_server, target_server = servers
    fill(source_server, "anna", LAYOUT)
    before, before_modseq = snapshot(source_server, "anna"), modseqs(source_server, "anna")
    source, sink = source_of(source_server), sink_of(target_server)
    result = copy_items(source, sink, "anna", "anna", tmp_path_factory.mktemp("staging"))
    yield {"before": before, "before_modseq": before_modseq, "result": result, "source": source, "sink": sink}
    source.close()
    sink.close()


def test_folders_flags_dates_and_bytes_arrive(servers, copied):
    source_server, target_server = servers
    before, after = copied["before"], snapshot(target_server, "anna")
    assert copied["result"]["put"] == sum(len(v) for v in LAYOUT.values())
    for folder, target_folder in EXPECTED.items():
        assert after[target_folder] == before[folder], folder
    # localised folders were mapped, not copied under their own names
    assert not {"Gesendete Elemente", "Entwürfe", "Deleted Items", "Junk E-mail"} & set(after)
    # the 3 MB message is byte-equal too (not just small ones)
    assert any(len(v) == 4 for v in after.values())
    # created folders are subscribed
    conn = target_server.connect("anna")
    try:
        from imapclient import imap_utf7
        subscribed = {imap_utf7.decode(line.rsplit(b' "/" ', 1)[1].strip(b'"')) for line in conn.lsub()[1]}
    finally:
        conn.logout()
    assert {"Projekte", "Projekte/2024", "Projekte/2024/Bauamt & Co"} <= subscribed


def test_the_source_is_not_changed_by_reading(servers, copied):
    source_server, _ = servers
    assert snapshot(source_server, "anna") == copied["before"]
    assert modseqs(source_server, "anna") == copied["before_modseq"]
    unseen = [m for m in copied["before"]["INBOX"] if "\\Seen" not in m[1]]
    assert unseen, "the test needs unseen messages at the source"


def test_discovery_lists_metadata(servers, copied):
    refs = list(copied["source"].discover("anna", "anna"))
    by_location = {}
    for r in refs:
        by_location.setdefault(r.location, []).append(r)
    assert set(by_location) == set(LAYOUT)
    sent = by_location["Gesendete Elemente"][0]
    assert sent.meta["special_use"] == "\\Sent" and sent.kind.value == "message"
    assert by_location["Deleted Items"][0].meta["special_use"] is None
    inbox = sorted(by_location["INBOX"], key=lambda r: r.meta["internaldate"])
    assert inbox[0].meta["flags"] == ["\\Seen"]
    assert datetime.fromisoformat(inbox[0].meta["internaldate"]) == datetime(2024, 2, 5, 9, 0, tzinfo=timezone.utc)
    assert inbox[0].meta["message_id"].startswith("<") and inbox[3].meta["message_id"] is None
    assert inbox[2].size == inbox[2].meta["size"] > 3_000_000
    owner, folder, uidvalidity, uid = inbox[0].key.rsplit("/", 3)
    assert (owner, folder) == ("anna", "INBOX") and inbox[0].version.startswith(f"{uidvalidity}:{uid}:")


def test_a_rerun_finds_everything_and_duplicates_nothing(servers, copied, tmp_path):
    _, target_server = servers
    before = snapshot(target_server, "anna")
    again = copy_items(copied["source"], copied["sink"], "anna", "anna", tmp_path)
    assert again["put"] == 0 and again["found"] == copied["result"]["put"]
    assert again["refs"] == copied["result"]["refs"]
    assert snapshot(target_server, "anna") == before


def test_a_flag_change_is_a_delta_and_reaches_the_target(servers, tmp_path):
    source_server, target_server = servers
    fill(source_server, "ben", {"INBOX": [(message(40), "()", "01-Mar-2024 10:00:00 +0100")]})
    source, sink = source_of(source_server), sink_of(target_server)
    try:
        first = list(source.discover("ben", "ben"))
        copy_items(source, sink, "ben", "ben", tmp_path)
        conn = source_server.connect("ben")
        conn.select("INBOX")
        conn.store("1", "+FLAGS", "(\\Seen \\Flagged)")
        conn.logout()
        second = list(source.discover("ben", "ben"))
        assert first[0].key == second[0].key and first[0].version != second[0].version
        result = copy_items(source, sink, "ben", "ben", tmp_path)
        assert result["found"] == 1 and result["put"] == 0
        assert [m[1] for m in snapshot(target_server, "ben")["INBOX"]] == [("\\Flagged", "\\Seen")]
    finally:
        source.close()
        sink.close()


def test_a_new_uidvalidity_relists_everything_without_duplicates(servers, copied, tmp_path):
    source_server, target_server = servers
    keys_before = {r.key for r in copied["source"].discover("anna", "anna")}
    target_before = snapshot(target_server, "anna")
    source_server.set_uidvalidity("anna", "INBOX", 4242)
    source = source_of(source_server)
    try:
        refs = list(source.discover("anna", "anna"))
        inbox = [r for r in refs if r.location == "INBOX"]
        assert inbox and all(r.key.split("/")[-2] == "4242" for r in inbox)
        assert not {r.key for r in inbox} & keys_before
        result = copy_items(source, copied["sink"], "anna", "anna", tmp_path)
        assert result["put"] == 0
    finally:
        source.close()
    assert snapshot(target_server, "anna") == target_before


def test_a_stale_key_after_renumbering_is_an_item_error(servers, tmp_path):
    source_server, _ = servers
    fill(source_server, "ben", {"Alt": [(message(50), "()", "01-Mar-2024 10:00:00 +0100")]})
    source = source_of(source_server)
    try:
        ref = next(r for r in source.discover("ben", "ben") if r.location == "Alt")
        source_server.set_uidvalidity("ben", "Alt", 777)
        source.close()
        with pytest.raises(ItemError, match="renumbered"):
            source.extract("ben", ref.location, tmp_path / "m", ref.key)
    finally:
        source.close()


def test_an_expunged_message_is_an_item_error(servers, tmp_path):
    source_server, _ = servers
    kept = message(61)
    fill(source_server, "ben", {"Weg": [(message(60), "()", "01-Mar-2024 10:00:00 +0100"),
                                        (kept, "()", "01-Mar-2024 10:00:00 +0100")]})
    source = source_of(source_server)
    try:
        refs = [r for r in source.discover("ben", "ben") if r.location == "Weg"]
        conn = source_server.connect("ben")
        conn.select("Weg")
        conn.store("1", "+FLAGS", "(\\Deleted)")
        conn.expunge()
        conn.logout()
        with pytest.raises(ItemError, match="vanished"):
            source.extract("ben", "Weg", tmp_path / "gone", refs[0].key)
        size, _ = source.extract("ben", "Weg", tmp_path / "kept", refs[1].key)   # the batch goes on
        assert (tmp_path / "kept").read_bytes() == kept
        assert not (tmp_path / "gone").exists()
    finally:
        source.close()


def test_messages_the_server_cannot_read_are_listed_apart_and_the_rest_of_the_folder_moves(servers, tmp_path):
    """Dovecot ends the connection on any FETCH that reads a message whose file it cannot read
    ("Disconnected: FETCH failed"). Discovery finds those messages among the others (asking again
    in halves, on new connections): they are listed, typed unreadable, and fail alone when
    extracted; every other message of the folder is listed and read, by `extract` and by the fast
    path, which leaves the unreadable ones to `extract`. Readable again, such a message is a delta.

    A mailbox of its own: Dovecot gives a new folder the caching decisions of the user's INBOX, and
    with headers cached at saving, listing would not read the files at all."""
    source_server, _ = servers
    user = "erna"                          # a mailbox of its own (see above)
    source_server.add_user(user, "erna-pw-5")
    bodies = {n: message(300 + n) for n in range(9)}
    fill(source_server, user, {"Beschaedigt": [(bodies[n], "()", "15-Mar-2024 10:00:00 +0100") for n in bodies]})
    maildir = source_server.base / "mail" / user / "Maildir" / ".Beschaedigt"
    files = {f: f.read_bytes() for sub in ("cur", "new") for f in (maildir / sub).iterdir()}
    spoiled = [next(f for f, data in files.items() if f"Nachricht {300 + n} ".encode() in data) for n in (2, 6)]
    modes = {f: f.stat().st_mode for f in spoiled}
    for f in spoiled:
        os.chmod(f, 0)                    # unreadable for Dovecot (which runs as nobody), as a damaged file is
    readable = sorted(bodies[n] for n in bodies if n not in (2, 6))
    source = source_of(source_server)
    try:
        refs = [r for r in source.discover(user, user) if r.location == "Beschaedigt"]
        assert len(refs) == 9 and len({r.key for r in refs}) == 9
        bad = [r for r in refs if (r.meta or {}).get("unreadable")]
        good = [r for r in refs if r not in bad]
        assert len(bad) == 2
        for ref in bad:
            assert ref.version.endswith(":unreadable") and ref.meta["unreadable"] == "unreadable_message"
            assert "ends the connection whenever message" in ref.meta["error"] and "Beschaedigt" in ref.meta["error"]
        for i, ref in enumerate(bad):
            with pytest.raises(UnreadableMessage, match="ends the connection") as failed:
                source.extract(user, ref.location, tmp_path / f"bad{i}", ref.key)
            assert failed.value.reason == "unreadable_message" and not (tmp_path / f"bad{i}").exists()
        got = []
        for i, ref in enumerate(good):                       # the batch goes on
            source.extract(user, ref.location, tmp_path / f"good{i}", ref.key)
            got.append((tmp_path / f"good{i}").read_bytes())
        assert sorted(got) == readable
        fetched = list(source.fetch_messages(user, refs))
        assert {r.key for r, _ in fetched} == {r.key for r in good} and sorted(d for _, d in fetched) == readable
    finally:
        for f, mode in modes.items():
            os.chmod(f, mode)
    try:
        again = {r.key: r for r in source.discover(user, user) if r.location == "Beschaedigt"}
        assert set(again) == {r.key for r in refs} and not [r for r in again.values() if r.meta.get("unreadable")]
        assert all(again[r.key].version != r.version for r in bad)          # readable now: a delta
        assert all(again[r.key].version == r.version for r in good)
    finally:
        source.close()


def test_a_missing_target_account_is_named_and_stops_only_that_user(servers):
    _, target_server = servers
    sink = sink_of(target_server)
    try:
        assert sink.check(["anna", "ghost"]) == []
        problems = sink.user_problems(["anna", "ghost", "ben"])
        assert list(problems) == ["ghost"] and "ghost" in problems["ghost"]
    finally:
        sink.close()


def test_a_wrong_master_password_is_a_check_problem_without_the_password(servers):
    source_server, target_server = servers
    sink = sink_of(target_server, password="env:IMAP_BAD_MASTER")
    problems = sink.check(["anna", "ben"])
    assert len(problems) == 1 and "master user 'migrator'" in problems[0]
    assert "not-the-password-Q8" not in problems[0] and MASTER[1] not in problems[0]
    source = source_of(source_server, password="env:IMAP_BAD_MASTER")
    problems = source.check(["anna"])
    assert len(problems) == 1 and "anna*migrator" in problems[0] and "not-the-password-Q8" not in problems[0]
    with pytest.raises(ConfigError):                   # the master's own password: not one user's problem
        list(source.discover("anna", "anna"))
    ghost = source_of(source_server)
    with pytest.raises(UserStopped):                   # one mailbox refused mid-run: that user waits
        list(ghost.discover("ghost", "ghost"))


def test_users_own_passwords_work_without_a_master(servers):
    source_server, _ = servers
    source = source_of(source_server, master_user=None, password=None, passwords={"ben": "env:IMAP_PW_BEN"})
    try:
        assert source.check(["ben"]) == []
        assert "no credentials" in source.check(["anna"])[0]
    finally:
        source.close()


def test_xoauth2_with_an_access_token(servers, monkeypatch):
    source_server, _ = servers
    monkeypatch.setenv("TOKEN_BEN", source_server.token("ben"))
    monkeypatch.setenv("TOKEN_STALE", source_server.token("anna", key=b"not-the-signing-key-0123456789ab"))
    source = source_of(source_server, master_user=None, password=None,
                       oauth_tokens={"ben": "env:TOKEN_BEN", "anna": "env:TOKEN_STALE"})
    try:
        assert source.check(["ben"]) == []
        assert "INBOX" in source.folders("ben")
        list(source.discover("ben", "ben"))
        problems = source.check(["anna"])
        assert len(problems) == 1 and "'anna'" in problems[0]
        assert os.environ["TOKEN_STALE"] not in problems[0] and "TOKEN_STALE" not in problems[0]
    finally:
        source.close()


def test_tls_with_a_ca_file_and_an_untrusted_certificate(servers):
    source_server, _ = servers
    trusted = source_of(source_server, security="ssl", port=source_server.ssl_port, ca_file=source_server.ca_file)
    try:
        assert trusted.check(["anna"]) == []
        assert "INBOX" in trusted.folders("anna")
        list(trusted.discover("anna", "anna"))
    finally:
        trusted.close()
    untrusted = source_of(source_server, security="ssl", port=source_server.ssl_port)
    problems = untrusted.check(["anna"])
    assert len(problems) == 1 and "ca_file" in problems[0]


def test_a_thread_keeps_few_connections_open(servers, monkeypatch):
    import sources.imap
    monkeypatch.setattr(sources.imap, "MAX_OPEN_PER_THREAD", 1)
    source_server, _ = servers
    source = source_of(source_server)
    try:
        source.folders("anna")
        source.folders("ben")                  # anna's connection is closed: one user at a time
        assert len(source._all) == 1
        assert "INBOX" in source.folders("anna", refresh=True)
    finally:
        source.close()
    assert source._all == []


def test_an_unreachable_server_is_transient(tmp_path):
    from servers.dovecot import free_port
    source = ImapMailboxes(ImapSource(name="imap", host="127.0.0.1", port=free_port(), security="none",
                                      master_user="m", password="env:IMAP_MASTER", timeout=3))
    with pytest.raises(TransientError):
        source.extract("anna", "INBOX", tmp_path / "x", "anna/INBOX/1/1")
    assert "cannot connect" in source.check(["anna"])[0]


def test_a_target_without_special_use_gets_the_configured_names(tmp_path):
    with Dovecot(users={"anna": "anna-pw-1"}, master=MASTER, special_use={}, tls=False) as plain:
        sink = sink_of(plain, folder_names={"Sent": "Gesendet", "Trash": "Papierkorb"})
        try:
            src = tmp_path / "m.eml"
            src.write_bytes(message(70))
            ref = sink.put("anna", "Sent Items", src, None, {"flags": ["\\Seen"], "special_use": None})
            assert parse_ref(ref)[1] == "Gesendet"
            ref = sink.put("anna", "Deleted Items/Alt", src, None, {"flags": []})
            assert parse_ref(ref)[1] == "Papierkorb/Alt"
            ref = sink.put("anna", "Anything", src, None, {"flags": [], "special_use": "\\Junk"})
            assert parse_ref(ref)[1] == "Junk"                         # neither announced nor configured
            assert set(snapshot(plain, "anna")) >= {"Gesendet", "Papierkorb/Alt", "Junk", "INBOX"}
        finally:
            sink.close()


def test_a_full_target_mailbox_stops_that_user(tmp_path):
    from sinks.imap import MailboxFull
    with Dovecot(users={"anna": "anna-pw-1"}, master=MASTER, tls=False, quota_kb=200) as small:
        sink = sink_of(small)
        try:
            src = tmp_path / "big.eml"
            src.write_bytes(message(90, 120_000))
            sink.put("anna", "INBOX", src, None, {"flags": []})
            with pytest.raises(MailboxFull) as caught:
                sink.put("anna", "INBOX", src, None, {"flags": []})
            assert caught.value.owner == "anna" and "quota" in str(caught.value)
        finally:
            sink.close()


def test_without_appenduid_the_message_is_found_by_message_id(servers, dovecot_factory, tmp_path):
    """A target that does not announce UIDPLUS (no APPENDUID to trust): each message put is found
    again in its folder, by its Message-ID or, without one, by its size, and its reference names
    the very message the server stored."""
    conn = servers[1].connect("ben")
    try:
        capabilities = conn.capability()[1][0].decode().split()
    finally:
        conn.logout()
    assert "UIDPLUS" in capabilities
    target = dovecot_factory(users=dict(USERS), master=MASTER,
                             imap_capability=" ".join(c for c in capabilities if c != "UIDPLUS"))
    conn = target.connect("ben")
    try:
        assert "UIDPLUS" not in conn.capability()[1][0].decode().split()
    finally:
        conn.logout()
    sink = sink_of(target)
    try:
        sent = {"with-id": message(95), "without-id": message(96, 900, message_id=False)}
        refs = {}
        for name, data in sent.items():
            src = tmp_path / f"{name}.eml"
            src.write_bytes(data)
            refs[name] = sink.put("ben", "Suche", src, None, {"flags": ["\\Seen"]})
            assert sink.verify(refs[name], sink.digest(src)) is None
        assert len(set(refs.values())) == 2
        assert sorted(h for h, _, _ in snapshot(target, "ben")["Suche"]) \
            == sorted(sha(canonical(m)) for m in sent.values())
        # a stream of messages: no MULTIAPPEND (its UIDs could not be learnt), each appended once and found
        batch = {f"k{i}": message(97 + i) for i in range(3)}
        got = list(sink.append_stream("ben", ((k, "Stapel", {"flags": []}, data) for k, data in batch.items())))
        assert sorted(a.key for a in got) == sorted(batch) and all(a.error is None and a.ref for a in got)
        for a in got:
            assert sink.verify(a.ref, sha(canonical(batch[a.key]))) is None
        assert len(snapshot(target, "ben")["Stapel"]) == 3
    finally:
        sink.close()


def test_bare_lf_files_arrive_as_crlf_and_verify(servers, tmp_path):
    _, target_server = servers
    sink = sink_of(target_server)
    try:
        src = tmp_path / "lf.eml"
        src.write_bytes(message(80, 500, lf=True, message_id=False))
        digest = sink.digest(src)
        assert digest == sha(canonical(src.read_bytes())) != sha(src.read_bytes())
        ref = sink.put("ben", "Import", src, 1_700_000_000.0, {"flags": ["\\Seen"]})
        assert sink.verify(ref, digest) is None
        assert sink.verify(ref, sha(b"other")) is not None
        # found again without a Message-ID: by the file's size (LF) and the internal date, then sha256
        meta = {"size": src.stat().st_size, "flags": ["\\Seen"],
                "internaldate": datetime.fromtimestamp(1_700_000_000, tz=timezone.utc).isoformat()}
        assert sink.find("ben", "Import", digest, meta) == ref
        other = tmp_path / "other.eml"
        other.write_bytes(message(81, 300))
        ref2 = sink.put("ben", "Import", other, None, {"flags": []})
        assert sink.verify_many([(ref, digest), (ref2, sink.digest(other))]) == {ref: None, ref2: None}
        sink.remove(ref)
        assert "missing" in sink.verify(ref, digest)
        many = sink.verify_many([(ref, digest), (ref2, sha(b"other"))])      # together, as the flow reads back
        assert "missing" in many[ref] and "differs" in many[ref2]
    finally:
        sink.close()


def test_the_fast_path_copies_a_mailbox_and_recognises_it_again(servers, tmp_path):
    source_server, target_server = servers
    layout = {"Stapel": [(message(100 + i, 2000 * (i % 5)), "(\\Seen)" if i % 3 else "()",
                          "15-Mar-2024 10:00:00 +0100") for i in range(30)]}
    fill(source_server, "ben", layout)
    source, sink = source_of(source_server), sink_of(target_server)
    try:
        refs = [r for r in source.discover("ben", "ben") if r.location == "Stapel"]
        stream = ((ref.key, ref.location, ref.meta, data) for ref, data in source.fetch_messages("ben", refs))
        results = list(sink.append_stream("ben", stream, workers=3))
        assert len(results) == 30 and not [r for r in results if r.error] and not [r for r in results if r.found]
        assert snapshot(target_server, "ben")["Stapel"] == snapshot(source_server, "ben")["Stapel"]
        for r in results[:5]:
            assert sink.verify(r.ref, r.digest) is None
        sink.close()
        stream = ((ref.key, ref.location, ref.meta, data) for ref, data in source.fetch_messages("ben", refs))
        again = list(sink_of(target_server).append_stream("ben", stream, workers=2))
        assert all(r.found for r in again) and {r.ref for r in again} == {r.ref for r in results}
        assert len(snapshot(target_server, "ben")["Stapel"]) == 30
    finally:
        source.close()
        sink.close()


def _corpus_emls() -> list[Path]:
    if not CORPUS.is_dir():
        return []
    return sorted(p for p in (CORPUS / "mail").rglob("*.eml"))


@pytest.mark.corpus
def test_corpus_messages_arrive_byte_equal(servers, corpus):
    _, target_server = servers
    files = _corpus_emls()
    assert files, "the corpus has no .eml files"
    sink = sink_of(target_server)
    failed = []
    try:
        for path in files:
            ref = sink.put("ben", "Korpus", path, None, {"flags": ["\\Seen"]})
            problem = sink.verify(ref, sink.digest(path))
            if problem:
                failed.append(f"{path.name}: {problem}")
    finally:
        sink.close()
    assert not failed, failed
    # what arrived is exactly the file (in IMAP's CRLF form) -- checked independently of the sink
    arrived = {h for h, _, _ in snapshot(target_server, "ben")["Korpus"]}
    assert {sha(canonical(p.read_bytes())) for p in files} <= arrived
    crlf_files = [p for p in files if canonical(p.read_bytes()) == p.read_bytes()]
    assert {sha(p.read_bytes()) for p in crlf_files} <= arrived


# ------------------------------------------------------------------ the department flow
def test_a_department_moves_mail_end_to_end(servers, tmp_path):
    """discover + process_chunk, as flows/migrate runs them, with an imap source and mail_target."""
    from flows import runtime
    from flows.discovery import discover
    from flows.steps import process_chunk
    from core.ledger import Item
    from sqlalchemy import select
    source_server, target_server = servers
    source_server.add_user("carla", "carla-pw-3")
    source_server.add_user("dora", "dora-pw-4")
    target_server.add_user("t-carla", "t-carla-pw-3")
    fill(source_server, "carla", {"INBOX": [(message(200 + i), "(\\Seen)", "01-Apr-2024 10:00:00 +0200")
                                            for i in range(5)],
                                  "Sent Items": [(message(210), "(\\Seen)", "02-Apr-2024 10:00:00 +0200")]})
    dept_file = tmp_path / "department.yaml"
    dept_file.write_text(yaml.safe_dump({
        "name": "mailamt", "work_dir": str(tmp_path / "work"),
        "users": [{"source": "carla", "target": "t-carla"}, {"source": "dora", "target": "t-dora"}],
        "sources": [{"name": "exchange-imap", "type": "imap", "host": source_server.host,
                     "port": source_server.port, "security": "none", "master_user": MASTER[0],
                     "password": "env:IMAP_MASTER"}],
        "target": {"type": "localdir", "root": str(tmp_path / "files")},
        "mail_target": {"type": "imap", "host": target_server.host, "port": target_server.ssl_port,
                        "security": "ssl", "ca_file": str(target_server.ca_file), "master_user": MASTER[0],
                        "password": "env:IMAP_MASTER"},
    }), encoding="utf-8")
    try:
        dept = runtime.department(dept_file)
        from flows.migrate import check_department, stopped_users
        assert check_department(dept) == []
        stopped = stopped_users(dept)                  # t-dora has no mailbox at the target: she waits
        assert list(stopped) == ["dora"] and "t-dora" in stopped["dora"] and MASTER[1] not in stopped["dora"]
        ledger = runtime.ledger(dept)
        for attempt in range(2):                           # the second run finds nothing to do
            run = ledger.start_run(dept.name, "migrate")
            found = discover(dept, ledger, run, owners=["carla"])
            if attempt == 0:
                assert found.new["carla"] == 6
                counts = process_chunk(str(dept_file), run, "carla", 1, found.todo["carla"])
                assert counts == {"verified": 6}
            else:
                assert found.unchanged["carla"] == 6 and not found.todo
            ledger.finish_run(run, "completed")
        with ledger.session() as s:
            rows = list(s.scalars(select(Item)))
        assert {parse_ref(r.target_ref)[1] for r in rows} == {"INBOX", "Sent"}
        # moved together (batched fetch and append), never staged one by one, each verified
        assert all("extract" not in (r.seconds or {}) and "verify" in (r.seconds or {}) for r in rows)
        assert all(r.meta["flags"] == ["\\Seen"] for r in rows)
        after = snapshot(target_server, "t-carla")
        assert len(after["INBOX"]) == 5 and len(after["Sent"]) == 1
        assert sorted(after["INBOX"] + after["Sent"]) == sorted(snapshot(source_server, "carla")["INBOX"]
                                                                + snapshot(source_server, "carla")["Sent Items"])
    finally:
        runtime.close_all()


def test_the_migrate_flow_moves_mail_and_lets_a_user_without_mailbox_wait(servers, tmp_path):
    """The Prefect flow itself (ephemeral server): checks, discovery, chunks, report, delta rerun."""
    from flows import runtime
    from flows.migrate import migrate
    source_server, target_server = servers
    source_server.add_user("erik", "erik-pw-5")
    source_server.add_user("fritz", "fritz-pw-6")
    target_server.add_user("t-erik", "t-erik-pw-5")
    fill(source_server, "erik", {"INBOX": [(message(300 + i), "(\\Seen)", "03-Apr-2024 10:00:00 +0200")
                                           for i in range(3)],
                                 "Gelöschte Elemente": [(message(310), "(\\Seen \\Deleted)",
                                                         "04-Apr-2024 10:00:00 +0200")]})
    fill(source_server, "fritz", {"INBOX": [(message(320), "()", "05-Apr-2024 10:00:00 +0200")]})
    dept_file = tmp_path / "department.yaml"
    dept_file.write_text(yaml.safe_dump({
        "name": "postamt", "work_dir": str(tmp_path / "work"),
        "users": [{"source": "erik", "target": "t-erik"}, {"source": "fritz", "target": "t-fritz"}],
        "sources": [{"name": "imap", "type": "imap", "host": source_server.host, "port": source_server.port,
                     "security": "none", "master_user": MASTER[0], "password": "env:IMAP_MASTER"}],
        "target": {"type": "localdir", "root": str(tmp_path / "files")},
        "mail_target": {"type": "imap", "host": target_server.host, "port": target_server.port,
                        "security": "none", "master_user": MASTER[0], "password": "env:IMAP_MASTER"},
        "limits": {"chunk_size": 2},
    }), encoding="utf-8")
    try:
        summary = migrate(str(dept_file))
        assert list(summary["stopped_users"]) == ["fritz"]
        after = snapshot(target_server, "t-erik")
        assert len(after["INBOX"]) == 3 and len(after["Trash"]) == 1
        assert after["Trash"][0][1] == ("\\Deleted", "\\Seen")
        before_rerun = snapshot(target_server, "t-erik")
        migrate(str(dept_file))                        # the delta pass: nothing new, nothing twice
        assert snapshot(target_server, "t-erik") == before_rerun
    finally:
        runtime.close_all()

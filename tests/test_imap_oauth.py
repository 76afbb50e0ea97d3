"""IMAP source with tokens the application gets itself (`oauth`: OAuth 2.0 client credentials).

A real Dovecot checks the JWTs (XOAUTH2, `Dovecot(oauth=True)`); a test identity platform
(`servers.oauth`) issues them through the real msal, short-lived, so that logins after a token's
death must use a new one. Every behaviour is checked both with `authority` (OpenID metadata,
msal's ConfidentialClientApplication) and with `token_url` (a plain token endpoint).
"""

from __future__ import annotations

import hashlib
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import make_msgid

import pytest
from pydantic import ValidationError

from core.department import ImapSource, ImapTarget
from core.errors import ConfigError, TransientError, UserStopped
from clients.imap import TokenRefused
from servers.dovecot import Dovecot, dovecot_factory, free_port  # noqa: F401  (a fixture)
from servers.oauth import OAuthTestServer
from sinks.imap import ImapSink
from sources.imap import ImapMailboxes

MAILBOX = "ben"
USERS = {"anna": "anna-pw-1", "ben": "ben-pw-2"}
SECRET_ENV = "IMAP_APP_SECRET"
WAYS = ["authority", "token_url"]
TARGET_PW = "target-pw-1"


def message(n: int, size: int = 0) -> bytes:
    head = [f"Message-ID: {make_msgid(f'o{n}', 'amt.example')}", f"From: Absender {n} <a{n}@amt.example>",
            "To: ben@amt.example", f"Subject: Bescheid {n}", "Date: Tue, 06 Feb 2024 10:00:00 +0100",
            "MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"]
    body = f"Text {n}\r\n" + "".join(f"Zeile {i:05d} {'y' * 60}\r\n" for i in range(size // 75))
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode()


LAYOUT = {"INBOX": [message(i, 1500 * i) for i in range(8)], "Akten": [message(100 + i, 900 * i) for i in range(8)]}


def contents(server: Dovecot, user: str, folder: str) -> list[str]:
    """sha256 of every message of a folder, sorted."""
    conn = server.connect(user)
    try:
        conn.select(f'"{folder}"', readonly=True)
        _, data = conn.uid("FETCH", "1:*", "(BODY.PEEK[])")
        return sorted(hashlib.sha256(part[1]).hexdigest() for part in data if isinstance(part, tuple))
    finally:
        conn.logout()


@pytest.fixture(scope="module")
def servers(dovecot_factory):
    """(source with XOAUTH2 against its own key, target) Dovecots; ben's mailbox filled at the source."""
    source = dovecot_factory(users=dict(USERS), oauth=True, penalty=False)   # refusals answered at once
    target = dovecot_factory(users={**USERS, **{f"copy-{way}": TARGET_PW for way in [*WAYS, "flow"]}})
    conn = source.connect(MAILBOX)
    try:
        for folder, messages in LAYOUT.items():
            if folder != "INBOX":
                conn.create(folder)
            for data in messages:
                assert conn.append(folder, "(\\Seen)", None, data)[0] == "OK"
    finally:
        conn.logout()
    return source, target


@pytest.fixture
def idp(servers, tmp_path, monkeypatch):
    """A test identity platform whose tokens open ben's mailbox at the source; its secret in the env."""
    with OAuthTestServer(tmp_path, servers[0], subject=MAILBOX) as server:
        monkeypatch.setenv(SECRET_ENV, server.client_secret)
        yield server


def oauth_of(idp: OAuthTestServer, way: str, **overrides) -> dict:
    return {way: getattr(idp, way), "client_id": idp.client_id, "client_secret": f"env:{SECRET_ENV}",
            "ca_file": idp.ca_file, **overrides}


def source_of(server: Dovecot, oauth: dict, **overrides) -> ImapMailboxes:
    return ImapMailboxes(ImapSource(name="imap", host=server.host, port=server.port, security="none", timeout=10,
                                    oauth=oauth, **overrides))


def lose_connections(source: ImapMailboxes) -> None:
    """Cut every pooled connection, as a network failure would."""
    for conn in list(source._all):
        conn.client._imap.sock.shutdown(socket.SHUT_RDWR)


def retried(step):
    """What the flows do with a TransientError: try again (once is enough here)."""
    try:
        return step()
    except TransientError:
        return step()


@pytest.mark.parametrize("way", WAYS)
def test_a_long_copy_gets_new_tokens_as_they_expire(servers, idp, way, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    source_server, target_server = servers
    idp.lifetime = 3
    owner = f"copy-{way}"
    monkeypatch.setenv("TARGET_PW", TARGET_PW)
    source = source_of(source_server, oauth_of(idp, way))
    sink = ImapSink(ImapTarget(host=target_server.host, port=target_server.port, security="none", timeout=10,
                               passwords={owner: "env:TARGET_PW"}))
    try:
        refs = list(source.discover(MAILBOX, MAILBOX))
        assert len(refs) == 16
        inbox = [r for r in refs if r.location == "INBOX"]
        stream = ((r.key, r.location, r.meta, data) for r, data in source.fetch_messages(MAILBOX, inbox))
        assert not [r for r in sink.append_stream(owner, stream, workers=2) if r.error]
        before = idp.issued
        assert before >= 1

        time.sleep(idp.lifetime + 1.1)          # every token given out so far has expired
        lose_connections(source)
        akten = [r for r in refs if r.location == "Akten"]

        def copy(ref):                          # a new pooled connection in each of three threads
            dst = tmp_path / ref.key.replace("/", "_")
            retried(lambda: source.extract(MAILBOX, ref.location, dst, ref.key))
            digest = sink.digest(dst)
            target_ref = sink.find(owner, ref.location, digest, ref.meta) or \
                sink.put(owner, ref.location, dst, None, ref.meta)
            assert sink.verify(target_ref, digest) is None

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(copy, akten))
        assert idp.issued > before              # the logins after the expiry had new tokens
        for folder in LAYOUT:
            assert contents(target_server, owner, folder) == contents(source_server, MAILBOX, folder)
        assert not [t for t in idp.tokens if t in caplog.text] and idp.client_secret not in caplog.text
    finally:
        source.close()
        sink.close()


@pytest.mark.parametrize("way", WAYS)
def test_a_refused_cached_token_is_replaced_once_not_forever(servers, idp, way):
    source_server, _ = servers
    idp.lifetime, idp.expires_in = 2, 3600      # tokens die long before they say they will
    source = source_of(source_server, oauth_of(idp, way))
    try:
        assert source.check([MAILBOX]) == [] and idp.issued == 1
        time.sleep(idp.lifetime + 1.1)
        assert source.check([MAILBOX]) == [] and idp.issued == 2      # the cached one refused: one new one

        idp.wrong_key = True                    # from now on every token is refused
        time.sleep(idp.lifetime + 1.1)
        problems = source.check([MAILBOX])
        assert len(problems) == 1 and "refused the login" in problems[0] and f"{MAILBOX!r}" in problems[0]
        assert idp.issued == 3                  # one more try, not a loop
        with pytest.raises(UserStopped):        # during a run: that mailbox's user stops
            source.folders(MAILBOX, refresh=True)
        assert idp.issued == 4
    finally:
        source.close()
    fresh = source_of(source_server, oauth_of(idp, way))
    try:
        assert len(fresh.check([MAILBOX])) == 1
        assert idp.issued == 5                  # a refused token that was just fetched is not retried
    finally:
        fresh.close()


@pytest.mark.parametrize("way", WAYS)
def test_a_wrong_client_secret_is_a_config_error_without_the_secret(servers, idp, way, monkeypatch, caplog):
    source_server, _ = servers
    wrong = "wrong-secret-Zq81-kk"
    monkeypatch.setenv(SECRET_ENV, wrong)
    caplog.set_level(logging.DEBUG)
    source = source_of(source_server, oauth_of(idp, way))
    try:
        problems = source.check([MAILBOX, "anna"])
        assert len(problems) == 1                          # the application, not each mailbox
        assert idp.token_url in problems[0] and "invalid_client" in problems[0]
        assert f"env:{SECRET_ENV}" in problems[0]
        with pytest.raises(TokenRefused) as err:           # during a run: a ConfigError, not one user's problem
            source.folders(MAILBOX)
        assert isinstance(err.value, ConfigError) and idp.token_url in str(err.value)
        assert idp.issued == 0
        for words in (problems[0], str(err.value), caplog.text):
            assert wrong not in words and idp.client_secret not in words
    finally:
        source.close()


@pytest.mark.parametrize("way", WAYS)
def test_a_busy_identity_platform_is_transient(servers, idp, way):
    source_server, _ = servers
    source = source_of(source_server, oauth_of(idp, way))
    try:
        idp.status = 503
        problems = source.check([MAILBOX])
        assert len(problems) == 1 and "503" in problems[0] and idp.token_url in problems[0]
        with pytest.raises(TransientError) as err:
            source.folders(MAILBOX)
        assert err.value.retry_after == 1
        idp.status = None
        time.sleep(1.1)                                    # as long as it asked
        assert "INBOX" in source.folders(MAILBOX)          # the retry works
    finally:
        source.close()


@pytest.mark.parametrize("way", WAYS)
def test_an_unreachable_identity_platform_is_transient(servers, idp, way):
    source_server, _ = servers
    nowhere = f"https://127.0.0.1:{free_port()}/{idp.tenant}"
    address = nowhere if way == "authority" else nowhere + "/oauth2/v2.0/token"
    source = source_of(source_server, oauth_of(idp, way, **{way: address}))
    try:
        with pytest.raises(TransientError) as err:
            source.folders(MAILBOX)
        assert nowhere in str(err.value)
        assert "cannot get an IMAP access token" in source.check([MAILBOX])[0]
    finally:
        source.close()


def test_wrong_addresses_and_an_untrusted_certificate_are_named_once(servers, idp):
    source_server, _ = servers
    cases = [(oauth_of(idp, "authority", authority=idp.url + "/no-such-tenant"), "no OpenID metadata"),
             (oauth_of(idp, "token_url", token_url=idp.url + "/no-such-token"), "HTTP 404"),
             (oauth_of(idp, "authority", ca_file=None), "oauth.ca_file"),
             (oauth_of(idp, "token_url", client_secret="env:IMAP_NO_SUCH_SECRET"), "export IMAP_NO_SUCH_SECRET")]
    for oauth, words in cases:
        source = source_of(source_server, oauth)
        try:
            problems = source.check([MAILBOX, "anna"])
            assert len(problems) == 1 and words in problems[0]
            with pytest.raises(ConfigError):
                source.folders(MAILBOX)
        finally:
            source.close()
    assert idp.issued == 0


def test_a_mailboxs_own_token_or_password_comes_before_the_application(servers, idp, monkeypatch):
    source_server, _ = servers
    idp.wrong_key = True                               # the application's tokens would be refused
    monkeypatch.setenv("TOKEN_BEN", source_server.token(MAILBOX))
    monkeypatch.setenv("PW_ANNA", USERS["anna"])
    source = source_of(source_server, oauth_of(idp, "authority"), oauth_tokens={MAILBOX: "env:TOKEN_BEN"},
                       passwords={"anna": "env:PW_ANNA"})
    try:
        assert source.check([MAILBOX, "anna"]) == []
        assert idp.requests == 0
    finally:
        source.close()


def test_the_oauth_section_is_checked(tmp_path):
    import yaml
    from core.department import load_department
    base = {"name": "imap", "host": "imap.example"}
    app = {"authority": "https://login.microsoftonline.com/tenant-1", "client_id": "app",
           "client_secret": "env:S"}
    assert ImapSource(**base, oauth=app).oauth.scope == "https://outlook.office365.com/.default"
    with pytest.raises(ValidationError, match="remove master_user and password"):
        ImapSource(**base, oauth=app, master_user="migrator", password="env:M")
    with pytest.raises(ValidationError, match="exactly one of authority"):
        ImapSource(**base, oauth={**app, "token_url": "https://idp.example/token"})
    with pytest.raises(ValidationError, match="exactly one of authority"):
        ImapSource(**base, oauth={"client_id": "app", "client_secret": "env:S"})
    # a relative CA file is found beside the department file, wherever umstieg runs
    dept_file = tmp_path / "amt" / "department.yaml"
    dept_file.parent.mkdir()
    dept_file.write_text(yaml.safe_dump({
        "name": "amt", "work_dir": "work", "users": [{"source": "anna", "target": "anna"}],
        "sources": [{**base, "type": "imap", "oauth": {**app, "ca_file": "certs/idp-ca.pem"}}],
        "target": {"type": "localdir", "root": "files"},
        "mail_target": {"type": "imap", "host": "ox.example", "passwords": {"anna": "env:PW"}}}))
    assert load_department(dept_file).sources[0].oauth.ca_file == tmp_path / "amt" / "certs" / "idp-ca.pem"
    with pytest.raises(ValidationError, match="never the secret itself"):
        ImapSource(**base, oauth={**app, "client_secret": "plain-secret"})


def test_a_department_with_oauth_moves_mail(servers, idp, tmp_path, monkeypatch):
    """The department file, the checks and the flows' steps (discover, process_chunk) with `oauth`."""
    import yaml
    from core.department import load_department
    from flows import runtime
    from flows.migrate import check_department
    from flows.discovery import discover
    from flows.steps import process_chunk
    from core.ledger import Batch
    from sqlalchemy import select
    import sources.imap as imap_source
    source_server, target_server = servers
    idp.lifetime = 3
    monkeypatch.setenv("TARGET_PW", TARGET_PW)
    source = {"name": "m365-imap", "type": "imap", "host": source_server.host, "port": source_server.port,
              "security": "none", "oauth": {"authority": idp.authority, "client_id": idp.client_id,
                                            "client_secret": f"env:{SECRET_ENV}", "ca_file": str(idp.ca_file)}}
    dept = {"name": "oauthamt", "work_dir": str(tmp_path / "work"),
            "users": [{"source": MAILBOX, "target": "copy-flow"}],
            "sources": [source],
            "target": {"type": "localdir", "root": str(tmp_path / "files")},
            "mail_target": {"type": "imap", "host": target_server.host, "port": target_server.port,
                            "security": "none", "passwords": {"copy-flow": "env:TARGET_PW"}}}
    dept_file = tmp_path / "department.yaml"
    dept_file.write_text(yaml.safe_dump(dept), encoding="utf-8")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({**dept, "sources": [{**source, "master_user": "migrator",
                                                           "password": "env:M"}]}), encoding="utf-8")
    with pytest.raises(ConfigError, match="remove master_user and password"):
        load_department(wrong)
    try:
        department = runtime.department(dept_file)
        assert check_department(department) == []
        ledger = runtime.ledger(department)
        run = ledger.start_run(department.name, "migrate")
        found = discover(department, ledger, run, owners=[MAILBOX])
        assert found.new[MAILBOX] == 16
        time.sleep(idp.lifetime + 1.1)                 # the chunk's logins need new tokens
        secret, idp.client_secret = idp.client_secret, "rotated-secret"   # revoked while the run goes
        imap_source.source_for.close_all()                 # (no pooled connection left: the chunk logs in)
        with pytest.raises(TokenRefused):
            process_chunk(str(dept_file), run, MAILBOX, 1, found.todo[MAILBOX])
        with ledger.session() as s:                        # the chunk stopped: its batch failed
            assert [b.status for b in s.scalars(select(Batch).where(Batch.run_id == run))] == ["failed"]
        idp.client_secret = secret
        imap_source.source_for.close_all()
        before = idp.issued
        counts = process_chunk(str(dept_file), run, MAILBOX, 2, found.todo[MAILBOX])
        assert counts == {"verified": 16} and idp.issued > before
    finally:
        runtime.close_all()
    for folder in LAYOUT:
        assert contents(target_server, "copy-flow", folder) == contents(source_server, MAILBOX, folder)

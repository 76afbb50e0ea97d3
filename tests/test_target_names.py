"""One target name per file (sinks.twins): NFC twins, case twins and converted-name clashes get
numbered names, visibly and the same way every run; nothing overwrites anything, at a local
folder target and at a real Nextcloud 27."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
import yaml

from docgen import make_docx
from sinks.twins import NamePlan, name_key, numbered
from helpers import ledger_rows

ODF = ("odp", "ods", "odt", "otp", "ots", "ott")
NFC = unicodedata.normalize("NFC", "Müller.txt")
NFD = unicodedata.normalize("NFD", "Müller.txt")


def make_odt(path: Path, text: str) -> Path:
    """A real OpenDocument text (it travels as it is, after a validity check)."""
    from odf.opendocument import OpenDocumentText
    from odf.text import P
    doc = OpenDocumentText()
    doc.text.addElement(P(text=text))
    doc.save(str(path))
    return path


@pytest.fixture(scope="module", autouse=True)
def _close_runtime_pools():
    yield
    from flows import runtime
    runtime.close_all()


def test_names_that_are_one_file_somewhere_share_a_key():
    assert NFC != NFD and name_key(NFC) == name_key(NFD)
    assert name_key("Akten/Bericht.DOCX") == name_key("akten/bericht.docx")
    assert name_key("Straße.txt") != name_key("Strasse.txt")        # Windows keeps these apart
    assert numbered("a/Müller.txt", 2) == "a/Müller (2).txt"
    assert numbered("README", 3) == "README (3)" and numbered(".profile", 2) == ".profile (2)"


def test_the_first_twin_keeps_its_name_and_the_others_are_numbered():
    plan = NamePlan(ODF)
    # NFC before NFD, then code-point order: the caller sorts; the plan numbers what comes later
    assert plan.plain(NFC) == (NFC, None)
    assert plan.plain(NFD) == ("Müller (2).txt", "nfc_twin")
    assert plan.plain("Bericht.docx") == ("Bericht.docx", None)
    assert plan.plain("bericht.docx") == ("bericht (2).docx", "case_twin")
    # files of the share keep their names before any twin is numbered: a real "(2)" stays "(2)"
    plan = NamePlan(ODF)
    decided = plan.plain_many([NFC, "Müller (2).txt", NFD])
    assert decided == {NFC: (NFC, None), "Müller (2).txt": ("Müller (2).txt", None),
                       NFD: ("Müller (3).txt", "nfc_twin")}
    assert all(unicodedata.is_normalized("NFC", path) for path, _ in decided.values())


def test_twin_folders_become_the_first_spelling():
    plan = NamePlan(ODF)
    assert plan.plain("Akten/a.txt") == ("Akten/a.txt", None)
    assert plan.plain("akten/b.txt") == ("Akten/b.txt", "case_twin")
    assert plan.plain("AKTEN/a.txt") == ("Akten/a (2).txt", "case_twin")


def test_converted_copies_yield_to_files_of_the_share():
    plan = NamePlan(ODF)
    plain, _ = plan.plain("PLAN.odt")
    assert plain == "PLAN.odt"
    docx, _ = plan.plain("Plan.docx")
    assert plan.converted("Plan.docx", docx, "Plan") == ("Plan (2)", "converted_clash")
    # a case twin's copy follows its new name
    plan.plain("Bericht.docx")
    twin, why = plan.plain("bericht.docx")
    assert (twin, why) == ("bericht (2).docx", "case_twin")
    assert plan.converted("Bericht.docx", "Bericht.docx", "Bericht") == ("Bericht", None)
    assert plan.converted("bericht.docx", twin, "bericht") == ("bericht (2)", None)


def test_names_decided_before_claim_first_so_a_later_file_yields():
    plan = NamePlan(ODF)
    plan.keep("Angebot.docx", "Angebot.docx", "Angebot")     # an earlier run sent Angebot.odt
    assert plan.plain("Angebot.odt") == ("Angebot (2).odt", "converted_clash")
    plan = NamePlan(ODF)
    plan.keep("notizen.txt", "notizen.txt", None)            # another user merged into this account
    assert plan.plain("notizen.txt") == ("notizen (2).txt", "same_name")


# ------------------------------------------------------------------------------ end to end
def _share(home: Path) -> dict[str, bytes]:
    """A user's folder with every kind of name clash; source path -> bytes."""
    user = home / "anna"
    (user / "Akten").mkdir(parents=True)
    (user / NFC).write_bytes(b"written on Windows\n")
    (user / NFD).write_bytes(b"written on a Mac\n")
    (user / "Akten" / "liste.txt").write_bytes(b"Liste klein\n")
    (user / "Akten" / "Liste.txt").write_bytes(b"Liste gross\n")
    make_docx(user / "Bericht.docx", seed=1)
    make_docx(user / "bericht.docx", seed=2)
    make_docx(user / "Plan.docx", seed=3)
    make_odt(user / "PLAN.odt", "Der Plan")                  # an ODF travels as it is, under its name
    return {p.relative_to(user).as_posix(): p.read_bytes() for p in user.rglob("*") if p.is_file()}


def _department(tmp_path: Path, target: dict) -> Path:
    config = {"name": "namensamt", "work_dir": str(tmp_path / "work"),
              "users": [{"source": "anna", "target": target.pop("login", "t-anna")}],
              "sources": [{"name": "homes", "type": "folder", "root": str(tmp_path / "home")}],
              "target": target,
              "conversion": {"workers": 1, "timeout": 120, "keep_original": "never", "fidelity": []},
              "limits": {"chunk_size": 4}}
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path


EXPECTED = {   # source name -> (name at the target, reason)
    NFC: (NFC, None),
    NFD: ("Müller (2).txt", "nfc_twin"),
    "Akten/Liste.txt": ("Akten/Liste.txt", None),
    "Akten/liste.txt": ("Akten/liste (2).txt", "case_twin"),
    "Bericht.docx": ("Bericht.odt", None),
    "bericht.docx": ("bericht (2).odt", "case_twin"),
    "Plan.docx": ("Plan (2).odt", "converted_clash"),
    "PLAN.odt": ("PLAN.odt", None),
}


@pytest.mark.parametrize("target", ["localdir", "nextcloud"])
def test_every_twin_arrives_under_its_own_name_and_the_report_lists_each(target, tmp_path, request, monkeypatch):
    from flows.migrate import run_flow
    sources = _share(tmp_path / "home")
    if target == "localdir":
        dept_file = _department(tmp_path, {"type": "localdir", "root": str(tmp_path / "target")})

        def held() -> dict[str, bytes]:
            root = tmp_path / "target" / "t-anna"
            return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    else:
        nc = request.getfixturevalue("nextcloud_server")
        account = nc.new_user("t-anna")
        monkeypatch.setenv("NCPW_TWINS", account.secret)
        dept_file = _department(tmp_path, {"type": "nextcloud", "url": nc.url, "timeout": 120,
                                           "login": account.login,
                                           "app_passwords": {account.login: "env:NCPW_TWINS"}})

        def held() -> dict[str, bytes]:
            return nc.tree(account)

    summary = run_flow("migrate", dept_file)

    rows = {r["location"]: r for r in ledger_rows(dept_file)}
    assert set(rows) == set(sources) and all(r["state"] == "verified" for r in rows.values()), \
        [(r["location"], r["state"], r["message"]) for r in rows.values() if r["state"] != "verified"]
    arrived = held()
    # every file arrived, each under its own name: nothing overwrote anything
    assert sorted(unicodedata.normalize("NFC", n) for n in arrived) == sorted(name for name, _ in EXPECTED.values())
    for source_name in (NFC, NFD, "Akten/Liste.txt", "Akten/liste.txt", "PLAN.odt"):
        assert arrived[EXPECTED[source_name][0]] == sources[source_name], source_name
    for docx in ("Bericht.docx", "bericht.docx", "Plan.docx"):
        assert arrived[EXPECTED[docx][0]][:2] == b"PK" and rows[docx]["conversion"] == "converted"
    # the run report lists each rename: source name, target name, why
    report = Path(summary["report"]).read_text(encoding="utf-8")
    renamed = {(r["source"], r["target"], r["reason"]) for r in summary["renamed"]["items"]}
    assert renamed == {(s, t, why) for s, (t, why) in EXPECTED.items() if why}
    assert summary["renamed"]["count"] == 4
    assert "## Renamed at the target" in report
    for s, (t, why) in EXPECTED.items():
        if why:
            assert f"| anna | {s} | {t} |" in report, (s, t)
    assert "NFC twin" in report and "case twin" in report and "converted-name clash" in report
    json_report = json.loads(Path(summary["report"]).with_suffix(".json").read_text(encoding="utf-8"))
    assert len(json_report["renamed"]["items"]) == 4

    # a second run moves nothing and renames nothing again
    again = run_flow("migrate", dept_file)
    assert again["this_run"] == {} and held() == arrived

    # a file of the share that arrives later yields to a name an earlier run gave: nothing overwritten
    # (`Bericht (2).odt` is taken too: `bericht (2).odt` is one file with it on Windows)
    late = make_odt(tmp_path / "home" / "anna" / "Bericht.odt", "später dazugekommen").read_bytes()
    third = run_flow("migrate", dept_file)
    assert third["this_run"] == {"verified": 1}
    now = held()
    assert now["Bericht (3).odt"] == late and now["Bericht.odt"] == arrived["Bericht.odt"]
    assert {k: v for k, v in now.items() if k != "Bericht (3).odt"} == arrived
    assert ("Bericht.odt", "Bericht (3).odt", "converted_clash") in \
        {(r["source"], r["target"], r["reason"]) for r in third["renamed"]["items"]}

"""Reports in German, English and French: the batch fidelity report, the risk scan and the run and
status reports come from the same templates and catalogs as the dashboard (reports.i18n)."""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import runtime_dir
from docgen import make_fidelity_docx
from reports.batch import write_fidelity_report
from reports.i18n import LANGUAGES, LOCALE_DIR, TEMPLATES_DIR, names
from reports.scan import write_scan_report

REPORTS = Path(__file__).resolve().parents[1] / "reports"
EVIL = '=HYPERLINK("http://example.org","x").docx'


def _records() -> list[dict]:
    lost = {"check": "tables", "points": 5.0, "detail": "tables: 3 in the source, 2 in the ODF"}
    page = {"check": "page_size", "points": 2.0, "detail": "page size differs"}
    return [
        {"path": "a/Bescheid.docx", "outcome": "converted", "format": "docx", "seconds": 0.5, "input_bytes": 1000,
         "fidelity": {"status": "assessed", "score": 100.0, "verdict": "identical", "deductions": []}},
        {"path": "a/Haushalt.xlsx", "outcome": "converted", "format": "xlsx", "seconds": 0.5, "input_bytes": 1000,
         "fidelity": {"status": "assessed", "score": 80.0, "verdict": "review", "deductions": [lost, page],
                      "risks": ["macros_vba"]}},
        {"path": EVIL, "outcome": "converted", "format": "docx", "seconds": 0.5, "input_bytes": 10,
         "fidelity": {"status": "assessed", "score": 40.0, "verdict": "broken", "deductions": [page]}},
    ]


def _fidelity(tmp_path: Path, language: str) -> dict[str, Path]:
    out = tmp_path / language
    out.mkdir()
    results = out / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in _records()), encoding="utf-8")
    return write_fidelity_report(out, results, language=language)


#: (language, heading, verdict "review", check "tables", check "page_size", flag "macros_vba", header of "path")
EXPECTED = [
    ("de", "Bericht zur Konvertierungsqualität", "prüfen", "Tabellen", "Seitenformat", "VBA-Makros", "Pfad"),
    ("en", "Fidelity report", "review", "tables", "page size", "macros vba", "path"),
    ("fr", "Rapport de fidélité", "à vérifier", "tableaux", "format de page", "macros VBA", "chemin"),
]


@pytest.mark.parametrize("language,heading,review,tables,page_size,vba,path", EXPECTED)
def test_the_fidelity_report_speaks_the_language_asked_for(tmp_path, language, heading, review, tables, page_size,
                                                            vba, path):
    paths = _fidelity(tmp_path, language)
    page = paths["html"].read_text(encoding="utf-8")
    assert f'<html lang="{language}">' in page and f"<h1>{heading}</h1>" in page
    assert f">{review}</span>" in page                                   # the verdict badge, by name
    assert f"<li>{tables} (−" in page and f"{page_size}: page size differs" in page   # checks by name
    assert vba in page                                                    # the risk flag, by name
    if language != "en":
        assert "Worst documents" not in page and "What was lost" not in page
    frame = pd.read_csv(paths["csv"])
    assert path in frame.columns
    if language == "en":                  # English keeps the codes scripts read
        assert list(frame["verdict"]) == ["broken", "review", "identical"]
    else:
        verdict = names(language).column("verdict")
        assert review in list(frame[verdict])
    sheets = pd.read_excel(paths["ods"], sheet_name=None, engine="odf")
    assert names(language)("Documents") in sheets


def test_csv_exports_neutralise_formulas_in_every_language(tmp_path):
    for language in LANGUAGES:
        paths = _fidelity(tmp_path, language)
        cells = [cell for row in csv.reader(io.StringIO(paths["csv"].read_text(encoding="utf-8"))) for cell in row]
        assert "'" + EVIL in cells and EVIL not in cells, language
        assert not [c for c in cells if c[:1] in ("=", "+", "@", "\t", "\r")], language


def _scan_jsonl(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = [{"path": "Referat/Makro.docm", "format": "docm", "family": "text", "size": 4096, "category": "person",
             "flags": ["macros_vba", "comments"], "outcome": None},
            {"path": EVIL, "format": "docx", "family": "text", "size": 2048, "category": "review",
             "flags": ["tracked_changes"], "outcome": None, "error": "zip: bad CRC"}]
    jsonl = folder / "scan.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return jsonl


@pytest.mark.parametrize("language,title,person,flag,meaning,category", [
    ("de", "Risikoprüfung vor der Migration", "Dateien, die eine Person brauchen", "Änderungsverfolgung",
     "VBA-Makros: sie laufen nicht in LibreOffice", "Kategorie"),
    ("en", "Pre-migration risk scan", "Files that need a person", "tracked changes",
     "VBA macros: they do not run in LibreOffice", "category"),
    ("fr", "Analyse des risques avant migration", "Fichiers qui demandent une personne", "modifications suivies",
     "macros VBA : elles ne s'exécutent pas dans LibreOffice", "catégorie"),
])
def test_the_risk_scan_speaks_the_language_asked_for(tmp_path, language, title, person, flag, meaning, category):
    jsonl = _scan_jsonl(tmp_path / language)
    paths = write_scan_report(jsonl.parent, jsonl, source="/srv/share", seconds=1.5, language=language)
    page = html.unescape(paths["html"].read_text(encoding="utf-8"))
    assert f"<h1>{title}</h1>" in page and person in page and flag in page and meaning in page
    assert "inspection failed part-way" not in page or language == "en"
    frame = pd.read_csv(paths["csv"])
    assert category in frame.columns and len(frame) == 2
    assert "'" + EVIL in list(frame[names(language).column("path")])
    sheets = pd.read_excel(paths["ods"], sheet_name=None, engine="odf")
    assert set(sheets) == {names(language)(s) for s in ("Files", "By format", "Flags")}


def _summary(run: int = 4) -> dict:
    return {"run": run, "finished": "2026-12-06T05:00:00+00:00", "seconds": 2.0, "delta": {},
            "users": [{"user": "anna", "discovered": 0, "extracted": 0, "converted": 0, "loaded": 0, "verified": 3,
                       "failed": 1, "skipped": 0, "total": 4}],
            "failures": {"load_error": {"count": 1, "example": "HTTP 507"}},
            "conversions": {"converted": 2, "encrypted": 1}, "fidelity": {"review": 1, "identical": 1},
            "removed_this_run": {"count": 1, "items": [{"owner": "anna", "location": "alt.txt", "at_target": "kept"}],
                                 "removed": 0, "kept": 1, "never_arrived": 0}}


@pytest.mark.parametrize("language,heading,state,error,outcome,fate", [
    ("de", "## Elemente nach Benutzer und Status", "geprüft", "Fehler beim Übertragen ins Ziel",
     "verschlüsselt (unkonvertiert übertragen)", "im Ziel belassen"),
    ("en", "## Items by user and state", "verified", "could not be written to the target",
     "encrypted (moved unconverted)", "left at the target"),
    ("fr", "## Éléments par utilisateur et état", "vérifié", None, None, "laissé dans la cible"),
])
def test_run_and_status_reports_are_written_in_the_departments_language(tmp_path, language, heading, state, error,
                                                                         outcome, fate):
    from core.department import load_department
    from helpers import make_department
    from reports.migration import write_run_report, write_status_report
    dept = load_department(make_department(tmp_path, users=("anna",), docs_per_user=1, language=language))
    assert dept.language == language
    text = write_run_report(dept, _summary()).read_text(encoding="utf-8")
    assert heading in text and f"| {state} |" in text and f"| anna | alt.txt | {fate} |" in text
    row = next(line for line in text.splitlines() if line.startswith("| load_error |"))   # the code --error-class takes
    assert row.endswith(f"| {error or names('fr').code('load_error')} |")
    if outcome:
        assert f"| {outcome} | 1 |" in text
    status = write_status_report(dept, {**_summary(), "last_run": None}).read_text(encoding="utf-8")
    assert heading in status
    # the command line's choice wins over the department's
    other = "en" if language != "en" else "de"
    assert names(other)("Items by user and state") in write_run_report(dept, _summary(5), other).read_text("utf-8")


def _assessment(wait_reason: str = "identity: target: no account t-cem") -> dict:
    """An assessment with every section: problems, identities, files, mail, risk scan, both estimates."""
    from reports.migration import _estimate_basis
    estimate = {"documents_per_second": 6.0, "measured": False, "per_worker": 3.0, "workers": 2,
                "items_per_second": 2.5}
    english = _estimate_basis(estimate, names("en"))
    return {"department": "bauamt", "problems": ["target: HTTP 503 from nc.amt.test"],
            "identities": [{"source": "anna", "target": "t-anna", "email": "anna@amt.test", "source_account": "ok",
                            "target_account": "ok", "attributes": "exists; no attributes to compare",
                            "verdict": "go"},
                           {"source": "cem", "target": "t-cem", "email": None, "source_account": "ok",
                            "target_account": "no account t-cem", "attributes": "not checked",
                            "verdict": f"wait: {wait_reason}"}],
            "items": 1234, "by_kind": {"file": 1200, "message": 34}, "bytes": 52428800, "office_documents": 300,
            "by_format": {"docx": {"items": 200, "bytes": 10485760}, "(none)": {"items": 3, "bytes": 10}},
            "by_user": {"anna": 1200, "cem": 34}, "risk_flags": {"macros_vba": 12, "encrypted": 3},
            "mail": [{"user": "anna", "source": "imap", "folder": "INBOX", "messages": 30, "bytes": 3145728,
                      "selected_messages": 28, "selected_bytes": 3000000, "target_folder": None},
                     {"user": "anna", "source": "imap", "folder": "Gesendete Objekte", "messages": 4, "bytes": 1000,
                      "selected_messages": 4, "selected_bytes": 1000, "target_folder": "Sent"}],
            "mail_messages": 34, "mail_bytes": 3146728, "mail_selected_messages": 32, "mail_selected_bytes": 3001000,
            "mail_dry_run": False, "planning": {"person": 15, "clean": 1100, "other": 85}, "scan_reports": {},
            "estimated_conversion_seconds": 50.0, "estimate_basis": english["conversion"],
            "estimated_seconds": 493.6, "estimated_seconds_basis": english["whole"], "estimate": estimate}


#: What an assessment shows as it is in every language: names of users, folders, sources and
#: formats, and the recorded messages (a problem, why an identity check failed).
_AS_NAMED = {"anna", "cem", "imap", "INBOX", "Gesendete", "Objekte", "Sent", "docx", "bauamt", "amt", "test", "csv",
             "HTTP", "nc", "umstieg", "users", "DEPT", "yaml", "identity", "target", "no", "account"}
#: Words a language writes as English does ("message" is French too).
_ALIKE = {"de": set(), "fr": {"message"}}


@pytest.mark.parametrize("language", ["de", "fr"])
@pytest.mark.parametrize("dry_run,measured", [(False, False), (True, True)])
def test_the_assessment_has_no_english_sentence_left(language, dry_run, measured):
    """Line by line against the English assessment: every line with a word that is not a name
    differs (the codes are named, the numbers take the language's decimal comma)."""
    from reports.migration import _estimate_basis, assessment_markdown
    result = {**_assessment(), "mail_dry_run": dry_run}
    if measured:
        result["estimate"] = {**result["estimate"], "measured": True, "documents_per_second": 7.25,
                              "per_worker": None, "workers": None}
    else:
        result["estimate"] = {**result["estimate"], "items_per_second": None}
        result["estimated_seconds"] = None
    english_basis = _estimate_basis(result["estimate"], names("en"))
    result["estimate_basis"], result["estimated_seconds_basis"] = english_basis["conversion"], english_basis["whole"]
    english = assessment_markdown(result, "en").splitlines()
    other = assessment_markdown(result, language).splitlines()
    assert len(english) == len(other) > 40
    word = re.compile(r"[^\W\d_]{2,}")
    problem = "- target: HTTP 503 from nc.amt.test"                       # recorded: stays as it was
    left = [(e, o) for e, o in zip(english, other)
            if set(word.findall(e)) - _AS_NAMED - _ALIKE[language] and e == o and e != problem]
    assert not left, left
    text = "\n".join(other)
    n = names(language)
    assert f"| {n.flag('macros_vba')} | 12 |" in text and n.flag("macros_vba") != "macros_vba"   # named, not coded
    assert f"| {n.code('person')} | 15 |" in text and f"| {n('(none)')} | 3 |" in text
    assert "wait: " not in text and n("wait: %(why)s") % {"why": "identity: target: no account t-cem"} in text
    assert problem in text
    assert "50,0" in text and "50.0" not in text                           # MiB with the decimal comma


def test_the_english_assessment_keeps_codes_and_numbers_as_it_always_wrote_them():
    from reports.migration import assessment_markdown
    text = assessment_markdown(_assessment(), "en")
    assert "| macros_vba | 12 |" in text and "| (none) | 3 | 0.0 |" in text and "| cem | t-cem |  | ok |" in text
    assert "1234 item(s), 50.0 MiB of files, 300 Office document(s) to convert." in text
    assert "Conversion: about 0 min 50 s (3.0 documents/s per worker × 2 worker(s) (no run measured yet))." in text
    assert "Whole migration: about 8 min 14 s (2.50 items/s (every step, all kinds) measured by this " \
           "department's runs)." in text
    # an assessment.json written before the rates were kept: its recorded basis, as it was
    before = {k: v for k, v in _assessment().items() if k != "estimate"}
    assert assessment_markdown({**before, "estimate_basis": "as it was"}, "de").count("(as it was)") == 1


@pytest.mark.parametrize("language,title,basis", [
    ("de", "# amt: Bestandsaufnahme", "noch kein Lauf dieser Abteilung gemessen"),
    ("en", "# amt: assessment", "no run of this department measured yet"),
    ("fr", "# amt : évaluation", "aucune exécution de ce service n'a encore été mesurée"),
])
def test_the_assessment_is_written_in_the_departments_language(tmp_path, language, title, basis):
    """write_assessment writes assessment.md in the department's `language`; assessment.json is for
    machines: its keys, codes and sentences stay English, beside the rates behind the estimates."""
    import yaml
    from core.department import load_department
    from core.items import ItemRef, Kind
    from reports.migration import write_assessment
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump({"name": "amt", "work_dir": str(tmp_path / "work"), "language": language,
                                    "users": [{"source": "anna", "target": "anna"}],
                                    "sources": [{"name": "export", "type": "export", "root": str(tmp_path)}],
                                    "target": {"type": "localdir", "root": str(tmp_path / "f")}}))
    dept = load_department(path)
    listing = [("anna", ItemRef("export", "a/brief.docx", Kind.FILE, "anna", "Akten/brief.docx", "1", 4096)),
               ("anna", ItemRef("export", "a/1.eml", Kind.MESSAGE, "anna", "INBOX", "1", 1500))]
    result = write_assessment(dept, [], None, listing)
    text = Path(result["markdown"]).read_text(encoding="utf-8")
    assert text.startswith(title + "\n") and basis in text
    assert f"| {names(language).code('file')} | 1 |" in text
    data = json.loads(Path(result["report"]).read_text(encoding="utf-8"))
    assert "no run measured yet" in data["estimate_basis"] and data["by_kind"] == {"file": 1, "message": 1}
    assert data["estimate"]["measured"] is False and data["estimate"]["workers"] >= 1


def test_an_unknown_language_in_the_department_file_is_refused(tmp_path):
    from core.department import load_department
    from core.errors import ConfigError
    from helpers import make_department
    with pytest.raises((ConfigError, ValueError)) as caught:
        load_department(make_department(tmp_path, users=("anna",), docs_per_user=1, language="it"))
    assert "language" in str(caught.value)


def test_the_dashboard_names_checks_flags_and_outcomes_as_the_reports_do():
    """One catalog for both: a German page says what a German report says (and every fidelity
    check, once English on German and French pages, has a name)."""
    from reports.compare import LABELS
    from reports.risk import RISK_FLAGS
    from umstieg.dashboard.i18n import translations
    for language in ("de", "fr"):
        page = translations(language).gettext
        n = names(language)
        for check in LABELS:          # (French writes some as English does: "images", "pages")
            assert page(check) == n.check(check) and (language == "fr" or page(check) != check), (language, check)
        for flag in RISK_FLAGS:
            assert page(flag) == n.flag(flag) and (language == "fr" or page(flag) != flag), (language, flag)
        for code in ("load_error", "encrypted", "verified", "review", "needs_person"):
            assert page(code) == n.code(code) != code
    assert translations("de").gettext("Log out") != "Log out"          # the dashboard's own texts stay


def _required_msgids() -> set[tuple[str | None, str]]:
    """Every text a report can print: the templates' messages, the reports' own texts (n("…"), also
    in flows/artifacts.py, which adds lines to the run report it publishes, and in the commands
    that print a department's summaries),
    the human names of the codes they show, and the export column headers (context "column")."""
    from babel.messages.extract import extract_from_dir

    from core.ledger import State
    from reports.batch import _COLUMNS
    from reports.compare import LABELS
    from reports.fidelity import SOURCE_RENDER_NOTE
    from reports.migration import IDENTITY_FINDINGS, RENAME_REASONS
    from reports.risk import RISK_FLAGS
    ids: set[tuple[str | None, str]] = set()
    for _, _, message, _, context in extract_from_dir(
            str(TEMPLATES_DIR), method_map=[("**.html", "jinja2"), ("**.md", "jinja2")]):
        ids.add((context, message))
    for folder, files in ((REPORTS, "*.py"), (REPORTS.parent / "flows", "artifacts.py"),
                          (REPORTS.parent / "umstieg" / "commands", "department.py")):   # what run/assess print
        for _, _, message, _, context in extract_from_dir(
                str(folder), method_map=[(files, "python")], keywords={"n": None}):
            ids.add((context, message))
    codes = (set(LABELS) | set(RISK_FLAGS) | {f.meaning for f in RISK_FLAGS.values()} | {s.value for s in State}
             | {"identical", "minor", "review", "broken", "not_assessed", "person", "clean", "other", "info",
                "converted", "encrypted", "unreadable", "load_error", "all", "total", "text", "spreadsheet",
                "presentation", SOURCE_RENDER_NOTE, "nothing to show", "text of %(part)s",
                "new", "changed", "unchanged", "removed"}                  # the delta of a run
             | set(RENAME_REASONS.values())
             | set(IDENTITY_FINDINGS) | {"(none)"})                      # the assessment's names
    ids |= {(None, c) for c in codes}
    ids |= {("column", c) for c in _COLUMNS + ["check", "label", "points", "detail", "documents", "size",
                                               "category", "flags", "details", "error", "flag", "files"]}
    return ids


@pytest.mark.parametrize("language", ["de", "fr"])
def test_no_report_text_is_left_untranslated(language):
    from babel.messages.pofile import read_po
    with (LOCALE_DIR / language / "LC_MESSAGES" / "reports.po").open("rb") as f:
        catalog = read_po(f, locale=language)
    required = _required_msgids()
    assert len(required) > 250                        # the extraction found the templates
    missing = sorted(f"{ctx or ''}|{msgid}" for ctx, msgid in required
                     if not (catalog.get(msgid, context=ctx) and catalog.get(msgid, context=ctx).string))
    assert not missing, f"{len(missing)} untranslated in {language}: {missing[:20]}"
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    assert not fuzzy
    placeholders = re.compile(r"%\((\w+)\)s")
    wrong = [m.id for m in catalog if m.id and isinstance(m.id, str)
             and sorted(placeholders.findall(m.id)) != sorted(placeholders.findall(m.string))]
    assert not wrong, wrong


def test_umstieg_scan_writes_its_report_in_the_language_asked_for(tmp_path):
    src = tmp_path / "share"
    src.mkdir()
    make_fidelity_docx(src / "kommentiert.docx")
    env = dict(os.environ, UMSTIEG_RUNTIME_DIR=str(runtime_dir("cli-scan-i18n")), COLUMNS="160")
    done = subprocess.run([sys.executable, "-m", "umstieg", "scan", str(src), "--out", str(tmp_path / "scan"),
                           "--language", "fr"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "scan" / "scan.html").read_text(encoding="utf-8")
    assert '<html lang="fr">' in page and "Analyse des risques avant migration" in page and "commentaires" in page
    bad = subprocess.run([sys.executable, "-m", "umstieg", "scan", str(src), "--out", str(tmp_path / "x"),
                          "--language", "it"], capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 2 and "--language" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize("language,error_class", [("de", "Fehler beim Übertragen ins Ziel"), ("en", "load_error"),
                                                  ("fr", None)])
def test_dashboard_exports_name_outcomes_in_the_language_of_the_page(language, error_class):
    from reports.dashboard import Table, table_csv, table_ods
    from umstieg.dashboard.i18n import translations
    tr = translations(language).gettext
    table = Table("failures", "Failures by error class", [("reason", "Error class"), ("items", "Items"),
                                                           ("example", "Example message")],
                  [{"reason": "load_error", "items": 2, "example": "=cmd|' /C calc'!A0"}])
    frame = pd.read_csv(io.BytesIO(table_csv(table, tr, language)), encoding="utf-8-sig")
    assert list(frame.columns) == [tr("Error class"), tr("Items"), tr("Example message")]
    assert frame.iloc[0, 0] == (error_class or names("fr").code("load_error")) and frame.iloc[0, 1] == 2
    assert frame.iloc[0, 2] == "'=cmd|' /C calc'!A0"                     # still no formula
    sheet = pd.read_excel(io.BytesIO(table_ods(table, tr, language)), engine="odf")
    assert sheet.iloc[0, 0] == frame.iloc[0, 0]


@pytest.mark.parametrize("language,assessed,mail,status", [
    ("de", "Bestandsaufnahme:", "E-Mail: 1 Nachricht(en)", "amt: Elemente nach Benutzer und Status"),
    ("fr", "Évaluation :", "messagerie : 1 message(s)", "amt : éléments par utilisateur et état"),
    ("en", "Assessment:", "mail: 1 message(s)", "amt: items by user and state"),
])
def test_assess_and_status_print_in_the_departments_language(tmp_path, language, assessed, mail, status):
    """What `umstieg assess` and `umstieg status` print comes in the department's language, the
    estimate's basis included; English prints what it always printed."""
    import yaml
    (tmp_path / "export" / "anna").mkdir(parents=True)
    (tmp_path / "export" / "anna" / "eins.eml").write_bytes(
        b"From: a@amt.test\r\nTo: b@amt.test\r\nSubject: Eins\r\nMessage-ID: <1@amt.test>\r\n\r\nText\r\n")
    path = tmp_path / "department.yaml"
    path.write_text(yaml.safe_dump({"name": "amt", "work_dir": str(tmp_path / "work"), "language": language,
                                    "users": [{"source": "anna", "target": "anna"}],
                                    "sources": [{"name": "export", "type": "export", "root": str(tmp_path / "export")}],
                                    "target": {"type": "localdir", "root": str(tmp_path / "f")}}))
    env = dict(os.environ, UMSTIEG_RUNTIME_DIR=str(runtime_dir(f"cli-assess-{language}")), COLUMNS="250")
    env.pop("PREFECT_API_URL", None)
    printed = {}
    for command in ("assess", "status"):
        done = subprocess.run([sys.executable, "-m", "umstieg", command, str(path)], capture_output=True, text=True,
                              env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        printed[command] = " ".join((done.stdout + done.stderr).split())
    n = names(language)
    # the basis of the estimate, after its numbers: "worker(s) (no run measured yet)", "Prozess(e) (noch …)"
    basis = n("%(rate)s documents/s per worker × %(workers)s worker(s) (no run measured yet)").split("%(workers)s")[1]
    assert assessed in printed["assess"] and mail in printed["assess"] and basis.strip() in printed["assess"]
    assert status in printed["status"]

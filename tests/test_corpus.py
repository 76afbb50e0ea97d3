"""Every Office file of the developer corpus through the real pool (skipped without the corpus)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from converters.odf import check_package
from core.outcomes import Outcome

pytestmark = pytest.mark.corpus

FOLDERS = ("documents", "spreadsheets", "presentations", "legacy")

# From the corpus's NOTES.md ("checked" entries): facts about the files' bytes.
ENCRYPTED = {
    "documents/testWORD_protected_passtika.docx", "documents/protected_normal_case.docx",
    "spreadsheets/testEXCEL_protected_passtika_2.xlsx", "spreadsheets/pass_protected.xlsx",
    "spreadsheets/pass_protected.xlsb", "presentations/testPPT_protected_passtika.pptx",
    "presentations/testPPT_protected_passtika.ppt", "spreadsheets/testEXCEL_protected_passtika.xls",
    "documents/testWORD_protected_drm.doc", "documents/testODTEncrypted.odt", "spreadsheets/pass_protected.ods",
}
CORRUPT = {"spreadsheets/null_file.xlsx", "spreadsheets/null_archive.xlsx"}
# 763 bytes of a ZIP: damaged, so LibreOffice's repair is asked before it is called unreadable
UNREPAIRABLE = {"documents/testWORD_truncated.docx"}
# What LibreOffice reads although the name lies: converted as what the bytes are
MISLABELLED = {"documents/testODTnotaZipFile.odt": "text-writer", "spreadsheets/too_small.xls": "text-calc",
               "documents/testWordPerfect_42.doc": "wordperfect"}
# The six legacy files of legacy/NOTES.md, with the format (and so the LibreOffice filter) each gets
LEGACY = {"legacy/Word6.doc": "doc6", "legacy/Word95.doc": "doc6", "legacy/word2.doc": "winword2",
          "legacy/PPT95.ppt": "ppt95", "legacy/testEXCEL_3.xls": "xls4", "legacy/testEXCEL_4.xls": "xls4"}


@pytest.fixture(scope="module")
def corpus_results(corpus, pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus-out")
    files = sorted(p for folder in FOLDERS for p in (corpus / folder).rglob("*") if p.is_file())
    jobs = [(p, out / p.parent.relative_to(corpus), p.name) for p in files]
    results = {}
    for r in pool.convert_many(jobs):
        rel = Path(r.source).relative_to(corpus).as_posix()
        assert rel not in results, f"{rel} got two results"
        results[rel] = r
    assert set(results) == {p.relative_to(corpus).as_posix() for p in files}
    return results


def test_every_corpus_file_gets_an_outcome(corpus_results):
    assert corpus_results
    for rel, r in corpus_results.items():
        assert isinstance(r.outcome, Outcome) and r.message, rel


def test_encrypted_files_are_reported_encrypted_without_libreoffice(corpus_results):
    for rel in ENCRYPTED:
        r = corpus_results[rel]
        assert r.outcome is Outcome.ENCRYPTED, (rel, r.outcome, r.message)
        assert r.attempts == 0, rel


def test_corrupt_files_are_unreadable_without_libreoffice(corpus_results):
    for rel in CORRUPT:
        r = corpus_results[rel]
        assert r.outcome is Outcome.UNREADABLE, (rel, r.outcome, r.message)
        assert r.attempts == 0, rel


def test_a_damaged_package_is_unreadable_only_after_libreoffices_repair_failed(corpus_results):
    for rel in UNREPAIRABLE:
        r = corpus_results[rel]
        assert r.outcome is Outcome.UNREADABLE and r.attempts >= 1, (rel, r.outcome, r.message)
        assert "Ask its owner" in r.message


def test_files_whose_name_lies_are_converted_as_what_they_are(corpus_results):
    for rel, fmt in MISLABELLED.items():
        r = corpus_results[rel]
        assert r.outcome is Outcome.CONVERTED and r.format == fmt, (rel, r.outcome, r.message)


def test_legacy_files_convert_with_a_fidelity_record(corpus_results):
    from reports.fidelity import make_assessor
    from reports.scoring import FidelitySettings

    assess = make_assessor(FidelitySettings(visual="none"))
    for rel, fmt in LEGACY.items():
        r = corpus_results[rel]
        assert r.outcome is Outcome.CONVERTED and r.format == fmt, (rel, r.outcome, r.message)
        assert r.import_filter and check_package(Path(r.output)) == [], rel
        record = assess(r)
        assert record["status"] == "assessed" and record["verdict"] and record["score"] is not None, (rel, record)
        assert "legacy_binary" in record["risks"], rel


def test_no_message_names_libreoffices_sources(corpus_results):
    for rel, r in corpus_results.items():
        assert ".cxx" not in r.message and "pyuno" not in r.message, (rel, r.message)


def test_at_least_95_percent_of_the_rest_become_valid_odf(corpus_results):
    rest = {rel: r for rel, r in corpus_results.items() if rel not in ENCRYPTED | CORRUPT | UNREPAIRABLE}
    ok = {rel for rel, r in rest.items() if r.outcome.ok}
    for rel in ok:
        assert check_package(Path(corpus_results[rel].output)) == [], rel
    share = len(ok) / len(rest)
    failures = "\n".join(f"  {rel}: {r.outcome.value}: {r.message}" for rel, r in sorted(rest.items())
                         if rel not in ok)
    print(f"\n{len(ok)}/{len(rest)} ({share:.1%}) converted; by outcome: "
          f"{dict(Counter(r.outcome.value for r in rest.values()))}\n{failures}")
    assert share >= 0.95, failures


def test_sniffed_family_matches_output_type(corpus_results):
    """A spreadsheet never comes out as a text document, whatever its extension says.

    Checked on what LibreOffice really wrote, the `mimetype` entry of the ODF package (the output's
    name is built from the sniffed format, so it would prove nothing); templates must come out as
    ODF templates.
    """
    import zipfile
    from converters.formats import FORMATS
    checked = Counter()
    for rel, r in corpus_results.items():
        if r.outcome is not Outcome.CONVERTED:
            continue
        fmt = FORMATS[r.format]
        expected = f"application/vnd.oasis.opendocument.{fmt.family.value}" + ("-template" if fmt.template else "")
        with zipfile.ZipFile(r.output) as z:
            written = z.read("mimetype").decode("ascii", "replace")
        assert written == expected, (rel, r.format, written)
        assert Path(r.output).suffix == "." + fmt.target, rel
        checked[fmt.family.value] += 1
    assert set(checked) == {"text", "spreadsheet", "presentation"}, checked

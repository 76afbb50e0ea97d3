"""Every Office file of the developer corpus through the real pool (skipped without the corpus)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from converters.odf import check_package
from core.outcomes import Outcome

pytestmark = pytest.mark.corpus

FOLDERS = ("documents", "spreadsheets", "presentations")

# From the corpus's NOTES.md ("checked" entries): facts about the files' bytes.
ENCRYPTED = {
    "documents/testWORD_protected_passtika.docx", "documents/protected_normal_case.docx",
    "spreadsheets/testEXCEL_protected_passtika_2.xlsx", "spreadsheets/pass_protected.xlsx",
    "spreadsheets/pass_protected.xlsb", "presentations/testPPT_protected_passtika.pptx",
    "presentations/testPPT_protected_passtika.ppt", "spreadsheets/testEXCEL_protected_passtika.xls",
    "documents/testWORD_protected_drm.doc", "documents/testODTEncrypted.odt", "spreadsheets/pass_protected.ods",
}
CORRUPT = {
    "documents/testWORD_truncated.docx", "documents/testODTnotaZipFile.odt", "spreadsheets/null_file.xlsx",
    "spreadsheets/null_archive.xlsx", "spreadsheets/too_small.xls",
}
NOT_OFFICE = {"documents/testWordPerfect_42.doc"}     # WordPerfect 4.2 named .doc


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
    for rel in NOT_OFFICE:
        r = corpus_results[rel]
        assert r.outcome in (Outcome.UNREADABLE, Outcome.UNSUPPORTED) and r.attempts == 0
        assert "WordPerfect" in r.message


def test_at_least_95_percent_of_the_rest_become_valid_odf(corpus_results):
    rest = {rel: r for rel, r in corpus_results.items() if rel not in ENCRYPTED | CORRUPT | NOT_OFFICE}
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

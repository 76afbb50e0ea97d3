"""The converter pool against real LibreOffice workers: outcomes, supervision, hardening."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from conftest import processes_using, runtime_dir
from docgen import (make_docx, make_heavy_docx, make_mixed_set, make_odt_with_onload_macro, make_pptx, make_xlsx,
                    velvet_xls)
from helpers import frozen_offices, offices_reading, pool_offices, wait_until_open
from converters.odf import check_package
from converters.pool import ConverterPool
from converters.workers import LocalWorker
from core.outcomes import Outcome
from core.settings import ConversionSettings


def odf_mimetype(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        return z.read("mimetype").decode()


# ----------------------------------------------------------------------------- outcomes
@pytest.mark.parametrize("make, ext, target, mimetype", [
    (make_docx, "docx", "odt", "application/vnd.oasis.opendocument.text"),
    (make_xlsx, "xlsx", "ods", "application/vnd.oasis.opendocument.spreadsheet"),
    (make_pptx, "pptx", "odp", "application/vnd.oasis.opendocument.presentation"),
])
def test_office_files_become_valid_odf(pool, tmp_path, make, ext, target, mimetype):
    src = make(tmp_path / f"in.{ext}")
    result = pool.convert(src, tmp_path / "out")
    assert result.outcome is Outcome.CONVERTED, result.message
    out = Path(result.output)
    assert out == tmp_path / "out" / f"in.{target}"
    assert check_package(out) == []
    assert odf_mimetype(out) == mimetype
    assert result.format == ext and result.target == target
    assert result.attempts == 1 and result.worker.startswith("w")
    assert result.input_bytes == src.stat().st_size and result.output_bytes == out.stat().st_size
    assert len(result.sha256) == 64


def test_converted_text_survives(pool, tmp_path):
    import docx
    d = docx.Document()
    d.add_paragraph("Grüße aus dem Bürgeramt – Straße № 7")
    d.save(tmp_path / "t.docx")
    result = pool.convert(tmp_path / "t.docx", tmp_path)
    content = zipfile.ZipFile(result.output).read("content.xml").decode()
    assert "Grüße aus dem Bürgeramt – Straße № 7" in content


def test_word_comments_survive(pool, tmp_path):
    """Comments crashed LibreOffice 7.4 when loaded into a view from unoserver's thread."""
    import docx
    d = docx.Document()
    para = d.add_paragraph("Der Antrag ist fristgerecht eingegangen.")
    d.add_comment(para.runs, text="Bitte Datum prüfen", author="Referat IT", initials="RI")
    d.save(tmp_path / "kommentiert.docx")
    result = pool.convert(tmp_path / "kommentiert.docx", tmp_path / "out")
    assert result.outcome is Outcome.CONVERTED, result.message
    content = zipfile.ZipFile(result.output).read("content.xml").decode()
    assert "office:annotation" in content and "Bitte Datum prüfen" in content


def test_wrong_extension_is_converted_by_content(pool, tmp_path):
    src = make_xlsx(tmp_path / "budget.xlsx")
    lying = tmp_path / "budget.docx"
    src.rename(lying)
    result = pool.convert(lying, tmp_path / "out")
    assert result.outcome is Outcome.CONVERTED
    assert result.format == "xlsx"
    assert Path(result.output).suffix == ".ods"
    assert odf_mimetype(Path(result.output)) == "application/vnd.oasis.opendocument.spreadsheet"


@pytest.mark.parametrize("name, data, outcome", [
    ("random.docx", os.urandom(4096), Outcome.UNREADABLE),
    ("empty.xlsx", b"", Outcome.UNREADABLE),
    ("noise.doc", bytes(range(256)) * 16, Outcome.UNREADABLE),     # LibreOffice would only show it as raw text
    ("photo.jpg", b"\xff\xd8\xff\xe0" + os.urandom(200), Outcome.UNSUPPORTED),
    ("notes.txt", b"plain text", Outcome.UNSUPPORTED),
])
def test_bad_input_costs_no_libreoffice_call(pool, tmp_path, name, data, outcome):
    (tmp_path / name).write_bytes(data)
    before = sum(w.conversions for w in pool.workers())
    result = pool.convert(tmp_path / name, tmp_path / "out")
    assert result.outcome is outcome
    assert result.attempts == 0
    assert result.message
    assert sum(w.conversions for w in pool.workers()) == before
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("name, data, fmt, mimetype, words", [
    ("notiz.doc", "Dies ist kein Word-Dokument, sondern Text.\n" * 3, "text-writer", "text", "sondern"),
    ("liste.xls", "Name;Betrag\nMiete;1200\n", "text-calc", "spreadsheet", "Miete"),
    ("export.xls", "<html><body><table><tr><td>Haushalt</td><td>42</td></tr></table></body></html>", "html-calc",
     "spreadsheet", "Haushalt"),
    ("bericht.doc", "<html><body><h1>Bericht</h1><p>Inhalt folgt</p></body></html>", "html-writer", "text", "Inhalt"),
    ("tabelle.xls", "ID;PWXL;N;E\r\nC;Y1;X1;K\"Kasse\"\r\nE\r\n", "sylk", "spreadsheet", "Kasse"),
])
def test_files_whose_office_extension_lies_are_converted_as_what_they_are(pool, tmp_path, name, data, fmt,
                                                                         mimetype, words):
    # LibreOffice reads them (plain `soffice --convert-to` converts each): never refused
    (tmp_path / name).write_text(data, encoding="utf-8")
    result = pool.convert(tmp_path / name, tmp_path / "out")
    assert result.outcome is Outcome.CONVERTED, result.message
    assert result.format == fmt and result.import_filter
    assert odf_mimetype(Path(result.output)) == f"application/vnd.oasis.opendocument.{mimetype}"
    with zipfile.ZipFile(result.output) as z:
        assert words in z.read("content.xml").decode("utf-8")


def test_a_truncated_docx_libreoffice_repairs_is_converted_and_flagged(pool, tmp_path):
    from reports.fidelity import make_assessor
    from reports.scoring import FidelitySettings

    src = make_docx(tmp_path / "whole.docx", paragraphs=50)
    data = src.read_bytes()
    (tmp_path / "cut.docx").write_bytes(data[: len(data) // 2])
    result = pool.convert(tmp_path / "cut.docx", tmp_path / "out")
    assert result.outcome is Outcome.CONVERTED and result.repaired and "repaired" in result.message
    assert check_package(Path(result.output)) == []
    record = make_assessor(FidelitySettings(visual="none"))(result)
    assert "repaired" in record["risks"] and record["repaired"]
    assert record["verdict"] in ("review", "broken")


def test_a_package_libreoffice_cannot_repair_is_unreadable_in_plain_words(pool, tmp_path):
    # 700 bytes of a docx: the first entry only, cut short; LibreOffice's repair finds nothing to read
    src = make_docx(tmp_path / "whole.docx", paragraphs=50)
    (tmp_path / "stub.docx").write_bytes(src.read_bytes()[:700])
    result = pool.convert(tmp_path / "stub.docx", tmp_path / "out")
    assert result.outcome is Outcome.UNREADABLE and result.attempts >= 1
    assert ".cxx" not in result.message and "pyuno" not in result.message
    assert "Ask its owner" in result.message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_workbooks_with_excels_default_password_convert(pool, tmp_path):
    from msoffcrypto.format.ooxml import OOXMLFile

    velvet_xls(tmp_path / "rc4.xls")
    plain = make_xlsx(tmp_path / "plain.xlsx")
    with open(plain, "rb") as f, open(tmp_path / "velvet.xlsx", "wb") as out:
        OOXMLFile(f).encrypt("VelvetSweatshop", out)
    for name in ("rc4.xls", "velvet.xlsx"):
        result = pool.convert(tmp_path / name, tmp_path / "out")
        assert result.outcome is Outcome.CONVERTED, (name, result.message)
        assert odf_mimetype(Path(result.output)) == "application/vnd.oasis.opendocument.spreadsheet"


def test_encrypted_ooxml_is_reported_without_libreoffice(pool, tmp_path):
    pytest.importorskip("msoffcrypto")
    from msoffcrypto.format.ooxml import OOXMLFile
    plain = make_docx(tmp_path / "plain.docx")
    with open(plain, "rb") as f, open(tmp_path / "secret.docx", "wb") as out:
        OOXMLFile(f).encrypt("geheim", out)
    result = pool.convert(tmp_path / "secret.docx", tmp_path / "out")
    assert result.outcome is Outcome.ENCRYPTED
    assert result.attempts == 0


def test_odf_passes_through_after_a_validity_check(pool, tmp_path):
    from odf.opendocument import OpenDocumentText
    from odf.text import P
    doc = OpenDocumentText()
    doc.text.addElement(P(text="schon offen"))
    doc.save(str(tmp_path / "open.odt"))
    result = pool.convert(tmp_path / "open.odt", tmp_path / "out")
    assert result.outcome is Outcome.PASSTHROUGH and result.attempts == 0
    assert Path(result.output).read_bytes() == (tmp_path / "open.odt").read_bytes()

    broken = tmp_path / "broken.odt"
    with zipfile.ZipFile(tmp_path / "open.odt") as zin, zipfile.ZipFile(broken, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item, data[:-40] if item.filename == "content.xml" else data)
    result = pool.convert(broken, tmp_path / "out2")
    # an invalid package is not copied: LibreOffice is asked to read (and repair) it; whatever it
    # makes of it is a repaired conversion, never a pass-through
    assert result.outcome in (Outcome.UNREADABLE, Outcome.CONVERTED) and result.attempts >= 1
    assert result.outcome is Outcome.UNREADABLE or result.repaired
    if result.outcome is Outcome.UNREADABLE:
        assert not (tmp_path / "out2" / "broken.odt").exists()

    unlisted = tmp_path / "unlisted.odt"
    with zipfile.ZipFile(tmp_path / "open.odt") as zin, zipfile.ZipFile(unlisted, "w") as zout:
        for item in zin.infolist():
            if item.filename != "META-INF/manifest.xml":
                zout.writestr(item, zin.read(item))
    result = pool.convert(unlisted, tmp_path / "out3")
    assert result.outcome is Outcome.CONVERTED and result.repaired, result.message
    assert check_package(Path(result.output)) == []


def test_hostile_names_convert(pool, tmp_path):
    names = ["Bericht #1 (final) 100%.docx", "ümlaut & ‘quotes’ ; rm -rf.docx", "-leading-dash.docx",
             "with\nnewline.docx", "日本語の文書.docx"]
    for name in names:
        src = make_docx(tmp_path / name)
        result = pool.convert(src, tmp_path / "out")
        assert result.outcome is Outcome.CONVERTED, (name, result.message)
        assert Path(result.output).name == Path(name).stem + ".odt"


def test_sources_are_never_written(pool, tmp_path):
    """No lock file, no temporary file, no changed time stamp in the folder being migrated."""
    src_dir = tmp_path / "share"
    make_mixed_set(src_dir, 3)
    import docx
    d = docx.Document()
    d.add_paragraph("Text mit Kommentar")
    d.save(src_dir / "commented.docx")
    before = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in src_dir.iterdir()}
    for p in sorted(src_dir.iterdir()):
        assert pool.convert(p, tmp_path / "out").outcome is Outcome.CONVERTED
    time.sleep(0.5)
    after = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in src_dir.iterdir()}
    assert after == before


def test_output_is_atomic(pool, tmp_path):
    """While LibreOffice writes, the final name either does not exist or is a complete package."""
    src = make_heavy_docx(tmp_path / "big.docx", paragraphs=5000)
    out = tmp_path / "out"
    out.mkdir()
    final = out / "big.odt"
    seen_incomplete, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            if final.exists() and check_package(final):
                seen_incomplete.append(True)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = pool.convert(src, out)
    finally:
        stop.set()
        watcher.join()
    assert result.outcome is Outcome.CONVERTED
    assert not seen_incomplete
    assert sorted(p.name for p in out.iterdir()) == ["big.odt"]     # no partial file left behind


# ----------------------------------------------------------------------------- supervision
def _healthy(pool: ConverterPool, n: int) -> bool:
    workers = pool.workers()
    return len(workers) == n and all(w.alive() for w in workers)


def test_a_caller_that_stops_reading_results_does_not_wait_for_a_document_in_flight(tmp_path):
    """Ctrl-C lands where the caller handles a result as often as inside convert_many: the results
    generator is then closed while a document is still converting. Closing it must not wait for
    that document (held here by a LibreOffice that cannot answer, with an hour's timeout: waiting
    would hang the test); closing the pool then ends it."""
    held_doc = make_heavy_docx(tmp_path / "held.docx", paragraphs=15000)
    quick = make_docx(tmp_path / "quick.docx")
    settings = ConversionSettings(workers=2, timeout=3600, runtime_dir=runtime_dir("stop-reading"))
    with ConverterPool(settings) as pool:
        with frozen_offices(offices_reading("held.docx", tmp_path), at_once=False, poll=0.005) as held:
            results = pool.convert_many([(held_doc, tmp_path / "out", None), (quick, tmp_path / "out", None)])
            first = next(results)
            assert first.source == str(quick) and first.outcome is Outcome.CONVERTED
            while not held.frozen:                      # held.docx is open in its (stopped) LibreOffice
                time.sleep(0.01)
            results.close()                             # returns: nothing waits for held.docx
        assert not (tmp_path / "out" / "held.odt").exists()
    assert processes_using(str(settings.runtime_dir)) == []


def test_kill_9_of_a_worker_loses_nothing(tmp_path):
    docs = make_mixed_set(tmp_path / "in", 24)
    settings = ConversionSettings(workers=2, timeout=60, runtime_dir=runtime_dir("kill9"))
    results = []
    with ConverterPool(settings) as pool:
        killed = []

        def killer():
            # wait until conversions are under way, then kill one worker's soffice.bin mid-batch
            while len(results) < 4:
                time.sleep(0.01)
            worker = next(w for w in pool.workers() if isinstance(w, LocalWorker))
            pid = worker.office_pid()
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        t = threading.Thread(target=killer)
        t.start()
        for r in pool.convert_many((d, tmp_path / "out", None) for d in docs):
            results.append(r)
        t.join()
        assert killed
        assert pool.restarts >= 1
        assert _healthy(pool, 2)
    sources = [r.source for r in results]
    assert sorted(sources) == sorted(str(d) for d in docs)          # each exactly once
    assert all(r.outcome is Outcome.CONVERTED for r in results), \
        [(Path(r.source).name, r.outcome, r.message, r.history) for r in results if r.outcome is not Outcome.CONVERTED]
    assert any(r.attempts == 2 and r.history for r in results)      # the victim was retried
    outputs = sorted((tmp_path / "out").iterdir())
    assert len(outputs) == 24 and all(check_package(p) == [] for p in outputs)


def test_a_document_that_kills_libreoffice_twice_is_crashed(tmp_path):
    """Each attempt's LibreOffice dies mid-conversion: retried once on a fresh worker, then `crashed`."""
    heavy = make_heavy_docx(tmp_path / "heavy.docx", paragraphs=20000)
    settings = ConversionSettings(workers=1, timeout=120, runtime_dir=runtime_dir("crash"))
    with ConverterPool(settings) as pool:
        victims = []

        def killer():
            seen = None
            while len(victims) < 2:
                worker = pool.workers()[0] if pool.workers() else None
                if worker is not None and worker.id != seen and worker.alive():
                    seen = worker.id
                    pid = worker.office_pid()
                    # the conversion is under way once this LibreOffice has the document open
                    if pid and wait_until_open(pid, heavy):
                        os.kill(pid, signal.SIGKILL)
                        victims.append(worker.id)
                time.sleep(0.01)

        t = threading.Thread(target=killer, daemon=True)
        t.start()
        result = pool.convert(heavy, tmp_path / "out")
        t.join(30)
        assert victims == ["w1.1", "w1.2"]
        assert result.outcome is Outcome.CRASHED, result.message
        assert result.attempts == 2 and [h.split(":")[0] for h in result.history] == victims
        assert _healthy(pool, 1) and pool.workers()[0].id == "w1.3"
        assert list((tmp_path / "out").iterdir()) == []
        assert pool.convert(make_docx(tmp_path / "next.docx"), tmp_path / "out").outcome is Outcome.CONVERTED


def test_timeout_kills_and_replaces_the_worker(tmp_path):
    """Two workers: the retry goes to the worker started to replace the one that timed out, not to
    the other, idle one (which the message would otherwise wrongly call fresh). LibreOffice is kept
    from answering (frozen_offices), so the document is slow on any machine."""
    slow = make_heavy_docx(tmp_path / "slow.docx", paragraphs=20000)
    quick = make_docx(tmp_path / "quick.docx")
    settings = ConversionSettings(workers=2, timeout=1.5, runtime_dir=runtime_dir("timeout"))
    with ConverterPool(settings) as pool:
        before = {w.id: w for w in pool.workers()}
        with frozen_offices(pool_offices(pool)) as frozen:
            result = pool.convert(slow, tmp_path / "out")
        assert result.outcome is Outcome.TIMEOUT, result.message
        assert result.attempts == 2 and len(result.history) == 2
        assert "1.5 s" in result.message
        first_id, second_id = (h.split(":")[0] for h in result.history)
        slot = first_id.split(".")[0]
        assert first_id in before and second_id == f"{slot}.2"         # the replacement, not the idle one
        assert f"then on the freshly started {second_id}" in result.message
        assert {first_id, second_id} <= set(frozen.frozen)
        first = before[first_id]
        assert not first.alive()
        assert pool.restarts == 2
        assert _healthy(pool, 2) and first not in pool.workers()
        assert {w.id for w in pool.workers()} == {f"{slot}.3"} | (set(before) - {first_id})
        assert not (tmp_path / "out" / "slow.odt").exists()
        assert list((tmp_path / "out").iterdir()) == []            # no staging or partial file left
        pool.settings.timeout = 60
        assert pool.convert(quick, tmp_path / "out").outcome is Outcome.CONVERTED


def test_a_document_that_grows_libreoffice_beyond_the_limit_is_stopped(tmp_path):
    """The worker is killed while converting (not after), replaced, and the document recorded
    too_large without a second try; the pool goes on."""
    heavy = make_heavy_docx(tmp_path / "gross.docx", paragraphs=40000)
    quick = make_docx(tmp_path / "klein.docx")
    settings = ConversionSettings(workers=1, runtime_dir=runtime_dir("memory"))
    with ConverterPool(settings) as pool:
        (worker,) = pool.workers()
        at_rest = worker.rss() / 2**20
        assert at_rest > 0
        pool.settings.memory_limit_mb = int(at_rest) + 40     # a heavy document grows it by far more
        result = pool.convert(heavy, tmp_path / "out")
        assert result.outcome is Outcome.TOO_LARGE, result.message
        assert result.attempts == 1 and f"limit {pool.settings.memory_limit_mb} MiB" in result.message
        assert not worker.alive() and pool.restarts == 1 and _healthy(pool, 1)
        assert not (tmp_path / "out" / "gross.odt").exists()
        pool.settings.memory_limit_mb = 0                     # no limit: the same document converts
        assert pool.convert(heavy, tmp_path / "out").outcome is Outcome.CONVERTED
        assert pool.convert(quick, tmp_path / "out").outcome is Outcome.CONVERTED


def test_workers_are_recycled(tmp_path):
    docs = make_mixed_set(tmp_path / "in", 7)
    settings = ConversionSettings(workers=1, recycle_after=3, runtime_dir=runtime_dir("recycle"))
    with ConverterPool(settings) as pool:
        results = [pool.convert(d, tmp_path / "out") for d in docs]
        assert pool.recycled == 2
        assert _healthy(pool, 1)
    assert [r.worker for r in results] == ["w1.1"] * 3 + ["w1.2"] * 3 + ["w1.3"]
    assert all(r.outcome is Outcome.CONVERTED for r in results)


def test_workers_that_grow_too_big_are_recycled(tmp_path):
    docs = make_mixed_set(tmp_path / "in", 3)
    settings = ConversionSettings(workers=1, recycle_above_mb=1, runtime_dir=runtime_dir("recycle-rss"))
    with ConverterPool(settings) as pool:
        results = [pool.convert(d, tmp_path / "out") for d in docs]
        assert pool.recycled == 3
        deadline = time.monotonic() + 60                  # the last swap happens in the background
        while not _healthy(pool, 1) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _healthy(pool, 1) and pool.workers()[0].id == "w1.4"
    assert [r.worker for r in results] == ["w1.1", "w1.2", "w1.3"]
    assert all(r.outcome is Outcome.CONVERTED for r in results)


def test_remote_worker_joins_the_pool(tmp_path):
    """A unoserver started elsewhere (here: on loopback) serves a pool with no local worker."""
    from converters.workers import _free_port
    port, uno_port = _free_port(), _free_port()
    profile = runtime_dir("remote") / "profile"
    proc = subprocess.Popen([sys.executable, "-m", "converters.soffice_server", "--port", str(port),
                             "--uno-port", str(uno_port), "--profile", str(profile)],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        settings = ConversionSettings(workers=0, remote=[f"127.0.0.1:{port}"], startup_timeout=60)
        deadline = time.monotonic() + 60
        while True:
            try:
                pool = ConverterPool(settings).start()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with pool:
            result = pool.convert(make_xlsx(tmp_path / "r.xlsx"), tmp_path / "out")
        assert result.outcome is Outcome.CONVERTED
        assert result.worker == f"127.0.0.1:{port}"
        assert check_package(Path(result.output)) == []
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ----------------------------------------------------------------------------- hardening
class _CountingHandler(BaseHTTPRequestHandler):
    hits: list[str] = []

    def _answer(self):
        type(self).hits.append(f"{self.command} {self.path}")
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(_PNG)

    do_GET = do_HEAD = do_OPTIONS = do_PROPFIND = _answer

    def log_message(self, *args):
        pass


def _png(width: int = 8, height: int = 8) -> bytes:
    """A valid grey PNG, built with zlib (no imaging library needed)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


_PNG = _png()


def _docx_linking_image(path: Path, url: str) -> Path:
    """A docx whose only picture is linked (not embedded) from `url`."""
    import docx
    import io
    d = docx.Document()
    d.add_paragraph("linked picture below")
    d.add_picture(io.BytesIO(_PNG))
    tmp = path.with_suffix(".embedded.docx")
    d.save(tmp)
    with zipfile.ZipFile(tmp) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.startswith("word/media/"):
                continue
            if item.filename == "word/_rels/document.xml.rels":
                import re
                data = re.sub(rb'Target="media/[^"]+"', f'Target="{url}" TargetMode="External"'.encode(), data)
            if item.filename == "word/document.xml":
                data = data.replace(b"r:embed=", b"r:link=")
            zout.writestr(item, data)
    tmp.unlink()
    return path


@pytest.fixture
def counting_server():
    _CountingHandler.hits = []
    server = HTTPServer(("127.0.0.1", 0), _CountingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_no_remote_resource_is_fetched(pool, tmp_path, counting_server, env_without_proxy):
    url = f"http://127.0.0.1:{counting_server.server_address[1]}/picture.png"
    src = _docx_linking_image(tmp_path / "linked.docx", url)

    result = pool.convert(src, tmp_path / "out")
    time.sleep(1.0)                       # give any late, asynchronous fetch time to arrive
    assert result.outcome is Outcome.CONVERTED
    assert _CountingHandler.hits == []
    assert url.encode() in zipfile.ZipFile(result.output).read("content.xml")   # the link is kept

    # Control: plain LibreOffice does fetch it, so the fixture really tests something.
    subprocess.run(["soffice", "--headless", f"-env:UserInstallation={(tmp_path / 'plain').as_uri()}",
                    "--convert-to", "odt", "--outdir", str(tmp_path / "plain-out"), str(src)],
                   env=env_without_proxy, capture_output=True, timeout=120)
    assert _CountingHandler.hits, "plain soffice did not fetch the linked image: the fixture proves nothing"


def test_closed_pool_leaves_no_process(tmp_path):
    rt = runtime_dir("closing")
    with ConverterPool(ConversionSettings(workers=2, runtime_dir=rt)) as pool:
        assert pool.convert(make_docx(tmp_path / "a.docx"), tmp_path).outcome is Outcome.CONVERTED
        assert len(processes_using(str(rt))) >= 4        # 2 x (worker, soffice launcher/bin)
    time.sleep(0.5)
    assert processes_using(str(rt)) == []


def test_document_macros_never_run(tmp_path, env_without_proxy):
    """A Basic macro bound to the document's load event does not run in a worker.

    The pool passes ODF through without LibreOffice, so the worker is driven directly here: it is
    the worker's hardening (profile and load properties) that stops macros, whatever the format.
    """
    marker = tmp_path / "macro-ran.txt"
    src = make_odt_with_onload_macro(tmp_path / "makro.odt", marker)
    worker = LocalWorker(9, 1, runtime_dir("macro"), "soffice", sys.executable, 60)
    worker.start()
    try:
        worker.convert(src, tmp_path / "out.odt", "writer8", "writer8", 60)
    finally:
        worker.kill()
    assert (tmp_path / "out.odt").is_file()
    assert not marker.exists()

    # Control: LibreOffice with macro security off does run it, so the fixture proves something.
    profile = tmp_path / "lax-profile"
    (profile / "user").mkdir(parents=True)
    (profile / "user" / "registrymodifications.xcu").write_text(
        '<?xml version="1.0" encoding="UTF-8"?><oor:items xmlns:oor="http://openoffice.org/2001/registry">'
        '<item oor:path="/org.openoffice.Office.Common/Security/Scripting">'
        '<prop oor:name="MacroSecurityLevel" oor:op="fuse"><value>0</value></prop></item></oor:items>')
    # opened (not converted: a conversion may close the document before the load event's macro
    # gets its turn), then waited for
    lax = subprocess.Popen(["soffice", "--headless", "--norestore", f"-env:UserInstallation={profile.as_uri()}",
                            str(src)], env=env_without_proxy, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not marker.exists() and time.monotonic() < deadline and lax.poll() is None:
            time.sleep(0.2)
    finally:
        os.killpg(lax.pid, signal.SIGKILL)
        lax.wait()
    assert marker.exists(), "LibreOffice with macros allowed did not run the macro: the fixture proves nothing"


# ----------------------------------------------------------------------------- templates
_MAIN_TYPES = {
    "docx": ("wordprocessingml.document.main+xml", "wordprocessingml.template.main+xml"),
    "xlsx": ("spreadsheetml.sheet.main+xml", "spreadsheetml.template.main+xml"),
    "pptx": ("presentationml.presentation.main+xml", "presentationml.template.main+xml"),
}


def _as_template(src: Path, dst: Path) -> Path:
    """The OOXML file `src` declared as a template (.dotx, .xltx, .potx), as Office saves one."""
    old, new = (f"application/vnd.openxmlformats-officedocument.{x}" for x in _MAIN_TYPES[src.suffix[1:]])
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "[Content_Types].xml":
                assert old.encode() in data
                data = data.replace(old.encode(), new.encode())
            zout.writestr(item, data)
    return dst


@pytest.mark.parametrize("make, ext, fmt, target, mimetype", [
    (make_docx, "docx", "dotx", "ott", "application/vnd.oasis.opendocument.text-template"),
    (make_xlsx, "xlsx", "xltx", "ots", "application/vnd.oasis.opendocument.spreadsheet-template"),
    (make_pptx, "pptx", "potx", "otp", "application/vnd.oasis.opendocument.presentation-template"),
])
def test_office_templates_become_odf_templates(pool, tmp_path, make, ext, fmt, target, mimetype):
    # named like a plain document: the template is recognised by its content, not its name
    src = _as_template(make(tmp_path / f"plain.{ext}"), tmp_path / f"Vorlage.{ext}")
    result = pool.convert(src, tmp_path / "out")
    assert result.outcome is Outcome.CONVERTED, result.message
    assert result.format == fmt and result.target == target
    out = Path(result.output)
    assert out.name == f"Vorlage.{target}"
    assert check_package(out) == []
    assert odf_mimetype(out) == mimetype


# ----------------------------------------------------------------------------- outputs that cannot be written
@pytest.fixture
def immutable_dir(tmp_path):
    """An empty folder that nobody, root included, can create files in (chattr +i)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not possible here (file system or missing capability)")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)


def test_read_only_output_folder_is_an_outcome_not_an_exception(pool, tmp_path, immutable_dir):
    office = make_docx(tmp_path / "brief.docx")
    from odf.opendocument import OpenDocumentText
    odt = OpenDocumentText()
    odt.save(str(tmp_path / "offen.odt"))
    for src in (office, tmp_path / "offen.odt"):
        result = pool.convert(src, immutable_dir)
        assert result.outcome is Outcome.UNWRITABLE, (src.name, result.outcome, result.message)
        assert "could not write the output" in result.message and str(immutable_dir) in result.message
        assert "not at fault" in result.message
        assert result.output is None and result.attempts == 0
    assert list(immutable_dir.iterdir()) == []
    assert pool.convert(office, tmp_path / "ok").outcome is Outcome.CONVERTED


def test_output_name_taken_by_a_folder_is_an_outcome(pool, tmp_path):
    """Publishing (the rename after LibreOffice wrote the file) fails: the batch goes on."""
    src = make_docx(tmp_path / "bericht.docx")
    blocker = tmp_path / "out" / "bericht.odt"
    (blocker / "inside").mkdir(parents=True)
    result = pool.convert(src, tmp_path / "out")
    assert result.outcome is Outcome.UNWRITABLE, result.message
    assert result.attempts == 1 and "could not write the output" in result.message
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["bericht.odt"]    # no staging left
    assert blocker.is_dir()


def test_source_that_vanished_is_unreadable(pool, tmp_path):
    result = pool.convert(tmp_path / "weg.docx", tmp_path / "out")
    assert result.outcome is Outcome.UNREADABLE and "cannot read the file" in result.message
    assert result.attempts == 0


# ----------------------------------------------------------------------------- remote workers that go away
class _Silent:
    """A TCP port on loopback that accepts connections but never answers (a hung unoserver)."""

    def __init__(self, family=None, host="127.0.0.1"):
        import socket
        self.sock = socket.socket(family or socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((host, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


def _ends(call, seconds: float = 60):
    """Run `call` in a thread; (finished, its value or exception)."""
    box = {}

    def run():
        try:
            box["value"] = call()
        except BaseException as exc:  # noqa: BLE001
            box["value"] = exc
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive(), box.get("value")


def test_liveness_probe_of_a_hung_remote_worker_ends():
    """unoserver answers one request at a time: behind a hung conversion info() never returns."""
    from converters.workers import RemoteWorkerHandle
    silent = _Silent()
    try:
        handle = RemoteWorkerHandle("127.0.0.1", silent.port, probe_timeout=1.0)
        finished, alive = _ends(handle.alive)
        assert finished, "the liveness probe is still waiting for an answer"
        assert alive is False
    finally:
        silent.close()


def test_ipv6_remote_worker_addresses_keep_their_brackets():
    import socket
    from urllib.parse import urlsplit
    from converters.workers import RemoteWorkerHandle
    from core.settings import RemoteWorker
    remote = RemoteWorker.parse("[::1]:2003")
    assert (remote.host, remote.port, str(remote)) == ("::1", 2003, "[::1]:2003")
    assert ConversionSettings(workers=0, remote="[::1]:2003,10.0.0.5:2003").remote[0] == remote
    with pytest.raises(ValueError, match="brackets"):
        RemoteWorker.parse("::1:2003")
    handle = RemoteWorkerHandle(remote.host, remote.port)
    assert handle.id == "[::1]:2003"
    for url in (handle.url, remote.url, f"{handle._uno.protocol}://{handle._uno.server}:{handle._uno.port}"):
        parts = urlsplit(url)
        assert (parts.hostname, parts.port) == ("::1", 2003), url
    if not socket.has_ipv6:
        return
    try:
        silent = _Silent(socket.AF_INET6, "::1")
    except OSError:
        return                                   # no IPv6 loopback on this machine
    try:
        finished, alive = _ends(RemoteWorkerHandle("::1", silent.port, probe_timeout=1.0).alive)
        assert finished and alive is False
    finally:
        silent.close()


def test_remote_worker_on_a_closed_port_stops_the_start(tmp_path):
    from converters.workers import _free_port
    port = _free_port()                         # nothing listens there
    from core.errors import FatalError
    with pytest.raises(FatalError, match=f"127.0.0.1:{port}"):
        ConverterPool(ConversionSettings(workers=0, remote=[f"127.0.0.1:{port}"])).start()


def _start_remote_worker(name: str) -> tuple[subprocess.Popen, int]:
    from converters.workers import _free_port, probe
    port, uno_port = _free_port(), _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "converters.soffice_server", "--port", str(port),
                             "--uno-port", str(uno_port), "--profile", str(runtime_dir(name) / "profile")],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 90
    while not probe("127.0.0.1", port, timeout=2):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail("the remote worker did not start")
        time.sleep(0.3)
    return proc, port


def test_pool_of_a_remote_worker_that_went_away_ends(tmp_path):
    """Its only (remote) worker dies mid-run: the pool says so within `remote_give_up`, it does not wait for ever."""
    from core.errors import FatalError
    proc, port = _start_remote_worker("remote-gone")
    try:
        settings = ConversionSettings(workers=0, remote=[f"127.0.0.1:{port}"], remote_cooldown=0.5,
                                      remote_give_up=3)
        with ConverterPool(settings) as pool:
            assert pool.convert(make_docx(tmp_path / "a.docx"), tmp_path / "out").outcome is Outcome.CONVERTED
            os.killpg(proc.pid, signal.SIGKILL)          # the port is closed from now on
            proc.wait()
            finished, outcome = _ends(lambda: pool.convert(make_docx(tmp_path / "b.docx"), tmp_path / "out"), 120)
            assert finished, "the pool waits for ever for a remote worker that is gone"
            assert isinstance(outcome, FatalError), outcome
            assert f"remote worker 127.0.0.1:{port} has not answered" in str(outcome)
            assert pool.size == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# ----------------------------------------------------------------------------- signals
def test_sigterm_while_the_main_thread_holds_the_worker_lock_does_not_deadlock():
    """The SIGTERM handler kills every worker group; the main thread may hold that registry's lock
    (starting or killing a worker) when the signal arrives."""
    code = ("import os, signal, time\n"
            "from converters import workers\n"
            "from converters.pool import _install_signal_handlers\n"
            "_install_signal_handlers()\n"
            "with workers._GROUPS_LOCK:\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(30)\n")
    root = Path(__file__).resolve().parents[1]
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the SIGTERM handler deadlocked on the worker registry's lock")
    assert done.returncode == 128 + signal.SIGTERM, done.stderr.decode()[-2000:]


# ----------------------------------------------------------------------------- hardening: profile settings
def _schema_props() -> dict[str, tuple[str, str | None]]:
    """'/package.Component/group/…/prop' -> (xs type, shipped default) from the installed .xcd files."""
    import glob
    import xml.etree.ElementTree as ET
    oor = "{http://openoffice.org/2001/registry}"
    props: dict[str, tuple[str, str | None]] = {}

    def walk(node, path):
        for child in node:
            name = child.get(f"{oor}name")
            if child.tag == "group" and name:
                walk(child, f"{path}/{name}")
            elif child.tag == "prop" and name:
                value = child.find("value")
                props[f"{path}/{name}"] = (child.get(f"{oor}type"), None if value is None else (value.text or ""))

    files = glob.glob("/usr/lib/libreoffice/share/registry/*.xcd")
    if not files:
        pytest.skip("LibreOffice's registry (/usr/lib/libreoffice/share/registry) is not installed")
    for xcd in files:
        for schema in ET.parse(xcd).getroot().iter(f"{oor}component-schema"):
            component = schema.find("component")
            if component is not None:
                walk(component, f"/{schema.get(f'{oor}package')}.{schema.get(f'{oor}name')}")
    return props


def test_profile_settings_exist_in_libreoffice_schema_and_links_are_never_updated():
    """Every setting the worker writes names a real property of the right type (a typo would be
    ignored silently by LibreOffice); link updates are set to the value that means "never".

    Writer numbers its link modes as sw/inc/linkenum.hxx `UpdateLinks` {NEVER, MANUAL, AUTOMATIC,
    GLOBALSETTING}, Calc as sc/inc/global.hxx `ScLkUpdMode` {LM_ALWAYS, LM_NEVER, LM_ON_DEMAND}: the
    shipped defaults, both "on request", must read 1 (MANUAL) and 2 (LM_ON_DEMAND), which ties
    these enums to the installed schema.
    """
    from converters.soffice_server import PROFILE_SETTINGS
    props = _schema_props()
    for path, name, type_, _value in PROFILE_SETTINGS:
        if "['" in path:                        # an entry of a set (Jobs), not a schema property
            continue
        key = f"{path}/{name}"
        assert key in props, f"{key} is not a LibreOffice setting"
        assert props[key][0] == f"xs:{type_}", (key, props[key])
    writer = "/org.openoffice.Office.Writer/Content/Update/Link"
    calc = "/org.openoffice.Office.Calc/Content/Update/Link"
    assert props[writer][1] == "1" and props[calc][1] == "2"     # MANUAL / LM_ON_DEMAND: "on request"
    written = {f"{p}/{n}": v for p, n, _, v in PROFILE_SETTINGS}
    assert written[writer] == "0", "Writer: 0 is NEVER (2 would be AUTOMATIC, 'always update')"
    assert written[calc] == "1", "Calc: 1 is LM_NEVER"


def test_a_kept_profile_gets_the_corrected_settings(tmp_path):
    """A profile kept from an earlier version (UMSTIEG_RUNTIME_DIR) with Writer's links on "always"."""
    from converters.soffice_server import prepare_profile
    prepare_profile(tmp_path / "p")
    xcu = tmp_path / "p" / "user" / "registrymodifications.xcu"
    fresh = xcu.read_text()
    old = fresh.replace('Writer/Content/Update"><prop oor:name="Link" oor:op="fuse"><value>0<',
                        'Writer/Content/Update"><prop oor:name="Link" oor:op="fuse"><value>2<')
    assert old != fresh
    xcu.write_text(old)
    prepare_profile(tmp_path / "p")
    assert xcu.read_text() == fresh


# ----------------------------------------------------------------------------- the session's orphan check
def test_orphan_check_sees_pools_outside_the_test_runtime(tmp_path):
    """A pool whose profiles live elsewhere (tmp_path, the default temporary folder of the flows)
    is still found by the end-of-session check, through the marker its processes inherit."""
    from conftest import RUNTIME_BASE, session_processes
    with ConverterPool(ConversionSettings(workers=1, runtime_dir=tmp_path / "rt")) as pool:
        worker = pool.workers()[0]
        pids = {worker.process.pid, worker.office_pid()}
        assert pids <= {p.pid for p in session_processes()}
        assert not pids & {p.pid for p in processes_using(str(RUNTIME_BASE))}
    deadline = time.monotonic() + 10
    while pids & {p.pid for p in session_processes()}:
        assert time.monotonic() < deadline, "the closed pool left processes behind"
        time.sleep(0.2)

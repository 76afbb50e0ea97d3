"""Shared fixtures: the developer corpus, generated documents, a real LibreOffice pool."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import psutil
import pytest

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"

# Every pool the tests start keeps its profiles under this directory, so the end of the session
# can prove that no LibreOffice process of ours survived.
RUNTIME_BASE = Path(tempfile.mkdtemp(prefix="umstieg-test-runtime-"))


def processes_using(marker: str) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line mentions `marker`."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            continue
    return found


def pytest_sessionfinish(session, exitstatus):
    leftovers = processes_using(str(RUNTIME_BASE))
    if leftovers:
        for p in leftovers:
            p.kill()
        session.exitstatus = 1
        print(f"\nFAILED: {len(leftovers)} LibreOffice/worker process(es) outlived the tests: "
              + ", ".join(f"{p.pid} {p.name()}" for p in leftovers))


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The developer corpus (../shared/corpus); tests that need it skip when it is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"corpus tests skipped: {CORPUS} not found (the developer corpus is not on this machine)")
    return CORPUS


def runtime_dir(name: str) -> Path:
    path = RUNTIME_BASE / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def pool():
    """Two real LibreOffice workers shared by the tests that do not break workers on purpose."""
    from converters.pool import ConverterPool
    from core.settings import ConversionSettings

    with ConverterPool(ConversionSettings(workers=2, timeout=150, runtime_dir=runtime_dir("shared"))) as p:
        yield p


# ----------------------------------------------------------------------- generated documents
def make_docx(path: Path, paragraphs: int = 3, seed: int = 0) -> Path:
    import docx
    rnd = random.Random(seed)
    d = docx.Document()
    d.add_heading(f"Document {seed}", level=1)
    for i in range(paragraphs):
        d.add_paragraph(" ".join(rnd.choice(["Amt", "Bürger", "Antrag", "Frist", "Bescheid", "Akte"])
                                 for _ in range(12)))
    table = d.add_table(rows=2, cols=2)
    table.cell(0, 0).text = "Spalte"
    d.save(path)
    return path


def make_xlsx(path: Path, rows: int = 5, seed: int = 0) -> Path:
    import openpyxl
    wb = openpyxl.Workbook()
    ws = wb.active
    for r in range(1, rows + 1):
        ws.append([r, r * seed, f"Zeile {r}", f"=A{r}*2"])
    wb.save(path)
    return path


def make_pptx(path: Path, slides: int = 2, seed: int = 0) -> Path:
    from pptx import Presentation
    prs = Presentation()
    for i in range(slides):
        s = prs.slides.add_slide(prs.slide_layouts[1])
        s.shapes.title.text = f"Folie {i} / {seed}"
        s.placeholders[1].text = "Inhalt"
    prs.save(path)
    return path


def make_mixed_set(folder: Path, count: int) -> list[Path]:
    """`count` small docx/xlsx/pptx files, in rotation."""
    folder.mkdir(parents=True, exist_ok=True)
    makers = [(make_docx, "docx"), (make_xlsx, "xlsx"), (make_pptx, "pptx")]
    paths = []
    for i in range(count):
        make, ext = makers[i % 3]
        paths.append(make(folder / f"doc{i:03d}.{ext}", seed=i))
    return paths


@pytest.fixture
def env_without_proxy():
    """A copy of the environment with no proxy variables (for control runs of plain soffice)."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}

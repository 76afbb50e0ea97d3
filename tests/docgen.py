"""Small, real Office documents generated for tests and benchmarks (python-docx, openpyxl, python-pptx)."""

from __future__ import annotations

import random
from pathlib import Path


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



"""Regenerates the bundled sample folder (samples/documents): small, license-free Office files.

Run: .venv/bin/python samples/generate.py   (the files are committed; this records how they were made)
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import docx
import openpyxl
from docx.shared import Pt
from odf.opendocument import OpenDocumentText
from odf.text import H, P
from pptx import Presentation
from pptx.util import Inches

HERE = Path(__file__).resolve().parent / "documents"


def letter(path: Path) -> None:
    d = docx.Document()
    d.core_properties.title = "Umzug der Bürgerdienste"
    d.core_properties.author = "Referat IT"
    d.add_heading("Umzug der Bürgerdienste auf offene Software", level=1)
    d.add_paragraph("Sehr geehrte Damen und Herren,")
    d.add_paragraph("zum 1. März stellen wir Post, Kalender und Ablage auf Nextcloud und "
                    "Open-Xchange um. Ihre Dokumente werden in das OpenDocument-Format überführt.")
    d.add_heading("Zeitplan", level=2)
    table = d.add_table(rows=4, cols=3)
    table.style = "Table Grid"
    for row, cells in zip(table.rows, [("Phase", "Beginn", "Abteilungen"), ("Pilot", "13.01.", "Bürgeramt"),
                                        ("Hauptlauf", "10.02.", "alle"), ("Delta", "28.02.", "alle")]):
        for cell, text in zip(row.cells, cells):
            cell.text = text
    d.add_paragraph("Fragen beantwortet das Migrationsteam.", style="List Bullet")
    run = d.add_paragraph().add_run("Mit freundlichen Grüßen")
    run.font.size = Pt(12)
    d.save(path)


def budget(path: Path) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Haushalt 2027"
    ws.append(["Posten", "Q1", "Q2", "Q3", "Q4", "Summe"])
    for i, name in enumerate(["Lizenzen", "Schulung", "Betrieb", "Migration"], start=2):
        ws.append([name, 1000 * i, 1100 * i, 900 * i, 1200 * i, f"=SUM(B{i}:E{i})"])
    ws.append(["Gesamt", "=SUM(B2:B5)", "=SUM(C2:C5)", "=SUM(D2:D5)", "=SUM(E2:E5)", "=SUM(F2:F5)"])
    ws["H1"] = "Stand"
    ws["H2"] = dt.date(2026, 11, 23)
    wb.create_sheet("Notizen")["A1"] = "Zahlen in Euro"
    wb.save(path)


def slides(path: Path) -> None:
    prs = Presentation()
    s = prs.slides.add_slide(prs.slide_layouts[0])
    s.shapes.title.text = "Migration nach ODF"
    s.placeholders[1].text = "Pilotabteilung Bürgeramt"
    s = prs.slides.add_slide(prs.slide_layouts[1])
    s.shapes.title.text = "Was sich ändert"
    body = s.placeholders[1].text_frame
    body.text = "Post und Kalender: Open-Xchange"
    body.add_paragraph().text = "Dateien: Nextcloud"
    body.add_paragraph().text = "Dokumente: OpenDocument"
    s.notes_slide.notes_text_frame.text = "Sprechernotiz: Fragen sammeln."
    tb = s.shapes.add_textbox(Inches(1), Inches(6), Inches(6), Inches(1))
    tb.text_frame.text = "umstieg"
    prs.save(path)


def protocol_odt(path: Path) -> None:
    doc = OpenDocumentText()
    doc.text.addElement(H(outlinelevel=1, text="Protokoll der Lenkungsgruppe"))
    doc.text.addElement(P(text="Beschluss: Der Pilot beginnt im Januar."))
    doc.save(str(path))


def department_homes(root: Path) -> None:
    """Home folders of the example department (deployments/buergeramt.yaml)."""
    anna = root / "anna.schmidt"
    ben = root / "ben.mueller"
    (anna / "Projekte").mkdir(parents=True, exist_ok=True)
    (ben / "Haushalt").mkdir(parents=True, exist_ok=True)
    letter(anna / "Anschreiben.docx")
    slides(anna / "Projekte" / "Pilot.pptx")
    (anna / "Projekte" / "Notizen.txt").write_text("Termine mit dem Referat IT abstimmen.\n", encoding="utf-8")
    budget(ben / "Haushalt" / "Haushalt 2027.xlsx")
    protocol_odt(ben / "Protokoll.odt")
    (ben / "Memo.rtf").write_text(
        r"{\rtf1\ansi\deff0{\fonttbl{\f0 Liberation Serif;}}\f0\fs24 {\b Memo:} Umzug im Januar.\par}",
        encoding="ascii")


def main() -> None:
    department_homes(HERE.parent / "department" / "home")
    HERE.mkdir(parents=True, exist_ok=True)
    (HERE / "Referat IT").mkdir(exist_ok=True)
    letter(HERE / "Anschreiben.docx")
    budget(HERE / "Referat IT" / "Haushalt 2027.xlsx")
    slides(HERE / "Referat IT" / "Pilot.pptx")
    protocol_odt(HERE / "Protokoll.odt")
    (HERE / "Memo.rtf").write_text(
        r"{\rtf1\ansi\deff0{\fonttbl{\f0 Liberation Serif;}}\f0\fs24 {\b Memo:} Die Ablage zieht um.\par}",
        encoding="ascii")
    (HERE / "LIESMICH.txt").write_text("Diese Datei ist kein Office-Dokument und bleibt, wie sie ist.\n",
                                       encoding="utf-8")


if __name__ == "__main__":
    main()

"""The routing table: which Office formats umstieg converts, to what, through which filters.

Filter names are LibreOffice's internal import/export filter names (LibreOffice 7.4). Passing the
import filter chosen from the sniffed content, instead of letting LibreOffice guess from the
extension, is what stops random bytes named `.docx` from being imported as 16 s of plain text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Family", "OfficeFormat", "FORMATS", "ODF_FORMATS", "OFFICE_EXTENSIONS", "by_name", "target_of"]


class Family(StrEnum):
    """The kind of document, which decides the ODF target."""

    TEXT = "text"
    SPREADSHEET = "spreadsheet"
    PRESENTATION = "presentation"


@dataclass(frozen=True)
class OfficeFormat:
    """One source format: its name (the usual extension), family and LibreOffice filters."""

    name: str
    family: Family
    template: bool
    import_filter: str | None   # None: ODF, passed through without LibreOffice
    description: str

    @property
    def target(self) -> str:
        """The ODF extension this format converts to (templates to ODF templates)."""
        base = {Family.TEXT: "od{}t", Family.SPREADSHEET: "od{}s", Family.PRESENTATION: "od{}p"}[self.family]
        if self.import_filter is None:          # ODF already: keep its own extension
            return self.name
        return ("ot" + base[-1]) if self.template else base.format("")

    @property
    def export_filter(self) -> str:
        """LibreOffice export filter that writes `target`."""
        app = {Family.TEXT: "writer8", Family.SPREADSHEET: "calc8", Family.PRESENTATION: "impress8"}[self.family]
        return app + ("_template" if self.template else "")

    @property
    def is_odf(self) -> bool:
        return self.import_filter is None


_T, _S, _P = Family.TEXT, Family.SPREADSHEET, Family.PRESENTATION

FORMATS: dict[str, OfficeFormat] = {f.name: f for f in [
    # word processing
    OfficeFormat("doc", _T, False, "MS Word 97", "Word 97-2003 document"),
    OfficeFormat("dot", _T, True, "MS Word 97 Vorlage", "Word 97-2003 template"),
    OfficeFormat("docx", _T, False, "MS Word 2007 XML", "Word document"),
    OfficeFormat("docm", _T, False, "MS Word 2007 XML VBA", "Word macro-enabled document"),
    OfficeFormat("dotx", _T, True, "MS Word 2007 XML Template", "Word template"),
    OfficeFormat("dotm", _T, True, "MS Word 2007 XML Template", "Word macro-enabled template"),
    OfficeFormat("rtf", _T, False, "Rich Text Format", "Rich Text Format"),
    OfficeFormat("wordml", _T, False, "MS Word 2003 XML", "Word 2003 XML (WordprocessingML)"),
    # spreadsheets
    OfficeFormat("xls", _S, False, "MS Excel 97", "Excel 97-2003 workbook"),
    OfficeFormat("xlt", _S, True, "MS Excel 97 Vorlage/Template", "Excel 97-2003 template"),
    OfficeFormat("xlsx", _S, False, "Calc MS Excel 2007 XML", "Excel workbook"),
    OfficeFormat("xlsm", _S, False, "Calc MS Excel 2007 VBA XML", "Excel macro-enabled workbook"),
    OfficeFormat("xltx", _S, True, "Calc MS Excel 2007 XML Template", "Excel template"),
    OfficeFormat("xltm", _S, True, "Calc MS Excel 2007 XML Template", "Excel macro-enabled template"),
    OfficeFormat("xlsb", _S, False, "Calc MS Excel 2007 Binary", "Excel binary workbook"),
    OfficeFormat("spreadsheetml", _S, False, "MS Excel 2003 XML", "Excel 2003 XML (SpreadsheetML)"),
    # presentations
    OfficeFormat("ppt", _P, False, "MS PowerPoint 97", "PowerPoint 97-2003 presentation"),
    OfficeFormat("pps", _P, False, "MS PowerPoint 97 AutoPlay", "PowerPoint 97-2003 slide show"),
    OfficeFormat("pot", _P, True, "MS PowerPoint 97 Vorlage", "PowerPoint 97-2003 template"),
    OfficeFormat("pptx", _P, False, "Impress MS PowerPoint 2007 XML", "PowerPoint presentation"),
    OfficeFormat("pptm", _P, False, "Impress MS PowerPoint 2007 XML VBA", "PowerPoint macro-enabled presentation"),
    OfficeFormat("ppsx", _P, False, "Impress MS PowerPoint 2007 XML AutoPlay", "PowerPoint slide show"),
    OfficeFormat("ppsm", _P, False, "Impress MS PowerPoint 2007 XML AutoPlay", "PowerPoint macro-enabled slide show"),
    OfficeFormat("potx", _P, True, "Impress MS PowerPoint 2007 XML Template", "PowerPoint template"),
    OfficeFormat("potm", _P, True, "Impress MS PowerPoint 2007 XML Template", "PowerPoint macro-enabled template"),
    # OpenDocument: passed through after a validity check
    OfficeFormat("odt", _T, False, None, "OpenDocument text"),
    OfficeFormat("ott", _T, True, None, "OpenDocument text template"),
    OfficeFormat("ods", _S, False, None, "OpenDocument spreadsheet"),
    OfficeFormat("ots", _S, True, None, "OpenDocument spreadsheet template"),
    OfficeFormat("odp", _P, False, None, "OpenDocument presentation"),
    OfficeFormat("otp", _P, True, None, "OpenDocument presentation template"),
]}

ODF_FORMATS = {name for name, f in FORMATS.items() if f.is_odf}

#: Extensions that claim to be an Office document. A file with one of these whose bytes are
#: not an Office format is `unreadable`; any other unknown file is `unsupported`.
OFFICE_EXTENSIONS = frozenset(FORMATS) - {"wordml", "spreadsheetml"}


def by_name(name: str) -> OfficeFormat:
    """The format called `name` (its usual extension, lower case)."""
    return FORMATS[name]


def target_of(name: str) -> str:
    """The ODF extension a format converts to."""
    return FORMATS[name].target

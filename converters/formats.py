"""The routing table: which Office formats umstieg converts, to what, through which filters.

Filter names are LibreOffice's internal import/export filter names (LibreOffice 7.4, as its
registry, share/registry/*.xcd, defines them). Passing the import filter chosen from the sniffed
content, instead of letting LibreOffice guess from the extension, is what stops random bytes named
`.docx` from being imported as 16 s of plain text.

Besides the formats that are file extensions (`doc`, `xlsx` ...), the table holds what older or
mislabelled files really are: Word 6.0/95 and Word for Windows 1.x/2.0 documents, Excel 2.x-4.0
worksheets and Excel 5.0/95 workbooks, PowerPoint 4.0/95 presentations, and plain text, HTML,
SYLK or WordPerfect files carrying an Office extension. Each is loaded with the filter
LibreOffice's own type detection picks for it (checked with LibreOffice 7.4.7's TypeDetection on
the corpus): "MS Word 95", "MS WinWord 5", "MS Excel 4.0", "MS Excel 95", "PowerPoint 3", "Text",
"HTML (StarWriter)" ... Their names are not extensions (`doc6`, `xls4` ...), so that a file's
extension never selects them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Family", "OfficeFormat", "FORMATS", "ODF_FORMATS", "OFFICE_EXTENSIONS", "LEGACY_FORMATS", "DETECT",
           "PLAIN_TEXT_FILTERS", "by_name", "target_of"]

#: The import filter of formats LibreOffice is left to recognise itself (no FilterName on load).
DETECT = ""

#: Import filters that take any bytes as plain text: LibreOffice's last resort when it recognises
#: nothing, which on binary data makes a document of gibberish, not a conversion.
PLAIN_TEXT_FILTERS = frozenset({"Text", "Text (encoded)", "Text - txt - csv (StarCalc)", "Text (StarWriter/Web)",
                                "Text (encoded) (StarWriter/Web)"})


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
    import_filter: str | None   # None: ODF, passed through without LibreOffice; DETECT: LibreOffice's type detection
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

    @property
    def detected(self) -> bool:
        """Whether LibreOffice's type detection chooses the import filter (none is given)."""
        return self.import_filter == DETECT


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
    OfficeFormat("doc6", _T, False, "MS Word 95", "Word 6.0/95 document"),
    OfficeFormat("dot6", _T, True, "MS Word 95 Vorlage", "Word 6.0/95 template"),
    OfficeFormat("winword2", _T, False, "MS WinWord 5", "Word for Windows 1.x/2.0 document"),
    OfficeFormat("wordperfect", _T, False, "WordPerfect", "WordPerfect document"),
    OfficeFormat("text-writer", _T, False, "Text", "plain text"),
    OfficeFormat("html-writer", _T, False, "HTML (StarWriter)", "HTML document"),
    OfficeFormat("detect-writer", _T, False, DETECT, "older word-processing file"),
    # spreadsheets
    OfficeFormat("xls", _S, False, "MS Excel 97", "Excel 97-2003 workbook"),
    OfficeFormat("xlt", _S, True, "MS Excel 97 Vorlage/Template", "Excel 97-2003 template"),
    OfficeFormat("xlsx", _S, False, "Calc MS Excel 2007 XML", "Excel workbook"),
    OfficeFormat("xlsm", _S, False, "Calc MS Excel 2007 VBA XML", "Excel macro-enabled workbook"),
    OfficeFormat("xltx", _S, True, "Calc MS Excel 2007 XML Template", "Excel template"),
    OfficeFormat("xltm", _S, True, "Calc MS Excel 2007 XML Template", "Excel macro-enabled template"),
    OfficeFormat("xlsb", _S, False, "Calc MS Excel 2007 Binary", "Excel binary workbook"),
    OfficeFormat("spreadsheetml", _S, False, "MS Excel 2003 XML", "Excel 2003 XML (SpreadsheetML)"),
    OfficeFormat("xls5", _S, False, "MS Excel 95", "Excel 5.0/95 workbook"),
    OfficeFormat("xlt5", _S, True, "MS Excel 95 Vorlage/Template", "Excel 5.0/95 template"),
    OfficeFormat("xls4", _S, False, "MS Excel 4.0", "Excel 2.x-4.0 worksheet"),
    OfficeFormat("sylk", _S, False, "SYLK", "SYLK spreadsheet"),
    OfficeFormat("text-calc", _S, False, "Text - txt - csv (StarCalc)", "plain text or CSV"),
    OfficeFormat("html-calc", _S, False, "calc_HTML_WebQuery", "HTML table"),
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
    OfficeFormat("ppt95", _P, False, "PowerPoint 3", "PowerPoint 4.0/95 presentation"),
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
OFFICE_EXTENSIONS = frozenset({
    "doc", "dot", "docx", "docm", "dotx", "dotm", "rtf", "xls", "xlt", "xlsx", "xlsm", "xltx", "xltm", "xlsb",
    "ppt", "pps", "pot", "pptx", "pptm", "ppsx", "ppsm", "potx", "potm", "odt", "ott", "ods", "ots", "odp", "otp"})

#: Formats from before Office 97 (and Office 97-2003 binaries): the risk scan flags them.
LEGACY_FORMATS = frozenset({"doc", "dot", "xls", "xlt", "ppt", "pps", "pot", "doc6", "dot6", "winword2", "xls5",
                            "xlt5", "xls4", "ppt95", "wordperfect"})


def by_name(name: str) -> OfficeFormat:
    """The format called `name` (its usual extension, lower case)."""
    return FORMATS[name]


def target_of(name: str) -> str:
    """The ODF extension a format converts to."""
    return FORMATS[name].target

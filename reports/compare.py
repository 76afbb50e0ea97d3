"""Compare what the source and the ODF output hold: one `Check` per measured feature.

A check records both sides (what was kept is as much part of the proof as what was lost) and the
points it deducts. Features measured on one side only are not compared: a legacy reader that does
not count tables cannot say that tables were lost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from converters.formats import Family
from reports.facts import Facts, PageSetup, SheetFacts
from reports.presentations import SHAPE_COUNTS
from reports.scoring import FidelitySettings
from reports.spreadsheets import VOLATILE, XLS_BIFF4_READER, same_value
from reports.text import TextBag, containment, lost_words, similarity

__all__ = ["Check", "compare", "count_check", "label", "LABELS"]


@dataclass
class Check:
    """One measured feature on both sides, and what its difference costs."""

    name: str
    source: Any
    output: Any
    points: float = 0.0
    detail: str = ""

    def to_json(self) -> dict:
        data = asdict(self)
        data["points"] = round(self.points, 2)
        return data


#: Words a person reads for each check.
LABELS: dict[str, str] = {
    "text": "text", "words": "words", "characters": "characters", "package": "ODF package",
    "metadata": "metadata", "not_measured": "structure not compared",
    "paragraphs": "paragraphs with text", "headings": "headings", "lists": "list paragraphs",
    "tables": "tables", "table_shapes": "table rows × columns", "table_text": "table text",
    "images": "pictures", "images_inline": "inline pictures", "images_floating": "floating pictures",
    "objects": "embedded objects", "charts": "charts", "equations": "equations", "smartart": "SmartArt",
    "text_boxes": "text boxes", "shapes": "drawing shapes", "footnotes": "footnotes", "endnotes": "endnotes",
    "comments": "comments", "changes": "tracked changes", "format_changes": "tracked format changes",
    "fields": "fields", "bookmarks": "bookmarks", "hyperlinks": "hyperlinks", "sections": "sections",
    "headers": "distinct headers", "footers": "distinct footers", "page_size": "page size",
    "margins": "page margins",
    "sheets": "sheets", "sheet_names": "sheet names and order", "hidden_sheets": "hidden sheets",
    "values": "cell values", "formulas": "formulas", "recalculated": "recalculated formula values",
    "new_errors": "new error cells", "used_range": "used range", "merged": "merged cells",
    "pivot_values": "pivot table cells", "rows_compared": "rows compared",
    "validations": "data validations", "conditional_formats": "conditional formats",
    "autofilters": "autofilters", "pivot_tables": "pivot tables", "names": "defined names",
    "protected": "protected sheets", "structure_protected": "workbook structure protection",
    "slides": "slides", "slide_text": "slide text", "hidden_slides": "hidden slides",
    "pictures": "pictures", "media": "audio and video", "groups": "shape groups", "connectors": "connectors",
    "notes": "slides with speaker notes", "transitions": "slide transitions", "animations": "animation effects",
    "pages": "pages", "visual": "page images",
}

# How far a count may differ before it costs points (a share of the source's count): LibreOffice
# legitimately merges or splits some things (adjacent tracked changes, list paragraphs, fields
# inside indexes).
_TOLERANCE = {"paragraphs": 0.02, "lists": 0.1, "changes": 0.5, "format_changes": 0.5, "fields": 0.2,
              "bookmarks": 0.1, "shapes": 0.2, "animations": 0.2, "connectors": 0.2}
# The same, as a number of items. A continuous Word section break becomes a text section in ODF
# when its columns differ, and nothing at all when they do not: one section more or less is how
# ODF represents the same layout (a lost page setup is charged by the page checks).
_ABS_TOLERANCE = {"sections": 1}

_WORD_COUNTS = ("paragraphs", "headings", "lists", "tables", "images", "images_inline", "images_floating",
                "objects", "charts", "equations", "text_boxes", "shapes", "footnotes", "endnotes",
                "comments", "changes", "format_changes", "fields", "bookmarks", "hyperlinks", "sections",
                "headers", "footers")
_SHEET_COUNTS = ("sheets", "hidden_sheets", "merged", "validations", "conditional_formats", "autofilters",
                 "comments", "hyperlinks", "charts", "pivot_tables", "names", "protected", "structure_protected")
_SLIDE_COUNTS = ("slides", "hidden_slides") + tuple(SHAPE_COUNTS.values()) + ("notes", "comments", "transitions",
                                                                             "animations")


def label(name: str) -> str:
    """The words a person reads for a check's name ("part:comments" -> "text of comments")."""
    if name.startswith("part:"):
        return f"text of {name[5:]}"
    return LABELS.get(name, name.replace("_", " "))


_label = label


def _points(weight: float, share: float) -> float:
    """Points for losing `share` (0..1) of something worth `weight`; any loss costs at least 0.1."""
    if share <= 0 or weight <= 0:
        return 0.0
    return max(0.1, round(weight * min(1.0, share), 2))


def count_check(name: str, source: int, output: int, settings: FidelitySettings) -> Check:
    """Compare one count: losses cost in proportion, additions half as much, within a tolerance."""
    check = Check(name, source, output)
    if source == output:
        return check
    tolerance = max(_TOLERANCE.get(name, 0.0) * max(source, 1), _ABS_TOLERANCE.get(name, 0))
    diff = output - source
    if abs(diff) <= tolerance:
        check.detail = f"{_label(name)}: {source} in the source, {output} in the ODF (within tolerance)"
        return check
    share = (-diff if diff < 0 else 0.5 * diff) / max(source, 1)
    check.points = _points(settings.weight(name), share)
    check.detail = f"{_label(name)}: {source} in the source, {output} in the ODF"
    return check


def compare(src: Facts, out: Facts, settings: FidelitySettings) -> list[Check]:
    """Every check that both readers measured, with its deduction."""
    checks: list[Check] = []
    checks += _text_checks(src, out, settings)
    names: tuple[str, ...]
    if src.family is Family.TEXT:
        checks += _word_checks(src, out, settings)
        names = _WORD_COUNTS
    elif src.family is Family.SPREADSHEET:
        checks += _sheet_checks(src, out, settings)
        names = _SHEET_COUNTS
    else:
        checks += _slide_checks(src, out, settings)
        names = _SLIDE_COUNTS
    done = {c.name for c in checks}
    for name in names:
        if name in src.counts and name in out.counts and name not in done:
            checks.append(count_check(name, src.counts[name], out.counts[name], settings))
    checks += _metadata_checks(src, out, settings)
    return checks


# -------------------------------------------------------------------------------------- text ----

def _without(whole: TextBag, part: TextBag) -> TextBag:
    return TextBag(whole.words - part.words, max(0, whole.chars - part.chars))


def _text_checks(src: Facts, out: Facts, settings: FidelitySettings) -> list[Check]:
    # Comments only the output's reader measured (a .ppt's or .xlsb's reader does not see them) are
    # left out of the output's text: otherwise their words would count as new text.
    if "comments" not in src.parts and out.parts.get("comments", TextBag()).word_count:
        out = replace(out, text=_without(out.text, out.parts["comments"]))
    sim = similarity(src.text, out.text)
    check = Check("text", f"{src.text.word_count} words", f"{out.text.word_count} words")
    if src.family is not Family.SPREADSHEET and sim < 1.0:
        # 1 % of the words changed costs 1.5 points; a third of them, all 50.
        check.points = _points(settings.weight("text"), (1.0 - sim) * 3)
        lost = lost_words(src.text, out.text)
        gained = lost_words(out.text, src.text, 5)
        check.detail = (f"text {sim:.1%} the same"
                        + (f"; missing words: {', '.join(lost)}" if lost else "")
                        + (f"; new words: {', '.join(gained)}" if gained else ""))
    checks = [check,
              Check("words", src.text.word_count, out.text.word_count),
              Check("characters", src.text.chars, out.text.chars)]
    for part, part_bag in src.parts.items():
        if not part_bag.word_count:
            continue
        kept = containment(part_bag, out.text)
        check = Check(f"part:{part}", f"{part_bag.word_count} words", f"{kept:.0%} found")
        if kept < 0.98:
            check.points = _points(settings.weight(f"part:{part}"), (1.0 - kept) * 2)
            lost = lost_words(part_bag, out.text, 6)
            check.detail = f"{part}: {kept:.0%} of the words found in the ODF" + (
                f"; missing: {', '.join(lost)}" if lost else "")
        checks.append(check)
    return checks


def _metadata_checks(src: Facts, out: Facts, settings: FidelitySettings) -> list[Check]:
    # The modification date is the conversion's own; the producing application is not carried over by design.
    kept_keys = [k for k in ("title", "subject", "author", "created") if src.metadata.get(k)]
    lost = [key for key in kept_keys if (out.metadata.get(key) or "").strip() != src.metadata[key].strip()]
    check = Check("metadata", ", ".join(kept_keys) or "none",
                  ", ".join(k for k in kept_keys if k not in lost) or "none")
    if lost:
        check.points = _points(settings.weight("metadata"), len(lost) / max(1, len(kept_keys)))
        check.detail = "metadata not carried over: " + ", ".join(
            f"{k} ({src.metadata[k]!r} became {out.metadata.get(k)!r})" for k in lost)
    return [check]


# ---------------------------------------------------------------------------- word processing ---

def _word_checks(src: Facts, out: Facts, settings: FidelitySettings) -> list[Check]:
    checks: list[Check] = []
    if src.headings is not None and out.headings is not None:
        check = count_check("headings", sum(src.headings.values()), sum(out.headings.values()), settings)
        levels = sorted(set(src.headings) | set(out.headings))
        moved = [f"level {lv}: {src.headings.get(lv, 0)}→{out.headings.get(lv, 0)}"
                 for lv in levels if src.headings.get(lv, 0) != out.headings.get(lv, 0)]
        if moved and not check.points:
            check.points = _points(settings.weight("headings"), 0.2)
        if moved:
            check.detail = "headings per level changed: " + ", ".join(moved)
        checks.append(check)
    if src.tables is not None and out.tables is not None:
        checks.append(count_check("tables", len(src.tables), len(out.tables), settings))
        shapes, texts = [], []
        for i, (a, b) in enumerate(zip(src.tables, out.tables), start=1):
            if (a.rows, a.cols) != (b.rows, b.cols):
                shapes.append(f"table {i}: {a.rows}×{a.cols} became {b.rows}×{b.cols}")
            sim = similarity(a.text, b.text)
            if sim < 0.98:
                texts.append((i, sim))
        n = max(1, len(src.tables))
        check = Check("table_shapes", [f"{t.rows}×{t.cols}" for t in src.tables[:20]],
                      [f"{t.rows}×{t.cols}" for t in out.tables[:20]])
        if shapes:
            check.points = _points(settings.weight("table_shapes"), len(shapes) / n)
            check.detail = "; ".join(shapes[:5]) + (f"; and {len(shapes) - 5} more" if len(shapes) > 5 else "")
        checks.append(check)
        check = Check("table_text", len(src.tables), len(src.tables) - len(texts))
        if texts:
            check.points = _points(settings.weight("table_text"), sum(1 - s for _, s in texts) / n * 3)
            check.detail = "table text changed: " + ", ".join(f"table {i} {s:.0%} the same" for i, s in texts[:5])
        checks.append(check)
    if src.pages and out.pages:
        checks += _page_checks(src.pages, out.pages, settings)
    return checks


_PAGE_TOLERANCE = 1.5     # mm: rounding through twips, inches and LibreOffice's header heights


def _page_checks(src: list[PageSetup], out: list[PageSetup], settings: FidelitySettings) -> list[Check]:
    """Page size and orientation, and all four margins, of every section both sides have."""
    def size(p: PageSetup) -> str:
        return f"{p.width:.0f}×{p.height:.0f} mm {p.orientation}"

    def margins(p: PageSetup) -> str:
        return "top {:.0f}, bottom {:.0f}, left {:.0f}, right {:.0f} mm".format(*p.margins) if p.margins else "?"

    def near(x: float, y: float) -> bool:
        return abs(x - y) <= _PAGE_TOLERANCE

    def same(a: PageSetup, b: PageSetup) -> bool:
        return (near(a.width, b.width) and near(a.height, b.height)
                and (a.margins is None) == (b.margins is None)
                and all(near(x, y) for x, y in zip(a.margins or (), b.margins or ())))

    def runs(pages: list[PageSetup]) -> list[PageSetup]:
        # consecutive sections with the same setup are one run: LibreOffice turns a continuous section
        # break into a text section, not a new page style, so only changes of setup can be paired
        kept: list[PageSetup] = []
        for p in pages:
            if not kept or not same(kept[-1], p):
                kept.append(p)
        return kept

    src, out = runs(src), runs(out)
    pairs = list(zip(src, out))
    n = max(1, len(src), len(out))
    sizes = [f"section {i}: {size(a)} became {size(b)}" for i, (a, b) in enumerate(pairs, 1)
             if not (near(a.width, b.width) and near(a.height, b.height))]
    if len(src) != len(out):
        gone = [size(a) for a in src if not any(near(a.width, b.width) and near(a.height, b.height) for b in out)]
        sizes += [f"{len(src)} page setups in the source, {len(out)} in the ODF"
                  + (f" (no {', '.join(gone[:3])} pages left)" if gone else "")] * abs(len(src) - len(out))
    check = Check("page_size", [size(p) for p in src[:10]], [size(p) for p in out[:10]])
    if sizes:
        check.points = _points(settings.weight("page_size"), len(sizes) / n * 2)
        check.detail = "page size changed: " + "; ".join(sizes[:3]) + (
            f"; and {len(sizes) - 3} more" if len(sizes) > 3 else "")
    checks = [check]
    with_margins = [(i, a, b) for i, (a, b) in enumerate(pairs, 1) if a.margins and b.margins]
    if with_margins:
        moved = [f"section {i}: {margins(a)} became {margins(b)}" for i, a, b in with_margins
                 if not all(near(x, y) for x, y in zip(a.margins or (), b.margins or ()))]
        check = Check("margins", [margins(a) for _, a, _ in with_margins[:10]],
                      [margins(b) for _, _, b in with_margins[:10]])
        if moved:
            check.points = _points(settings.weight("margins"), len(moved) / len(with_margins) * 2)
            check.detail = "page margins changed: " + "; ".join(moved[:3]) + (
                f"; and {len(moved) - 3} more" if len(moved) > 3 else "")
        checks.append(check)
    return checks


# ------------------------------------------------------------------------------- spreadsheets ---

def _match_sheets(src: list[SheetFacts], out: list[SheetFacts]) -> list[tuple[SheetFacts, SheetFacts | None]]:
    by_name = {s.name: s for s in out}
    pairs = []
    for i, sheet in enumerate(src):
        twin = by_name.get(sheet.name)
        if twin is None and i < len(out) and out[i].name not in {s.name for s in src}:
            twin = out[i]                      # renamed in place
        pairs.append((sheet, twin))
    return pairs


def _sheet_checks(src: Facts, out: Facts, settings: FidelitySettings) -> list[Check]:
    checks: list[Check] = []
    a_sheets, b_sheets = src.sheets or [], out.sheets or []
    a_names, b_names = [s.name for s in a_sheets], [s.name for s in b_sheets]
    pairs = _match_sheets(a_sheets, b_sheets)
    missing = [s.name for s, twin in pairs if twin is None]
    check = Check("sheets", len(a_names), len(b_names))
    if missing:
        check.points = _points(settings.weight("sheets"), len(missing) / max(1, len(a_names)))
        check.detail = "sheets missing in the ODF: " + ", ".join(missing[:10])
    elif len(b_names) > len(a_names):
        check.points = _points(settings.weight("sheets"), 0.1)
        check.detail = f"the ODF has {len(b_names) - len(a_names)} sheet(s) more: " + ", ".join(
            n for n in b_names if n not in a_names)
    checks.append(check)
    check = Check("sheet_names", a_names[:30], b_names[:30])
    # Sheets only added are charged once, under `sheets`; renamed or reordered ones here (an Excel
    # 2.x-4.0 worksheet has no name of its own: LibreOffice names it).
    if ([n for n in b_names if n in set(a_names)] != a_names and not missing
            and src.reader != XLS_BIFF4_READER):
        check.points = settings.weight("sheet_names")
        check.detail = "sheet names or order changed"
    checks.append(check)
    a_hidden = {s.name for s in a_sheets if s.hidden}
    b_hidden = {s.name for s, twin in pairs if twin is not None and twin.hidden}
    check = Check("hidden_sheets", sorted(a_hidden), sorted(b_hidden))
    if a_hidden != b_hidden:
        check.points = settings.weight("hidden_sheets")
        check.detail = f"hidden sheets {sorted(a_hidden)} became {sorted(b_hidden)}"
    checks.append(check)

    formulas_known = src.reader not in ("xls-xlrd", "xlsb-pyxlsb", XLS_BIFF4_READER)   # those see values only
    trusted = src.cached_values is None
    pivots = Tally()
    values = Tally()
    formulas = Tally()
    recalc = Tally()
    new_errors: list[str] = []
    ranges: list[str] = []
    uncached = volatile = 0
    truncated = False
    for sheet, twin in pairs:
        if twin is None:
            continue
        truncated = truncated or sheet.truncated or twin.truncated
        if sheet.used_range != twin.used_range and not (sheet.pivot_ranges or twin.pivot_ranges):
            ranges.append(f"{sheet.name}: {_range(sheet.used_range)} became {_range(twin.used_range)}")
        formula_cells = sheet.formulas if formulas_known else twin.formulas
        # pivot output as Excel laid it out and as LibreOffice lays it out anew (page fields above it too)
        pivot_areas = [(max(0, r1 - 3), c1, r2, c2) for r1, c1, r2, c2 in sheet.pivot_ranges + twin.pivot_ranges]
        for pos in set(sheet.cells) | set(twin.cells) | set(formula_cells):
            a, b = sheet.cells.get(pos), twin.cells.get(pos)
            if pivot_areas and any(r1 <= pos[0] <= r2 and c1 <= pos[1] <= c2 for r1, c1, r2, c2 in pivot_areas):
                # LibreOffice lays out a pivot table's output itself: compared on its own
                pivots.add(same_value(a, b), f"{sheet.name}!{_a1(pos)}: {_show(a)} → {_show(b)}")
                continue
            if pos in formula_cells:
                if formulas_known:
                    formulas.add(pos in twin.formulas, f"{sheet.name}!{_a1(pos)}")
                text = formula_cells[pos] or twin.formulas.get(pos, "")
                # An error LibreOffice computes where Excel stored none is caught whatever Excel stored:
                # with no cached value, an untrusted one, or a volatile formula, it is still an error now.
                if b is not None and b[0] == "e" and (a is None or a[0] != "e"):
                    new_errors.append(f"{sheet.name}!{_a1(pos)} {b[1]}")
                if VOLATILE.search(text):
                    volatile += 1
                    continue
                if pos in sheet.uncached or not trusted:
                    uncached += 1
                    continue
                recalc.add(same_value(a, b), f"{sheet.name}!{_a1(pos)}: {_show(a)} → {_show(b)}")
            else:
                values.add(same_value(a, b), f"{sheet.name}!{_a1(pos)}: {_show(a)} → {_show(b)}")
    if formulas_known:
        gained = sum(1 for s, t in pairs if t is not None for p in t.formulas if p not in s.formulas)
        check = Check("formulas", formulas.total, formulas.ok)
        if formulas.bad:
            check.points = _points(settings.weight("formulas"), formulas.bad / formulas.total * 5)
            check.detail = (f"{formulas.bad} of {formulas.total} formulas are no longer formulas: "
                            + ", ".join(formulas.examples))
        elif gained:
            check.detail = f"{gained} cell(s) hold a formula in the ODF but not in the source"
        checks.append(check)
    check = Check("values", values.total, values.ok)
    if values.bad:
        check.points = _points(settings.weight("values"), values.bad / values.total * 10)
        check.detail = f"{values.bad} of {values.total} cell values differ: " + ", ".join(values.examples)
    checks.append(check)
    check = Check("recalculated", recalc.total, recalc.ok)
    notes = []
    if uncached and not trusted:
        notes.append(f"{uncached} formula value(s) not compared: the source was {src.cached_values}")
    elif uncached:
        notes.append(f"{uncached} formula(s) had no value stored by Excel")
    if volatile:
        notes.append(f"{volatile} volatile formula(s) (NOW, TODAY, RAND …) not compared")
    if recalc.bad:
        check.points = _points(settings.weight("recalculated"), recalc.bad / recalc.total * 5)
        check.detail = (f"{recalc.bad} of {recalc.total} formulas recalculate to another value in LibreOffice: "
                        + ", ".join(recalc.examples))
    if notes:
        check.detail = "; ".join(filter(None, [check.detail] + notes))
    checks.append(check)
    if pivots.total:
        check = Check("pivot_values", pivots.total, pivots.ok)
        if pivots.bad:
            check.points = _points(settings.weight("pivot_values"), pivots.bad / pivots.total * 2)
            check.detail = (f"{pivots.bad} of {pivots.total} cells of pivot tables differ (LibreOffice lays pivot "
                            "tables out anew): " + ", ".join(pivots.examples))
        checks.append(check)
    check = Check("new_errors", 0, len(new_errors))
    if new_errors:
        check.points = min(settings.weight("new_errors"), 3.0 * len(new_errors))
        check.detail = f"{len(new_errors)} formula(s) now give an error: " + ", ".join(new_errors[:5])
    checks.append(check)
    check = Check("used_range", len(pairs), len(pairs) - len(ranges))
    if ranges:
        check.points = min(settings.weight("used_range"), 2.0 * len(ranges))
        check.detail = "used range changed: " + "; ".join(ranges[:3])
    checks.append(check)
    if truncated:
        checks.append(Check("rows_compared", settings.max_rows, settings.max_rows,
                            detail=f"only the first {settings.max_rows} rows of each sheet were compared"))
    return checks


class Tally:
    """Counts of equal and unequal comparisons, with a few examples of the unequal."""

    def __init__(self) -> None:
        self.total = self.ok = self.bad = 0
        self.examples: list[str] = []

    def add(self, equal: bool, example: str) -> None:
        self.total += 1
        if equal:
            self.ok += 1
        else:
            self.bad += 1
            if len(self.examples) < 5:
                self.examples.append(example)


def _a1(pos: tuple[int, int]) -> str:
    row, col = pos
    letters = ""
    col += 1
    while col:
        col, rem = divmod(col - 1, 26)
        letters = chr(65 + rem) + letters
    return f"{letters}{row + 1}"


def _range(used: tuple[int, int]) -> str:
    return f"A1:{_a1((used[0] - 1, used[1] - 1))}" if used[0] else "empty"


def _show(value) -> str:
    if value is None:
        return "empty"
    kind, v = value
    if kind == "n":
        return f"{v:.10g}"
    if kind == "s":
        return repr(v if len(v) <= 30 else v[:27] + "...")
    return str(v)


# ------------------------------------------------------------------------------ presentations ---

def _slide_checks(src: Facts, out: Facts, settings: FidelitySettings) -> list[Check]:
    checks: list[Check] = []
    changed = []
    a_slides, b_slides = src.slides or [], out.slides or []
    for i, (a, b) in enumerate(zip(a_slides, b_slides), start=1):
        sim = similarity(a.text, b.text)
        if sim < 0.95:
            changed.append((i, sim))
    n = max(1, len(a_slides))
    check = Check("slide_text", len(a_slides), len(a_slides) - len(changed))
    if changed:
        check.points = _points(settings.weight("slide_text"), sum(1 - s for _, s in changed) / n * 2)
        check.detail = "slide text changed: " + ", ".join(f"slide {i} {s:.0%} the same" for i, s in changed[:6])
    checks.append(check)
    if "hidden_slides" in src.counts and "hidden_slides" in out.counts:
        hidden_a = [i for i, s in enumerate(a_slides, 1) if s.hidden]
        hidden_b = [i for i, s in enumerate(b_slides, 1) if s.hidden]
        check = Check("hidden_slides", hidden_a, hidden_b)
        if hidden_a != hidden_b:
            check.points = settings.weight("hidden_slides")
            check.detail = f"hidden slides {hidden_a} became {hidden_b}"
        checks.append(check)
    return checks

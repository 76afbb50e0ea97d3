"""The visual tier: render source and ODF output to page images and compare them page by page.

Both files are rendered by LibreOffice (on the converter pool's workers, through the `render`
function the caller passes in) to PDF — the whole document, so that the page counts compared are
true — then the first `visual_pages` pages to grey page images by poppler's `pdftoppm`. Pages
are compared with SSIM (structural similarity, Wang et al. 2004, on 7×7 windows; computed with
numpy). The source's render is LibreOffice's reading of it, not Microsoft Office's: the check
shows what the ODF export changed, not how far LibreOffice's layout is from Word's.

Writer needs a view to lay out pages, and on LibreOffice 7.4 without GUI files a view of a
document with comments aborts LibreOffice (its comment windows need UI files the -nogui packages
do not ship). Comments are not printed, so the copies rendered here have their comments removed
(OOXML and ODF); Word binary and RTF sources with comments are not rendered.

For the dashboard it keeps each side's first page twice, beside each other in `thumbs`: a
THUMB_WIDTH thumbnail (`<key>-source.png`, for lists and reports) and a VIEW_WIDTH picture
(`<key>-source-view.png`, for the side-by-side viewer's zoom levels), rendered from the PDF itself,
so that fine print is sharp; the record names them under "thumbnails" and "views".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np
from lxml import etree
from PIL import Image

from converters.formats import FORMATS, Family, OfficeFormat
from reports.compare import Check
from reports.package import ODF_NS
from reports.scoring import FidelitySettings

__all__ = ["visual_checks", "ssim", "page_images", "THUMB_WIDTH", "VIEW_WIDTH", "VIEW_MAX_HEIGHT"]

THUMB_WIDTH = 180
#: Width of the first-page pictures kept for the dashboard's side-by-side viewer. 1200 px puts an A4
#: page at about 145 dpi: 10 pt text is ~20 px high and 6 pt fine print ~12 px, readable pixel for
#: pixel (the viewer's largest zoom), where the 180 px thumbnail (22 dpi) blurs 6 pt print to light
#: grey. Grey, like the pages compared; docs/dashboard.md gives the bytes per document measured.
VIEW_WIDTH = 1200
#: A page much taller than wide (a banner, a long custom sheet) is scaled down to this height
#: instead, so that one picture never costs more than about two A4 pictures.
VIEW_MAX_HEIGHT = 2 * VIEW_WIDTH
_SHEET_PAGE_CAP = 300       # pages of a workbook exported at most (a count this high means "at least")
_W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
_ODF_OUTPUT = {Family.TEXT: "odt", Family.SPREADSHEET: "ods", Family.PRESENTATION: "odp"}


class NotRendered(Exception):
    """This document is not rendered (the reason is the message)."""


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Mean structural similarity of two grey images of the same shape (values 0..255)."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    if a.shape[0] < window or a.shape[1] < window:
        return 1.0 if np.array_equal(a, b) else 0.0
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def box(x: np.ndarray) -> np.ndarray:
        # mean over every window×window square, from a summed-area table
        s = np.pad(x, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        total = s[window:, window:] - s[:-window, window:] - s[window:, :-window] + s[:-window, :-window]
        return total / (window * window)

    mu_a, mu_b = box(a), box(b)
    var_a = box(a * a) - mu_a ** 2
    var_b = box(b * b) - mu_b ** 2
    cov = box(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(value.mean())


def page_images(pdf: Path, folder: Path, prefix: str, pages: int, dpi: int) -> list[Path]:
    """Grey PNG images of the first `pages` pages of `pdf` (poppler's pdftoppm)."""
    subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", "-f", "1", "-l", str(pages), str(pdf),
                    str(folder / prefix)],
                   check=True, capture_output=True, timeout=120)
    return sorted(folder.glob(f"{prefix}-*.png"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))


def _pdf_pages(pdf: Path) -> int:
    out = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, timeout=60).stdout
    for line in out.splitlines():
        if line.startswith("Pages:"):
            return int(line.split()[1])
    return 0


def _first_page_size(pdf: Path) -> tuple[float, float, bool] | None:
    """Width and height in points of the PDF's first page as shown (pdfinfo's "size", turned by
    its "rot"), and whether it is turned by a quarter, or None."""
    out = subprocess.run(["pdfinfo", "-f", "1", "-l", "1", str(pdf)], capture_output=True, text=True,
                         timeout=60).stdout
    size, turned = None, False
    for line in out.splitlines():
        if not line.startswith("Page"):
            continue
        if "size:" in line:
            parts = line.split("size:", 1)[1].split()
            try:
                size = float(parts[0]), float(parts[2])
            except (IndexError, ValueError):
                return None
        elif "rot:" in line:
            turned = line.split("rot:", 1)[1].strip() in ("90", "270")
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return (size[1], size[0], True) if turned else (size[0], size[1], False)


def _view_size(points: tuple[float, ...]) -> tuple[int, int]:
    """Pixels of the viewer's picture of a page of `points` size: VIEW_WIDTH wide, unless that
    would make it taller than VIEW_MAX_HEIGHT."""
    width, height = points[0], points[1]
    if VIEW_WIDTH * height / width <= VIEW_MAX_HEIGHT:
        return VIEW_WIDTH, max(1, round(VIEW_WIDTH * height / width))
    return max(1, round(VIEW_MAX_HEIGHT * width / height)), VIEW_MAX_HEIGHT


#: The viewer's pictures keep 16 grey levels, stored 4 bits a pixel: anti-aliased text looks the
#: same to the eye, and the file is 30-60 % smaller than with 256 levels (measured on generated and
#: corpus documents). Pillow writes such a PNG from a palette image; the palette is built here.
_GREY16 = [level * 17 for level in range(16) for _channel in range(3)]


def _grey16(gray: Image.Image) -> Image.Image:
    image = gray.point(lambda value: value // 17).convert("P")
    image.putpalette(_GREY16)
    return image


def _save_png(image: Image.Image, target: Path, **options) -> None:
    """Write `image` as an optimised PNG in one step: a dashboard reading `target` meanwhile sees
    the old picture or the new one, never half of one."""
    # named by process and thread: two measurements of the same document never share one
    part = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.part")
    try:
        image.save(part, format="PNG", optimize=True, **options)
        os.replace(part, target)
    finally:
        part.unlink(missing_ok=True)


def _view(pdf: Path, work: Path, prefix: str, target: Path) -> bool:
    """The viewer's picture of the first page of `pdf`, rendered from the PDF at its own size
    (not enlarged from the compared page images, which are rendered at `visual_dpi`); False when
    the page cannot be rendered (the thumbnail then stands alone)."""
    page = _first_page_size(pdf)
    if page is None:
        return False
    width, height = _view_size(page[:2])
    if page[2]:                 # pdftoppm scales the page as stored, then turns it
        width, height = height, width
    try:
        subprocess.run(["pdftoppm", "-gray", "-png", "-singlefile", "-f", "1", "-l", "1",
                        "-scale-to-x", str(width), "-scale-to-y", str(height), str(pdf), str(work / prefix)],
                       check=True, capture_output=True, timeout=120)
        with Image.open(work / f"{prefix}.png") as image:
            _save_png(_grey16(image.convert("L")), target, bits=4)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def _without_comments(path: Path, fmt: OfficeFormat, folder: Path, name: str, comments: int | None) -> Path:
    """A copy of `path` LibreOffice can lay out safely: comments removed (see the module's docstring)."""
    if fmt.family is not Family.TEXT:
        return path
    if fmt.name in ("docx", "docm", "dotx", "dotm"):
        part, tags = "word/document.xml", [f"{{{_W}}}{t}" for t in ("commentRangeStart", "commentRangeEnd",
                                                                    "commentReference")]
    elif fmt.is_odf:
        office = ODF_NS["office"]
        part, tags = "content.xml", [f"{{{office}}}annotation", f"{{{office}}}annotation-end"]
    else:
        if comments:
            raise NotRendered(f"a {fmt.description} with comments cannot be laid out by LibreOffice 7.4 "
                              "without its GUI files")
        return path
    copy = folder / f"{name}.{fmt.name}"
    with zipfile.ZipFile(path) as zin:
        if part not in zin.namelist():
            return path
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
        root = etree.fromstring(zin.read(part), parser)
        found = [el for el in root.iter(*tags)]
        if not found:
            return path
        for el in found:
            _remove_keep_tail(el)
        data = etree.tostring(root, xml_declaration=True, encoding="UTF-8", standalone=True)
        with zipfile.ZipFile(copy, "w") as zout:
            for info in zin.infolist():
                payload = data if info.filename == part else zin.read(info)
                zout.writestr(info, payload)
    return copy


def _remove_keep_tail(el: etree._Element) -> None:
    parent = el.getparent()
    if parent is None:
        return
    if el.tail:
        previous = el.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + el.tail
        else:
            parent.text = (parent.text or "") + el.tail
    parent.remove(el)


def _grey(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def _thumbnail(page: Path, target: Path) -> None:
    with Image.open(page) as image:
        gray = image.convert("L")
        height = max(1, round(gray.height * THUMB_WIDTH / gray.width))
        _save_png(gray.resize((THUMB_WIDTH, height), Image.Resampling.LANCZOS), target)


def visual_checks(source: Path, output: Path, fmt: OfficeFormat, render, settings: FidelitySettings, *,
                  thumbs: Path | None, key: str, comments: int | None = None,
                  views: bool = True) -> tuple[list[Check], dict]:
    """Render both, compare page by page; the checks (pages, page images) and what to keep for reports
    (in `thumbs`: the thumbnails, and with `views` the viewer's large pictures)."""
    info: dict = {"status": "compared", "note": "source rendered by LibreOffice, not by Microsoft Office"}
    odf = FORMATS[_ODF_OUTPUT[fmt.family]] if not fmt.is_odf else fmt
    work = Path(tempfile.mkdtemp(prefix="umstieg-visual-"))
    try:
        try:
            src_copy = _without_comments(source, fmt, work, "source", comments)
        except NotRendered as exc:
            return [], {"status": "not_rendered", "reason": str(exc)}
        out_copy = _without_comments(output, odf, work, "output", None)
        src_pdf, out_pdf = work / "source.pdf", work / "output.pdf"
        # The whole document is exported, so that the page counts are true; only the first
        # `visual_pages` pages are turned into images and compared. A workbook can print to
        # thousands of pages: its export stops at _SHEET_PAGE_CAP, and a count at the cap is a floor.
        cap = _SHEET_PAGE_CAP if fmt.family is Family.SPREADSHEET else None
        render(src_copy, src_pdf, fmt, cap)
        render(out_copy, out_pdf, odf, cap)
        pages_src, pages_out = _pdf_pages(src_pdf), _pdf_pages(out_pdf)
        src_pages = page_images(src_pdf, work, "s", settings.visual_pages, settings.visual_dpi)
        out_pages = page_images(out_pdf, work, "o", settings.visual_pages, settings.visual_dpi)
        scores = []
        for a_path, b_path in zip(src_pages, out_pages):
            a, b = _grey(a_path), _grey(b_path)
            if a.shape != b.shape:
                b = np.asarray(Image.fromarray(b).resize((a.shape[1], a.shape[0]), Image.Resampling.BILINEAR))
            scores.append(round(ssim(a, b), 4))
        info.update(pages_source=pages_src, pages_output=pages_out, compared=len(scores), ssim=scores,
                    mean_ssim=round(float(np.mean(scores)), 4) if scores else None,
                    min_ssim=min(scores) if scores else None)
        if thumbs is not None and src_pages and out_pages:
            thumbs.mkdir(parents=True, exist_ok=True)
            _thumbnail(src_pages[0], thumbs / f"{key}-source.png")
            _thumbnail(out_pages[0], thumbs / f"{key}-output.png")
            info["thumbnails"] = {"source": f"{key}-source.png", "output": f"{key}-output.png"}
        if views and thumbs is not None and src_pages and out_pages:
            large = {"source": f"{key}-source-view.png", "output": f"{key}-output-view.png"}
            made = [_view(pdf, work, f"view-{side}", thumbs / large[side])
                    for side, pdf in (("source", src_pdf), ("output", out_pdf))]
            if all(made):
                info["views"] = large
            else:                   # one side alone cannot be compared: the thumbnails stand for both
                for name in large.values():
                    (thumbs / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    checks = []
    check = Check("pages", pages_src, pages_out)
    if cap and pages_src >= cap and pages_out >= cap:
        check.detail = f"both print to at least {cap} pages: only the first {cap} were exported"
    elif pages_src != pages_out:
        check.points = max(0.1, round(
            settings.weight("pages") * min(1.0, abs(pages_out - pages_src) / max(1, pages_src)), 2))
        check.detail = f"{pages_src} page(s) rendered from the source, {pages_out} from the ODF"
    checks.append(check)
    if info.get("mean_ssim") is not None:
        mean = info["mean_ssim"]
        check = Check("visual", f"{len(scores)} page(s)", f"mean similarity {mean:.3f}")
        # Identical renders score 1.0; anti-aliasing and font hinting alone stay above 0.97.
        if mean < 0.97:
            check.points = max(0.1, round(settings.weight("visual") * min(1.0, (0.97 - mean) / 0.3), 2))
            worst = int(np.argmin(scores)) + 1
            check.detail = (f"page images differ: mean similarity {mean:.3f}, lowest {min(scores):.3f} "
                            f"on page {worst}")
        checks.append(check)
    return checks, info

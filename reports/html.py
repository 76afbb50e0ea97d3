"""Self-contained HTML reports (fidelity of a batch, risk scan of a tree): one file, no scripts, no links out.

Charts are inline SVG drawn here (bars and a histogram need no plotting library), thumbnails are
embedded as data URIs, styles are inline: the file can be mailed to a department or opened from
a share without a network.
"""

from __future__ import annotations

import base64
import html
import time
from collections import Counter
from pathlib import Path

import pandas as pd

from reports.compare import label
from reports.fidelity import SOURCE_RENDER_NOTE
from reports.risk import RISK_FLAGS
from reports.scoring import FidelitySettings

__all__ = ["fidelity_html", "scan_html", "bar_chart", "stacked_chart"]

COLORS = {"identical": "#2e7d32", "minor": "#7cb342", "review": "#f9a825", "broken": "#c62828",
          "failed": "#6a1b9a", "not_assessed": "#9e9e9e", "person": "#c62828", "clean": "#2e7d32",
          "other": "#9e9e9e"}
LEVEL_COLORS = {"person": "#c62828", "review": "#f9a825", "info": "#1e88e5"}

_CSS = """
body{font-family:"DejaVu Sans",Arial,sans-serif;margin:24px;color:#222;max-width:1300px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;font-size:13px}.tiles{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.tile{border-radius:6px;padding:10px 16px;color:#fff;min-width:110px}.tile b{display:block;font-size:26px}
.note{background:#f5f5f5;border-left:4px solid #1e88e5;padding:8px 12px;font-size:13px;margin:12px 0}
table{border-collapse:collapse;font-size:12px;width:100%}th,td{border-bottom:1px solid #e5e5e5;padding:4px 6px;
text-align:left;vertical-align:top}th{background:#fafafa}td.num{text-align:right;white-space:nowrap}
.badge{border-radius:3px;padding:1px 6px;color:#fff;font-size:11px;white-space:nowrap}
.charts{display:flex;flex-wrap:wrap;gap:24px}.chart{flex:1 1 560px}
img.thumb{border:1px solid #ccc;width:130px;margin-right:4px}td.thumbs{white-space:nowrap}.path{word-break:break-all}
"""


def _e(text) -> str:
    return html.escape("" if text is None or (isinstance(text, float) and pd.isna(text)) else str(text))


def _badge(value: str, colors: dict = COLORS) -> str:
    return f'<span class="badge" style="background:{colors.get(value, "#757575")}">{_e(value)}</span>'


def bar_chart(items: list[tuple[str, float, str]], *, width: int = 560, unit: str = "", title: str = "") -> str:
    """Horizontal bars: (label, value, colour) per row."""
    if not items:
        return "<p class='sub'>nothing to show</p>"
    top = max(v for _, v, _ in items) or 1
    row, label_w = 22, 220
    height = row * len(items) + 10
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{_e(title)}" '
             f'xmlns="http://www.w3.org/2000/svg" font-size="12" font-family="DejaVu Sans,Arial">']
    for i, (label, value, color) in enumerate(items):
        y = i * row + 4
        w = (width - label_w - 70) * value / top
        text = label if len(label) <= 34 else label[:32] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{_e(text)}</text>'
                     f'<rect x="{label_w}" y="{y}" width="{max(w, 1):.1f}" height="{row - 6}" fill="{color}"/>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 14}">{value:g}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_chart(rows: dict[str, dict[str, int]], order: list[str], *, width: int = 560, title: str = "") -> str:
    """Horizontal stacked bars: per row label, counts per category (in `order`), with a legend."""
    if not rows:
        return "<p class='sub'>nothing to show</p>"
    top = max(sum(v.values()) for v in rows.values()) or 1
    row, label_w = 22, 110
    height = row * len(rows) + 34
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{_e(title)}" '
             f'xmlns="http://www.w3.org/2000/svg" font-size="12" font-family="DejaVu Sans,Arial">']
    for i, (label, counts) in enumerate(rows.items()):
        y = i * row + 4
        x = float(label_w)
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{_e(label)}</text>')
        for key in order:
            n = counts.get(key, 0)
            if not n:
                continue
            w = (width - label_w - 50) * n / top
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 6}" fill="{COLORS.get(key, "#757575")}">'
                         f'<title>{_e(key)}: {n}</title></rect>')
            if w > 18:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 13}" fill="#fff" text-anchor="middle" font-size="11">{n}</text>')
            x += w
        parts.append(f'<text x="{x + 4:.1f}" y="{y + 14}">{sum(counts.values())}</text>')
    y = len(rows) * row + 14
    x = label_w
    for key in order:
        parts.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{COLORS.get(key, "#757575")}"/>'
                     f'<text x="{x + 14}" y="{y + 9}">{_e(key)}</text>')
        x += 24 + 7 * len(key)
    parts.append("</svg>")
    return "".join(parts)


def _histogram(scores: list[float], width: int = 560) -> str:
    bins = Counter()
    for s in scores:
        bins[100 if s >= 100 else int(s // 10) * 10] += 1
    labels = [(f"{b}–{b + 9}" if b < 100 else "100", b) for b in range(0, 101, 10)]
    top = max(bins.values()) if bins else 1
    height, base = 170, 150
    bar_w = (width - 40) / len(labels)
    parts = [f'<svg width="{width}" height="{height + 10}" role="img" aria-label="score distribution" '
             f'xmlns="http://www.w3.org/2000/svg" font-size="11" font-family="DejaVu Sans,Arial">']
    for i, (label, b) in enumerate(labels):
        n = bins.get(b, 0)
        h = (base - 20) * n / top
        color = COLORS["identical"] if b == 100 else COLORS["minor"] if b >= 90 else COLORS["review"] if b >= 60 else COLORS["broken"]
        x = 20 + i * bar_w
        parts.append(f'<rect x="{x + 2:.1f}" y="{base - h:.1f}" width="{bar_w - 4:.1f}" height="{h:.1f}" fill="{color}"/>'
                     f'<text x="{x + bar_w / 2:.1f}" y="{base + 14}" text-anchor="middle">{label}</text>')
        if n:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{base - h - 3:.1f}" text-anchor="middle">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _thumb(folder: Path, name: str | None) -> str:
    if not name:
        return ""
    path = folder / name
    if not path.is_file() or path.stat().st_size > 200_000:
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="thumb" alt="{_e(name)}" src="data:image/png;base64,{data}">'


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{_CSS}</style></head><body>{body}</body></html>")


def _tiles(counts: list[tuple[str, int, str]]) -> str:
    return "<div class='tiles'>" + "".join(
        f"<div class='tile' style='background:{color}'><b>{n}</b>{_e(label)}</div>" for label, n, color in counts) + "</div>"


def fidelity_html(records: list[dict], table: pd.DataFrame, deductions: pd.DataFrame, by_format: pd.DataFrame,
                  top: pd.DataFrame, risks: Counter, *, thumbs: Path, worst: int = 25) -> str:
    """The batch's fidelity report as one HTML page."""
    settings = FidelitySettings()
    verdicts = Counter(table["verdict"]) if not table.empty else Counter()
    order = ["identical", "minor", "review", "broken", "failed", "not_assessed"]
    body = [f"<h1>Fidelity report</h1><div class='sub'>{len(records)} file(s) in results.jsonl, "
            f"{len(table)} Office document(s) with a fidelity record — generated {time.strftime('%Y-%m-%d %H:%M')}</div>",
            _tiles([(v.replace("_", " "), verdicts.get(v, 0), COLORS[v]) for v in order if verdicts.get(v)]),
            "<div class='note'><b>How to read this.</b> Each converted document is compared with its source: "
            "text, structure (tables, pictures, notes, comments, tracked changes …; sheets, cell values, formulas and "
            "their recalculated values …; slides, shapes, notes …), the ODF package, and for flagged documents the "
            f"page images. A score starts at 100 and loses points per loss found. <b>identical</b>: nothing differs; "
            f"<b>minor</b>: score ≥ {settings.minor_at:g}; <b>review</b>: ≥ {settings.review_at:g}; <b>broken</b>: below, "
            f"or the ODF is invalid, or most of the text is gone. {_e(SOURCE_RENDER_NOTE)}</div>"]

    rows: dict[str, dict[str, int]] = {}
    if not by_format.empty:
        for fmt, row in by_format.drop(index="all", errors="ignore").iterrows():
            rows[str(fmt)] = {k: int(row[k]) for k in order if k in row}
    scores = [float(s) for s in table["score"].dropna()] if not table.empty else []
    top_items = [(str(r["label"]), int(r["documents"]), "#ef6c00") for _, r in top.head(15).iterrows()]
    risk_items = [(flag.replace("_", " "), n, LEVEL_COLORS[RISK_FLAGS[flag].level])
                  for flag, n in risks.most_common(15) if flag in RISK_FLAGS]
    body.append("<div class='charts'>"
                f"<div class='chart'><h2>Verdicts by format</h2>{stacked_chart(rows, order, title='verdicts by format')}</div>"
                f"<div class='chart'><h2>Score distribution</h2>{_histogram(scores)}</div>"
                f"<div class='chart'><h2>Top deductions (documents)</h2>{bar_chart(top_items, title='top deductions')}</div>"
                f"<div class='chart'><h2>Top risk flags (documents)</h2>{bar_chart(risk_items, title='top risk flags')}</div>"
                "</div>")

    by_path = {r.get("path"): r for r in records}
    worst_rows = table[table["score"].notna() & (table["verdict"] != "identical")].sort_values("score").head(worst) \
        if not table.empty else table
    body.append(f"<h2>Worst documents</h2><p class='sub'>The {len(worst_rows)} lowest scores. Thumbnails: first page "
                "as LibreOffice renders the source (left) and the ODF (right), where the visual check ran.</p>"
                "<table><tr><th>document</th><th>verdict</th><th>score</th><th>what was lost</th><th>pages</th>"
                "<th>source | ODF</th></tr>")
    for _, row in worst_rows.iterrows():
        fidelity = (by_path.get(row["path"]) or {}).get("fidelity") or {}
        visual = fidelity.get("visual") or {}
        pics = visual.get("thumbnails") or {}
        lost = "".join(f"<li>{_e(label(d['check']))} (−{d['points']:g}): {_e(d['detail'])}</li>"
                       for d in (fidelity.get("deductions") or [])[:4])
        pages = (f"{visual.get('pages_source')} → {visual.get('pages_output')}, similarity {visual.get('mean_ssim')}"
                 if visual.get("pages_source") is not None else _e(visual.get("reason", "")))
        body.append(f"<tr><td class='path'>{_e(row['path'])}<br><span class='sub'>{_e(row['format'])}</span></td>"
                    f"<td>{_badge(row['verdict'])}</td><td class='num'>{row['score']:g}</td><td><ul>{lost}</ul></td>"
                    f"<td>{pages}</td><td class='thumbs'>{_thumb(thumbs, pics.get('source'))}{_thumb(thumbs, pics.get('output'))}</td></tr>")
    body.append("</table>")

    body.append("<h2>All documents</h2><table><tr><th>document</th><th>format</th><th>verdict</th><th>score</th>"
                "<th>text</th><th>main deduction</th><th>risk flags</th></tr>")
    for _, row in table.head(5000).iterrows():
        sim = row["text_similarity"]
        body.append(f"<tr><td class='path'>{_e(row['path'])}</td><td>{_e(row['format'])}</td>"
                    f"<td>{_badge(row['verdict'])}</td><td class='num'>{_e(row['score'])}</td>"
                    f"<td class='num'>{'' if pd.isna(sim) else f'{sim:.1%}'}</td>"
                    f"<td>{_e(row['main_deduction'] or row['reason'])}</td><td>{_e(row['risks'])}</td></tr>")
    body.append("</table>")
    if len(table) > 5000:
        body.append(f"<p class='sub'>{len(table) - 5000} more rows in fidelity.csv and fidelity.ods.</p>")
    return _page("Fidelity report", "".join(body))


def scan_html(table: pd.DataFrame, *, source: str, seconds: float) -> str:
    """The risk scan of a tree as one HTML page: the migration team's planning table."""
    office = table[table["category"] != "other"] if not table.empty else table
    cats = Counter(table["category"]) if not table.empty else Counter()
    body = [f"<h1>Pre-migration risk scan</h1><div class='sub'>{_e(source)} — {len(table)} file(s), "
            f"{table['size'].sum() / 2**20 if not table.empty else 0:.1f} MiB, scanned in {seconds:.1f} s, "
            f"{time.strftime('%Y-%m-%d %H:%M')}</div>",
            _tiles([("convert cleanly", cats.get("clean", 0), COLORS["clean"]),
                    ("need review", cats.get("review", 0), COLORS["review"]),
                    ("need a person", cats.get("person", 0), COLORS["person"]),
                    ("not Office files", cats.get("other", 0), COLORS["other"])]),
            "<div class='note'>Read-only: nothing was converted or changed. <b>need a person</b>: someone must act "
            "(password, macros, ActiveX, damaged file); <b>need review</b>: converts, but check the result; "
            "<b>convert cleanly</b>: no risk found.</div>"]
    by_format: dict[str, dict[str, int]] = {}
    if not office.empty:
        for (fmt, cat), n in office.groupby(["format", "category"]).size().items():
            by_format.setdefault(str(fmt), {})[cat] = int(n)
    flags = Counter(f for fl in table["flags"] for f in fl) if not table.empty else Counter()
    flag_items = [(f.replace("_", " "), n, LEVEL_COLORS[RISK_FLAGS[f].level]) for f, n in flags.most_common()]
    sizes = (office.groupby("format")["size"].sum() / 2**20).sort_values(ascending=False) if not office.empty else pd.Series(dtype=float)
    size_items = [(str(f), round(float(v), 1), "#1e88e5") for f, v in sizes.head(15).items()]
    body.append("<div class='charts'>"
                f"<div class='chart'><h2>Files by format</h2>{stacked_chart(by_format, ['clean', 'review', 'person'], title='files by format')}</div>"
                f"<div class='chart'><h2>Risk flags (files)</h2>{bar_chart(flag_items, title='risk flags')}</div>"
                f"<div class='chart'><h2>Size by format</h2>{bar_chart(size_items, unit=' MiB', title='size by format')}</div>"
                "</div>")
    body.append("<h2>Risk flags</h2><table><tr><th>flag</th><th>level</th><th>files</th><th>meaning</th></tr>")
    for flag, meta in RISK_FLAGS.items():
        body.append(f"<tr><td>{_e(flag)}</td><td>{_badge(meta.level, LEVEL_COLORS)}</td>"
                    f"<td class='num'>{flags.get(flag, 0)}</td><td>{_e(meta.meaning)}</td></tr>")
    body.append("</table>")
    for cat, title in (("person", "Files that need a person"), ("review", "Files that need review")):
        rows = table[table["category"] == cat] if not table.empty else table
        body.append(f"<h2>{title} ({len(rows)})</h2><table><tr><th>file</th><th>format</th><th>size</th><th>flags</th></tr>")
        for _, row in rows.head(2000).iterrows():
            details = row.get("details") if isinstance(row.get("details"), dict) else {}
            extra = "".join(f"<br><span class='sub'>{_e(k)}: {_e(', '.join(v))}</span>" for k, v in details.items())
            error = row.get("error")
            if isinstance(error, str) and error:
                extra += f"<br><span class='sub'>inspection failed part-way: {_e(error)}</span>"
            body.append(f"<tr><td class='path'>{_e(row['path'])}</td><td>{_e(row['format'])}</td>"
                        f"<td class='num'>{row['size'] / 1024:.0f} KiB</td><td>{_e(', '.join(row['flags']))}{extra}</td></tr>")
        body.append("</table>")
        if len(rows) > 2000:
            body.append(f"<p class='sub'>{len(rows) - 2000} more in scan.csv and scan.ods.</p>")
    return _page("Risk scan", "".join(body))

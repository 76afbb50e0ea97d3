"""Self-contained HTML reports (fidelity of a batch, risk scan of a tree): one file, no scripts, no links out.

The pages are Jinja templates (reports/templates) in the language asked for, with the same
catalogs and human names of outcomes, checks and flags as the dashboard (reports.i18n). Charts are
inline SVG drawn here (bars and a histogram need no plotting library), thumbnails are embedded as
data URIs, styles are inline: the file can be mailed to a department or opened from a share
without a network.
"""

from __future__ import annotations

import base64
import html
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from markupsafe import Markup

from reports.fidelity import SOURCE_RENDER_NOTE
from reports.i18n import Names, names, render
from reports.risk import RISK_FLAGS
from reports.scoring import FidelitySettings

if TYPE_CHECKING:
    from reports.scan import ScanTally

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


def bar_chart(items: Sequence[tuple[str, float, str]], *, width: int = 560, unit: str = "", title: str = "",
              names: Names | None = None) -> str:
    """Horizontal bars: (label, value, colour) per row; `names` words the empty chart."""
    if not items:
        return f"<p class='sub'>{_e(names('nothing to show') if names else 'nothing to show')}</p>"
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


def stacked_chart(rows: dict[str, dict[str, int]], order: list[str], *, width: int = 560, title: str = "",
                  names: Names | None = None) -> str:
    """Horizontal stacked bars: per row label, counts per category (in `order`), with a legend
    naming each category in the language of `names` (its code without one)."""
    if not rows:
        return f"<p class='sub'>{_e(names('nothing to show') if names else 'nothing to show')}</p>"
    word = names.code if names else (lambda code: code)
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
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 6}" '
                         f'fill="{COLORS.get(key, "#757575")}">'
                         f'<title>{_e(word(key))}: {n}</title></rect>')
            if w > 18:
                parts.append(f'<text x="{x + w / 2:.1f}" y="{y + 13}" fill="#fff" text-anchor="middle" '
                             f'font-size="11">{n}</text>')
            x += w
        parts.append(f'<text x="{x + 4:.1f}" y="{y + 14}">{sum(counts.values())}</text>')
    y = len(rows) * row + 14
    x = label_w
    for key in order:
        parts.append(f'<rect x="{x}" y="{y}" width="10" height="10" fill="{COLORS.get(key, "#757575")}"/>'
                     f'<text x="{x + 14}" y="{y + 9}">{_e(word(key))}</text>')
        x += 24 + 7 * len(word(key))
    parts.append("</svg>")
    return "".join(parts)


def _histogram(scores: list[float], width: int = 560, *, title: str = "score distribution") -> str:
    bins: Counter[int] = Counter()
    for s in scores:
        bins[100 if s >= 100 else int(s // 10) * 10] += 1
    labels = [(f"{b}–{b + 9}" if b < 100 else "100", b) for b in range(0, 101, 10)]
    top = max(bins.values()) if bins else 1
    height, base = 170, 150
    bar_w = (width - 40) / len(labels)
    parts = [f'<svg width="{width}" height="{height + 10}" role="img" aria-label="{_e(title)}" '
             f'xmlns="http://www.w3.org/2000/svg" font-size="11" font-family="DejaVu Sans,Arial">']
    for i, (label, b) in enumerate(labels):
        n = bins.get(b, 0)
        h = (base - 20) * n / top
        color = (COLORS["identical"] if b == 100 else COLORS["minor"] if b >= 90
                 else COLORS["review"] if b >= 60 else COLORS["broken"])
        x = 20 + i * bar_w
        parts.append(f'<rect x="{x + 2:.1f}" y="{base - h:.1f}" width="{bar_w - 4:.1f}" height="{h:.1f}" '
                     f'fill="{color}"/>'
                     f'<text x="{x + bar_w / 2:.1f}" y="{base + 14}" text-anchor="middle">{label}</text>')
        if n:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{base - h - 3:.1f}" text-anchor="middle">{n}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _thumb(folder: Path, name: str | None) -> dict | None:
    if not name:
        return None
    path = folder / name
    if not path.is_file() or path.stat().st_size > 200_000:
        return None
    return {"name": name, "data": base64.b64encode(path.read_bytes()).decode("ascii")}


def _threshold(n: Names, score: float) -> str:
    """A verdict's threshold as a person reads it: 95, or 97.5 where it has a fraction."""
    return n.number(score, 0 if float(score).is_integer() else 1)


def _nan(value):
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else value


def fidelity_html(records: list[dict], table: pd.DataFrame, deductions: pd.DataFrame, by_format: pd.DataFrame,
                  top: pd.DataFrame, risks: Counter, *, thumbs: Path, worst: int = 25,
                  language: str | None = None) -> str:
    """The batch's fidelity report as one HTML page, in `language` (reports.i18n; English by default)."""
    n = names(language)
    settings = FidelitySettings()
    verdicts = Counter(table["verdict"]) if not table.empty else Counter()
    order = ["identical", "minor", "review", "broken", "failed", "not_assessed"]
    rows: dict[str, dict[str, int]] = {}
    if not by_format.empty:
        for fmt, row in by_format.drop(index="all", errors="ignore").iterrows():
            rows[str(fmt)] = {k: int(row[k]) for k in order if k in row}
    scores = [float(s) for s in table["score"].dropna()] if not table.empty else []
    top_items = [(n.check(str(r["check"])), int(r["documents"]), "#ef6c00") for _, r in top.head(15).iterrows()]
    risk_items = [(n.flag(flag), count, LEVEL_COLORS[RISK_FLAGS[flag].level])
                  for flag, count in risks.most_common(15) if flag in RISK_FLAGS]
    charts = {"verdicts": stacked_chart(rows, order, title=n("Verdicts by format"), names=n),
              "scores": _histogram(scores, title=n("Score distribution")),
              "deductions": bar_chart(top_items, title=n("Top deductions (documents)"), names=n),
              "risks": bar_chart(risk_items, title=n("Top risk flags (documents)"), names=n)}

    by_path = {r.get("path"): r for r in records}
    worst_rows = table[table["score"].notna() & (table["verdict"] != "identical")].sort_values("score").head(worst) \
        if not table.empty else table
    worst_list = []
    for _, row in worst_rows.iterrows():
        fidelity = (by_path.get(row["path"]) or {}).get("fidelity") or {}
        visual = fidelity.get("visual") or {}
        pics = visual.get("thumbnails") or {}
        worst_list.append({
            "path": row["path"], "format": row["format"], "verdict": row["verdict"],
            "color": COLORS.get(row["verdict"], "#757575"), "score": row["score"],
            "lost": (fidelity.get("deductions") or [])[:4],
            "pages_source": visual.get("pages_source"), "pages_output": visual.get("pages_output"),
            "mean_ssim": visual.get("mean_ssim"), "visual_reason": visual.get("reason", ""),
            "thumbs": [t for t in (_thumb(thumbs, pics.get("source")), _thumb(thumbs, pics.get("output"))) if t]})
    all_rows = []
    for _, row in table.head(5000).iterrows():
        fidelity = (by_path.get(row["path"]) or {}).get("fidelity") or {}
        deductions_of = fidelity.get("deductions") or []
        main = (f"{n.check(deductions_of[0]['check'])}: {deductions_of[0]['detail']}" if deductions_of
                else _nan(row["main_deduction"]) or _nan(row["reason"]) or "")
        all_rows.append({"path": row["path"], "format": row["format"], "verdict": row["verdict"],
                         "color": COLORS.get(row["verdict"], "#757575"), "score": _nan(row["score"]),
                         "text_similarity": _nan(row["text_similarity"]), "main": main,
                         "risks": fidelity.get("risks") or []})
    return render("fidelity.html", n.language, title=n("Fidelity report"), css=_CSS,
                  files=len(records), documents=len(table), generated=n.now(),
                  tiles=[(v, verdicts.get(v, 0), COLORS[v]) for v in order if verdicts.get(v)],
                  minor_at=_threshold(n, settings.minor_at), review_at=_threshold(n, settings.review_at),
                  source_render_note=SOURCE_RENDER_NOTE,
                  charts={k: Markup(v) for k, v in charts.items()}, worst=worst_list, rows=all_rows,
                  more=max(0, len(table) - 5000))


def scan_html(tally: ScanTally, listed: dict[str, list[dict]], *, source: str, seconds: float,
              language: str | None = None, all_in_ods: bool = True) -> str:
    """The risk scan of a tree as one HTML page: the migration team's planning table, in `language`,
    from the scan's counts (`tally`) and the first files of each category that needs someone
    (`listed`: category -> rows, as reports.scan gathers them); `all_in_ods` says whether the
    files left out here are all in scan.ods, or only in scan.csv."""
    n = names(language)
    cats = tally.categories
    by_format: dict[str, dict[str, int]] = {}
    for (fmt, cat), count in sorted(tally.formats.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        if cat != "other" and fmt != "other":       # Office files of a known format
            by_format.setdefault(str(fmt), {})[cat] = int(count)
    flags = tally.flags
    flag_items = [(n.flag(f), count, LEVEL_COLORS[RISK_FLAGS[f].level]) for f, count in flags.most_common()]
    office: dict[str, int] = {}
    for (fmt, cat), size in sorted(tally.sizes.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        if cat != "other" and fmt != "other":
            office[fmt] = office.get(fmt, 0) + size
    sizes = (pd.Series(office, dtype="int64") / 2**20).sort_values(ascending=False)
    size_items = [(str(f), round(float(v), 1), "#1e88e5") for f, v in sizes.head(15).items()]
    charts = {"formats": stacked_chart(by_format, ["clean", "review", "person"], title=n("Files by format"), names=n),
              "flags": bar_chart(flag_items, title=n("Risk flags (files)"), names=n),
              "sizes": bar_chart(size_items, unit=" MiB", title=n("Size by format"), names=n)}
    sections = []
    for cat, title in (("person", n("Files that need a person")), ("review", n("Files that need review"))):
        rows = listed.get(cat, [])
        sections.append({"title": title, "count": cats.get(cat, 0), "rows": rows,
                         "more": max(0, cats.get(cat, 0) - len(rows))})
    return render("scan.html", n.language, title=n("Risk scan"), css=_CSS, source=source, files=tally.files,
                  mib=tally.bytes / 2**20, seconds=seconds, generated=n.now(), all_in_ods=all_in_ods,
                  tiles=[(n("convert cleanly"), cats.get("clean", 0), COLORS["clean"]),
                         (n("need review"), cats.get("review", 0), COLORS["review"]),
                         (n("need a person"), cats.get("person", 0), COLORS["person"]),
                         (n("not Office files"), cats.get("other", 0), COLORS["other"])],
                  charts={k: Markup(v) for k, v in charts.items()},
                  flags=[{"code": flag, "level": meta.level, "color": LEVEL_COLORS[meta.level],
                          "files": flags.get(flag, 0)} for flag, meta in RISK_FLAGS.items()],
                  sections=sections)

"""Every table as CSV and ODS (in the page's language, with the page's filters), the overview as
one self-contained HTML file, and the full item list streamed as CSV."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from reports import dashboard as data
from umstieg.dashboard.i18n import translations
from umstieg.dashboard.routes.departments import identities_of, item_filters, overview_data, risk_flags, scan_args
from umstieg.dashboard.routes.queue import attention_filters
from umstieg.dashboard.web import ODS_ROWS, Refused, dashboard

__all__ = ["router"]

router = APIRouter()


@router.get("/export/overview.html")
def overview_export(request: Request):
    web = dashboard(request)
    web.viewer(request)
    result = overview_data(web.site)
    page = web.render(request, "overview.html", data=result, tables=data.overview_tables(result), standalone=True,
                      categories=data.CATEGORIES)
    response = web.download(bytes(page.body), "umstieg-overview.html", "html")
    response.headers["Content-Security-Policy"] = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return response


@router.get("/tables/{table}.{fmt}")
def overview_table(request: Request, table: str, fmt: str):
    web = dashboard(request)
    web.viewer(request)
    tables = data.overview_tables(overview_data(web.site))
    if table not in tables:
        raise Refused(404, "Not found.")
    return web.export(tables[table], f"overview-{table}", fmt, web.language(request))


@router.get("/departments/{name}/attention.{fmt}")
def attention_export(request: Request, name: str, fmt: str):
    web = dashboard(request)
    web.viewer(request)
    led = web.department_or_404(name)
    filters = attention_filters(request)
    lang = web.language(request)
    tr = translations(lang).gettext
    rows = [{**r, "why": tr(r["why"])} for chunk in data.iter_attention(led, name, filters) for r in chunk]
    return web.export(data.Table("attention", "Needs a person", data.ATTENTION_COLUMNS, rows[:ODS_ROWS]),
                      f"{name}-needs-a-person", fmt, lang)


def _items_csv(led, name: str, filters: dict, tr, lang: str):
    """The matching items as CSV text, chunk by chunk (a keyset walk: memory stays flat)."""
    first = True
    for chunk in data.iter_items(led, name, filters):
        yield ("\ufeff" if first else "") + data.csv_rows(data.ITEM_COLUMNS, chunk, tr, header=first, language=lang)
        first = False
    if first:
        yield "\ufeff" + data.csv_rows(data.ITEM_COLUMNS, [], tr)


@router.get("/departments/{name}/tables/{table}.{fmt}")
def department_table(request: Request, name: str, table: str, fmt: str):
    web = dashboard(request)
    web.viewer(request)
    led = web.department_or_404(name)
    lang = web.language(request)
    if table == "items":
        filters = item_filters(request)
        if fmt == "csv":            # every matching item, streamed in chunks
            return StreamingResponse(_items_csv(led, name, filters, translations(lang).gettext, lang),
                                     media_type="text/csv; charset=utf-8",
                                     headers={"Content-Disposition": f'attachment; filename="{name}-items.csv"'})
        rows = [r for chunk in data.iter_items(led, name, filters) for r in chunk][:ODS_ROWS]
        return web.export(data.Table("items", "Items", data.ITEM_COLUMNS, rows), f"{name}-items", fmt, lang)
    tables = data.department_view(led, name, risk_flags=risk_flags(web.site, name))["tables"]
    if table not in tables:
        raise Refused(404, "Not found.")
    return web.export(tables[table], f"{name}-{table}", fmt, lang)


@router.get("/departments/{name}/assessment.{fmt}")
def assessment_export(request: Request, name: str, fmt: str):
    web = dashboard(request)
    web.viewer(request)
    report_dir = web.report_dir_or_404(name)
    scan = data.scan_table(report_dir, page=None, **scan_args(request))
    return web.export(scan["table"], f"{name}-risk-scan", fmt, web.language(request))


@router.get("/departments/{name}/identities.{fmt}")
def identities_export(request: Request, name: str, fmt: str):
    """The identity map last checked (here or by the assessment), for a sign-off in a spreadsheet."""
    web = dashboard(request)
    web.viewer(request)
    web.department_or_404(name)
    found = identities_of(web, name)
    if found is None:
        raise Refused(404, "Not found.")
    return web.export(data.identity_table(found["rows"]), f"{name}-identities", fmt, web.language(request))

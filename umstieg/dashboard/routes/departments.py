"""The programme overview, the department page (tiles, charts, tables, runs, the item table), the
department's identity map and its risk scan."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from core.ledger import Ledger
from reports import dashboard as data
from umstieg.dashboard.site import Site
from umstieg.dashboard.web import MAX_ID, MAX_PAGE, Dashboard, Refused, dashboard, log, prefect_ui

__all__ = ["router", "overview_data", "item_filters", "risk_flags", "scan_args", "identities_of"]

router = APIRouter()


def overview_data(site: Site) -> dict:
    """The overview of every department of every ledger, merged over the ledgers."""
    by_ledger: dict[int, tuple[Ledger, list[str]]] = {}
    for name, led in site.all_departments():
        by_ledger.setdefault(id(led), (led, []))[1].append(name)
    merged: dict[str, Any] = {"departments": [], "throughput": {}, "totals": {}}
    for led, names in by_ledger.values():
        part = data.overview(led, names, site.departments,
                             {n: folder for n in names if (folder := site.report_dir(n))})
        merged["departments"] += part["departments"]
        for day, n in part["throughput"]:
            merged["throughput"][day] = merged["throughput"].get(day, 0) + n
    merged["departments"].sort(key=lambda r: r["department"])
    merged["throughput"] = sorted(merged["throughput"].items())
    merged["totals"] = {k: sum(r[k] for r in merged["departments"])
                        for k in ("items", "bytes", *data.CATEGORIES, "remaining")}
    return merged


def item_filters(request: Request) -> dict:
    """The item table's filters from the query (a batch must be a number)."""
    filters = {k: request.query_params.get(k, "") for k in (*data.ITEM_FILTERS, "annotation", "q")}
    if filters["batch"] and not (filters["batch"].isdigit() and int(filters["batch"]) <= MAX_ID):
        raise Refused(400, "A value in the address is not valid: batch")
    return filters


def risk_flags(site: Site, name: str) -> dict:
    report_dir = site.report_dir(name)
    assessment = data.read_assessment(report_dir) if report_dir else None
    return (assessment or {}).get("risk_flags") or {}


def scan_args(request: Request) -> dict:
    p = request.query_params
    return {"sort": p.get("sort", "category"), "descending": p.get("dir") == "desc",
            "category": p.get("category", ""), "flag": p.get("flag", ""), "fmt": p.get("format", ""),
            "q": p.get("q", "")}


def identities_of(web: Dashboard, name: str) -> dict | None:
    """The newest identity map known without asking any server: checked here on request, or by
    the last assessment; {"when", "rows", "by"} or None."""
    found = []
    if name in web.identities:
        when, rows = web.identities[name]
        found.append({"when": when, "rows": rows, "by": "dashboard"})
    report_dir = web.site.report_dir(name)
    assessed = data.assessed_identities(report_dir) if report_dir else None
    if assessed:
        found.append({"when": assessed[0], "rows": assessed[1], "by": "assessment"})
    return max(found, key=lambda f: f["when"]) if found else None


def check_identities_now(web: Dashboard, name: str) -> None:
    """Run the identity checks of `umstieg users` (flows.identity) for the department now and keep
    the result; one check per department at a time (it asks the directory and the target)."""
    from flows import runtime
    from flows.identity import check_identities
    with web.identity_lock(name):
        dept = runtime.department(web.site.files[name])
        rows = [c.row() for c in check_identities(dept)]
        web.identities[name] = (datetime.now(timezone.utc), rows)


@router.get("/", response_class=HTMLResponse)
def overview(request: Request):
    web = dashboard(request)
    web.viewer(request)
    result = overview_data(web.site)
    return web.render(request, "overview.html", data=result, tables=data.overview_tables(result),
                      categories=data.CATEGORIES)


@router.get("/departments/{name}", response_class=HTMLResponse)
def department(request: Request, name: str, page: int = Query(1, ge=1, le=MAX_PAGE),
               sort: str = Query("id", pattern="^(" + "|".join(data.ITEM_SORTS) + ")$"),
               dir: str = Query("asc", pattern="^(asc|desc)$")):
    web = dashboard(request)
    web.viewer(request)
    site = web.site
    led = web.department_or_404(name)
    view = data.department_view(led, name, risk_flags=risk_flags(site, name))
    filters = item_filters(request)
    items = data.item_page(led, name, filters, page, total=view["total"], sort=sort, descending=dir == "desc")
    live = data.live_run(led, name)
    busy = web.reruns.busy(name)
    return web.render(request, "department.html", name=name, view=view, items=items, filters=filters,
                      configured=name in site.files, history=data.run_history(led, name, limit=15),
                      live=live, busy=busy, reruns=web.reruns.of(name), identities=identities_of(web, name),
                      identity_table=data.identity_table, sort=sort, descending=dir == "desc", prefect_ui=prefect_ui(),
                      has_scan=bool((folder := site.report_dir(name)) and data.scan_files(folder)),
                      states=data.STATES, annotation_verdicts=data.ANNOTATION_VERDICTS,
                      sorts=data.ITEM_SORTS, attention=data.ATTENTION, categories=data.CATEGORIES)


@router.get("/departments/{name}/assessment", response_class=HTMLResponse)
def assessment(request: Request, name: str, page: int = Query(1, ge=1, le=MAX_PAGE)):
    web = dashboard(request)
    web.viewer(request)
    report_dir = web.report_dir_or_404(name)
    args = scan_args(request)
    scan = data.scan_table(report_dir, page=page, **args)
    return web.render(request, "assessment.html", name=name, scan=scan, args=args,
                      assessment=data.read_assessment(report_dir))


@router.get("/departments/{name}/identities", response_class=HTMLResponse)
def identities(request: Request, name: str, check: str = Query("", pattern="^1?$")):
    """The identity map with each check, as `umstieg users` prints it; `?check=1` checks now."""
    web = dashboard(request)
    web.viewer(request)
    web.department_or_404(name)
    problem = None
    if check and name not in web.site.files:
        raise Refused(409, "This department has no department file here: its identities cannot be checked here.")
    if check:
        try:
            check_identities_now(web, name)
        except Exception as exc:         # a directory or target out of reach: one clear line on the page
            problem = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
            log.warning("dashboard: identity check of %s failed: %s", name, problem)
    found = identities_of(web, name)
    return web.render(request, "identities.html", name=name, found=found, problem=problem,
                      table=data.identity_table(found["rows"]) if found else None,
                      can_check=name in web.site.files)

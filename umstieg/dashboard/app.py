"""The dashboard's web app: pages, exports and the operators' actions (FastAPI, server-side HTML).

Everything a page needs is served from here: templates rendered on the server, one stylesheet,
charts as inline SVG with a table beside them. No script is required; every action is a form
that works by keyboard. What a page shows is computed by reports/dashboard.py.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Form, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from core.department import Department, load_department
from core.errors import ConfigError
from core.ledger import Ledger
from reports import dashboard as data
from umstieg.dashboard.auth import SESSION_COOKIE, Account, Role, Sessions, check_password
from umstieg.dashboard.i18n import LANGUAGES, negotiate, translations
from umstieg.dashboard.reruns import Reruns
from umstieg.dashboard.store import Audit, Store, Throttle

__all__ = ["Site", "create_app", "is_loopback"]

log = logging.getLogger("umstieg.dashboard")
HERE = Path(__file__).parent
LANG_COOKIE = "umstieg_lang"


#: Host names the dashboard answers to without logins (loopback only): a web page elsewhere that
#: points a name of its own at 127.0.0.1 (DNS rebinding) is refused by its Host header.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: The largest page number and id a query may name (ids are 32-bit in a PostgreSQL ledger).
MAX_PAGE = 10_000_000
MAX_ID = 2 ** 31 - 1


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Site:
    """What one dashboard serves: its departments (by file), their ledgers, who may log in."""

    department_files: list[Path]
    accounts: dict[str, Account] = field(default_factory=dict)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    secure_cookies: bool = False
    #: where sessions and failed logins are kept (default: the first department's work_dir/dashboard)
    state_dir: Path | None = None
    #: Host header values answered (None: any when logins are configured, loopback names otherwise)
    allowed_hosts: list[str] | None = None
    throttle: Throttle = field(default_factory=Throttle)
    departments: dict[str, Department] = field(default_factory=dict, init=False)
    files: dict[str, Path] = field(default_factory=dict, init=False)
    ledgers: dict[str, Ledger] = field(default_factory=dict, init=False)      # url -> ledger
    ledger_of: dict[str, Ledger] = field(default_factory=dict, init=False)    # department -> ledger

    def __post_init__(self) -> None:
        for path in self.department_files:
            dept = load_department(path)
            if dept.name in self.departments:
                raise ConfigError(f"{path}: department {dept.name!r} is already served from {self.files[dept.name]}")
            self.departments[dept.name] = dept
            self.files[dept.name] = Path(path).resolve()
            led = self.ledgers.get(dept.ledger_url)
            if led is None:
                led = self.ledgers[dept.ledger_url] = dept.open_ledger()
                led.migrate()
            self.ledger_of[dept.name] = led
        if not self.departments:
            raise ConfigError("the dashboard needs at least one department file")
        if self.state_dir is None:
            self.state_dir = Path(next(iter(self.departments.values())).work_dir) / "dashboard"
        if self.allowed_hosts is None and not self.accounts:
            self.allowed_hosts = list(LOOPBACK_HOSTS)

    def host_allowed(self, host_header: str | None) -> bool:
        if self.allowed_hosts is None:
            return True
        host = (host_header or "").strip().lower()
        if host.startswith("["):                       # [::1]:8350
            host = host[1:].split("]", 1)[0]
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        return host in {h.lower() for h in self.allowed_hosts}

    def work_dirs(self, name: str | None = None) -> list[Path]:
        """The work_dir of one department (None: of every department served here)."""
        names = [name] if name else list(self.departments)
        return [Path(self.departments[n].work_dir) for n in names if n in self.departments]

    def all_departments(self) -> list[tuple[str, Ledger]]:
        """Every department of every ledger (also those without a department file here)."""
        seen: dict[str, Ledger] = {}
        for led in self.ledgers.values():
            for name in data.departments_in(led):
                seen.setdefault(name, led)
        for name, led in self.ledger_of.items():
            seen.setdefault(name, led)
        return sorted(seen.items())

    def report_dir(self, name: str) -> Path | None:
        dept = self.departments.get(name)
        return dept.work_dir / "reports" if dept else None

    def close(self) -> None:
        for led in self.ledgers.values():
            led.close()


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def create_app(site: Site) -> FastAPI:
    sessions = Sessions(site.secret)
    store = Store(site.state_dir / "dashboard.sqlite", site.throttle)
    audit = Audit()
    reruns = Reruns()
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["plain"] = _plain
    css = (HERE / "static" / "dashboard.css").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_app):
        yield
        reruns.stop_all()
        site.close()

    app = FastAPI(title="umstieg dashboard", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.site, app.state.reruns, app.state.store = site, reruns, store

    # ------------------------------------------------------------------ request context
    def language(request: Request) -> str:
        lang = request.cookies.get(LANG_COOKIE)
        return lang if lang in LANGUAGES else negotiate(request.headers.get("accept-language"))

    def session(request: Request) -> dict | None:
        if not site.accounts:          # no logins configured: loopback only, and read-only
            return {"u": "", "r": Role.VIEWER.value, "c": ""}
        found = store.session(request.cookies.get(SESSION_COOKIE))
        if found and found["u"] in site.accounts and site.accounts[found["u"]].role.value == found["r"]:
            return found
        return None

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "-"

    def fmt_number(lang: str):
        from babel.numbers import format_decimal

        def fmt(value, digits: int = 0):
            if value is None or value == "":
                return "–"
            pattern = "#,##0" + ("." + "0" * digits if digits else "")
            return format_decimal(value, format=pattern, locale=lang)
        return fmt

    def render(request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
        lang = context.pop("lang", None) or language(request)
        tr = translations(lang)
        fmt = fmt_number(lang)
        me = session(request)

        def fmt_bytes(value) -> str:
            value = value or 0
            for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
                if value >= size:
                    return f"{fmt(value / size, 1)} {unit}"
            return f"{fmt(value)} B"

        def fmt_duration(seconds) -> str:
            if seconds is None:
                return tr.gettext("unknown")
            seconds = int(seconds)
            h, rest = divmod(seconds, 3600)
            return f"{h} h {rest // 60:02d} min" if h else f"{rest // 60} min {rest % 60:02d} s"

        def fmt_time(moment) -> str:
            from babel.dates import format_datetime
            return format_datetime(moment, format="short", locale=lang) if moment else "–"

        def url_with(**changes) -> str:
            params = dict(request.query_params)
            params.update({k: v for k, v in changes.items()})
            params = {k: v for k, v in params.items() if v not in (None, "")}
            return request.url.path + ("?" + urlencode(params) if params else "")

        body = env.get_template(template).render(
            _=tr.gettext, lang=lang, languages=LANGUAGES, me=me, can_act=bool(me and me["r"] == Role.OPERATOR.value),
            login_required=bool(site.accounts), fmt=fmt, fmt_bytes=fmt_bytes, fmt_duration=fmt_duration,
            fmt_time=fmt_time, url_with=url_with, path=request.url.path, quote=quote,
            css=css if context.get("standalone") else None, **context)
        return HTMLResponse(body, status_code=status)

    def refuse(request: Request, status: int, message: str) -> HTMLResponse:
        return render(request, "error.html", status=status, message=message, code=status)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused):
        return refuse(request, exc.status, translations(language(request)).gettext(exc.message))

    @app.exception_handler(404)
    async def _not_found(request: Request, exc):
        return refuse(request, 404, translations(language(request)).gettext("Not found."))

    @app.exception_handler(405)
    async def _not_allowed(request: Request, exc):
        return refuse(request, 405, translations(language(request)).gettext("This address cannot be used that way."))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        names = sorted({str(e["loc"][-1]) for e in exc.errors() if e.get("loc")})
        tr = translations(language(request)).gettext
        return refuse(request, 400, tr("A value in the address is not valid:") + " " + ", ".join(names))

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        if not site.host_allowed(request.headers.get("host")):
            # no page, no redirect: a name that is not this dashboard's gets nothing of it
            return Response("This dashboard does not answer to that host name.\n", status_code=421,
                            media_type="text/plain; charset=utf-8")
        lang = request.query_params.get("lang")
        if lang in LANGUAGES and request.method == "GET":       # the language switch
            params = {k: v for k, v in request.query_params.items() if k != "lang"}
            response = RedirectResponse(request.url.path + ("?" + urlencode(params) if params else ""), 303)
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, httponly=True, samesite="strict",
                                secure=site.secure_cookies)
            return response
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def viewer(request: Request) -> dict:
        me = session(request)
        if me is None:
            raise _Login(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return me

    def operator(request: Request, csrf: str | None) -> dict:
        """The session of an operator who posted this session's CSRF token (else 401/403)."""
        me = session(request)
        if me is None or not site.accounts:
            raise Refused(401, "Log in first.")
        if not csrf or not secrets.compare_digest(csrf, me["c"]):
            raise Refused(403, "The form has expired or did not come from this dashboard. Reload the page and try again.")
        if me["r"] != Role.OPERATOR.value:
            raise Refused(403, "Only operators may do this.")
        return me

    class _Login(Exception):
        def __init__(self, next_url: str) -> None:
            self.next_url = next_url

    @app.exception_handler(_Login)
    async def _to_login(request: Request, exc: _Login):
        return RedirectResponse(f"/login?next={quote(exc.next_url, safe='')}", 303)

    def department_or_404(name: str) -> Ledger:
        names = dict(site.all_departments())
        if name not in names:
            raise Refused(404, "Not found.")
        return names[name]

    def download(content: bytes, filename: str, fmt: str) -> Response:
        media = {"csv": "text/csv; charset=utf-8", "ods": "application/vnd.oasis.opendocument.spreadsheet",
                 "html": "text/html; charset=utf-8"}[fmt]
        return Response(content, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    def export(table: data.Table, stem: str, fmt: str, lang: str) -> Response:
        tr = translations(lang).gettext
        if fmt == "csv":
            return download(data.table_csv(table, tr), f"{stem}.csv", "csv")
        if fmt == "ods":
            return download(data.table_ods(table, tr), f"{stem}.ods", "ods")
        raise Refused(404, "Not found.")

    # ------------------------------------------------------------------ login
    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str = "/"):
        if not site.accounts:
            return RedirectResponse("/", 303)
        return render(request, "login.html", next=_local(next), token=sessions.login_token(), failed=False)

    @app.post("/login")
    def login(request: Request, username: str = Form(""), password: str = Form(""), token: str = Form(""),
              next: str = Form("/")):
        if not site.accounts:
            return RedirectResponse("/", 303)
        if not sessions.login_token_ok(token):
            raise Refused(403, "The form has expired or did not come from this dashboard. Reload the page and try again.")
        client, username = client_of(request), username[:200]
        refused = store.refused_for(username, client)
        if refused is not None:
            what, seconds = refused
            audit.write(site.work_dirs(), client=client, user=username, action="login_refused",
                        target=f"too many failed logins ({what})")
            log.warning("dashboard: login for %r from %s refused: too many failed logins (%s)", username[:60], client, what)
            tr = translations(language(request)).gettext
            message = (tr("Too many failed logins for this login.") if what == "login"
                       else tr("Too many failed logins from your address.")) + " " + \
                tr("Try again in %(minutes)d minutes.") % {"minutes": -(-seconds // 60)}
            response = render(request, "login.html", status=429, next=_local(next), token=sessions.login_token(),
                              failed=True, message=message, username=username)
            response.headers["Retry-After"] = str(seconds)
            return response
        account = site.accounts.get(username)
        # a missing login costs the same time as a wrong password: no hint which logins exist
        stored = account.password_hash if account else _DUMMY_HASH
        if not check_password(password, stored) or account is None:
            store.failed(username, client)
            audit.write(site.work_dirs(), client=client, user=username, action="login_failed")
            log.warning("dashboard: failed login for %r from %s", username[:60], client)
            return render(request, "login.html", status=401, next=_local(next), token=sessions.login_token(),
                          failed=True, username=username)
        store.succeeded(account.name)
        response = RedirectResponse(_local(next), 303)
        response.set_cookie(SESSION_COOKIE, store.open_session(account.name, account.role.value, client),
                            max_age=store.max_age, httponly=True, samesite="strict", secure=site.secure_cookies,
                            path="/")
        audit.write(site.work_dirs(), client=client, user=account.name, action="login", target=account.role.value)
        log.info("dashboard: %s logged in from %s (%s)", account.name, client, account.role.value)
        return response

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form("")):
        me = session(request)
        if me and site.accounts and secrets.compare_digest(csrf, me["c"]):
            store.end_session(request.cookies.get(SESSION_COOKIE))       # the cookie is worth nothing now
            audit.write(site.work_dirs(), client=client_of(request), user=me["u"], action="logout")
            response = RedirectResponse("/login", 303)
            response.delete_cookie(SESSION_COOKIE, path="/")
            return response
        raise Refused(403, "The form has expired or did not come from this dashboard. Reload the page and try again.")

    # ------------------------------------------------------------------ static files and health
    @app.get("/static/dashboard.css")
    async def stylesheet():
        return Response(css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})

    @app.get("/healthz")
    async def health():
        return {"status": "ok"}

    # ------------------------------------------------------------------ overview
    def overview_data() -> dict:
        by_ledger: dict[int, tuple[Ledger, list[str]]] = {}
        for name, led in site.all_departments():
            by_ledger.setdefault(id(led), (led, []))[1].append(name)
        merged = {"departments": [], "throughput": {}, "totals": {}}
        for led, names in by_ledger.values():
            part = data.overview(led, names, site.departments,
                                 {n: site.report_dir(n) for n in names if site.report_dir(n)})
            merged["departments"] += part["departments"]
            for day, n in part["throughput"]:
                merged["throughput"][day] = merged["throughput"].get(day, 0) + n
        merged["departments"].sort(key=lambda r: r["department"])
        merged["throughput"] = sorted(merged["throughput"].items())
        merged["totals"] = {k: sum(r[k] for r in merged["departments"])
                            for k in ("items", "bytes", *data.CATEGORIES, "remaining")}
        return merged

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request):
        viewer(request)
        result = overview_data()
        return render(request, "overview.html", data=result, tables=data.overview_tables(result),
                      categories=data.CATEGORIES)

    @app.get("/export/overview.html")
    def overview_export(request: Request):
        viewer(request)
        result = overview_data()
        page = render(request, "overview.html", data=result, tables=data.overview_tables(result), standalone=True,
                      categories=data.CATEGORIES)
        response = download(page.body, "umstieg-overview.html", "html")
        response.headers["Content-Security-Policy"] = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
        return response

    @app.get("/tables/{table}.{fmt}")
    def overview_table(request: Request, table: str, fmt: str):
        viewer(request)
        tables = data.overview_tables(overview_data())
        if table not in tables:
            raise Refused(404, "Not found.")
        return export(tables[table], f"overview-{table}", fmt, language(request))

    # ------------------------------------------------------------------ department
    def item_filters(request: Request) -> dict:
        filters = {k: request.query_params.get(k, "") for k in (*data.ITEM_FILTERS, "annotation", "q")}
        if filters["batch"] and not (filters["batch"].isdigit() and int(filters["batch"]) <= MAX_ID):
            raise Refused(400, "A value in the address is not valid: batch")
        return filters

    def risk_flags(name: str):
        report_dir = site.report_dir(name)
        assessment = data.read_assessment(report_dir) if report_dir else None
        return (assessment or {}).get("risk_flags") or {}

    @app.get("/departments/{name}", response_class=HTMLResponse)
    def department(request: Request, name: str, page: int = Query(1, ge=1, le=MAX_PAGE),
                   sort: str = Query("id", pattern="^(" + "|".join(data.ITEM_SORTS) + ")$"),
                   dir: str = Query("asc", pattern="^(asc|desc)$")):
        viewer(request)
        led = department_or_404(name)
        view = data.department_view(led, name, risk_flags=risk_flags(name))
        filters = item_filters(request)
        items = data.item_page(led, name, filters, page, total=view["total"], sort=sort, descending=dir == "desc")
        live = data.live_run(led, name)
        busy = reruns.busy(name)
        return render(request, "department.html", name=name, view=view, items=items, filters=filters,
                      configured=name in site.files, history=data.run_history(led, name, limit=15),
                      live=live, busy=busy, sort=sort, descending=dir == "desc", prefect_ui=_prefect_ui(),
                      has_scan=bool(site.report_dir(name) and data.scan_files(site.report_dir(name))),
                      states=data.STATES, annotation_verdicts=data.ANNOTATION_VERDICTS,
                      sorts=data.ITEM_SORTS, attention=data.ATTENTION, categories=data.CATEGORIES)

    def attention_filters(request: Request) -> dict:
        p = request.query_params
        why = p.get("why", "")
        if why and why not in data.ATTENTION:
            raise Refused(400, "A value in the address is not valid: why")
        return {"why": why, "owner": p.get("owner", ""), "show": "all" if p.get("show") == "all" else ""}

    @app.get("/departments/{name}/attention", response_class=HTMLResponse)
    def attention(request: Request, name: str, page: int = Query(1, ge=1, le=MAX_PAGE)):
        viewer(request)
        led = department_or_404(name)
        filters = attention_filters(request)
        queue = data.attention_page(led, name, filters, page)
        owners = data.department_owners(led, name)
        return render(request, "attention.html", name=name, queue=queue, filters=filters, owners=owners,
                      attention=data.ATTENTION, waiting=data.waiting_users(led, name))

    @app.get("/departments/{name}/attention.{fmt}")
    def attention_export(request: Request, name: str, fmt: str):
        viewer(request)
        led = department_or_404(name)
        filters = attention_filters(request)
        lang = language(request)
        tr = translations(lang).gettext
        rows = [{**r, "why": tr(r["why"])} for chunk in data.iter_attention(led, name, filters) for r in chunk]
        return export(data.Table("attention", "Needs a person", data.ATTENTION_COLUMNS, rows[:ODS_ROWS]),
                      f"{name}-needs-a-person", fmt, lang)

    @app.get("/departments/{name}/tables/{table}.{fmt}")
    def department_table(request: Request, name: str, table: str, fmt: str):
        viewer(request)
        led = department_or_404(name)
        lang = language(request)
        if table == "items":
            filters = item_filters(request)
            if fmt == "csv":            # every matching item, streamed in chunks
                tr = translations(lang).gettext

                def rows():
                    first = True
                    for chunk in data.iter_items(led, name, filters):
                        text = data.csv_text(data.Table("items", "Items", data.ITEM_COLUMNS, chunk), tr, header=first)
                        yield ("\ufeff" if first else "") + text
                        first = False
                    if first:
                        yield "\ufeff" + data.csv_text(data.Table("items", "Items", data.ITEM_COLUMNS, []), tr)
                return StreamingResponse(rows(), media_type="text/csv; charset=utf-8",
                                         headers={"Content-Disposition": f'attachment; filename="{name}-items.csv"'})
            rows = [r for chunk in data.iter_items(led, name, filters) for r in chunk][:ODS_ROWS]
            return export(data.Table("items", "Items", data.ITEM_COLUMNS, rows), f"{name}-items", fmt, lang)
        tables = data.department_view(led, name, risk_flags=risk_flags(name))["tables"]
        if table not in tables:
            raise Refused(404, "Not found.")
        return export(tables[table], f"{name}-{table}", fmt, lang)

    @app.get("/departments/{name}/items/{item_id}", response_class=HTMLResponse)
    def item(request: Request, name: str, item_id: int = PathParam(ge=1, le=MAX_ID)):
        viewer(request)
        led = department_or_404(name)
        record = data.document(led, name, item_id)
        if record is None:
            raise Refused(404, "Not found.")
        report_dir = site.report_dir(name)
        thumbs = data.thumbnails(report_dir, record) if report_dir else {}
        queue = None
        if request.query_params.get("queue") == "1":     # worked through from the "needs a person" queue
            filters = attention_filters(request)
            queue = {**data.attention_neighbours(led, name, item_id, filters), "filters": filters,
                     "query": urlencode({"queue": "1", **{k: v for k, v in filters.items() if v}})}
        return render(request, "item.html", name=name, record=record, item=record["item"], thumbs=thumbs,
                      annotation_verdicts=data.ANNOTATION_VERDICTS, queue=queue,
                      why=data.why_of(record["item"]))

    @app.post("/departments/{name}/items/{item_id}/annotation")
    def annotate(request: Request, name: str, item_id: int = PathParam(ge=1, le=MAX_ID), verdict: str = Form(""), comment: str = Form(""),
                 csrf: str = Form("")):
        me = operator(request, csrf)
        led = department_or_404(name)
        if verdict not in data.ANNOTATION_VERDICTS:
            raise Refused(400, "Choose accepted as it is or needs manual work.")
        if not data.annotate(led, name, item_id, verdict, comment.strip(), me["u"]):
            raise Refused(404, "Not found.")
        audit.write(site.work_dirs(name) or site.work_dirs(), client=client_of(request), user=me["u"],
                    action="annotation", target=f"{name}: item {item_id}", verdict=verdict)
        log.info("dashboard: %s marked item %d of %s as %s", me["u"], item_id, name, verdict)
        back = request.query_params.get("back", "")
        query = back if back.startswith("queue=1") and "#" not in back else ""
        return RedirectResponse(f"/departments/{quote(name)}/items/{item_id}?saved=1" + (f"&{query}" if query else ""),
                                303)

    @app.get("/departments/{name}/files/{relative:path}")
    def report_file(request: Request, name: str, relative: str):
        viewer(request)
        department_or_404(name)
        report_dir = site.report_dir(name)
        path = data.safe_report_file(report_dir, relative) if report_dir else None
        if path is None:
            raise Refused(404, "Not found.")
        return FileResponse(path)

    # ------------------------------------------------------------------ assessment
    def scan_args(request: Request) -> dict:
        p = request.query_params
        return {"sort": p.get("sort", "category"), "descending": p.get("dir") == "desc",
                "category": p.get("category", ""), "flag": p.get("flag", ""), "fmt": p.get("format", ""),
                "q": p.get("q", "")}

    @app.get("/departments/{name}/assessment", response_class=HTMLResponse)
    def assessment(request: Request, name: str, page: int = Query(1, ge=1, le=MAX_PAGE)):
        viewer(request)
        department_or_404(name)
        report_dir = site.report_dir(name)
        if report_dir is None:
            raise Refused(404, "Not found.")
        args = scan_args(request)
        scan = data.scan_table(report_dir, page=page, **args)
        return render(request, "assessment.html", name=name, scan=scan, args=args,
                      assessment=data.read_assessment(report_dir))

    @app.get("/departments/{name}/assessment.{fmt}")
    def assessment_export(request: Request, name: str, fmt: str):
        viewer(request)
        department_or_404(name)
        report_dir = site.report_dir(name)
        if report_dir is None:
            raise Refused(404, "Not found.")
        scan = data.scan_table(report_dir, page=None, **scan_args(request))
        return export(scan["table"], f"{name}-risk-scan", fmt, language(request))

    # ------------------------------------------------------------------ reruns
    @app.post("/departments/{name}/rerun")
    def start_rerun(request: Request, name: str, csrf: str = Form(""), error_class: str = Form(""),
                    user: str = Form(""), batch: str = Form("")):
        me = operator(request, csrf)
        led = department_or_404(name)
        if name not in site.files:
            raise Refused(409, "This department has no department file here: rerun it where its file is.")
        batch_no = int(batch) if batch.strip().isdigit() and int(batch) <= MAX_ID else None
        if reruns.busy(name) or data.live_run(led, name):
            raise Refused(409, "A run of this department is going on: a rerun can start when it has ended.")
        if not data.failed_count(led, name, error_class=error_class or None, user=user or None, batch=batch_no):
            raise Refused(409, "No failed item matches these filters.")
        job = reruns.start(name, site.files[name], site.departments[name].work_dir, me["u"],
                           error_class=error_class or None, user=user or None, batch=batch_no)
        audit.write(site.work_dirs(name), client=client_of(request), user=me["u"], action="rerun",
                    target=f"{name}: rerun {job.id}", filters={k: v for k, v in job.filters.items() if v is not None},
                    log=job.log.name)
        log.info("dashboard: %s started rerun %d of %s (%s)", me["u"], job.id, name, job.filters)
        return RedirectResponse(f"/departments/{quote(name)}/reruns/{job.id}", 303)

    @app.get("/departments/{name}/reruns/{number}", response_class=HTMLResponse)
    def rerun_progress(request: Request, name: str, number: int = PathParam(ge=1, le=MAX_ID)):
        viewer(request)
        led = department_or_404(name)
        job = reruns.get(number)
        if job is None or job.department != name:
            raise Refused(404, "Not found.")
        run = data.run_of_process(led, name, job.host, job.pid, since=job.started.replace(microsecond=0) - _SLACK)
        running = job.running
        if running:
            status = "running" if run else "starting"
        elif run is None:
            status = "crashed"                   # the child ended without opening a run
        elif run["status"] == "running":
            status = "interrupted"               # its process is gone; the next run marks it so
        else:
            status = run["status"]               # completed / failed / refused / interrupted
        error = (run or {}).get("error") if status in ("failed", "refused", "interrupted") else None
        if status == "crashed" or (status in ("failed", "interrupted") and not error):
            error = job.last_words() or None
        return render(request, "rerun.html", name=name, job=job, run=run, outcome=status, error=error,
                      prefect_ui=_prefect_ui())

    app.add_middleware(HeadAsGet)
    return app


class HeadAsGet:
    """HEAD is answered as GET without the body (HTTP requires HEAD wherever GET is; FastAPI's
    routes declare GET only): same status and headers, Content-Length included."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "HEAD":
            return await self.app(scope, receive, send)
        scope = dict(scope, method="GET")
        sent_end = False

        async def head_send(message):
            nonlocal sent_end
            if message["type"] == "http.response.body":
                if sent_end:
                    return
                if message.get("more_body"):
                    return                    # a streamed body: drop it; the end is sent once
                sent_end = True
                return await send({"type": "http.response.body", "body": b"", "more_body": False})
            await send(message)
        await self.app(scope, receive, head_send)
        if not sent_end:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


#: reruns read back from the ledger by start time: allow for clocks of the ledger and the dashboard
_SLACK = timedelta(seconds=5)
#: the ODS export of the item table stops here (a spreadsheet of 500 000 rows helps no one; CSV has all)
ODS_ROWS = 100_000
_DUMMY_HASH = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "="


def _plain(value) -> str:
    """A value of a fidelity record as words: lists joined by commas, not Python's repr."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, set)):
        return ", ".join(_plain(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_plain(v)}" for k, v in value.items())
    return str(value)


def _prefect_ui() -> str | None:
    """The Prefect UI's address when a server is configured (PREFECT_UI_URL, else PREFECT_API_URL
    without its /api), for links to flow runs."""
    ui = os.environ.get("PREFECT_UI_URL")
    if not ui and os.environ.get("PREFECT_API_URL"):
        ui = os.environ["PREFECT_API_URL"].rstrip("/").removesuffix("/api")
    return ui.rstrip("/") if ui and ui.startswith(("http://", "https://")) else None


def _local(next_url: str) -> str:
    """Only paths of this dashboard as a redirect target after the login (no open redirect)."""
    if not next_url.startswith("/") or next_url.startswith("//") or "\\" in next_url:
        return "/"
    return next_url


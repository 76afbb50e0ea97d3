"""The dashboard's web app: pages, exports and the operators' actions (FastAPI, server-side HTML).

Everything a page needs is served from here: templates rendered on the server, one stylesheet,
charts as inline SVG with a table beside them. No script is required; every action is a form
that works by keyboard. What a page shows is computed by reports/dashboard.py.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from core.department import Department, load_department
from core.errors import ConfigError
from core.ledger import Ledger
from reports import dashboard as data
from umstieg.dashboard.auth import SESSION_COOKIE, Account, Role, Sessions, check_password
from umstieg.dashboard.i18n import LANGUAGES, negotiate, translations
from umstieg.dashboard.reruns import Reruns

__all__ = ["Site", "create_app", "is_loopback"]

log = logging.getLogger("umstieg.dashboard")
HERE = Path(__file__).parent
LANG_COOKIE = "umstieg_lang"


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
    reruns = Reruns(Path(next(iter(site.departments.values())).work_dir) / "reports" / "dashboard-reruns")
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    css = (HERE / "static" / "dashboard.css").read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(_app):
        yield
        reruns.stop_all()
        site.close()

    app = FastAPI(title="umstieg dashboard", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.site, app.state.reruns = site, reruns

    # ------------------------------------------------------------------ request context
    def language(request: Request) -> str:
        lang = request.cookies.get(LANG_COOKIE)
        return lang if lang in LANGUAGES else negotiate(request.headers.get("accept-language"))

    def session(request: Request) -> dict | None:
        if not site.accounts:          # no logins configured: loopback only, and read-only
            return {"u": "", "r": Role.VIEWER.value, "c": ""}
        found = sessions.read(request.cookies.get(SESSION_COOKIE))
        if found and found["u"] in site.accounts and site.accounts[found["u"]].role.value == found["r"]:
            return found
        return None

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

    @app.middleware("http")
    async def _headers(request: Request, call_next):
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
        account = site.accounts.get(username)
        # a missing login costs the same time as a wrong password: no hint which logins exist
        stored = account.password_hash if account else _DUMMY_HASH
        if not check_password(password, stored) or account is None:
            log.warning("dashboard: failed login for %r", username[:60])
            return render(request, "login.html", status=401, next=_local(next), token=sessions.login_token(),
                          failed=True, username=username)
        response = RedirectResponse(_local(next), 303)
        response.set_cookie(SESSION_COOKIE, sessions.issue(account), max_age=sessions.max_age, httponly=True,
                            samesite="strict", secure=site.secure_cookies, path="/")
        log.info("dashboard: %s logged in (%s)", account.name, account.role.value)
        return response

    @app.post("/logout")
    def logout(request: Request, csrf: str = Form("")):
        me = session(request)
        if me and site.accounts and secrets.compare_digest(csrf, me["c"]):
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
                            for k in ("items", "bytes", "done", "remaining", "failed")}
        return merged

    @app.get("/", response_class=HTMLResponse)
    def overview(request: Request):
        viewer(request)
        result = overview_data()
        return render(request, "overview.html", data=result, tables=data.overview_tables(result))

    @app.get("/export/overview.html")
    def overview_export(request: Request):
        viewer(request)
        result = overview_data()
        page = render(request, "overview.html", data=result, tables=data.overview_tables(result), standalone=True)
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
        if filters["batch"] and not filters["batch"].isdigit():
            filters["batch"] = ""
        return filters

    def risk_flags(name: str):
        report_dir = site.report_dir(name)
        assessment = data.read_assessment(report_dir) if report_dir else None
        return (assessment or {}).get("risk_flags") or {}

    @app.get("/departments/{name}", response_class=HTMLResponse)
    def department(request: Request, name: str, page: int = 1):
        me = viewer(request)
        led = department_or_404(name)
        view = data.department_view(led, name, risk_flags=risk_flags(name))
        filters = item_filters(request)
        items = data.item_page(led, name, filters, page, total=view["total"])
        return render(request, "department.html", name=name, view=view, items=items, filters=filters,
                      configured=name in site.files, reruns=data.rerun_runs(led, name, limit=5),
                      has_scan=bool(site.report_dir(name) and data.scan_files(site.report_dir(name))),
                      states=data.STATES, annotation_verdicts=data.ANNOTATION_VERDICTS)

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
                        frame = data.Table("items", "Items", data.ITEM_COLUMNS, chunk).frame(tr)
                        yield ("\ufeff" if first else "") + frame.to_csv(index=False, header=first)
                        first = False
                    if first:
                        yield "\ufeff" + data.Table("items", "Items", data.ITEM_COLUMNS, []).frame(tr).to_csv(index=False)
                return StreamingResponse(rows(), media_type="text/csv; charset=utf-8",
                                         headers={"Content-Disposition": f'attachment; filename="{name}-items.csv"'})
            rows = [r for chunk in data.iter_items(led, name, filters) for r in chunk][:ODS_ROWS]
            return export(data.Table("items", "Items", data.ITEM_COLUMNS, rows), f"{name}-items", fmt, lang)
        tables = data.department_view(led, name, risk_flags=risk_flags(name))["tables"]
        if table not in tables:
            raise Refused(404, "Not found.")
        return export(tables[table], f"{name}-{table}", fmt, lang)

    @app.get("/departments/{name}/items/{item_id}", response_class=HTMLResponse)
    def item(request: Request, name: str, item_id: int):
        viewer(request)
        led = department_or_404(name)
        record = data.document(led, name, item_id)
        if record is None:
            raise Refused(404, "Not found.")
        report_dir = site.report_dir(name)
        thumbs = data.thumbnails(report_dir, record) if report_dir else {}
        return render(request, "item.html", name=name, record=record, item=record["item"], thumbs=thumbs,
                      annotation_verdicts=data.ANNOTATION_VERDICTS)

    @app.post("/departments/{name}/items/{item_id}/annotation")
    def annotate(request: Request, name: str, item_id: int, verdict: str = Form(""), comment: str = Form(""),
                 csrf: str = Form("")):
        me = operator(request, csrf)
        led = department_or_404(name)
        if verdict not in data.ANNOTATION_VERDICTS:
            raise Refused(400, "Choose accepted as it is or needs manual work.")
        if not data.annotate(led, name, item_id, verdict, comment.strip(), me["u"]):
            raise Refused(404, "Not found.")
        log.info("dashboard: %s marked item %d of %s as %s", me["u"], item_id, name, verdict)
        return RedirectResponse(f"/departments/{quote(name)}/items/{item_id}?saved=1", 303)

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
    def assessment(request: Request, name: str, page: int = 1):
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
        batch_no = int(batch) if batch.strip().isdigit() else None
        if not data.failed_count(led, name, error_class=error_class or None, user=user or None, batch=batch_no):
            raise Refused(409, "No failed item matches these filters.")
        job = reruns.start(name, site.files[name], me["u"], error_class=error_class or None, user=user or None,
                           batch=batch_no)
        log.info("dashboard: %s started rerun %d of %s (%s)", me["u"], job.id, name, job.filters)
        return RedirectResponse(f"/departments/{quote(name)}/reruns/{job.id}", 303)

    @app.get("/departments/{name}/reruns/{number}", response_class=HTMLResponse)
    def rerun_progress(request: Request, name: str, number: int):
        viewer(request)
        led = department_or_404(name)
        job = reruns.get(number)
        if job is None or job.department != name:
            raise Refused(404, "Not found.")
        runs = data.rerun_runs(led, name, since=job.started.replace(microsecond=0) - _SLACK, limit=1)
        run = runs[0] if runs else None
        log_tail = ""
        if not job.running and job.exit_code not in (0, 1):     # 1: some items failed again
            log_tail = job.log.read_text(encoding="utf-8", errors="replace")[-2000:]
        return render(request, "rerun.html", name=name, job=job, run=run, log_tail=log_tail)

    return app


#: reruns read back from the ledger by start time: allow for clocks of the ledger and the dashboard
_SLACK = timedelta(seconds=5)
#: the ODS export of the item table stops here (a spreadsheet of 500 000 rows helps no one; CSV has all)
ODS_ROWS = 100_000
_DUMMY_HASH = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "="


def _local(next_url: str) -> str:
    """Only paths of this dashboard as a redirect target after the login (no open redirect)."""
    if not next_url.startswith("/") or next_url.startswith("//") or "\\" in next_url:
        return "/"
    return next_url


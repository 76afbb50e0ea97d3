"""What every page of the dashboard shares: the request's language and session, rendering a
template, refusing with the error page, the checks a page or an action makes (logged in, an
operator with this session's CSRF token), and the security headers and error handlers.

The routers (umstieg/dashboard/routes/) are plain functions that reach one `Dashboard` through
`dashboard(request)`; create_app makes it and installs what is here.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from pathlib import Path
from urllib.parse import quote, urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from core.ledger import Ledger
from reports import dashboard as data
from umstieg.dashboard.auth import SESSION_COOKIE, Role, Sessions
from umstieg.dashboard.i18n import LANGUAGES, negotiate, translations
from umstieg.dashboard.reruns import Reruns
from umstieg.dashboard.site import Site
from umstieg.dashboard.store import Audit, Store

__all__ = ["Dashboard", "dashboard", "Refused", "LoginNeeded", "install", "MAX_PAGE", "MAX_ID", "ODS_ROWS",
           "LANG_COOKIE", "prefect_ui", "local_path"]

log = logging.getLogger("umstieg.dashboard")
HERE = Path(__file__).parent
LANG_COOKIE = "umstieg_lang"
#: The largest page number and id a query may name (ids are 32-bit in a PostgreSQL ledger).
MAX_PAGE = 10_000_000
MAX_ID = 2 ** 31 - 1
#: the ODS export of the item table stops here (a spreadsheet of 500 000 rows helps no one; CSV has all)
ODS_ROWS = 100_000


class Refused(Exception):
    """A request answered with the error page: `message` is an English message id, translated."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class LoginNeeded(Exception):
    """A page asked for without a session: answered with a redirect to the login form."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


class Dashboard:
    """One dashboard's shared state (its site, sessions, audit log, reruns, templates) and what
    every page does with a request."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.sessions = Sessions(site.secret)
        assert site.state_dir is not None           # Site.__post_init__ settles it
        self.store = Store(site.state_dir / "dashboard.sqlite", site.throttle)
        self.audit = Audit()
        self.reruns = Reruns(self.store)
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters["plain"] = plain
        self.css = (HERE / "static" / "dashboard.css").read_text(encoding="utf-8")
        #: identity maps checked on request, by department: (when, rows)
        self.identities: dict[str, tuple] = {}
        self._identity_locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def identity_lock(self, name: str) -> threading.Lock:
        """The lock that lets one identity check of a department run at a time."""
        with self._locks_lock:
            return self._identity_locks.setdefault(name, threading.Lock())

    # ------------------------------------------------------------------ request context
    def language(self, request: Request) -> str:
        lang = request.cookies.get(LANG_COOKIE)
        return lang if lang in LANGUAGES else negotiate(request.headers.get("accept-language"))

    def gettext(self, request: Request):
        return translations(self.language(request)).gettext

    def session(self, request: Request) -> dict | None:
        if not self.site.accounts:          # no logins configured: loopback only, and read-only
            return {"u": "", "r": Role.VIEWER.value, "c": ""}
        found = self.store.session(request.cookies.get(SESSION_COOKIE))
        accounts = self.site.accounts
        if found and found["u"] in accounts and accounts[found["u"]].role.value == found["r"]:
            return found
        return None

    @staticmethod
    def client_of(request: Request) -> str:
        return request.client.host if request.client else "-"

    def viewer(self, request: Request) -> dict:
        """The session of whoever asks for a page (else a redirect to the login form)."""
        me = self.session(request)
        if me is None:
            raise LoginNeeded(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        return me

    def operator(self, request: Request, csrf: str | None) -> dict:
        """The session of an operator who posted this session's CSRF token (else 401/403)."""
        me = self.session(request)
        if me is None or not self.site.accounts:
            raise Refused(401, "Log in first.")
        if not csrf or not secrets.compare_digest(csrf, me["c"]):
            raise Refused(403, "The form has expired or did not come from this dashboard. "
                               "Reload the page and try again.")
        if me["r"] != Role.OPERATOR.value:
            raise Refused(403, "Only operators may do this.")
        return me

    def department_or_404(self, name: str) -> Ledger:
        names = dict(self.site.all_departments())
        if name not in names:
            raise Refused(404, "Not found.")
        return names[name]

    def report_dir_or_404(self, name: str) -> Path:
        self.department_or_404(name)
        report_dir = self.site.report_dir(name)
        if report_dir is None:
            raise Refused(404, "Not found.")
        return report_dir

    def audit_write(self, request: Request, name: str | None, **entry) -> None:
        """One line in the audit log of `name`'s department (None: of every department served)."""
        dirs = (self.site.work_dirs(name) if name else []) or self.site.work_dirs()
        self.audit.write(dirs, client=self.client_of(request), **entry)

    # ------------------------------------------------------------------ answers
    def render(self, request: Request, template: str, status: int = 200, **context) -> HTMLResponse:
        lang = context.pop("lang", None) or self.language(request)
        tr = translations(lang)
        fmt = number_format(lang)
        me = self.session(request)

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

        body = self.env.get_template(template).render(
            _=tr.gettext, lang=lang, languages=LANGUAGES, me=me,
            can_act=bool(me and me["r"] == Role.OPERATOR.value), login_required=bool(self.site.accounts),
            fmt=fmt, fmt_bytes=fmt_bytes, fmt_duration=fmt_duration, fmt_time=fmt_time, url_with=url_with,
            path=request.url.path, quote=quote, css=self.css if context.get("standalone") else None, **context)
        return HTMLResponse(body, status_code=status)

    def refuse(self, request: Request, status: int, message: str) -> HTMLResponse:
        return self.render(request, "error.html", status=status, message=message, code=status)

    @staticmethod
    def download(content: bytes, filename: str, fmt: str) -> Response:
        media = {"csv": "text/csv; charset=utf-8", "ods": "application/vnd.oasis.opendocument.spreadsheet",
                 "html": "text/html; charset=utf-8"}[fmt]
        return Response(content, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    def export(self, table: data.Table, stem: str, fmt: str, lang: str) -> Response:
        tr = translations(lang).gettext
        if fmt == "csv":
            return self.download(data.table_csv(table, tr, lang), f"{stem}.csv", "csv")
        if fmt == "ods":
            return self.download(data.table_ods(table, tr, lang), f"{stem}.ods", "ods")
        raise Refused(404, "Not found.")


def dashboard(request: Request) -> Dashboard:
    """The dashboard that serves this request."""
    return request.app.state.dashboard


def number_format(lang: str):
    from babel.numbers import format_decimal

    def fmt(value, digits: int = 0):
        if value is None or value == "":
            return "–"
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return format_decimal(value, format=pattern, locale=lang)
    return fmt


# ------------------------------------------------------------------ handlers and headers
async def _refused(request: Request, exc: Refused):
    web = dashboard(request)
    return web.refuse(request, exc.status, web.gettext(request)(exc.message))


async def _not_found(request: Request, exc):
    web = dashboard(request)
    return web.refuse(request, 404, web.gettext(request)("Not found."))


async def _not_allowed(request: Request, exc):
    web = dashboard(request)
    return web.refuse(request, 405, web.gettext(request)("This address cannot be used that way."))


async def _invalid(request: Request, exc: RequestValidationError):
    web = dashboard(request)
    names = sorted({str(e["loc"][-1]) for e in exc.errors() if e.get("loc")})
    message = web.gettext(request)("A value in the address is not valid:")
    return web.refuse(request, 400, message + " " + ", ".join(names))


async def _to_login(request: Request, exc: LoginNeeded):
    return RedirectResponse(f"/login?next={quote(exc.next_url, safe='')}", 303)


async def _headers(request: Request, call_next):
    site = dashboard(request).site
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


def install(app: FastAPI, web: Dashboard) -> None:
    """Make `web` the app's dashboard and add the error pages and the security headers."""
    app.state.dashboard = web
    app.state.site, app.state.reruns, app.state.store = web.site, web.reruns, web.store
    # (Starlette's signature types every handler as taking any Exception, though it calls each one
    # only with the class it is registered for: its documented usage does not type-check, hence the ignores)
    app.add_exception_handler(Refused, _refused)  # type: ignore[arg-type]
    app.add_exception_handler(404, _not_found)
    app.add_exception_handler(405, _not_allowed)
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(LoginNeeded, _to_login)  # type: ignore[arg-type]
    app.middleware("http")(_headers)


# ------------------------------------------------------------------ small helpers
def plain(value) -> str:
    """A value of a fidelity record as words: lists joined by commas, not Python's repr."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, set)):
        return ", ".join(plain(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {plain(v)}" for k, v in value.items())
    return str(value)


def prefect_ui() -> str | None:
    """The Prefect UI's address when a server is configured (PREFECT_UI_URL, else PREFECT_API_URL
    without its /api), for links to flow runs."""
    ui = os.environ.get("PREFECT_UI_URL")
    if not ui and os.environ.get("PREFECT_API_URL"):
        ui = os.environ["PREFECT_API_URL"].rstrip("/").removesuffix("/api")
    return ui.rstrip("/") if ui and ui.startswith(("http://", "https://")) else None


def local_path(next_url: str) -> str:
    """Only paths of this dashboard as a redirect target after the login (no open redirect)."""
    if not next_url.startswith("/") or next_url.startswith("//") or "\\" in next_url:
        return "/"
    return next_url

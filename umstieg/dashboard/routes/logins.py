"""Logging in and out: the login form, its throttle, the server-side session; plus the stylesheet
and the health check, which need no session."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from umstieg.dashboard.auth import SESSION_COOKIE, check_password
from umstieg.dashboard.web import Refused, dashboard, local_path, log

__all__ = ["router"]

router = APIRouter()
#: checked when a login does not exist, so that a missing login costs what a wrong password costs
_DUMMY_HASH = "scrypt$32768$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 43 + "="


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/"):
    web = dashboard(request)
    if not web.site.accounts:
        return RedirectResponse("/", 303)
    return web.render(request, "login.html", next=local_path(next), token=web.sessions.login_token(), failed=False)


@router.post("/login")
def login(request: Request, username: str = Form(""), password: str = Form(""), token: str = Form(""),
          next: str = Form("/")):
    web = dashboard(request)
    site, store = web.site, web.store
    if not site.accounts:
        return RedirectResponse("/", 303)
    if not web.sessions.login_token_ok(token):
        raise Refused(403, "The form has expired or did not come from this dashboard. Reload the page and try again.")
    client, username = web.client_of(request), username[:200]
    refused = store.refused_for(username, client)
    if refused is not None:
        what, seconds = refused
        web.audit_write(request, None, user=username, action="login_refused",
                        target=f"too many failed logins ({what})")
        log.warning("dashboard: login for %r from %s refused: too many failed logins (%s)", username[:60], client, what)
        tr = web.gettext(request)
        message = (tr("Too many failed logins for this login.") if what == "login"
                   else tr("Too many failed logins from your address.")) + " " + \
            tr("Try again in %(minutes)d minutes.") % {"minutes": -(-seconds // 60)}
        response: Response = web.render(request, "login.html", status=429, next=local_path(next),
                              token=web.sessions.login_token(), failed=True, message=message, username=username)
        response.headers["Retry-After"] = str(seconds)
        return response
    account = site.accounts.get(username)
    # a missing login costs the same time as a wrong password: no hint which logins exist
    stored = account.password_hash if account else _DUMMY_HASH
    if not check_password(password, stored) or account is None:
        store.failed(username, client)
        web.audit_write(request, None, user=username, action="login_failed")
        log.warning("dashboard: failed login for %r from %s", username[:60], client)
        return web.render(request, "login.html", status=401, next=local_path(next), token=web.sessions.login_token(),
                          failed=True, username=username)
    store.succeeded(account.name)
    response = RedirectResponse(local_path(next), 303)
    response.set_cookie(SESSION_COOKIE, store.open_session(account.name, account.role.value, client),
                        max_age=store.max_age, httponly=True, samesite="strict", secure=site.secure_cookies,
                        path="/")
    web.audit_write(request, None, user=account.name, action="login", target=account.role.value)
    log.info("dashboard: %s logged in from %s (%s)", account.name, client, account.role.value)
    return response


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")):
    import secrets
    web = dashboard(request)
    me = web.session(request)
    if me and web.site.accounts and secrets.compare_digest(csrf, me["c"]):
        web.store.end_session(request.cookies.get(SESSION_COOKIE))       # the cookie is worth nothing now
        web.audit_write(request, None, user=me["u"], action="logout")
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
    raise Refused(403, "The form has expired or did not come from this dashboard. Reload the page and try again.")


@router.get("/static/dashboard.css")
async def stylesheet(request: Request):
    return Response(dashboard(request).css, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


@router.get("/healthz")
async def health():
    return {"status": "ok"}

"""The dashboard's web app: pages, exports and the operators' actions (FastAPI, server-side HTML).

Everything a page needs is served from here: templates rendered on the server, one stylesheet,
charts as inline SVG with a table beside them. No script is required; every action is a form
that works by keyboard. What a page shows is computed by reports/dashboard.py.

create_app only assembles: the shared state and the security headers (web.py) and one router per
page family (routes/: logins, overview and departments, the needs-a-person queue, documents,
reruns, exports).
"""

from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from umstieg.dashboard.routes import ROUTERS
from umstieg.dashboard.site import LOOPBACK_HOSTS, Site, is_loopback
from umstieg.dashboard.web import Dashboard, install

__all__ = ["Site", "create_app", "is_loopback", "LOOPBACK_HOSTS", "HeadAsGet"]


def create_app(site: Site) -> FastAPI:
    """The dashboard of `site` as an ASGI app."""
    web = Dashboard(site)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        web.reruns.stop_all()
        site.close()

    app = FastAPI(title="umstieg dashboard", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    install(app, web)
    for router in ROUTERS:
        app.include_router(router)
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

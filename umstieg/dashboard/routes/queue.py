"""The "needs a person" queue of a department: filtered by reason and user, paged, worked through
document by document (the document page keeps the queue's place)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse

from reports import dashboard as data
from umstieg.dashboard.web import MAX_PAGE, Refused, dashboard

__all__ = ["router", "attention_filters"]

router = APIRouter()


def attention_filters(request: Request) -> dict:
    """The queue's filters from the query (a reason must be one of ATTENTION)."""
    p = request.query_params
    why = p.get("why", "")
    if why and why not in data.ATTENTION:
        raise Refused(400, "A value in the address is not valid: why")
    return {"why": why, "owner": p.get("owner", ""), "show": "all" if p.get("show") == "all" else ""}


@router.get("/departments/{name}/attention", response_class=HTMLResponse)
def attention(request: Request, name: str, page: int = Query(1, ge=1, le=MAX_PAGE)):
    web = dashboard(request)
    web.viewer(request)
    led = web.department_or_404(name)
    filters = attention_filters(request)
    queue = data.attention_page(led, name, filters, page)
    owners = data.department_owners(led, name)
    return web.render(request, "attention.html", name=name, queue=queue, filters=filters, owners=owners,
                      attention=data.ATTENTION, waiting=data.waiting_users(led, name))

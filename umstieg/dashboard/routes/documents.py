"""One document for review: its record, both page pictures, its annotation; the viewer that shows
both pictures enlarged side by side with previous/next; the report folder's files (thumbnails,
run reports) served from inside that folder only."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import APIRouter, Form, Path as PathParam, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from reports import dashboard as data
from umstieg.dashboard.routes.queue import attention_filters
from umstieg.dashboard.web import MAX_ID, Refused, dashboard, log

__all__ = ["router"]

router = APIRouter()


def _document(request: Request, name: str, item_id: int):
    """(dashboard, ledger, document record, report folder or None) of a department's item, for a
    viewer; 404 when the item is not that department's."""
    web = dashboard(request)
    web.viewer(request)
    led = web.department_or_404(name)
    record = data.document(led, name, item_id)
    if record is None:
        raise Refused(404, "Not found.")
    return web, led, record, web.site.report_dir(name)


@router.get("/departments/{name}/items/{item_id}", response_class=HTMLResponse)
def item(request: Request, name: str, item_id: int = PathParam(ge=1, le=MAX_ID)):
    web, led, record, report_dir = _document(request, name, item_id)
    thumbs = data.thumbnails(report_dir, record) if report_dir else {}
    views = data.views(report_dir, record) if report_dir else {}     # "full size" opens these when kept
    queue = _queue(request, led, name, item_id)       # worked through from the "needs a person" queue
    return web.render(request, "item.html", name=name, record=record, item=record["item"], thumbs=thumbs,
                      views=views,
                      annotation_verdicts=data.ANNOTATION_VERDICTS, queue=queue,
                      why=data.why_of(record["item"]))


def _queue(request: Request, led, name: str, item_id: int) -> dict | None:
    """Where the item stands in the "needs a person" queue it was opened from (None: not from it)."""
    if request.query_params.get("queue") != "1":
        return None
    filters = attention_filters(request)
    return {**data.attention_neighbours(led, name, item_id, filters), "filters": filters,
            "query": urlencode({"queue": "1", **{k: v for k, v in filters.items() if v}})}


#: Zoom levels of the viewer: fitted to the screen, or 1 to 4 steps of enlargement.
ZOOMS = ("fit", "1", "2", "3", "4")
#: The large pictures (reports.visual.VIEW_WIDTH, 1200 px) are shown pixel for pixel at the largest
#: zoom, and a quarter of that larger at each step (300, 600, 900, 1200 px wide): every step is
#: drawn from at least as many pixels as it shows. A record made before they were kept has only
#: its thumbnails, enlarged to 1-4 times their own size as before.
_LARGEST = int(ZOOMS[-1])


def _shown(picture: dict, zoom: str) -> dict:
    """`picture` with the size it is shown at in `zoom` (CSS pixels; at "fit" its own, which CSS
    scales to the screen while keeping its proportions)."""
    width, height = picture["width"], picture["height"]
    if zoom != "fit":
        steps = int(zoom)
        if picture["large"]:
            width, height = round(width * steps / _LARGEST), round(height * steps / _LARGEST)
        else:
            width, height = width * steps, height * steps
    return {**picture, "shown_width": width, "shown_height": height}


@router.get("/departments/{name}/items/{item_id}/pages", response_class=HTMLResponse)
def pages(request: Request, name: str, item_id: int = PathParam(ge=1, le=MAX_ID),
          zoom: str = Query("fit", pattern="^(" + "|".join(ZOOMS) + ")$")):
    """Both page pictures enlarged side by side (stacked on a phone), zoomed by links, with the
    previous and next document: of the queue when opened from it, else of the measured documents."""
    web, led, record, report_dir = _document(request, name, item_id)
    pictures = {side: _shown(p, zoom) for side, p in
                (data.page_pictures(report_dir, record) if report_dir else {}).items()}
    queue = _queue(request, led, name, item_id)
    around = queue or data.document_neighbours(led, name, item_id)
    large = bool(pictures) and all(p["large"] for p in pictures.values())
    return web.render(request, "pages.html", name=name, item=record["item"], pictures=pictures, queue=queue,
                      around=around, zoom=zoom, zooms=ZOOMS, large=large, why=data.why_of(record["item"]))


@router.post("/departments/{name}/items/{item_id}/annotation")
def annotate(request: Request, name: str, item_id: int = PathParam(ge=1, le=MAX_ID), verdict: str = Form(""),
             comment: str = Form(""), csrf: str = Form("")):
    web = dashboard(request)
    me = web.operator(request, csrf)
    led = web.department_or_404(name)
    if verdict not in data.ANNOTATION_VERDICTS:
        raise Refused(400, "Choose accepted as it is or needs manual work.")
    if not data.annotate(led, name, item_id, verdict, comment.strip(), me["u"]):
        raise Refused(404, "Not found.")
    web.audit_write(request, name, user=me["u"], action="annotation", target=f"{name}: item {item_id}",
                    verdict=verdict)
    log.info("dashboard: %s marked item %d of %s as %s", me["u"], item_id, name, verdict)
    back = request.query_params.get("back", "")
    query = back if back.startswith("queue=1") and "#" not in back else ""
    return RedirectResponse(f"/departments/{quote(name)}/items/{item_id}?saved=1" + (f"&{query}" if query else ""),
                            303)


@router.get("/departments/{name}/files/{relative:path}")
def report_file(request: Request, name: str, relative: str):
    web = dashboard(request)
    web.viewer(request)
    web.department_or_404(name)
    report_dir = web.site.report_dir(name)
    path = data.safe_report_file(report_dir, relative) if report_dir else None
    if path is None:
        raise Refused(404, "Not found.")
    return FileResponse(path)

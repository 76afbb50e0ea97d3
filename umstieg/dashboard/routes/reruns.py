"""Reruns of failed items started by an operator, and each rerun's page (its status read from the
ledger, see umstieg/dashboard/reruns.py)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from fastapi import APIRouter, Form, Path as PathParam, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from reports import dashboard as data
from umstieg.dashboard.web import MAX_ID, Refused, dashboard, log, prefect_ui

__all__ = ["router"]

router = APIRouter()
#: reruns read back from the ledger by start time: allow for clocks of the ledger and the dashboard
_SLACK = timedelta(seconds=5)


@router.post("/departments/{name}/rerun")
def start_rerun(request: Request, name: str, csrf: str = Form(""), error_class: str = Form(""),
                user: str = Form(""), batch: str = Form("")):
    web = dashboard(request)
    me = web.operator(request, csrf)
    led = web.department_or_404(name)
    site, reruns = web.site, web.reruns
    if name not in site.files:
        raise Refused(409, "This department has no department file here: rerun it where its file is.")
    batch_no = int(batch) if batch.strip().isdigit() and int(batch) <= MAX_ID else None
    if reruns.busy(name) or data.live_run(led, name):
        raise Refused(409, "A run of this department is going on: a rerun can start when it has ended.")
    if not data.failed_count(led, name, error_class=error_class or None, user=user or None, batch=batch_no):
        raise Refused(409, "No failed item matches these filters.")
    job = reruns.start(name, site.files[name], site.departments[name].work_dir, me["u"],
                       error_class=error_class or None, user=user or None, batch=batch_no)
    web.audit_write(request, name, user=me["u"], action="rerun", target=f"{name}: rerun {job.id}",
                    filters={k: v for k, v in job.filters.items() if v is not None}, log=job.log.name)
    log.info("dashboard: %s started rerun %d of %s (%s)", me["u"], job.id, name, job.filters)
    return RedirectResponse(f"/departments/{quote(name)}/reruns/{job.id}", 303)


@router.get("/departments/{name}/reruns/{number}", response_class=HTMLResponse)
def rerun_progress(request: Request, name: str, number: int = PathParam(ge=1, le=MAX_ID)):
    web = dashboard(request)
    web.viewer(request)
    led = web.department_or_404(name)
    job = web.reruns.get(number)
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
    return web.render(request, "rerun.html", name=name, job=job, run=run, outcome=status, error=error,
                      prefect_ui=prefect_ui())

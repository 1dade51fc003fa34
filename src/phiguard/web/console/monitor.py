"""The privacy officer's monitoring pages: the queue, cases, alerts, drill-downs, charts.

Everything shown comes from ``monitor.workflow``: ids, scores and states from the
clear columns; reasons, evidence and notes opened one alert or case at a time (each
opening is recorded in the ledger by the workflow).  Charts are drawn on the server
as SVG, so the pages keep their no-script CSP.  Every action is a CSRF-checked form
whose actor is the signed-in officer.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from phiguard.errors import MonitorError
from phiguard.identity.accounts import Account, AccountError, UnknownAccount
from phiguard.monitor.pseudonyms import is_pseudonym
from phiguard.monitor.workflow import DISPOSITIONS, AlertRow, Workflow
from phiguard.system import System

from .pages import (
    address,
    forbidden,
    redirect,
    render,
    signed_in,
    submitted,
    to_login,
)
from .session import check_csrf, console

router = APIRouter(include_in_schema=False)
ROLE = "privacy_officer"
CHART_DAYS = 30
MAX_SUPPRESS_DAYS = 365


def _workflow(request: Request) -> Workflow:
    system: System = request.app.state.system
    return Workflow.from_system(system)


def _officer(request: Request) -> Account | Response:
    current = signed_in(request)
    if current is None:
        return to_login(request)
    if ROLE not in current[1].roles:
        return forbidden(request, current[1])
    return current[1]


def bars(counts: list[tuple[str, int]], *, width: int = 420, bar: int = 18) -> dict[str, Any]:
    """Geometry of a horizontal bar chart (drawn as SVG by the template)."""
    top = max((n for _, n in counts), default=0) or 1
    label_w = 140
    rows = [
        {
            "label": label,
            "count": n,
            "y": i * (bar + 6),
            "w": max(1, round((width - label_w - 40) * n / top)) if n else 0,
        }
        for i, (label, n) in enumerate(counts)
    ]
    return {"rows": rows, "height": len(rows) * (bar + 6), "width": width, "x0": label_w}


def _charts(request: Request, alerts: list[AlertRow]) -> dict[str, Any]:
    today = console(request).accounts.clock.now().date()
    days = [today - dt.timedelta(days=d) for d in range(CHART_DAYS - 1, -1, -1)]
    per_day = Counter(a.created_at.date() for a in alerts)
    accounts = console(request).accounts
    departments: Counter[str] = Counter()
    cache: dict[str, str] = {}
    for a in alerts:
        if a.user_id not in cache:
            try:
                cache[a.user_id] = accounts.get(a.user_id).department or "(none)"
            except (UnknownAccount, AccountError):
                cache[a.user_id] = "(not an account)"
        departments[cache[a.user_id]] += 1
    top = max((per_day[d] for d in days), default=0) or 1
    columns = [
        {"day": d.isoformat(), "count": per_day[d], "x": i * 14, "h": round(100 * per_day[d] / top)}
        for i, d in enumerate(days)
    ]
    return {
        "over_time": {"columns": columns, "width": CHART_DAYS * 14},
        "by_detector": bars(Counter(a.detector for a in alerts).most_common(12)),
        "by_department": bars(departments.most_common(12)),
    }


@router.get("/monitor")
async def queue(request: Request, detector: str = "", status: str = "queued") -> Response:
    officer = _officer(request)
    if isinstance(officer, Response):
        return officer
    wf = _workflow(request)
    status = (
        status
        if status in ("queued", "open", "in-review", "closed", "suppressed", "all")
        else "queued"
    )
    shown = await run_in_threadpool(
        lambda: wf.queue(status=status, detector=detector[:64] or None, limit=200)  # type: ignore[arg-type]
    )
    cases = await run_in_threadpool(lambda: wf.cases(status="queued"))
    recent = await run_in_threadpool(lambda: wf.queue(status="all", limit=5000))
    charts = await run_in_threadpool(_charts, request, recent)
    return render(
        request,
        "console_monitor.html",
        account=officer,
        alerts=shown,
        cases=cases[:100],
        detector=detector[:64],
        shown_status=status,
        charts=charts,
        detectors=sorted({a.detector for a in recent}),
    )


def _missing(request: Request, officer: Account) -> Response:
    return render(
        request,
        "console_message.html",
        status=404,
        account=officer,
        title="Not found",
        message="There is no such alert or case.",
        back="/monitor",
    )


@router.get("/monitor/users/{user_id}")
async def user_page(request: Request, user_id: str) -> Response:
    officer = _officer(request)
    if isinstance(officer, Response):
        return officer
    wf = _workflow(request)
    user_id = user_id[:64]
    alerts = await run_in_threadpool(lambda: wf.queue(status="all", user_id=user_id))
    cases = await run_in_threadpool(lambda: wf.cases(status="all", user_id=user_id))
    try:
        person: Account | None = console(request).accounts.get(user_id)
    except (UnknownAccount, AccountError):
        person = None
    return render(
        request,
        "console_monitor_drill.html",
        account=officer,
        title=f"User {user_id}",
        person=person,
        alerts=alerts,
        cases=cases,
    )


@router.get("/monitor/patients")
async def patient_page(request: Request, patient: str = "") -> Response:
    """Every alert about one patient, found by pseudonym, by phiguard's patient id or
    by the other system's id (its pseudonym is computed).  The id travels in the query,
    which the request log never writes: an EHR export's patient id is often its MRN."""
    officer = _officer(request)
    if isinstance(officer, Response):
        return officer
    wf = _workflow(request)
    patient_id = patient.strip()[:128]
    keys = await run_in_threadpool(wf.patient_keys, patient_id) if patient_id else ()
    alerts = (
        await run_in_threadpool(lambda: wf.queue(status="all", patient_id=patient_id))
        if patient_id
        else []
    )
    # The access report is about phiguard's own patients: ids alerts hold as they are.
    own = bool(patient_id) and not is_pseudonym(patient_id)
    own = own and any(patient_id in a.patient_ids for a in alerts)
    return render(
        request,
        "console_monitor_drill.html",
        account=officer,
        title="Patient",
        person=None,
        patient_id=patient_id,
        pseudonym=keys[-1] if keys and keys[-1] != patient_id else None,
        own_patient=own,
        alerts=alerts,
        cases=[],
    )


@router.get("/monitor/{kind}/{item_id}")
async def item_page(request: Request, kind: str, item_id: str) -> Response:
    """One alert or case opened for review (the workflow records the opening)."""
    officer = _officer(request)
    if isinstance(officer, Response):
        return officer
    if kind not in ("alerts", "cases"):
        return _missing(request, officer)
    wf = _workflow(request)
    opener = wf.alert if kind == "alerts" else wf.case
    try:
        detail = await run_in_threadpool(
            lambda: opener(item_id[:128], by=officer.principal, source=address(request))
        )
    except MonitorError:
        return _missing(request, officer)
    row = detail.row
    return render(
        request,
        "console_monitor_item.html",
        account=officer,
        kind=kind,
        item_id=row.alert_id if isinstance(row, AlertRow) else row.case_id,
        row=row,
        reason=detail.reason,
        evidence=getattr(detail, "evidence", ()),
        alerts=getattr(detail, "alerts", ()),
        notes=detail.notes,
        timeline=detail.timeline,
        dispositions=DISPOSITIONS,
        source_ids=detail.source_ids,
    )


@router.post("/monitor/{kind}/{item_id}/{action}")
async def act(request: Request, kind: str, item_id: str, action: str) -> Response:
    officer = _officer(request)
    if isinstance(officer, Response):
        return officer
    data = await submitted(request)
    back = f"/monitor/{kind}/{item_id}" if kind in ("alerts", "cases") else "/monitor"
    if kind not in ("alerts", "cases") or not check_csrf(request, data.get("csrf")):
        return _refused(request, officer, "The form expired; nothing was changed.", back)
    wf = _workflow(request)
    by, source = officer.principal, address(request)
    item_id = item_id[:128]
    if await run_in_threadpool(_about, wf, item_id, officer.user_id):
        return render(
            request,
            "console_message.html",
            status=403,
            account=officer,
            title="Not allowed",
            message="This is about you: another privacy officer reviews it. Nothing was changed.",
            back=back,
        )
    try:
        if action == "assign":
            assignee = data.get("assignee", "").strip() or officer.user_id
            await run_in_threadpool(lambda: wf.assign(item_id, assignee, by=by, source=source))
        elif action == "note":
            await run_in_threadpool(
                lambda: wf.note(item_id, data.get("text", ""), by=by, source=source)
            )
        elif action == "close":
            await run_in_threadpool(
                lambda: wf.close(item_id, data.get("disposition", ""), by=by, source=source)
            )
        elif action == "reopen":
            await run_in_threadpool(lambda: wf.reopen(item_id, by=by, source=source))
        elif action == "suppress" and kind == "alerts":
            row = await run_in_threadpool(wf.alert_row, item_id)
            days = data.get("days", "30")
            if not days.isdigit() or not 0 < int(days) <= MAX_SUPPRESS_DAYS:
                return _refused(request, officer, "Suppress for 1 to 365 days.", back)
            until = console(request).accounts.clock.now() + dt.timedelta(days=int(days))
            await run_in_threadpool(
                lambda: wf.suppress(
                    row.detector,
                    user_id=row.user_id,
                    reason=data.get("reason", ""),
                    expires_at=until,
                    by=by,
                    source=source,
                )
            )
        else:
            return _refused(request, officer, "Unknown action; nothing was changed.", back)
    except MonitorError as exc:
        return _refused(request, officer, f"Not changed: {exc}", back)
    return redirect(back)


def _about(wf: Workflow, target: str, user_id: str) -> bool:
    """Whether alert or case ``target`` is about ``user_id``.

    Nobody reviews themselves: an officer who could close, suppress, annotate or
    reassign an alert about their own access would be their own auditor (the same
    rule as for break-the-glass reviews).
    """
    return any(a.alert_id == target for a in wf.queue(status="all", user_id=user_id)) or any(
        c.case_id == target for c in wf.cases(status="all", user_id=user_id)
    )


def _refused(request: Request, officer: Account, message: str, back: str) -> Response:
    return render(
        request,
        "console_message.html",
        status=400,
        account=officer,
        title="Not changed",
        message=message,
        back=back,
    )

"""The privacy officer's pages: the patient's "who looked at my record" report.

The report is built from the ledger (``audit.reports``) with names, roles and
departments from the account directory, shown as a page or downloaded as the same
PDF the CLI produces.  Running a report is itself recorded in the ledger (as an
``access-report`` event, which the report leaves out of its own rows).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from phiguard.audit import reports
from phiguard.identity.accounts import Account, AccountError, Accounts, UnknownAccount
from phiguard.system import System

from .pages import PAGE_CSP, address, forbidden, render, signed_in, to_login
from .session import console

router = APIRouter(include_in_schema=False)
ROLE = "privacy_officer"
MAX_DAYS = 366 * 7


def _directory(accounts: Accounts) -> reports.Directory:
    cache: dict[str, reports.Person] = {}

    def look_up(principal: str) -> reports.Person:
        if principal not in cache:
            kind, _, ident = principal.partition("/")
            person = reports.plain_directory(principal)
            if kind == "user":
                try:
                    acct = accounts.get(ident)
                    person = reports.Person(
                        acct.display_name, ", ".join(acct.roles), acct.department or ""
                    )
                except (UnknownAccount, AccountError):
                    person = reports.Person(ident)
            cache[principal] = person
        return cache[principal]

    return look_up


def _dates(start: str, end: str) -> tuple[dt.date, dt.date] | str:
    try:
        since, until = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError:
        return "Dates must look like 2026-01-31."
    if until < since:
        return "The last day is before the first."
    if (until - since).days > MAX_DAYS:
        return "Choose at most seven years."
    return since, until


def _build(
    request: Request, officer: Account, patient: str, since: dt.date, until: dt.date, fmt: str
) -> reports.AccessReport:
    system: System = request.app.state.system
    built = reports.build(
        system.ledger, patient, since, until, directory=_directory(console(request).accounts)
    )
    system.record(
        "access-report",
        principal=officer.principal,
        source=address(request),
        patient_ids=(patient,),
        format=fmt,
        since=str(since),
        until=str(until),
        rows=len(built.rows),
    )
    return built


@router.get("/privacy/access-report")
async def access_report(
    request: Request, patient: str = "", start: str = "", end: str = ""
) -> Response:
    current = signed_in(request)
    if current is None:
        return to_login(request)
    _, officer = current
    if ROLE not in officer.roles:
        return forbidden(request, officer)
    today = console(request).accounts.clock.now().date()
    start = start or (today - dt.timedelta(days=180)).isoformat()
    end = end or today.isoformat()
    context: dict[str, Any] = {
        "account": officer,
        "patient": patient[:64],
        "start": start,
        "end": end,
    }
    if not patient:
        return render(request, "console_access_report.html", report=None, **context)
    dates = _dates(start, end)
    if isinstance(dates, str):
        return render(
            request, "console_access_report.html", status=400, report=None, error=dates, **context
        )
    built = await run_in_threadpool(_build, request, officer, patient[:64], *dates, "html")
    return render(request, "console_access_report.html", report=built, **context)


@router.get("/privacy/access-report.pdf")
async def access_report_pdf(request: Request, patient: str, start: str, end: str) -> Response:
    current = signed_in(request)
    if current is None:
        return to_login(request)
    _, officer = current
    if ROLE not in officer.roles:
        return forbidden(request, officer)
    dates = _dates(start, end)
    if isinstance(dates, str) or not patient or len(patient) > 64:
        return render(
            request,
            "console_message.html",
            status=400,
            account=officer,
            title="Report not made",
            message=dates if isinstance(dates, str) else "Name one patient id.",
            back="/privacy/access-report",
        )
    built = await run_in_threadpool(_build, request, officer, patient, *dates, "pdf")
    pdf = await run_in_threadpool(reports.render_pdf, built)
    return Response(
        pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": 'attachment; filename="access-report.pdf"',
            "Cache-Control": "no-store",
            "Content-Security-Policy": PAGE_CSP,
        },
    )

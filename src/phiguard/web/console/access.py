"""Break-the-glass and policy administration in the console.

- ``/emergency``: a user declares an emergency for one patient, with a reason, after a
  fresh re-authentication; the grant (60 minutes, that patient only) is shown with how
  to use it.  The privacy officer is notified by the break-the-glass service.
- ``/privacy/break-glass``: the review queue; a review shows the reason and every
  access made under the grant, and is closed (with a note, after re-authentication)
  only by a privacy officer other than the declaring user.
- ``/admin/policies``: the running policy set, its history, and replacing one file;
  security administrators only, after re-authentication.  A set that fails
  validation is refused with its problems listed and the running set stays.
- ``/access/explain``: why a real user would be allowed or refused a real resource
  now, and which policies decided it (privacy officers and security administrators;
  each question is recorded in the ledger, see access/live.py).  The question is
  posted, so patient ids never appear in a URL or the request log.

The rules themselves live in the access services (``phiguard.access``); these pages
only collect input, insist on re-authentication, and show what the services answer.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from phiguard.access.administration import bundle_files, with_file
from phiguard.access.facts import ACTIONS, PURPOSES
from phiguard.access.live import explain_live
from phiguard.access.wiring import AccessServices
from phiguard.errors import AccessError, NotFound, PolicyLoadError
from phiguard.identity.accounts import Account, UnknownAccount
from phiguard.identity.sessions import Session
from phiguard.system import System

from .pages import address, forbidden, redirect, render, signed_in, submitted, to_login
from .session import check_csrf, console

router = APIRouter(include_in_schema=False)
OFFICER = "privacy_officer"
ADMIN = "security_admin"
MAX_POLICY_CHARS = 200_000


def _user(request: Request, role: str | None = None) -> tuple[Session, Account] | Response:
    current = signed_in(request)
    if current is None:
        return to_login(request)
    if role is not None and role not in current[1].roles:
        return forbidden(request, current[1])
    return current


def _acting(
    request: Request, role: str | None = None
) -> tuple[Session, Account, AccessServices] | Response:
    """The signed-in user (with ``role``) and the access services; else the response."""
    current = _user(request, role)
    if isinstance(current, Response):
        return current
    system: System = request.app.state.system
    if system.access is None:
        return render(
            request,
            "console_message.html",
            status=503,
            account=current[1],
            title="Not available",
            message="Access control is not enabled in this home.",
        )
    return current[0], current[1], system.access


def _reauth(path: str) -> Response:
    return redirect(f"/reauth?next={quote(path, safe='/?=&')}")


# -- declaring an emergency -----------------------------------------------------------------
@router.get("/emergency")
async def emergency_page(request: Request, patient: str = "") -> Response:
    current = _user(request)
    if isinstance(current, Response):
        return current
    return render(request, "console_emergency.html", account=current[1], patient=patient[:64])


@router.post("/emergency")
async def declare(request: Request) -> Response:
    acting = _acting(request)
    if isinstance(acting, Response):
        return acting
    session, account, services = acting
    data = await submitted(request)
    patient = data.get("patient", "").strip()[:64]
    if not check_csrf(request, data.get("csrf")):
        return render(
            request,
            "console_emergency.html",
            status=403,
            account=account,
            patient=patient,
            error="The form expired; nothing was declared.",
        )
    if console(request).sessions.needs_reauth(session):
        return _reauth(f"/emergency?patient={quote(patient)}")
    try:
        grant = await run_in_threadpool(
            lambda: services.break_glass.declare(
                account.user_id,
                patient,
                data.get("reason", ""),
                reauthenticated=True,
                source=address(request),
                request_id=request.state.request_id,
            )
        )
    except AccessError as exc:
        return render(
            request,
            "console_emergency.html",
            status=400,
            account=account,
            patient=patient,
            error=f"Not declared: {exc}",
        )
    return render(request, "console_emergency.html", account=account, patient=patient, grant=grant)


# -- reviewing -------------------------------------------------------------------------------
@router.get("/privacy/break-glass")
async def reviews(request: Request, status: str = "open") -> Response:
    acting = _acting(request, OFFICER)
    if isinstance(acting, Response):
        return acting
    _session, account, services = acting
    wanted = status if status in ("open", "closed") else "open"
    grants = await run_in_threadpool(services.break_glass.list, wanted)
    return render(
        request, "console_btg_list.html", account=account, grants=grants, shown_status=wanted
    )


@router.get("/privacy/break-glass/{grant_id}")
async def review(request: Request, grant_id: str) -> Response:
    acting = _acting(request, OFFICER)
    if isinstance(acting, Response):
        return acting
    _session, account, services = acting
    system: System = request.app.state.system
    try:
        grant = await run_in_threadpool(services.break_glass.get, grant_id[:64])
    except AccessError:
        return render(
            request,
            "console_message.html",
            status=404,
            account=account,
            title="Not found",
            message="There is no such declaration.",
            back="/privacy/break-glass",
        )
    uses = await run_in_threadpool(services.break_glass.uses, grant, system.ledger)
    system.record(
        "break-glass-review-view",
        principal=account.principal,
        source=address(request),
        patient_ids=(grant.patient_id,),
        grant=grant.grant_id,
    )
    return render(request, "console_btg_review.html", account=account, grant=grant, uses=uses)


@router.post("/privacy/break-glass/{grant_id}/close")
async def close_review(request: Request, grant_id: str) -> Response:
    acting = _acting(request, OFFICER)
    if isinstance(acting, Response):
        return acting
    session, officer, services = acting
    data = await submitted(request)
    back = f"/privacy/break-glass/{quote(grant_id[:64])}"
    if not check_csrf(request, data.get("csrf")):
        return redirect(back)
    if console(request).sessions.needs_reauth(session):
        return _reauth(back)
    try:
        await run_in_threadpool(
            lambda: services.break_glass.close(
                grant_id[:64],
                officer.user_id,
                data.get("note", ""),
                reauthenticated=True,
                source=address(request),
            )
        )
    except AccessError as exc:
        return render(
            request,
            "console_message.html",
            status=409,
            account=officer,
            title="Review not closed",
            message=str(exc),
            back=back,
        )
    return redirect(back)


# -- policy administration ----------------------------------------------------------------------
@router.get("/admin/policies")
async def policies(request: Request, file: str = "") -> Response:
    acting = _acting(request, ADMIN)
    if isinstance(acting, Response):
        return acting
    _session, account, services = acting
    store = services.policies
    files = bundle_files(await run_in_threadpool(store.running_bundle))
    history = await run_in_threadpool(store.history)
    return render(
        request,
        "console_policies.html",
        account=account,
        files=files,
        shown=file if file in files else "",
        history=list(reversed(history))[:50],
        generation=await run_in_threadpool(store.generation),
    )


@router.post("/admin/policies")
async def replace_policy(request: Request) -> Response:
    acting = _acting(request, ADMIN)
    if isinstance(acting, Response):
        return acting
    session, admin, services = acting
    data = await submitted(request, max_field=MAX_POLICY_CHARS)
    name = data.get("file", "")
    if not check_csrf(request, data.get("csrf")):
        return redirect("/admin/policies")
    if console(request).sessions.needs_reauth(session):
        return _reauth(f"/admin/policies?file={quote(name)}")
    store = services.policies
    text = data.get("text", "")
    try:
        running = await run_in_threadpool(store.running_bundle)
        if name not in bundle_files(running) or len(text) > MAX_POLICY_CHARS:
            raise AccessError("choose one of the running set's files")
        installed = await run_in_threadpool(
            lambda: store.install(
                with_file(running, name, text),
                by=admin.user_id,
                reauthenticated=True,
                comment=data.get("comment", "")[:500],
                source=address(request),
            )
        )
    except PolicyLoadError as exc:
        return render(
            request,
            "console_message.html",
            status=400,
            account=admin,
            title="Policy refused; the running set is unchanged",
            message="; ".join(exc.problems)[:4000] if exc.problems else str(exc),
            back=f"/admin/policies?file={quote(name)}",
        )
    except AccessError as exc:
        return render(
            request,
            "console_message.html",
            status=400,
            account=admin,
            title="Policy not changed",
            message=str(exc),
            back="/admin/policies",
        )
    return redirect(f"/admin/policies?file={quote(name)}&generation={installed.generation}")


# -- explaining a decision ----------------------------------------------------------------
EXPLAINERS = (OFFICER, ADMIN)


def _explainer(request: Request) -> tuple[Session, Account, AccessServices] | Response:
    acting = _acting(request)
    if isinstance(acting, Response):
        return acting
    if not any(role in acting[1].roles for role in EXPLAINERS):
        return forbidden(request, acting[1])
    return acting


def _explain_page(
    request: Request,
    account: Account,
    *,
    asked: dict[str, str] | None = None,
    status: int = 200,
    **context: object,
) -> Response:
    return render(
        request,
        "console_explain.html",
        status=status,
        account=account,
        asked=asked or {"user": "", "resource": "", "action": "read", "purpose": "TREAT"},
        actions=sorted(ACTIONS),
        purposes=sorted(PURPOSES),
        **context,
    )


@router.get("/access/explain")
async def explain_form(request: Request) -> Response:
    acting = _explainer(request)
    if isinstance(acting, Response):
        return acting
    return _explain_page(request, acting[1])


@router.post("/access/explain")
async def explain_decision(request: Request) -> Response:
    acting = _explainer(request)
    if isinstance(acting, Response):
        return acting
    _session, officer, services = acting
    data = await submitted(request)
    if not check_csrf(request, data.get("csrf")):
        return redirect("/access/explain")
    asked = {
        "user": data.get("user", "").strip()[:64],
        "resource": data.get("resource", "").strip()[:200],
        "action": data.get("action", "read"),
        "purpose": data.get("purpose", "TREAT"),
    }
    system: System = request.app.state.system
    try:
        live = await run_in_threadpool(
            lambda: explain_live(
                system,
                services,
                user_id=asked["user"],
                reference=asked["resource"],
                action=asked["action"],
                purpose=asked["purpose"],
                asked_by=f"user/{officer.user_id}",
                source=address(request),
            )
        )
    except (AccessError, UnknownAccount, NotFound) as exc:
        return _explain_page(request, officer, status=400, asked=asked, error=str(exc))
    result = live.result
    return _explain_page(
        request,
        officer,
        asked=asked,
        live=live,
        allowed=result.decision.allowed,
        reasons=", ".join(result.decision.reasons),
        masked=", ".join(result.decision.masked_fields),
        lines=result.lines(),
    )

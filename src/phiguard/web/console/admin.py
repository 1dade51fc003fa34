"""User administration for security administrators.

Reading the list needs the ``security_admin`` role; every change (create, suspend,
terminate, reset MFA, unlock...) also needs a re-authentication within the session's
window, as SP 800-63B asks of sensitive operations.  The acting principal recorded
in the ledger is always the signed-in administrator.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from phiguard.errors import IdentityError, PasswordPolicyError
from phiguard.identity.accounts import ROLES, Account, AccountError, UnknownAccount
from phiguard.identity.sessions import Session

from .pages import (
    FormTooLarge,
    address,
    forbidden,
    form,
    redirect,
    render,
    signed_in,
    submitted,
    to_login,
)
from .session import check_csrf, console

router = APIRouter(include_in_schema=False)
ADMIN_ROLE = "security_admin"
ACTIONS = ("suspend", "reactivate", "terminate", "reinstate", "reset-mfa", "unlock")


def _admin(request: Request) -> tuple[Session, Account] | Response:
    current = signed_in(request)
    if current is None:
        return to_login(request)
    if ADMIN_ROLE not in current[1].roles:
        return forbidden(request, current[1])
    return current


@router.get("/admin/users")
async def users_page(request: Request, status: str = "") -> Response:
    current = _admin(request)
    if isinstance(current, Response):
        return current
    _, admin = current
    accounts = console(request).accounts
    wanted = status if status in ("active", "suspended", "terminated") else None
    listed = await run_in_threadpool(accounts.list, wanted)
    return render(
        request,
        "console_users.html",
        account=admin,
        users=listed,
        shown_status=wanted or "",
        roles=ROLES,
    )


@router.get("/admin/users/{user_id}")
async def user_page(request: Request, user_id: str, notice: str = "") -> Response:
    current = _admin(request)
    if isinstance(current, Response):
        return current
    _, admin = current
    accounts = console(request).accounts
    try:
        shown = await run_in_threadpool(accounts.get, user_id)
    except (UnknownAccount, AccountError):
        return render(
            request,
            "console_message.html",
            status=404,
            account=admin,
            title="No such account",
            message="There is no account with that user id.",
            back="/admin/users",
        )
    state = accounts.throttle.account_state(shown.user_id)
    return render(
        request,
        "console_user.html",
        account=admin,
        user=shown,
        totp=accounts.mfa_enrolled(shown.user_id),
        recovery_left=accounts.recovery.remaining(shown.user_id),
        failures=state.failures,
        locked=state.locked_until is not None,
        notice={"done": "Done."}.get(notice, ""),
    )


@router.post("/admin/users/{user_id}/{action}")
async def user_action(request: Request, user_id: str, action: str) -> Response:
    current = _admin(request)
    if isinstance(current, Response):
        return current
    session, admin = current
    data = await submitted(request)
    if action not in ACTIONS or not check_csrf(request, data.get("csrf")):
        return render(
            request,
            "console_message.html",
            status=403,
            account=admin,
            title="Refused",
            message="The form expired or the action is unknown; nothing was changed.",
            back=f"/admin/users/{user_id}" if user_id.isascii() else "/admin/users",
        )
    c = console(request)
    if c.sessions.needs_reauth(session):
        return redirect(f"/reauth?next=/admin/users/{user_id}")
    accounts = c.accounts
    by = admin.principal
    rid = request.state.request_id
    source = address(request)
    calls = {
        "suspend": lambda: accounts.suspend(user_id, by=by, source=source, request_id=rid),
        "reactivate": lambda: accounts.reactivate(user_id, by=by, source=source, request_id=rid),
        "terminate": lambda: accounts.terminate(user_id, by=by, source=source, request_id=rid),
        "reinstate": lambda: accounts.reinstate(user_id, by=by, source=source, request_id=rid),
        "reset-mfa": lambda: accounts.reset_mfa(user_id, by=by, source=source, request_id=rid),
        "unlock": lambda: accounts.unlock(user_id, by=by, request_id=rid),
    }
    try:
        await run_in_threadpool(calls[action])
    except IdentityError as exc:
        return render(
            request,
            "console_message.html",
            status=409,
            account=admin,
            title="Not changed",
            message=str(exc),
            back=f"/admin/users/{user_id}",
        )
    return redirect(f"/admin/users/{user_id}?notice=done")


@router.post("/admin/users")
async def add_user(request: Request) -> Response:
    current = _admin(request)
    if isinstance(current, Response):
        return current
    session, admin = current
    try:
        data = await form(request)
        roles = [r for r in (await request.form()).getlist("roles") if isinstance(r, str)]
    except FormTooLarge:
        data, roles = {}, []
    c = console(request)
    if not check_csrf(request, data.get("csrf")):
        return redirect("/admin/users")
    if c.sessions.needs_reauth(session):
        return redirect("/reauth?next=/admin/users")
    listed = await run_in_threadpool(c.accounts.list, None)
    try:
        created = await run_in_threadpool(
            lambda: c.accounts.add(
                data.get("user_id", "").strip().lower(),
                data.get("display_name", "").strip(),
                data.get("email", "").strip(),
                roles,
                data.get("password", ""),
                by=admin.principal,
                department=data.get("department", "").strip() or None,
                practitioner_id=data.get("practitioner_id", "").strip() or None,
                source=address(request),
                request_id=request.state.request_id,
            )
        )
    except (PasswordPolicyError, IdentityError) as exc:
        return render(
            request,
            "console_users.html",
            status=400,
            account=admin,
            users=listed,
            roles=ROLES,
            error=f"Account not created: {exc}",
        )
    return redirect(f"/admin/users/{created.user_id}?notice=done")

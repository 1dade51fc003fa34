"""The account page: password, second factors, recovery codes and sessions.

Everything here acts on the signed-in user only: the user id always comes from the
session, never from the form, so no field can be pointed at another account.
Replacing recovery codes needs a fresh re-authentication (a hijacked session must
not be able to mint itself a way back in).
"""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from phiguard.errors import AuthenticationError, EnrolmentError, PasswordPolicyError
from phiguard.identity.accounts import Account
from phiguard.identity.mfa import SecondFactor
from phiguard.identity.sessions import Session

from .pages import FormTooLarge, address, form, redirect, render, signed_in, to_login
from .passkeys import relying_party
from .session import check_csrf, clear_session_cookie, console

router = APIRouter(include_in_schema=False)


def _when(value: dt.datetime | int | None) -> str:
    if value is None:
        return "never"
    if isinstance(value, int):
        value = dt.datetime.fromtimestamp(value / 1_000_000, dt.UTC)
    return value.strftime("%Y-%m-%d %H:%M UTC")


async def _page(
    request: Request, *, status: int = 200, notice: str = "", error: str = ""
) -> Response:
    current = signed_in(request)
    if current is None:
        return to_login(request)
    session, account = current
    c = console(request)
    sessions = await run_in_threadpool(c.sessions.list_for_user, account.user_id)
    service = relying_party(request)
    credentials = (
        await run_in_threadpool(service.credentials, account.user_id) if service is not None else []
    )
    return render(
        request,
        "console_account.html",
        status=status,
        account=account,
        notice=notice,
        error=error,
        sessions=[
            {
                "handle": s.handle,
                "current": s.handle == session.handle,
                "created": _when(s.created_at),
                "seen": _when(s.last_seen_at),
                "address": s.address or "",
                "agent": (s.user_agent or "")[:80],
            }
            for s in sessions
        ],
        totp=c.accounts.mfa_enrolled(account.user_id),
        recovery_left=c.accounts.recovery.remaining(account.user_id),
        credentials=[
            {
                "id": cred.credential_id,
                "name": cred.name,
                "created": _when(cred.created_at),
                "used": _when(cred.last_used_at),
                "clone": cred.flagged_clone,
            }
            for cred in credentials
        ],
        password_changed=_when(account.password_changed_at),
    )


@router.get("/account")
async def account_page(request: Request) -> Response:
    return await _page(request)


async def _acting(
    request: Request,
) -> tuple[Session, Account, dict[str, str]] | Response:
    """The signed-in user and their form for a state-changing request; otherwise the
    response to send (sign-in, or the page saying the form expired: bad CSRF token)."""
    current = signed_in(request)
    if current is None:
        return to_login(request)
    try:
        data = await form(request)
    except FormTooLarge:
        data = {}
    if not check_csrf(request, data.get("csrf")):
        return await _page(request, status=403, error="The form expired; please try again.")
    return current[0], current[1], data


@router.post("/account/password")
async def change_password(request: Request) -> Response:
    acting = await _acting(request)
    if isinstance(acting, Response):
        return acting
    _, account, data = acting
    if data.get("new", "") != data.get("confirm", ""):
        return await _page(request, status=400, error="The two new passwords differ.")
    try:
        await run_in_threadpool(
            console(request).accounts.change_password,
            account.user_id,
            data.get("current", ""),
            data.get("new", ""),
            address=address(request),
            request_id=request.state.request_id,
        )
    except PasswordPolicyError as exc:
        return await _page(request, status=400, error=f"New password refused: {exc}")
    except AuthenticationError:
        return await _page(request, status=401, error="The current password is not right.")
    # Every session (this one too) was issued before the change and is now void.
    response = redirect("/login?next=/account")
    clear_session_cookie(request, response)
    return response


@router.post("/account/sessions/revoke")
async def revoke_session(request: Request) -> Response:
    acting = await _acting(request)
    if isinstance(acting, Response):
        return acting
    session, account, data = acting
    handle = data.get("handle", "")
    c = console(request)
    ended = await run_in_threadpool(c.sessions.revoke_handle, account.user_id, handle)
    if handle == session.handle:
        response = redirect("/login")
        clear_session_cookie(request, response)
        return response
    return await _page(request, notice="Session ended." if ended else "No such session.")


@router.post("/account/recovery-codes")
async def new_recovery_codes(request: Request) -> Response:
    acting = await _acting(request)
    if isinstance(acting, Response):
        return acting
    session, account, _form = acting
    c = console(request)
    if c.sessions.needs_reauth(session):
        return redirect("/reauth?next=/account")
    try:
        codes = await run_in_threadpool(
            SecondFactor(c.accounts).new_recovery_codes,
            account.user_id,
            address(request),
            request_id=request.state.request_id,
        )
    except EnrolmentError as exc:
        return await _page(request, status=409, error=str(exc))
    return render(
        request, "console_recovery_codes.html", account=account, codes=codes.codes, next="/account"
    )

"""Sign-in, second factor, forced MFA enrolment, re-authentication and sign-out.

The flow: the password is checked (``Accounts.authenticate``: throttled, one generic
failure, constant time) and opens an AAL1 session that can do nothing but the second
factor -- verify a code, or enrol an authenticator app when the account has none.
Passing it replaces the session with a new AAL2 one (new id: no fixation).  Every
refusal shows the same sentence.
"""

from __future__ import annotations

import io
from urllib.parse import quote

import segno
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from phiguard.errors import AuthenticationError, EnrolmentError
from phiguard.identity.mfa import SecondFactor
from phiguard.identity.sessions import SessionInvalid

from .pages import (
    FormTooLarge,
    address,
    form,
    redirect,
    render,
    safe_next,
    signed_in,
    submitted,
    to_login,
)
from .passkeys import has_keys, holds_keys
from .session import (
    check_csrf,
    clear_session_cookie,
    console,
    current_session,
    session_id,
    set_session_cookie,
)

router = APIRouter(include_in_schema=False)

GENERIC = "The user id, password or code is not right, or the account cannot sign in now."
EXPIRED = "Your sign-in expired. Please start again."


def _mfa(request: Request) -> SecondFactor:
    return SecondFactor(console(request).accounts)


def _pending(request: Request) -> tuple[str, str] | None:
    """(session id, user id) of a password-only (AAL1) session, or None."""
    sid = session_id(request)
    session = current_session(request, min_aal=1)
    if sid is None or session is None or session.aal != 1:
        return None
    return sid, session.user_id


@router.get("/login")
async def login_page(request: Request, next: str = "") -> Response:
    if signed_in(request) is not None:
        return redirect(safe_next(next))
    return render(request, "console_login.html", next=safe_next(next), user_id="")


@router.post("/login")
async def login(request: Request) -> Response:
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        # Login CSRF: the form has no session (so no CSRF token) yet, and another
        # site's page could post its own credentials to plant its session here.
        return render(
            request, "console_login.html", status=403, error=EXPIRED, next="/account", user_id=""
        )
    try:
        data = await form(request)
    except FormTooLarge:
        return render(
            request, "console_login.html", status=400, error=GENERIC, next="/account", user_id=""
        )
    target = safe_next(data.get("next"))
    user_id = data.get("user_id", "").strip().lower()
    password = data.get("password", "")
    accounts = console(request).accounts
    try:
        result = await run_in_threadpool(
            accounts.authenticate,
            user_id,
            password,
            address(request),
            request_id=request.state.request_id,
        )
    except AuthenticationError:
        return render(
            request,
            "console_login.html",
            status=401,
            error=GENERIC,
            next=target,
            user_id=user_id[:64],
        )
    sessions = console(request).sessions
    aal = 1 if result.mfa_pending else 2
    new = await run_in_threadpool(
        sessions.create,
        user_id,
        aal,
        address(request),
        request.headers.get("user-agent"),
    )
    old = session_id(request)
    if old:  # whatever session the browser had before is ended, not reused
        await run_in_threadpool(sessions.revoke, old)
    mfa = result.mfa
    if mfa == "enrol" and await run_in_threadpool(holds_keys, request, user_id):
        mfa = "verify"  # a security key is a second factor as good as TOTP
    step = {"verify": "/login/mfa", "enrol": "/mfa/enrol"}.get(mfa)
    response = redirect(f"{step}?next={quote(target, safe='/')}" if step else target)
    set_session_cookie(request, response, new.session_id, new.csrf_token)
    return response


@router.get("/login/mfa")
async def mfa_page(request: Request, next: str = "") -> Response:
    pending = _pending(request)
    if pending is None:
        return redirect("/login")
    keys = await run_in_threadpool(has_keys, request, pending[1])
    return render(request, "console_mfa.html", next=safe_next(next), keys=keys)


async def _step_up(request: Request, sid: str, target: str) -> Response:
    try:
        new = await run_in_threadpool(
            console(request).sessions.step_up, sid, address=address(request)
        )
    except SessionInvalid:
        return render(
            request, "console_login.html", status=401, error=EXPIRED, next=target, user_id=""
        )
    response = redirect(target)
    set_session_cookie(request, response, new.session_id, new.csrf_token)
    return response


@router.post("/login/mfa")
async def mfa(request: Request) -> Response:
    pending = _pending(request)
    if pending is None:
        return redirect("/login")
    sid, user_id = pending
    data = await submitted(request)
    target = safe_next(data.get("next"))
    if not check_csrf(request, data.get("csrf")):
        return render(request, "console_mfa.html", status=403, error=EXPIRED, next=target)
    outcome = await run_in_threadpool(
        _mfa(request).verify,
        user_id,
        data.get("code", ""),
        address(request),
        request_id=request.state.request_id,
    )
    if not outcome.accepted:
        keys = await run_in_threadpool(has_keys, request, user_id)
        return render(
            request, "console_mfa.html", status=401, error=GENERIC, next=target, keys=keys
        )
    return await _step_up(request, sid, target)


async def _may_enrol(request: Request, user_id: str) -> bool:
    """Enrolment is for an account with no second factor at all; one that holds a
    security key must pass it (enrolling would let the password alone sign in)."""
    return not await run_in_threadpool(holds_keys, request, user_id)


@router.get("/mfa/enrol")
async def enrol_page(request: Request, next: str = "") -> Response:
    pending = _pending(request)
    if pending is None:
        return redirect("/login")
    _, user_id = pending
    if not await _may_enrol(request, user_id):
        return redirect(f"/login/mfa?next={quote(safe_next(next), safe='/')}")
    try:
        enrolment = await run_in_threadpool(_mfa(request).begin_totp, user_id)
    except EnrolmentError:  # already enrolled: this session must verify instead
        return redirect(f"/login/mfa?next={quote(safe_next(next), safe='/')}")
    return render(request, "console_enrol.html", next=safe_next(next), secret=enrolment.secret)


@router.get("/mfa/enrol/qr.svg")
async def enrol_qr(request: Request) -> Response:
    """The QR code of the pending enrolment; re-derived from the sealed secret."""
    pending = _pending(request)
    if pending is None or not await _may_enrol(request, pending[1]):
        return Response(status_code=404)
    _, user_id = pending
    uri = await run_in_threadpool(console(request).accounts.totp.pending_uri, user_id)
    if uri is None:
        return Response(status_code=404)
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=5, border=2, xmldecl=False)
    svg = out.getvalue()
    return Response(
        svg,
        media_type="image/svg+xml",
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
        },
    )


@router.post("/mfa/enrol")
async def enrol(request: Request) -> Response:
    pending = _pending(request)
    if pending is None:
        return redirect("/login")
    sid, user_id = pending
    data = await submitted(request)
    target = safe_next(data.get("next"))
    if not await _may_enrol(request, user_id):
        return redirect(f"/login/mfa?next={quote(target, safe='/')}")
    if not check_csrf(request, data.get("csrf")):
        return redirect(f"/mfa/enrol?next={quote(target, safe='/')}")
    codes = await run_in_threadpool(
        _mfa(request).confirm_totp,
        user_id,
        data.get("code", ""),
        address(request),
        request_id=request.state.request_id,
    )
    if codes is None:
        uri_secret = await run_in_threadpool(console(request).accounts.totp.pending_secret, user_id)
        return render(
            request,
            "console_enrol.html",
            status=401,
            error="That code is not right. Check the time on your phone and try the next code.",
            next=target,
            secret=uri_secret or "",
        )
    stepped = await _step_up(request, sid, target)
    if stepped.status_code != 303:
        return stepped
    page = render(request, "console_recovery_codes.html", codes=codes.codes, next=target)
    for header, value in stepped.headers.items():
        if header.lower() == "set-cookie":
            page.headers.append("set-cookie", value)
    return page


@router.get("/reauth")
async def reauth_page(request: Request, next: str = "") -> Response:
    current = signed_in(request)
    if current is None:
        return to_login(request)
    return render(request, "console_reauth.html", account=current[1], next=safe_next(next))


@router.post("/reauth")
async def reauth(request: Request) -> Response:
    current = signed_in(request)
    sid = session_id(request)
    if current is None or sid is None:
        return to_login(request)
    _, account = current
    data = await submitted(request)
    target = safe_next(data.get("next"))
    if not check_csrf(request, data.get("csrf")):
        return render(
            request, "console_reauth.html", status=403, account=account, error=EXPIRED, next=target
        )
    accounts = console(request).accounts
    try:
        await run_in_threadpool(
            accounts.authenticate,
            account.user_id,
            data.get("password", ""),
            address(request),
            request_id=request.state.request_id,
        )
        ok = True
    except AuthenticationError:
        ok = False
    if ok and accounts.mfa_enrolled(account.user_id):
        outcome = await run_in_threadpool(
            _mfa(request).verify,
            account.user_id,
            data.get("code", ""),
            address(request),
            request_id=request.state.request_id,
        )
        ok = outcome.accepted
    if not ok:
        return render(
            request, "console_reauth.html", status=401, account=account, error=GENERIC, next=target
        )
    await run_in_threadpool(console(request).sessions.reauthenticated, sid)
    return redirect(target)


@router.post("/logout")
async def logout(request: Request) -> Response:
    sid = session_id(request)
    data = await submitted(request)
    if sid is not None and check_csrf(request, data.get("csrf")):
        await run_in_threadpool(console(request).sessions.revoke, sid)
        response = redirect("/login")
        clear_session_cookie(request, response)
        return response
    return redirect("/account" if sid else "/login")

"""Security keys and passkeys in the console: registration and sign-in (WebAuthn).

The ceremonies need the browser's ``navigator.credentials`` API, so these are the
console's only JSON endpoints, called by our one script file (``/static/webauthn.js``;
the CSP allows no other).  Each state-changing call carries the CSRF token in the
``X-CSRF-Token`` header.  The challenge of a ceremony is kept server-side, in the
database (identity/challenges.py: every server process sees it), per session and
for two minutes, and is used once.

The relying party is the configured public base URL; without one, only a loopback
host (``localhost``) is accepted, since browsers refuse WebAuthn on bare IP
addresses and a Host header must never choose the relying party.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from phiguard.audit.events import AuditEvent
from phiguard.errors import EnrolmentError
from phiguard.identity.accounts import PURPOSE
from phiguard.identity.webauthn import (
    CloneSuspected,
    WebAuthnService,
    WebAuthnVerificationError,
    registered,
)

from .pages import address, redirect, safe_next, signed_in, submitted
from .session import check_csrf, console, current_session, session_id, set_session_cookie

router = APIRouter(include_in_schema=False)
MAX_BODY = 64 * 1024
LOOPBACK = ("localhost", "127.0.0.1", "::1")


def relying_party(request: Request) -> WebAuthnService | None:
    """The WebAuthn service for this server's origin, or None if it has no usable one."""
    configured: str = request.app.state.base_url
    if configured:
        origin = configured
    else:
        host = request.url.hostname or ""
        if host not in LOOPBACK:
            return None
        origin = f"{request.url.scheme}://{request.url.netloc}"
    rp_id = urlsplit(origin).hostname or ""
    if not rp_id or rp_id.replace(".", "").isdigit() or ":" in rp_id:
        return None  # browsers refuse IP addresses as relying-party ids
    c = console(request)
    return WebAuthnService(
        c.accounts.engine, c.accounts.clock, rp_id=rp_id, rp_name="phiguard", origin=origin
    )


def _json_error(status: int, message: str, **extra: str) -> JSONResponse:
    return JSONResponse(
        {"error": message, **extra}, status_code=status, headers={"Cache-Control": "no-store"}
    )


def _ok(body: dict[str, object]) -> JSONResponse:
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def _payload(request: Request) -> dict[str, object] | None:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return None
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _record(request: Request, action: str, outcome: str, user_id: str, **detail: object) -> None:
    console(request).accounts.audit.record(
        AuditEvent(
            action=action,
            outcome=outcome,
            principal=f"user/{user_id}",
            purpose=PURPOSE,
            request_id=getattr(request.state, "request_id", "") or secrets.token_hex(16),
            recorded=console(request).accounts.clock.now(),
            source=address(request),
            detail=dict(detail),
        )
    )


# -- registration (account page) ----------------------------------------------------------
@router.post("/account/webauthn/options")
async def registration_options(request: Request) -> Response:
    current = signed_in(request)
    if current is None:
        return _json_error(401, "sign in first")
    session, account = current
    if not check_csrf(request, request.headers.get("x-csrf-token")):
        return _json_error(403, "the page expired; reload it")
    if console(request).sessions.needs_reauth(session):
        return _json_error(403, "confirm it is you first", reauth="/reauth?next=/account")
    service = relying_party(request)
    if service is None:
        return _json_error(409, "security keys need the server's host name (not an IP address)")
    options, challenge = await run_in_threadpool(
        service.registration_options, account.user_id, account.display_name
    )
    await run_in_threadpool(console(request).challenges.put, session.handle, "register", challenge)
    return Response(options, media_type="application/json", headers={"Cache-Control": "no-store"})


@router.post("/account/webauthn/register")
async def register(request: Request) -> Response:
    current = signed_in(request)
    if current is None:
        return _json_error(401, "sign in first")
    session, account = current
    if not check_csrf(request, request.headers.get("x-csrf-token")):
        return _json_error(403, "the page expired; reload it")
    data = await _payload(request)
    challenge = await run_in_threadpool(
        console(request).challenges.take, session.handle, "register"
    )
    service = relying_party(request)
    if data is None or challenge is None or service is None:
        return _json_error(400, "the key could not be registered; try again")
    name = str(data.get("name") or "Security key")[:200]
    try:
        credential = await run_in_threadpool(
            lambda: service.verify_registration(
                account.user_id,
                json.dumps(data.get("credential")),
                expected_challenge=challenge,
                name=name,
            )
        )
    except (WebAuthnVerificationError, EnrolmentError) as exc:
        reason = getattr(exc, "reason", "enrolment")
        _record(
            request,
            "mfa-enrol-failure",
            "denied",
            account.user_id,
            method="webauthn",
            reason=reason,
        )
        return _json_error(400, "the key could not be registered; try again")
    _record(
        request,
        "mfa-enrolled",
        "success",
        account.user_id,
        method="webauthn",
        credential=credential.credential_id[:16],
    )
    return _ok({"registered": credential.name})


@router.post("/account/webauthn/remove")
async def remove(request: Request) -> Response:
    current = signed_in(request)
    if current is None:
        return redirect("/login")
    session, account = current
    data = await submitted(request)
    if not check_csrf(request, data.get("csrf")):
        return redirect("/account")
    if console(request).sessions.needs_reauth(session):
        return redirect("/reauth?next=/account")
    service = relying_party(request)
    if service is not None and await run_in_threadpool(
        service.remove, account.user_id, data.get("credential", "")
    ):
        _record(request, "mfa-removed", "success", account.user_id, method="webauthn")
    return redirect("/account")


# -- sign-in (second factor) --------------------------------------------------------------
def _pending(request: Request) -> tuple[str, str, str] | None:
    sid = session_id(request)
    session = current_session(request, min_aal=1)
    if sid is None or session is None or session.aal != 1:
        return None
    return sid, session.handle, session.user_id


@router.post("/login/webauthn/options")
async def authentication_options(request: Request) -> Response:
    pending = _pending(request)
    if pending is None:
        return _json_error(401, "sign in with your password first")
    _, handle, user_id = pending
    if not check_csrf(request, request.headers.get("x-csrf-token")):
        return _json_error(403, "the page expired; reload it")
    service = relying_party(request)
    if service is None:
        return _json_error(409, "security keys need the server's host name")
    try:
        options, challenge = await run_in_threadpool(service.authentication_options, user_id)
    except EnrolmentError:
        return _json_error(409, "no security key is registered; use a code")
    await run_in_threadpool(console(request).challenges.put, handle, "authenticate", challenge)
    return Response(options, media_type="application/json", headers={"Cache-Control": "no-store"})


@router.post("/login/webauthn/verify")
async def authenticate(request: Request) -> Response:
    pending = _pending(request)
    if pending is None:
        return _json_error(401, "sign in with your password first")
    sid, handle, user_id = pending
    if not check_csrf(request, request.headers.get("x-csrf-token")):
        return _json_error(403, "the page expired; reload it")
    data = await _payload(request)
    challenge = await run_in_threadpool(console(request).challenges.take, handle, "authenticate")
    service = relying_party(request)
    accounts = console(request).accounts
    throttle = accounts.throttle
    if data is None or challenge is None or service is None:
        return _json_error(400, "the key was not accepted")
    decision = throttle.check(user_id, address(request))
    if not decision.allowed:
        _record(
            request, "mfa-failure", "denied", user_id, method="webauthn", reason=decision.reason
        )
        return _json_error(401, "the key was not accepted")
    try:
        await run_in_threadpool(
            lambda: service.verify_authentication(
                user_id, json.dumps(data.get("credential")), expected_challenge=challenge
            )
        )
    except CloneSuspected as exc:
        _record(
            request,
            "webauthn-clone-suspected",
            "denied",
            user_id,
            credential=exc.result.credential_id[:16],
            sign_count=exc.result.sign_count,
            stored=exc.stored_sign_count,
        )
        return _json_error(401, "the key was not accepted")
    except WebAuthnVerificationError as exc:
        throttle.record_failure(user_id, address(request))
        _record(request, "mfa-failure", "denied", user_id, method="webauthn", reason=exc.reason)
        return _json_error(401, "the key was not accepted")
    throttle.record_success(user_id, address(request))
    _record(request, "mfa-success", "success", user_id, method="webauthn")
    new = await run_in_threadpool(console(request).sessions.step_up, sid, address=address(request))
    target = safe_next(str(data.get("next") or ""))
    response = _ok({"next": target})
    set_session_cookie(request, response, new.session_id, new.csrf_token)
    return response


def has_keys(request: Request, user_id: str) -> bool:
    """Whether the user can sign in with a key here (a usable key, and a relying party)."""
    service = relying_party(request)
    return service is not None and any(not c.flagged_clone for c in service.credentials(user_id))


def holds_keys(request: Request, user_id: str) -> bool:
    """Whether the account has any security key at all, usable here or not.

    Such an account has a second factor: signing in must pass it, never enrol a new
    one with the password alone (through a host name that is not the relying party,
    ``has_keys`` is False for it).
    """
    return registered(console(request).accounts.engine, user_id) > 0

"""Who is signed in to the console, from the session cookie.

The cookie holds only the 256-bit session id (the server keeps its hash).  On TLS it
is ``__Host-phiguard``: the ``__Host-`` prefix makes the browser insist on
``Secure``, ``Path=/`` and no ``Domain``, so no other host or path can plant or read
it.  On plain-HTTP loopback (the demo) it is ``phiguard``, without ``Secure``.
Both are ``HttpOnly`` and ``SameSite=Strict``.

The session's CSRF token travels in a companion cookie of the same kind (the server
stores only its hash, so it cannot re-derive it): pages copy it into their forms,
and a state-changing request must present it in the form *and* match the session's
stored hash.  A cross-site page can neither read the cookie nor make the browser
send it (``SameSite=Strict``), so it cannot forge the form field.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from phiguard.identity.accounts import Accounts
from phiguard.identity.challenges import ChallengeStore
from phiguard.identity.sessions import Session, SessionInvalid, SessionStore

SECURE_COOKIE = "__Host-phiguard"
PLAIN_COOKIE = "phiguard"
CSRF_SUFFIX = "-csrf"
LOGIN_PATH = "/login"


@dataclass
class Console:
    """The identity services the console pages share (one per process)."""

    accounts: Accounts
    sessions: SessionStore
    secure_cookies: bool
    challenges: ChallengeStore


def console(request: Request) -> Console:
    value: Console = request.app.state.console
    return value


def cookie_name(request: Request) -> str:
    return SECURE_COOKIE if console(request).secure_cookies else PLAIN_COOKIE


def session_id(request: Request) -> str | None:
    value = request.cookies.get(cookie_name(request))
    return value or None


def current_session(request: Request, *, min_aal: int = 2) -> Session | None:
    """The signed-in session behind the cookie (at least ``min_aal``), or None.

    AAL2 (password and a second factor) is what every page but sign-in and MFA
    enrolment needs; an account that is not required to use MFA counts as AAL2 once
    its password is accepted.
    """
    sid = session_id(request)
    if sid is None:
        return None
    address = request.client.host if request.client else None
    try:
        session = console(request).sessions.validate(sid, address=address)
    except SessionInvalid:
        return None
    return session if session.aal >= min_aal else None


def csrf_token(request: Request) -> str:
    """The CSRF token to embed in this page's forms ('' when there is no session)."""
    return request.cookies.get(cookie_name(request) + CSRF_SUFFIX, "")


def set_session_cookie(request: Request, response: Response, session_id: str, csrf: str) -> None:
    """Send a new session (always a fresh id: log-in and step-up) to the browser."""
    for name, value in (
        (cookie_name(request), session_id),
        (cookie_name(request) + CSRF_SUFFIX, csrf),
    ):
        response.set_cookie(
            name,
            value,
            httponly=True,
            secure=console(request).secure_cookies,
            samesite="strict",
            path="/",
        )


def clear_session_cookie(request: Request, response: Response) -> None:
    for name in (cookie_name(request), cookie_name(request) + CSRF_SUFFIX):
        response.delete_cookie(
            name,
            path="/",
            secure=console(request).secure_cookies,
            httponly=True,
            samesite="strict",
        )


def check_csrf(request: Request, token: str | None) -> bool:
    """Whether ``token`` (from the form) is the CSRF token of the signed-in session."""
    sid = session_id(request)
    if sid is None or not token:
        return False
    return console(request).sessions.check_csrf(sid, token)

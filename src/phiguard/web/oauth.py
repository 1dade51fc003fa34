"""HTTP endpoints of the OAuth2 / SMART authorization server, and the consent page.

This is the adapter between Starlette and ``identity.oauth``: each handler reads the
query and a size-limited form body in the event loop, builds a plain
``HttpRequest`` whose URI is the configured public base URL (never the ``Host``
header, which a client controls), and runs the Authlib server in the thread pool,
because it does database work and argon2-free but blocking crypto.

The consent page has a strict CSP (no script at all; forms may post only to
ourselves and redirect only to the app's registered redirect URI, because
``form-action`` also governs the redirect that follows a form post), carries the
session's CSRF token, and is never cached.  A request without a signed-in AAL2
session is sent to ``/login?next=...`` and comes back here.
"""

from __future__ import annotations

import html
import json
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from fastapi import APIRouter, Request
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from phiguard.errors import AuthenticationError
from phiguard.identity import oauth_scopes as sc
from phiguard.identity.oauth import (
    AUTHORIZE_PATH,
    INTROSPECT_PATH,
    JWKS_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
    BadAuthorization,
    ConsentView,
    HttpRequest,
    OAuthResponse,
    OAuthService,
    PatientRequired,
)

from .console.session import LOGIN_PATH, check_csrf, csrf_token, current_session

router = APIRouter(include_in_schema=False)

MAX_FORM_BYTES = 16_384
MAX_QUERY_CHARS = 8_192
SMART_CONFIG_PATH = "/.well-known/smart-configuration"
RELOAD_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"

_templates = Environment(
    loader=PackageLoader("phiguard.web", "templates"), autoescape=select_autoescape(["html"])
)

SCOPE_TEXT = {
    sc.OPENID: "Confirm who you are to the app (your user id)",
    sc.FHIR_USER: "Tell the app which staff member you are (your FHIR Practitioner)",
    sc.LAUNCH_PATIENT: "Work on one patient that you choose below",
    sc.OFFLINE: "Keep access for up to 12 hours without asking again",
    sc.ONLINE: "Keep access for up to 12 hours without asking again",
}
LETTER_TEXT = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
CONTEXT_TEXT = {
    "patient": "of the chosen patient",
    "user": "that you may see",
    "system": "(as a system)",
}


def service(request: Request) -> OAuthService:
    """The app's OAuth service, built on first use from the app's system, token service
    and accounts (so the console, the FHIR API and OAuth share one of each)."""
    state = request.app.state
    value: OAuthService | None = getattr(state, "oauth", None)
    if value is None:
        value = state.oauth = OAuthService.from_system(
            state.system, accounts=state.console.accounts, tokens=state.tokens
        )
    return value


def describe_scope(scope: str) -> str:
    """A plain-language line for the consent page."""
    if scope in SCOPE_TEXT:
        return SCOPE_TEXT[scope]
    parsed = sc.parse_resource(scope)
    if parsed is None:
        return scope
    verbs = ", ".join(LETTER_TEXT[c] for c in parsed.letters)
    what = "all record types" if parsed.rtype == "*" else f"{parsed.rtype} records"
    return f"{verbs.capitalize()} {what} {CONTEXT_TEXT[parsed.context]}"


class _TooLarge(Exception):
    pass


async def _form(request: Request) -> list[tuple[str, str]]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise _TooLarge()
    declared = request.headers.get("content-length")
    if declared and (not declared.isdigit() or int(declared) > MAX_FORM_BYTES):
        raise _TooLarge()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise _TooLarge()
    try:
        return parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise _TooLarge() from None


def _http(request: Request, form: list[tuple[str, str]] | None = None) -> HttpRequest:
    base = service(request).issuer
    query = request.url.query
    uri = f"{base}{request.url.path}" + (f"?{query}" if query else "")
    return HttpRequest(
        method=request.method,
        uri=uri,
        headers={k.lower(): v for k, v in request.headers.items()},
        query=parse_qsl(query, keep_blank_values=True),
        form=form or [],
        source=request.client.host if request.client else "",
        request_id=getattr(request.state, "request_id", ""),
    )


def _respond(result: OAuthResponse, *, after_post: bool = False) -> Response:
    headers = {k: v for k, v in result.headers if k.lower() != "content-type"}
    headers["Cache-Control"] = "no-store"
    headers["Pragma"] = "no-cache"
    if result.location is not None:
        # After a form post, 303 makes the browser follow with GET.
        return Response(status_code=303 if after_post else 302, headers=headers)
    body = result.body if isinstance(result.body, dict) else json.loads(result.body or "{}")
    return JSONResponse(body, status_code=result.status, headers=headers)


def _oauth_error(error: str, status: int = 400) -> Response:
    return JSONResponse(
        {"error": error},
        status_code=status,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _page_csp(redirect_uri: str | None = None) -> str:
    targets = "'self'"
    if redirect_uri:
        parts = urlsplit(redirect_uri)
        origin = f"{parts.scheme}://{parts.netloc}" if parts.netloc else f"{parts.scheme}:"
        targets += f" {origin}"
    return (
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; "
        f"base-uri 'none'; form-action {targets}"
    )


def _page(
    template: str, status: int = 200, redirect_uri: str | None = None, **ctx: Any
) -> Response:
    html = _templates.get_template(template).render(**ctx)
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            "Content-Security-Policy": _page_csp(redirect_uri),
            "Cache-Control": "no-store",
            "Pragma": "no-cache",
        },
    )


def _error_page(status: int = 400) -> Response:
    return _page(
        "oauth_error.html",
        status,
        message="This sign-in request is not valid. Return to the application and try again.",
    )


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(
        f"{LOGIN_PATH}?next={quote(target, safe='')}",
        status_code=303,
        headers={"Cache-Control": "no-store"},
    )


def _consent_page(request: Request, view: ConsentView, error: str | None = None) -> Response:
    return _page(
        "oauth_consent.html",
        400 if error else 200,
        redirect_uri=view.redirect_uri,
        app=view.client.name,
        client_id=view.client.client_id,
        user=view.account.display_name,
        user_id=view.account.user_id,
        scopes=[(s, describe_scope(s)) for s in view.scopes],
        needs_patient=view.needs_patient,
        redirect_host=urlsplit(view.redirect_uri).netloc or view.redirect_uri,
        action=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        csrf=csrf_token(request),
        error=error,
    )


@router.get(SMART_CONFIG_PATH)
async def smart_configuration(request: Request) -> JSONResponse:
    return JSONResponse(service(request).smart_configuration())


@router.get(JWKS_PATH)
async def jwks(request: Request) -> JSONResponse:
    keys = await run_in_threadpool(service(request).jwks)
    return JSONResponse(keys, headers={"Cache-Control": "public, max-age=300"})


def _same_site_reload(request: Request) -> Response:
    target = html.escape(str(request.url.path) + "?" + request.url.query, quote=True)
    body = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="0;url={target}">'
        "<title>phiguard</title></head><body>"
        f'<p><a href="{target}">Continue to phiguard</a></p></body></html>'
    )
    return HTMLResponse(
        body,
        headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": RELOAD_CSP,
        },
    )


@router.get(AUTHORIZE_PATH)
async def authorize(request: Request) -> Response:
    if len(request.url.query) > MAX_QUERY_CHARS:
        return _error_page()
    session = current_session(request)
    if session is None and request.headers.get("sec-fetch-site") == "cross-site":
        # The app sent the browser here from its own site, so the SameSite=Strict
        # session cookie was withheld.  Load the same URL again from our own page: that
        # navigation is same-site, carries the cookie, and a signed-in user goes
        # straight to consent instead of signing in twice.
        return _same_site_reload(request)
    if session is None:
        return _to_login(request)
    http = _http(request)
    try:
        result = await run_in_threadpool(service(request).consent_view, http, session.user_id)
    except BadAuthorization:
        return _error_page()
    except AuthenticationError:
        return _to_login(request)
    if isinstance(result, OAuthResponse):
        return _respond(result)
    return _consent_page(request, result)


@router.post(AUTHORIZE_PATH)
async def authorize_decision(request: Request) -> Response:
    if len(request.url.query) > MAX_QUERY_CHARS:
        return _error_page()
    try:
        form = dict(await _form(request))
    except _TooLarge:
        return _error_page()
    session = current_session(request)
    if session is None:
        return _to_login(request)
    if not check_csrf(request, form.get("csrf")):
        return _error_page(403)
    decision = form.get("decision")
    if decision not in ("approve", "deny"):
        return _error_page()
    http = _http(request)
    oauth = service(request)
    try:
        result = await run_in_threadpool(
            lambda: oauth.decide(
                http,
                session.user_id,
                approve=decision == "approve",
                patient=form.get("patient"),
                session=session.handle,
            )
        )
    except BadAuthorization:
        return _error_page()
    except AuthenticationError:
        return _to_login(request)
    except PatientRequired as exc:
        view = await run_in_threadpool(oauth.consent_view, http, session.user_id)
        if isinstance(view, OAuthResponse):
            return _respond(view, after_post=True)
        return _consent_page(request, view, error=str(exc))
    return _respond(result, after_post=True)


async def _endpoint(request: Request, handler: str) -> Response:
    try:
        form = await _form(request)
    except _TooLarge:
        return _oauth_error("invalid_request")
    http = _http(request, form)
    oauth = service(request)
    result = await run_in_threadpool(getattr(oauth, handler), http)
    return _respond(result)


@router.post(TOKEN_PATH)
async def token(request: Request) -> Response:
    return await _endpoint(request, "token")


@router.post(REVOKE_PATH)
async def revoke(request: Request) -> Response:
    return await _endpoint(request, "revoke")


@router.post(INTROSPECT_PATH)
async def introspect(request: Request) -> Response:
    return await _endpoint(request, "introspect")

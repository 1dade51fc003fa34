"""Rendering console pages, and the checks every page shares.

Every page is rendered with the same headers: a CSP that allows only our own
stylesheet, images and (where a page needs it) our own script file, and
``Cache-Control: no-store`` so that no browser or proxy keeps a copy of a page that
showed account data.  ``next`` targets are confined to local paths, so a crafted
sign-in link cannot forward a fresh session to another site.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from phiguard import __version__
from phiguard.identity.accounts import Account
from phiguard.identity.sessions import Session

from .session import LOGIN_PATH, console, csrf_token, current_session

PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
MAX_FIELD = 1024  # longer form values are refused before any work is done

_templates = Environment(
    loader=PackageLoader("phiguard.web", "templates"), autoescape=select_autoescape(["html"])
)


class FormTooLarge(ValueError):
    """A form field was longer than any genuine value could be."""


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    html = _templates.get_template(template).render(
        version=__version__,
        csrf=csrf_token(request),
        **context,
    )
    return HTMLResponse(
        html,
        status_code=status,
        headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-store"},
    )


def safe_next(value: str | None, default: str = "/account") -> str:
    """A local path to continue to; anything else (other hosts, schemes) is dropped.

    Spaces and control characters are refused as well: a browser deletes tabs and
    newlines from a URL before parsing it, so ``/<TAB>/evil.example`` in a link or in
    ``location.assign`` is ``//evil.example``, another site.  (A genuine target never
    holds them: ``to_login`` passes the path and query as the browser sent them,
    percent-encoded.)
    """
    if not value or len(value) > 2048:
        return default
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        return default
    if not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})


def to_login(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return redirect(f"{LOGIN_PATH}?next={quote(target, safe='')}")


async def form(request: Request, *, max_field: int = MAX_FIELD) -> dict[str, str]:
    """The submitted form as plain strings; ``FormTooLarge`` for oversized fields."""
    data = await request.form(max_files=0, max_fields=64)
    values: dict[str, str] = {}
    for key, value in data.items():
        if not isinstance(value, str) or len(value) > max_field or len(key) > 64:
            raise FormTooLarge(key[:64])
        values[key] = value
    return values


async def submitted(request: Request, *, max_field: int = MAX_FIELD) -> dict[str, str]:
    """The form, or an empty one when a field is oversized (it then fails its checks)."""
    try:
        return await form(request, max_field=max_field)
    except FormTooLarge:
        return {}


def signed_in(request: Request) -> tuple[Session, Account] | None:
    """The AAL2 session and its (active) account, or None."""
    session = current_session(request)
    if session is None:
        return None
    account = console(request).accounts.get(session.user_id)
    if account.status != "active":
        return None
    return session, account


def address(request: Request) -> str:
    return request.client.host if request.client else ""


def forbidden(request: Request, account: Account) -> Response:
    return render(
        request,
        "console_message.html",
        status=403,
        account=account,
        title="Not allowed",
        message="Your roles do not include this page.",
    )

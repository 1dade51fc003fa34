"""HTTP: declaring break-the-glass over the API (``POST /access/break-glass``).

The caller is the bearer token's user (an application's own token cannot declare an
emergency).  The body carries the patient, the reason, and the user's password and a
current TOTP code: the re-authentication that the console does with its own
step-up page.  The grant opens access to that one patient for requests made with
``X-Purpose-Of-Use: BTG`` (or ETREAT) until it expires; see breakglass.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from phiguard.errors import AuthenticationError
from phiguard.fhir.outcome import ApiError, FhirResponse, outcome
from phiguard.records.context import AccessContext

from .breakglass import BreakGlass, BreakGlassError

router = APIRouter(prefix="/access", tags=["Access"])
MAX_BODY = 16_384


def _service(request: Request) -> BreakGlass:
    system = request.app.state.system
    if system.access is None:
        raise ApiError(503, "not-supported", "access control is not configured here")
    service: BreakGlass = system.access.break_glass
    if service.accounts is None:
        from phiguard.identity.accounts import Accounts

        service.accounts = Accounts.from_system(system)
    return service


def _text(doc: dict[str, Any], name: str) -> str:
    value = doc.get(name, "")
    if not isinstance(value, str):
        raise ApiError(400, "invalid", f"{name} must be a string")
    return value


@router.post("/break-glass", summary="Declare an emergency for one patient (break-the-glass)")
async def declare(request: Request) -> FhirResponse:
    authenticate: Callable[[Request], AccessContext] = request.app.state.authenticate
    ctx = await run_in_threadpool(authenticate, request)
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise ApiError(413, "too-long", f"the body is larger than {MAX_BODY} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "structure", "the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "structure", "the body must be a JSON object")
    service = _service(request)
    purpose = _text(doc, "purpose") or "BTG"
    try:
        if ctx.principal.kind != "user":
            raise BreakGlassError(
                "break-the-glass is declared by a workforce user, not by an application"
            )
        grant = await run_in_threadpool(
            service.declare_with_credentials,
            ctx.principal.id,
            _text(doc, "password"),
            _text(doc, "totp"),
            _text(doc, "patient"),
            _text(doc, "reason"),
            purpose=purpose.upper(),
            source=ctx.source,
            request_id=ctx.request_id,
        )
    except BreakGlassError as exc:
        return FhirResponse(outcome("error", "business-rule", [str(exc)]), status_code=400)
    except AuthenticationError:
        return FhirResponse(
            outcome("error", "login", ["re-authentication failed"]), status_code=401
        )
    return FhirResponse(
        {
            "grant": grant.grant_id,
            "patient": grant.patient_id,
            "purpose": grant.purpose,
            "expires": grant.expires_at.isoformat(),
            "review": grant.review_status,
        },
        status_code=201,
    )

"""``GET /fhir/AuditEvent``: the ledger as BALP-shaped AuditEvents.

Only privacy officers, security administrators and operators may search it, and
every search of the audit trail is itself recorded in the trail.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from phiguard.access.scopes import scopes_allow
from phiguard.audit.balp import to_audit_event
from phiguard.audit.events import AuditEvent
from phiguard.audit.ledger import Ledger
from phiguard.errors import AccessDenied, InvalidSearch
from phiguard.records.context import AccessContext
from phiguard.records.search import parse_date, split_prefix
from phiguard.store.engine import now_us

from .outcome import FhirResponse
from .routes import _base, _context

router = APIRouter(prefix="/fhir", tags=["FHIR R4"])
AUDIT_READERS = frozenset({"privacy_officer", "security_admin", "operator"})


def _allowed(ctx: AccessContext) -> bool:
    """Audit readers only, and a token's scopes must cover AuditEvent (they narrow)."""
    if ctx.principal.kind == "operator":
        return True
    if not ctx.principal.roles & AUDIT_READERS:
        return False
    # A patient-launched app never reads the audit trail, whatever its scopes say.
    return ctx.launch_patient is None and scopes_allow(ctx.principal.scopes, "search", "AuditEvent")


def _query(items: list[tuple[str, str]]) -> dict[str, Any]:
    q: dict[str, Any] = {"offset": 0, "count": 50}
    for name, value in items:
        if name == "patient":
            q["patient"] = value.removeprefix("Patient/")
        elif name == "agent":
            q["who"] = value
        elif name == "date":
            prefix, body = split_prefix(value)
            rng = parse_date(body)
            if prefix in ("ge", "gt", "eq"):
                q["since_us"] = now_us(rng.start if prefix != "gt" else rng.end)
            if prefix in ("le", "lt", "eq"):
                q["until_us"] = now_us(rng.end if prefix != "lt" else rng.start)
            if prefix not in ("ge", "gt", "eq", "le", "lt"):
                raise InvalidSearch("AuditEvent date supports eq, ge, gt, le and lt")
        elif name == "_count":
            if not value.isdigit() or not 0 < int(value) <= 1000:
                raise InvalidSearch("_count must be between 1 and 1000")
            q["count"] = int(value)
        elif name == "_offset":
            if not value.isdigit():
                raise InvalidSearch("_offset must be a whole number")
            q["offset"] = int(value)
        else:
            raise InvalidSearch(f"unknown search parameter for AuditEvent: {name[:40]}")
    return q


def _event(ledger: Ledger, ctx: AccessContext, outcome: str, **extra: Any) -> AuditEvent:
    return AuditEvent(
        action="audit-search",
        outcome=outcome,
        principal=ctx.principal.reference,
        purpose=ctx.purpose,
        request_id=ctx.request_id,
        recorded=ledger.clock.now(),
        source=ctx.source,
        **extra,
    )


def _search(
    ledger: Ledger, ctx: AccessContext, items: list[tuple[str, str]], record: Any
) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    q = _query(items)
    if not _allowed(ctx):
        record(_event(ledger, ctx, "denied"))
        raise AccessDenied(reasons=["only privacy officers and security administrators"])
    total, docs = ledger.search(**q)
    patients = (q["patient"],) if "patient" in q else ()
    record(_event(ledger, ctx, "success", patient_ids=patients, detail={"total": total}))
    return total, docs, q


@router.get("/AuditEvent", summary="Search the audit ledger (privacy and security officers)")
async def search_audit_events(request: Request) -> FhirResponse:
    ctx = await _context(request)
    system = request.app.state.system
    items = list(request.query_params.multi_items())
    total, docs, q = await run_in_threadpool(
        _search, system.ledger, ctx, items, system.vault.audit.record
    )
    base = _base(request)
    plain = [(k, v) for k, v in items if k != "_offset"]

    def link(relation: str, offset: int) -> dict[str, str]:
        return {
            "relation": relation,
            "url": f"{base}/AuditEvent?" + urlencode([*plain, ("_offset", str(offset))]),
        }

    links = [link("self", q["offset"])]
    if q["offset"] + q["count"] < total:
        links.append(link("next", q["offset"] + q["count"]))
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": total,
        "link": links,
    }
    if docs:
        bundle["entry"] = [
            {
                "fullUrl": f"{base}/AuditEvent/{d['seq']}",
                "resource": to_audit_event(d),
                "search": {"mode": "match"},
            }
            for d in docs
        ]
    return FhirResponse(bundle)

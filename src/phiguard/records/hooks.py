"""The two seams inside every repository call: the access decision and the audit record.

The access package provides the real policy; until it is wired in,
``OperatorOnlyPolicy`` lets only operators and phiguard itself in (deny by default).
The audit side is ``phiguard.audit``: the ledger, or a list in tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from phiguard.audit.events import AuditEvent, AuditSink, ListAuditSink, NullAuditSink

from .context import AccessContext


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reasons: tuple[str, ...] = ()
    # Obligations the repository must carry out on an allowed call, e.g. fields to mask.
    masked_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccessRequest:
    action: str  # read | vread | search | create | update | delete | history | everything
    resource_type: str
    resource_id: str | None = None
    compartment: str | None = None
    resource: dict[str, Any] | None = None


class AccessPolicy(Protocol):
    def decide(self, ctx: AccessContext, request: AccessRequest) -> Decision: ...


class OperatorOnlyPolicy:
    """Deny by default; operators (bootstrap token) and phiguard's own jobs are allowed."""

    def decide(self, ctx: AccessContext, request: AccessRequest) -> Decision:
        if ctx.principal.kind in ("operator", "system"):
            return Decision(True, (f"{ctx.principal.kind} may {request.action}",))
        return Decision(False, ("no policy grants this caller access",))


# The audit seam's types live in the audit package; re-exported for the callers here.
__all__ = [
    "AccessPolicy",
    "AccessRequest",
    "AuditEvent",
    "AuditSink",
    "Decision",
    "ListAuditSink",
    "NullAuditSink",
    "OperatorOnlyPolicy",
]

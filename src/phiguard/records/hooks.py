"""The seams inside every repository call: the access decision, the audit record, and
the observers that keep derived indexes in step with writes.

``phiguard.access`` provides the real policy (``CedarPolicy``, wired in by
``system.py``); ``OperatorOnlyPolicy`` lets only operators and phiguard itself in
(deny by default) and is what a bare ``Vault`` uses.  The audit side is
``phiguard.audit``: the ledger, or a list in tests.  A ``WriteObserver`` (the access
relationship index) sees every written version inside the writing transaction, so
the derived rows commit or roll back with the resource.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection

from phiguard.audit.events import AuditEvent, AuditSink, ListAuditSink, NullAuditSink

from .context import AccessContext


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reasons: tuple[str, ...] = ()
    # Obligations the repository must carry out on an allowed call, e.g. fields to mask.
    masked_fields: tuple[str, ...] = ()
    # Fields the caller may see but not change (refused on update).
    readonly_fields: tuple[str, ...] = ()
    # The permit came from a break-the-glass grant: the audit record says so.
    break_glass: bool = False


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

    def per_resource(self, ctx: AccessContext) -> bool:
        """Operators see every result alike: searches keep the fast counted path."""
        return ctx.principal.kind not in ("operator", "system")


@dataclass(frozen=True)
class Written:
    """One resource version as written (``resource`` None for a deletion)."""

    resource_type: str
    id: str
    compartment: str
    resource: dict[str, Any] | None
    previous_patients: tuple[str, ...] = ()


class WriteObserver(Protocol):
    """Sees every write inside its transaction (derived indexes); must not open a new one.

    An observer may also define ``shredded(conn, patient_id)``, called inside the
    transaction that destroys a patient's keys, to drop what it derived from them.
    """

    def written(self, conn: Connection, items: Sequence[Written]) -> None: ...


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
    "WriteObserver",
    "Written",
]

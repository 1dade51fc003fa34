"""The two seams inside every repository call: the access decision and the audit record.

The access and audit packages provide the real implementations; until they are
wired in, ``OperatorOnlyPolicy`` lets only operators and phiguard itself in (deny by
default), and ``NullAuditSink`` / ``ListAuditSink`` stand in for the ledger.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection

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


@dataclass(frozen=True)
class AuditEvent:
    """One structured record of an interaction, allowed or denied. No PHI beyond ids."""

    action: str
    outcome: str  # success | denied | error
    principal: str
    purpose: str
    request_id: str
    recorded: dt.datetime
    resource_type: str | None = None
    resource_id: str | None = None
    version: int | None = None
    patient_ids: tuple[str, ...] = ()
    break_glass: bool = False
    source: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


class AuditSink(Protocol):
    def record(self, event: AuditEvent, conn: Connection | None = None) -> None:
        """Record ``event``; raise ``AuditError`` if it cannot be (the call then fails)."""
        ...


class NullAuditSink:
    def record(self, event: AuditEvent, conn: Connection | None = None) -> None:
        return None


class ListAuditSink:
    """Keeps events in memory: for tests and for the in-process monitor."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []
        self._lock = threading.Lock()

    def record(self, event: AuditEvent, conn: Connection | None = None) -> None:
        with self._lock:
            self.events.append(event)

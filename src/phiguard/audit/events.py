"""Audit events and the sink every recorder writes to.

An event names who did what to which resource, for which patients, why (purpose of
use, break-the-glass) and with what outcome.  It carries identifiers, never PHI
values; free-text details are sealed when the ledger stores them.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection


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

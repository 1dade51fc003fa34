"""The ledger as the repository's audit sink."""

from __future__ import annotations

from sqlalchemy import Connection

from .events import AuditEvent
from .ledger import Ledger


class LedgerSink:
    """Records each event in the ledger and returns only once it is committed."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def record(self, event: AuditEvent, conn: Connection | None = None) -> None:
        self.ledger.append(event)

"""Helpers for the ledger tests: events, ledgers on a file, raw SQL for attacks."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from phiguard.audit.events import AuditEvent
from phiguard.audit.ledger import Ledger
from phiguard.crypto.keyring import Keyring
from phiguard.store import migrate
from phiguard.store.engine import make_engine


def event(i: int, **kw: object) -> AuditEvent:
    fields: dict[str, object] = {
        "action": "read",
        "outcome": "success",
        "principal": f"user/u{i % 7}",
        "purpose": "TREAT",
        "request_id": f"r{i}",
        "recorded": dt.datetime(2026, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=i),
        "resource_type": "Patient",
        "resource_id": f"p{i % 11}",
        "patient_ids": (f"p{i % 11}",),
        "detail": {"note": f"free text {i}"},
    }
    fields.update(kw)
    return AuditEvent(**fields)  # type: ignore[arg-type]


def open_ledger(path: Path, keyring: Keyring, **kw: object) -> Ledger:
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    return Ledger(engine, keyring, **kw)  # type: ignore[arg-type]


def fill(ledger: Ledger, n: int, start: int = 0) -> None:
    ledger.append_many([event(i) for i in range(start, start + n)])


def sql(path: Path, statement: str, *args: object) -> None:
    con = sqlite3.connect(path)
    con.execute(statement, args)
    con.commit()
    con.close()

"""Engine construction for SQLite (default) and PostgreSQL, and schema migration.

SQLite runs in WAL mode with ``secure_delete`` so that overwritten and deleted pages
are zeroed (a shredded or rotated ciphertext does not linger in free pages), and with
``temp_store=MEMORY`` so sorting never spills to a temp file.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.pool import NullPool

from phiguard.errors import StoreError


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA secure_delete=ON")
    cur.execute("PRAGMA temp_store=MEMORY")
    cur.close()


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``)."""
    if url.startswith("sqlite"):
        if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, echo=echo, connect_args={"check_same_thread": False, "timeout": 10}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # Let SQLAlchemy's own BEGIN handling stay out of the way of WAL semantics.
        return engine
    if url.startswith("postgresql"):
        return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=8, max_overflow=8)
    raise StoreError(f"unsupported database URL scheme: {url.split(':', 1)[0]}")


def make_throwaway_engine(url: str) -> Engine:
    """An engine without pooling, for one-off commands (backup, migrations)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, poolclass=NullPool)


def now_us(when: dt.datetime) -> int:
    """Microseconds since the epoch for a timezone-aware time."""
    return int(when.timestamp() * 1_000_000)


def from_us(value: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(value / 1_000_000, tz=dt.UTC)


def has_schema(engine: Engine) -> bool:
    return inspect(engine).has_table("resources")

"""Small read queries through the database driver's own cursor.

The first decision about a patient (and the first about a user) waits on one
look-up.  Through SQLAlchemy Core such a look-up costs about 150 us on SQLite, most
of it statement building and result processing, and checking a connection out of
the pool and back costs 10-25 us more; the same query on a driver connection the
thread already holds costs about 10 us.  ``Reader`` is for a handful of fixed,
parameterised, read-only statements on that path; everything else uses Core.

On a SQLite file each thread keeps one connection of its own, taken from the engine
(so it has the engine's pragmas) and detached from the pool, so it never holds a
pool slot another request waits for.  It never writes and never leaves a
transaction open (a SELECT in the driver's default mode begins none), so with WAL it
sees every committed write at its next statement and blocks nobody.  Elsewhere
(PostgreSQL) the look-up checks a pooled connection out as usual: the round trip
costs more than the checkout, and a connection per thread would multiply the
server's connections.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine


def placeholders(n: int) -> str:
    """``?, ?, ...`` for an ``IN`` list of ``n`` values."""
    return ", ".join("?" * n)


class Reader:
    """Read-only look-ups for one engine (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        database = engine.url.database or ""
        self._per_thread = (
            engine.dialect.name == "sqlite"
            and database not in ("", ":memory:")
            and "mode=memory" not in str(engine.url)
        )
        self._format = engine.dialect.paramstyle != "qmark"
        self._local = threading.local()

    def _thread_connection(self) -> Any:
        held = getattr(self._local, "connection", None)
        if held is None:
            proxied = self.engine.raw_connection()
            held = proxied.driver_connection
            proxied.detach()  # ours until the thread (or this reader) goes away
            self._local.connection = held
        return held

    def close(self) -> None:
        """Close the calling thread's connection (others close when their thread ends)."""
        held = getattr(self._local, "connection", None)
        if held is not None:
            self._local.connection = None
            held.close()

    def rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        """Rows of ``sql`` (``?`` placeholders, rewritten for drivers that use ``%s``)."""
        if self._format:
            sql = sql.replace("?", "%s")
        if self._per_thread:
            cursor = self._thread_connection().cursor()
            try:
                cursor.execute(sql, tuple(params))
                found: list[Any] = cursor.fetchall()
            finally:
                cursor.close()
            return found
        with self.engine.connect() as conn:
            driver: Any = conn.connection.driver_connection
            cursor = driver.cursor()
            try:
                cursor.execute(sql, tuple(params))
                pooled: list[Any] = cursor.fetchall()
            finally:
                cursor.close()
        return pooled

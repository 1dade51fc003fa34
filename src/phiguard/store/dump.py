"""Logical dump and load of every table: portable between SQLite and PostgreSQL.

Rows become JSON objects with bytes as ``{"$b": base64}``; every value in the PHI
tables is already ciphertext or a token, so the dump is as opaque as the database.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Connection, Table, func, select

from .tables import metadata


def tables(names: Iterable[str] | None = None) -> list[Table]:
    """Tables in dependency order, optionally only those named."""
    wanted = set(names) if names is not None else None
    return [t for t in metadata.sorted_tables if wanted is None or t.name in wanted]


def encode(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: ({"$b": base64.b64encode(bytes(v)).decode()} if isinstance(v, bytes | memoryview) else v)
        for k, v in row.items()
    }


def decode(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (base64.b64decode(v["$b"]) if isinstance(v, dict) and "$b" in v else v)
        for k, v in row.items()
    }


def dump(
    conn: Connection, names: Iterable[str] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    for table in tables(names):
        pk = list(table.primary_key.columns)
        for row in conn.execute(select(table).order_by(*pk)).mappings():
            yield table.name, encode(dict(row))


def load(conn: Connection, table_name: str, rows: Iterable[dict[str, Any]]) -> int:
    table = metadata.tables[table_name]
    batch = [decode(r) for r in rows]
    if batch:
        conn.execute(table.insert(), batch)
    return len(batch)


def row_count(conn: Connection, names: Iterable[str] | None = None) -> int:
    return sum(
        int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in tables()
    )

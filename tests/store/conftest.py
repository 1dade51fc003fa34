"""Store fixtures: one throwaway PostgreSQL server per worker, one database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer, fresh_database, shared_postgres


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with shared_postgres() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    with fresh_database(pg_server, "store") as url:
        yield url

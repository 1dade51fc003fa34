"""Fixtures for the FHIR API tests: live ``phiguard serve`` processes on SQLite and PostgreSQL.

``api`` is one server per backend per worker, shared by the package's tests: every
test makes its own data (unique names, identifiers and codes from ``tag``), and a
test that checks that a rejected request changed nothing compares the database's
``fingerprint`` before and after within the test (tests in a worker run one at a
time, and each worker has its own servers).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer, shared_postgres

from .helpers import SHARED_MAX_BODY, Api, database, running_api

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with shared_postgres() as server:
        yield server


@pytest.fixture(scope="package", params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    backend: str = request.param
    root = tmp_path_factory.mktemp(f"api-{backend}")
    with (
        database(backend, request, root) as url,
        running_api(backend, url, root, max_body_bytes=SHARED_MAX_BODY) as live,
    ):
        yield live


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(backend, a fresh database URL) for tests that need a store of their own."""
    backend: str = request.param
    with database(backend, request, tmp_path) as url:
        yield backend, url


@pytest.fixture
def tag() -> str:
    """A word unique to one test, to tell its data from every other test's."""
    return "q" + secrets.token_hex(5)

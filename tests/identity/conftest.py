"""Fixtures of the identity tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from argon2 import Parameters, Type

from phiguard.clock import FixedClock
from phiguard.crypto.keyring import Keyring
from phiguard.crypto.providers import LocalKeyFile
from phiguard.identity.passwords import PasswordHashing
from phiguard.store import migrate
from phiguard.store.engine import make_engine
from tests.support.postgres import PostgresServer, fresh_database, shared_postgres

# The production code path with parameters cheap enough for unit tests; the
# production parameters themselves are exercised once in test_passwords.
CHEAP = Parameters(
    type=Type.ID, version=19, salt_len=16, hash_len=32, time_cost=1, memory_cost=64, parallelism=1
)


@pytest.fixture(scope="session")
def hashing() -> PasswordHashing:
    return PasswordHashing(CHEAP)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with shared_postgres() as server:
        yield server


@pytest.fixture
def pg_keyring(
    pg_server: PostgresServer, keyfile: LocalKeyFile, clock: FixedClock
) -> Iterator[Keyring]:
    """A migrated PostgreSQL database with a keyring, for the postgres-marked tests."""
    with fresh_database(pg_server, "identity") as url:
        engine = make_engine(url)
        migrate.upgrade(engine)
        yield Keyring(engine, keyfile, clock=clock)
        engine.dispose()

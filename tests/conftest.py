"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from phiguard.clock import FixedClock
from phiguard.crypto.keyring import Keyring
from phiguard.crypto.providers import LocalKeyFile
from phiguard.records.context import AccessContext, Principal, system_context
from phiguard.records.hooks import ListAuditSink
from phiguard.records.repository import Repository
from phiguard.records.vault import Vault
from phiguard.store import migrate
from phiguard.store.engine import make_engine
from phiguard.system import System, init_home

# Low scrypt cost for tests only: the format and code path are the production ones.
FAST_SCRYPT = {"n": 2**10, "r": 8, "p": 1}
TEST_PASSPHRASE = "test passphrase that is long enough"


@pytest.fixture
def keyfile(tmp_path: Path) -> LocalKeyFile:
    return LocalKeyFile.create(
        tmp_path / "keys" / "kek.json", TEST_PASSPHRASE, scrypt_params=FAST_SCRYPT
    )


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def audit_sink() -> ListAuditSink:
    return ListAuditSink()


@pytest.fixture
def vault(
    tmp_path: Path, keyfile: LocalKeyFile, clock: FixedClock, audit_sink: ListAuditSink
) -> Iterator[Vault]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db' / 'phiguard.db'}")
    migrate.upgrade(engine)
    yield Vault(engine, Keyring(engine, keyfile, clock=clock), clock=clock, audit=audit_sink)
    engine.dispose()


@pytest.fixture
def repo(vault: Vault) -> Repository:
    return vault.repository(system_context())


@pytest.fixture
def operator_ctx() -> AccessContext:
    return AccessContext(principal=Principal(id="ops", kind="operator"), purpose="HOPERAT")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[System, str]]:
    """An initialised production-mode home; yields (system, bootstrap token)."""
    monkeypatch.setenv("PHIGUARD_PASSPHRASE", TEST_PASSPHRASE)
    system, token = init_home(tmp_path / "home")
    yield system, token
    system.close()

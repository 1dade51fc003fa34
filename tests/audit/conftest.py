"""Ledger fixtures: a ledger on its own SQLite file, keyed by the test vault's keyring."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from phiguard.audit.ledger import Ledger
from phiguard.records.vault import Vault

from .helpers import open_ledger


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    return tmp_path / "audit" / "audit.db"


@pytest.fixture
def ledger(ledger_path: Path, vault: Vault) -> Iterator[Ledger]:
    led = open_ledger(ledger_path, vault.keyring, checkpoint_every=16)
    yield led
    led.close()
    led.engine.dispose()

"""Streaming: an access appended to the ledger becomes a stored alert within seconds."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest

from phiguard.audit.sink import LedgerSink
from phiguard.identity.accounts import Accounts
from phiguard.identity.passwords import PasswordHashing
from phiguard.monitor.watch import Watcher
from phiguard.monitor.workflow import Workflow
from phiguard.records.context import system_context
from phiguard.records.vault import Vault
from phiguard.system import System
from tests.monitor.sources.test_ledger import CHEAP, PASSWORD, Everyone, user

LOOSE_LATENCY = 5.0  # seconds; the target is 2 s, measured precisely in the benchmark


@pytest.fixture
def hospital(home: tuple[System, str]) -> tuple[System, str]:
    system, _token = home
    repo = system.vault.repository(system_context())
    patient = repo.create({"resourceType": "Patient", "name": [{"family": "Doe"}]})
    accounts = Accounts.from_system(system, hashing=PasswordHashing(CHEAP))
    accounts.add("u00009", "Ex Employee", "ex@hospital.example", ["nurse"], PASSWORD, by="op/t")
    accounts.terminate("u00009", by="op/t", when=system.clock.now() - dt.timedelta(days=10))
    return system, patient.id


def test_an_access_after_termination_is_alerted_within_seconds(
    hospital: tuple[System, str],
) -> None:
    system, patient_id = hospital
    watcher = Watcher(system, poll=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        time.sleep(0.3)  # the watcher is polling
        users = Vault(
            system.engine, system.keyring, policy=Everyone(), audit=LedgerSink(system.ledger)
        )
        appended = time.monotonic()
        users.repository(user("u00009")).read("Patient", patient_id)
        flow = Workflow.from_system(system)
        found = []
        while time.monotonic() - appended < LOOSE_LATENCY * 2 and not found:
            found = flow.queue(user_id="u00009")
            time.sleep(0.02)
        latency = time.monotonic() - appended
    finally:
        stop.set()
        thread.join(10)
    assert found, "no alert was raised"
    assert found[0].detector == "terminated-user" and found[0].patient_ids == (patient_id,)
    assert latency < LOOSE_LATENCY, f"alert after {latency:.2f} s"
    assert watcher.stats.alerts == [found[0].alert_id]


def test_the_cursor_survives_a_restart_and_nothing_is_raised_twice(
    hospital: tuple[System, str],
) -> None:
    system, patient_id = hospital
    first = Watcher(system, poll=0.1)
    users = Vault(system.engine, system.keyring, policy=Everyone(), audit=LedgerSink(system.ledger))
    users.repository(user("u00009")).read("Patient", patient_id)
    saved = first.step()
    assert saved is not None and len(saved.new_alerts) == 1
    position = first.cursor
    # A new watcher resumes at the stored cursor: the same entries are not read again.
    second = Watcher(system, poll=0.1)
    assert second.cursor == position
    assert second.step() is None or second.stats.alerts == []
    assert len(Workflow.from_system(system).queue(user_id="u00009")) == 1

"""The relationship index on PostgreSQL: concurrent writers of one patient's resources.

Each write rewrites the patient's one sealed row (read, change, reseal).  Two
transactions doing that at once must not lose each other's facts or fail on the
row's primary key; the index serialises them with a transaction-scoped advisory lock
per patient.  Without it this test fails (a unique violation, or a lost fact).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from phiguard.store.engine import now_us
from tests.support.postgres import fresh_database, shared_postgres

from .world import World, build_world

WRITERS = 4
ROUNDS = 6


def _canonical(fact: dict[str, Any]) -> str:
    return json.dumps(fact, sort_keys=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with shared_postgres() as server, fresh_database(server, "access") as url:
        w = build_world(tmp_path_factory.mktemp("pg-index"), patients=8, url=url)
        try:
            yield w
        finally:
            w.vault.engine.dispose()


def test_concurrent_writers_of_one_patient_keep_every_fact(world: World) -> None:
    now = world.clock.now()
    enc = world.hospital.encounters[0]
    stored = world.system.read("Encounter", enc.id).resource
    assert stored is not None
    template: dict[str, Any] = {k: v for k, v in copy.deepcopy(stored).items() if k != "meta"}
    pid = enc.patient_id
    ids = [f"concurrent-{n}" for n in range(WRITERS)]
    barrier = threading.Barrier(WRITERS)
    errors: list[BaseException] = []

    def writer(rid: str) -> None:
        try:
            barrier.wait()
            for day in range(ROUNDS):
                body = {
                    **template,
                    "id": rid,
                    "period": {
                        "start": (now - dt.timedelta(days=day + 2)).isoformat(),
                        "end": (now - dt.timedelta(days=day + 1)).isoformat(),
                    },
                }
                world.system.update("Encounter", rid, body)
        except BaseException as exc:  # reported below, with the thread's own error
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(rid,)) for rid in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    facts = world.access.index.load([pid])[pid].facts
    # Every writer's encounter is in the row, with the period of its last write ...
    last = now_us(now - dt.timedelta(days=ROUNDS + 1))
    assert sum(f["t"] == "Encounter" and f["b"] == last for f in facts) == WRITERS
    # ... and the row says exactly what the resources say.
    derived = world.access.index.rebuild_patient(pid).facts
    assert sorted(map(_canonical, facts)) == sorted(map(_canonical, derived))

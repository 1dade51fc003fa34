"""The relationship index: one sealed row per patient, kept in step with every write.

Also the caches built on it: a change written by another process counts within the
cache lifetime, an unchanged row is re-checked by its change tag without being
unsealed, and a shredded patient's row goes with their keys, so every process lets
the facts go.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import insert, select

from phiguard.access.index import DERIVE_ACTION, NO_ROW, UNREADABLE, RelationshipIndex
from phiguard.access.wiring import AccessServices, build_access
from phiguard.clock import FixedClock
from phiguard.crypto.envelope import aad
from phiguard.crypto.keyring import Keyring
from phiguard.crypto.providers import LocalKeyFile
from phiguard.records.context import Principal, system_context
from phiguard.records.maintenance import shred_patient
from phiguard.records.vault import Vault
from phiguard.store.engine import make_engine
from phiguard.store.tables import access_facts

from .world import PASSPHRASE, World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("index"), patients=30)
    yield w
    w.vault.engine.dispose()


def _resource(world: World, rtype: str, rid: str) -> dict[str, Any]:
    stored = world.system.read(rtype, rid).resource
    assert stored is not None
    body = copy.deepcopy(stored)
    body.pop("meta", None)
    return body


def _new_patient(world: World, pid: str) -> str:
    """A new Patient (neither VIP nor staff) with no other resource."""
    h = world.hospital
    plain = next(p for p in h.patients if not p.vip and p.patient_id not in h.staff_by_patient_id)
    body = _resource(world, "Patient", plain.patient_id)
    body["id"] = pid
    world.system.update("Patient", pid, body)
    return pid


def _recent_encounter(world: World) -> tuple[dict[str, Any], Principal]:
    """A copy of an encounter moved to yesterday, and its first (active) user."""
    now = world.clock.now()
    enc = next(
        e
        for e in world.hospital.encounters
        if world.hospital.staff_by_user_id[e.user_ids[0]].active_on(now.date())
    )
    body = _resource(world, "Encounter", enc.id)
    body["period"] = {
        "start": (now - dt.timedelta(days=2)).isoformat(),
        "end": (now - dt.timedelta(days=1)).isoformat(),
    }
    return body, world.ctx(enc.user_ids[0]).principal


def _rows(world: World) -> int:
    with world.vault.engine.connect() as conn:
        return len(conn.execute(select(access_facts.c.patient_key)).all())


def test_the_row_binding_is_the_canonical_encoding(world: World) -> None:
    index = world.access.index
    key = index.patient_key("some-patient")
    assert len(key) == 16 and key != index.patient_key("some-patient2")
    assert index._aad(key, "Patient/some-patient") == aad(
        world.vault.tenant, "access-facts", key, "Patient/some-patient"
    )


def test_a_bulk_write_leaves_one_row_per_patient(world: World) -> None:
    before = _rows(world)
    template, who = _recent_encounter(world)
    pid = _new_patient(world, "bulk-patient")
    encounters = []
    for n in range(4):
        enc = copy.deepcopy(template)
        enc["id"] = f"bulk-enc-{n}"
        enc["subject"] = {"reference": f"Patient/{pid}"}
        encounters.append(enc)
    world.system.put_many(encounters)
    assert _rows(world) == before + 1
    facts = world.access.index.load([pid])[pid].facts
    assert sorted(f["t"] for f in facts) == ["Encounter"] * 4 + ["Patient"]
    assert world.access.attributes.relationship(who, pid).recent_encounter


@pytest.mark.parametrize("bulk", [False, True])
def test_a_moved_encounter_leaves_its_former_patient(world: World, bulk: bool) -> None:
    attrs = world.access.attributes
    enc, who = _recent_encounter(world)
    first = _new_patient(world, f"move-a-{bulk}")
    second = _new_patient(world, f"move-b-{bulk}")
    enc["id"] = f"moving-{bulk}"
    enc["subject"] = {"reference": f"Patient/{first}"}
    world.system.update("Encounter", enc["id"], enc)
    assert attrs.relationship(who, first).recent_encounter
    assert not attrs.relationship(who, second).recent_encounter

    enc["subject"] = {"reference": f"Patient/{second}"}
    if bulk:
        world.system.put_many([enc])
    else:
        world.system.update("Encounter", enc["id"], enc)
    assert not attrs.relationship(who, first).recent_encounter
    assert attrs.relationship(who, second).recent_encounter
    assert world.access.index.load([first])[first].facts == (
        {"t": "Patient", "vip": False, "emp": False},
    )

    world.system.delete("Encounter", enc["id"])
    assert not attrs.relationship(who, second).recent_encounter


def test_change_tags_are_drawn_not_counted(world: World) -> None:
    index = world.access.index
    pid = _new_patient(world, "tagged")
    tags = [index.change_tags([pid])[pid]]
    for _ in range(3):
        world.system.update("Patient", pid, _resource(world, "Patient", pid))
        tags.append(index.change_tags([pid])[pid])
    assert len(set(tags)) == 4
    assert all(abs(b - a) > 1 for a, b in itertools.pairwise(tags))
    assert index.load([pid])[pid].change_tag == tags[-1]


def _second_process(world: World) -> tuple[AccessServices, FixedClock]:
    """The same store opened again, as another server process would."""
    assert world.root is not None
    clock = FixedClock(world.clock.now())
    engine = make_engine(str(world.vault.engine.url))
    provider = LocalKeyFile(world.root / "kek.json", PASSPHRASE)
    vault = Vault(engine, Keyring(engine, provider, clock=clock), clock=clock)
    return build_access(vault), clock


def test_another_process_sees_a_change_within_the_cache_lifetime(world: World) -> None:
    enc, who = _recent_encounter(world)
    pid = _new_patient(world, "elsewhere")
    enc["id"] = "elsewhere-enc"
    enc["subject"] = {"reference": f"Patient/{pid}"}
    world.system.update("Encounter", enc["id"], enc)
    other, clock = _second_process(world)
    try:
        attrs = other.attributes
        loads: list[list[str]] = []
        load, load_one = other.index.load, other.index.load_one

        def counting(ids: Any) -> Any:
            loads.append(list(ids))
            return load(ids)

        def counting_one(pid: str) -> Any:
            loads.append([pid])
            return load_one(pid)

        other.index.load = counting  # type: ignore[method-assign]
        other.index.load_one = counting_one  # type: ignore[method-assign]
        assert attrs.relationship(who, pid).recent_encounter
        assert loads == [[pid]]

        # Unchanged: once the ttl has passed the tag is compared, nothing is unsealed.
        clock.set(clock.now() + attrs.ttl)
        assert attrs.relationship(who, pid).recent_encounter
        assert loads == [[pid]]

        # Entered in error, written by "this" process: the other one still answers from
        # its cache until the ttl has passed, then reads the changed row.
        enc["status"] = "entered-in-error"
        world.system.update("Encounter", enc["id"], enc)
        assert not world.access.attributes.relationship(who, pid).recent_encounter
        assert attrs.relationship(who, pid).recent_encounter
        clock.set(clock.now() + attrs.ttl - dt.timedelta(microseconds=1))
        assert attrs.relationship(who, pid).recent_encounter
        clock.set(clock.now() + dt.timedelta(microseconds=1))
        assert not attrs.relationship(who, pid).recent_encounter
        assert loads == [[pid], [pid]]
    finally:
        other.index.reader.close()
        other.attributes.vault.engine.dispose()


def test_shredding_deletes_the_row_and_every_process_lets_the_facts_go(world: World) -> None:
    attrs = world.access.attributes
    enc, who = _recent_encounter(world)
    pid = _new_patient(world, "to-shred")
    enc["id"] = "to-shred-enc"
    enc["subject"] = {"reference": f"Patient/{pid}"}
    world.system.update("Encounter", enc["id"], enc)
    other, clock = _second_process(world)
    try:
        assert attrs.relationship(who, pid).recent_encounter
        assert other.attributes.relationship(who, pid).recent_encounter
        rows = _rows(world)
        c = access_facts.c
        with world.vault.engine.connect() as conn:
            found = conn.execute(
                select(access_facts).where(c.patient_key == world.access.index.patient_key(pid))
            ).one()
        kept = dict(found._mapping)
        shred_patient(world.vault, system_context(), pid)
        # The row went with the keys, in the shredding transaction.
        assert _rows(world) == rows - 1
        assert world.access.index.change_tags([pid])[pid] == NO_ROW
        # This process forgot at once; the other one at its next re-check.
        assert not attrs.relationship(who, pid).recent_encounter
        assert other.attributes.relationship(who, pid).recent_encounter
        clock.set(clock.now() + other.attributes.ttl)
        assert not other.attributes.relationship(who, pid).recent_encounter
        assert world.access.index.load([pid])[pid].facts == ()

        # A row left behind (restored from a copy taken before the shredding) can
        # never be opened again: it reads as unreadable and gives no facts.
        with world.vault.engine.begin() as conn:
            conn.execute(insert(access_facts), [kept])
        assert world.access.index.change_tags([pid])[pid] == UNREADABLE
        assert world.access.index.load([pid])[pid].facts == ()
        assert not attrs.relationship(who, pid).recent_encounter
    finally:
        other.index.reader.close()
        other.attributes.vault.engine.dispose()


def test_the_index_is_rebuilt_the_same(world: World) -> None:
    index: RelationshipIndex = world.access.index
    pids = [p.patient_id for p in world.hospital.patients]
    before = {p: sorted(map(repr, r.facts)) for p, r in index.load(pids).items()}
    seen = len(world.audit.events)
    rebuilt = index.rebuild_all(batch=7)
    assert rebuilt >= len(pids)
    # Recorded before the reads, a batch per event, every patient named once.
    derived = [e for e in world.audit.events[seen:] if e.action == DERIVE_ACTION]
    assert len(derived) == -(-rebuilt // 7)
    named = [p for e in derived for p in e.patient_ids]
    assert len(named) == rebuilt and set(pids) <= set(named)
    assert all(e.detail["cause"] == "reindex" for e in derived)
    after = {p: sorted(map(repr, r.facts)) for p, r in index.load(pids).items()}
    assert after == before
    assert sum(len(v) for v in after.values()) > len(pids)  # not all empty

"""The store-backed attributes against the synthetic hospital's ground truth.

``HospitalAttributes`` states what each flag means; ``StoreAttributes`` must give the
same answers from the relationship index built while the hospital was imported.
Also: what the index keeps on disk, consent directives, shredding and rebuilds.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from phiguard.access.attributes import HospitalAttributes
from phiguard.access.index import DERIVE_ACTION
from phiguard.crypto.envelope import OVERHEAD
from phiguard.records.context import Principal, system_context
from phiguard.records.maintenance import shred_patient
from phiguard.store.tables import access_facts, access_practitioner_roles
from phiguard.synth.fhir import consent_denying

from .world import World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("store-attributes"))
    yield w
    w.vault.engine.dispose()


def _moments(world: World) -> list[dt.datetime]:
    h = world.hospital
    base = dt.datetime.combine(h.start, dt.time(12), tzinfo=dt.UTC)
    return [base + dt.timedelta(days=d) for d in (40, 120, h.days // 2, 300)]


def test_relationships_match_the_ground_truth(world: World) -> None:
    h = world.hospital
    rng = random.Random(3)
    attrs = world.access.attributes
    compared = flags = 0
    saved = world.clock.now()
    try:
        for moment in _moments(world):
            world.clock.set(moment)
            attrs.invalidate()
            truth = HospitalAttributes(h, world.clock, window=attrs.window)
            today = moment.date()
            pairs = [(e.user_ids[0], e.patient_id) for e in h.encounters]
            pairs += [(a.user_id, a.patient_id) for a in h.appointments]
            pairs += [(t.user_ids[0], t.patient_id) for t in h.care_teams]
            pairs += [
                (rng.choice(h.staff).user_id, rng.choice(h.patients).patient_id) for _ in range(300)
            ]
            for uid, pid in rng.sample(pairs, min(600, len(pairs))):
                staff = h.staff_by_user_id[uid]
                if not staff.active_on(today) or not staff.active_on(saved.date()):
                    continue  # the users table holds one status: the one of the world's day
                who = Principal(id=uid, kind="user", roles=frozenset({staff.role}))
                expected = truth.relationship(who, pid)
                assert attrs.relationship(who, pid) == expected, (uid, pid, moment)
                assert attrs.patient(pid) == truth.patient(pid), (pid, moment)
                compared += 1
                flags += expected.on_care_team + expected.recent_encounter
    finally:
        world.clock.set(saved)
        attrs.invalidate()
    assert compared > 500 and flags > 100  # the comparison saw real relationships


def test_flags_vip_and_employee_come_from_the_patient(world: World) -> None:
    attrs = world.access.attributes
    vip = [p.patient_id for p in world.hospital.patients if p.vip]
    staff_patients = list(world.hospital.staff_by_patient_id)
    assert vip and staff_patients
    assert all(attrs.patient(p).vip for p in vip)
    assert all(attrs.patient(p).employee for p in staff_patients)
    plain = next(
        p.patient_id
        for p in world.hospital.patients
        if not p.vip and p.patient_id not in world.hospital.staff_by_patient_id
    )
    assert not attrs.patient(plain).vip and not attrs.patient(plain).employee


def test_the_index_names_no_patient_practitioner_or_date(world: World) -> None:
    h = world.hospital
    with world.vault.engine.connect() as conn:
        rows = conn.execute(select(access_facts)).all()
    # One row per patient, whatever the number of their encounters and teams.
    assert len(rows) == len(h.patients)
    assert len({bytes(r.patient_key) for r in rows}) == len(rows)
    # The sealed facts are padded: the length tells little about how many there are.
    assert all((len(bytes(r.body)) - OVERHEAD) % 256 == 0 for r in rows)
    assert len({len(bytes(r.body)) for r in rows}) < len(rows) // 4
    blob = b"".join(bytes(r.patient_key) + bytes(r.body) for r in rows)
    probes = [p.patient_id for p in h.patients[:20]] + [s.practitioner_id for s in h.staff[:20]]
    probes += [e.start.date().isoformat() for e in h.encounters[:20]]
    probes += [d.id for d in h.departments]
    for probe in probes:
        assert probe.encode() not in blob, probe
    # The staff directory map is not PHI and stays readable.
    with world.vault.engine.connect() as conn:
        roles = conn.execute(select(access_practitioner_roles)).all()
    assert len(roles) == len(h.staff)


def _put(world: World, resource: dict[str, Any]) -> None:
    world.system.update(resource["resourceType"], resource["id"], resource)


def test_consent_denies_named_practitioner_and_purpose(world: World) -> None:
    h = world.hospital
    team = next(t for t in h.care_teams if t.end is None and len(t.user_ids) >= 2)
    denied, other = (h.staff_by_user_id[u] for u in team.user_ids[:2])
    attrs = world.access.attributes
    assert not attrs.consent_denied(world.ctx(denied), team.patient_id)
    _put(
        world,
        consent_denying(
            "c-" + team.id[:8], team.patient_id, practitioners=(denied.practitioner_id,)
        ),
    )
    assert attrs.consent_denied(world.ctx(denied), team.patient_id)
    assert not attrs.consent_denied(world.ctx(other), team.patient_id)
    _put(world, consent_denying("p-" + team.id[:8], team.patient_id, purposes=("HRESCH",)))
    assert attrs.consent_denied(world.ctx(other, purpose="HRESCH"), team.patient_id)
    assert not attrs.consent_denied(world.ctx(other, purpose="TREAT"), team.patient_id)
    # Withdrawn: an inactive consent denies nothing.
    withdrawn = consent_denying(
        "c-" + team.id[:8],
        team.patient_id,
        practitioners=(denied.practitioner_id,),
        status="inactive",
    )
    _put(world, withdrawn)
    assert not attrs.consent_denied(world.ctx(denied), team.patient_id)


def test_a_row_that_does_not_open_is_rebuilt(world: World) -> None:
    enc = world.hospital.encounters[5]
    attrs = world.access.attributes
    who = world.ctx(enc.user_ids[0]).principal
    key = world.access.index.patient_key(enc.patient_id)
    with world.vault.engine.begin() as conn:
        conn.execute(
            update(access_facts)
            .where(access_facts.c.patient_key == key)
            .values(body=b"\x00" * 40)  # tampered or sealed by a destroyed key version
        )
    attrs.invalidate()
    seen = len(world.audit.events)
    before = HospitalAttributes(world.hospital, world.clock).relationship(who, enc.patient_id)
    assert attrs.relationship(who, enc.patient_id) == before
    # Rebuilding opened the patient's resources: the ledger says so, for that patient.
    derived = [e for e in world.audit.events[seen:] if e.action == DERIVE_ACTION]
    assert [(e.principal, e.patient_ids, e.detail) for e in derived] == [
        ("system/access-index", (enc.patient_id,), {"patients": 1, "cause": "unreadable row"})
    ]
    with world.vault.engine.connect() as conn:
        bodies = [
            bytes(b)
            for (b,) in conn.execute(
                select(access_facts.c.body).where(access_facts.c.patient_key == key)
            )
        ]
    assert bodies and all(b != b"\x00" * 40 for b in bodies)


def test_shredding_a_patient_leaves_no_relationship(world: World, tmp_path: Path) -> None:
    h = world.hospital
    team = next(t for t in h.care_teams if t.end is None)
    who = world.ctx(team.user_ids[0]).principal
    attrs = world.access.attributes
    assert attrs.relationship(who, team.patient_id).on_care_team
    shred_patient(world.vault, system_context(), team.patient_id)
    attrs.invalidate()
    assert not attrs.relationship(who, team.patient_id).on_care_team

"""Enforcement in the repository, with the store-backed attributes and the shipped policies.

Every interaction of a real ``Repository`` over a seeded hospital: what a user may
read is returned masked; what they may not answers exactly like a missing id; search,
history and ``$everything`` decide each result; updates keep masked fields and refuse
read-only ones; SMART ``patient/`` scopes stay on their launch patient; consent holds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from phiguard.access.masks import REDACTED
from phiguard.errors import AccessDenied, NotFound
from phiguard.synth.fhir import SSN_SYSTEM, consent_denying
from phiguard.synth.model import Condition, StaffMember

from .world import World, build_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("enforcement"))
    yield w
    w.vault.engine.dispose()


def _recent_condition(world: World, *, sensitive: bool) -> tuple[Condition, StaffMember]:
    """A condition whose encounter's attending is active and within the window now."""
    h, now = world.hospital, world.clock.now()
    for c in h.conditions:
        if (c.sensitivity is not None) != sensitive:
            continue
        enc = h.encounter_by_id[c.encounter_id]
        attending = h.staff_by_user_id[enc.user_ids[0]]
        recent = enc.start <= now and enc.end >= now - dt.timedelta(days=25)
        if recent and attending.active_on(now.date()) and attending.role == "physician":
            return c, attending
    raise AssertionError("the hospital has no such condition")


def _stranger(world: World, *avoid: str) -> StaffMember:
    """An active physician with no relationship at all to the patients in ``avoid``."""
    attrs = world.access.attributes
    for s in world.hospital.staff:
        if s.role != "physician" or not s.active_on(world.clock.now().date()):
            continue
        ctx = world.ctx(s)
        if all(
            attrs.relationship(ctx.principal, p)
            == attrs.relationship(world.ctx("nobody").principal, p)
            for p in avoid
        ):
            return s
    raise AssertionError("no stranger")


def _not_found_text(world: World, call: Any) -> str:
    with pytest.raises(NotFound) as info:
        call()
    return str(info.value)


def test_hidden_reads_answer_like_absent_ids(world: World) -> None:
    cond, attending = _recent_condition(world, sensitive=True)
    stranger = _stranger(world, cond.patient_id)
    assert world.repo(attending).read("Condition", cond.id).resource is not None
    repo = world.repo(stranger)
    ghost = "0" * 8 + cond.id[8:]
    for call, missing in (
        (lambda: repo.read("Condition", cond.id), lambda: repo.read("Condition", ghost)),
        (lambda: repo.vread("Condition", cond.id, 1), lambda: repo.vread("Condition", ghost, 1)),
        (lambda: repo.history("Condition", cond.id), lambda: repo.history("Condition", ghost)),
        (
            lambda: repo.everything(cond.patient_id),
            lambda: repo.everything("0" * 8 + cond.patient_id[8:]),
        ),
    ):
        hidden = _not_found_text(world, call)
        absent = _not_found_text(world, missing)
        assert hidden.replace(cond.id, "X").replace(cond.patient_id, "X") == absent.replace(
            ghost, "X"
        ).replace("0" * 8 + cond.patient_id[8:], "X")
    # The ledger has the real reason.
    denied = [e for e in world.audit.events if e.outcome == "denied" and e.resource_id == cond.id]
    assert denied and denied[0].detail["reasons"]


def test_search_returns_only_what_read_allows_and_counts_only_that(world: World) -> None:
    cond, attending = _recent_condition(world, sensitive=False)
    stranger = _stranger(world, cond.patient_id)
    items = [("patient", cond.patient_id)]
    everything = world.system.search("Condition", items)
    mine = world.repo(attending).search("Condition", items)
    theirs = world.repo(stranger).search("Condition", items)
    assert everything.total and mine.total and mine.total <= everything.total
    assert theirs.total == 0 and theirs.entries == [] and not theirs.more
    for s in mine.entries:
        assert world.repo(attending).read(s.resource_type, s.id).resource == s.resource
    count = world.repo(attending).search("Condition", [*items, ("_summary", "count")])
    assert count.total == mine.total and count.entries == []
    # Paging over what is visible: one per page, ``more`` until the last.
    pages = []
    for offset in range(mine.total + 1):
        page = world.repo(attending).search(
            "Condition", [*items, ("_count", "1"), ("_offset", str(offset))]
        )
        pages.extend(page.entries)
        assert page.more == (offset + 1 < mine.total)
    assert [p.id for p in pages] == [p.id for p in mine.entries]


def test_masks_on_every_read_path(world: World) -> None:
    cond, attending = _recent_condition(world, sensitive=False)
    repo = world.repo(attending)
    patient = repo.read("Patient", cond.patient_id).resource
    assert patient is not None
    systems = {i.get("system") for i in patient.get("identifier", [])}
    assert SSN_SYSTEM not in systems and REDACTED in patient["meta"]["security"]
    searched = repo.search("Patient", [("_id", cond.patient_id)]).entries[0].resource
    everything = {s.resource_type: s.resource for s in repo.everything(cond.patient_id)}
    history = repo.history("Patient", cond.patient_id)[0].resource
    for shown in (
        searched,
        everything["Patient"],
        history,
        repo.vread("Patient", cond.patient_id, 1).resource,
    ):
        assert shown is not None
        assert SSN_SYSTEM not in {i.get("system") for i in shown.get("identifier", [])}
    stored = world.system.read("Patient", cond.patient_id).resource
    assert stored is not None and SSN_SYSTEM in {i.get("system") for i in stored["identifier"]}


def test_updates_keep_masked_fields_and_refuse_read_only_ones(world: World) -> None:
    cond, attending = _recent_condition(world, sensitive=False)
    repo = world.repo(attending)
    shown = repo.read("Patient", cond.patient_id).resource
    assert shown is not None
    # Allowed: a clinical detail; the SSN the physician never saw is kept as stored.
    changed = {**shown, "communication": [{"language": {"text": "Esperanto"}}]}
    repo.update("Patient", cond.patient_id, changed)
    stored = world.system.read("Patient", cond.patient_id).resource
    assert stored is not None
    assert SSN_SYSTEM in {i.get("system") for i in stored["identifier"]}
    assert REDACTED not in stored["meta"].get("security", [])
    assert stored["communication"][0]["language"]["text"] == "Esperanto"
    # Refused: identity is registration's record; the message names the field only.
    renamed = {**repo.read("Patient", cond.patient_id).resource, "name": [{"family": "Other"}]}  # type: ignore[dict-item]
    with pytest.raises(AccessDenied, match=r"^name may not be changed"):
        repo.update("Patient", cond.patient_id, renamed)
    # Refused: dropping a label from a sensitive record a clinician may see.
    scond, sattending = _recent_condition(world, sensitive=True)
    body = world.repo(sattending).read("Condition", scond.id).resource
    assert body is not None
    unlabelled = {**body, "meta": {}}
    with pytest.raises(AccessDenied, match=r"meta\.security"):
        world.repo(sattending).update("Condition", scond.id, unlabelled)
    still = world.system.read("Condition", scond.id).resource
    assert still is not None and still["meta"]["security"] == body["meta"]["security"]


def test_writes_to_hidden_resources_answer_like_absent_ids(world: World) -> None:
    cond, attending = _recent_condition(world, sensitive=True)
    stranger = _stranger(world, cond.patient_id)
    body = world.system.read("Condition", cond.id).resource
    assert body is not None
    repo = world.repo(stranger)
    with pytest.raises(NotFound):
        repo.update("Condition", cond.id, body)
    with pytest.raises(NotFound):
        repo.delete("Condition", cond.id)
    with pytest.raises(AccessDenied):  # visible to the attending, but nobody deletes
        world.repo(attending).delete("Condition", cond.id)
    assert world.system.read("Condition", cond.id).version == 1


def test_patient_scoped_tokens_stay_on_their_launch_patient(world: World) -> None:
    cond, attending = _recent_condition(world, sensitive=False)
    other_cond = (
        next(
            c
            for c in world.hospital.conditions
            if c.patient_id != cond.patient_id
            and c.sensitivity is None
            and world.repo(attending).search("Condition", [("_id", c.id)]).entries
        )
        if False
        else None
    )
    scopes = frozenset({"patient/Condition.rs", "patient/Patient.rs"})
    bound = world.repo(attending, scopes=scopes, launch_patient=cond.patient_id)
    assert bound.read("Condition", cond.id).resource is not None
    unbound = world.repo(attending, scopes=scopes, launch_patient="someone-else")
    with pytest.raises(NotFound):
        unbound.read("Condition", cond.id)
    assert unbound.search("Condition", [("patient", cond.patient_id)]).total == 0
    no_launch = world.repo(attending, scopes=scopes)
    with pytest.raises(NotFound):
        no_launch.read("Patient", cond.patient_id)
    assert other_cond is None


def test_consent_is_enforced_not_advisory(world: World) -> None:
    cond, attending = _recent_condition(world, sensitive=False)
    repo = world.repo(attending)
    assert repo.read("Condition", cond.id).resource is not None
    consent = consent_denying(
        "deny-" + cond.id[:8], cond.patient_id, practitioners=(attending.practitioner_id,)
    )
    world.system.update("Consent", consent["id"], consent)
    try:
        with pytest.raises(NotFound):
            repo.read("Condition", cond.id)
        assert repo.search("Condition", [("patient", cond.patient_id)]).total == 0
    finally:
        world.system.delete("Consent", consent["id"])
    assert repo.read("Condition", cond.id).resource is not None

"""Break-the-glass through the service and the repository: declared, used, expired, reviewed."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from phiguard.access import breakglass
from phiguard.access.breakglass import BreakGlassError, Grant
from phiguard.errors import NotFound
from phiguard.store.tables import access_break_glass

from .world import World, build_world

REASON = "Unconscious in the emergency department, no history available"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = build_world(tmp_path_factory.mktemp("break-glass"))
    w.add_user("po1", ["privacy_officer"])
    w.add_user("billing1", ["billing"])
    yield w
    w.vault.engine.dispose()


def _case(world: World) -> tuple[str, str, str]:
    """(a physician, a sensitive condition of a patient unrelated to them, that patient)."""
    h, attrs = world.hospital, world.access.attributes
    today = world.clock.now().date()
    doctor = next(s for s in h.staff if s.role == "physician" and s.active_on(today))
    for c in h.conditions:
        rel = attrs.relationship(world.ctx(doctor).principal, c.patient_id)
        if c.sensitivity is not None and not (
            rel.on_care_team or rel.recent_encounter or rel.department_match
        ):
            return doctor.user_id, c.id, c.patient_id
    raise AssertionError("no unrelated sensitive condition")


def _rows(world: World) -> int:
    with world.vault.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(access_break_glass)).scalar_one())


def test_bad_declarations_are_refused_and_change_nothing(world: World) -> None:
    service = world.access.break_glass
    doctor, _cid, pid = _case(world)
    before, events = _rows(world), len(world.audit.events)
    cases = [
        (
            dict(user_id=doctor, patient_id=pid, reason=REASON, reauthenticated=False),
            "re-authenticate",
        ),
        (dict(user_id=doctor, patient_id=pid, reason="  ", reauthenticated=True), "reason"),
        (dict(user_id=doctor, patient_id=pid, reason="urgent", reauthenticated=True), "reason"),
        (
            dict(
                user_id=doctor, patient_id=pid, reason=REASON, reauthenticated=True, purpose="TREAT"
            ),
            "purpose",
        ),
        (
            dict(
                user_id=doctor,
                patient_id=pid,
                reason=REASON,
                reauthenticated=True,
                principal_kind="client",
            ),
            "application",
        ),
        (
            dict(user_id="billing1", patient_id=pid, reason=REASON, reauthenticated=True),
            "physicians and nurses",
        ),
        (
            dict(user_id="nobody", patient_id=pid, reason=REASON, reauthenticated=True),
            "no active account",
        ),
        (
            dict(user_id=doctor, patient_id="../etc", reason=REASON, reauthenticated=True),
            "patient id",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(BreakGlassError, match=message):
            service.declare(**kwargs)  # type: ignore[arg-type]
    assert _rows(world) == before and len(world.audit.events) == events


def test_declared_used_for_that_patient_only_then_expires(world: World) -> None:
    service = world.access.break_glass
    doctor, cid, pid = _case(world)
    btg = world.repo(doctor, purpose="BTG")
    with pytest.raises(NotFound):
        btg.read("Condition", cid)
    seen: list[Grant] = []
    breakglass.on_break_glass.append(seen.append)
    try:
        grant = service.declare(doctor, pid, REASON, reauthenticated=True, source="test")
    finally:
        breakglass.on_break_glass.remove(seen.append)
    assert seen == [grant] and grant.expires_at - grant.declared_at == dt.timedelta(minutes=60)
    declared = world.audit.events[-1]
    assert (declared.action, declared.purpose, declared.patient_ids, declared.break_glass) == (
        "break-glass",
        "BTG",
        (pid,),
        True,
    )
    # Under the grant, with the emergency purpose: the restricted record opens and the
    # ledger entry says break-the-glass.
    assert btg.read("Condition", cid).resource is not None
    used = world.audit.events[-1]
    assert (used.action, used.outcome, used.purpose, used.break_glass) == (
        "read",
        "success",
        "BTG",
        True,
    )
    assert btg.search("Condition", [("patient", pid)]).entries
    # Not with a treatment purpose, not for another patient, never a write.
    with pytest.raises(NotFound):
        world.repo(doctor, purpose="TREAT").read("Condition", cid)
    other = next(c for c in world.hospital.conditions if c.patient_id != pid and c.sensitivity)
    rel = world.access.attributes.relationship(world.ctx(doctor).principal, other.patient_id)
    if not (rel.on_care_team or rel.recent_encounter):
        with pytest.raises(NotFound):
            btg.read("Condition", other.id)
    # Expiry: a minute after the hour, the same request answers as absent again.
    saved = world.clock.now()
    try:
        world.clock.set(grant.expires_at - dt.timedelta(seconds=1))
        assert btg.read("Condition", cid).resource is not None
        world.clock.set(grant.expires_at + dt.timedelta(minutes=1))
        with pytest.raises(NotFound):
            btg.read("Condition", cid)
    finally:
        world.clock.set(saved)


def test_review_stays_open_until_another_privacy_officer_closes_it(world: World) -> None:
    service = world.access.break_glass
    doctor, _cid, pid = _case(world)
    grant = service.declare(doctor, pid, REASON, reauthenticated=True)
    assert grant.grant_id in {g.grant_id for g in service.list("open")}
    assert service.get(grant.grant_id).reason == REASON
    with pytest.raises(BreakGlassError, match="someone else"):
        service.close(grant.grant_id, doctor, "I reviewed myself", reauthenticated=True)
    with pytest.raises(BreakGlassError, match="privacy officer"):
        service.close(grant.grant_id, "billing1", "looks fine", reauthenticated=True)
    with pytest.raises(BreakGlassError, match="re-authenticate"):
        service.close(grant.grant_id, "po1", "looks fine", reauthenticated=False)
    with pytest.raises(BreakGlassError, match="note"):
        service.close(grant.grant_id, "po1", " ", reauthenticated=True)
    assert service.get(grant.grant_id).review_status == "open"
    closed = service.close(
        grant.grant_id, "po1", "Emergency confirmed by ED log", reauthenticated=True
    )
    assert (closed.review_status, closed.reviewed_by) == ("closed", "po1")
    assert closed.note == "Emergency confirmed by ED log"
    assert grant.grant_id not in {g.grant_id for g in service.list("open")}
    with pytest.raises(BreakGlassError, match="already closed"):
        service.close(grant.grant_id, "po1", "again", reauthenticated=True)
    # Closing the review ended that grant's access (earlier grants run their own course).
    with world.vault.engine.connect() as conn:
        ended = conn.execute(
            select(access_break_glass.c.ended_at).where(
                access_break_glass.c.grant_id == grant.grant_id
            )
        ).scalar_one()
    assert ended is not None


def test_a_failing_subscriber_is_recorded_and_the_grant_stands(world: World) -> None:
    doctor, _cid, pid = _case(world)

    def broken(_grant: Grant) -> None:
        raise OSError("mail server down")

    breakglass.on_break_glass.append(broken)
    try:
        grant = world.access.break_glass.declare(doctor, pid, REASON, reauthenticated=True)
    finally:
        breakglass.on_break_glass.remove(broken)
    assert world.audit.events[-1].action == "break-glass-notify"
    assert world.audit.events[-1].detail == {"grant": grant.grant_id, "error": "OSError"}
    assert world.access.break_glass.get(grant.grant_id).review_status == "open"

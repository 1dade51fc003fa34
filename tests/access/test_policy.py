"""CedarPolicy: (AccessContext, AccessRequest) + attributes -> facts -> decision."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from phiguard.access.attributes import (
    NO_RELATIONSHIP,
    HospitalAttributes,
    Relationship,
)
from phiguard.access.engine import PolicyEngine
from phiguard.access.labels import has_flag, security_labels
from phiguard.access.policy import CedarPolicy, patient_id_of
from phiguard.access.scopes import scopes_allow
from phiguard.clock import FixedClock
from phiguard.records.context import AccessContext, Principal, system_context
from phiguard.records.hooks import AccessRequest
from phiguard.synth.hospital import generate_hospital
from phiguard.synth.model import Hospital

from .fakes import FakeAttributes

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"


def user(uid: str, *roles: str, scopes: frozenset[str] | None = None) -> Principal:
    return Principal(id=uid, kind="user", roles=frozenset(roles), scopes=scopes)


def ctx(principal: Principal, purpose: str = "TREAT", break_glass: bool = False) -> AccessContext:
    return AccessContext(principal=principal, purpose=purpose, break_glass=break_glass)


def condition(pid: str, *labels: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": "c1",
        "subject": {"reference": f"Patient/{pid}"},
        "meta": {"security": [{"system": s, "code": c} for s, c in labels]},
        **extra,
    }


@pytest.fixture
def attrs() -> FakeAttributes:
    return FakeAttributes(relationships={("doc", "p1"): Relationship(department_match=True)})


@pytest.fixture
def policy(engine: PolicyEngine, attrs: FakeAttributes) -> CedarPolicy:
    return CedarPolicy(engine, attrs)


def test_labels_come_only_from_the_hl7_systems() -> None:
    res = condition(
        "p1", (ACT, "PSY"), (CONF, "R"), ("urn:other", "HIV"), ("urn:phiguard:flags", "vip")
    )
    assert security_labels(res) == {"PSY", "R"}
    assert has_flag(res, "vip") and not has_flag(res, "employee")
    assert security_labels(None) == frozenset()
    assert security_labels({"meta": {"security": "junk"}}) == frozenset()
    assert security_labels({"meta": [1]}) == frozenset()


def test_patient_of_a_request() -> None:
    assert patient_id_of(AccessRequest("read", "Observation", "o", "Patient/p9")) == "p9"
    assert patient_id_of(AccessRequest("read", "Observation", "o", "shared")) is None
    assert patient_id_of(AccessRequest("create", "Condition", None, None, condition("p2"))) == "p2"
    assert patient_id_of(AccessRequest("read", "Patient", "p3")) == "p3"
    assert patient_id_of(AccessRequest("search", "Observation")) is None


def test_department_reaches_plain_data_not_labelled(policy: CedarPolicy) -> None:
    doc = ctx(user("doc", "physician"))
    plain = AccessRequest("read", "Condition", "c1", "Patient/p1", condition("p1"))
    labelled = AccessRequest("read", "Condition", "c1", "Patient/p1", condition("p1", (ACT, "HIV")))
    assert policy.decide(doc, plain).reasons == ("clinician-department",)
    denied = policy.decide(doc, labelled)
    assert not denied.allowed and denied.reasons == ("sensitive-needs-direct-care",)
    # vread is a read.
    assert policy.decide(doc, AccessRequest("vread", "Condition", "c1", "Patient/p1")).allowed


def test_vip_flag_on_the_patient_resource_counts(policy: CedarPolicy) -> None:
    doc = ctx(user("doc", "physician"))
    vip = {
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"security": [{"system": "urn:phiguard:flags", "code": "vip"}]},
    }
    assert policy.decide(doc, AccessRequest("read", "Patient", "p1", "Patient/p1")).allowed
    assert not policy.decide(doc, AccessRequest("read", "Patient", "p1", "Patient/p1", vip)).allowed


def test_consent_and_break_glass(policy: CedarPolicy, attrs: FakeAttributes) -> None:
    attrs.denied.add("p1")
    req = AccessRequest("read", "Condition", "c1", "Patient/p1", condition("p1"))
    assert policy.decide(ctx(user("doc", "physician")), req).reasons == ("consent-denied",)
    btg = ctx(user("stranger", "nurse"), purpose="BTG", break_glass=True)
    assert policy.decide(btg, req).reasons == ("clinician-break-glass",)


def test_scopes_narrow_what_roles_allow(policy: CedarPolicy) -> None:
    req = AccessRequest("read", "Condition", "c1", "Patient/p1", condition("p1"))
    narrow = user("doc", "physician", scopes=frozenset({"openid", "user/Observation.read"}))
    assert policy.decide(ctx(narrow), req).reasons == ("scopes-narrow",)
    wide = user("doc", "physician", scopes=frozenset({"user/Condition.rs"}))
    assert policy.decide(ctx(wide), req).allowed
    # Scopes never add: a wildcard scope gives a registration clerk no clinical data.
    clerk = user("clerk", "registration", scopes=frozenset({"system/*.cruds"}))
    assert not policy.decide(ctx(clerk), req).allowed


@pytest.mark.parametrize(
    ("scopes", "action", "rtype", "ok"),
    [
        (None, "delete", "Patient", True),
        (set(), "read", "Patient", False),
        ({"user/Patient.read"}, "read", "Patient", True),
        ({"user/Patient.read"}, "search", "Patient", True),
        ({"user/Patient.read"}, "update", "Patient", False),
        ({"user/Patient.write"}, "update", "Patient", True),
        ({"user/*.read"}, "history", "Observation", True),
        ({"patient/*.*"}, "delete", "Observation", True),
        ({"patient/Observation.rs"}, "search", "Observation", True),
        ({"patient/Observation.rs"}, "create", "Observation", False),
        ({"patient/Observation.cud"}, "create", "Observation", True),
        ({"patient/Observation.rs?category=laboratory"}, "read", "Observation", False),
        ({"patient/Observation.sr"}, "read", "Observation", False),  # letters out of order
        ({"user/Observation.read"}, "read", "Condition", False),
        ({"user/Patient.read"}, "frobnicate", "Patient", False),
        ({"launch", "fhirUser"}, "read", "Patient", False),
    ],
)
def test_scope_grammar(scopes: set[str] | None, action: str, rtype: str, ok: bool) -> None:
    assert scopes_allow(scopes, action, rtype) is ok


def test_operators_and_jobs_use_the_fallback(policy: CedarPolicy, attrs: FakeAttributes) -> None:
    req = AccessRequest("read", "Condition", "c1", "Patient/p1", condition("p1"))
    assert policy.decide(system_context(), req).allowed
    operator = AccessContext(principal=Principal(id="ops", kind="operator"), purpose="HOPERAT")
    assert policy.decide(operator, req).allowed
    assert attrs.calls == 0  # no attribute look-ups for non-policy principals


def test_decide_each_filters_results_on_their_own_bodies(policy: CedarPolicy) -> None:
    doc = ctx(user("doc", "physician"))
    results = [condition("p1"), condition("p1", (ACT, "SUD")), condition("p2")]
    decisions = policy.decide_each(doc, "search", results)
    assert [d.allowed for d in decisions] == [True, False, False]


def test_explain_through_the_adapter(policy: CedarPolicy) -> None:
    doc = ctx(user("doc", "physician"))
    text = policy.explain(
        doc, AccessRequest("read", "Condition", "c1", "Patient/p1", condition("p1", (ACT, "PSY")))
    ).text()
    assert text.startswith("DENIED: read Condition labelled PSY")
    assert "clinician-department (overridden)" in text
    assert "- sensitive-needs-direct-care" in text


# -- the synthetic hospital as attribute provider --------------------------------------


@pytest.fixture(scope="module")
def hospital() -> Hospital:
    return generate_hospital(seed=7, patients=300)


def test_hospital_encounter_window_and_expiry(hospital: Hospital) -> None:
    # An encounter that is the only one its attending shares with the patient, with no
    # appointment between them either (an appointment near now counts as well).
    booked = {(a.user_id, a.patient_id) for a in hospital.appointments}
    enc = next(
        e
        for e in hospital.encounters
        if sum(e.user_ids[0] in o.user_ids for o in hospital.encounters_by_patient[e.patient_id])
        == 1
        and (e.user_ids[0], e.patient_id) not in booked
    )
    staff = hospital.staff_by_user_id[enc.user_ids[0]]
    clock = FixedClock(enc.start + dt.timedelta(minutes=5))
    attrs = HospitalAttributes(hospital, clock, window=dt.timedelta(days=30))
    who = Principal(id=staff.user_id, kind="user", roles=frozenset({staff.role}))
    assert attrs.relationship(who, enc.patient_id).recent_encounter
    assert attrs.user(who).department == staff.department_id
    clock.set(enc.end + dt.timedelta(days=29))
    assert attrs.relationship(who, enc.patient_id).recent_encounter
    clock.set(enc.end + dt.timedelta(days=31))  # expired
    assert not attrs.relationship(who, enc.patient_id).recent_encounter
    clock.set(enc.start - dt.timedelta(days=1))  # not yet
    assert not attrs.relationship(who, enc.patient_id).recent_encounter
    nobody = Principal(id="not-staff", kind="user")
    assert attrs.relationship(nobody, enc.patient_id) == NO_RELATIONSHIP


def test_hospital_appointments_count_within_the_window_either_side(hospital: Hospital) -> None:
    appt = next(a for a in hospital.appointments if a.status in ("booked", "fulfilled"))
    staff = hospital.staff_by_user_id[appt.user_id]
    who = Principal(id=staff.user_id, kind="user", roles=frozenset({staff.role}))
    others = [
        e
        for e in hospital.encounters_by_patient.get(appt.patient_id, ())
        if staff.user_id in e.user_ids
    ]
    for offset, expected in ((-29, True), (29, True)):
        clock = FixedClock(appt.start + dt.timedelta(days=offset))
        if not staff.active_on(clock.now().date()):
            continue
        attrs = HospitalAttributes(hospital, clock, window=dt.timedelta(days=30))
        assert attrs.relationship(who, appt.patient_id).recent_encounter is expected
    far = FixedClock(appt.end + dt.timedelta(days=400))
    if not others and staff.active_on(far.now().date()):
        attrs = HospitalAttributes(hospital, far, window=dt.timedelta(days=30))
        booked_again = any(
            a.user_id == staff.user_id
            and a.patient_id == appt.patient_id
            and abs((a.start - far.now()).days) <= 31
            for a in hospital.appointments
        )
        if not booked_again:
            assert not attrs.relationship(who, appt.patient_id).recent_encounter


def test_hospital_care_team_department_and_flags(hospital: Hospital) -> None:
    team = next(t for t in hospital.care_teams if t.end is None)
    member = hospital.staff_by_user_id[team.user_ids[0]]
    clock = FixedClock(dt.datetime.combine(team.start, dt.time(23, 59), tzinfo=dt.UTC))
    attrs = HospitalAttributes(hospital, clock, consent_denied={team.patient_id})
    who = Principal(id=member.user_id, kind="user")
    rel = attrs.relationship(who, team.patient_id)
    assert rel.on_care_team
    facts = attrs.patient(team.patient_id)
    assert facts.department  # admitted on the day the team formed
    assert rel.department_match == (facts.department == member.department_id)
    assert attrs.consent_denied(ctx(who), team.patient_id)
    clock.set(dt.datetime.combine(team.start - dt.timedelta(days=1), dt.time(12), tzinfo=dt.UTC))
    assert not attrs.relationship(who, team.patient_id).on_care_team
    vip = next((p for p in hospital.patients if p.vip), None)
    if vip is not None:
        assert attrs.patient(vip.patient_id).vip
    for pid in hospital.staff_by_patient_id:
        assert attrs.patient(pid).employee


def test_hospital_staff_who_left_have_no_relationships(hospital: Hospital) -> None:
    left = [s for s in hospital.staff if s.termination_date is not None]
    enc = hospital.encounters[0]
    staff = hospital.staff_by_user_id[enc.user_ids[0]]
    attrs = HospitalAttributes(hospital, FixedClock(enc.start + dt.timedelta(minutes=1)))
    who = Principal(id=staff.user_id, kind="user")
    if staff.termination_date is None or staff.termination_date > enc.start.date():
        assert attrs.relationship(who, enc.patient_id).recent_encounter
    for s in left:
        gone = dt.datetime.combine(s.termination_date, dt.time(9), tzinfo=dt.UTC)  # type: ignore[arg-type]
        attrs = HospitalAttributes(hospital, FixedClock(gone))
        for e in hospital.encounters:
            if s.user_id in e.user_ids:
                assert attrs.relationship(Principal(id=s.user_id, kind="user"), e.patient_id) == (
                    NO_RELATIONSHIP
                )


def test_hospital_end_to_end(engine: PolicyEngine, hospital: Hospital) -> None:
    """A physician on an encounter reads the patient's PSY-labelled condition; a colleague
    from another department does not."""
    cond = next(c for c in hospital.conditions if c.sensitivity is not None)
    enc = hospital.encounter_by_id[cond.encounter_id]
    attending = hospital.staff_by_user_id[enc.user_ids[0]]
    other = next(
        s
        for s in hospital.staff
        if s.role == "physician"
        and s.user_id not in enc.user_ids
        and s.department_id != enc.department_id
    )
    clock = FixedClock(enc.end + dt.timedelta(hours=1))
    policy = CedarPolicy(engine, HospitalAttributes(hospital, clock))
    req = AccessRequest(
        "read",
        "Condition",
        cond.id,
        f"Patient/{cond.patient_id}",
        condition(cond.patient_id, (ACT, "PSY"), (CONF, "R")),
    )
    mine = ctx(Principal(id=attending.user_id, kind="user", roles=frozenset({attending.role})))
    theirs = ctx(Principal(id=other.user_id, kind="user", roles=frozenset({"physician"})))
    assert policy.decide(mine, req).allowed
    assert not policy.decide(theirs, req).allowed

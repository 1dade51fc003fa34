"""Relationship detectors: each fires on its case and stays quiet on its look-alike."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.monitor.detectors_world import World, alerts_of, at

DAY = 30  # after the four weeks of routine work


@pytest.mark.parametrize(
    ("detector", "patient", "words"),
    [
        ("family", "p-fam", "surname and address"),
        ("household", "p-house", "the user's address"),
        ("neighbour", "p-neigh", "the user's street"),
        ("surname", "p-name", "the user's surname"),
    ],
)
def test_people_the_user_knows_are_flagged_when_nothing_explains_the_look(
    detector: str, patient: str, words: str
) -> None:
    w = World()
    w.access("u-doc", patient, at(DAY, 10))
    w.access("u-doc", patient, at(DAY, 10, 2), "Condition")
    found = alerts_of(w.scan(), detector, "u-doc")
    assert len(found) == 1
    alert = found[0]
    assert alert.patient_ids == (patient,)
    assert words in alert.reason and "no care relationship" in alert.reason
    assert {e.kind for e in alert.evidence} >= {"no-care-relationship"}


@pytest.mark.parametrize("patient", ["p-fam", "p-house", "p-neigh", "p-name", "p-cow", "p-vip"])
def test_the_same_look_with_a_documented_relationship_raises_nothing(patient: str) -> None:
    w = World()
    w.care(patient, "u-doc", "Cardiology", at(DAY, 9), at(DAY, 11))
    w.access("u-doc", patient, at(DAY, 10))
    w.access("u-doc", patient, at(DAY, 10, 2), "Condition")
    assert [a for a in w.scan().alerts if a.user_id == "u-doc"] == []


def test_family_outranks_household_outranks_neighbour() -> None:
    w = World()
    for patient in ("p-fam", "p-house", "p-neigh", "p-name"):
        w.access("u-doc", patient, at(DAY, 10))
    scores = {a.detector: a.score for a in w.scan().alerts if a.user_id == "u-doc"}
    assert scores["family"] > scores["household"] > scores["neighbour"] > scores["surname"]


def test_a_common_surname_elsewhere_is_only_a_weak_signal() -> None:
    w = World()
    w.access("u-doc", "p-name", at(DAY, 10))
    result = w.scan()
    assert alerts_of(result, "family") == []
    (weak,) = alerts_of(result, "surname", "u-doc")
    assert weak.score < 50
    assert all(c.user_id != "u-doc" for c in World().scan().cases)


def test_own_record_is_flagged_even_when_a_relationship_explains_it() -> None:
    w = World()
    w.care("p-self", "u-doc", "Cardiology", at(DAY, 9), at(DAY, 11))
    w.access("u-doc", "p-self", at(DAY, 10))
    (alert,) = alerts_of(w.scan(), "self", "u-doc")
    assert "own record" in alert.reason
    assert "explained-but-own-record" in {e.kind for e in alert.evidence}


def test_another_staff_members_own_record_is_not_self_access() -> None:
    w = World()
    w.access("u-ed", "p-self", at(DAY, 10))
    assert alerts_of(w.scan(), "self") == []


def test_a_coworker_in_the_same_department_and_an_employee_elsewhere() -> None:
    w = World()
    w.access("u-doc", "p-cow", at(DAY, 10))  # u-nurse's own record, both Cardiology
    w.access("u-ed", "p-cow", at(DAY, 11))  # Emergency: an employee of another department
    result = w.scan()
    assert [a.user_id for a in alerts_of(result, "coworker")] == ["u-doc"]
    assert [a.user_id for a in alerts_of(result, "employee")] == ["u-ed"]


def test_vip_look_and_vip_surge() -> None:
    w = World()
    for i, user in enumerate(("u-doc", "u-nurse", "u-ed", "u-ed2")):
        w.access(user, "p-vip", at(DAY, 9 + i))
    result = w.scan()
    assert {a.user_id for a in alerts_of(result, "vip-surge")} == {
        "u-doc",
        "u-nurse",
        "u-ed",
        "u-ed2",
    }
    assert all("one of 4 users" in a.reason for a in alerts_of(result, "vip-surge"))


def test_a_vip_admission_with_care_raises_no_surge() -> None:
    w = World()
    for i, user in enumerate(("u-doc", "u-nurse", "u-ed", "u-ed2")):
        w.care("p-vip", user, None, at(DAY, 8), at(DAY + 2, 8))
        w.access(user, "p-vip", at(DAY, 9 + i))
    result = w.scan()
    assert alerts_of(result, "vip-surge") == [] and alerts_of(result, "vip") == []


def test_three_users_are_not_a_surge() -> None:
    w = World()
    for i, user in enumerate(("u-doc", "u-nurse", "u-ed")):
        w.access(user, "p-vip", at(DAY, 9 + i))
    result = w.scan()
    assert alerts_of(result, "vip-surge") == []
    assert len(alerts_of(result, "vip")) == 3


def test_break_the_glass_without_care_following_it() -> None:
    w = World()
    w.access("u-ed", "p-050", at(DAY, 3), "BreakTheGlass")
    w.access("u-ed2", "p-051", at(DAY, 3), "BreakTheGlass")
    # A genuine emergency: the encounter is documented within the hour.
    w.care("p-051", "u-ed2", "Emergency", at(DAY, 4), at(DAY, 9))
    result = w.scan()
    assert [a.user_id for a in alerts_of(result, "break-the-glass")] == ["u-ed"]


def test_evidence_and_reasons_name_no_one() -> None:
    w = World()
    for patient in ("p-fam", "p-house", "p-neigh", "p-cow", "p-vip", "p-self"):
        w.access("u-doc", patient, at(DAY, 23, 40))
    result = w.scan()
    assert result.alerts
    text = json.dumps(
        [
            {"reason": a.reason, "evidence": [(e.kind, e.text, e.data) for e in a.evidence]}
            for a in result.alerts
        ]
        + [c.reason for c in result.cases]
    )
    for secret in (
        "Rivera",
        "Chen",
        "Park",
        "Okafor",
        "Starr",
        "Oak St",
        "Pine Ave",
        "00010",
        "MRN0000",
    ):
        assert secret not in text


def test_off_hours_is_named_in_the_reason() -> None:
    w = World()
    w.access("u-doc", "p-fam", at(DAY, 23, 40))
    (alert,) = alerts_of(w.scan(), "family", "u-doc")
    assert "23:40" in alert.reason and "usual hours" in alert.reason
    calm = World()
    calm.access("u-doc", "p-fam", at(DAY, 11, 0))
    (day_alert,) = alerts_of(calm.scan(), "family", "u-doc")
    assert day_alert.score < alert.score


def test_times_in_reasons_follow_the_configured_zone() -> None:
    w = World()
    w.access("u-doc", "p-fam", at(DAY, 10, 0))
    from tests.monitor.detectors_world import EVERYTHING

    result = w.scan(EVERYTHING.with_(timezone="America/New_York"))
    (alert,) = alerts_of(result, "family", "u-doc")
    assert "06:00 EDT" in alert.reason
    assert alert.first_event_at == at(DAY, 10, 0)
    assert alert.first_event_at.tzinfo is dt.UTC

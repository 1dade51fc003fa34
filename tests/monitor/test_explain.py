"""Explanation: which accesses have a reason, and which reason wins."""

from __future__ import annotations

import datetime as dt

import polars as pl

from phiguard.monitor.config import DetectionConfig
from phiguard.monitor.explain import EXPLANATIONS, explain
from phiguard.monitor.frames import ACCESS, CARE, STAFF
from tests.monitor.detectors_world import at

STAFF_ROWS = [
    ("u-doc", "physician", "Cardiology", None),
    ("u-nurse", "nurse", "Cardiology", None),
    ("u-ed", "nurse", "Emergency", None),
    ("u-bill", "billing", "Billing", None),
    ("u-reg", "registration", "Registration", None),
    ("u-him", "him", "Health Information Management", None),
    ("u-gone", "nurse", "Cardiology", dt.date(2025, 3, 5)),
]


def _staff() -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "user_id": u,
                "family_name": "x",
                "given_name": "y",
                "role": role,
                "department": dept,
                "address": "1 A St",
                "postal_code": "00001",
                "hire_date": dt.date(2010, 1, 1),
                "termination_date": term,
                "patient_id": None,
            }
            for u, role, dept, term in STAFF_ROWS
        ],
        schema=STAFF,
    )


def _care(
    *rows: tuple[str, str | None, str | None, dt.datetime, dt.datetime | None, str],
) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {"patient_id": p, "user_id": u, "department": d, "start": s, "end": e, "kind": k}
            for p, u, d, s, e, k in rows
        ],
        schema=CARE,
    )


def _explain(
    accesses: list[tuple[str, str, dt.datetime]],
    care: pl.DataFrame,
    config: DetectionConfig | None = None,
) -> list[str | None]:
    frame = pl.DataFrame(
        [
            {
                "timestamp": t,
                "user_id": u,
                "patient_id": p,
                "action": "view",
                "resource_type": "Patient",
                "workstation": "w",
            }
            for u, p, t in accesses
        ],
        schema=ACCESS,
    ).with_row_index("row")
    return explain(frame, _staff(), care, config or DetectionConfig()).to_list()


def test_an_encounter_explains_its_window_and_nothing_outside_it() -> None:
    care = _care(("p1", "u-doc", "Cardiology", at(10, 9), at(10, 10), "encounter"))
    got = _explain(
        [
            ("u-doc", "p1", at(10, 9, 30)),  # during
            ("u-doc", "p1", at(7, 10)),  # 2 days 23 h before: inside the 3-day lead
            ("u-doc", "p1", at(39, 9)),  # 29 days after the end
            ("u-doc", "p1", at(6, 8)),  # 4 days before
            ("u-doc", "p1", at(41, 9)),  # 31 days after
            ("u-doc", "p2", at(10, 9, 30)),  # another patient
        ],
        care,
    )
    assert got == ["encounter", "encounter", "encounter", None, None, None]


def test_an_ongoing_care_team_explains_months_later() -> None:
    care = _care(("p1", "u-doc", "Cardiology", at(0, 0), None, "care_team"))
    assert _explain([("u-doc", "p1", at(200, 9))], care) == ["care_team"]


def test_the_ward_explains_colleagues_only_while_the_patient_is_there() -> None:
    care = _care(("p1", "u-doc", "Cardiology", at(10, 9), at(12, 9), "encounter"))
    got = _explain(
        [
            ("u-nurse", "p1", at(11, 3)),  # Cardiology colleague during the stay
            ("u-nurse", "p1", at(13, 3)),  # 18 h after discharge: inside the 1-day tail
            ("u-nurse", "p1", at(15, 3)),  # days later: no longer the ward's patient
            ("u-ed", "p1", at(11, 3)),  # another department
        ],
        care,
    )
    assert got == ["department", "department", None, None]


def test_a_colleagues_standing_care_team_does_not_open_the_patient_to_the_ward() -> None:
    care = _care(("p1", "u-doc", "Cardiology", at(0, 0), None, "care_team"))
    assert _explain([("u-nurse", "p1", at(30, 9))], care) == [None]


def test_a_department_level_relationship_explains_its_staff() -> None:
    care = _care(("p1", None, "Emergency", at(5, 0), at(6, 0), "encounter"))
    got = _explain([("u-ed", "p1", at(5, 12)), ("u-doc", "p1", at(5, 12))], care)
    assert got == ["department", None]


def test_routine_work_of_roles_follows_or_precedes_care() -> None:
    care = _care(
        ("p1", "u-doc", "Cardiology", at(10, 9), at(10, 10), "encounter"),
        ("p2", "u-doc", "Cardiology", at(40, 9), at(40, 10), "appointment"),
    )
    got = _explain(
        [
            ("u-bill", "p1", at(50, 10)),  # billing 40 days after discharge
            ("u-bill", "p2", at(5, 10)),  # billing long before any care
            ("u-him", "p1", at(30, 10)),  # coding after the stay
            ("u-reg", "p2", at(25, 10)),  # registration ahead of the appointment
            ("u-reg", "p3", at(25, 10)),  # registration of a patient with no care at all
        ],
        care,
    )
    assert got == ["role-work", None, "role-work", "role-work", None]


def test_the_strongest_reason_wins() -> None:
    care = _care(
        ("p1", "u-doc", "Cardiology", at(10, 9), at(10, 10), "appointment"),
        ("p1", "u-doc", "Cardiology", at(10, 9), at(10, 10), "encounter"),
        ("p1", "u-nurse", "Cardiology", at(10, 9), at(10, 10), "encounter"),
    )
    assert _explain([("u-doc", "p1", at(10, 9, 30))], care) == ["encounter"]
    assert EXPLANATIONS.index("encounter") < EXPLANATIONS.index("department")


def test_nothing_explains_an_access_after_termination() -> None:
    care = _care(("p1", "u-gone", "Cardiology", at(0, 0), None, "care_team"))
    got = _explain([("u-gone", "p1", at(2, 9)), ("u-gone", "p1", at(6, 9))], care)
    assert got == ["care_team", None]


def test_results_follow_row_order_whatever_the_time_order() -> None:
    care = _care(("p1", "u-doc", "Cardiology", at(10, 9), at(10, 10), "encounter"))
    got = _explain(
        [("u-doc", "p1", at(60, 9)), ("u-doc", "p1", at(10, 9)), ("u-doc", "p9", at(1, 1))],
        care,
    )
    assert got == [None, "encounter", None]


def test_windows_are_configurable() -> None:
    care = _care(("p1", "u-doc", "Cardiology", at(10, 9), at(10, 10), "encounter"))
    narrow = DetectionConfig(care_after=dt.timedelta(days=1))
    assert _explain([("u-doc", "p1", at(13, 9))], care, narrow) == [None]
    assert _explain([("u-doc", "p1", at(13, 9))], care) == ["encounter"]

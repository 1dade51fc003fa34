"""The monitoring console: queue with charts, case and alert pages, actions, drill-downs."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from phiguard.monitor.workflow import Workflow
from phiguard.system import System
from phiguard.web.app import create_app
from tests.monitor.test_workflow import A, C, Ev
from tests.web.console_helpers import add_user, csrf_of, enrol


@pytest.fixture
def system(home: tuple[System, str]) -> System:
    system, _ = home
    add_user(system, "privacy01", ["privacy_officer"])
    add_user(
        system,
        "nurse01",
        ["nurse"],
    )
    now = system.clock.now()
    Workflow.from_system(system).save(
        [
            A(
                "a-family",
                "family",
                "nurse01",
                ("p1",),
                88.0,
                first_event_at=now,
                last_event_at=now,
                evidence=(
                    Ev("same-surname-and-address", "the patient shares surname and address", {}),
                ),
            ),
            A(
                "a-hours",
                "after-hours",
                "nurse01",
                ("p2",),
                40.0,
                first_event_at=now,
                last_event_at=now,
            ),
            A("a-vip", "vip", "clerk09", ("p3",), 70.0, first_event_at=now, last_event_at=now),
        ],
        [C("c-nurse", "nurse01", ("a-family", "a-hours"), ("p1", "p2"), 91.0, opened_at=now)],
        by="system/phiguard",
    )
    return system


@pytest.fixture
def officer(system: System) -> Iterator[TestClient]:
    with TestClient(create_app(system), follow_redirects=False) as c:
        enrol(c, "privacy01")
        yield c


def test_queue_shows_cases_alerts_and_charts(officer: TestClient) -> None:
    page = officer.get("/monitor")
    assert page.status_code == 200
    assert page.text.count("<svg") == 3
    cases = page.text.split('id="cases"')[1].split("</table>")[0]
    assert "/monitor/cases/c-nurse" in cases
    alerts = page.text.split('id="alerts"')[1].split("</table>")[0]
    order = re.findall(r"/monitor/alerts/([\w-]+)", alerts)
    assert order == ["a-family", "a-vip", "a-hours"]  # by score
    assert "unsafe-inline" not in page.headers["content-security-policy"]
    filtered = officer.get("/monitor", params={"detector": "vip"})
    assert re.findall(r"/monitor/alerts/([\w-]+)", filtered.text.split('id="alerts"')[1]) == [
        "a-vip"
    ]


def test_case_page_and_the_whole_review(system: System, officer: TestClient) -> None:
    page = officer.get("/monitor/cases/c-nurse")
    assert page.status_code == 200
    assert "/monitor/alerts/a-family" in page.text
    csrf = csrf_of(page.text)
    assert officer.post("/monitor/cases/c-nurse/assign", data={"csrf": csrf}).status_code == 303
    r = officer.post(
        "/monitor/cases/c-nurse/note", data={"csrf": csrf, "text": "Called her manager"}
    )
    assert r.status_code == 303
    r = officer.post(
        "/monitor/cases/c-nurse/close", data={"csrf": csrf, "disposition": "policy-violation"}
    )
    assert r.status_code == 303
    page = officer.get("/monitor/cases/c-nurse")
    assert "closed (policy-violation)" in page.text
    assert "Called her manager" in page.text
    timeline = page.text.split('id="timeline"')[1].split("</ul>")[0]
    assert "assign" in timeline and "close" in timeline
    # Closing the case closed its alerts with the same decision.
    alert = officer.get("/monitor/alerts/a-family")
    assert "closed (policy-violation)" in alert.text
    assert "shares surname and address" in alert.text
    # Opening a case is itself in the ledger, with its patients.
    _, entries = system.ledger.search(who="user/privacy01", count=500)
    assert any(e["action"] == "monitor-case-view" for e in entries)


def test_actions_need_csrf_and_the_role(system: System, officer: TestClient) -> None:
    r = officer.post("/monitor/alerts/a-vip/close", data={"disposition": "breach"})
    assert r.status_code == 400
    assert "open" in officer.get("/monitor/alerts/a-vip").text.split('id="status"')[1][:40]
    with TestClient(create_app(system), follow_redirects=False) as nurse:
        enrol(nurse, "nurse01")
        assert nurse.get("/monitor").status_code == 403
        assert nurse.get("/monitor/cases/c-nurse").status_code == 403


def test_suppression_and_drill_downs(officer: TestClient) -> None:
    page = officer.get("/monitor/alerts/a-vip")
    r = officer.post(
        "/monitor/alerts/a-vip/suppress",
        data={"csrf": csrf_of(page.text), "days": "7", "reason": "covering registration desk"},
    )
    assert r.status_code == 303
    assert "a-vip" not in officer.get("/monitor").text.split('id="alerts"')[1]
    user = officer.get("/monitor/users/nurse01")
    assert "/monitor/cases/c-nurse" in user.text and "Nurse01 Tester" in user.text
    patient = officer.get("/monitor/patients", params={"patient": "p1"})
    assert "/monitor/alerts/a-family" in patient.text
    assert officer.get("/monitor/alerts/no-such").status_code == 404

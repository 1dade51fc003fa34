"""The privacy officer's access report page, and console sign-ins landing in the ledger."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from phiguard.records.context import AccessContext, Principal
from phiguard.system import System
from phiguard.web.app import create_app
from tests.web.console_helpers import add_user, enrol

PATIENT = {
    "resourceType": "Patient",
    "name": [{"family": "Quill", "given": ["Ada"]}],
    "birthDate": "1970-01-01",
}


@pytest.fixture
def system(home: tuple[System, str]) -> System:
    system, _ = home
    add_user(system, "privacy01", ["privacy_officer"])
    add_user(system, "nurse01", ["nurse"])
    return system


@pytest.fixture
def officer(system: System) -> Iterator[TestClient]:
    with TestClient(create_app(system), follow_redirects=False) as c:
        enrol(c, "privacy01")
        yield c


def _patient(system: System) -> str:
    ops = AccessContext(principal=Principal(id="ops", kind="operator"), purpose="HOPERAT")
    repo = system.vault.repository(ops)
    stored = repo.create(PATIENT)
    repo.read("Patient", stored.id)
    return stored.id


def test_report_lists_accesses_and_is_itself_recorded(system: System, officer: TestClient) -> None:
    pid = _patient(system)
    page = officer.get("/privacy/access-report", params={"patient": pid})
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    rows = page.text.split('<table id="accesses">', 1)[1]
    assert rows.count("<tr>") >= 3  # header, the creation and the read
    assert "operator token" in rows
    assert "Quill" not in page.text  # the report names people who looked, not the patient
    system.ledger.checkpoint()
    _, entries = system.ledger.search(patient=pid, count=100)
    assert any(e["action"] == "access-report" and e["who"] == "user/privacy01" for e in entries)


def test_pdf_download(system: System, officer: TestClient) -> None:
    pid = _patient(system)
    r = officer.get(
        "/privacy/access-report.pdf",
        params={"patient": pid, "start": "2025-01-01", "end": "2030-01-01"},
    )
    assert r.status_code == 200
    assert r.content.startswith(b"%PDF")
    assert r.headers["cache-control"] == "no-store"


def test_bad_dates_and_other_roles_are_refused(system: System, officer: TestClient) -> None:
    r = officer.get("/privacy/access-report", params={"patient": "x", "start": "yesterday"})
    assert r.status_code == 400 and "Dates must look like" in r.text
    with TestClient(create_app(system), follow_redirects=False) as nurse:
        enrol(nurse, "nurse01")
        assert nurse.get("/privacy/access-report", params={"patient": "x"}).status_code == 403


def test_console_sign_ins_are_in_the_ledger(system: System, officer: TestClient) -> None:
    _, entries = system.ledger.search(who="user/privacy01", count=100)
    actions = [e["action"] for e in entries]
    assert "login-success" in actions
    assert "mfa-enrolled" in actions

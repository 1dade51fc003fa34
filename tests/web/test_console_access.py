"""Break-the-glass and policy administration in the console."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient

from phiguard.identity.tokens import TokenService
from phiguard.records.context import AccessContext, Principal
from phiguard.store.tables import sessions
from phiguard.system import System
from phiguard.web.app import create_app
from tests.web.console_helpers import add_user, csrf_of, enrol

OPS = AccessContext(principal=Principal(id="ops", kind="operator"), purpose="HOPERAT")


@pytest.fixture
def system(home: tuple[System, str]) -> System:
    system, _ = home
    add_user(system, "nurse01", ["nurse"])
    add_user(system, "privacy01", ["privacy_officer"])
    add_user(system, "admin01", ["security_admin"])
    return system


def client(system: System, user: str) -> TestClient:
    c = TestClient(create_app(system), follow_redirects=False)
    c.__enter__()
    enrol(c, user)
    return c


@pytest.fixture
def nurse(system: System) -> Iterator[TestClient]:
    c = client(system, "nurse01")
    yield c
    c.__exit__(None, None, None)


def _age_reauth(system: System, user: str) -> None:
    """As if the user had last proven who they are an hour ago."""
    with system.engine.begin() as conn:
        conn.execute(
            update(sessions)
            .where(sessions.c.user_id == user)
            .values(reauth_at=sessions.c.reauth_at - 3_600_000_000)
        )


def test_emergency_access_from_declaration_to_review(system: System, nurse: TestClient) -> None:
    pid = (
        system.vault.repository(OPS)
        .create({"resourceType": "Patient", "name": [{"family": "Glass"}]})
        .id
    )
    token = (
        TokenService.from_system(system)
        .issue(kind="user", subject="nurse01", client_id="ward", scopes=["user/*.rs"])
        .token
    )
    fhir = TestClient(create_app(system))
    btg = {"Authorization": f"Bearer {token}", "X-Purpose-Of-Use": "BTG"}
    assert fhir.get(f"/fhir/Patient/{pid}", headers=btg).status_code == 404  # no grant yet

    page = nurse.get("/emergency", params={"patient": pid})
    r = nurse.post("/emergency", data={"csrf": csrf_of(page.text), "patient": pid, "reason": ""})
    assert r.status_code == 400 and "Not declared" in r.text  # a reason is required
    r = nurse.post(
        "/emergency",
        data={"csrf": csrf_of(page.text), "patient": pid, "reason": "collapsed in the lobby"},
    )
    assert r.status_code == 200 and 'id="grant"' in r.text
    assert fhir.get(f"/fhir/Patient/{pid}", headers=btg).status_code == 200
    plain = {"Authorization": f"Bearer {token}"}
    assert fhir.get(f"/fhir/Patient/{pid}", headers=plain).status_code == 404  # TREAT: no

    # The nurse cannot review her own emergency; the privacy officer can.
    assert nurse.get("/privacy/break-glass").status_code == 403
    officer = client(system, "privacy01")
    listing = officer.get("/privacy/break-glass")
    link = re.search(r'href="(/privacy/break-glass/[^"]+)"', listing.text)
    assert link and "nurse01" in listing.text
    review = officer.get(link.group(1))
    assert "collapsed in the lobby" in review.text
    assert f"Patient/{pid}" in review.text.split('id="uses"')[1]
    r = officer.post(
        link.group(1) + "/close", data={"csrf": csrf_of(review.text), "note": "genuine"}
    )
    assert r.status_code == 303
    assert "closed by privacy01" in officer.get(link.group(1)).text
    officer.__exit__(None, None, None)


def test_declaring_needs_a_fresh_reauthentication(system: System, nurse: TestClient) -> None:
    page = nurse.get("/emergency")
    _age_reauth(system, "nurse01")
    r = nurse.post(
        "/emergency", data={"csrf": csrf_of(page.text), "patient": "p1", "reason": "urgent"}
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/reauth?next=/emergency")
    assert system.access is not None
    assert system.access.break_glass.list("open") == []


def test_policy_administration(system: System, nurse: TestClient) -> None:
    assert nurse.get("/admin/policies").status_code == 403
    admin = client(system, "admin01")
    page = admin.get("/admin/policies", params={"file": "clinical.cedar"})
    assert page.status_code == 200 and 'id="policy-text"' in page.text
    original = re.search(r"<textarea[^>]*>(.*?)</textarea>", page.text, re.S)
    assert original
    csrf = csrf_of(page.text)

    broken = admin.post(
        "/admin/policies",
        data={"csrf": csrf, "file": "clinical.cedar", "text": "permit(principal", "comment": "x"},
    )
    assert broken.status_code == 400 and "running set is unchanged" in broken.text
    assert system.access is not None and system.access.policies.generation() == 0

    text = html.unescape(original.group(1)) + "\n// reviewed by the access committee\n"
    ok = admin.post(
        "/admin/policies",
        data={"csrf": csrf, "file": "clinical.cedar", "text": text, "comment": "annual review"},
    )
    assert ok.status_code == 303, ok.text[:800]
    assert ok.headers["location"].startswith("/admin/policies?file=clinical.cedar")
    assert system.access.policies.generation() == 1
    history = admin.get("/admin/policies").text.split('id="history"')[1]
    assert "annual review" in history and "admin01" in history

    _age_reauth(system, "admin01")
    stale = admin.post(
        "/admin/policies",
        data={"csrf": csrf, "file": "clinical.cedar", "text": text + "//\n", "comment": "y"},
    )
    assert stale.status_code == 303 and stale.headers["location"].startswith("/reauth")
    assert system.access.policies.generation() == 1
    admin.__exit__(None, None, None)


def _answer(page_text: str) -> tuple[str, str]:
    verdict = re.search(r'id="verdict">(\w+)<', page_text)
    reasons = re.search(r'id="reasons">([^<]*)<', page_text)
    assert verdict and reasons, page_text[:2000]
    return verdict.group(1), html.unescape(reasons.group(1))


def test_explaining_a_decision_in_the_console(system: System, nurse: TestClient) -> None:
    from phiguard.records.hooks import AccessRequest

    pid = (
        system.vault.repository(OPS)
        .create({"resourceType": "Patient", "name": [{"family": "Explained"}]})
        .id
    )
    assert nurse.get("/access/explain").status_code == 403
    officer = client(system, "privacy01")
    try:
        form = officer.get("/access/explain")
        assert form.status_code == 200 and 'id="explain-form"' in form.text
        csrf = csrf_of(form.text)
        assert system.access is not None
        policy = system.access.policy
        for user, roles, purpose in (
            ("nurse01", ["nurse"], "TREAT"),
            ("privacy01", ["privacy_officer"], "HOPERAT"),
        ):
            page = officer.post(
                "/access/explain",
                data={
                    "csrf": csrf,
                    "user": user,
                    "resource": f"Patient/{pid}",
                    "action": "read",
                    "purpose": purpose,
                },
            )
            assert page.status_code == 200, page.text[:800]
            # What the page says is what the running system decides for that request.
            ctx = AccessContext(Principal(user, "user", roles=frozenset(roles)), purpose)
            stored = system.vault.repository(OPS).read("Patient", pid).resource
            decision = policy.decide(
                ctx, AccessRequest("read", "Patient", pid, f"Patient/{pid}", stored)
            )
            verdict, reasons = _answer(page.text)
            assert verdict == ("Allowed" if decision.allowed else "Denied")
            assert reasons == ", ".join(decision.reasons)
            assert "Facts: care team no" in page.text and f"Patient: {pid}" in page.text
            assert "Explained" not in page.text  # ids and attributes, never the record

        # Every question is in the ledger, under the officer's name, about the patient.
        _, entries = system.ledger.search(patient=pid, count=100)
        asked = [e for e in entries if e["action"] == "access-explain"]
        assert len(asked) == 2 and all(e["who"] == "user/privacy01" for e in asked)

        for data, says in (
            ({"user": "nobody", "resource": f"Patient/{pid}"}, "there is no account"),
            ({"user": "nurse01", "resource": "Patient"}, "Type/id"),
            ({"user": "nurse01", "resource": "Observation/none"}, "is not stored"),
            ({"user": "nurse01", "resource": f"Patient/{pid}", "action": "peek"}, "action"),
            ({"user": "nurse01", "resource": f"Patient/{pid}", "purpose": "FUN"}, "purpose"),
        ):
            bad = officer.post("/access/explain", data={"csrf": csrf, **data})
            assert bad.status_code == 400 and says in html.unescape(bad.text), data
            assert 'id="verdict"' not in bad.text
        forged = officer.post(
            "/access/explain",
            data={"csrf": "forged", "user": "nurse01", "resource": f"Patient/{pid}"},
        )
        assert forged.status_code == 303
        _, entries = system.ledger.search(patient=pid, count=100)
        assert len([e for e in entries if e["action"] == "access-explain"]) == 2
    finally:
        officer.__exit__(None, None, None)

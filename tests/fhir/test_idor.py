"""IDOR over HTTP with real OAuth access tokens: other patients' ids, guessed ids,
``_include`` and chained parameters, batch and transaction entries, a ``patient/``
token off its launch patient.  Every refusal must be indistinguishable from absence:
same status, same OperationOutcome (ids aside), same empty search Bundle.  Then
break-the-glass end to end: declared with password and TOTP, used with purpose BTG,
reviewed by a privacy officer, and gone once expired.

A live ``phiguard serve`` on SQLite; the data and the accounts are written in-process
before it starts, through the same System (so the relationship index is the server's).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from sqlalchemy import update

from phiguard.access.breakglass import BreakGlass, BreakGlassError
from phiguard.identity.accounts import Accounts
from phiguard.identity.tokens import TokenService
from phiguard.records.context import system_context
from phiguard.store.engine import now_us
from phiguard.store.tables import access_break_glass
from phiguard.synth.fhir import consent_denying
from phiguard.system import open_system
from tests.support.server import live_server

from .helpers import PASSPHRASE, make_home, server_env

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PASSWORD = "correct horse battery staple 42"
REASON = "Found unresponsive in the waiting room; needs medication history"


@dataclass
class Site:
    base: str
    home: Path
    ids: dict[str, str]
    tokens: dict[str, str]
    totp_secret: str

    def get(self, who: str, path: str, **headers: str) -> httpx.Response:
        return httpx.get(
            f"{self.base}/fhir/{path}",
            headers={"Authorization": f"Bearer {self.tokens[who]}", **headers},
            timeout=30,
        )

    def post(self, who: str, path: str, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(
            f"{self.base}/{path}",
            json=body,
            headers={
                "Authorization": f"Bearer {self.tokens[who]}",
                "Content-Type": "application/fhir+json",
            },
            timeout=30,
        )


def _condition(pid: str, code: str, label: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
    }
    if label:
        res["meta"] = {"security": [{"system": ACT, "code": label}]}
    return res


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("idor")
    url = f"sqlite:///{root / 'db' / 'phiguard.db'}"
    home, operator_token = make_home(root, url)
    # A fixed public base: tokens name it as issuer and audience, whatever port serves.
    cfg = home / "phiguard.toml"
    text = re.sub(r'(?m)^base_url = ""$', 'base_url = "http://phiguard.test"', cfg.read_text())
    cfg.write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHIGUARD_PASSPHRASE", PASSPHRASE)
        system = open_system(home)
    try:
        repo = system.vault.repository(system_context())
        ids: dict[str, str] = {}
        for name in ("x", "y"):
            ids[f"prac_{name}"] = repo.create(
                {"resourceType": "Practitioner", "name": [{"family": f"Doc{name.upper()}"}]}
            ).id
        for name in ("a", "b"):
            ids[f"pat_{name}"] = repo.create(
                {"resourceType": "Patient", "name": [{"family": f"Patient{name.upper()}"}]}
            ).id
        ids["team_a"] = repo.create(
            {
                "resourceType": "CareTeam",
                "status": "active",
                "subject": {"reference": f"Patient/{ids['pat_a']}"},
                "period": {"start": "2020-01-01"},
                "participant": [{"member": {"reference": f"Practitioner/{ids['prac_x']}"}}],
            }
        ).id
        ids["cond_a"] = repo.create(_condition(ids["pat_a"], "38341003")).id
        ids["cond_a_psy"] = repo.create(_condition(ids["pat_a"], "35489007", "PSY")).id
        ids["cond_b"] = repo.create(_condition(ids["pat_b"], "44054006")).id
        accounts = Accounts.from_system(system)
        for uid, roles, prac in (
            ("dr-x", ["physician"], ids["prac_x"]),
            ("dr-y", ["physician"], ids["prac_y"]),
            ("po-1", ["privacy_officer"], None),
        ):
            accounts.add(
                uid,
                uid,
                f"{uid}@hospital.example",
                roles,
                PASSWORD,
                by="test",
                practitioner_id=prac,
            )
        secret = accounts.totp.enrol("dr-y").secret
        assert accounts.totp.confirm("dr-y", pyotp.TOTP(secret).now()).accepted
        tokens_service = TokenService.from_system(system)
        scopes = ["openid", "fhirUser", "user/*.*"]
        tokens = {
            uid: tokens_service.issue(
                kind="user", subject=uid, client_id="idor-test", scopes=scopes
            ).token
            for uid in ("dr-x", "dr-y")
        }
        tokens["dr-x-launch-a"] = tokens_service.issue(
            kind="user",
            subject="dr-x",
            client_id="idor-test",
            scopes=["patient/Condition.rs", "patient/Patient.rs"],
            patient=ids["pat_a"],
        ).token
        tokens["dr-x-launch-b"] = tokens_service.issue(
            kind="user",
            subject="dr-x",
            client_id="idor-test",
            scopes=["patient/Condition.rs", "patient/Patient.rs"],
            patient=ids["pat_b"],
        ).token
        tokens["operator"] = operator_token
    finally:
        system.close()
    with live_server(home, operator_token, server_env(url)) as server:
        yield Site(server.base, home, ids, tokens, secret)


def _same_absence(hidden: httpx.Response, absent: httpx.Response, *pairs: tuple[str, str]) -> None:
    """Status, body and the headers a client sees are those of a missing id (ids aside)."""
    assert hidden.status_code == absent.status_code == 404
    text = hidden.text
    for real, ghost in pairs:
        text = text.replace(real, ghost)
    assert text == absent.text
    assert hidden.headers["content-type"] == absent.headers["content-type"]


def test_own_patient_is_readable(site: Site) -> None:
    assert site.get("dr-x", f"Condition/{site.ids['cond_a_psy']}").status_code == 200
    bundle = site.get("dr-x", f"Condition?patient={site.ids['pat_a']}").json()
    assert bundle["total"] == 2


def test_other_patients_and_guessed_ids_look_absent(site: Site) -> None:
    ghost = str(uuid.uuid4())
    for rid in (site.ids["cond_a"], site.ids["cond_a_psy"]):
        _same_absence(
            site.get("dr-y", f"Condition/{rid}"),
            site.get("dr-y", f"Condition/{ghost}"),
            (rid, ghost),
        )
        _same_absence(
            site.get("dr-y", f"Condition/{rid}/_history/1"),
            site.get("dr-y", f"Condition/{ghost}/_history/1"),
            (rid, ghost),
        )
        _same_absence(
            site.get("dr-y", f"Condition/{rid}/_history"),
            site.get("dr-y", f"Condition/{ghost}/_history"),
            (rid, ghost),
        )
    pid = site.ids["pat_a"]
    _same_absence(
        site.get("dr-y", f"Patient/{pid}"), site.get("dr-y", f"Patient/{ghost}"), (pid, ghost)
    )
    _same_absence(
        site.get("dr-y", f"Patient/{pid}/$everything"),
        site.get("dr-y", f"Patient/{ghost}/$everything"),
        (pid, ghost),
    )
    # Writes to a hidden id answer the same way.
    body = {**_condition(pid, "38341003"), "id": site.ids["cond_a"]}
    put = httpx.put(
        f"{site.base}/fhir/Condition/{site.ids['cond_a']}",
        json=body,
        headers={
            "Authorization": f"Bearer {site.tokens['dr-y']}",
            "Content-Type": "application/fhir+json",
        },
    )
    assert put.status_code == 404


def test_searches_reveal_nothing_about_hidden_resources(site: Site) -> None:
    ghost = str(uuid.uuid4())
    pid = site.ids["pat_a"]
    hidden = site.get("dr-y", f"Condition?patient={pid}")
    absent = site.get("dr-y", f"Condition?patient={ghost}")
    assert hidden.status_code == absent.status_code == 200
    assert hidden.text.replace(pid, ghost) == absent.text
    assert hidden.json()["total"] == 0 and "entry" not in hidden.json()
    count = site.get("dr-y", f"Condition?patient={pid}&_summary=count").json()
    assert count["total"] == 0
    # Paging: one visible result of several candidates, no ``next`` to follow.
    page = site.get("dr-x", "Condition?_count=1").json()
    assert [link["relation"] for link in page["link"]].count("next") == (page.get("total", 2) > 1)
    mine = site.get("dr-x", "Condition?_count=50").json()
    assert {e["resource"]["id"] for e in mine["entry"]} == {
        site.ids["cond_a"],
        site.ids["cond_a_psy"],
    }
    assert mine["total"] == 2  # cond_b exists, but is not counted


def test_include_and_chained_parameters_are_refused_alike(site: Site) -> None:
    ghost = str(uuid.uuid4())
    pid = site.ids["pat_a"]
    for query in (
        "_include=Condition:subject",
        "_revinclude=Observation:subject",
        "subject.name=PatientA",
        "subject:Patient.name=PatientA",
    ):
        hidden = site.get("dr-y", f"Condition?patient={pid}&{query}")
        absent = site.get("dr-y", f"Condition?patient={ghost}&{query}")
        own = site.get("dr-x", f"Condition?patient={pid}&{query}")
        assert hidden.status_code == absent.status_code == own.status_code == 400
        assert hidden.text == absent.text == own.text
        assert "PatientA" not in hidden.text


def test_batch_and_transaction_entries_look_absent(site: Site) -> None:
    ghost = str(uuid.uuid4())
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Condition/{site.ids['cond_a_psy']}"}},
            {"request": {"method": "GET", "url": f"Condition/{ghost}"}},
            {"request": {"method": "GET", "url": f"Condition?patient={site.ids['pat_a']}"}},
            {"request": {"method": "DELETE", "url": f"Condition/{site.ids['cond_a']}"}},
            {"request": {"method": "DELETE", "url": f"Condition/{ghost}"}},
        ],
    }
    out = site.post("dr-y", "fhir", batch).json()["entry"]
    hidden_get, absent_get, search, hidden_delete, absent_delete = (e.get("response") for e in out)
    assert hidden_get["status"] == absent_get["status"] == "404"
    assert str(hidden_get["outcome"]).replace(site.ids["cond_a_psy"], ghost) == str(
        absent_get["outcome"]
    )
    assert hidden_delete["status"] == absent_delete["status"] == "404"
    assert out[2]["resource"]["total"] == 0 and "entry" not in out[2]["resource"]
    assert search["status"].startswith("200")
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"request": {"method": "GET", "url": f"Condition/{rid}"}}
            for rid in (site.ids["cond_b"],)
        ],
    }
    absent_tx = {
        **transaction,
        "entry": [{"request": {"method": "GET", "url": f"Condition/{ghost}"}}],
    }
    hidden = site.post("dr-x", "fhir", transaction)
    absent = site.post("dr-x", "fhir", absent_tx)
    assert hidden.status_code == absent.status_code == 404
    assert hidden.text.replace(site.ids["cond_b"], ghost) == absent.text


def test_patient_scoped_tokens_reach_only_their_launch_patient(site: Site) -> None:
    assert site.get("dr-x-launch-a", f"Condition/{site.ids['cond_a']}").status_code == 200
    ghost = str(uuid.uuid4())
    _same_absence(
        site.get("dr-x-launch-b", f"Condition/{site.ids['cond_a']}"),
        site.get("dr-x-launch-b", f"Condition/{ghost}"),
        (site.ids["cond_a"], ghost),
    )
    assert site.get("dr-x-launch-b", f"Condition?patient={site.ids['pat_a']}").json()["total"] == 0


def _declare(site: Site, who: str, **body: Any) -> httpx.Response:
    return site.post(who, "access/break-glass", body)


def test_break_the_glass_end_to_end(site: Site) -> None:
    totp = pyotp.TOTP(site.totp_secret)
    psy = f"Condition/{site.ids['cond_a_psy']}"
    assert site.get("dr-y", psy, **{"X-Purpose-Of-Use": "BTG"}).status_code == 404
    base = {"patient": site.ids["pat_a"], "password": PASSWORD}
    # Bad input: clear errors, nothing declared.
    no_reason = _declare(site, "dr-y", **base, totp=totp.at(time.time() + 30), reason="")
    assert no_reason.status_code == 400 and "reason" in no_reason.text
    wrong_purpose = _declare(
        site, "dr-y", **base, totp=totp.at(time.time() + 30), reason=REASON, purpose="TREAT"
    )
    assert wrong_purpose.status_code == 400 and "emergency purpose" in wrong_purpose.text
    wrong_code = _declare(site, "dr-y", **base, totp="000000", reason=REASON)
    assert wrong_code.status_code == 401
    assert site.get("dr-y", psy, **{"X-Purpose-Of-Use": "BTG"}).status_code == 404
    # Declared with the password and a fresh code (the enrolment used the current step).
    made = _declare(site, "dr-y", **base, totp=totp.at(time.time() + 30), reason=REASON)
    assert made.status_code == 201, made.text
    grant = made.json()
    assert grant["review"] == "open" and grant["patient"] == site.ids["pat_a"]
    assert site.get("dr-y", psy, **{"X-Purpose-Of-Use": "BTG"}).status_code == 200
    assert site.get("dr-y", psy).status_code == 404  # treatment purpose: no grant use
    assert (
        site.get(
            "dr-y", f"Condition/{site.ids['cond_b']}", **{"X-Purpose-Of-Use": "BTG"}
        ).status_code
        == 404
    )
    found = site.get(
        "dr-y", f"Condition?patient={site.ids['pat_a']}", **{"X-Purpose-Of-Use": "BTG"}
    ).json()
    assert found["total"] == 2
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHIGUARD_PASSPHRASE", PASSPHRASE)
        system = open_system(site.home)
    try:
        # The ledger: the declaration, and the reads under it marked break-the-glass.
        _n, entries = system.ledger.search(patient=site.ids["pat_a"], who="user/dr-y", count=1000)
        assert any(e["action"] == "break-glass" for e in entries)
        btg_reads = [e for e in entries if e["action"] == "read" and e.get("btg")]
        assert btg_reads and all(e["purpose"] == "BTG" for e in btg_reads)
        # The review task stays open until a privacy officer other than the user closes it.
        service = BreakGlass.from_system(system)
        assert grant["grant"] in {g.grant_id for g in service.list("open")}
        with pytest.raises(BreakGlassError):
            service.close(grant["grant"], "dr-y", "fine", reauthenticated=True)
        # Expiry: the stored end has passed (as an hour later); the server stops honouring
        # it once its short caches turn over.
        with system.engine.begin() as conn:
            conn.execute(
                update(access_break_glass)
                .where(access_break_glass.c.grant_id == grant["grant"])
                .values(expires_at=now_us(system.clock.now()) - 1)
            )
        deadline = time.monotonic() + 15
        status = 200
        while status == 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            status = site.get("dr-y", psy, **{"X-Purpose-Of-Use": "BTG"}).status_code
        assert status == 404
        closed = service.close(
            grant["grant"], "po-1", "ED confirmed the emergency", reauthenticated=True
        )
        assert closed.review_status == "closed"
    finally:
        system.close()


def test_consent_over_http(site: Site) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PHIGUARD_PASSPHRASE", PASSPHRASE)
        system = open_system(site.home)
    try:
        consent = consent_denying("deny-x", site.ids["pat_a"], practitioners=(site.ids["prac_x"],))
        system.vault.repository(system_context()).update("Consent", "deny-x", consent)
    finally:
        system.close()
    deadline = time.monotonic() + 15
    status = 200
    while status == 200 and time.monotonic() < deadline:
        time.sleep(0.5)
        status = site.get("dr-x", f"Condition/{site.ids['cond_a']}").status_code
    assert status == 404

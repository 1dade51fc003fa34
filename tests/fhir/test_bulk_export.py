"""FHIR Bulk Data export: the async flow, per-resource decisions, sealed files, owners only."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from phiguard.identity.accounts import Accounts
from phiguard.identity.tokens import TokenService
from phiguard.records.context import system_context
from phiguard.store.tables import export_files, export_jobs
from phiguard.system import System
from phiguard.web.app import create_app

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PASSWORD = "correct horse battery staple 42"
MARKER = "Zyxwbulkmarker"
ASYNC = {"Prefer": "respond-async"}


def _condition(pid: str, code: str, label: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]},
        "note": [{"text": f"{MARKER} {code}"}],
    }
    if label:
        res["meta"] = {"security": [{"system": ACT, "code": label}]}
    return res


class Site:
    def __init__(self, system: System, client: TestClient, ids: dict[str, str]) -> None:
        self.system = system
        self.client = client
        self.ids = ids
        service = TokenService.from_system(system)
        self.tokens = {
            uid: service.issue(
                kind="user", subject=uid, client_id="bulk-test", scopes=["user/*.rs"]
            ).token
            for uid in ("him01", "him02", "doc01")
        }

    def get(self, who: str, url: str, purpose: str = "HOPERAT", **headers: str) -> Any:
        return self.client.get(
            url,
            headers={
                "Authorization": f"Bearer {self.tokens[who]}",
                "X-Purpose-Of-Use": purpose,
                **headers,
            },
        )

    def delete(self, who: str, url: str) -> Any:
        return self.client.delete(
            url,
            headers={"Authorization": f"Bearer {self.tokens[who]}", "X-Purpose-Of-Use": "HOPERAT"},
        )

    def run(self, who: str, url: str) -> tuple[str, dict[str, Any]]:
        """Kick off, poll to completion; the status URL and the manifest."""
        kicked = self.get(who, url, **ASYNC)
        assert kicked.status_code == 202, kicked.text
        status = kicked.headers["content-location"]
        assert status.startswith("http://testserver/fhir/$export-status/")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            polled = self.get(who, status)
            if polled.status_code == 200:
                return status, polled.json()
            assert polled.status_code == 202, polled.text
            assert polled.headers["x-progress"].endswith("resources")
            time.sleep(0.1)
        raise AssertionError("the export did not finish")


@pytest.fixture
def site(home: tuple[System, str]) -> Iterator[Site]:
    system, _token = home
    repo = system.vault.repository(system_context())
    ids: dict[str, str] = {}
    for name in ("a", "b", "c"):
        ids[f"pat_{name}"] = repo.create(
            {"resourceType": "Patient", "name": [{"family": f"{MARKER}{name}"}]}
        ).id
    ids["cond_a"] = repo.create(_condition(ids["pat_a"], "38341003")).id
    ids["cond_a_psy"] = repo.create(_condition(ids["pat_a"], "35489007", "PSY")).id
    ids["cond_b"] = repo.create(_condition(ids["pat_b"], "44054006")).id
    ids["org"] = repo.create({"resourceType": "Organization", "name": "Ward 3"}).id
    accounts = Accounts.from_system(system)
    for uid, roles in (("him01", ["him"]), ("him02", ["him"]), ("doc01", ["physician"])):
        accounts.add(uid, uid, f"{uid}@hospital.example", roles, PASSWORD, by="test")
    with TestClient(create_app(system)) as client:
        yield Site(system, client, ids)


def _download(site: Site, who: str, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        got = site.get(who, item["url"])
        assert got.status_code == 200 and got.headers["content-type"] == "application/fhir+ndjson"
        rows = [json.loads(line) for line in got.text.splitlines()]
        assert len(rows) == item["count"]
        out.setdefault(item["type"], []).extend(rows)
    return out


def test_an_export_holds_what_the_caller_may_export_and_nothing_else(site: Site) -> None:
    status, manifest = site.run("him01", "/fhir/$export?_type=Patient,Condition")
    assert manifest["requiresAccessToken"] is True and manifest["error"] == []
    assert manifest["request"].endswith("/fhir/$export?_type=Patient,Condition")
    files = _download(site, "him01", manifest)
    ids = site.ids
    assert {r["id"] for r in files["Patient"]} == {ids["pat_a"], ids["pat_b"], ids["pat_c"]}
    # The PSY-labelled condition needs direct care: decided like a read, left out.
    assert {r["id"] for r in files["Condition"]} == {ids["cond_a"], ids["cond_b"]}

    # The ledger names every patient whose data left, with what was withheld.
    _, entries = site.system.ledger.search(patient=ids["pat_a"], count=100)
    exported = [e for e in entries if e["action"] == "export"]
    assert exported and all(e["who"] == "user/him01" for e in exported)
    assert any((e.get("detail") or {}).get("withheld") == 1 for e in exported)

    # At rest the files are sealed: no byte of the marker in the database files.
    home = site.system.settings.home
    for path in home.glob("phiguard.db*"):
        assert MARKER.encode() not in path.read_bytes(), path
    with site.system.engine.connect() as conn:
        bodies = [bytes(b) for (b,) in conn.execute(select(export_files.c.body))]
    assert bodies and all(MARKER.encode() not in b for b in bodies)

    # Only the owner sees the job; to others it does not exist.
    for url in (status, manifest["output"][0]["url"]):
        assert site.get("him02", url).status_code == 404
    assert site.delete("him02", status).status_code == 404
    # The owner discards it: gone, files and all.
    assert site.delete("him01", status).status_code == 202
    assert site.get("him01", status).status_code == 404
    with site.system.engine.connect() as conn:
        assert conn.execute(select(export_files)).first() is None


def test_patient_level_export_and_since(site: Site) -> None:
    _, manifest = site.run("him01", "/fhir/Patient/$export")
    files = _download(site, "him01", manifest)
    assert set(files) == {"Patient", "Condition"}  # the Organization is in no compartment
    _, later = site.run("him01", "/fhir/$export?_type=Patient&_since=2999-01-01T00:00:00Z")
    assert later["output"] == []


def test_who_may_not_export_is_refused_at_kick_off(site: Site) -> None:
    refused = site.get("doc01", "/fhir/$export?_type=Condition", purpose="TREAT", **ASYNC)
    assert refused.status_code == 403
    assert refused.json()["resourceType"] == "OperationOutcome"
    wrong_purpose = site.get("him01", "/fhir/$export?_type=Condition", purpose="TREAT", **ASYNC)
    assert wrong_purpose.status_code == 403
    with site.system.engine.connect() as conn:
        assert conn.execute(select(export_jobs)).first() is None  # nothing started


@pytest.mark.parametrize(
    ("url", "headers", "says"),
    [
        ("/fhir/$export", {}, "respond-async"),
        ("/fhir/$export?_typeFilter=Condition%3Fcode%3Dx", ASYNC, "_typeFilter"),
        ("/fhir/$export?_type=Nonsense", ASYNC, "unknown resource type"),
        ("/fhir/$export?_since=yesterday", ASYNC, "_since"),
        ("/fhir/$export?_outputFormat=text/csv", ASYNC, "output format"),
    ],
)
def test_bad_kick_offs_get_a_clear_outcome_and_start_nothing(
    site: Site, url: str, headers: dict[str, str], says: str
) -> None:
    bad = site.get("him01", url, **headers)
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"
    assert says in bad.text
    with site.system.engine.connect() as conn:
        assert conn.execute(select(export_jobs)).first() is None


def test_an_expired_export_is_gone(site: Site) -> None:
    status, manifest = site.run("him01", "/fhir/$export?_type=Patient")
    with site.system.engine.begin() as conn:
        conn.execute(update(export_jobs).values(expires_at=1))
    assert site.get("him01", status).status_code == 404
    assert site.get("him01", manifest["output"][0]["url"]).status_code == 404
    with site.system.engine.connect() as conn:
        assert conn.execute(select(export_files)).first() is None


def test_an_export_stops_once_its_owner_may_no_longer_act(site: Site) -> None:
    from phiguard.fhir.bulk import run_export
    from phiguard.records.context import AccessContext, Principal
    from phiguard.store.engine import now_us

    ctx = AccessContext(Principal("him01", "user", roles=frozenset({"him"})), "HOPERAT")
    with site.system.engine.begin() as conn:
        now = now_us(site.system.clock.now())
        conn.execute(
            export_jobs.insert().values(
                job_id="j" * 32,
                tenant="default",
                owner="user/him01",
                request_url="/fhir/$export",
                status="in-progress",
                exported=0,
                requested_at=now,
                updated_at=now,
            )
        )
    Accounts.from_system(site.system).suspend("him01", by="test")
    run_export(site.system.vault, ctx, "j" * 32, ["Patient", "Condition"], None, False)
    with site.system.engine.connect() as conn:
        job = conn.execute(select(export_jobs)).one()
        assert conn.execute(select(export_files)).first() is None
    assert job.status == "error" and job.error == "the account that started it is no longer active"

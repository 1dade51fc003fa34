"""The audit trail over HTTP: AuditEvent search, and no PHI without an audit record."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fhir.resources.R4B.auditevent import AuditEvent

from tests.fhir.helpers import Api, running_api


def test_audit_events_for_a_patient(api: Api, tag: str) -> None:
    with api.client() as http:
        body = {"resourceType": "Patient", "name": [{"family": f"Audited{tag}"}]}
        pid = http.post("/Patient", json=body).json()["id"]
        assert http.get(f"/Patient/{pid}").status_code == 200
        assert http.get("/Patient", params={"family": f"Audited{tag}"}).json()["total"] == 1
        found = http.get("/AuditEvent", params={"patient": f"Patient/{pid}"})
        assert found.status_code == 200, found.text
        bundle = found.json()
        events = [e["resource"] for e in bundle["entry"]]
        for event in events:
            AuditEvent.model_validate(event)
        assert [(e["action"], e["subtype"][0]["code"]) for e in events] == [
            ("C", "create"),
            ("R", "read"),
            ("E", "search-type"),
        ]
        assert all(
            {"reference": f"Patient/{pid}"} in [x["what"] for x in e["entity"]] for e in events
        )
        # Searching the trail is itself in the trail.
        again = http.get("/AuditEvent", params={"date": "ge2000-01-01", "_count": "1000"}).json()
        assert any(
            e["resource"]["subtype"][0]["code"] == "audit-search" for e in again.get("entry", [])
        )
        bad = http.get("/AuditEvent", params={"nonsense": "1"})
        assert bad.status_code == 400


def test_no_audit_no_data(tmp_path: Path, tag: str) -> None:
    """Fail closed: when the ledger cannot record, the PHI is not served."""
    url = f"sqlite:///{tmp_path / 'db' / 'phiguard.db'}"
    with running_api("sqlite", url, tmp_path) as api, api.client() as http:
        body = {"resourceType": "Patient", "name": [{"family": f"Closed{tag}"}]}
        pid = http.post("/Patient", json=body).json()["id"]
        ledger_db = api.server.home / "audit.db"
        con = sqlite3.connect(ledger_db)
        con.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_entries "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        con.commit()
        r = http.get(f"/Patient/{pid}")
        assert r.status_code == 503
        assert f"Closed{tag}" not in r.text
        assert "audited" in r.json()["issue"][0]["diagnostics"]
        w = http.post(
            "/Patient",
            json={"resourceType": "Patient", "name": [{"family": f"Unwritten{tag}"}]},
        )
        assert w.status_code == 503
        con.execute("DROP TRIGGER refuse")
        con.commit()
        con.close()
        assert http.get(f"/Patient/{pid}").status_code == 200
        search = http.get("/Patient", params={"family": f"Unwritten{tag}"}).json()
        assert search["total"] == 0

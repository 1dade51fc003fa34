"""The access report and the BALP AuditEvents: exactly the accesses that happened."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent as FhirAuditEvent

from phiguard.audit import reports
from phiguard.audit.balp import to_audit_event
from phiguard.audit.ledger import Ledger
from phiguard.audit.sink import LedgerSink
from phiguard.clock import FixedClock
from phiguard.errors import NotFound
from phiguard.records.context import AccessContext, Principal, system_context
from phiguard.records.vault import Vault
from phiguard.store import migrate
from phiguard.store.engine import make_engine


@pytest.fixture
def audited(vault: Vault, tmp_path: Path, clock: FixedClock) -> Iterator[tuple[Vault, Ledger]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate.upgrade(engine)
    ledger = Ledger(engine, vault.keyring, clock=clock)
    yield Vault(vault.engine, vault.keyring, audit=LedgerSink(ledger), clock=clock), ledger
    ledger.close()
    engine.dispose()


def patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def test_report_lists_exactly_the_accesses_made(
    audited: tuple[Vault, Ledger], clock: FixedClock
) -> None:
    vault, ledger = audited
    ops = vault.repository(system_context())
    pid = ops.create(patient("Reported")).id
    other = ops.create(patient("Unrelated")).id
    clock.advance(hours=1)
    doctor = AccessContext(
        principal=Principal(id="drwho", kind="operator"), purpose="TREAT", source="10.0.0.7"
    )
    vault.repository(doctor).read("Patient", pid)
    vault.repository(doctor).read("Patient", other)
    emergency = AccessContext(
        principal=Principal(id="er-nurse", kind="operator"), purpose="ETREAT", break_glass=True
    )
    vault.repository(emergency).read("Patient", pid)
    snoop = AccessContext(principal=Principal(id="clerk", kind="user"), purpose="TREAT")
    with pytest.raises(NotFound):  # refused, and indistinguishable from absence
        vault.repository(snoop).read("Patient", pid)
    clock.advance(days=40)
    vault.repository(doctor).read("Patient", pid)  # outside the period asked for

    report = reports.build(ledger, pid, dt.date(2026, 1, 1), dt.date(2026, 1, 31))
    rows = [(r.principal, r.action, r.outcome, r.purpose, r.break_glass) for r in report.rows]
    assert rows == [
        ("system/phiguard", "created", "success", "HOPERAT", False),
        ("operator/drwho", "viewed", "success", "TREAT", False),
        ("operator/er-nurse", "viewed", "success", "ETREAT", True),
        ("user/clerk", "viewed", "denied", "TREAT", False),
    ]
    html = reports.render_html(report)
    assert "emergency access" in html and "er-nurse" in html and "denied" in html
    pdf = reports.render_pdf(report)
    assert pdf.startswith(b"%PDF-") and len(pdf) > 1000
    bundle = reports.to_bundle(report)
    assert len(bundle["entry"]) == 4
    for entry in bundle["entry"]:
        FhirAuditEvent.model_validate(entry["resource"])


def test_balp_events_name_every_patient_returned(audited: tuple[Vault, Ledger]) -> None:
    vault, ledger = audited
    ops = vault.repository(system_context())
    a = ops.create(patient("Searchable")).id
    b = ops.create(patient("Searchable")).id
    ops.search("Patient", [("family", "searchable")])
    _total, docs = ledger.search()
    search = [d for d in docs if d["action"] == "search"][-1]
    event = to_audit_event(search)
    FhirAuditEvent.model_validate(event)
    assert event["action"] == "E"
    assert event["subtype"][0]["code"] == "search-type"
    patients = {e["what"]["reference"] for e in event["entity"] if e["role"]["code"] == "1"}
    assert patients == {f"Patient/{a}", f"Patient/{b}"}


def test_disclosures_are_listed_apart(audited: tuple[Vault, Ledger], clock: FixedClock) -> None:
    from phiguard.audit.events import AuditEvent

    vault, ledger = audited
    pid = vault.repository(system_context()).create(patient("Disclosed")).id
    ledger.append(
        AuditEvent(
            action="disclosure",
            outcome="success",
            principal="user/him1",
            purpose="PUBHLTH",
            request_id="r1",
            recorded=clock.now(),
            patient_ids=(pid,),
            detail={"recipient": "State registry", "description": "vaccines"},
        )
    )
    report = reports.build(ledger, pid, dt.date(2026, 1, 1), dt.date(2026, 1, 2))
    assert [d["recipient"] for d in report.disclosures] == ["State registry"]
    assert all(r.action != "disclosed" for r in report.rows)


def test_the_index_deriving_facts_shows_in_the_report(
    audited: tuple[Vault, Ledger], clock: FixedClock
) -> None:
    from phiguard.access.wiring import build_access

    vault, ledger = audited
    access = build_access(vault)
    pid = vault.repository(system_context()).create(patient("Indexed")).id
    clock.advance(hours=1)
    assert access.index.rebuild_all() == 1
    report = reports.build(ledger, pid, dt.date(2026, 1, 1), dt.date(2026, 1, 31))
    rows = [(r.principal, r.action, r.person.name) for r in report.rows]
    assert rows[-1] == (
        "system/access-index",
        "derived the care-relationship facts from",
        "phiguard (automated process)",
    )
    for entry in reports.to_bundle(report)["entry"]:
        FhirAuditEvent.model_validate(entry["resource"])

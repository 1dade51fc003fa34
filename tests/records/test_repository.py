"""Repository semantics: versions, conflicts, deletes, search, decisions and audit."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from phiguard.clock import FixedClock
from phiguard.errors import (
    AccessDenied,
    Gone,
    InvalidResource,
    NotFound,
    VersionConflict,
)
from phiguard.records.context import AccessContext, Principal
from phiguard.records.hooks import ListAuditSink
from phiguard.records.repository import Repository
from phiguard.records.vault import Vault
from phiguard.store.tables import resources, search_tokens


def patient(family: str = "Müller", given: str = "Anna", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": "1990-02-14",
        "identifier": [{"system": "urn:mrn", "value": "A-1"}],
        **extra,
    }


def observation(
    pid: str, code: str = "8867-4", when: str = "2020-03-15T10:00:00Z"
) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": when,
    }


def count_rows(vault: Vault, table: Any) -> int:
    with vault.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_create_read_roundtrip_sets_meta(repo: Repository) -> None:
    stored = repo.create(patient())
    read = repo.read("Patient", stored.id)
    assert read.resource is not None
    assert read.resource["name"] == [{"family": "Müller", "given": ["Anna"]}]
    assert read.resource["meta"]["versionId"] == "1"
    assert read.etag == 'W/"1"'


def test_update_versions_and_if_match(repo: Repository) -> None:
    pid = repo.create(patient()).id
    v2, created = repo.update("Patient", pid, {**patient(given="Berta"), "id": pid}, if_match=1)
    assert (v2.version, created) == (2, False)
    with pytest.raises(VersionConflict):
        repo.update("Patient", pid, {**patient(given="Clara"), "id": pid}, if_match=1)
    assert repo.read("Patient", pid).resource["name"][0]["given"] == ["Berta"]  # type: ignore[index]
    assert repo.vread("Patient", pid, 1).resource["name"][0]["given"] == ["Anna"]  # type: ignore[index]
    assert [h.version for h in repo.history("Patient", pid)] == [2, 1]


def test_update_as_create_and_id_mismatch(repo: Repository) -> None:
    stored, created = repo.update("Patient", "p-1", {**patient(), "id": "p-1"})
    assert created and stored.version == 1
    with pytest.raises(InvalidResource):
        repo.update("Patient", "p-2", {**patient(), "id": "p-3"})


def test_delete_then_gone_with_history(repo: Repository) -> None:
    pid = repo.create(patient()).id
    repo.delete("Patient", pid)
    with pytest.raises(Gone):
        repo.read("Patient", pid)
    history = repo.history("Patient", pid)
    assert [(h.version, h.deleted) for h in history] == [(2, True), (1, False)]
    assert repo.search("Patient", [("family", "muller")]).total == 0
    assert repo.delete("Patient", pid) is None  # idempotent
    with pytest.raises(NotFound):
        repo.delete("Patient", "nobody")


def test_invalid_write_changes_nothing(vault: Vault, repo: Repository) -> None:
    before = count_rows(vault, resources), count_rows(vault, search_tokens)
    with pytest.raises(InvalidResource):
        repo.create({"resourceType": "Patient", "birthDate": "not a date"})
    with pytest.raises(InvalidResource):
        repo.create(observation("missing-patient"))
    with pytest.raises(InvalidResource):
        repo.create({"resourceType": "Patient", "name": [{"family": 7}]})
    assert (count_rows(vault, resources), count_rows(vault, search_tokens)) == before


def test_search_string_parameters_fold_case_and_accents(repo: Repository) -> None:
    repo.create(patient())
    repo.create(patient(family="Miller", given="Anne"))
    assert repo.search("Patient", [("family", "MULLER")]).total == 1
    assert repo.search("Patient", [("family", "müller")]).total == 1
    assert repo.search("Patient", [("given", "anna")]).total == 1
    assert repo.search("Patient", [("name", "anne")]).total == 1
    assert repo.search("Patient", [("family", "Mull")]).total == 0  # whole words only
    assert repo.search("Patient", [("family", "muller,miller")]).total == 2
    assert repo.search("Patient", [("family", "muller"), ("given", "anne")]).total == 0


def test_search_tokens_dates_and_compartments(repo: Repository) -> None:
    pid = repo.create(patient()).id
    other = repo.create(patient(family="Other", birthDate="1985-07-01")).id
    repo.create(observation(pid))
    repo.create(observation(pid, code="8480-6", when="2021-01-01T00:00:00Z"))
    repo.create(observation(other))
    assert repo.search("Patient", [("identifier", "urn:mrn|A-1")]).total == 2
    assert repo.search("Patient", [("identifier", "other|A-1")]).total == 0
    assert repo.search("Patient", [("birthdate", "1990-02")]).total == 1
    assert repo.search("Patient", [("birthdate", "lt1990")]).total == 1
    assert repo.search("Patient", [("gender", "female")]).total == 2
    assert repo.search("Observation", [("patient", pid)]).total == 2
    assert (
        repo.search("Observation", [("subject", f"Patient/{pid}"), ("code", "8867-4")]).total == 1
    )
    assert repo.search("Observation", [("code", "http://loinc.org|8480-6")]).total == 1
    assert repo.search("Observation", [("date", "ge2021")]).total == 1
    assert repo.search("Observation", [("date", "2020-03-15")]).total == 2
    assert repo.search("Observation", [("date", "gt2020-03-15T09:59:00Z")]).total == 3


def test_paging_and_summary_count(repo: Repository) -> None:
    ids = {repo.create(patient(given=f"G{i}")).id for i in range(7)}
    seen: set[str] = set()
    offset = 0
    while True:
        page = repo.search("Patient", [("_count", "3"), ("_offset", str(offset))])
        assert page.total == 7
        if not page.entries:
            break
        seen.update(e.id for e in page.entries)
        offset += 3
    assert seen == ids
    summary = repo.search("Patient", [("_summary", "count")])
    assert (summary.total, summary.entries) == (7, [])


def test_last_updated_follows_the_injected_clock(vault: Vault, clock: FixedClock) -> None:
    repo = vault.repository(_system())
    first = repo.create(patient()).id
    clock.advance(days=2)
    repo.create(patient(family="Later"))
    assert [e.id for e in repo.search("Patient", [("_lastUpdated", "lt2026-01-02")]).entries] == [
        first
    ]
    assert repo.search("Patient", [("_lastUpdated", "ge2026-01-02")]).total == 1


def test_everything_returns_the_compartment(repo: Repository) -> None:
    pid = repo.create(patient()).id
    other = repo.create(patient(family="Other")).id
    repo.create(observation(pid))
    repo.create(observation(other))
    found = repo.everything(pid)
    assert [f.resource_type for f in found] == ["Patient", "Observation"]
    assert {f.resource["subject"]["reference"] for f in found[1:]} == {f"Patient/{pid}"}  # type: ignore[index]


def test_put_many_versions_and_duplicates(repo: Repository) -> None:
    items = [{**patient(), "id": "bulk-1"}, {**patient(given="B"), "id": "bulk-2"}]
    stored = repo.put_many(items)
    assert [s.version for s in stored] == [1, 1]
    again = repo.put_many(
        [{**patient(given="C"), "id": "bulk-1"}, {**patient(given="D"), "id": "bulk-1"}]
    )
    assert [s.version for s in again] == [2, 3]
    assert repo.read("Patient", "bulk-1").resource["name"][0]["given"] == ["D"]  # type: ignore[index]
    assert repo.search("Patient", [("given", "c")]).total == 0


def _system() -> AccessContext:
    return AccessContext(principal=Principal(id="job", kind="system"), purpose="HOPERAT")


def test_every_call_is_audited_with_patient_ids(vault: Vault, audit_sink: ListAuditSink) -> None:
    repo = vault.repository(_system())
    pid = repo.create(patient()).id
    repo.create(observation(pid))
    repo.read("Patient", pid)
    repo.search("Observation", [("patient", pid)])
    actions = [(e.action, e.outcome, e.patient_ids) for e in audit_sink.events]
    assert actions == [
        ("create", "success", (pid,)),
        ("create", "success", (pid,)),
        ("read", "success", (pid,)),
        ("search", "success", (pid,)),
    ]
    assert all(e.purpose == "HOPERAT" for e in audit_sink.events)


def test_denied_calls_are_refused_and_audited(vault: Vault, audit_sink: ListAuditSink) -> None:
    pid = vault.repository(_system()).create(patient()).id
    nurse = AccessContext(principal=Principal(id="n1", kind="user"), purpose="TREAT")
    repo = vault.repository(nurse)
    # A resource the caller may not read answers exactly like one that does not exist.
    with pytest.raises(NotFound) as hidden:
        repo.read("Patient", pid)
    with pytest.raises(NotFound) as absent:
        repo.read("Patient", "no-such-patient")
    assert str(hidden.value) == str(absent.value).replace("no-such-patient", pid)
    with pytest.raises(AccessDenied):
        repo.create(patient())
    denied = [e for e in audit_sink.events if e.outcome == "denied"]
    assert [(e.action, e.principal) for e in denied] == [
        ("read", "user/n1"),
        ("read", "user/n1"),
        ("create", "user/n1"),
    ]
    assert denied[0].patient_ids == (pid,)


def test_a_failing_audit_sink_fails_the_call(vault: Vault) -> None:
    class Broken:
        def record(self, event: object, conn: object = None) -> None:
            raise OSError("disk full")

    pid = vault.repository(_system()).create(patient()).id
    broken = Vault(vault.engine, vault.keyring, audit=Broken())
    with pytest.raises(Exception, match="audit"):
        broken.repository(_system()).read("Patient", pid)
    with pytest.raises(Exception, match="audit"):
        broken.repository(_system()).create(patient(family="Unaudited"))
    assert vault.repository(_system()).search("Patient", [("family", "unaudited")]).total == 0


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("gt1990-02-10", {"year", "month", "day"}),
        ("lt1990-06", {"year", "month", "day"}),
        ("le1990-02-14", {"year", "month", "day"}),
        ("ge1990-03", {"year"}),
        ("1990-02", {"month", "day"}),
        ("1990", {"year", "month", "day"}),
        ("ge1991", set()),
        ("lt1990-01-01", set()),
    ],
)
def test_partial_dates_overlap_range_searches(
    repo: Repository, query: str, expected: set[str]
) -> None:
    """A birth date known only to the year or month matches the ranges it overlaps."""
    for tag, born in (("year", "1990"), ("month", "1990-02"), ("day", "1990-02-14")):
        repo.create(patient(family=f"Partial{tag}", birthDate=born))
    found = repo.search("Patient", [("birthdate", query)])
    tags = {e.resource["name"][0]["family"].removeprefix("Partial") for e in found.entries}  # type: ignore[index]
    assert tags == expected
    assert found.total == len(expected)

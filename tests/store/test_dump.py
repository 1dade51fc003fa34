"""``store.dump``: a logical dump moves a vault between SQLite and PostgreSQL intact."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from phiguard.records.context import system_context
from phiguard.store import dump, migrate
from phiguard.store.engine import make_engine
from phiguard.system import System, init_home, open_with

PASSPHRASE = "store test passphrase, long enough"


@pytest.fixture
def sqlite_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[System]:
    monkeypatch.setenv("PHIGUARD_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("PHIGUARD_DATABASE_URL", raising=False)
    system, _token = init_home(tmp_path / "home")
    yield system
    system.close()


def _populate(system: System) -> dict[str, str]:
    """A patient with an observation and a condition, an update and a delete."""
    repo = system.vault.repository(system_context())
    patient = repo.create(
        {
            "resourceType": "Patient",
            "name": [{"family": "Dumpová", "given": ["Zoë"]}],
            "birthDate": "1971-03-09",
            "gender": "female",
            "identifier": [{"system": "urn:oid:1.2.36.146", "value": "MRN-D-1"}],
        }
    )
    pid = patient.id
    repo.update("Patient", pid, {**(patient.resource or {}), "gender": "other"}, if_match=1)
    obs = repo.create(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": "2020-05-01T08:00:00Z",
            "valueQuantity": {"value": 72, "unit": "/min"},
        }
    )
    cond = repo.create(
        {
            "resourceType": "Condition",
            "subject": {"reference": f"Patient/{pid}"},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
        }
    )
    repo.delete("Condition", cond.id)
    org = repo.create({"resourceType": "Organization", "name": "Dump General Hospital"})
    return {"patient": pid, "observation": obs.id, "condition": cond.id, "organization": org.id}


def _rows(engine: Engine) -> list[tuple[str, dict[str, Any]]]:
    with engine.connect() as conn:
        return list(dump.dump(conn))


def _canonical(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Order-free form: collation may order text keys differently between databases."""
    return sorted(json.dumps([t, r], sort_keys=True) for t, r in rows)


def _copy(rows: list[tuple[str, dict[str, Any]]], target: Engine) -> int:
    migrate.upgrade(target)
    by_table: dict[str, list[dict[str, Any]]] = {}
    for table, row in rows:
        by_table.setdefault(table, []).append(row)
    loaded = 0
    with target.begin() as conn:
        for table in dump.tables():  # parents before children
            loaded += dump.load(conn, table.name, by_table.get(table.name, []))
    return loaded


def _check_readable(system: System, database_url: str, ids: dict[str, str]) -> None:
    """A system opened on the copy decrypts every record and answers searches."""
    copy = open_with(dataclasses.replace(system.settings, database_url=database_url))
    try:
        repo = copy.vault.repository(system_context())
        patient = repo.read("Patient", ids["patient"])
        assert patient.version == 2
        assert patient.resource is not None
        assert patient.resource["gender"] == "other"
        assert patient.resource["name"][0]["family"] == "Dumpová"
        assert [v.version for v in repo.history("Patient", ids["patient"])] == [2, 1]
        found = repo.search("Patient", [("family", "DUMPOVA"), ("birthdate", "1971-03")])
        assert [s.id for s in found.entries] == [ids["patient"]]
        obs = repo.search("Observation", [("code", "http://loinc.org|8867-4")])
        assert [s.id for s in obs.entries] == [ids["observation"]]
        assert repo.search("Condition", [("patient", ids["patient"])]).total == 0
        assert [s.resource_type for s in repo.everything(ids["patient"])] == [
            "Patient",
            "Observation",
        ]
        assert repo.read("Organization", ids["organization"]).resource is not None
    finally:
        copy.close()


@pytest.mark.postgres
def test_dump_round_trip_sqlite_postgres_sqlite(
    sqlite_system: System, pg_url: str, tmp_path: Path
) -> None:
    ids = _populate(sqlite_system)
    original = _rows(sqlite_system.engine)
    tables = {t for t, _ in original}
    assert {"resources", "resource_heads", "search_tokens", "data_keys", "api_tokens"} <= tables
    with sqlite_system.engine.connect() as conn:
        assert dump.row_count(conn) == len(original)

    pg = make_engine(pg_url)
    try:
        assert _copy(original, pg) == len(original)
        in_pg = _rows(pg)
        with pg.connect() as conn:
            assert dump.row_count(conn) == len(original)
    finally:
        pg.dispose()
    assert _canonical(in_pg) == _canonical(original)
    _check_readable(sqlite_system, pg_url, ids)

    back_url = f"sqlite:///{tmp_path / 'back' / 'phiguard.db'}"
    back = make_engine(back_url)
    try:
        assert _copy(in_pg, back) == len(original)
        assert _canonical(_rows(back)) == _canonical(original)
    finally:
        back.dispose()
    _check_readable(sqlite_system, back_url, ids)


def test_bytes_survive_encode_decode() -> None:
    row = {"token": b"\x00\xff" * 8, "body": memoryview(b"sealed"), "n": 3, "s": "x"}
    decoded = dump.decode(json.loads(json.dumps(dump.encode(row))))
    assert decoded == {"token": b"\x00\xff" * 8, "body": b"sealed", "n": 3, "s": "x"}

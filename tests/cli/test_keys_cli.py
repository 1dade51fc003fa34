"""``phiguard keys`` and ``phiguard patient shred`` through the real command, and the
one-line error contract of the CLI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from phiguard.crypto.keyring import RESERVED
from phiguard.records.context import system_context
from phiguard.records.maintenance import rotate_compartment
from phiguard.store.tables import data_keys, resources
from phiguard.system import System
from tests.cli import (
    PASSPHRASE,
    assert_one_error_line,
    cli,
    cli_env,
    clone_home,
    db,
    make_home,
    ok,
    opened,
    read_every_version,
)

PATIENTS = ("p1", "p2", "p3")


def _fill(system: System) -> None:
    repo = system.vault.repository(system_context())
    repo.create({"resourceType": "Practitioner", "name": [{"family": "Doctor"}]}, rid="dr")
    for pid in PATIENTS:
        repo.create({"resourceType": "Patient", "name": [{"family": f"Fam{pid}"}]}, rid=pid)
        repo.update("Patient", pid, {"resourceType": "Patient", "name": [{"family": "Renamed"}]})
        for i in range(3):
            repo.create(
                {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": f"note {i}"},
                    "subject": {"reference": f"Patient/{pid}"},
                },
                rid=f"{pid}-obs-{i}",
            )
        repo.delete("Observation", f"{pid}-obs-2")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_home(tmp_path_factory.mktemp("keys-template") / "home", _fill)


@pytest.fixture
def home(template: Path, tmp_path: Path) -> Path:
    return clone_home(template, tmp_path / "home")


@pytest.fixture
def engine(home: Path) -> Iterator[Engine]:
    engine = db(home)
    yield engine
    engine.dispose()


def _rows(engine: Engine) -> dict[tuple[str, str, int], Any]:
    with engine.connect() as conn:
        return {(r.rtype, r.rid, int(r.version)): r for r in conn.execute(select(resources)).all()}


def _keys(engine: Engine, compartment: str | None = None) -> list[Any]:
    stmt = select(data_keys).order_by(data_keys.c.compartment, data_keys.c.version)
    if compartment:
        stmt = stmt.where(data_keys.c.compartment == compartment)
    with engine.connect() as conn:
        return list(conn.execute(stmt).all())


def _status(home: Path) -> dict[str, str]:
    out = ok("keys", "status", "--home", home)
    table = {}
    for line in out.splitlines():
        match = re.match(r"\s*(\S.*?)\s{2,}(\S.*?)\s*$", line)
        if match:
            table[match.group(1)] = match.group(2)
    return table


def _sealed(rows: dict[tuple[str, str, int], Any], compartment: str) -> dict[Any, Any]:
    return {k: r for k, r in rows.items() if r.compartment == compartment and r.body is not None}


# -- status, KEK rotation, rewrap ---------------------------------------------------------


def test_status_rotate_and_rewrap(home: Path, engine: Engine) -> None:
    keys = _keys(engine)
    assert {(r.state, r.kek_version) for r in keys} == {("active", 1)}
    compartments = {r.compartment for r in keys}
    assert {"Patient/p1", "Patient/p2", "Patient/p3", "shared"} <= compartments
    assert compartments - {"Patient/p1", "Patient/p2", "Patient/p3", "shared"} <= RESERVED
    n = str(len(keys))
    bodies = {k: r.body for k, r in _rows(engine).items()}

    out = ok("keys", "rotate", "--home", home)
    assert "KEK version 2 created" in out
    status = _status(home)
    assert status["provider"] == "local-file"
    assert status["kek_versions"] == "1,2" and status["current"] == "2"
    assert status["active data keys"] == n
    assert status["wrapped by KEK v1"] == n
    assert status["needing rewrap"] == n

    out = ok("keys", "rewrap", "--home", home)
    assert f"Rewrapped {n} data keys under KEK v2" in out
    status = _status(home)
    assert status["wrapped by KEK v2"] == n and "wrapped by KEK v1" not in status
    assert status["needing rewrap"] == "0"
    assert status["data-key rotations unfinished"] == "0"
    assert {r.kek_version for r in _keys(engine)} == {2}
    assert {k: r.body for k, r in _rows(engine).items()} == bodies, "records untouched"
    with opened(home) as system:
        assert read_every_version(system) == len([b for b in bodies.values() if b is not None])


# -- data-key rotation ------------------------------------------------------------------------


def test_rotate_data_for_one_patient_reseals_every_version(home: Path, engine: Engine) -> None:
    before = _rows(engine)
    out = ok("keys", "rotate-data", "--patient", "p1", "--home", home)
    assert "Rotated 1 compartment(s); re-sealed 5 record versions" in out
    after = _rows(engine)
    p1_before, p1_after = _sealed(before, "Patient/p1"), _sealed(after, "Patient/p1")
    assert len(p1_before) == 5  # patient v1, v2, obs-0, obs-1, obs-2 v1 (v2 is the deletion)
    for key, row in p1_after.items():
        assert row.dek_version == 2 and p1_before[key].dek_version == 1
        assert row.body != p1_before[key].body
    # The deletion marker stays a marker; other compartments are byte-identical.
    assert after[("Observation", "p1-obs-2", 2)].body is None
    for key, row in before.items():
        if row.compartment != "Patient/p1":
            assert after[key].body == row.body and after[key].dek_version == row.dek_version
    keys = {r.version: r for r in _keys(engine, "Patient/p1")}
    assert keys[1].state == "destroyed" and keys[1].wrapped is None
    assert keys[2].state == "active" and keys[2].wrapped is not None
    assert {r.state for r in _keys(engine, "Patient/p2")} == {"active"}
    with opened(home) as system:
        assert read_every_version(system) == sum(1 for r in after.values() if r.body)
        assert system.keyring.compartments_in_rotation() == []


def test_rotate_data_all_rotates_every_record_compartment(home: Path, engine: Engine) -> None:
    before = _rows(engine)
    out = ok("keys", "rotate-data", "--all", "--batch", "2", "--home", home)
    assert "Rotated 4 compartment(s)" in out  # p1, p2, p3 and shared
    after = _rows(engine)
    for key, row in after.items():
        if row.body is not None:
            assert row.dek_version == 2 and row.body != before[key].body, key
    for row in _keys(engine):
        if row.compartment in RESERVED:
            assert (row.version, row.state) == (1, "active")  # not records: never rotated
        elif row.version == 1:
            assert row.state == "destroyed" and row.wrapped is None
        else:
            assert row.state == "active"
    with opened(home) as system:
        assert read_every_version(system) == sum(1 for r in after.values() if r.body)
        repo = system.vault.repository(system_context())
        assert repo.search("Patient", [("family", "Renamed")]).total == 3


def test_rotate_data_resume_finishes_an_interrupted_rotation(home: Path, engine: Engine) -> None:
    class Crash(Exception):
        pass

    def crash(done: int, total: int) -> None:
        raise Crash

    with opened(home) as system, pytest.raises(Crash):
        rotate_compartment(system.vault, "Patient/p2", batch=2, progress=crash)
    states = {r.version: r.state for r in _keys(engine, "Patient/p2")}
    assert states == {1: "retired", 2: "active"}
    versions = {r.dek_version for r in _sealed(_rows(engine), "Patient/p2").values()}
    assert versions == {1, 2}, "the crash landed mid-way"

    out = ok("keys", "rotate-data", "--resume", "--home", home)
    assert "Rotated 1 compartment(s); re-sealed 3 record versions" in out
    assert {r.version: r.state for r in _keys(engine, "Patient/p2")} == {
        1: "destroyed",
        2: "active",
    }
    assert {r.dek_version for r in _sealed(_rows(engine), "Patient/p2").values()} == {2}
    with opened(home) as system:
        assert read_every_version(system) > 0
        assert system.keyring.compartments_in_rotation() == []


def test_rotate_data_refusals(home: Path, engine: Engine) -> None:
    assert_one_error_line(cli("keys", "rotate-data", "--home", home), contains="nothing to rotate")
    ok("patient", "shred", "p3", "--yes", "--home", home)
    before = _keys(engine)
    # Refused before anything is done: p1 (listed first) is not rotated either.
    done = cli("keys", "rotate-data", "--patient", "p1", "--patient", "p3", "--home", home)
    assert_one_error_line(done, contains="Patient/p3 was destroyed")
    done = cli("keys", "rotate-data", "--patient", "nobody", "--home", home)
    assert_one_error_line(done, contains="Patient/nobody has no data key")
    assert _keys(engine) == before


# -- shredding through the CLI --------------------------------------------------------------


def test_shred_needs_confirmation(home: Path, engine: Engine) -> None:
    before = _keys(engine, "Patient/p1")
    no_input = cli("patient", "shred", "p1", "--home", home)
    assert_one_error_line(no_input, contains="nothing was changed")
    wrong = cli("patient", "shred", "p1", "--home", home, stdin="p2\n")
    assert_one_error_line(wrong, contains="confirmation did not match")
    assert _keys(engine, "Patient/p1") == before
    with opened(home) as system:
        repo = system.vault.repository(system_context())
        assert repo.read("Patient", "p1").resource is not None


# -- the error contract -----------------------------------------------------------------------


def test_wrong_passphrase_is_one_line(template: Path) -> None:
    env = cli_env(PHIGUARD_PASSPHRASE=PASSPHRASE + " but wrong")
    line = assert_one_error_line(
        cli("keys", "status", "--home", template, env=env), contains="wrong passphrase"
    )
    assert PASSPHRASE not in line


def test_missing_home_is_one_line(tmp_path: Path) -> None:
    assert_one_error_line(
        cli("keys", "status", "--home", tmp_path / "nowhere"), contains="not a phiguard home"
    )
    assert not (tmp_path / "nowhere").exists()
    assert_one_error_line(cli("keys", "status"), contains="no phiguard home")


def test_missing_passphrase_is_one_line(template: Path) -> None:
    env = cli_env()
    del env["PHIGUARD_PASSPHRASE"]
    assert_one_error_line(
        cli("keys", "rotate", "--home", template, env=env), contains="PHIGUARD_PASSPHRASE"
    )

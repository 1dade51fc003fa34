"""Crash safety: ``kill -9`` in the middle of an import and of a data-key rotation.

The test watches the database from outside (SQLite WAL lets it read while the command
writes) and sends SIGKILL once some work is committed and more is still to do; then
it runs the command again and checks that nothing was lost, nothing was done twice
and every record opens.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from phiguard.records.context import system_context
from phiguard.store.tables import data_keys, import_journal, resource_heads, resources
from phiguard.system import System
from tests.cli import cli_env, db, make_home, ok, opened, read_every_version

IMPORT_RESOURCES = 6_000  # 6 NDJSON units of 1,000 (the importer's block size); above
IMPORT_UNITS = 6  # the importer's threshold for validating in a process pool
PATIENT_EVERY = 4  # one Patient, then three Observations about them


def _write_ndjson(path: Path) -> dict[str, dict[str, Any]]:
    written: dict[str, dict[str, Any]] = {}
    with path.open("w") as fh:
        pid = ""
        for i in range(IMPORT_RESOURCES):
            if i % PATIENT_EVERY == 0:
                pid = f"cp{i:06d}"
                res: dict[str, Any] = {
                    "resourceType": "Patient",
                    "id": pid,
                    "name": [{"family": f"Crashfamily{i}", "given": ["Kim"]}],
                    "gender": "other",
                    "birthDate": "1980-02-29",
                }
            else:
                res = {
                    "resourceType": "Observation",
                    "id": f"co{i:06d}",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "subject": {"reference": f"Patient/{pid}"},
                    "valueQuantity": {"value": i % 180, "unit": "/min"},
                }
            written[res["id"]] = res
            fh.write(json.dumps(res) + "\n")
    return written


def _start(out: Path, *args: str | Path) -> subprocess.Popen[bytes]:
    """The command in a session of its own, so its worker processes can be reaped."""
    with out.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "phiguard.cli", *map(str, args)],
            env=cli_env(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill_when(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], log: Path, timeout: float = 60
) -> None:
    """SIGKILL ``proc`` as soon as ``ready()``; fail if it finishes first."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the command ended before the kill: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the command made no progress to kill it at")
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # orphaned pool workers of the command
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _scalar(engine: Engine, stmt: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


@pytest.fixture
def engine_of() -> Iterator[Callable[[Path], Engine]]:
    engines: list[Engine] = []

    def make(home: Path) -> Engine:
        engines.append(db(home))
        return engines[-1]

    yield make
    for engine in engines:
        engine.dispose()


def test_import_killed_mid_way_resumes_to_exactly_the_input(
    tmp_path: Path, engine_of: Callable[[Path], Engine]
) -> None:
    source = tmp_path / "big.ndjson"
    written = _write_ndjson(source)
    home = make_home(tmp_path / "home")
    engine = engine_of(home)
    journal = select(func.count()).select_from(import_journal)

    log = tmp_path / "import-1.log"
    proc = _start(log, "import", source, "--home", home)
    _kill_when(proc, lambda: _scalar(engine, journal) >= 2, log)
    committed = _scalar(engine, journal)
    assert 2 <= committed < IMPORT_UNITS, "the kill must land mid-way"
    # Whole units only: every committed unit is complete and nothing else is there.
    assert _scalar(engine, select(func.count()).select_from(resources)) == committed * 1000

    out = ok("import", source, "--home", home)
    assert f"{(IMPORT_UNITS - committed) * 1000} resources in {IMPORT_UNITS - committed} units" in (
        out
    )
    assert f"{committed * 1000} resources in {committed} units were already imported" in out

    with engine.connect() as conn:
        units = conn.execute(select(import_journal.c.unit, import_journal.c.resources)).all()
        by_type = dict(
            conn.execute(
                select(resource_heads.c.rtype, func.count()).group_by(resource_heads.c.rtype)
            ).all()
        )
        versions = conn.execute(
            select(func.count(), func.max(resources.c.version)).select_from(resources)
        ).one()
    assert sorted(u.unit for u in units) == list(range(IMPORT_UNITS))
    assert sum(u.resources for u in units) == IMPORT_RESOURCES
    assert by_type == {
        "Patient": IMPORT_RESOURCES // PATIENT_EVERY,
        "Observation": IMPORT_RESOURCES - IMPORT_RESOURCES // PATIENT_EVERY,
    }
    assert tuple(versions) == (IMPORT_RESOURCES, 1), "no resource was written twice"

    with opened(home) as system:
        repo = system.vault.repository(system_context())
        for rid, original in written.items():
            stored = repo.read(original["resourceType"], rid).resource
            assert stored is not None
            stored.pop("meta")
            assert stored == original


def _fill_many(system: System) -> None:
    repo = system.vault.repository(system_context())
    with repo.atomic():
        for p in range(ROTATE_PATIENTS):
            pid = f"rp{p:04d}"
            repo.create({"resourceType": "Patient", "name": [{"family": f"Fam{p}"}]}, rid=pid)
            for i in range(ROTATE_OBS):
                repo.create(
                    {
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": f"note {i}"},
                        "subject": {"reference": f"Patient/{pid}"},
                    },
                    rid=f"{pid}-o{i}",
                )


ROTATE_PATIENTS = 150
ROTATE_OBS = 4


def test_data_key_rotation_killed_mid_way_resumes(
    tmp_path: Path, engine_of: Callable[[Path], Engine]
) -> None:
    home = make_home(tmp_path / "home", _fill_many)
    engine = engine_of(home)
    k = data_keys.c
    destroyed = select(func.count()).where(k.state == "destroyed")
    retired = select(func.count()).where(k.state == "retired")

    # Kill while a compartment is between "new key created" and "old key destroyed".
    for attempt in range(3):
        log = tmp_path / f"rotate-{attempt}.log"
        # One record version per transaction, so the kill lands inside a compartment.
        proc = _start(log, "keys", "rotate-data", "--all", "--batch", "1", "--home", home)
        base = _scalar(engine, destroyed)
        _kill_when(
            proc,
            lambda base=base: (
                _scalar(engine, destroyed) >= base + 5  # type: ignore[misc]
                and _scalar(engine, retired) > 0
            ),
            log,
        )
        if _scalar(engine, retired) > 0:
            break
    else:
        pytest.fail("three kills in a row landed between compartments")

    with engine.connect() as conn:
        mid = conn.execute(select(k.compartment).where(k.state == "retired")).scalars().all()
        assert len(mid) == 1
        in_flight = mid[0]
        versions = (
            conn.execute(
                select(resources.c.dek_version)
                .where(resources.c.compartment == in_flight)
                .distinct()
            )
            .scalars()
            .all()
        )
    assert len(versions) >= 1  # some rows moved, or none yet: both must resume

    out = ok("keys", "rotate-data", "--resume", "--home", home)
    assert "Rotated 1 compartment(s)" in out

    with engine.connect() as conn:
        assert _scalar(engine, retired) == 0
        keys = conn.execute(select(k.compartment, k.version, k.state, k.wrapped)).all()
        active = {r.compartment: r.version for r in keys if r.state == "active"}
        assert len(active) == len({r.compartment for r in keys}), "one active key each"
        for r in keys:
            if r.state == "destroyed":
                assert r.wrapped is None and r.version < active[r.compartment]
        rows = conn.execute(
            select(resources.c.compartment, resources.c.dek_version).where(
                resources.c.body.is_not(None)
            )
        ).all()
    assert all(r.dek_version == active[r.compartment] for r in rows), "sealed under live keys"
    assert active[in_flight] >= 2
    with opened(home) as system:
        assert read_every_version(system) == ROTATE_PATIENTS * (1 + ROTATE_OBS)
        assert system.keyring.compartments_in_rotation() == []

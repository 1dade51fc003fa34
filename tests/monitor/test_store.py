"""Monitoring datasets at rest: sealed chunks, replace and append, dedupe, binding."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select, update

from phiguard.errors import DecryptionError, ImportFailed, MonitorError
from phiguard.monitor.store import DatasetStore, merge
from phiguard.records.vault import Vault
from phiguard.store.tables import monitor_chunks, monitor_loads

UTC = dt.UTC
STAFF_HEADER = (
    "user_id,family_name,given_name,role,department,address,postal_code,hire_date,"
    "termination_date,patient_id\n"
)
ACCESS_HEADER = "timestamp,user_id,patient_id,action,resource_type,workstation\n"


def access_file(path: Path, day: int, n: int) -> Path:
    rows = [
        f"2026-01-{day:02d}T{h % 24:02d}:00:00Z,u{h % 3},p{h},view,Patient,ws\n" for h in range(n)
    ]
    path.write_text(ACCESS_HEADER + "".join(rows))
    return path


@pytest.fixture
def store(vault: Vault) -> DatasetStore:
    return DatasetStore(vault.engine, vault.keyring, clock=vault.clock)


def test_access_loads_append_and_identical_reloads_are_skipped(
    store: DatasetStore, tmp_path: Path
) -> None:
    first = store.ingest(access_file(tmp_path / "a.csv", 1, 30), "access", by="operator/t")
    assert (first.rows, first.rejected, first.duplicate) == (30, 0, False)
    again = store.ingest(tmp_path / "a.csv", "access", by="operator/t")
    assert again.duplicate and again.load_id == first.load_id and again.rows == 0
    second = store.ingest(access_file(tmp_path / "b.csv", 2, 10), "access", by="operator/t")
    assert second.rows == 10
    assert store.frame("access").height == 40
    assert store.count("access") == 40
    # ``since`` opens only later events (chunks wholly before it are not even opened).
    later = store.frame("access", since=dt.datetime(2026, 1, 2, tzinfo=UTC))
    assert later.height == 10


def test_roster_loads_replace_the_previous_one_and_delete_its_chunks(
    store: DatasetStore, tmp_path: Path
) -> None:
    old = tmp_path / "s1.csv"
    old.write_text(STAFF_HEADER + "u1,Old,Ann,nurse,ED,1 Elm,1,2020-01-01,,\n")
    new = tmp_path / "s2.csv"
    new.write_text(
        STAFF_HEADER
        + "u1,New,Ann,nurse,ED,1 Elm,1,2020-01-01,,\nu2,New,Bo,nurse,ED,1 Elm,1,2020-01-01,,\n"
    )
    first = store.ingest(old, "staff", by="operator/t")
    result = store.ingest(new, "staff", by="operator/t")
    assert result.replaced == 1
    staff = store.frame("staff")
    assert staff["family_name"].to_list() == ["New", "New"]
    with store.engine.connect() as conn:
        left = conn.execute(
            select(monitor_chunks.c.seq).where(monitor_chunks.c.load_id == first.load_id)
        ).all()
        state = conn.execute(
            select(monitor_loads.c.state).where(monitor_loads.c.load_id == first.load_id)
        ).scalar()
    assert left == [] and state == "replaced"
    assert [info.state for info in store.loads("staff")] == ["active", "replaced"]


def test_a_file_with_no_usable_row_keeps_the_previous_roster(
    store: DatasetStore, tmp_path: Path
) -> None:
    good = tmp_path / "s1.csv"
    good.write_text(STAFF_HEADER + "u1,Kept,Ann,nurse,ED,1 Elm,1,2020-01-01,,\n")
    store.ingest(good, "staff", by="operator/t")
    bad = tmp_path / "s2.csv"
    bad.write_text(STAFF_HEADER + ",Lost,Ann,nurse,ED,1 Elm,1,2020-01-01,,\n")
    with pytest.raises(MonitorError, match="no usable rows"):
        store.ingest(bad, "staff", by="operator/t")
    assert store.frame("staff")["family_name"].to_list() == ["Kept"]
    with store.engine.connect() as conn:
        states = sorted(conn.execute(select(monitor_loads.c.state)).scalars())
    assert states == ["active"]  # the refused load left nothing behind


def test_chunks_are_ciphertext_bound_to_their_place(store: DatasetStore, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        "patient_id,mrn,family_name,given_name,birth_date,address,postal_code,vip\n"
        "p1,MRN77,Xylophonia,Quentin,1970-01-01,9 Canary Row,99999,true\n"
    )
    store.ingest(path, "patients", by="operator/t")
    with store.engine.connect() as conn:
        sealed = conn.execute(
            select(monitor_chunks.c.sealed).where(monitor_chunks.c.kind == "patients")
        ).scalar_one()
    assert b"Xylophonia" not in sealed and b"Canary Row" not in sealed
    assert store.frame("patients")["family_name"].to_list() == ["Xylophonia"]
    # The same ciphertext presented as another kind (or another load) does not open.
    with store.engine.begin() as conn:
        conn.execute(update(monitor_chunks).values(kind="staff"))
        conn.execute(update(monitor_loads).values(kind="staff"))
    with pytest.raises(DecryptionError):
        store.frame("staff")


def test_unreadable_files_say_why(store: DatasetStore, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ImportFailed, match="is empty"):
        store.ingest(empty, "access", by="operator/t")
    with pytest.raises(ImportFailed, match="cannot read"):
        store.ingest(tmp_path / "missing.csv", "access", by="operator/t")
    assert store.loads() == []


def test_dataset_and_merge(store: DatasetStore, tmp_path: Path) -> None:
    store.ingest(access_file(tmp_path / "a.csv", 1, 5), "access", by="operator/t")
    stored = store.dataset()
    assert stored.access.height == 5 and stored.staff.height == 0
    both = merge(stored, stored)
    assert both.access.height == 10  # events add up
    assert both.staff.height == 0

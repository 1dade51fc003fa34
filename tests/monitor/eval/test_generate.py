"""The traffic generator: deterministic, ground truth consistent, canonical CSVs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import polars as pl

from phiguard.monitor.eval.generate import generate, write_csv
from phiguard.monitor.eval.scenarios import KINDS
from phiguard.monitor.frames import SCHEMAS
from phiguard.monitor.scan import scan
from phiguard.synth.roster import CARE_COLUMNS, PATIENT_COLUMNS, STAFF_COLUMNS


def test_same_seed_same_traffic_other_seed_other_traffic() -> None:
    a = generate(11, patients=1000, days=40, history_days=10)
    b = generate(11, patients=1000, days=40, history_days=10)
    c = generate(12, patients=1000, days=40, history_days=10)
    assert a.dataset.access.equals(b.dataset.access) and a.labels.equals(b.labels)
    assert a.instances == b.instances
    assert not a.dataset.access.equals(c.dataset.access)


def test_ground_truth_is_consistent_with_the_frames() -> None:
    t = generate(11, patients=1000, days=40, history_days=10)
    access = t.dataset.access.with_columns(t.labels)
    assert access["timestamp"].is_sorted()
    injected = access.filter(pl.col("label").is_not_null())
    assert injected["timestamp"].min() >= t.since  # type: ignore[operator]
    users = [i.user_id for i in t.instances]
    assert len(users) == len(set(users)), "one perpetrator per instance"
    assert {i.kind for i in t.instances} == set(KINDS)
    for instance in t.instances:
        rows = injected.filter(pl.col("label") == instance.id)
        assert rows.height > 0
        assert set(rows["user_id"]) == {instance.user_id}
        assert set(rows["patient_id"]) <= set(instance.patient_ids)
        assert rows["timestamp"].min() == instance.first_event_at


def test_benign_traffic_is_mostly_explained_and_no_terminated_user_works() -> None:
    t = generate(11, patients=1000, days=40, history_days=10)
    result = scan(t.dataset, since=t.since)
    benign = result.explained.filter(t.labels.is_null())
    assert benign.mean() > 0.95  # type: ignore[operator]
    staff = t.dataset.staff.filter(pl.col("termination_date").is_not_null())
    after = (
        t.dataset.access.with_columns(t.labels)
        .join(staff.select("user_id", "termination_date"), on="user_id")
        .filter(pl.col("timestamp").dt.date() >= pl.col("termination_date"))
    )
    assert after["label"].null_count() == 0


def test_csvs_have_the_canonical_columns_and_a_manifest(tmp_path: Path) -> None:
    t = generate(11, patients=1000, days=40, history_days=10, kinds=("family", "self"))
    paths = write_csv(t, tmp_path)
    assert {p.name for p in paths} == {
        "access.csv",
        "auth.csv",
        "staff.csv",
        "patients.csv",
        "care.csv",
        "manifest.json",
    }

    def header(name: str) -> list[str]:
        with (tmp_path / name).open(newline="") as f:
            return next(csv.reader(f))

    assert header("access.csv") == list(SCHEMAS["access"])
    assert header("auth.csv") == ["timestamp", "user_id", "source", "outcome"]
    assert header("staff.csv") == list(STAFF_COLUMNS)
    assert header("patients.csv") == list(PATIENT_COLUMNS)
    assert header("care.csv") == list(CARE_COLUMNS)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {i["kind"] for i in manifest["instances"]} == {"family", "self"}
    rows = t.labels.to_frame().with_row_index().filter(pl.col("label").is_not_null())
    assert sum(len(r) for r in manifest["injected_rows"].values()) == rows.height

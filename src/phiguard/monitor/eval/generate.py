"""``generate``: a synthetic hospital, months of traffic, injected scenarios, the manifest.

The scanned frames come straight from memory; ``write_csv`` writes the same data in
the canonical CSV formats (plus ``manifest.json``) so the ingest path can be tested
against the very data the evaluation scores.  The data is synthetic: names and
addresses come from the synthetic hospital's pools, never from real people.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from phiguard.monitor.eval.scenarios import KINDS, TUNING_PARAMS, Injector, Instance, ScenarioParams
from phiguard.monitor.eval.traffic import TrafficParams, build_base, frames
from phiguard.monitor.frames import Dataset
from phiguard.synth import generate_hospital


@dataclass(frozen=True)
class Traffic:
    """Frames to scan plus the ground truth."""

    dataset: Dataset
    labels: pl.Series
    """Injected instance id per access row (null: benign)."""
    instances: tuple[Instance, ...]
    since: dt.datetime
    """Accesses before this are history: no scenario is injected there."""
    seed: int
    patients: int
    days: int
    history_days: int


def generate(
    seed: int,
    *,
    patients: int = 2000,
    days: int = 90,
    history_days: int = 21,
    kinds: tuple[str, ...] = KINDS,
    params: ScenarioParams = TUNING_PARAMS,
    traffic: TrafficParams | None = None,
) -> Traffic:
    """Deterministic in all arguments."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown scenario kind(s): {', '.join(unknown)}")
    if not 1 <= history_days < days:
        raise ValueError("history_days must be at least 1 and fewer than days")
    hospital = generate_hospital(seed, patients=patients, days=days)
    base = build_base(hospital, seed, traffic or TrafficParams())
    injector = Injector(base, params, history_days)
    instances = injector.run(kinds)
    access, staff, patient_frame, care, auth, labels = frames(base)
    # A night shift that starts on the last day runs past the period: an instance
    # whose accesses all fall outside it was never injected.
    present = set(labels.drop_nulls().unique().to_list())
    instances = [i for i in instances if i.id in present]
    since = dt.datetime.combine(hospital.start, dt.time(0), tzinfo=dt.UTC) + dt.timedelta(
        days=history_days
    )
    return Traffic(
        dataset=Dataset.of(
            access=access, staff=staff, patients=patient_frame, care=care, auth=auth
        ),
        labels=labels,
        instances=tuple(instances),
        since=since,
        seed=seed,
        patients=patients,
        days=days,
        history_days=history_days,
    )


def write_csv(traffic: Traffic, directory: Path) -> list[Path]:
    """The canonical CSVs (access, auth, staff, patients, care) and ``manifest.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    ds = traffic.dataset
    paths: list[Path] = []
    for name, frame in (
        ("access", ds.access),
        ("auth", ds.auth.drop("secret_hash")),
        ("staff", ds.staff),
        ("patients", ds.patients),
        ("care", ds.care),
    ):
        path = directory / f"{name}.csv"
        frame.write_csv(path, datetime_format="%Y-%m-%dT%H:%M:%S%.6f%:z")
        paths.append(path)
    manifest = {
        "seed": traffic.seed,
        "patients": traffic.patients,
        "days": traffic.days,
        "since": traffic.since.isoformat(),
        "instances": [
            {**asdict(i), "first_event_at": i.first_event_at.isoformat()} for i in traffic.instances
        ],
        "injected_rows": {
            iid: rows
            for iid, rows in sorted(
                pl.DataFrame({"label": traffic.labels})
                .with_row_index("row")
                .filter(pl.col("label").is_not_null())
                .group_by("label")
                .agg(pl.col("row"))
                .iter_rows()
            )
        },
    }
    path = directory / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    paths.append(path)
    return paths

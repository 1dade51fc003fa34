"""``scan(dataset)``: explain every access, run the detectors, score, group into cases.

This is the one entry point the rest of phiguard calls (the ``monitor`` commands,
the streaming watcher, the evaluation).  It is pure: frames in, results out, no
I/O, no logging, nothing printed, so it never writes PHI anywhere; the result holds
ids, counts and times, and texts written for a reader who must not see names.

``since`` splits the accesses: earlier ones are history (habits, baselines) and
raise nothing; ``history`` adds older data for the same purpose.  Results are
deterministic: frames are sorted before anything is named, and ids are hashes of
what was found.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import polars as pl

from phiguard.errors import MonitorError
from phiguard.monitor.cases import Case, build_cases
from phiguard.monitor.config import DetectionConfig
from phiguard.monitor.detectors import FAMILIES
from phiguard.monitor.detectors.base import Candidate, Context, Evidence, as_utc
from phiguard.monitor.explain import EXPLANATIONS, explain
from phiguard.monitor.frames import Dataset
from phiguard.monitor.scoring import Alert, to_alert

__all__ = ["Alert", "Case", "DetectionConfig", "Evidence", "ScanResult", "scan"]

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class ScanResult:
    alerts: tuple[Alert, ...]
    cases: tuple[Case, ...]
    """Highest score first."""
    explained: pl.Series
    """bool, one per ``dataset.access`` row."""
    explained_by: pl.Series
    """The strongest reason per row (see ``explain.EXPLANATIONS``), null if none."""
    stats: dict[str, Any]


def _normalise(text: str) -> pl.Expr:
    """Case, spacing and punctuation folded, so "12 Oak St." matches "12 oak st"."""
    return (
        pl.col(text)
        .str.to_lowercase()
        .str.replace_all(r"[.,#'\-]", " ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
    )


def _staff(dataset: Dataset) -> pl.DataFrame:
    return dataset.staff.unique("user_id", keep="last", maintain_order=True).select(
        "user_id",
        "role",
        "department",
        _normalise("family_name").alias("fam"),
        _normalise("address").alias("addr"),
        _normalise("postal_code").alias("postal"),
        _normalise("address").str.replace(r"^\d+[a-z]?\s+", "").alias("street"),
        pl.col("patient_id").alias("own_patient"),
        "termination_date",
    )


def _patients(dataset: Dataset, staff: pl.DataFrame) -> pl.DataFrame:
    employees = (
        staff.filter(pl.col("own_patient").is_not_null())
        .unique("own_patient", keep="first", maintain_order=True)
        .select(
            pl.col("own_patient").alias("patient_id"),
            pl.col("user_id").alias("employee_user"),
            pl.col("department").alias("employee_dept"),
        )
    )
    return (
        dataset.patients.unique("patient_id", keep="last", maintain_order=True)
        .select(
            "patient_id",
            _normalise("family_name").alias("p_fam"),
            _normalise("address").alias("p_addr"),
            _normalise("postal_code").alias("p_postal"),
            _normalise("address").str.replace(r"^\d+[a-z]?\s+", "").alias("p_street"),
            pl.col("vip").fill_null(False),
            pl.col("mrn")
            .str.extract(r"(\d+)\D*$")
            .cast(pl.Int64, strict=False)
            .alias("mrn_number"),
        )
        .join(employees, on="patient_id", how="left")
        .with_columns((pl.len().over("p_street", "p_postal") / pl.len()).alias("street_share"))
    )


def _merge(dataset: Dataset, history: Dataset | None) -> tuple[Dataset, pl.DataFrame, int]:
    """The reference frames to use, all accesses (history first) and how many are history."""
    if history is None:
        return dataset, dataset.access, 0
    staff = dataset.staff if dataset.staff.height else history.staff
    patients = dataset.patients if dataset.patients.height else history.patients
    care = pl.concat([history.care, dataset.care]).unique(maintain_order=True)
    auth = pl.concat([history.auth, dataset.auth])
    merged = Dataset(access=dataset.access, staff=staff, patients=patients, care=care, auth=auth)
    return merged, pl.concat([history.access, dataset.access]), history.access.height


class _Clock:
    def __init__(self, progress: Progress | None, stages: int) -> None:
        self.timings: dict[str, float] = {}
        self.progress = progress
        self.stages = stages
        self.done = 0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.progress is not None:
            self.progress(name, self.done / self.stages)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 4)
            self.done += 1
            if self.progress is not None:
                self.progress(name, self.done / self.stages)


def scan(
    dataset: Dataset,
    *,
    config: DetectionConfig | None = None,
    since: dt.datetime | None = None,
    history: Dataset | None = None,
    progress: Progress | None = None,
) -> ScanResult:
    """Explain, detect, score and group the accesses of ``dataset``."""
    cfg = config or DetectionConfig()
    if since is not None:
        since = as_utc(since)
    clock = _Clock(progress, len(FAMILIES) + 3)
    try:
        import zoneinfo

        zoneinfo.ZoneInfo(cfg.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise MonitorError(
            f"unknown time zone in monitoring configuration: {cfg.timezone}"
        ) from exc

    with clock.stage("prepare"):
        merged, access, n_history = _merge(dataset, history)
        n = dataset.access.height
        staff = _staff(merged)
        patients = _patients(merged, staff)
        local = pl.col("timestamp").dt.convert_time_zone(cfg.timezone)
        index = pl.int_range(0, pl.len(), dtype=pl.Int64)
        events = access.with_columns(
            pl.when(index >= n_history)
            .then(index - n_history)
            .otherwise(None)
            .cast(pl.UInt32)
            .alias("row"),
            pl.col("timestamp").dt.epoch("us").alias("t"),
            local.dt.hour().cast(pl.Int8).alias("hour"),
            local.dt.date().alias("day"),
        )
        alertable = pl.col("row").is_not_null()
        if since is not None:
            alertable = alertable & (pl.col("timestamp") >= since)
        events = events.with_columns(alertable.alias("alertable"))
        auth = merged.auth
        if history is not None:
            auth_alertable = pl.int_range(0, pl.len()) >= history.auth.height
        else:
            auth_alertable = pl.lit(True)
        if since is not None:
            auth_alertable = auth_alertable & (pl.col("timestamp") >= since)
        auth = auth.with_columns(
            auth_alertable.alias("alertable"),
            pl.col("timestamp").dt.epoch("us").alias("t"),
            pl.col("timestamp").dt.convert_time_zone(cfg.timezone).dt.date().alias("day"),
        )

    with clock.stage("explain"):
        internal = events.select(
            pl.int_range(0, pl.len(), dtype=pl.UInt32).alias("row"),
            "timestamp",
            "user_id",
            "patient_id",
        )
        reasons = explain(internal, merged.staff, merged.care, cfg)
        events = events.with_columns(reasons.alias("explained_by"))
        explained_by = events["explained_by"].slice(n_history, n)

    ctx = Context(config=cfg, events=events, staff=staff, patients=patients, auth=auth)
    candidates: list[Candidate] = []
    for name, detect in FAMILIES:
        with clock.stage(name):
            candidates.extend(detect(ctx))

    with clock.stage("cases"):
        kept = [c for c in candidates if c.score >= cfg.report_threshold]
        alerts = [to_alert(c) for c in kept]
        detected: dict[str, dt.datetime] = {}
        unique: dict[str, Alert] = {}
        for candidate, alert in zip(kept, alerts, strict=True):
            if alert.id not in unique or alert.score > unique[alert.id].score:
                unique[alert.id] = alert
                detected[alert.id] = candidate.detected_at
        cases = build_cases(list(unique.values()), detected, cfg.alert_threshold)
        in_case = {alert_id for case in cases for alert_id in case.alert_ids}
        final = sorted(
            (a for a in unique.values() if a.score >= cfg.alert_threshold or a.id in in_case),
            key=lambda a: (-a.score, a.first_event_at, a.id),
        )

    counts = explained_by.value_counts()
    by_kind = {
        kind: int(count)
        for kind, count in zip(counts["explained_by"], counts["count"], strict=True)
        if kind is not None
    }
    n_explained = sum(by_kind.values())
    by_detector: dict[str, int] = {}
    for alert in final:
        by_detector[alert.detector] = by_detector.get(alert.detector, 0) + 1
    stats: dict[str, Any] = {
        "accesses": n,
        "history_accesses": n_history,
        "alertable_accesses": int(events["alertable"].sum()),
        "auth_events": int(auth.height),
        "explained": n_explained,
        "explained_fraction": (n_explained / n) if n else 1.0,
        "explained_by": {kind: by_kind.get(kind, 0) for kind in EXPLANATIONS},
        "candidates": len(candidates),
        "below_report_threshold": len(candidates) - len(kept),
        "alerts": len(final),
        "alerts_by_detector": dict(sorted(by_detector.items())),
        "alerts_at_threshold": sum(1 for a in final if a.score >= cfg.alert_threshold),
        "cases": len(cases),
        "timings": clock.timings,
    }
    return ScanResult(
        alerts=tuple(final),
        cases=tuple(cases),
        explained=explained_by.is_not_null().alias("explained"),
        explained_by=explained_by,
        stats=stats,
    )

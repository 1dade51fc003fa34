"""Monitoring scan at hospital scale: ten million accesses in one batch.

The frames (5,000 staff, 500,000 patients, about 1.5 million care relationships and
10 million accesses over 90 days) are built directly in Polars from hashes of row
numbers -- the object-level synthetic hospital would take far longer than the scan
itself.  Most accesses follow a care relationship (the user's own, a ward
colleague's, billing after discharge); a few per cent are unexplained noise.

- **baseline** (same run): what the frames cost before any detection: schema check
  (``Dataset.of``), a sort of the accesses by time and one group-by of accesses per
  user and day -- the minimum any scan must do.
- **scan**: ``phiguard.monitor.scan.scan`` with the default configuration, with the
  time of each stage from its ``stats["timings"]``.
- **peak memory**: ``ru_maxrss`` of this process (a high-water mark: it includes
  building the frames).
"""

from __future__ import annotations

import datetime as dt
import gc
import resource
import time
from typing import Any

import polars as pl

from phiguard.monitor.frames import Dataset
from phiguard.monitor.scan import scan

from .common import Result, median, spread, table

DEFAULT_EVENTS = 10_000_000
QUICK_EVENTS = 500_000
STAFF = 5_000
PATIENTS = 500_000
DAYS = 90
TARGET_SECONDS = 60.0
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
DEPARTMENTS = (
    "Emergency",
    "Cardiology",
    "Oncology",
    "Pediatrics",
    "Psychiatry",
    "Obstetrics",
    "Orthopedics",
    "Internal Medicine",
    "Radiology",
)
US_PER_DAY = 86_400_000_000


def _h(n: int, salt: int) -> pl.Expr:
    """A deterministic pseudo-random UInt64 per row number."""
    return pl.int_range(0, n, dtype=pl.UInt64).hash(seed=salt)


def build(events: int, *, staff: int = STAFF, patients: int = PATIENTS, seed: int = 1) -> Dataset:
    """The hospital-scale frames; deterministic in the arguments."""
    s = seed * 1000
    n_dept = len(DEPARTMENTS)
    roles = (
        ["physician"] * 22
        + ["nurse"] * 42
        + ["billing"] * 8
        + ["registration"] * 9
        + ["him"] * 6
        + ["researcher"] * 5
        + ["privacy_officer"] * 3
        + ["security_admin"] * 5
    )
    dept_of_role = {
        "billing": "Billing",
        "registration": "Registration",
        "him": "Health Information Management",
        "researcher": "Research",
        "privacy_officer": "Privacy Office",
        "security_admin": "IT Security",
    }
    staff_frame = (
        pl.DataFrame({"i": pl.int_range(0, staff, eager=True)})
        .with_columns(
            pl.format("u{}", pl.col("i").cast(pl.String).str.zfill(5)).alias("user_id"),
            pl.lit("Staff").alias("family_name"),
            pl.lit("Member").alias("given_name"),
            pl.lit(pl.Series(roles)).gather(_h(staff, s + 1) % len(roles)).alias("role"),
            (_h(staff, s + 2) % n_dept).alias("d"),
            pl.format("{} Staff Way", pl.col("i")).alias("address"),
            pl.format("{}", (_h(staff, s + 3) % 900 + 100)).str.zfill(5).alias("postal_code"),
            pl.lit(dt.date(2015, 1, 1)).alias("hire_date"),
            pl.when(_h(staff, s + 4) % 100 < 3)
            .then(pl.lit(dt.date(2025, 4, 15)))  # leaving after the scanned period
            .otherwise(None)
            .alias("termination_date"),
            pl.when(_h(staff, s + 5) % 10 < 3)
            .then(pl.format("p{}", (_h(staff, s + 6) % patients).cast(pl.String).str.zfill(7)))
            .otherwise(None)
            .alias("patient_id"),
        )
        .with_columns(
            pl.col("role")
            .replace_strict(dept_of_role, default=None)
            .fill_null(pl.lit(pl.Series(DEPARTMENTS)).gather(pl.col("d")))
            .alias("department")
        )
    )
    staff_df = staff_frame.select(
        "user_id",
        "family_name",
        "given_name",
        "role",
        "department",
        "address",
        "postal_code",
        "hire_date",
        "termination_date",
        "patient_id",
    )
    patients_df = pl.DataFrame({"i": pl.int_range(0, patients, eager=True)}).select(
        pl.format("p{}", pl.col("i").cast(pl.String).str.zfill(7)).alias("patient_id"),
        pl.format("MRN{}", pl.col("i").cast(pl.String).str.zfill(7)).alias("mrn"),
        pl.format("Fam{}", _h(patients, s + 7) % 5000).alias("family_name"),
        pl.lit("Pat").alias("given_name"),
        pl.lit(dt.date(1970, 1, 1)).alias("birth_date"),
        pl.format("{} Street {}", _h(patients, s + 8) % 200, _h(patients, s + 9) % 8000).alias(
            "address"
        ),
        pl.format("{}", _h(patients, s + 10) % 900 + 100).str.zfill(5).alias("postal_code"),
        (_h(patients, s + 11) % 1000 < 5).alias("vip"),
    )
    clinical = staff_df.filter(pl.col("role").is_in(["physician", "nurse"])).select(
        "user_id", "department"
    )
    n_care = max(1000, events * 3 // 20)
    start_us = int(START.timestamp() * 1_000_000)
    kinds = pl.Series(["encounter"] * 7 + ["appointment"] * 2 + ["care_team"])
    care = (
        pl.DataFrame({"n": pl.int_range(0, n_care, eager=True)})
        .with_columns(
            (_h(n_care, s + 12) % clinical.height).cast(pl.Int64).alias("k"),
            pl.format("p{}", (_h(n_care, s + 13) % patients).cast(pl.String).str.zfill(7)).alias(
                "patient_id"
            ),
            (start_us + (_h(n_care, s + 14) % (DAYS * US_PER_DAY)).cast(pl.Int64)).alias("t0"),
            ((_h(n_care, s + 15) % (8 * 3_600_000_000)) + 1_800_000_000).cast(pl.Int64).alias("d"),
            pl.lit(kinds).gather(_h(n_care, s + 16) % len(kinds)).alias("kind"),
        )
        .with_columns(
            pl.lit(clinical["user_id"]).gather(pl.col("k")).alias("user_id"),
            pl.lit(clinical["department"]).gather(pl.col("k")).alias("department"),
        )
        .select(
            "patient_id",
            "user_id",
            "department",
            pl.col("t0").cast(pl.Datetime("us", "UTC")).alias("start"),
            pl.when(pl.col("kind") == "care_team")
            .then(None)
            .otherwise(pl.col("t0") + pl.col("d"))
            .cast(pl.Datetime("us", "UTC"))
            .alias("end"),
            "kind",
        )
    )
    # Accesses: 80% the relationship's own user, 10% a ward colleague, 4% billing after
    # discharge, 6% unexplained noise by anyone.
    n = events
    which = (_h(n, s + 20) % n_care).cast(pl.Int64)
    mode = _h(n, s + 21) % 100
    base = care.select(
        pl.col("patient_id").gather(which),
        pl.col("user_id").gather(which),
        pl.col("department").gather(which),
        pl.col("start").dt.epoch("us").gather(which).alias("t0"),
    ).with_columns(
        mode.alias("mode"), (_h(n, s + 22) % (36 * 3_600_000_000)).cast(pl.Int64).alias("dt")
    )
    colleagues = clinical.with_columns(
        pl.int_range(0, pl.len()).over("department").cast(pl.Int64).alias("j")
    ).rename({"user_id": "colleague"})
    ward_size = colleagues.group_by("department").agg(pl.len().cast(pl.Int64).alias("m"))
    billing = staff_df.filter(pl.col("role") == "billing")["user_id"]
    everyone = staff_df["user_id"]
    base = base.join(ward_size, on="department", how="left").with_columns(
        (pl.col("dt") % pl.col("m")).alias("j")
    )
    base = base.join(colleagues, on=["department", "j"], how="left")
    access = base.with_columns(
        pl.when(pl.col("mode") < 80)
        .then(pl.col("user_id"))
        .when(pl.col("mode") < 90)
        .then(pl.col("colleague"))
        .when(pl.col("mode") < 94)
        .then(pl.lit(billing).gather(pl.col("dt") % billing.len()))
        .otherwise(pl.lit(everyone).gather(pl.col("dt") % everyone.len()))
        .alias("user"),
        pl.when(pl.col("mode") < 90)
        .then(pl.col("t0") + pl.col("dt") // 12)
        .otherwise(pl.col("t0") + pl.col("dt") * 10)
        .alias("t"),
        pl.when(pl.col("mode") >= 94)
        .then(pl.format("p{}", (pl.col("dt") % patients).cast(pl.String).str.zfill(7)))
        .otherwise(pl.col("patient_id"))
        .alias("patient"),
    ).select(
        pl.col("t").cast(pl.Datetime("us", "UTC")).alias("timestamp"),
        pl.col("user").alias("user_id"),
        pl.col("patient").alias("patient_id"),
        pl.when(pl.col("dt") % 50 == 0)
        .then(pl.lit("print"))
        .otherwise(pl.lit("view"))
        .alias("action"),
        pl.lit(pl.Series(["Patient", "Observation", "Condition", "Encounter", "DocumentReference"]))
        .gather(pl.col("dt") % 5)
        .alias("resource_type"),
        pl.format("ws-{}", (pl.col("user").hash(seed=3) + pl.col("dt") % 2) % 400).alias(
            "workstation"
        ),
    )
    return Dataset.of(access=access, staff=staff_df, patients=patients_df, care=care)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(*, events: int, rounds: int, seed: int) -> Result:
    t0 = time.perf_counter()
    dataset = build(events, seed=seed)
    build_s = time.perf_counter() - t0
    after_build = _peak_mib()
    baseline_s: list[float] = []
    scan_s: list[float] = []
    stages: dict[str, list[float]] = {}
    last: dict[str, Any] = {}
    for _ in range(rounds):
        gc.collect()
        t = time.perf_counter()
        checked = Dataset.of(
            access=dataset.access,
            staff=dataset.staff,
            patients=dataset.patients,
            care=dataset.care,
            auth=dataset.auth,
        )
        ordered = checked.access.sort("timestamp")
        ordered.group_by("user_id", ordered["timestamp"].dt.date()).len()
        baseline_s.append(time.perf_counter() - t)
        del checked, ordered
        t = time.perf_counter()
        result = scan(dataset)
        scan_s.append(time.perf_counter() - t)
        for name, seconds in result.stats["timings"].items():
            stages.setdefault(name, []).append(seconds)
        last = result.stats
        del result
    peak = _peak_mib()
    med_scan, med_base = median(scan_s), median(baseline_s)
    res = Result(
        name="monitor",
        command=f"python -m bench monitor --accesses {events} --rounds {rounds}",
        parameters={
            "events": f"{events:,}",
            "staff": f"{STAFF:,}",
            "patients": f"{PATIENTS:,}",
            "care relationships": f"{dataset.care.height:,}",
            "days": DAYS,
            "rounds": rounds,
            "polars threads": pl.thread_pool_size(),
        },
    )
    res.tables.append(
        (
            "batch scan vs baseline (seconds, median over rounds)",
            table(
                ["step", "median s", "rounds", "ratio to baseline"],
                [
                    ["build frames (once, not timed in rounds)", build_s, "1", "-"],
                    [
                        "baseline: check + sort + per-user-day group-by",
                        med_base,
                        spread(baseline_s),
                        "1.00",
                    ],
                    ["scan (everything)", med_scan, spread(scan_s), f"{med_scan / med_base:.1f}x"],
                ],
            ),
        )
    )
    res.tables.append(
        (
            "scan stages (median s)",
            table(["stage", "median s"], [[k, median(v)] for k, v in stages.items()]),
        )
    )
    res.tables.append(
        (
            "result of the last round",
            table(
                ["figure", "value"],
                [
                    ["explained fraction", f"{last.get('explained_fraction', 0):.2%}"],
                    ["alerts", last.get("alerts", 0)],
                    ["cases", last.get("cases", 0)],
                    ["peak RSS after building frames (MiB)", after_build],
                    ["peak RSS (ru_maxrss, MiB)", peak],
                ],
            ),
        )
    )
    if events >= DEFAULT_EVENTS:
        res.targets.append(
            (
                f"batch scan of {events:,} events <= {TARGET_SECONDS:.0f} s on 2 cores",
                f"{med_scan:.1f} s (baseline {med_base:.1f} s)",
                med_scan <= TARGET_SECONDS,
            )
        )
    res.figures = {
        "scan_s": scan_s,
        "baseline_s": baseline_s,
        "build_s": build_s,
        "stages": stages,
        "peak_rss_mib": peak,
        "rss_after_build_mib": after_build,
        "stats": {k: v for k, v in last.items() if k != "timings"},
    }
    return res

"""Browsing patterns: records opened in MRN order, demographics-only browsing, and
serial unexplained access (low and slow).

Each single access here may look innocent; the pattern is the finding.  Serial
snooping is judged per user over the whole scan: the number of distinct patients
the user opened without any explanation, against what the user's peers (same role
and department) show per patient opened.  A snooper who takes one record a week
never trips a daily detector, but does stand out from peers over a month.
"""

from __future__ import annotations

import math

import polars as pl

from phiguard.monitor.config import DEMOGRAPHIC_TYPES
from phiguard.monitor.detectors.base import Candidate, Context, Evidence, groups, plural


def mrn_browsing(ctx: Context) -> list[Candidate]:
    cfg = ctx.config
    rows = ctx.unexplained.join(
        ctx.patients.select("patient_id", "mrn_number"), on="patient_id", how="inner"
    ).filter(pl.col("mrn_number").is_not_null())
    if rows.is_empty():
        return []
    firsts = (
        rows.group_by("user_id", "patient_id")
        .agg(pl.col("t").min(), pl.col("timestamp").min(), pl.col("mrn_number").first())
        .sort("user_id", "t", "patient_id")
    )
    gap = (pl.col("mrn_number") - pl.col("mrn_number").shift(1)).abs().over("user_id")
    dt_us = (pl.col("t") - pl.col("t").shift(1)).over("user_id")
    linked = (gap <= cfg.mrn_gap) & (dt_us <= int(cfg.mrn_window.total_seconds() * 1e6))
    runs = (
        firsts.with_columns(linked.fill_null(False).alias("linked"))
        .with_columns((~pl.col("linked")).cast(pl.UInt32).cum_sum().over("user_id").alias("run"))
        .with_columns(pl.len().over("user_id", "run").alias("run_len"))
        .filter(pl.col("run_len") >= cfg.mrn_run)
    )
    if runs.is_empty():
        return []
    detected = (
        runs.with_columns(pl.int_range(1, pl.len() + 1).over("user_id", "run").alias("k"))
        .filter(pl.col("k") == cfg.mrn_run)
        .select("user_id", "run", pl.col("timestamp").alias("detected"))
    )
    members = runs.select("user_id", "patient_id", "run")
    hits = rows.join(members, on=["user_id", "patient_id"])
    out: list[Candidate] = []
    for g in (
        groups(hits, ["user_id", "run"])
        .join(detected, on=["user_id", "run"])
        .join(
            runs.group_by("user_id", "run").agg(
                pl.col("mrn_number").min().alias("lo"), pl.col("mrn_number").max().alias("hi")
            ),
            on=["user_id", "run"],
        )
        .sort("user_id", "first")
        .iter_rows(named=True)
    ):
        patients: list[str] = g["patients"]
        score = cfg.weight("mrn-browsing") + min(20.0, 2.0 * (len(patients) - cfg.mrn_run))
        out.append(
            Candidate(
                detector="mrn-browsing",
                user_id=g["user_id"],
                patient_ids=tuple(patients),
                rows=tuple(g["rows"]),
                first=g["first"],
                last=g["last"],
                score=min(100.0, score),
                phrase=f"opened {plural(len(patients), 'patient')} one after another in "
                "medical-record-number order",
                evidence=[
                    Evidence(
                        "consecutive-mrn",
                        "unexplained records opened in near-consecutive MRN order within "
                        f"{cfg.mrn_window.total_seconds() / 60:.0f} minutes of each other",
                        {"patients": len(patients), "mrn_span": g["hi"] - g["lo"]},
                    )
                ],
                qualifiers=["no care relationship", ctx.clock(g["first"])],
                detected=g["detected"],
            )
        )
    return out


def demographics_browsing(ctx: Context) -> list[Candidate]:
    cfg = ctx.config
    rows = ctx.unexplained
    if rows.is_empty():
        return []
    per_patient = rows.group_by("user_id", "day", "patient_id").agg(
        pl.col("resource_type").is_in(sorted(DEMOGRAPHIC_TYPES)).all().alias("demo_only"),
        pl.col("timestamp").min(),
    )
    judged = (
        per_patient.filter(pl.col("demo_only"))
        .group_by("user_id", "day")
        .agg(pl.len().alias("patients_n"))
        .filter(pl.col("patients_n") >= cfg.demographics_min_patients)
    )
    if judged.is_empty():
        return []
    demo = per_patient.filter(pl.col("demo_only")).select("user_id", "day", "patient_id")
    hits = rows.join(demo, on=["user_id", "day", "patient_id"])
    crossing = (
        per_patient.filter(pl.col("demo_only"))
        .join(judged, on=["user_id", "day"])
        .sort("user_id", "day", "timestamp", "patient_id")
        .with_columns(pl.int_range(1, pl.len() + 1).over("user_id", "day").alias("k"))
        .filter(pl.col("k") == cfg.demographics_min_patients)
        .select("user_id", "day", pl.col("timestamp").alias("detected"))
    )
    out: list[Candidate] = []
    for g in (
        groups(hits, ["user_id", "day"])
        .join(crossing, on=["user_id", "day"])
        .sort("user_id", "day")
        .iter_rows(named=True)
    ):
        patients: list[str] = g["patients"]
        extra = min(25.0, 2.0 * (len(patients) - cfg.demographics_min_patients))
        out.append(
            Candidate(
                detector="demographics-browsing",
                user_id=g["user_id"],
                patient_ids=tuple(patients),
                rows=tuple(g["rows"]),
                first=g["first"],
                last=g["last"],
                score=min(100.0, cfg.weight("demographics-browsing") + extra),
                phrase=f"looked up who {plural(len(patients), 'patient')} are (demographics "
                "only, no clinical data)",
                evidence=[
                    Evidence(
                        "demographics-only",
                        "only demographic records were opened, with no care relationship",
                        {"patients": len(patients), "day": str(g["day"])},
                    )
                ],
                qualifiers=["no care relationship", ctx.day(g["first"])],
                detected=g["detected"],
            )
        )
    return out


def poisson_tail(mean: float, k: int) -> float:
    """P(X >= k) for X ~ Poisson(mean)."""
    if k <= 0:
        return 1.0
    term = math.exp(-mean)
    below = 0.0
    for i in range(k):
        below += term
        term *= mean / (i + 1)
    return max(0.0, 1.0 - below)


def poisson_bar(mean: float, alpha: float) -> int:
    """The least k with P(X >= k) < alpha: a count the peers' rate rarely reaches."""
    k = max(1, math.floor(mean))
    while poisson_tail(mean, k) >= alpha:
        k += 1
    return k


def serial(ctx: Context) -> list[Candidate]:
    """Low-and-slow: too many unexplained patients for the user's role, over the scan."""
    cfg = ctx.config
    alertable = ctx.alertable
    if alertable.is_empty():
        return []
    # Exposure is working days: unexplained looks (undocumented consults, slips) come
    # with each shift rather than with each patient.
    opened = alertable.group_by("user_id").agg(pl.col("day").n_unique().alias("opened"))
    firsts = ctx.unexplained.group_by("user_id", "patient_id").agg(pl.col("timestamp").min())
    unexplained = firsts.group_by("user_id").agg(pl.len().alias("unexplained"))
    per_user = (
        opened.join(unexplained, on="user_id", how="left")
        .with_columns(pl.col("unexplained").fill_null(0))
        .join(ctx.staff.select("user_id", "role", "department"), on="user_id", how="left")
    )
    overall = float(per_user["unexplained"].sum()) / max(1.0, float(per_user["opened"].sum()))
    peers = ["role", "department"]
    others_u = pl.col("unexplained").sum() - pl.col("unexplained")
    others_n = pl.col("opened").sum() - pl.col("opened")
    per_user = (
        per_user.with_columns(
            others_u.over(peers).alias("peer_u"),
            others_n.over(peers).alias("peer_n"),
            others_u.over("role").alias("role_u"),
            others_n.over("role").alias("role_n"),
        )
        .with_columns(
            pl.when(pl.col("peer_n") >= cfg.serial_min_exposure)
            .then(pl.col("peer_u") / pl.col("peer_n"))
            .when(pl.col("role_n") >= cfg.serial_min_exposure)
            .then(pl.col("role_u") / pl.col("role_n"))
            .otherwise(overall)
            .alias("rate")
        )
        .with_columns((pl.col("rate") * pl.col("opened")).alias("expected"))
    )
    need = [
        max(cfg.serial_min_patients, poisson_bar(expected, cfg.serial_alpha))
        for expected in per_user["expected"].to_list()
    ]
    per_user = per_user.with_columns(pl.Series("need", need, dtype=pl.Int64))
    judged = per_user.filter(pl.col("unexplained") >= pl.col("need"))
    if judged.is_empty():
        return []
    crossing = (
        firsts.join(judged.select("user_id", "need"), on="user_id")
        .sort("user_id", "timestamp", "patient_id")
        .with_columns(pl.int_range(1, pl.len() + 1).over("user_id").alias("k"))
        .filter(pl.col("k") == pl.col("need"))
        .select("user_id", pl.col("timestamp").alias("detected"))
    )
    hits = ctx.unexplained.join(judged.select("user_id"), on="user_id", how="semi")
    out: list[Candidate] = []
    for g in (
        groups(hits, ["user_id"])
        .join(judged, on="user_id")
        .join(crossing, on="user_id")
        .sort("user_id")
        .iter_rows(named=True)
    ):
        patients: list[str] = g["patients"]
        surprise = -math.log10(max(1e-300, poisson_tail(g["expected"], g["unexplained"])))
        score = cfg.weight("serial-unexplained") + min(
            35.0, 5.0 * max(0.0, surprise + math.log10(cfg.serial_alpha))
        )
        spread_days = (g["last"] - g["first"]).days + 1
        out.append(
            Candidate(
                detector="serial-unexplained",
                user_id=g["user_id"],
                patient_ids=tuple(patients),
                rows=tuple(g["rows"]),
                first=g["first"],
                last=g["last"],
                score=min(100.0, score),
                phrase=f"opened {plural(len(patients), 'patient')} without any care "
                f"relationship over {plural(spread_days, 'day')} "
                f"(peers: {g['expected']:.1f} expected)",
                evidence=[
                    Evidence(
                        "serial-unexplained",
                        "far more unexplained patients than peers of the same role and "
                        "department show over as many working days",
                        {
                            "unexplained_patients": g["unexplained"],
                            "working_days": g["opened"],
                            "expected": round(g["expected"], 2),
                            "days": spread_days,
                        },
                    )
                ],
                qualifiers=["no care relationship"],
                detected=g["detected"],
            )
        )
    return out


def detect(ctx: Context) -> list[Candidate]:
    return mrn_browsing(ctx) + demographics_browsing(ctx) + serial(ctx)

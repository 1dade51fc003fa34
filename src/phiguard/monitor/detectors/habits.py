"""Departures from the user's own habits: unusual hours, and a taken-over account.

Hours are judged against the user's own past (night-shift nurses work at night),
so "after hours" means "at an hour this user rarely works", in the configured zone.
Only unexplained accesses at such hours raise an after-hours alert.  A compromised
account shows several departures at once: a workstation the account never used,
mostly at unusual hours, or far more patients than the user's usual day.
"""

from __future__ import annotations

import polars as pl

from phiguard.monitor.detectors.base import Candidate, Context, Evidence, groups, plural


def after_hours(ctx: Context) -> list[Candidate]:
    cfg = ctx.config
    rows = ctx.with_off_hours(ctx.unexplained).filter(pl.col("off_hours"))
    out: list[Candidate] = []
    for g in groups(rows, ["user_id", "day"]).iter_rows(named=True):
        patients: list[str] = g["patients"]
        score = cfg.weight("after-hours") + min(
            cfg.max_extra, cfg.per_extra_patient * (len(patients) - 1)
        )
        out.append(
            Candidate(
                detector="after-hours",
                user_id=g["user_id"],
                patient_ids=tuple(patients),
                rows=tuple(g["rows"]),
                first=g["first"],
                last=g["last"],
                score=min(100.0, score),
                phrase=f"viewed {plural(g['n'], 'record')} of {plural(len(patients), 'patient')} "
                "at an hour the user rarely works",
                evidence=[
                    Evidence(
                        "off-hours",
                        "less than "
                        f"{cfg.off_hours_share:.0%} of the user's past accesses fall in this hour",
                        {"at": g["first"].isoformat(), "patient_ids": patients},
                    ),
                    Evidence(
                        "no-care-relationship",
                        "no relationship or routine work explains the accesses",
                        {"rows": len(g["rows"])},
                    ),
                ],
                qualifiers=["no care relationship", ctx.clock(g["first"])],
            )
        )
    return out


def compromised(ctx: Context) -> list[Candidate]:
    cfg = ctx.config
    first_seen = ctx.events.group_by("user_id", "workstation").agg(
        pl.col("day").min().alias("seen")
    )
    active_days = ctx.user_days.select("user_id", "day")
    history_days = (
        first_seen.join(active_days, on="user_id")
        .filter(pl.col("day") < pl.col("seen"))
        .group_by("user_id", "workstation")
        .agg(pl.len().alias("days_before"))
    )
    new_ws = (
        first_seen.join(history_days, on=["user_id", "workstation"], how="left")
        .filter(pl.col("days_before").fill_null(0) >= cfg.min_history_days)
        .select("user_id", "workstation", pl.col("seen").alias("day"))
    )
    if new_ws.is_empty():
        return []
    rows = ctx.alertable.join(new_ws.select("user_id", "day").unique(), on=["user_id", "day"])
    rows = ctx.with_off_hours(rows)
    per_day = (
        rows.group_by("user_id", "day")
        .agg(
            pl.col("off_hours").mean().alias("off_share"),
            pl.col("patient_id").n_unique().alias("patients_n"),
        )
        .join(ctx.usual_day, on="user_id", how="left")
        .with_columns(
            (pl.col("patients_n") / pl.col("usual").clip(lower_bound=1)).fill_null(0).alias("ratio")
        )
        .with_columns(
            (pl.col("off_share") >= 0.5).alias("odd_hours"),
            (pl.col("ratio") >= cfg.compromise_volume_factor).alias("busy"),
        )
        .filter(pl.col("odd_hours") | pl.col("busy"))
    )
    if per_day.is_empty():
        return []
    hits = rows.join(per_day, on=["user_id", "day"], how="semi")
    out: list[Candidate] = []
    for g in (
        groups(hits, ["user_id", "day"])
        .join(per_day, on=["user_id", "day"])
        .join(
            new_ws.group_by("user_id", "day").agg(pl.len().alias("new_workstations")),
            on=["user_id", "day"],
        )
        .sort("user_id", "day")
        .iter_rows(named=True)
    ):
        patients: list[str] = g["patients"]
        score = cfg.weight("compromised-account")
        evidence = [
            Evidence(
                "new-workstation",
                "the account worked from a workstation it had never used",
                {"new_workstations": g["new_workstations"], "day": str(g["day"])},
            )
        ]
        qualifiers = ["from a new workstation"]
        if g["odd_hours"]:
            evidence.append(
                Evidence(
                    "off-hours",
                    "most accesses fell at hours the user rarely works",
                    {"share": round(g["off_share"], 3)},
                )
            )
            qualifiers.append("mostly at unusual hours")
        if g["busy"]:
            evidence.append(
                Evidence(
                    "volume",
                    "far more patients than the user's usual day",
                    {"patients": g["patients_n"], "usual": g["usual"]},
                )
            )
            qualifiers.append(f"{g['ratio']:.1f}x the usual patients")
        if g["odd_hours"] and g["busy"]:
            score += 15
        out.append(
            Candidate(
                detector="compromised-account",
                user_id=g["user_id"],
                patient_ids=tuple(patients),
                rows=tuple(g["rows"]),
                first=g["first"],
                last=g["last"],
                score=min(100.0, score),
                phrase=f"account behaved unlike its user: {plural(len(patients), 'patient')} "
                f"opened on {ctx.day(g['first'])}",
                evidence=evidence,
                qualifiers=qualifiers,
            )
        )
    return out


def detect(ctx: Context) -> list[Candidate]:
    return after_hours(ctx) + compromised(ctx)

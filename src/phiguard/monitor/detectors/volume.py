"""How much: a day's patients against the user's own days and against peers, and bulk
printing or export.

A user is compared with themselves (median distinct patients over their baseline
days) and with peers of the same role and department on the same day, and must
exceed both by a factor plus an absolute floor: a ward's busy day lifts every peer,
so it is not mistaken for one user's spree.  Print and export get their own, lower
bar because they take data out of the system.
"""

from __future__ import annotations

import math

import polars as pl

from phiguard.monitor.config import PRINT_ACTIONS
from phiguard.monitor.detectors.base import Candidate, Context, Evidence, groups, plural


def _crossing(rows: pl.DataFrame, flagged: pl.DataFrame) -> pl.DataFrame:
    """Per flagged user-day, the time its ``need``-th distinct patient was opened."""
    firsts = (
        rows.join(flagged.select("user_id", "day", "need"), on=["user_id", "day"])
        .group_by("user_id", "day", "patient_id")
        .agg(pl.col("timestamp").min(), pl.col("need").first())
        .sort("user_id", "day", "timestamp", "patient_id")
        .with_columns(pl.int_range(1, pl.len() + 1).over("user_id", "day").alias("k"))
    )
    return firsts.filter(pl.col("k") == pl.col("need")).select(
        "user_id", "day", pl.col("timestamp").alias("detected")
    )


def volume(ctx: Context) -> list[Candidate]:
    cfg = ctx.config
    days = ctx.user_days.join(ctx.staff.select("user_id", "role", "department"), on="user_id")
    peers = days.group_by("role", "department", "day").agg(
        pl.col("patients").median().alias("peer_median"), pl.len().alias("peers")
    )
    usual = ctx.usual_day.filter(pl.col("days") >= cfg.min_history_days)
    judged = (
        days.filter(pl.col("alertable"))
        .join(usual, on="user_id", how="left")
        .join(peers, on=["role", "department", "day"], how="left")
        .with_columns(
            pl.max_horizontal(
                pl.lit(cfg.volume_min_patients - 1, dtype=pl.Float64),
                (pl.col("usual") * cfg.volume_factor).fill_null(0),
                pl.when(pl.col("peers") >= 3)
                .then(pl.col("peer_median") * cfg.volume_peer_factor)
                .otherwise(0),
            ).alias("bar")
        )
        .filter(
            (pl.col("patients") > pl.col("bar"))
            & (pl.col("usual").is_not_null() | (pl.col("peers") >= 3))
        )
        .with_columns((pl.col("bar").floor().cast(pl.Int64) + 1).alias("need"))
    )
    if judged.is_empty():
        return []
    rows = ctx.alertable.join(judged.select("user_id", "day"), on=["user_id", "day"], how="semi")
    out: list[Candidate] = []
    for g in (
        groups(rows, ["user_id", "day"])
        .join(judged, on=["user_id", "day"])
        .join(_crossing(rows, judged), on=["user_id", "day"])
        .sort("user_id", "day")
        .iter_rows(named=True)
    ):
        patients: list[str] = g["patients"]
        base = g["usual"] or g["peer_median"] or 1.0
        ratio = len(patients) / max(1.0, base)
        score = cfg.weight("volume") + min(30.0, 3.0 * max(0.0, ratio - cfg.volume_factor))
        usual_text = "no usual day yet" if g["usual"] is None else f"usually {g['usual']:.0f}"
        peer_text = "" if g["peer_median"] is None else f", peers {g['peer_median']:.0f} that day"
        out.append(
            Candidate(
                detector="volume",
                user_id=g["user_id"],
                patient_ids=tuple(patients),
                rows=tuple(g["rows"]),
                first=g["first"],
                last=g["last"],
                score=min(100.0, score),
                phrase=f"opened {plural(len(patients), 'patient')} in one day "
                f"({usual_text}{peer_text})",
                evidence=[
                    Evidence(
                        "volume",
                        "far more distinct patients than the user's usual day and than peers",
                        {
                            "day": str(g["day"]),
                            "patients": len(patients),
                            "usual": g["usual"],
                            "peer_median": g["peer_median"],
                            "bar": g["bar"],
                        },
                    )
                ],
                qualifiers=[ctx.day(g["first"])],
                detected=g["detected"],
            )
        )
    return out


def bulk_export(ctx: Context) -> list[Candidate]:
    cfg = ctx.config
    printed = ctx.events.filter(pl.col("action").is_in(sorted(PRINT_ACTIONS)))
    if printed.is_empty():
        return []
    per_day = printed.group_by("user_id", "day").agg(
        pl.col("patient_id").n_unique().alias("patients"), pl.col("alertable").any()
    )
    # The usual day counts days without any print as zero: most days have none.
    base_days = ctx.baseline.select("user_id", "day").unique()
    usual = (
        base_days.join(
            per_day.select("user_id", "day", "patients"), on=["user_id", "day"], how="left"
        )
        .with_columns(pl.col("patients").fill_null(0))
        .group_by("user_id")
        .agg(pl.col("patients").median().alias("usual"))
    )
    judged = (
        per_day.filter(pl.col("alertable"))
        .join(usual, on="user_id", how="left")
        .with_columns(
            pl.max_horizontal(
                pl.lit(float(cfg.bulk_min_patients - 1)),
                pl.col("usual").fill_null(1.0).clip(lower_bound=1.0) * cfg.bulk_factor,
            ).alias("bar")
        )
        .filter(pl.col("patients") > pl.col("bar"))
        .with_columns((pl.col("bar").floor().cast(pl.Int64) + 1).alias("need"))
    )
    if judged.is_empty():
        return []
    rows = printed.filter(pl.col("alertable")).join(
        judged.select("user_id", "day"), on=["user_id", "day"], how="semi"
    )
    out: list[Candidate] = []
    for g in (
        groups(rows, ["user_id", "day"])
        .join(judged.drop("patients"), on=["user_id", "day"])
        .join(_crossing(rows, judged), on=["user_id", "day"])
        .sort("user_id", "day")
        .iter_rows(named=True)
    ):
        patients: list[str] = g["patients"]
        extra = min(25.0, 25.0 * math.log10(max(1.0, len(patients) / max(1.0, g["bar"]))) * 2)
        out.append(
            Candidate(
                detector="bulk-export",
                user_id=g["user_id"],
                patient_ids=tuple(patients),
                rows=tuple(g["rows"]),
                first=g["first"],
                last=g["last"],
                score=min(100.0, cfg.weight("bulk-export") + extra),
                phrase=f"printed or exported the records of {plural(len(patients), 'patient')} "
                "in one day",
                evidence=[
                    Evidence(
                        "bulk-export",
                        "print/export of far more patients than the user's usual day",
                        {
                            "day": str(g["day"]),
                            "patients": len(patients),
                            "usual": g["usual"],
                            "accesses": g["n"],
                        },
                    )
                ],
                qualifiers=[ctx.day(g["first"])],
                detected=g["detected"],
            )
        )
    return out


def detect(ctx: Context) -> list[Candidate]:
    return volume(ctx) + bulk_export(ctx)

"""Many users on one VIP: the celebrity-admission pattern.

One curious look at a VIP's record is a VIP alert (``relationship``); a dozen
unexplained looks by different users within a day is a surge, and each of those
users gets an alert that names how many others were there: the privacy office
usually handles them together.
"""

from __future__ import annotations

import polars as pl

from phiguard.monitor.detectors.base import Candidate, Context, Evidence, groups, plural


def detect(ctx: Context) -> list[Candidate]:
    cfg = ctx.config
    k = cfg.vip_surge_users
    window = int(cfg.vip_surge_window.total_seconds() * 1_000_000)
    vips = ctx.patients.filter(pl.col("vip")).select("patient_id")
    rows = ctx.unexplained.join(vips, on="patient_id", how="semi")
    if rows.is_empty():
        return []
    arrivals = (
        rows.group_by("patient_id", "user_id")
        .agg(pl.col("t").min(), pl.col("timestamp").min())
        .sort("patient_id", "t", "user_id")
    )
    points = arrivals.filter(
        (pl.col("t") - pl.col("t").shift(k - 1).over("patient_id")) <= window
    ).select("patient_id", pl.col("t").alias("t_point"), pl.col("timestamp").alias("at"))
    if points.is_empty():
        return []
    members = (
        arrivals.join(points, on="patient_id")
        .filter((pl.col("t") <= pl.col("t_point")) & (pl.col("t") >= pl.col("t_point") - window))
        .group_by("patient_id", "user_id")
        .agg(pl.col("at").min().alias("detected"))
    )
    size = (
        arrivals.join(points, on="patient_id")
        .filter((pl.col("t") <= pl.col("t_point")) & (pl.col("t") >= pl.col("t_point") - window))
        .group_by("patient_id")
        .agg(pl.col("user_id").n_unique().alias("users"))
    )
    hits = rows.join(members.select("patient_id", "user_id"), on=["patient_id", "user_id"])
    out: list[Candidate] = []
    for g in (
        groups(hits, ["user_id", "patient_id"])
        .join(members, on=["patient_id", "user_id"])
        .join(size, on="patient_id")
        .sort("user_id", "patient_id")
        .iter_rows(named=True)
    ):
        users = g["users"]
        out.append(
            Candidate(
                detector="vip-surge",
                user_id=g["user_id"],
                patient_ids=(g["patient_id"],),
                rows=tuple(g["rows"]),
                first=g["first"],
                last=g["last"],
                score=min(100.0, cfg.weight("vip-surge") + min(20.0, 2.0 * (users - k))),
                phrase=f"one of {plural(users, 'user')} who opened a VIP's record without a "
                f"care relationship within {cfg.vip_surge_window.total_seconds() / 3600:.0f} h",
                evidence=[
                    Evidence(
                        "vip-surge",
                        "many users opened the same VIP record without a reason",
                        {"patient_id": g["patient_id"], "users": users, "accesses": g["n"]},
                    )
                ],
                qualifiers=["no care relationship", ctx.clock(g["first"])],
                detected=max(g["detected"], g["first"]),
            )
        )
    return out

"""Accounts that should not be reading anything: terminated users and unknown users.

An access on or after the roster's termination date means an account outlived the
person's employment (or someone else is using it); an access by a user the roster
does not know means the roster or the account list is wrong.  Neither needs a
baseline: one event is enough, so the alert is dated at its first event.
"""

from __future__ import annotations

import polars as pl

from phiguard.monitor.detectors.base import Candidate, Context, Evidence, groups, plural


def detect(ctx: Context) -> list[Candidate]:
    cfg = ctx.config
    out: list[Candidate] = []
    staff = ctx.staff.select("user_id", "termination_date")
    rows = ctx.alertable.join(staff, on="user_id", how="left")
    terminated = rows.filter(
        pl.col("termination_date").is_not_null()
        & (pl.col("timestamp") >= pl.col("termination_date").cast(pl.Datetime("us", "UTC")))
    )
    for g in (
        groups(terminated, ["user_id", "day"])
        .join(
            terminated.group_by("user_id", "day").agg(pl.col("termination_date").first()),
            on=["user_id", "day"],
        )
        .sort("user_id", "day")
        .iter_rows(named=True)
    ):
        patients: list[str] = g["patients"]
        days_after = (g["first"].date() - g["termination_date"]).days
        out.append(
            Candidate(
                detector="terminated-user",
                user_id=g["user_id"],
                patient_ids=tuple(patients),
                rows=tuple(g["rows"]),
                first=g["first"],
                last=g["last"],
                score=min(100.0, cfg.weight("terminated-user") + min(10, len(patients))),
                phrase=f"account used {plural(days_after, 'day')} after the user's "
                f"termination: {plural(g['n'], 'access', 'accesses')} to "
                f"{plural(len(patients), 'patient')}",
                evidence=[
                    Evidence(
                        "after-termination",
                        "the roster records the user's employment as ended before these accesses",
                        {
                            "termination_date": g["termination_date"].isoformat(),
                            "days_after": days_after,
                            "accesses": g["n"],
                            "patient_ids": patients,
                        },
                    )
                ],
                qualifiers=[ctx.clock(g["first"])],
            )
        )
    if ctx.staff.is_empty():
        return out  # no roster loaded: every user would be "unknown"
    unknown = ctx.alertable.join(staff, on="user_id", how="anti")
    for g in groups(unknown, ["user_id", "day"]).iter_rows(named=True):
        patients = g["patients"]
        out.append(
            Candidate(
                detector="unknown-user",
                user_id=g["user_id"],
                patient_ids=tuple(patients),
                rows=tuple(g["rows"]),
                first=g["first"],
                last=g["last"],
                score=cfg.weight("unknown-user"),
                phrase=f"an account missing from the staff roster made "
                f"{plural(g['n'], 'access', 'accesses')} to {plural(len(patients), 'patient')}",
                evidence=[
                    Evidence(
                        "not-in-roster",
                        "the user id is not in the staff roster",
                        {"accesses": g["n"], "patient_ids": patients},
                    )
                ],
                qualifiers=[ctx.clock(g["first"])],
            )
        )
    return out

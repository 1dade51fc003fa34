"""Who the patient is to the user: self, family, household, neighbour, co-worker, VIP.

These are the classic snooping motives.  Each is judged only on unexplained
accesses: a nurse who treats her own mother has an encounter with her, and that
access is explained before this module sees it.  Opening one's own record is the
exception: it is flagged even when explained, at a discount, because policy forbids
it whatever the relationship.  Break-the-glass markers without a relationship that
follows (the explanation window reaches ``care_before`` ahead) are judged here too.
"""

from __future__ import annotations

import math
from typing import Final

import polars as pl

from phiguard.monitor.config import BREAK_THE_GLASS
from phiguard.monitor.detectors.base import Candidate, Context, Evidence, groups, plural

_KINDS: Final = {
    "self": ("own-record", "the patient is the user"),
    "family": ("same-surname-and-address", "the patient shares the user's surname and address"),
    "household": ("same-address", "the patient lives at the user's address"),
    "neighbour": ("same-street", "the patient lives on the user's street and postal code"),
    "coworker": ("co-worker", "the patient is an employee of the user's department"),
    "vip": ("vip", "the patient is flagged VIP"),
    "surname": ("same-surname", "the patient shares the user's surname (another address)"),
    "employee": ("employee", "the patient is an employee of another department"),
    "break-the-glass": (
        "break-the-glass-unfollowed",
        "emergency access with no care relationship before or after it",
    ),
}


def _phrase(detector: str, records: int, patients: int) -> str:
    views = f"viewed {plural(records, 'record')} of {plural(patients, 'patient')}"
    if detector == "self":
        return f"opened their own record ({plural(records, 'access', 'accesses')})"
    if detector == "family":
        return f"{views} sharing the user's surname and address"
    if detector == "household":
        return f"{views} living at the user's address"
    if detector == "neighbour":
        return f"{views} living on the user's street"
    if detector == "coworker":
        return f"{views} employed in the user's own department"
    if detector == "vip":
        return f"{views} flagged VIP"
    if detector == "surname":
        return f"{views} sharing the user's surname"
    if detector == "employee":
        return f"{views} employed in another department"
    return f"broke the glass for {plural(patients, 'patient')} with no care relationship following"


def flagged(ctx: Context) -> pl.DataFrame:
    """Alertable accesses that are unexplained or to the user's own record, with one
    boolean column per relationship."""
    own = ctx.staff.filter(pl.col("own_patient").is_not_null())
    rows = ctx.alertable.filter(
        pl.col("explained_by").is_null() | pl.col("patient_id").is_in(own["own_patient"].implode())
    )
    rows = rows.join(
        ctx.staff.select("user_id", "fam", "addr", "postal", "street", "department", "own_patient"),
        on="user_id",
        how="left",
    ).join(
        ctx.patients.select(
            "patient_id",
            "p_fam",
            "p_addr",
            "p_postal",
            "p_street",
            "vip",
            "employee_dept",
            "employee_user",
            "street_share",
        ),
        on="patient_id",
        how="left",
    )
    same_place = (pl.col("addr") == pl.col("p_addr")) & (pl.col("postal") == pl.col("p_postal"))
    is_self = pl.col("own_patient") == pl.col("patient_id")
    unexplained = pl.col("explained_by").is_null()
    rows = rows.with_columns(
        is_self.fill_null(False).alias("self"),
    ).with_columns(
        (unexplained & ~pl.col("self") & same_place & (pl.col("fam") == pl.col("p_fam")))
        .fill_null(False)
        .alias("family"),
        (unexplained & ~pl.col("self") & same_place & (pl.col("fam") != pl.col("p_fam")))
        .fill_null(False)
        .alias("household"),
        (
            unexplained
            & ~pl.col("self")
            & (pl.col("street") == pl.col("p_street"))
            & (pl.col("postal") == pl.col("p_postal"))
            & (pl.col("addr") != pl.col("p_addr"))
        )
        .fill_null(False)
        .alias("neighbour"),
        (
            unexplained
            & ~pl.col("self")
            & (pl.col("employee_dept") == pl.col("department"))
            & (pl.col("employee_user") != pl.col("user_id"))
        )
        .fill_null(False)
        .alias("coworker"),
        (unexplained & pl.col("vip")).fill_null(False).alias("vip"),
        (
            unexplained
            & ~pl.col("self")
            & (pl.col("fam") == pl.col("p_fam"))
            & ~(same_place.fill_null(False))
        )
        .fill_null(False)
        .alias("surname"),
        (
            unexplained
            & ~pl.col("self")
            & pl.col("employee_dept").is_not_null()
            & (pl.col("employee_dept") != pl.col("department"))
        )
        .fill_null(False)
        .alias("employee"),
        (unexplained & (pl.col("resource_type") == BREAK_THE_GLASS)).alias("break-the-glass"),
    )
    return ctx.with_off_hours(rows)


def detect(ctx: Context) -> list[Candidate]:
    cfg = ctx.config
    rows = flagged(ctx)
    out: list[Candidate] = []
    for detector, (kind, text) in _KINDS.items():
        hits = rows.filter(pl.col(detector))
        if hits.is_empty():
            continue
        for g in (
            groups(
                hits.with_columns(
                    pl.col("explained_by").is_null().alias("unexplained_row"),
                ),
                ["user_id", "day"],
            )
            .join(
                hits.group_by("user_id", "day").agg(
                    pl.col("off_hours").any().alias("off"),
                    pl.col("explained_by").is_null().any().alias("unexplained"),
                    pl.col("timestamp").filter(pl.col("off_hours")).min().alias("first_off"),
                    pl.col("street_share").max(),
                ),
                on=["user_id", "day"],
            )
            .sort("user_id", "day")
            .iter_rows(named=True)
        ):
            patients: list[str] = g["patients"]
            # Opening one's own record is against policy whatever explains it.
            score = cfg.weight(detector)
            score += min(cfg.max_extra, cfg.per_extra_patient * (len(patients) - 1))
            depth = g["n"] / len(patients)
            score += min(cfg.max_extra, cfg.per_extra_record * max(0.0, depth - 1))
            if detector == "neighbour" and g["street_share"]:
                # How surprising: on a street of few patients a chance look is rare.
                surprise = -math.log10(g["street_share"]) - 2.0
                score += max(-10.0, min(15.0, cfg.rarity_weight * surprise))
            qualifiers: list[str] = []
            evidence = [
                Evidence(
                    kind,
                    text,
                    {"patient_ids": patients, "accesses": g["n"], "day": str(g["day"])},
                )
            ]
            if not g["unexplained"]:
                evidence.append(
                    Evidence(
                        "explained-but-own-record",
                        "a care relationship is recorded, yet policy forbids opening "
                        "one's own record",
                        {"rows": len(g["rows"])},
                    )
                )
            if g["unexplained"]:
                qualifiers.append("no care relationship")
                evidence.append(
                    Evidence(
                        "no-care-relationship",
                        "no encounter, appointment, care team, order, consult, department "
                        "care or routine work of the role explains the access",
                        {"rows": len(g["rows"])},
                    )
                )
            when = g["first_off"] if g["off"] else g["first"]
            if g["off"]:
                score += cfg.off_hours_bonus
                qualifiers.append(f"{ctx.clock(when)}, outside the user's usual hours")
                evidence.append(
                    Evidence(
                        "off-hours",
                        "at an hour the user rarely works",
                        {"at": when.isoformat()},
                    )
                )
            else:
                qualifiers.append(ctx.clock(when))
            out.append(
                Candidate(
                    detector=detector,
                    user_id=g["user_id"],
                    patient_ids=tuple(patients),
                    rows=tuple(g["rows"]),
                    first=g["first"],
                    last=g["last"],
                    score=min(100.0, score),
                    phrase=_phrase(detector, g["n"], len(patients)),
                    evidence=evidence,
                    qualifiers=qualifiers,
                )
            )
    return out

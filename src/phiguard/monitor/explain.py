"""Explanation-based auditing: first find the reason for an access, then judge the rest.

Most accesses in a hospital have an obvious reason: the user (or the user's ward)
is treating the patient, or the user's role does routine work on the record after
care (billing, coding) or before it (registration).  Following Fabbri and LeFevre's
explanation-based auditing, every access is first tested against those reasons;
detectors then look hard only at what stays unexplained, which is what keeps the
false-alarm rate low enough for a privacy office to read every alert.

Relationships become time windows (start minus a lead, end plus a tail; an ongoing
relationship has no end).  Each test is one hash join of the accesses with the
windows on their key (user and patient, ward and patient, or patient) and a filter
on time: vectorised and linear in the accesses, because a pair has few relationships.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import polars as pl

from phiguard.monitor.config import DetectionConfig
from phiguard.monitor.frames import CARE_KINDS

EXPLANATIONS: Final = (*CARE_KINDS, "department", "role-work")
"""Values of ``explained_by``, strongest first."""
_FAR: Final = 2**62
"""Microseconds standing for "no end": an ongoing relationship."""


def _us(delta: dt.timedelta) -> int:
    return int(delta.total_seconds() * 1_000_000)


def _key(columns: list[str]) -> pl.Expr:
    # One integer per key tuple makes the as-of join's grouping cheap; 64 bits make
    # a collision (which could only over-explain one access) practically impossible.
    return pl.struct(columns).hash(seed=0x5EED).alias("_key")


def windows(
    care: pl.DataFrame, keys: list[str], before: dt.timedelta, after: dt.timedelta
) -> pl.DataFrame:
    """``_key, lo, hi, rank`` per relationship: ``[start - before, end + after]`` in us.

    ``care`` needs ``keys``, ``start``, ``end`` and ``rank`` (the kind's strength).
    """
    return care.filter(pl.all_horizontal(pl.col(k).is_not_null() for k in keys)).select(
        _key(keys),
        (pl.col("start").dt.epoch("us") - _us(before)).alias("lo"),
        (pl.col("end").dt.epoch("us").fill_null(_FAR - _us(after)) + _us(after)).alias("hi"),
        pl.col("rank"),
    )


def _matches(events: pl.DataFrame, keys: list[str], spans: pl.DataFrame) -> pl.DataFrame:
    """Rows of ``events`` (``row``, ``t``, ``keys``) inside a window: ``row``, ``rank``.

    An equi-join on the key, then the time test: a user-patient (or ward-patient)
    pair has a handful of relationships, so the join stays close to the number of
    accesses, and no per-key ordering is needed.
    """
    if events.is_empty() or spans.is_empty():
        return pl.DataFrame(schema={"row": pl.UInt32, "rank": pl.Int8})
    left = events.filter(pl.all_horizontal(pl.col(k).is_not_null() for k in keys)).select(
        "row", "t", _key(keys)
    )
    return (
        left.join(spans, on="_key", how="inner")
        .filter((pl.col("t") >= pl.col("lo")) & (pl.col("t") <= pl.col("hi")))
        .group_by("row")
        .agg(pl.col("rank").min())
    )


def explain(
    access: pl.DataFrame,
    staff: pl.DataFrame,
    care: pl.DataFrame,
    config: DetectionConfig,
) -> pl.Series:
    """``explained_by`` for every row of ``access`` (null: unexplained), in row order.

    ``access`` must carry a ``row`` column (0..n-1, UInt32) besides the ACCESS columns.
    """
    n = access.height
    ranks = {kind: i for i, kind in enumerate(EXPLANATIONS)}
    # Nothing explains an access outside the user's employment (before hire, on or
    # after termination): a relationship belongs to the job, not to the account.
    employed = staff.select(
        "user_id",
        pl.col("hire_date").cast(pl.Datetime("us", "UTC")).dt.epoch("us").alias("hired"),
        pl.col("termination_date").cast(pl.Datetime("us", "UTC")).dt.epoch("us").alias("left"),
    ).unique("user_id", keep="last")
    events = (
        access.select("row", "user_id", "patient_id", pl.col("timestamp").dt.epoch("us").alias("t"))
        .join(employed, on="user_id", how="left")
        .filter(
            (pl.col("hired").is_null() | (pl.col("t") >= pl.col("hired")))
            & (pl.col("left").is_null() | (pl.col("t") < pl.col("left")))
        )
        .drop("hired", "left")
    )
    care = care.with_columns(
        pl.col("kind")
        .replace_strict(ranks, default=len(CARE_KINDS) - 1, return_dtype=pl.Int8)
        .alias("rank")
    )
    found: list[pl.DataFrame] = []

    # 1. The user's own relationship with the patient.
    direct = windows(
        care.filter(pl.col("user_id").is_not_null()),
        ["user_id", "patient_id"],
        config.care_before,
        config.care_after,
    )
    hit = _matches(events, ["user_id", "patient_id"], direct)
    found.append(hit)
    rest = events.join(hit.select("row"), on="row", how="anti")

    # 2. The user's department treats the patient (its own rows or colleagues' rows).
    departments = staff.select("user_id", "department")
    # A colleague's standing care-team membership is that colleague's relationship,
    # not the ward's: counting it would let a whole department open the patient
    # for as long as the team lasts.  Department-level rows count whatever their kind.
    dept_care = (
        care.filter(pl.col("user_id").is_null() | (pl.col("kind") != "care_team"))
        .join(departments, on="user_id", how="left", suffix="_of_user")
        .with_columns(pl.coalesce("department", "department_of_user").alias("department"))
        .with_columns(pl.lit(ranks["department"], dtype=pl.Int8).alias("rank"))
    )
    by_department = windows(
        dept_care,
        ["patient_id", "department"],
        config.department_before,
        config.department_after,
    )
    rest = rest.join(departments, on="user_id", how="left")
    hit = _matches(rest, ["patient_id", "department"], by_department)
    found.append(hit)
    rest = rest.join(hit.select("row"), on="row", how="anti")

    # 3. The role's routine work around any care of the patient.
    roles = staff.select("user_id", "role")
    rest = rest.join(roles, on="user_id", how="left")
    any_care = care.with_columns(pl.lit(ranks["role-work"], dtype=pl.Int8).alias("rank"))
    for role, (before_days, after_days) in sorted(config.role_work.items()):
        spans = windows(
            any_care,
            ["patient_id"],
            dt.timedelta(days=before_days),
            dt.timedelta(days=after_days),
        )
        hit = _matches(rest.filter(pl.col("role") == role), ["patient_id"], spans)
        found.append(hit)

    explained = pl.concat(found).group_by("row").agg(pl.col("rank").min())
    labels = dict(enumerate(EXPLANATIONS))
    by_row = (
        pl.DataFrame({"row": pl.arange(0, n, dtype=pl.UInt32, eager=True)})
        .join(explained, on="row", how="left")
        .sort("row")
    )
    return (
        by_row.select(pl.col("rank").replace_strict(labels, default=None, return_dtype=pl.String))
        .to_series()
        .alias("explained_by")
    )

"""What every detector receives (``Context``) and hands back (``Candidate``).

A detector turns frames into a handful of candidates; only then does Python loop,
once per candidate, to write evidence a privacy officer can read.  Detectors never
see names in their output: evidence texts speak of "the user" and "the patient",
and evidence data carries ids, counts and times only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Final
from zoneinfo import ZoneInfo

import polars as pl

from phiguard.monitor.config import DetectionConfig

UTC: Final = dt.UTC


@dataclass(frozen=True)
class Evidence:
    """One fact behind an alert, readable by a privacy officer."""

    kind: str
    text: str
    data: dict[str, Any]


@dataclass
class Candidate:
    """A would-be alert: scored and explained, not yet thresholded or named."""

    detector: str
    user_id: str
    patient_ids: tuple[str, ...]
    rows: tuple[int, ...]
    first: dt.datetime
    last: dt.datetime
    score: float
    phrase: str
    """The alert's reason without qualifiers ("viewed 3 records of patients ...")."""
    evidence: list[Evidence] = field(default_factory=list)
    qualifiers: list[str] = field(default_factory=list)
    """Short clauses appended to the reason ("no care relationship", "23:40")."""
    detected: dt.datetime | None = None
    """When the data first justified the alert (a count crossing its threshold);
    ``first`` when a single event is enough."""

    @property
    def detected_at(self) -> dt.datetime:
        return self.first if self.detected is None else self.detected


@dataclass
class Context:
    """Frames prepared once per scan and shared by every detector.

    ``events`` holds history and scanned accesses alike (history rows have a null
    ``row``); ``alertable`` marks those that may raise alerts, ``baseline`` those
    that form the user's habits.  Helper frames are computed on first use.
    """

    config: DetectionConfig
    events: pl.DataFrame
    staff: pl.DataFrame
    patients: pl.DataFrame
    auth: pl.DataFrame

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.timezone)

    @cached_property
    def alertable(self) -> pl.DataFrame:
        return self.events.filter(pl.col("alertable"))

    @cached_property
    def unexplained(self) -> pl.DataFrame:
        """Alertable accesses no relationship explains: where snooping hides."""
        return self.alertable.filter(pl.col("explained_by").is_null())

    @cached_property
    def baseline(self) -> pl.DataFrame:
        base = self.events.filter(~pl.col("alertable"))
        # With nothing before ``since`` the scanned period is its own baseline: a few
        # bad events barely move a user's habits over weeks of ordinary work.
        return self.events if base.height < self.config.min_history_events else base

    @cached_property
    def user_hours(self) -> pl.DataFrame:
        """``user_id, hour, off``: whether ``hour`` lies outside the user's working hours.

        A user's working hours are the complement of the longest run of hours (around
        the clock) in which the user did (almost) no explained work; the hour on
        either edge of that run is forgiven.  Whole shifts are the unit, so a quiet
        lunch hour inside a day shift is not "after hours", and a night worker's
        nights are not.  A user with too little explained work falls back to the
        department's role peers; one who works around the clock has no off hours.
        """
        cfg = self.config
        # Only explained work forms habits -- a snoop's own odd hours must not make
        # them usual -- and all of it counts, history and scanned period alike: a
        # few weeks of history under-sample a part-time user's shifts.
        counts = (
            self.events.filter(pl.col("explained_by").is_not_null())
            .group_by("user_id", "hour")
            .len("n")
        )
        roles = self.staff.select("user_id", "role", "department")
        peer_counts = (
            counts.join(roles, on="user_id")
            .group_by("role", "department", "hour")
            .agg(pl.col("n").sum())
        )
        own = _off_hours(counts, "user_id", cfg.off_hours_share, cfg.min_history_events)
        peers = _off_hours(
            peer_counts.with_columns(
                pl.concat_str("role", "department", separator="\x1f").alias("peer")
            ),
            "peer",
            cfg.off_hours_share,
            cfg.min_history_events,
        )
        users = (
            self.events.select("user_id")
            .unique()
            .join(roles, on="user_id", how="left")
            .with_columns(pl.concat_str("role", "department", separator="\x1f").alias("peer"))
        )
        hours = pl.DataFrame({"hour": pl.arange(0, 24, dtype=pl.Int8, eager=True)})
        return (
            users.join(hours, how="cross")
            .join(own, on=["user_id", "hour"], how="left")
            .join(peers.rename({"off": "peer_off"}), on=["peer", "hour"], how="left")
            .select(
                "user_id",
                "hour",
                pl.coalesce("off", "peer_off").fill_null(False).alias("off"),
            )
        )

    def with_off_hours(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` (with ``user_id``, ``hour``) plus a boolean ``off_hours``."""
        return (
            frame.join(self.user_hours, on=["user_id", "hour"], how="left")
            .with_columns(pl.col("off").fill_null(False).alias("off_hours"))
            .drop("off")
        )

    @cached_property
    def user_days(self) -> pl.DataFrame:
        """``user_id, day, patients, accesses`` over every access (history included)."""
        return self.events.group_by("user_id", "day").agg(
            pl.col("patient_id").n_unique().alias("patients"),
            pl.len().alias("accesses"),
            pl.col("alertable").any().alias("alertable"),
        )

    @cached_property
    def usual_day(self) -> pl.DataFrame:
        """``user_id, usual, days``: median distinct patients on the user's baseline days."""
        base_days = self.baseline.select("user_id", "day").unique()
        return (
            self.user_days.join(base_days, on=["user_id", "day"], how="semi")
            .group_by("user_id")
            .agg(pl.col("patients").median().alias("usual"), pl.len().alias("days"))
        )

    def clock(self, moment: dt.datetime) -> str:
        """``23:40`` in the configured zone (the zone is named unless it is UTC)."""
        local = moment.astimezone(self.zone)
        suffix = "" if self.config.timezone == "UTC" else f" {local.tzname()}"
        return f"{local:%H:%M}{suffix}"

    def day(self, moment: dt.datetime) -> str:
        return f"{moment.astimezone(self.zone):%Y-%m-%d}"


def _off_hours(counts: pl.DataFrame, key: str, share: float, minimum: int) -> pl.DataFrame:
    """``key, hour, off`` for keys with at least ``minimum`` events (see ``user_hours``).

    One pass per key over 24 counts: the loop is over users, never over events.
    """
    table: dict[str, list[int]] = {}
    for name, hour, n in counts.select(key, "hour", "n").iter_rows():
        table.setdefault(name, [0] * 24)[hour] += n
    keys: list[str] = []
    hours: list[int] = []
    offs: list[bool] = []
    for name in sorted(table):
        per_hour = table[name]
        total = sum(per_hour)
        if total < minimum:
            continue
        quiet = [n < share * total for n in per_hour]
        best_start, best_len = 0, 0
        for start in range(24):
            length = 0
            while length < 24 and quiet[(start + length) % 24]:
                length += 1
            if length > best_len:
                best_start, best_len = start, length
        off = [False] * 24
        if best_len >= 4:  # a real rest period, less the forgiven edge hours
            for i in range(1, best_len - 1):
                off[(best_start + i) % 24] = True
        keys += [name] * 24
        hours += list(range(24))
        offs += off
    return pl.DataFrame(
        {key: keys, "hour": hours, "off": offs},
        schema={key: pl.String, "hour": pl.Int8, "off": pl.Boolean},
    )


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def as_utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def groups(frame: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Rows of ``frame`` gathered per key, in a fixed order: the unit of one candidate."""
    return (
        frame.sort("t", "row", nulls_last=True)
        .group_by(keys, maintain_order=True)
        .agg(
            pl.col("row").drop_nulls().alias("rows"),
            pl.col("patient_id").unique(maintain_order=True).alias("patients"),
            pl.col("timestamp").min().alias("first"),
            pl.col("timestamp").max().alias("last"),
            pl.len().alias("n"),
        )
        .sort(keys)
    )

"""Log-in attacks in the AUTH frame: failed-login storms, credential stuffing, spraying.

- storm: one account, many failures in minutes (guessing, or a user locked out);
- credential stuffing: one source fails on many accounts (a leaked list replayed);
- password spraying: one secret tried on many accounts (only phiguard's own ledger
  supplies ``secret_hash``, a keyed hash, never the password).

Alerts about many accounts use the user id ``*``; the accounts are in the evidence.
"""

from __future__ import annotations

import datetime as dt
from typing import Final

import polars as pl

from phiguard.monitor.detectors.base import Candidate, Context, Evidence, plural

MANY_ACCOUNTS: Final = "*"


def _points(frame: pl.DataFrame, by: str, k: int, window: dt.timedelta) -> pl.DataFrame:
    limit = int(window.total_seconds() * 1_000_000)
    return frame.sort(by, "t", "user_id").filter(
        (pl.col("t") - pl.col("t").shift(k - 1).over(by)) <= limit
    )


def storms(ctx: Context) -> list[Candidate]:
    cfg = ctx.config
    failures = ctx.auth.filter(pl.col("alertable") & (pl.col("outcome") != "success"))
    points = _points(failures, "user_id", cfg.storm_failures, cfg.storm_window)
    if points.is_empty():
        return []
    days = points.group_by("user_id", "day").agg(pl.col("timestamp").min().alias("detected"))
    per_day = (
        failures.join(days, on=["user_id", "day"])
        .group_by("user_id", "day")
        .agg(
            pl.len().alias("failures"),
            pl.col("source").n_unique().alias("sources"),
            pl.col("timestamp").min().alias("first"),
            pl.col("timestamp").max().alias("last"),
            pl.col("detected").first(),
        )
    )
    successes = ctx.auth.filter(pl.col("outcome") == "success").select(
        "user_id", pl.col("timestamp").alias("ok_at")
    )
    followed = (
        per_day.join(successes, on="user_id")
        .filter(
            (pl.col("ok_at") > pl.col("last"))
            & (pl.col("ok_at") <= pl.col("last") + pl.duration(hours=1))
        )
        .select("user_id", "day")
        .unique()
        .with_columns(pl.lit(True).alias("followed"))
    )
    out: list[Candidate] = []
    for g in (
        per_day.join(followed, on=["user_id", "day"], how="left")
        .sort("user_id", "day")
        .iter_rows(named=True)
    ):
        score = cfg.weight("failed-login-storm") + min(20.0, g["failures"] / cfg.storm_failures)
        qualifiers = [ctx.clock(g["first"])]
        evidence = [
            Evidence(
                "failed-logins",
                f"at least {cfg.storm_failures} failed log-ins within "
                f"{cfg.storm_window.total_seconds() / 60:.0f} minutes",
                {"failures": g["failures"], "sources": g["sources"], "day": str(g["day"])},
            )
        ]
        if g["followed"]:
            score += 20
            qualifiers.append("followed by a successful log-in")
            evidence.append(
                Evidence("success-after-failures", "a log-in succeeded within an hour", {})
            )
        out.append(
            Candidate(
                detector="failed-login-storm",
                user_id=g["user_id"],
                patient_ids=(),
                rows=(),
                first=g["first"],
                last=g["last"],
                score=min(100.0, score),
                phrase=f"{plural(g['failures'], 'failed log-in')} on one account from "
                f"{plural(g['sources'], 'source')}",
                evidence=evidence,
                qualifiers=qualifiers,
                detected=g["detected"],
            )
        )
    return out


def _many_accounts(
    ctx: Context, by: str, k: int, detector: str, what: str, kind: str
) -> list[Candidate]:
    cfg = ctx.config
    failures = ctx.auth.filter(
        pl.col("alertable") & (pl.col("outcome") != "success") & pl.col(by).is_not_null()
    )
    if failures.is_empty():
        return []
    arrivals = failures.group_by(by, "user_id").agg(
        pl.col("t").min(), pl.col("timestamp").min(), pl.col("day").min()
    )
    points = _points(arrivals, by, k, cfg.auth_window)
    if points.is_empty():
        return []
    days = points.group_by(by, "day").agg(pl.col("timestamp").min().alias("detected"))
    per_day = (
        failures.join(days, on=[by, "day"])
        .group_by(by, "day")
        .agg(
            pl.col("user_id").unique().sort().alias("accounts"),
            pl.len().alias("failures"),
            pl.col("timestamp").min().alias("first"),
            pl.col("timestamp").max().alias("last"),
            pl.col("detected").first(),
        )
        .sort(by, "day")
    )
    out: list[Candidate] = []
    for g in per_day.iter_rows(named=True):
        accounts: list[str] = g["accounts"]
        out.append(
            Candidate(
                detector=detector,
                user_id=MANY_ACCOUNTS,
                patient_ids=(),
                rows=(),
                first=g["first"],
                last=g["last"],
                score=min(100.0, cfg.weight(detector) + min(20.0, len(accounts) - k)),
                phrase=f"{plural(g['failures'], 'failed log-in')} on "
                f"{plural(len(accounts), 'account')} from {what}",
                evidence=[
                    Evidence(
                        kind,
                        f"failures on many accounts from {what}",
                        {by: g[by], "accounts": accounts, "day": str(g["day"])},
                    )
                ],
                qualifiers=[ctx.clock(g["first"])],
                detected=g["detected"],
            )
        )
    return out


def detect(ctx: Context) -> list[Candidate]:
    cfg = ctx.config
    if ctx.auth.is_empty():
        return []
    return (
        storms(ctx)
        + _many_accounts(
            ctx,
            "source",
            cfg.stuffing_accounts,
            "credential-stuffing",
            "one source",
            "one-source-many-accounts",
        )
        + _many_accounts(
            ctx,
            "secret_hash",
            cfg.spraying_accounts,
            "password-spraying",
            "one password",
            "one-secret-many-accounts",
        )
    )

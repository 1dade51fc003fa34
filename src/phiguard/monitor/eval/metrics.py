"""Scoring a scan against the ground truth.

Unit of judgement: the **case**.  An injected instance is caught when a case of the
instance's user, within the review budget, holds an alert that covers one of the
instance's accesses (or, for log-in-only signals, any alert of that user from the
instance's first event on).  The review budget is ``BUDGET_PER_10K`` cases per
10,000 scanned accesses (at least ``MIN_BUDGET``): what a privacy office can read.

Seeds: thresholds are tuned on ``TUNING_SEEDS`` with ``TUNING_PARAMS``; the figures
reported (and the test suite's check) use ``HELD_OUT_SEED`` with
``HELD_OUT_PARAMS``, never used for tuning.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Final

import polars as pl

from phiguard.monitor.eval.generate import Traffic
from phiguard.monitor.eval.scenarios import KINDS
from phiguard.monitor.scan import Alert, Case, ScanResult

PATTERN_KINDS: Final = frozenset({"mrn-browsing", "bulk-export", "compromised"})
"""Kinds whose targets are arbitrary patients, caught by their pattern (volume, order,
habits) rather than by the absence of a reason: left out of the explained-away
target, reported per kind all the same."""
TUNING_SEEDS: Final = (101, 102)
HELD_OUT_SEED: Final = 7919
BUDGET_PER_10K: Final = 2.0
MIN_BUDGET: Final = 10


@dataclass(frozen=True)
class Targets:
    recall: float = 0.9
    false_alerts_per_10k: float = 2.0
    explained_benign: float = 0.94
    explained_away: float = 0.02


@dataclass
class KindFigures:
    kind: str
    instances: int = 0
    caught: int = 0
    recall: float = math.nan
    average_precision: float = math.nan
    explained_away: float = math.nan
    detect_hours: list[float] = field(default_factory=list)

    @property
    def median_detect_hours(self) -> float:
        return statistics.median(self.detect_hours) if self.detect_hours else math.nan


@dataclass
class Figures:
    """Everything the evaluation reports for one scan."""

    accesses: int
    benign_accesses: int
    injected_accesses: int
    budget: int
    cases: int
    precision_at_budget: float
    average_precision: float
    false_alerts: int
    false_alerts_per_10k: float
    explained_benign: float
    explained_away: float
    kinds: dict[str, KindFigures]
    missed: list[str]
    targets: Targets = field(default_factory=Targets)

    def checks(self) -> list[tuple[str, str, bool]]:
        t = self.targets
        out = [
            (
                f"case recall >= {t.recall:.2f} for {kind}",
                f"{k.recall:.2f} ({k.caught}/{k.instances})",
                k.recall >= t.recall,
            )
            for kind, k in self.kinds.items()
            if k.instances
        ]
        out.append(
            (
                f"<= {t.false_alerts_per_10k:g} alerts per 10,000 benign accesses",
                f"{self.false_alerts_per_10k:.2f} ({self.false_alerts} alerts)",
                self.false_alerts_per_10k <= t.false_alerts_per_10k,
            )
        )
        out.append(
            (
                f">= {t.explained_benign:.0%} of benign accesses explained",
                f"{self.explained_benign:.2%}",
                self.explained_benign >= t.explained_benign,
            )
        )
        out.append(
            (
                f"<= {t.explained_away:.0%} of injected snooping accesses explained away",
                f"{self.explained_away:.2%}",
                self.explained_away <= t.explained_away,
            )
        )
        return out

    @property
    def met(self) -> bool:
        return all(ok for _, _, ok in self.checks())

    def as_dict(self) -> dict[str, Any]:
        return {
            "accesses": self.accesses,
            "benign_accesses": self.benign_accesses,
            "injected_accesses": self.injected_accesses,
            "review_budget_cases": self.budget,
            "cases": self.cases,
            "precision_at_budget": self.precision_at_budget,
            "average_precision": self.average_precision,
            "false_alerts": self.false_alerts,
            "false_alerts_per_10k_benign": self.false_alerts_per_10k,
            "explained_benign": self.explained_benign,
            "explained_away": self.explained_away,
            "kinds": {
                kind: {
                    "instances": k.instances,
                    "caught": k.caught,
                    "recall": k.recall,
                    "average_precision": k.average_precision,
                    "explained_away": k.explained_away,
                    "median_hours_to_detect": k.median_detect_hours,
                }
                for kind, k in self.kinds.items()
            },
            "missed": self.missed,
            "checks": [{"target": t, "measured": m, "met": ok} for t, m, ok in self.checks()],
            "met": self.met,
        }


def budget_for(accesses: int) -> int:
    return max(MIN_BUDGET, math.ceil(BUDGET_PER_10K * accesses / 10_000))


def _average_precision(ranked: list[bool], positives: int) -> float:
    if positives == 0:
        return math.nan
    hits, total = 0, 0.0
    for k, relevant in enumerate(ranked, 1):
        if relevant:
            hits += 1
            total += hits / k
    return total / positives


def evaluate(traffic: Traffic, result: ScanResult, targets: Targets | None = None) -> Figures:
    """Figures of ``result`` (a scan of ``traffic.dataset`` from ``traffic.since``)."""
    labels = traffic.labels
    access = traffic.dataset.access
    frame = pl.DataFrame(
        {
            "label": labels,
            "explained": result.explained,
            "alertable": access["timestamp"] >= traffic.since,
        }
    ).with_row_index("row")
    scanned = frame.filter(pl.col("alertable"))
    benign = scanned.filter(pl.col("label").is_null())
    injected = frame.filter(pl.col("label").is_not_null())
    rows_of: dict[str, set[int]] = {
        label: set(rows)
        for label, rows in injected.group_by("label").agg(pl.col("row")).iter_rows()
    }
    explained_of: dict[str, tuple[int, int]] = {
        label: (int(e), int(n))
        for label, e, n in injected.group_by("label")
        .agg(pl.col("explained").sum(), pl.len())
        .iter_rows()
    }
    alerts: dict[str, Alert] = {a.id: a for a in result.alerts}
    injected_rows = set(injected["row"].to_list())
    perpetrators = {i.user_id for i in traffic.instances}

    def matches(case: Case) -> set[str]:
        found: set[str] = set()
        for instance in traffic.instances:
            if instance.user_id != case.user_id:
                continue
            rows = rows_of.get(instance.id, set())
            for alert_id in case.alert_ids:
                alert = alerts[alert_id]
                if rows.intersection(alert.access_rows) or (
                    not alert.access_rows and alert.last_event_at >= instance.first_event_at
                ):
                    found.add(instance.id)
                    break
        return found

    budget = budget_for(scanned.height)
    ranked = list(result.cases)
    case_hits = [matches(c) for c in ranked]
    reviewed = ranked[:budget]
    caught_at: dict[str, Case] = {}
    for case, hits in zip(reviewed, case_hits[:budget], strict=True):
        for iid in hits:
            caught_at.setdefault(iid, case)
    precision = (
        sum(1 for hits in case_hits[:budget] if hits) / len(reviewed) if reviewed else math.nan
    )
    ap_all = _average_precision([bool(h) for h in case_hits], len(traffic.instances))

    false_alerts = sum(
        1
        for a in result.alerts
        if a.score >= 0
        and not injected_rows.intersection(a.access_rows)
        and not (not a.access_rows and a.user_id in perpetrators)
    )
    benign_n = benign.height
    kinds: dict[str, KindFigures] = {}
    for kind in KINDS:
        mine = [i for i in traffic.instances if i.kind == kind]
        figures = KindFigures(kind, instances=len(mine))
        if mine:
            ids = {i.id for i in mine}
            figures.caught = sum(1 for i in mine if i.id in caught_at)
            figures.recall = figures.caught / len(mine)
            ranked_kind = [
                bool(h & ids) for h in case_hits if (h & ids) or not h
            ]  # this kind's cases against benign ones; other kinds' cases left out
            figures.average_precision = _average_precision(ranked_kind, len(mine))
            e = sum(explained_of.get(i, (0, 0))[0] for i in ids)
            n = sum(explained_of.get(i, (0, 0))[1] for i in ids)
            figures.explained_away = e / n if n else math.nan
            for i in mine:
                if i.id in caught_at:
                    delta = caught_at[i.id].opened_at - i.first_event_at
                    figures.detect_hours.append(max(0.0, delta.total_seconds() / 3600))
        kinds[kind] = figures
    kind_of = {i.id: i.kind for i in traffic.instances}
    snoops = [v for iid, v in explained_of.items() if kind_of.get(iid) not in PATTERN_KINDS]
    e_all = sum(e for e, _ in snoops)
    n_all = sum(n for _, n in snoops)
    return Figures(
        accesses=scanned.height,
        benign_accesses=benign_n,
        injected_accesses=injected.height,
        budget=budget,
        cases=len(ranked),
        precision_at_budget=precision,
        average_precision=ap_all,
        false_alerts=false_alerts,
        false_alerts_per_10k=10_000 * false_alerts / max(1, benign_n),
        explained_benign=(float(benign["explained"].sum()) / benign_n) if benign_n else 1.0,
        explained_away=e_all / n_all if n_all else 0.0,
        kinds=kinds,
        missed=sorted(i.id for i in traffic.instances if i.id not in caught_at),
        targets=targets or Targets(),
    )

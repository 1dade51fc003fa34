"""Thresholds and weights of detection, in one frozen dataclass with working defaults.

Every number a privacy office might argue about lives here rather than inside a
detector, so a hospital can tune without code and the evaluation can show which
values were tuned (``monitor/eval`` reports the configuration it ran with).  Scores
are on a 0..100 scale; an alert "alerts" at ``alert_threshold`` and a case opens
when the combined score of one user's alerts crosses the same threshold.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, fields, replace
from typing import Any, Final

BREAK_THE_GLASS: Final = "BreakTheGlass"
"""``resource_type`` of the access row that marks a break-the-glass (action ``view``).

Sources write one such row when a user invokes emergency access to a patient; the
ordinary reads that follow are ordinary rows.  The marker is independent of the
workstation and of any vendor's own flag, so every source can produce it.
"""
DEMOGRAPHIC_TYPES: Final = frozenset({"Patient"})
"""Resource types that show who a patient is but nothing of their care."""
PRINT_ACTIONS: Final = frozenset({"print", "export"})


def _weights() -> dict[str, float]:
    return {
        "self": 70.0,
        "family": 75.0,
        "household": 65.0,
        "neighbour": 50.0,
        "coworker": 50.0,
        "vip": 45.0,
        "surname": 20.0,
        "employee": 25.0,
        "vip-surge": 70.0,
        "terminated-user": 90.0,
        "unknown-user": 60.0,
        "break-the-glass": 55.0,
        "after-hours": 55.0,
        "volume": 55.0,
        "mrn-browsing": 70.0,
        "bulk-export": 70.0,
        "demographics-browsing": 55.0,
        "serial-unexplained": 50.0,
        "compromised-account": 75.0,
        "failed-login-storm": 50.0,
        "credential-stuffing": 80.0,
        "password-spraying": 80.0,
    }


def _role_work() -> dict[str, tuple[int, int]]:
    # role -> (days before the patient's care starts, days after it ends) in which
    # the role's ordinary work touches the record: registration books ahead,
    # billing and coding follow discharge.
    return {
        "registration": (30, 2),
        "billing": (2, 120),
        "him": (2, 90),
    }


@dataclass(frozen=True)
class DetectionConfig:
    """Everything detection reads besides the data; defaults are the tuned values."""

    # -- explanation windows -------------------------------------------------------
    care_before: dt.timedelta = dt.timedelta(days=3)
    """A user may open a record this long before a documented relationship starts."""
    care_after: dt.timedelta = dt.timedelta(days=30)
    """...and this long after it ends (results, letters, follow-up)."""
    department_before: dt.timedelta = dt.timedelta(hours=12)
    department_after: dt.timedelta = dt.timedelta(days=1)
    """Department-level explanation is deliberately tighter: it covers colleagues on
    the same ward while the patient is there, not everyone who ever worked there."""
    role_work: dict[str, tuple[int, int]] = field(default_factory=_role_work)

    # -- scoring ----------------------------------------------------------------------
    weights: dict[str, float] = field(default_factory=_weights)
    alert_threshold: float = 50.0
    report_threshold: float = 20.0
    """Candidates scoring below this are dropped outright (counted in stats)."""
    off_hours_bonus: float = 10.0
    rarity_weight: float = 10.0
    """Neighbour score per tenfold rarity of the street beyond 1 % of patients."""
    per_extra_patient: float = 5.0
    per_extra_record: float = 3.0
    """Per record beyond two opened per patient: a look that goes deeper."""
    max_extra: float = 15.0

    # -- user habits ------------------------------------------------------------------
    timezone: str = "UTC"
    """Hours of day and the times in reasons are read in this zone."""
    off_hours_share: float = 0.01
    """An hour holding less than this share of a user's past accesses is quiet; the
    longest quiet run of the day is the user's rest period."""
    min_history_events: int = 30
    """Below this many explained accesses a user's hours are their peers' (same role
    and department); below it for the peers too, nobody's hours are judged."""

    # -- volume -------------------------------------------------------------------------
    volume_factor: float = 3.0
    """A day's distinct patients above this many times the user's usual day..."""
    volume_peer_factor: float = 3.0
    """...and above this many times the median of peers (same role and department)..."""
    volume_min_patients: int = 40
    """...and at least this many distinct patients."""
    min_history_days: int = 5

    # -- patterns ------------------------------------------------------------------------
    mrn_run: int = 5
    """Distinct patients opened in MRN order (gap ``mrn_gap``) within ``mrn_window``."""
    mrn_gap: int = 2
    mrn_window: dt.timedelta = dt.timedelta(minutes=30)
    bulk_min_patients: int = 25
    bulk_factor: float = 5.0
    demographics_min_patients: int = 8
    vip_surge_users: int = 4
    vip_surge_window: dt.timedelta = dt.timedelta(hours=24)
    serial_min_patients: int = 6
    """Unexplained distinct patients in the scan before serial snooping is judged."""
    serial_min_exposure: int = 30
    """Peer working days needed before a peer group's rate is trusted (else the role's,
    else everyone's)."""
    serial_alpha: float = 1e-3
    """Serial snooping: the chance that a user with the peers' rate of unexplained
    patients shows as many is below this (Poisson tail)."""
    btg_followup: dt.timedelta = dt.timedelta(days=3)

    # -- compromised account -------------------------------------------------------------
    compromise_volume_factor: float = 2.0

    # -- log-ins ------------------------------------------------------------------------
    storm_failures: int = 10
    storm_window: dt.timedelta = dt.timedelta(minutes=10)
    stuffing_accounts: int = 10
    spraying_accounts: int = 5
    auth_window: dt.timedelta = dt.timedelta(hours=1)

    def weight(self, detector: str) -> float:
        return self.weights.get(detector, 50.0)

    def with_(self, **changes: Any) -> DetectionConfig:
        """A copy with some fields changed (tuning and tests)."""
        return replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable view, for reports."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dt.timedelta):
                value = value.total_seconds()
            out[f.name] = value
        return out

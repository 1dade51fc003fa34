"""Cases: one user's alerts read together, so low-and-slow snooping adds up.

A case opens at the moment its alerts' combined score (noisy-OR, ``scoring.combine``)
first reaches the alert threshold; ``opened_at`` is that event time, which is what
"time to detect" measures.  Alerts below the threshold count towards a case, so
five weak signals by one user surface together even though none alerts alone.
A case id depends on the user and the alert that opened it, so a re-scan of the
same data (or of more data after it) finds the same case.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from phiguard.monitor.detectors.base import plural
from phiguard.monitor.scoring import ID_LENGTH, Alert, combine


@dataclass(frozen=True)
class Case:
    """Every alert of one user that together crossed the threshold."""

    id: str
    user_id: str
    alert_ids: tuple[str, ...]
    patient_ids: tuple[str, ...]
    score: float
    reason: str
    opened_at: dt.datetime


def build_cases(
    alerts: Sequence[Alert], detected: Mapping[str, dt.datetime], threshold: float
) -> list[Case]:
    """Cases over ``alerts`` (``detected``: alert id to when it became knowable),
    highest score first."""
    by_user: defaultdict[str, list[Alert]] = defaultdict(list)
    for alert in alerts:
        by_user[alert.user_id].append(alert)
    cases: list[Case] = []
    for user_id in sorted(by_user):
        ordered = sorted(by_user[user_id], key=lambda a: (detected[a.id], a.id))
        running: list[float] = []
        opened: tuple[dt.datetime, str] | None = None
        for alert in ordered:
            running.append(alert.score)
            if opened is None and combine(running) >= threshold:
                opened = (detected[alert.id], alert.id)
        if opened is None:
            continue
        score = combine(running)
        patients = tuple(sorted({p for a in ordered for p in a.patient_ids}))
        top = max(ordered, key=lambda a: (a.score, a.id))
        kinds = sorted({a.detector for a in ordered})
        days = {detected[a.id].date() for a in ordered}
        summary = (
            f"{plural(len(ordered), 'alert')} ({', '.join(kinds)}) on "
            f"{plural(len(patients), 'patient')} over {plural(len(days), 'day')}"
        )
        cases.append(
            Case(
                id=hashlib.sha256(f"case\x1f{user_id}\x1f{opened[1]}".encode()).hexdigest()[
                    :ID_LENGTH
                ],
                user_id=user_id,
                alert_ids=tuple(a.id for a in ordered),
                patient_ids=patients,
                score=score,
                reason=f"{summary}; strongest: {top.reason}",
                opened_at=opened[0].astimezone(dt.UTC),
            )
        )
    cases.sort(key=lambda c: (-c.score, c.opened_at, c.id))
    return cases

"""From candidates to alerts: one readable reason, a deterministic id, a final score.

Scores stay on 0..100 so a privacy officer can read them without a manual; signals
of one user are combined with a noisy-OR (``combine``): two independent 40s make a
64, never more than 100, and a single strong signal is not diluted by weak ones.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from phiguard.monitor.detectors.base import Candidate, Evidence

ID_LENGTH: Final = 24


@dataclass(frozen=True)
class Alert:
    """One finding about one user, with the facts behind it."""

    id: str
    detector: str
    user_id: str
    patient_ids: tuple[str, ...]
    score: float
    reason: str
    evidence: tuple[Evidence, ...]
    first_event_at: dt.datetime
    last_event_at: dt.datetime
    access_rows: tuple[int, ...]


def alert_id(
    detector: str, user_id: str, patient_ids: Iterable[str], first_event_at: dt.datetime
) -> str:
    """Same finding, same id: re-scanning the same data must not duplicate alerts."""
    material = "\x1f".join(
        [detector, user_id, ",".join(sorted(patient_ids)), first_event_at.isoformat()]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:ID_LENGTH]


def reason(candidate: Candidate) -> str:
    return "; ".join([candidate.phrase, *candidate.qualifiers])


def combine(scores: Iterable[float]) -> float:
    """Noisy-OR of 0..100 scores."""
    miss = 1.0
    for score in scores:
        miss *= 1.0 - max(0.0, min(100.0, score)) / 100.0
    return round(100.0 * (1.0 - miss), 2)


def to_alert(candidate: Candidate) -> Alert:
    patients = tuple(sorted(set(candidate.patient_ids)))
    return Alert(
        id=alert_id(
            candidate.detector, candidate.user_id, patients, candidate.first.astimezone(dt.UTC)
        ),
        detector=candidate.detector,
        user_id=candidate.user_id,
        patient_ids=patients,
        score=round(max(0.0, min(100.0, candidate.score)), 2),
        reason=reason(candidate),
        evidence=tuple(candidate.evidence),
        first_event_at=candidate.first.astimezone(dt.UTC),
        last_event_at=candidate.last.astimezone(dt.UTC),
        access_rows=tuple(sorted(candidate.rows)),
    )

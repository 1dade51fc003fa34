"""The alert and case workflow: persistence, queue, assignment, notes, disposition,
suppression.

A scan's alerts and cases are stored under the detectors' deterministic ids, so a
re-scan of the same data adds nothing and a closed alert stays closed.  What a
queue or a drill-down needs (ids, detector, score, status, times) is in the clear;
what may quote PHI -- the reason, the evidence, reviewers' notes, the reason for a
suppression -- is sealed with the ``__monitor__`` data key and opened only for the
one alert, case or rule asked for.

States (alerts and cases alike)::

    open ──assign──▶ in-review ──close(disposition)──▶ closed ──reopen──▶ in-review
      └──────────────close(disposition)────────────────▶ closed
    suppressed (a live rule matched when it was raised): stored, not queued; may be closed

Dispositions are ``false-positive``, ``policy-violation`` and ``breach``; a breach
writes a referral row for incident management (``monitor_incident_referrals``),
which takes it over once that module exists.  Every action is recorded in the audit
ledger before it commits (an action that cannot be audited does not happen) and in
the alert's or case's own timeline (``monitor_events``).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from sqlalchemy import Connection, Engine, and_, delete, select, update

from phiguard.audit.events import AuditEvent, AuditSink
from phiguard.clock import Clock, SystemClock
from phiguard.crypto.envelope import aad
from phiguard.crypto.keyring import MONITOR_COMPARTMENT, Keyring
from phiguard.errors import UnknownAlert, WorkflowError
from phiguard.monitor.pseudonyms import Pseudonymiser
from phiguard.monitor.store import DatasetStore
from phiguard.store.engine import from_us, now_us
from phiguard.store.tables import (
    monitor_alert_patients,
    monitor_alerts,
    monitor_cases,
    monitor_events,
    monitor_incident_referrals,
    monitor_notes,
    monitor_suppressions,
)

if TYPE_CHECKING:
    from phiguard.system import System

Status = Literal["open", "in-review", "closed", "suppressed"]
STATUSES: Final[tuple[Status, ...]] = ("open", "in-review", "closed", "suppressed")
QUEUED: Final[tuple[Status, ...]] = ("open", "in-review")
DISPOSITIONS: Final = ("false-positive", "policy-violation", "breach")
PURPOSE: Final = "HOPERAT"
MAX_NOTE: Final = 20_000
MAX_REASON: Final = 2_000
# Orders timeline entries written in the same microsecond by one process.
_SEQUENCE: Final = itertools.count()


# -- what a scan hands over (phiguard.monitor.scan's Alert and Case fit these) -----------
class EvidenceLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def text(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...


class AlertLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def detector(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def patient_ids(self) -> tuple[str, ...]: ...
    @property
    def score(self) -> float: ...
    @property
    def reason(self) -> str: ...
    @property
    def evidence(self) -> Sequence[EvidenceLike]: ...
    @property
    def first_event_at(self) -> dt.datetime: ...
    @property
    def last_event_at(self) -> dt.datetime: ...
    @property
    def access_rows(self) -> tuple[int, ...]: ...


class CaseLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def user_id(self) -> str: ...
    @property
    def alert_ids(self) -> tuple[str, ...]: ...
    @property
    def patient_ids(self) -> tuple[str, ...]: ...
    @property
    def score(self) -> float: ...
    @property
    def reason(self) -> str: ...
    @property
    def opened_at(self) -> dt.datetime: ...


# -- what the workflow hands back --------------------------------------------------------
@dataclass(frozen=True)
class AlertRow:
    """An alert as a queue shows it: identifiers, score and state; nothing sealed."""

    alert_id: str
    detector: str
    user_id: str
    patient_ids: tuple[str, ...]
    score: float
    status: Status
    assignee: str | None
    disposition: str | None
    case_id: str | None
    suppressed_by: str | None
    first_event_at: dt.datetime
    last_event_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime
    closed_at: dt.datetime | None

    def public(self) -> dict[str, Any]:
        """The row as JSON-able data (ids, codes and times: no PHI)."""
        return {
            "alert_id": self.alert_id,
            "detector": self.detector,
            "user_id": self.user_id,
            "patient_ids": list(self.patient_ids),
            "score": round(self.score, 2),
            "status": self.status,
            "assignee": self.assignee,
            "disposition": self.disposition,
            "case_id": self.case_id,
            "suppressed_by": self.suppressed_by,
            "first_event_at": _iso(self.first_event_at),
            "last_event_at": _iso(self.last_event_at),
            "created_at": _iso(self.created_at),
            "closed_at": _iso(self.closed_at),
        }


@dataclass(frozen=True)
class CaseRow:
    case_id: str
    user_id: str
    patient_ids: tuple[str, ...]
    score: float
    status: Status
    assignee: str | None
    disposition: str | None
    opened_at: dt.datetime
    created_at: dt.datetime
    updated_at: dt.datetime
    closed_at: dt.datetime | None

    def public(self) -> dict[str, Any]:
        return {
            "case_id": self.case_id,
            "user_id": self.user_id,
            "patient_ids": list(self.patient_ids),
            "score": round(self.score, 2),
            "status": self.status,
            "assignee": self.assignee,
            "disposition": self.disposition,
            "opened_at": _iso(self.opened_at),
            "closed_at": _iso(self.closed_at),
        }


@dataclass(frozen=True)
class Evidence:
    kind: str
    text: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Note:
    note_id: str
    target: str
    author: str
    created_at: dt.datetime
    text: str


@dataclass(frozen=True)
class TimelineEntry:
    at: dt.datetime
    actor: str
    action: str
    detail: dict[str, Any]


@dataclass(frozen=True)
class AlertDetail:
    """One alert opened for review: the sealed reason and evidence, notes, timeline,
    and the other system's id of each pseudonymised patient (``source_ids``)."""

    row: AlertRow
    reason: str
    evidence: tuple[Evidence, ...]
    access_rows: tuple[int, ...]
    notes: tuple[Note, ...]
    timeline: tuple[TimelineEntry, ...]
    source_ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CaseDetail:
    row: CaseRow
    reason: str
    alerts: tuple[AlertRow, ...]
    notes: tuple[Note, ...]
    timeline: tuple[TimelineEntry, ...]
    source_ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Suppression:
    rule_id: str
    detector: str
    user_id: str | None
    patient_id: str | None
    created_by: str
    created_at: dt.datetime
    expires_at: dt.datetime
    revoked_at: dt.datetime | None
    reason: str

    def live(self, at: dt.datetime) -> bool:
        return self.revoked_at is None and self.created_at <= at < self.expires_at


@dataclass(frozen=True)
class Referral:
    """A breach handed to incident management (a placeholder row until it exists)."""

    referral_id: str
    alert_id: str | None
    case_id: str | None
    referred_by: str
    referred_at: dt.datetime
    incident_id: str | None


@dataclass
class SaveResult:
    """What persisting a scan changed."""

    new_alerts: list[str] = field(default_factory=list)
    known_alerts: int = 0
    suppressed: list[str] = field(default_factory=list)
    new_cases: list[str] = field(default_factory=list)
    updated_cases: int = 0


class Workflow:
    """Alerts and cases of one tenant, and everything reviewers do with them."""

    def __init__(
        self,
        engine: Engine,
        keyring: Keyring,
        audit: AuditSink,
        *,
        tenant: str = "default",
        clock: Clock | None = None,
    ) -> None:
        self.engine = engine
        self.keyring = keyring
        self.audit = audit
        self.tenant = tenant
        self.clock = clock or SystemClock()
        self._pseudonymiser: Pseudonymiser | None = None

    @property
    def pseudonymiser(self) -> Pseudonymiser:
        """The ingest's pseudonymiser: a source id typed by an officer becomes the id
        stored (derived on first use; most workflow calls never need it)."""
        if self._pseudonymiser is None:
            self._pseudonymiser = Pseudonymiser.for_tenant(self.keyring, self.tenant)
        return self._pseudonymiser

    def patient_keys(self, patient_id: str) -> tuple[str, ...]:
        """The stored ids ``patient_id`` may stand for: itself (a pseudonym or phiguard's
        own patient id) and, read as another system's id, its pseudonym."""
        return self.pseudonymiser.candidates(patient_id.strip())

    def _source_ids(self, patient_ids: Iterable[str]) -> dict[str, str]:
        store = DatasetStore(self.engine, self.keyring, tenant=self.tenant, clock=self.clock)
        return store.source_ids(patient_ids)

    @classmethod
    def from_system(cls, system: System) -> Workflow:
        return cls(
            system.engine,
            system.keyring,
            system.vault.audit,
            tenant=system.settings.tenant,
            clock=system.clock,
        )

    # -- persisting a scan ---------------------------------------------------------------
    def save(
        self,
        alerts: Iterable[AlertLike],
        cases: Iterable[CaseLike] = (),
        *,
        by: str,
        source: str = "",
    ) -> SaveResult:
        """Store a scan's alerts and cases; ids already stored are not added again.

        A new alert that a live suppression rule matches is stored as ``suppressed``.
        A known alert that is still queued takes the newer score, times and evidence
        (a detector's window grew); a closed one is left as it was decided.
        """
        now = self.clock.now()
        at = now_us(now)
        result = SaveResult()
        alerts = list(alerts)
        cases = list(cases)
        case_of = {a: c.id for c in cases for a in c.alert_ids}
        with self.engine.begin() as conn:
            rules = self._live_rules(conn, now)
            sealer = self.keyring.current_sealer(MONITOR_COMPARTMENT, conn)
            for alert in alerts:
                existing = conn.execute(
                    select(monitor_alerts.c.status).where(
                        monitor_alerts.c.alert_id == alert.id,
                        monitor_alerts.c.tenant == self.tenant,
                    )
                ).first()
                sealed = sealer.seal(_alert_payload(alert), self._aad("alert", alert.id))
                if existing is not None:
                    result.known_alerts += 1
                    if existing.status in QUEUED:
                        changes: dict[str, Any] = {
                            "score": float(alert.score),
                            "first_event_at": now_us(alert.first_event_at),
                            "last_event_at": now_us(alert.last_event_at),
                            "dek_version": sealer.key_version,
                            "sealed": sealed,
                        }
                        if alert.id in case_of:
                            changes["case_id"] = case_of[alert.id]
                        conn.execute(
                            update(monitor_alerts)
                            .where(monitor_alerts.c.alert_id == alert.id)
                            .values(**changes)
                        )
                    continue
                rule = _matching_rule(rules, alert, self.pseudonymiser if rules else None)
                status: Status = "open" if rule is None else "suppressed"
                conn.execute(
                    monitor_alerts.insert().values(
                        alert_id=alert.id,
                        tenant=self.tenant,
                        detector=alert.detector,
                        user_id=alert.user_id,
                        patient_ids=json.dumps(list(alert.patient_ids)),
                        score=float(alert.score),
                        first_event_at=now_us(alert.first_event_at),
                        last_event_at=now_us(alert.last_event_at),
                        dek_version=sealer.key_version,
                        sealed=sealed,
                        case_id=case_of.get(alert.id),
                        status=status,
                        suppressed_by=None if rule is None else rule.rule_id,
                        created_at=at,
                        updated_at=at,
                    )
                )
                if alert.patient_ids:
                    conn.execute(
                        monitor_alert_patients.insert(),
                        [
                            {"patient_id": p, "alert_id": alert.id}
                            for p in dict.fromkeys(alert.patient_ids)
                        ],
                    )
                self._event(
                    conn,
                    alert.id,
                    by,
                    "raised" if rule is None else "suppressed",
                    at,
                    {"score": round(float(alert.score), 2), "rule": rule and rule.rule_id},
                )
                (result.new_alerts if rule is None else result.suppressed).append(alert.id)
            for case in cases:
                self._save_case(conn, case, sealer, by, at, result)
            if result.new_alerts or result.suppressed or result.new_cases:
                self._audit(
                    conn,
                    "monitor-alerts-raised",
                    by,
                    source=source,
                    alerts=len(result.new_alerts),
                    suppressed=len(result.suppressed),
                    cases=len(result.new_cases),
                )
        return result

    def _save_case(
        self,
        conn: Connection,
        case: CaseLike,
        sealer: Any,
        by: str,
        at: int,
        result: SaveResult,
    ) -> None:
        row = conn.execute(
            select(monitor_cases.c.status, monitor_cases.c.patient_ids).where(
                monitor_cases.c.case_id == case.id, monitor_cases.c.tenant == self.tenant
            )
        ).first()
        sealed = sealer.seal(
            json.dumps({"reason": case.reason}).encode(), self._aad("case", case.id)
        )
        if row is not None:
            result.updated_cases += 1
            if row.status in QUEUED:
                patients = list(dict.fromkeys([*json.loads(row.patient_ids), *case.patient_ids]))
                conn.execute(
                    update(monitor_cases)
                    .where(monitor_cases.c.case_id == case.id)
                    .values(
                        score=float(case.score),
                        patient_ids=json.dumps(patients),
                        dek_version=sealer.key_version,
                        sealed=sealed,
                        updated_at=at,
                    )
                )
            return
        conn.execute(
            monitor_cases.insert().values(
                case_id=case.id,
                tenant=self.tenant,
                user_id=case.user_id,
                patient_ids=json.dumps(list(case.patient_ids)),
                score=float(case.score),
                opened_at=now_us(case.opened_at),
                dek_version=sealer.key_version,
                sealed=sealed,
                status="open",
                created_at=at,
                updated_at=at,
            )
        )
        self._event(
            conn, case.id, by, "opened", at, {"alerts": list(case.alert_ids), "score": case.score}
        )
        result.new_cases.append(case.id)

    # -- reading -------------------------------------------------------------------------
    def queue(
        self,
        *,
        status: Status | Literal["queued", "all"] = "queued",
        detector: str | None = None,
        user_id: str | None = None,
        patient_id: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[AlertRow]:
        """Alerts ordered by score (highest first), then by age (oldest first).

        ``queued`` is what reviewers work through: open and in-review alerts.
        """
        a = monitor_alerts.c
        stmt = select(monitor_alerts).where(a.tenant == self.tenant)
        if status == "queued":
            stmt = stmt.where(a.status.in_(QUEUED))
        elif status != "all":
            stmt = stmt.where(a.status == _check_status(status))
        if detector is not None:
            stmt = stmt.where(a.detector == detector)
        if user_id is not None:
            stmt = stmt.where(a.user_id == user_id)
        if patient_id is not None:
            stmt = stmt.where(
                a.alert_id.in_(
                    select(monitor_alert_patients.c.alert_id).where(
                        monitor_alert_patients.c.patient_id.in_(self.patient_keys(patient_id))
                    )
                )
            )
        stmt = stmt.order_by(a.score.desc(), a.first_event_at, a.alert_id).offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [_alert_row(r) for r in conn.execute(stmt)]

    def cases(
        self, *, status: Status | Literal["queued", "all"] = "queued", user_id: str | None = None
    ) -> list[CaseRow]:
        c = monitor_cases.c
        stmt = select(monitor_cases).where(c.tenant == self.tenant)
        if status == "queued":
            stmt = stmt.where(c.status.in_(QUEUED))
        elif status != "all":
            stmt = stmt.where(c.status == _check_status(status))
        if user_id is not None:
            stmt = stmt.where(c.user_id == user_id)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(c.score.desc(), c.opened_at, c.case_id))
            return [_case_row(r) for r in rows]

    def alert_row(self, alert_id: str) -> AlertRow:
        with self.engine.connect() as conn:
            row = self._alert(conn, alert_id)
        if row is None:
            raise UnknownAlert(f"there is no alert {alert_id}")
        return _alert_row(row)

    def alert(self, alert_id: str, *, by: str, source: str = "") -> AlertDetail:
        """Open one alert's reason and evidence; the opening is audited (with its patients)."""
        with self.engine.begin() as conn:
            row = self._alert(conn, alert_id)
            if row is None:
                raise UnknownAlert(f"there is no alert {alert_id}")
            sealer = self.keyring.sealer(MONITOR_COMPARTMENT, int(row.dek_version), conn)
            payload = json.loads(
                sealer.open(bytes(row.sealed), self._aad("alert", alert_id), "alert")
            )
            alert = _alert_row(row)
            sources = self._source_ids(alert.patient_ids)
            self._audit(
                conn,
                "monitor-alert-view",
                by,
                source=source,
                patient_ids=alert.patient_ids,
                alert=alert_id,
                source_ids=len(sources) or None,
            )
            notes = self._notes(conn, alert_id)
            timeline = self._timeline(conn, alert_id)
        return AlertDetail(
            alert,
            str(payload["reason"]),
            tuple(Evidence(e["kind"], e["text"], e["data"]) for e in payload["evidence"]),
            tuple(int(r) for r in payload["access_rows"]),
            notes,
            timeline,
            sources,
        )

    def case(self, case_id: str, *, by: str, source: str = "") -> CaseDetail:
        with self.engine.begin() as conn:
            row = self._case(conn, case_id)
            if row is None:
                raise UnknownAlert(f"there is no case {case_id}")
            sealer = self.keyring.sealer(MONITOR_COMPARTMENT, int(row.dek_version), conn)
            payload = json.loads(sealer.open(bytes(row.sealed), self._aad("case", case_id), "case"))
            case = _case_row(row)
            alerts = tuple(
                _alert_row(r)
                for r in conn.execute(
                    select(monitor_alerts)
                    .where(monitor_alerts.c.case_id == case_id)
                    .order_by(monitor_alerts.c.first_event_at, monitor_alerts.c.alert_id)
                )
            )
            sources = self._source_ids(case.patient_ids)
            self._audit(
                conn,
                "monitor-case-view",
                by,
                source=source,
                patient_ids=case.patient_ids,
                case=case_id,
                source_ids=len(sources) or None,
            )
            notes = self._notes(conn, case_id)
            timeline = self._timeline(conn, case_id)
        return CaseDetail(case, str(payload["reason"]), alerts, notes, timeline, sources)

    # -- reviewers' actions --------------------------------------------------------------
    def assign(self, target: str, assignee: str, *, by: str, source: str = "") -> Status:
        """Give an alert or case to ``assignee``; it moves to ``in-review``."""
        assignee = _text(assignee, "assignee", 200)
        return self._transition(
            target,
            allowed=("open", "in-review"),
            values={"status": "in-review", "assignee": assignee},
            action="assign",
            by=by,
            source=source,
            detail={"assignee": assignee},
        )

    def close(self, target: str, disposition: str, *, by: str, source: str = "") -> Status:
        """Close with a disposition; a breach is referred to incident management.

        Closing a case closes its alerts that are still open, with the same
        disposition (one decision about one user's behaviour).
        """
        if disposition not in DISPOSITIONS:
            raise WorkflowError(f"disposition must be one of: {', '.join(DISPOSITIONS)}")
        at = now_us(self.clock.now())
        return self._transition(
            target,
            allowed=("open", "in-review", "suppressed"),
            values={"status": "closed", "disposition": disposition, "closed_at": at},
            action="close",
            by=by,
            source=source,
            detail={"disposition": disposition},
        )

    def reopen(self, target: str, *, by: str, source: str = "") -> Status:
        """A closed alert or case back to review (a decision is being revisited)."""
        return self._transition(
            target,
            allowed=("closed",),
            values={"status": "in-review", "disposition": None, "closed_at": None},
            action="reopen",
            by=by,
            source=source,
            detail={},
        )

    def note(self, target: str, text: str, *, by: str, source: str = "") -> Note:
        """Add a reviewer's note (sealed: it may quote PHI) to an alert or case."""
        text = text.strip()
        if not text:
            raise WorkflowError("a note cannot be empty")
        if len(text) > MAX_NOTE:
            raise WorkflowError(f"a note is limited to {MAX_NOTE} characters")
        now = self.clock.now()
        note_id = "n-" + secrets.token_hex(8)
        with self.engine.begin() as conn:
            kind = self._kind(conn, target)
            sealer = self.keyring.current_sealer(MONITOR_COMPARTMENT, conn)
            conn.execute(
                monitor_notes.insert().values(
                    note_id=note_id,
                    tenant=self.tenant,
                    target=target,
                    author=by,
                    created_at=now_us(now),
                    dek_version=sealer.key_version,
                    sealed=sealer.seal(text.encode(), self._aad("note", note_id, target)),
                )
            )
            self._event(conn, target, by, "note", now_us(now), {"note": note_id})
            self._audit(
                conn, f"monitor-{kind}-note", by, source=source, target=target, note=note_id
            )
        return Note(note_id, target, by, now, text)

    def _transition(
        self,
        target: str,
        *,
        allowed: tuple[Status, ...],
        values: dict[str, Any],
        action: str,
        by: str,
        source: str,
        detail: dict[str, Any],
    ) -> Status:
        at = now_us(self.clock.now())
        with self.engine.begin() as conn:
            kind = self._kind(conn, target)
            table = monitor_alerts if kind == "alert" else monitor_cases
            key = table.c.alert_id if kind == "alert" else table.c.case_id
            # One conditional UPDATE: two reviewers racing cannot both move the state.
            changed = conn.execute(
                update(table)
                .where(key == target, table.c.tenant == self.tenant, table.c.status.in_(allowed))
                .values(**values, updated_at=at)
            )
            if changed.rowcount != 1:
                current = conn.execute(select(table.c.status).where(key == target)).scalar()
                raise WorkflowError(f"{kind} {target} is {current}: cannot {action} it")
            self._event(conn, target, by, action, at, detail)
            if kind == "case" and action == "close":
                closed = conn.execute(
                    update(monitor_alerts)
                    .where(
                        monitor_alerts.c.case_id == target,
                        monitor_alerts.c.status.in_(("open", "in-review", "suppressed")),
                    )
                    .values(**values, updated_at=at)
                    .returning(monitor_alerts.c.alert_id)
                ).scalars()
                for alert_id in list(closed):
                    self._event(conn, alert_id, by, action, at, {**detail, "case": target})
            if action == "close" and values["disposition"] == "breach":
                referral = "r-" + secrets.token_hex(8)
                conn.execute(
                    monitor_incident_referrals.insert().values(
                        referral_id=referral,
                        tenant=self.tenant,
                        alert_id=target if kind == "alert" else None,
                        case_id=target if kind == "case" else None,
                        referred_by=by,
                        referred_at=at,
                    )
                )
                detail = {**detail, "referral": referral}
                self._event(conn, target, by, "referred", at, {"referral": referral})
            self._audit(
                conn, f"monitor-{kind}-{action}", by, source=source, target=target, **detail
            )
        return "closed" if action == "close" else "in-review"

    # -- suppression ---------------------------------------------------------------------
    def suppress(
        self,
        detector: str,
        *,
        user_id: str | None = None,
        patient_id: str | None = None,
        reason: str,
        expires_at: dt.datetime,
        by: str,
        source: str = "",
    ) -> tuple[Suppression, list[str]]:
        """A rule that keeps ``detector``'s alerts about a user and/or patient out of the
        queue until ``expires_at``; queued alerts it matches are suppressed now.

        Returns the rule and the ids of the alerts it took out of the queue.  A rule
        must name a user or a patient: a detector-wide rule would switch detection off.
        """
        detector = _text(detector, "detector", 64)
        if user_id is None and patient_id is None:
            raise WorkflowError("a suppression names a user, a patient or both")
        reason = reason.strip()
        if not reason:
            raise WorkflowError("a suppression needs a reason")
        if len(reason) > MAX_REASON:
            raise WorkflowError(f"a suppression reason is limited to {MAX_REASON} characters")
        now = self.clock.now()
        if expires_at.tzinfo is None:
            raise WorkflowError("the expiry must carry a timezone")
        if expires_at <= now:
            raise WorkflowError("the expiry must lie in the future")
        keys: tuple[str, ...] = ()
        if patient_id is not None:
            # The rule keeps the pseudonym: a source id typed here is never stored.
            keys = self.patient_keys(_text(patient_id, "patient", 128))
            patient_id = self.pseudonymiser.canonical(keys[0])
        rule_id = "s-" + secrets.token_hex(8)
        at = now_us(now)
        with self.engine.begin() as conn:
            sealer = self.keyring.current_sealer(MONITOR_COMPARTMENT, conn)
            conn.execute(
                monitor_suppressions.insert().values(
                    rule_id=rule_id,
                    tenant=self.tenant,
                    detector=detector,
                    user_id=user_id,
                    patient_id=patient_id,
                    created_by=by,
                    created_at=at,
                    expires_at=now_us(expires_at),
                    dek_version=sealer.key_version,
                    sealed=sealer.seal(reason.encode(), self._aad("suppression", rule_id)),
                )
            )
            a = monitor_alerts.c
            matches = select(a.alert_id).where(
                a.tenant == self.tenant, a.detector == detector, a.status.in_(QUEUED)
            )
            if user_id is not None:
                matches = matches.where(a.user_id == user_id)
            if keys:
                matches = matches.where(
                    a.alert_id.in_(
                        select(monitor_alert_patients.c.alert_id).where(
                            monitor_alert_patients.c.patient_id.in_(keys)
                        )
                    )
                )
            taken = list(conn.execute(matches).scalars())
            if taken:
                conn.execute(
                    update(monitor_alerts)
                    .where(a.alert_id.in_(taken))
                    .values(status="suppressed", suppressed_by=rule_id, updated_at=at)
                )
                for alert_id in taken:
                    self._event(conn, alert_id, by, "suppressed", at, {"rule": rule_id})
            self._audit(
                conn,
                "monitor-suppress",
                by,
                source=source,
                rule=rule_id,
                detector=detector,
                user=user_id,
                patient=patient_id,
                expires=_iso(expires_at),
                suppressed=len(taken),
            )
        rule = Suppression(
            rule_id, detector, user_id, patient_id, by, from_us(at), expires_at, None, reason
        )
        return rule, taken

    def revoke_suppression(self, rule_id: str, *, by: str, source: str = "") -> None:
        """End a rule now (alerts it suppressed stay suppressed: they were judged then)."""
        at = now_us(self.clock.now())
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(monitor_suppressions)
                .where(
                    monitor_suppressions.c.rule_id == rule_id,
                    monitor_suppressions.c.tenant == self.tenant,
                    monitor_suppressions.c.revoked_at.is_(None),
                )
                .values(revoked_at=at)
            )
            if changed.rowcount != 1:
                raise UnknownAlert(f"there is no live suppression rule {rule_id}")
            self._audit(conn, "monitor-suppression-revoke", by, source=source, rule=rule_id)

    def suppressions(self, *, live_only: bool = True) -> list[Suppression]:
        now = self.clock.now()
        with self.engine.connect() as conn:
            rules = self._rules(conn)
        return [r for r in rules if r.live(now)] if live_only else rules

    def _live_rules(self, conn: Connection, now: dt.datetime) -> list[Suppression]:
        s = monitor_suppressions.c
        at = now_us(now)
        return self._rules(
            conn,
            and_(s.revoked_at.is_(None), s.expires_at > at, s.created_at <= at),
        )

    def _rules(self, conn: Connection, condition: Any = None) -> list[Suppression]:
        s = monitor_suppressions.c
        stmt = select(monitor_suppressions).where(s.tenant == self.tenant)
        if condition is not None:
            stmt = stmt.where(condition)
        out = []
        for r in conn.execute(stmt.order_by(s.created_at, s.rule_id)):
            sealer = self.keyring.sealer(MONITOR_COMPARTMENT, int(r.dek_version), conn)
            reason = sealer.open(
                bytes(r.sealed), self._aad("suppression", str(r.rule_id)), "suppression"
            ).decode()
            out.append(
                Suppression(
                    str(r.rule_id),
                    str(r.detector),
                    r.user_id,
                    r.patient_id,
                    str(r.created_by),
                    from_us(int(r.created_at)),
                    from_us(int(r.expires_at)),
                    None if r.revoked_at is None else from_us(int(r.revoked_at)),
                    reason,
                )
            )
        return out

    # -- incident referrals and notifications --------------------------------------------
    def referrals(self, *, pending_only: bool = True) -> list[Referral]:
        r = monitor_incident_referrals.c
        stmt = select(monitor_incident_referrals).where(r.tenant == self.tenant)
        if pending_only:
            stmt = stmt.where(r.taken_at.is_(None))
        with self.engine.connect() as conn:
            return [
                Referral(
                    str(x.referral_id),
                    x.alert_id,
                    x.case_id,
                    str(x.referred_by),
                    from_us(int(x.referred_at)),
                    x.incident_id,
                )
                for x in conn.execute(stmt.order_by(r.referred_at))
            ]

    def unnotified(self, min_score: float) -> list[AlertRow]:
        """Queued alerts at or above ``min_score`` nobody was told about yet."""
        a = monitor_alerts.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(monitor_alerts)
                .where(
                    a.tenant == self.tenant,
                    a.status.in_(QUEUED),
                    a.notified_at.is_(None),
                    a.score >= min_score,
                )
                .order_by(a.score.desc(), a.alert_id)
            )
            return [_alert_row(r) for r in rows]

    def mark_notified(self, alert_ids: Iterable[str]) -> None:
        ids = list(alert_ids)
        if not ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(monitor_alerts)
                .where(monitor_alerts.c.alert_id.in_(ids))
                .values(notified_at=now_us(self.clock.now()))
            )

    # -- internals -----------------------------------------------------------------------
    def _aad(self, kind: str, *ids: str) -> bytes:
        return aad("monitor-" + kind, self.tenant, *ids)

    def _alert(self, conn: Connection, alert_id: str) -> Any:
        return conn.execute(
            select(monitor_alerts).where(
                monitor_alerts.c.alert_id == alert_id, monitor_alerts.c.tenant == self.tenant
            )
        ).first()

    def _case(self, conn: Connection, case_id: str) -> Any:
        return conn.execute(
            select(monitor_cases).where(
                monitor_cases.c.case_id == case_id, monitor_cases.c.tenant == self.tenant
            )
        ).first()

    def _kind(self, conn: Connection, target: str) -> Literal["alert", "case"]:
        if self._alert(conn, target) is not None:
            return "alert"
        if self._case(conn, target) is not None:
            return "case"
        raise UnknownAlert(f"there is no alert or case {target}")

    def _notes(self, conn: Connection, target: str) -> tuple[Note, ...]:
        out = []
        for r in conn.execute(
            select(monitor_notes)
            .where(monitor_notes.c.target == target, monitor_notes.c.tenant == self.tenant)
            .order_by(monitor_notes.c.created_at, monitor_notes.c.note_id)
        ):
            sealer = self.keyring.sealer(MONITOR_COMPARTMENT, int(r.dek_version), conn)
            text = sealer.open(
                bytes(r.sealed), self._aad("note", str(r.note_id), target), "note"
            ).decode()
            out.append(
                Note(str(r.note_id), target, str(r.author), from_us(int(r.created_at)), text)
            )
        return tuple(out)

    def _timeline(self, conn: Connection, target: str) -> tuple[TimelineEntry, ...]:
        e = monitor_events.c
        return tuple(
            TimelineEntry(from_us(int(r.at)), str(r.actor), str(r.action), json.loads(r.detail))
            for r in conn.execute(
                select(monitor_events)
                .where(e.target == target, e.tenant == self.tenant)
                .order_by(e.event_id)
            )
        )

    def _event(
        self,
        conn: Connection,
        target: str,
        actor: str,
        action: str,
        at: int,
        detail: dict[str, Any],
    ) -> None:
        conn.execute(
            monitor_events.insert().values(
                event_id=f"{at:016x}{next(_SEQUENCE) % 0x1000000:06x}{secrets.token_hex(4)}",
                tenant=self.tenant,
                target=target,
                at=at,
                actor=actor,
                action=action,
                detail=json.dumps(detail, sort_keys=True, default=str),
            )
        )

    def _audit(
        self,
        conn: Connection,
        action: str,
        by: str,
        *,
        source: str = "",
        patient_ids: tuple[str, ...] = (),
        **detail: object,
    ) -> None:
        if not by.strip():
            raise WorkflowError("the acting principal (by) must be named")
        self.audit.record(
            AuditEvent(
                action=action,
                outcome="success",
                principal=by,
                purpose=PURPOSE,
                request_id=secrets.token_hex(16),
                recorded=self.clock.now(),
                source=source,
                patient_ids=patient_ids,
                detail={k: v for k, v in detail.items() if v is not None},
            ),
            conn,
        )

    def record(
        self, action: str, by: str, *, outcome: str = "success", source: str = "", **detail: object
    ) -> None:
        """Record a monitoring event that is not a change of state (a scan, a notification)."""
        if not by.strip():
            raise WorkflowError("the acting principal (by) must be named")
        self.audit.record(
            AuditEvent(
                action=action,
                outcome=outcome,
                principal=by,
                purpose=PURPOSE,
                request_id=secrets.token_hex(16),
                recorded=self.clock.now(),
                source=source,
                detail={k: v for k, v in detail.items() if v is not None},
            )
        )

    def purge_closed(self, before: dt.datetime) -> int:
        """Delete alerts closed before ``before`` (retention), with their notes and events."""
        cutoff = now_us(before)
        with self.engine.begin() as conn:
            ids = list(
                conn.execute(
                    select(monitor_alerts.c.alert_id).where(
                        monitor_alerts.c.tenant == self.tenant,
                        monitor_alerts.c.status == "closed",
                        monitor_alerts.c.closed_at < cutoff,
                    )
                ).scalars()
            )
            if not ids:
                return 0
            conn.execute(
                delete(monitor_alert_patients).where(monitor_alert_patients.c.alert_id.in_(ids))
            )
            conn.execute(delete(monitor_notes).where(monitor_notes.c.target.in_(ids)))
            conn.execute(delete(monitor_events).where(monitor_events.c.target.in_(ids)))
            conn.execute(delete(monitor_alerts).where(monitor_alerts.c.alert_id.in_(ids)))
        return len(ids)


def _matching_rule(
    rules: list[Suppression], alert: AlertLike, pseudonymiser: Pseudonymiser | None
) -> Suppression | None:
    """The first live rule for this alert; a rule names its patient by pseudonym (of a
    source id or of phiguard's own id), so the alert's ids are compared in that form."""
    patients: set[str] = set(alert.patient_ids)
    if pseudonymiser is not None:
        patients |= {pseudonymiser.canonical(p) for p in alert.patient_ids}
    for rule in rules:
        if rule.detector != alert.detector:
            continue
        if rule.user_id is not None and rule.user_id != alert.user_id:
            continue
        if rule.patient_id is not None and rule.patient_id not in patients:
            continue
        return rule
    return None


def _alert_payload(alert: AlertLike) -> bytes:
    return json.dumps(
        {
            "reason": alert.reason,
            "evidence": [{"kind": e.kind, "text": e.text, "data": e.data} for e in alert.evidence],
            "access_rows": [int(r) for r in alert.access_rows],
        },
        sort_keys=True,
        default=str,
    ).encode()


def _alert_row(r: Any) -> AlertRow:
    return AlertRow(
        alert_id=str(r.alert_id),
        detector=str(r.detector),
        user_id=str(r.user_id),
        patient_ids=tuple(json.loads(r.patient_ids)),
        score=float(r.score),
        status=_check_status(str(r.status)),
        assignee=r.assignee,
        disposition=r.disposition,
        case_id=r.case_id,
        suppressed_by=r.suppressed_by,
        first_event_at=from_us(int(r.first_event_at)),
        last_event_at=from_us(int(r.last_event_at)),
        created_at=from_us(int(r.created_at)),
        updated_at=from_us(int(r.updated_at)),
        closed_at=None if r.closed_at is None else from_us(int(r.closed_at)),
    )


def _case_row(r: Any) -> CaseRow:
    return CaseRow(
        case_id=str(r.case_id),
        user_id=str(r.user_id),
        patient_ids=tuple(json.loads(r.patient_ids)),
        score=float(r.score),
        status=_check_status(str(r.status)),
        assignee=r.assignee,
        disposition=r.disposition,
        opened_at=from_us(int(r.opened_at)),
        created_at=from_us(int(r.created_at)),
        updated_at=from_us(int(r.updated_at)),
        closed_at=None if r.closed_at is None else from_us(int(r.closed_at)),
    )


def _check_status(value: str) -> Status:
    for status in STATUSES:
        if value == status:
            return status
    raise WorkflowError(f"status must be one of: {', '.join(STATUSES)}")


def _text(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if not value:
        raise WorkflowError(f"{what} cannot be empty")
    if len(value) > limit:
        raise WorkflowError(f"{what} is limited to {limit} characters")
    return value


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


__all__ = [
    "DISPOSITIONS",
    "STATUSES",
    "AlertDetail",
    "AlertRow",
    "CaseDetail",
    "CaseRow",
    "Note",
    "Referral",
    "SaveResult",
    "Suppression",
    "Workflow",
]

"""The alert and case workflow as a state machine, with sealing, audit and suppression."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select

from phiguard.clock import FixedClock
from phiguard.errors import UnknownAlert, WorkflowError
from phiguard.monitor.workflow import Workflow
from phiguard.records.hooks import ListAuditSink
from phiguard.records.vault import Vault
from phiguard.store.tables import (
    monitor_alerts,
    monitor_cases,
    monitor_incident_referrals,
    monitor_notes,
    monitor_suppressions,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
REVIEWER = "user/privacy1"


@dataclass(frozen=True)
class Ev:
    kind: str
    text: str
    data: dict[str, Any]


@dataclass(frozen=True)
class A:
    id: str
    detector: str
    user_id: str
    patient_ids: tuple[str, ...]
    score: float
    reason: str = "viewed 1 record of 1 patient sharing the user's surname and address"
    evidence: tuple[Ev, ...] = (Ev("same-surname", "the patient shares the surname", {"n": 1}),)
    first_event_at: dt.datetime = T0
    last_event_at: dt.datetime = T0
    access_rows: tuple[int, ...] = (0,)


@dataclass(frozen=True)
class C:
    id: str
    user_id: str
    alert_ids: tuple[str, ...]
    patient_ids: tuple[str, ...]
    score: float
    reason: str = "2 alerts about the user"
    opened_at: dt.datetime = T0
    extra: dict[str, Any] = field(default_factory=dict)


@pytest.fixture
def flow(vault: Vault, audit_sink: ListAuditSink, clock: FixedClock) -> Workflow:
    return Workflow(vault.engine, vault.keyring, audit_sink, clock=clock)


def alerts() -> list[A]:
    return [
        A("a-low", "after-hours", "u1", ("p1",), 55.0),
        A("a-high", "family", "u1", ("p2",), 90.0),
        A("a-mid", "vip", "u2", ("p3", "p4"), 70.0),
    ]


def test_queue_is_ordered_by_score_and_rescans_add_nothing(flow: Workflow) -> None:
    first = flow.save(alerts(), [C("c1", "u1", ("a-low", "a-high"), ("p1", "p2"), 95.0)], by="s")
    assert sorted(first.new_alerts) == ["a-high", "a-low", "a-mid"] and first.new_cases == ["c1"]
    assert [a.alert_id for a in flow.queue()] == ["a-high", "a-mid", "a-low"]
    assert {a.alert_id: a.case_id for a in flow.queue()}["a-high"] == "c1"
    flow.close("a-low", "false-positive", by=REVIEWER)
    again = flow.save(alerts(), [C("c1", "u1", ("a-low", "a-high"), ("p1", "p2"), 95.0)], by="s")
    assert again.new_alerts == [] and again.known_alerts == 3 and again.updated_cases == 1
    with flow.engine.connect() as conn:
        assert len(conn.execute(select(monitor_alerts.c.alert_id)).all()) == 3
        assert len(conn.execute(select(monitor_cases.c.case_id)).all()) == 1
    # The closed alert stayed closed: a re-scan does not undo a decision.
    assert flow.alert_row("a-low").status == "closed"
    assert [a.alert_id for a in flow.queue()] == ["a-high", "a-mid"]


def test_state_machine(flow: Workflow) -> None:
    flow.save(alerts(), by="s")
    assert flow.assign("a-high", "user/privacy2", by=REVIEWER) == "in-review"
    row = flow.alert_row("a-high")
    assert (row.status, row.assignee) == ("in-review", "user/privacy2")
    flow.assign("a-high", "user/privacy3", by=REVIEWER)  # re-assignment stays in review
    assert flow.close("a-high", "policy-violation", by=REVIEWER) == "closed"
    with pytest.raises(WorkflowError, match="is closed: cannot assign"):
        flow.assign("a-high", "user/privacy2", by=REVIEWER)
    with pytest.raises(WorkflowError, match="is closed: cannot close"):
        flow.close("a-high", "false-positive", by=REVIEWER)
    assert flow.reopen("a-high", by=REVIEWER) == "in-review"
    assert flow.alert_row("a-high").disposition is None
    with pytest.raises(WorkflowError, match="disposition must be one of"):
        flow.close("a-high", "meh", by=REVIEWER)
    with pytest.raises(UnknownAlert):
        flow.assign("nope", "user/x", by=REVIEWER)
    with pytest.raises(WorkflowError, match="is open: cannot reopen"):
        flow.reopen("a-mid", by=REVIEWER)


def test_breach_writes_a_referral_and_closing_a_case_closes_its_alerts(flow: Workflow) -> None:
    flow.save(alerts(), [C("c1", "u1", ("a-low", "a-high"), ("p1", "p2"), 95.0)], by="s")
    flow.close("c1", "breach", by=REVIEWER)
    assert flow.alert_row("a-low").status == "closed"
    assert flow.alert_row("a-high").disposition == "breach"
    assert flow.alert_row("a-mid").status == "open"  # another user's alert
    (referral,) = flow.referrals()
    assert (referral.case_id, referral.alert_id, referral.incident_id) == ("c1", None, None)
    detail = flow.case("c1", by=REVIEWER)
    assert detail.row.status == "closed"
    assert [e.action for e in detail.timeline] == ["opened", "close", "referred"]
    assert {a.alert_id for a in detail.alerts} == {"a-low", "a-high"}
    with flow.engine.connect() as conn:
        assert conn.execute(select(monitor_incident_referrals.c.case_id)).scalar() == "c1"


def test_notes_and_evidence_are_sealed_and_opening_is_audited(
    flow: Workflow, audit_sink: ListAuditSink
) -> None:
    flow.save(alerts(), by="s")
    secret = "spoke to the user: the patient Zyxwvut is her neighbour"
    flow.note("a-mid", secret, by=REVIEWER)
    with flow.engine.connect() as conn:
        sealed = conn.execute(select(monitor_notes.c.sealed)).scalar_one()
        alert_blob = conn.execute(
            select(monitor_alerts.c.sealed).where(monitor_alerts.c.alert_id == "a-mid")
        ).scalar_one()
    assert b"Zyxwvut" not in sealed
    assert b"surname" not in alert_blob
    detail = flow.alert("a-mid", by=REVIEWER)
    assert [n.text for n in detail.notes] == [secret]
    assert detail.reason.startswith("viewed 1 record")
    assert detail.evidence[0].data == {"n": 1}
    assert [e.action for e in detail.timeline] == ["raised", "note"]
    views = [e for e in audit_sink.events if e.action == "monitor-alert-view"]
    assert views and views[-1].patient_ids == ("p3", "p4") and views[-1].principal == REVIEWER
    notes = [e for e in audit_sink.events if e.action == "monitor-alert-note"]
    assert notes and "Zyxwvut" not in repr(notes[-1])
    with pytest.raises(WorkflowError):
        flow.note("a-mid", "   ", by=REVIEWER)


def test_every_action_is_audited(flow: Workflow, audit_sink: ListAuditSink) -> None:
    flow.save(alerts(), [C("c1", "u1", ("a-low",), ("p1",), 60.0)], by="system/monitor")
    flow.assign("a-mid", "user/p2", by=REVIEWER)
    flow.note("c1", "looked", by=REVIEWER)
    flow.close("a-mid", "false-positive", by=REVIEWER)
    flow.reopen("a-mid", by=REVIEWER)
    rule, _ = flow.suppress(
        "vip", user_id="u9", reason="r", expires_at=T0 + dt.timedelta(days=1), by=REVIEWER
    )
    flow.revoke_suppression(rule.rule_id, by=REVIEWER)
    assert [e.action for e in audit_sink.events] == [
        "monitor-alerts-raised",
        "monitor-alert-assign",
        "monitor-case-note",
        "monitor-alert-close",
        "monitor-alert-reopen",
        "monitor-suppress",
        "monitor-suppression-revoke",
    ]
    assert all(e.outcome == "success" for e in audit_sink.events)


def test_suppression_with_expiry(flow: Workflow, clock: FixedClock) -> None:
    flow.save([A("a1", "family", "u1", ("p1",), 80.0)], by="s")
    reason = "the user is the patient's spouse (HR confirmed)"
    rule, taken = flow.suppress(
        "family", user_id="u1", reason=reason, expires_at=T0 + dt.timedelta(days=30), by=REVIEWER
    )
    assert taken == ["a1"]  # the queued alert it matches leaves the queue now
    assert flow.alert_row("a1").status == "suppressed"
    with flow.engine.connect() as conn:
        assert reason.encode() not in conn.execute(select(monitor_suppressions.c.sealed)).scalar()
    clock.advance(days=1)
    saved = flow.save(
        [
            A("a2", "family", "u1", ("p5",), 80.0),  # matched: stored, not queued
            A("a3", "family", "u2", ("p1",), 80.0),  # another user: queued
            A("a4", "vip", "u1", ("p1",), 80.0),  # another detector: queued
        ],
        by="s",
    )
    assert saved.suppressed == ["a2"] and saved.new_alerts == ["a3", "a4"]
    assert flow.alert_row("a2").suppressed_by == rule.rule_id
    assert {a.alert_id for a in flow.queue()} == {"a3", "a4"}
    assert {a.alert_id for a in flow.queue(status="suppressed")} == {"a1", "a2"}
    assert [r.reason for r in flow.suppressions()] == [reason]
    clock.advance(days=30)  # the rule has expired
    assert flow.suppressions() == []
    later = flow.save([A("a5", "family", "u1", ("p6",), 80.0)], by="s")
    assert later.new_alerts == ["a5"] and flow.alert_row("a5").status == "open"
    assert flow.alert_row("a2").status == "suppressed"  # judged under the rule then
    flow.close("a2", "false-positive", by=REVIEWER)  # suppressed alerts may still be closed


def test_patient_rule_and_refusals(flow: Workflow, clock: FixedClock) -> None:
    flow.suppress(
        "vip",
        patient_id="p3",
        reason="celebrity ward",
        expires_at=T0 + dt.timedelta(days=1),
        by=REVIEWER,
    )
    saved = flow.save(alerts(), by="s")
    assert saved.suppressed == ["a-mid"]
    with pytest.raises(WorkflowError, match="names a user, a patient or both"):
        flow.suppress("vip", reason="x", expires_at=T0 + dt.timedelta(days=1), by=REVIEWER)
    with pytest.raises(WorkflowError, match="future"):
        flow.suppress("vip", user_id="u1", reason="x", expires_at=T0, by=REVIEWER)
    with pytest.raises(WorkflowError, match="needs a reason"):
        flow.suppress("vip", user_id="u1", reason=" ", expires_at=T0 + dt.timedelta(1), by="x")
    with pytest.raises(UnknownAlert):
        flow.revoke_suppression("s-none", by=REVIEWER)


def test_drill_down_and_rescan_updates_queued_alerts(flow: Workflow) -> None:
    flow.save(alerts(), by="s")
    assert [a.alert_id for a in flow.queue(user_id="u1")] == ["a-high", "a-low"]
    assert [a.alert_id for a in flow.queue(patient_id="p4")] == ["a-mid"]
    grown = A("a-mid", "vip", "u2", ("p3", "p4"), 75.0, last_event_at=T0 + dt.timedelta(hours=2))
    flow.save([grown], by="s")
    row = flow.alert_row("a-mid")
    assert row.score == 75.0 and row.last_event_at == T0 + dt.timedelta(hours=2)
    public = row.public()
    assert public["patient_ids"] == ["p3", "p4"] and "reason" not in public


def test_notification_bookkeeping(flow: Workflow) -> None:
    flow.save(alerts(), by="s")
    assert [a.alert_id for a in flow.unnotified(60.0)] == ["a-high", "a-mid"]
    flow.mark_notified(["a-high"])
    assert [a.alert_id for a in flow.unnotified(60.0)] == ["a-mid"]

"""scan(): determinism, since/history, the result's shape, cases and scoring."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import polars as pl
import pytest

from phiguard.errors import MonitorError
from phiguard.monitor.cases import build_cases
from phiguard.monitor.config import DetectionConfig
from phiguard.monitor.explain import EXPLANATIONS
from phiguard.monitor.frames import Dataset
from phiguard.monitor.scan import Alert, ScanResult, scan
from phiguard.monitor.scoring import alert_id, combine
from tests.monitor.detectors_world import World, at

DAY = 30


def _busy_world() -> World:
    w = World()
    for patient in ("p-fam", "p-neigh", "p-vip", "p-self"):
        w.access("u-doc", patient, at(DAY, 23, 10))
    for i in range(8):
        w.access("u-ed", f"p-run-{i:02d}", at(DAY, 10) + dt.timedelta(seconds=30 * i))
    w.access("u-gone", "p-010", at(DAY, 10))
    return w


def _fingerprint(result: ScanResult) -> str:
    return json.dumps(
        {
            "alerts": [dataclasses.asdict(a) for a in result.alerts],
            "cases": [dataclasses.asdict(c) for c in result.cases],
            "explained_by": result.explained_by.to_list(),
        },
        default=str,
    )


def test_the_same_data_gives_the_same_result() -> None:
    dataset = _busy_world().dataset()
    first, second = scan(dataset), scan(dataset)
    assert first.alerts and first.cases
    assert _fingerprint(first) == _fingerprint(second)


def test_ids_do_not_depend_on_row_order() -> None:
    dataset = _busy_world().dataset()
    shuffled = Dataset.of(
        access=dataset.access.sample(fraction=1.0, shuffle=True, seed=7),
        staff=dataset.staff.reverse(),
        patients=dataset.patients.reverse(),
        care=dataset.care.reverse(),
        auth=dataset.auth,
    )
    a, b = scan(dataset), scan(shuffled)
    assert [x.id for x in a.alerts] == [x.id for x in b.alerts]
    assert [x.id for x in a.cases] == [x.id for x in b.cases]
    # Rows point into each dataset's own order.
    for alert in b.alerts:
        rows = shuffled.access[list(alert.access_rows)]
        assert set(rows["user_id"]) == {alert.user_id}


def test_result_shape_and_stats() -> None:
    w = _busy_world()
    dataset = w.dataset()
    result = scan(dataset)
    assert result.explained.dtype == pl.Boolean and result.explained_by.dtype == pl.String
    assert result.explained.len() == result.explained_by.len() == dataset.access.height
    assert set(result.explained_by.drop_nulls().unique()) <= set(EXPLANATIONS)
    assert (result.explained == result.explained_by.is_not_null()).all()
    stats = result.stats
    assert stats["accesses"] == dataset.access.height
    assert stats["explained"] == int(result.explained.sum())
    assert 0.9 < stats["explained_fraction"] < 1.0
    assert set(stats["timings"]) >= {"prepare", "explain", "relationship", "cases"}
    json.dumps(stats)
    scores = [c.score for c in result.cases]
    assert scores == sorted(scores, reverse=True)
    for alert in result.alerts:
        json.dumps([e.data for e in alert.evidence])
        assert 0 <= alert.score <= 100
        assert alert.first_event_at <= alert.last_event_at
        rows = dataset.access[list(alert.access_rows)]
        assert set(rows["user_id"]) <= {alert.user_id}
        assert set(rows["patient_id"]) <= set(alert.patient_ids)


def test_since_turns_earlier_accesses_into_history() -> None:
    w = _busy_world()
    dataset = w.dataset()
    assert scan(dataset).alerts
    later = scan(dataset, since=at(DAY + 1, 0))
    assert later.alerts == () and later.cases == ()
    assert later.stats["alertable_accesses"] == 0
    assert later.explained_by.len() == dataset.access.height


def test_history_feeds_baselines_without_raising_alerts() -> None:
    w = World()
    w.access("u-doc", "p-010", at(DAY, 2, 30))  # off hours for a day worker
    full = w.dataset()
    cut = full.access["timestamp"] < at(DAY, 0)
    history = dataclasses.replace(full, access=full.access.filter(cut))
    current = dataclasses.replace(full, access=full.access.filter(~cut))
    result = scan(current, history=history, config=DetectionConfig(alert_threshold=40))
    assert [a.detector for a in result.alerts] == ["after-hours"]
    assert result.alerts[0].access_rows == (0,)
    assert result.stats["history_accesses"] == history.access.height
    # Without the history the one night access has no habits to stand out from.
    alone = scan(current, config=DetectionConfig(alert_threshold=40))
    assert [a.detector for a in alone.alerts] == []


def test_progress_reports_every_stage_up_to_done() -> None:
    seen: list[tuple[str, float]] = []
    scan(_busy_world().dataset(), progress=lambda stage, f: seen.append((stage, f)))
    fractions = [f for _, f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {s for s, _ in seen} >= {"explain", "cases"}


def test_an_empty_dataset_scans_to_nothing() -> None:
    result = scan(Dataset.of())
    assert result.alerts == () and result.cases == () and result.explained.len() == 0
    assert result.stats["explained_fraction"] == 1.0


def test_an_unknown_time_zone_is_a_monitor_error() -> None:
    with pytest.raises(MonitorError, match="time zone"):
        scan(Dataset.of(), config=DetectionConfig(timezone="Mars/Olympus"))


def test_alerts_below_the_threshold_survive_only_inside_a_case() -> None:
    w = World()
    w.access("u-doc", "p-name", at(DAY, 10))  # surname elsewhere: a weak signal
    assert scan(w.dataset()).alerts == ()
    for k, patient in enumerate(("p-vip", "p-cow")):  # a VIP, an employee: 45 and 25
        w.access("u-ed", patient, at(DAY + k, 10))
    result = scan(w.dataset(), config=DetectionConfig(alert_threshold=55))
    (case,) = result.cases
    assert case.user_id == "u-ed"
    assert set(case.alert_ids) == {a.id for a in result.alerts}
    assert all(a.score < 55 for a in result.alerts) and case.score >= 55


# -- scoring and cases ------------------------------------------------------------------
def _alert(score: float, when: dt.datetime, user: str = "u1", patient: str = "p1") -> Alert:
    return Alert(
        id=alert_id("test", user, [patient], when),
        detector="test",
        user_id=user,
        patient_ids=(patient,),
        score=score,
        reason="r",
        evidence=(),
        first_event_at=when,
        last_event_at=when,
        access_rows=(),
    )


def test_noisy_or_combination() -> None:
    assert combine([]) == 0.0
    assert combine([60]) == 60.0
    assert combine([40, 40]) == 64.0
    assert combine([100, 10]) == 100.0
    assert combine([30] * 10) > 95


def test_a_case_opens_when_weak_alerts_add_up_and_records_when() -> None:
    alerts = [_alert(25, at(d, 10), patient=f"p{d}") for d in (1, 8, 15, 22)]
    detected = {a.id: a.first_event_at for a in alerts}
    (case,) = build_cases(alerts, detected, threshold=50)
    # 25, 43.75, 57.8: the third alert opens the case.
    assert case.opened_at == at(15, 10)
    assert case.score == combine([25] * 4)
    assert case.patient_ids == ("p1", "p15", "p22", "p8")
    assert "4 alerts" in case.reason
    assert build_cases(alerts[:2], detected, threshold=50) == []


def test_case_ids_survive_more_data_after_them() -> None:
    alerts = [_alert(60, at(1, 10)), _alert(30, at(2, 10), patient="p2")]
    detected = {a.id: a.first_event_at for a in alerts}
    (first,) = build_cases(alerts[:1], detected, threshold=50)
    (again,) = build_cases(alerts, detected, threshold=50)
    assert first.id == again.id and again.score > first.score


def test_cases_are_per_user_and_sorted() -> None:
    alerts = [_alert(55, at(1, 10), user="a"), _alert(90, at(1, 10), user="b")]
    cases = build_cases(alerts, {a.id: a.first_event_at for a in alerts}, threshold=50)
    assert [c.user_id for c in cases] == ["b", "a"]

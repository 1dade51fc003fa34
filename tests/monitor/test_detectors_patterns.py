"""Pattern detectors: employment, habits, volume, browsing, bulk export, serial snooping."""

from __future__ import annotations

import datetime as dt

from phiguard.monitor.config import DetectionConfig
from phiguard.monitor.frames import Dataset
from phiguard.monitor.scan import scan
from tests.monitor.detectors_world import EVERYTHING, World, alerts_of, at

DAY = 30


def test_access_after_termination_and_none_before() -> None:
    w = World()
    w.access("u-gone", "p-010", at(DAY, 10))  # terminated on day 19 (2025-03-20)
    result = w.scan()
    (alert,) = alerts_of(result, "terminated-user", "u-gone")
    assert "after the user's termination" in alert.reason
    assert alert.evidence[0].data["termination_date"] == "2025-03-20"
    assert alert.score >= 90
    # Four weeks of routine work before termination raised nothing.
    early = [a for a in result.alerts if a.user_id == "u-gone" and a.detector != "terminated-user"]
    assert early == [] and len(alerts_of(result, "terminated-user")) == 1


def test_an_account_the_roster_does_not_know() -> None:
    w = World()
    w.access("u-ghost", "p-010", at(DAY, 10))
    (alert,) = alerts_of(w.scan(), "unknown-user")
    assert alert.user_id == "u-ghost"


def test_without_a_roster_nobody_is_unknown() -> None:
    w = World()
    w.access("u-ghost", "p-010", at(DAY, 10))
    dataset = w.dataset()
    bare = Dataset.of(access=dataset.access, patients=dataset.patients, care=dataset.care)
    assert [a for a in scan(bare, config=EVERYTHING).alerts if a.detector == "unknown-user"] == []


def test_after_hours_against_the_users_own_habits() -> None:
    w = World()
    w.access("u-doc", "p-010", at(DAY, 2, 30))  # day worker at 02:30, no reason
    w.access("u-night", "p-011", at(DAY, 2, 30))  # night worker at 02:30, no reason
    result = w.scan()
    assert [a.user_id for a in alerts_of(result, "after-hours")] == ["u-doc"]
    assert "02:30" in alerts_of(result, "after-hours")[0].reason


def test_explained_work_at_night_is_not_after_hours() -> None:
    w = World()
    w.care("p-012", "u-doc", "Cardiology", at(DAY, 1), at(DAY, 4))
    w.access("u-doc", "p-012", at(DAY, 2, 30))
    assert alerts_of(w.scan(), "after-hours") == []


def test_volume_against_own_history_and_peers() -> None:
    w = World()
    for i in range(60):
        w.access("u-ed", f"p-{i:03d}", at(DAY, 9) + dt.timedelta(minutes=5 * i))
    (alert,) = alerts_of(w.scan(), "volume", "u-ed")
    assert "60 patients in one day" in alert.reason and "usually 5" in alert.reason


def test_a_busy_day_for_the_whole_ward_is_not_one_users_spree() -> None:
    w = World()
    for user in ("u-ed", "u-ed2", "u-night"):
        for i in range(60):
            patient = f"p-{i:03d}"
            w.care(patient, None, "Emergency", at(DAY, 0), at(DAY + 1, 0))
            w.access(user, patient, at(DAY, 9) + dt.timedelta(minutes=5 * i))
    assert alerts_of(w.scan(), "volume") == []


def test_consecutive_mrns_within_minutes() -> None:
    w = World()
    for i in range(8):
        w.access("u-doc", f"p-run-{i:02d}", at(DAY, 10) + dt.timedelta(seconds=40 * i))
    (alert,) = alerts_of(w.scan(), "mrn-browsing", "u-doc")
    assert len(alert.patient_ids) == 8
    assert "medical-record-number order" in alert.reason


def test_scattered_mrns_are_not_browsing() -> None:
    w = World()
    for i in range(8):
        w.access("u-doc", f"p-run-{i * 4:02d}", at(DAY, 10) + dt.timedelta(seconds=40 * i))
    assert alerts_of(w.scan(), "mrn-browsing") == []


def test_bulk_export_and_a_few_prints() -> None:
    w = World()
    for i in range(40):
        w.access(
            "u-doc",
            f"p-{i:03d}",
            at(DAY, 14) + dt.timedelta(seconds=20 * i),
            "DocumentReference",
            action="export",
        )
    for i in range(3):
        w.access("u-nurse", f"p-{i:03d}", at(DAY, 14), "DocumentReference", action="print")
    result = w.scan()
    assert [a.user_id for a in alerts_of(result, "bulk-export")] == ["u-doc"]
    assert "40 patients" in alerts_of(result, "bulk-export")[0].reason


def test_demographics_only_browsing_and_registration_at_work() -> None:
    w = World()
    for i in range(10):
        w.access("u-ed", f"p-{i:03d}", at(DAY, 11) + dt.timedelta(minutes=2 * i))
    for i in range(10, 20):  # registration checking in patients with appointments
        w.care(f"p-{i:03d}", "u-doc", "Cardiology", at(DAY + 2, 9), at(DAY + 2, 10), "appointment")
        w.access("u-reg", f"p-{i:03d}", at(DAY, 11) + dt.timedelta(minutes=2 * i))
    result = w.scan()
    assert [a.user_id for a in alerts_of(result, "demographics-browsing")] == ["u-ed"]


def test_compromised_account_new_workstation_at_night_with_volume() -> None:
    w = World()
    for i in range(30):
        w.access(
            "u-nurse",
            f"p-{i:03d}",
            at(DAY, 2) + dt.timedelta(minutes=2 * i),
            workstation="ws-outside-1",
        )
    (alert,) = alerts_of(w.scan(), "compromised-account", "u-nurse")
    kinds = {e.kind for e in alert.evidence}
    assert kinds >= {"new-workstation", "off-hours", "volume"}


def test_a_new_workstation_on_an_ordinary_day_is_not_compromise() -> None:
    w = World()
    w.care("p-001", "u-nurse", "Cardiology", at(DAY, 9), at(DAY, 12))
    w.access("u-nurse", "p-001", at(DAY, 10), workstation="ws-new-desk")
    assert alerts_of(w.scan(), "compromised-account") == []


def test_low_and_slow_surfaces_as_a_case_though_no_single_alert_alerts() -> None:
    w = World(routine_days=70)
    for k in range(12):  # one stranger's record every five days
        w.access("u-ed", f"p-{k:03d}", at(5 + 5 * k, 11))
    config = DetectionConfig()
    result = w.scan(config)
    (case,) = [c for c in result.cases if c.user_id == "u-ed"]
    assert case.score >= config.alert_threshold
    (serial,) = alerts_of(result, "serial-unexplained", "u-ed")
    assert len(serial.patient_ids) == 12
    # The case opened when the count crossed the bar, weeks after the first look.
    assert case.opened_at > at(5, 11) + dt.timedelta(days=14)
    # Peers without strangers' records have no case.
    assert all(c.user_id == "u-ed" for c in result.cases)


def test_a_few_stray_looks_are_not_serial_snooping() -> None:
    w = World(routine_days=70)
    for k in range(2):
        w.access("u-ed", f"p-{k:03d}", at(5 + 20 * k, 11))
    assert alerts_of(w.scan(EVERYTHING), "serial-unexplained") == []

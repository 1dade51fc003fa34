"""Log-in attacks on the AUTH frame."""

from __future__ import annotations

import datetime as dt

from phiguard.monitor.detectors.auth import MANY_ACCOUNTS
from tests.monitor.detectors_world import World, alerts_of, at

DAY = 30


def test_a_failed_login_storm_followed_by_success() -> None:
    w = World()
    for i in range(12):
        w.auth("u-doc", at(DAY, 3) + dt.timedelta(seconds=20 * i), "failure", "198.51.100.7")
    w.auth("u-doc", at(DAY, 3, 10), "success", "198.51.100.7")
    (alert,) = alerts_of(w.scan(), "failed-login-storm", "u-doc")
    assert "12 failed log-ins" in alert.reason
    assert "followed by a successful log-in" in alert.reason
    assert alert.patient_ids == () and alert.access_rows == ()


def test_a_few_typos_are_not_a_storm() -> None:
    w = World()
    for i in range(3):
        w.auth("u-doc", at(DAY, 8) + dt.timedelta(seconds=20 * i), "failure")
    w.auth("u-doc", at(DAY, 8, 2), "success")
    assert alerts_of(w.scan(), "failed-login-storm") == []


def test_credential_stuffing_from_one_source() -> None:
    w = World()
    for i in range(12):
        w.auth(f"u-{i:02d}", at(DAY, 4) + dt.timedelta(seconds=5 * i), "failure", "203.0.113.9")
    (alert,) = alerts_of(w.scan(), "credential-stuffing")
    assert alert.user_id == MANY_ACCOUNTS
    assert alert.evidence[0].data["source"] == "203.0.113.9"
    assert len(alert.evidence[0].data["accounts"]) == 12


def test_failures_on_many_accounts_from_many_sources_are_not_stuffing() -> None:
    w = World()
    for i in range(12):
        w.auth(f"u-{i:02d}", at(DAY, 4) + dt.timedelta(seconds=5 * i), "failure", f"10.0.1.{i}")
    assert alerts_of(w.scan(), "credential-stuffing") == []


def test_password_spraying_one_secret_many_accounts() -> None:
    w = World()
    for i in range(6):
        w.auth(
            f"u-{i:02d}",
            at(DAY, 4) + dt.timedelta(minutes=i),
            "failure",
            f"10.0.2.{i}",
            secret="h-spring2025",
        )
    for i in range(6):
        w.auth(
            f"u-{i:02d}",
            at(DAY, 5) + dt.timedelta(minutes=i),
            "failure",
            f"10.0.3.{i}",
            secret=f"h-typo-{i}",
        )
    (alert,) = alerts_of(w.scan(), "password-spraying")
    assert alert.evidence[0].data["secret_hash"] == "h-spring2025"


def test_log_ins_before_since_raise_nothing() -> None:
    w = World()
    for i in range(12):
        w.auth("u-doc", at(DAY, 3) + dt.timedelta(seconds=20 * i), "failure")
    assert alerts_of(w.scan(since=at(DAY + 1, 0)), "failed-login-storm") == []

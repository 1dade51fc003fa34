"""Login throttling: back-off, hard lock, address budget, stuffing and spraying alerts."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import func, select

from phiguard.audit.events import AuditEvent, ListAuditSink
from phiguard.clock import FixedClock
from phiguard.identity.throttle import LoginThrottle, ThrottlePolicy
from phiguard.records.vault import Vault
from phiguard.store import migrate
from phiguard.store.engine import make_engine
from phiguard.store.tables import account_throttle, address_throttle

ADDR = "198.51.100.7"
# Address budget out of the way unless a test is about it.
ROOMY = ThrottlePolicy(address_burst=10_000)


def make(vault: Vault, clock: FixedClock, sink: ListAuditSink, **policy: object) -> LoginThrottle:
    base = {"address_burst": 10_000, **policy}
    return LoginThrottle(vault.engine, clock, sink, ThrottlePolicy(**base))  # type: ignore[arg-type]


@pytest.fixture
def throttle(vault: Vault, clock: FixedClock, audit_sink: ListAuditSink) -> LoginThrottle:
    return make(vault, clock, audit_sink)


def actions(sink: ListAuditSink) -> list[str]:
    return [e.action for e in sink.events]


def test_delay_schedule() -> None:
    p = ThrottlePolicy()
    assert [p.delay(n).total_seconds() for n in range(0, 6)] == [0] * 6
    assert [p.delay(n).total_seconds() for n in range(6, 11)] == [2, 4, 8, 16, 32]
    assert p.delay(14).total_seconds() == 512
    assert p.delay(15) == dt.timedelta(minutes=15)  # 1024 s, capped
    assert p.delay(99) == p.delay(10_000) == dt.timedelta(minutes=15)


def test_backoff_grows(throttle: LoginThrottle, clock: FixedClock) -> None:
    for _ in range(5):
        assert throttle.check("alice", ADDR).allowed
        assert throttle.record_failure("alice", ADDR).allowed
    waits = []
    for _ in range(6):
        decision = throttle.record_failure("alice", ADDR)
        assert not decision.allowed and decision.reason == "account-backoff"
        assert decision.retry_after is not None
        waits.append(decision.retry_after.total_seconds())
        clock.advance(seconds=waits[-1] - 1)
        assert not throttle.check("alice", ADDR).allowed
        clock.advance(seconds=1)
        assert throttle.check("alice", ADDR).allowed
    assert waits == [2, 4, 8, 16, 32, 64]
    # Other accounts are unaffected.
    assert throttle.check("bob", ADDR).allowed


def test_success_resets(throttle: LoginThrottle, clock: FixedClock) -> None:
    for _ in range(8):
        throttle.record_failure("alice", ADDR)
    assert not throttle.check("alice", ADDR).allowed
    throttle.record_success("alice", ADDR)
    assert throttle.check("alice", ADDR).allowed
    assert throttle.account_state("alice").failures == 0
    for _ in range(5):  # the free allowance is back
        assert throttle.record_failure("alice", ADDR).allowed


def test_hundred_failures_lock_for_a_day(
    throttle: LoginThrottle, clock: FixedClock, audit_sink: ListAuditSink
) -> None:
    for _ in range(99):
        throttle.record_failure("alice", ADDR)
        clock.advance(minutes=15)  # wait out every back-off: only the lock remains
    assert throttle.check("alice", ADDR).allowed
    assert "account-locked" not in actions(audit_sink)
    decision = throttle.record_failure("alice", ADDR)
    assert not decision.allowed and decision.reason == "account-locked"
    assert decision.retry_after == dt.timedelta(hours=24)
    state = throttle.account_state("alice")
    assert state.failures == 100 and state.locked_until == clock.now() + dt.timedelta(hours=24)
    locked = [e for e in audit_sink.events if e.action == "account-locked"]
    assert len(locked) == 1 and locked[0].detail["account"] == "alice"
    # More failures neither extend the lock nor log it again.
    clock.advance(hours=1)
    throttle.record_failure("alice", ADDR)
    assert throttle.check("alice", ADDR).retry_after == dt.timedelta(hours=23)
    assert actions(audit_sink).count("account-locked") == 1
    # A success does not lift an active lock.
    throttle.record_success("alice", ADDR)
    assert not throttle.check("alice", ADDR).allowed
    # Time lifts it, and the count starts again.
    clock.advance(hours=23)
    assert throttle.check("alice", ADDR).allowed
    throttle.record_failure("alice", ADDR)
    assert throttle.account_state("alice").failures == 1
    assert throttle.account_state("alice").locked_until is None


def test_admin_only_lock_and_unlock(
    vault: Vault, clock: FixedClock, audit_sink: ListAuditSink
) -> None:
    throttle = make(vault, clock, audit_sink, lock_after=10, lock_duration=None)
    for _ in range(10):
        throttle.record_failure("alice", ADDR)
    decision = throttle.check("alice", ADDR)
    assert decision.reason == "account-locked" and decision.retry_after is None
    assert throttle.account_state("alice").locked_by_admin_only
    clock.advance(days=30)
    assert not throttle.check("alice", ADDR).allowed
    assert throttle.unlock("alice", by="user/secadmin", request_id="req-1")
    assert throttle.check("alice", ADDR).allowed
    assert throttle.account_state("alice").failures == 0
    unlocked = audit_sink.events[-1]
    assert unlocked.action == "account-unlocked" and unlocked.principal == "user/secadmin"
    assert unlocked.request_id == "req-1" and unlocked.outcome == "success"
    assert not throttle.unlock("alice", by="user/secadmin")  # nothing to unlock


def test_counters_survive_a_restart(
    vault: Vault, clock: FixedClock, audit_sink: ListAuditSink
) -> None:
    first = make(vault, clock, audit_sink)
    for _ in range(7):
        first.record_failure("alice", ADDR)
    second = make(vault, clock, audit_sink)
    assert second.account_state("alice").failures == 7
    decision = second.check("alice", ADDR)
    assert not decision.allowed and decision.retry_after == dt.timedelta(seconds=4)


def test_unknown_accounts_get_no_row(throttle: LoginThrottle, vault: Vault) -> None:
    for i in range(20):
        throttle.record_failure(f"ghost{i}", ADDR, known_account=False)
    with vault.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(account_throttle)).scalar() == 0


def test_address_budget(vault: Vault, clock: FixedClock, audit_sink: ListAuditSink) -> None:
    throttle = make(
        vault, clock, audit_sink, address_burst=5, address_refill=dt.timedelta(minutes=1)
    )
    for i in range(5):
        assert throttle.check(f"user{i}", ADDR).allowed
        throttle.record_failure(f"user{i}", ADDR)
    decision = throttle.check("someone-else", ADDR)
    assert not decision.allowed and decision.reason == "address-backoff"
    assert decision.retry_after == dt.timedelta(minutes=1)
    assert throttle.check("someone-else", "203.0.113.9").allowed
    clock.advance(minutes=1)
    assert throttle.check("someone-else", ADDR).allowed
    throttle.record_failure("someone-else", ADDR)
    assert not throttle.check("someone-else", ADDR).allowed
    # Successes do not refill it.
    throttle.record_success("user0", ADDR)
    assert not throttle.check("user0", ADDR).allowed


def _other_process(
    vault: Vault, clock: FixedClock, sink: ListAuditSink, **policy: object
) -> LoginThrottle:
    """The same database through another engine, as another server process has it."""
    base = {"address_burst": 10_000, **policy}
    engine = make_engine(str(vault.engine.url))
    return LoginThrottle(engine, clock, sink, ThrottlePolicy(**base))  # type: ignore[arg-type]


def test_every_process_draws_on_one_address_budget(
    vault: Vault, clock: FixedClock, audit_sink: ListAuditSink
) -> None:
    policy = {"address_burst": 6, "address_refill": dt.timedelta(minutes=1)}
    one = make(vault, clock, audit_sink, **policy)
    two = _other_process(vault, clock, audit_sink, **policy)
    try:
        for i in range(6):
            (one if i % 2 else two).record_failure(f"user{i}", ADDR)
        for throttle in (one, two):
            decision = throttle.check("someone-else", ADDR)
            assert not decision.allowed and decision.reason == "address-backoff"
    finally:
        two.engine.dispose()


def test_concurrent_failures_never_spend_the_same_token(
    vault: Vault, clock: FixedClock, audit_sink: ListAuditSink
) -> None:
    policy = {"address_burst": 100, "address_refill": dt.timedelta(hours=1)}
    one = make(vault, clock, audit_sink, **policy)
    two = _other_process(vault, clock, audit_sink, **policy)
    try:
        one.record_failure("first", ADDR)  # the row exists; the race is on spending

        def fail(throttle: LoginThrottle, n: int) -> None:
            for k in range(10):
                throttle.record_failure(f"u{n}-{k}", ADDR, known_account=False)

        threads = [threading.Thread(target=fail, args=(one if n % 2 else two, n)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with vault.engine.connect() as conn:
            tokens = conn.execute(select(address_throttle.c.tokens)).scalar_one()
        assert tokens == pytest.approx(100 - 1 - 60)  # 61 failures, 61 tokens, none lost
    finally:
        two.engine.dispose()


def test_a_refilled_bucket_is_swept(
    vault: Vault, clock: FixedClock, audit_sink: ListAuditSink
) -> None:
    throttle = make(
        vault, clock, audit_sink, address_burst=3, address_refill=dt.timedelta(seconds=10)
    )
    throttle.record_failure("a", ADDR)
    clock.advance(seconds=31)  # full again after 3 x 10 s
    throttle.record_failure("b", "203.0.113.9")
    with vault.engine.connect() as conn:
        kept = [r.address_key for r in conn.execute(select(address_throttle.c.address_key))]
    assert kept == ["203.0.113.9"]
    assert throttle.check("c", ADDR).allowed


def test_ipv6_counted_per_64(vault: Vault, clock: FixedClock, audit_sink: ListAuditSink) -> None:
    throttle = make(vault, clock, audit_sink, address_burst=2)
    throttle.record_failure("a", "2001:db8:1:2::1")
    throttle.record_failure("b", "2001:db8:1:2:ffff::9")
    assert not throttle.check("c", "2001:db8:1:2::77").allowed
    assert throttle.check("c", "2001:db8:1:3::1").allowed
    # IPv4-mapped IPv6 is the IPv4 address.
    throttle.record_failure("a", "::ffff:192.0.2.1")
    throttle.record_failure("b", "192.0.2.1")
    assert not throttle.check("c", "192.0.2.1").allowed


def test_credential_stuffing_detected(
    throttle: LoginThrottle, clock: FixedClock, audit_sink: ListAuditSink
) -> None:
    for i in range(25):
        throttle.record_failure(
            f"victim{i}", ADDR, f"leaked-password-{i}", known_account=i % 2 == 0
        )
        clock.advance(seconds=10)
    alerts = [e for e in audit_sink.events if e.action == "credential-stuffing-suspected"]
    assert len(alerts) == 1  # once per window, not once per failure
    alert = alerts[0]
    assert alert.source == ADDR and alert.detail["accounts"] == 20
    assert alert.outcome == "denied" and alert.principal == "system/phiguard"
    _assert_no_names_or_passwords(alert)
    assert "password-spraying-suspected" not in actions(audit_sink)
    # After the window a continuing attack is reported again.
    clock.advance(minutes=10)
    for i in range(20):
        throttle.record_failure(f"victim{i}", ADDR, known_account=False)
    assert actions(audit_sink).count("credential-stuffing-suspected") == 2


def test_password_spraying_detected(
    throttle: LoginThrottle, clock: FixedClock, audit_sink: ListAuditSink
) -> None:
    for i in range(12):
        throttle.record_failure(f"user{i}", f"203.0.113.{i}", "Winter2025!")
        clock.advance(minutes=3)
    alerts = [e for e in audit_sink.events if e.action == "password-spraying-suspected"]
    assert len(alerts) == 1
    assert alerts[0].detail["accounts"] == 10 and alerts[0].detail["addresses"] == 10
    _assert_no_names_or_passwords(alerts[0])
    assert "credential-stuffing-suspected" not in actions(audit_sink)
    # The password is kept only as a keyed fingerprint.
    fingerprints = list(throttle._spraying.events)
    assert len(fingerprints) == 1 and "Winter2025!" not in fingerprints[0]


def test_spraying_counts_the_same_password_after_nfkc(
    throttle: LoginThrottle, audit_sink: ListAuditSink
) -> None:
    for i in range(10):
        spelled = "\uff37inter2025!" if i % 2 else "Winter2025!"  # full-width W half the time
        throttle.record_failure(f"user{i}", f"203.0.113.{i}", spelled)
    assert "password-spraying-suspected" in actions(audit_sink)


def test_ordinary_failures_raise_no_alert(
    throttle: LoginThrottle, clock: FixedClock, audit_sink: ListAuditSink
) -> None:
    # A ward behind one NAT address: a dozen people mistype, each differently.
    for i in range(12):
        for attempt in range(2):
            throttle.record_failure(f"nurse{i}", ADDR, f"my own password {i}/{attempt}")
        clock.advance(seconds=20)
    # One person trying the same wrong password many times.
    for _ in range(30):
        throttle.record_failure("doctor", "192.0.2.55", "Winter2025!")
    # Many accounts with one password, but spread over more than the window.
    for i in range(12):
        throttle.record_failure(f"clerk{i}", f"203.0.113.{i}", "Spring2025!")
        clock.advance(minutes=10)
    assert not [a for a in actions(audit_sink) if a.endswith("-suspected")]


def test_the_fingerprint_key_is_per_process(vault: Vault, clock: FixedClock) -> None:
    a = LoginThrottle(vault.engine, clock, ListAuditSink(), ROOMY)
    b = LoginThrottle(vault.engine, clock, ListAuditSink(), ROOMY)
    a.record_failure("x", ADDR, "Winter2025!")
    b.record_failure("x", ADDR, "Winter2025!")
    assert list(a._spraying.events) != list(b._spraying.events)


def _assert_no_names_or_passwords(event: AuditEvent) -> None:
    text = repr(event)
    for secret in ("victim", "user", "leaked-password", "Winter2025"):
        assert secret not in text


def test_the_shared_budget_holds_on_postgresql(clock: FixedClock) -> None:
    from tests.support.postgres import fresh_database, shared_postgres

    policy = ThrottlePolicy(address_burst=50, address_refill=dt.timedelta(hours=1))
    with shared_postgres() as server, fresh_database(server, "throttle") as url:
        engines = [make_engine(url), make_engine(url)]
        try:
            migrate.upgrade(engines[0])
            sink = ListAuditSink()
            one, two = (LoginThrottle(e, clock, sink, policy) for e in engines)

            def fail(throttle: LoginThrottle, n: int) -> None:
                for k in range(8):
                    throttle.record_failure(f"u{n}-{k}", ADDR, known_account=False)

            threads = [
                threading.Thread(target=fail, args=(one if n % 2 else two, n)) for n in range(6)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            with engines[0].connect() as conn:
                tokens = conn.execute(select(address_throttle.c.tokens)).scalar_one()
            assert tokens == pytest.approx(50 - 48)
            one.record_failure("x", ADDR)
            one.record_failure("y", ADDR)
            decision = two.check("z", ADDR)
            assert not decision.allowed and decision.reason == "address-backoff"
        finally:
            for e in engines:
                e.dispose()

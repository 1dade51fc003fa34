"""The database-backed identity stores on PostgreSQL, including racing uses of one secret."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import pyotp
import pytest

from phiguard.audit.events import ListAuditSink
from phiguard.clock import FixedClock
from phiguard.crypto.keyring import Keyring
from phiguard.identity.recovery import RecoveryCodes
from phiguard.identity.throttle import LoginThrottle, ThrottlePolicy
from phiguard.identity.totp import TotpStore

pytestmark = pytest.mark.postgres


def race(n: int, attempt: Callable[[], bool]) -> list[bool]:
    """Run ``attempt`` in ``n`` threads released together; their results."""
    barrier = threading.Barrier(n)
    results: list[bool] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        ok = attempt()
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_totp_code_accepted_once_under_concurrency(pg_keyring: Keyring, clock: FixedClock) -> None:
    store = TotpStore(pg_keyring.engine, pg_keyring, clock)
    enrolment = store.enrol("alice")
    assert store.confirm("alice", pyotp.TOTP(enrolment.secret).at(clock.now())).accepted
    clock.advance(minutes=1)
    current = pyotp.TOTP(enrolment.secret).at(clock.now())
    results = race(6, lambda: store.verify("alice", current).accepted)
    assert sorted(results) == [False] * 5 + [True]


def test_recovery_code_consumed_once_under_concurrency(
    pg_keyring: Keyring, clock: FixedClock
) -> None:
    codes = RecoveryCodes(pg_keyring.engine, clock)
    issued = codes.generate("alice")
    results = race(6, lambda: codes.use("alice", issued.codes[0]).accepted)
    assert sorted(results) == [False] * 5 + [True]
    assert codes.remaining("alice") == 9


def test_throttle_counts_every_concurrent_failure(pg_keyring: Keyring, clock: FixedClock) -> None:
    sink = ListAuditSink()
    throttle = LoginThrottle(
        pg_keyring.engine, clock, sink, ThrottlePolicy(address_burst=1000, lock_after=8)
    )
    race(8, lambda: throttle.record_failure("alice", "192.0.2.1").allowed)
    state = throttle.account_state("alice")
    assert state.failures == 8 and state.locked_until == clock.now() + dt.timedelta(hours=24)
    assert [e.action for e in sink.events] == ["account-locked"]
    throttle.record_success("alice", "192.0.2.1")
    assert throttle.unlock("alice", by="user/admin")
    assert throttle.check("alice", "192.0.2.1").allowed

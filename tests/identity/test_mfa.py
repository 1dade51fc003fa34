"""The second factor of a log-in: throttled like a password, whatever the password did."""

from __future__ import annotations

import datetime as dt

import pyotp
import pytest

from phiguard.audit.events import ListAuditSink
from phiguard.clock import FixedClock
from phiguard.errors import AuthenticationError
from phiguard.identity.accounts import Accounts
from phiguard.identity.mfa import SecondFactor
from phiguard.identity.passwords import PasswordHashing
from phiguard.identity.throttle import ThrottlePolicy
from phiguard.records.vault import Vault
from tests.identity.test_accounts import ADMIN, PASSWORD, make_accounts

POLICY = ThrottlePolicy()  # the production thresholds: 5 free, lock at 100


@pytest.fixture
def accounts(
    vault: Vault, clock: FixedClock, audit_sink: ListAuditSink, hashing: PasswordHashing
) -> Accounts:
    accounts = make_accounts(vault.engine, vault.keyring, clock, audit_sink, hashing, POLICY)
    accounts.add("u00042", "Ada Quill", "ada@example.org", ["nurse"], PASSWORD, by=ADMIN)
    return accounts


def enrolled(accounts: Accounts, clock: FixedClock) -> pyotp.TOTP:
    totp = pyotp.TOTP(accounts.totp.enrol("u00042").secret)
    assert accounts.totp.confirm("u00042", totp.at(clock.now())).accepted
    clock.advance(seconds=30)
    return totp


def wrong_code(totp: pyotp.TOTP, clock: FixedClock) -> str:
    """A six-digit code that no step in the drift window accepts."""
    window = {totp.at(clock.now() + dt.timedelta(seconds=30 * d)) for d in (-1, 0, 1)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in window)


def test_a_right_password_does_not_reset_the_count_of_wrong_codes(
    accounts: Accounts, clock: FixedClock
) -> None:
    """Someone holding the password guesses codes from many addresses, signing in with
    the password again before each batch.  The account must still lock at 100 wrong
    codes: otherwise the six digits get unlimited guesses."""
    totp = enrolled(accounts, clock)
    mfa = SecondFactor(accounts)
    wrong = 0
    for batch in range(40):
        address = f"198.51.100.{batch}"
        state = accounts.throttle.account_state("u00042")
        if state.locked_until is not None:
            break
        if state.last_failure is not None:  # wait out any back-off, as an attacker would
            clock.set(state.last_failure + POLICY.delay(state.failures) + dt.timedelta(seconds=1))
        try:
            assert accounts.authenticate("u00042", PASSWORD, address).mfa == "verify"
        except AuthenticationError:  # throttled: wait and go on
            continue
        for _ in range(4):
            state = accounts.throttle.account_state("u00042")
            if state.last_failure is not None:
                ready = state.last_failure + POLICY.delay(state.failures)
                clock.set(max(clock.now(), ready + dt.timedelta(seconds=1)))
            if mfa.verify("u00042", wrong_code(totp, clock), address).accepted:
                pytest.fail("a wrong code was accepted")
            wrong += 1
    state = accounts.throttle.account_state("u00042")
    assert state.locked_until is not None, f"{wrong} wrong codes and no lock"
    assert wrong <= POLICY.lock_after
    # Locked: not even the right code opens it now.
    assert not mfa.verify("u00042", totp.at(clock.now()), "203.0.113.9").accepted


def test_a_completed_sign_in_clears_the_count(accounts: Accounts, clock: FixedClock) -> None:
    totp = enrolled(accounts, clock)
    mfa = SecondFactor(accounts)
    for _ in range(3):
        assert not mfa.verify("u00042", wrong_code(totp, clock), "198.51.100.1").accepted
    accounts.authenticate("u00042", PASSWORD, "198.51.100.1")
    assert accounts.throttle.account_state("u00042").failures == 3  # half signed in
    assert mfa.verify("u00042", totp.at(clock.now()), "198.51.100.1").accepted
    assert accounts.throttle.account_state("u00042").failures == 0


def test_confirming_an_enrolment_completes_the_sign_in(
    accounts: Accounts, clock: FixedClock
) -> None:
    for _ in range(3):
        accounts.throttle.record_failure("u00042", "198.51.100.1")
    accounts.authenticate("u00042", PASSWORD, "198.51.100.1")
    totp = pyotp.TOTP(SecondFactor(accounts).begin_totp("u00042").secret)
    codes = SecondFactor(accounts).confirm_totp("u00042", totp.at(clock.now()), "198.51.100.1")
    assert codes is not None
    assert accounts.throttle.account_state("u00042").failures == 0

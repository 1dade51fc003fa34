"""Workforce accounts: administration, the one generic log-in failure, revocation, MFA reset."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pyotp
import pytest
from argon2 import Parameters
from sqlalchemy import Engine, select, update

from phiguard.audit.events import AuditEvent, ListAuditSink
from phiguard.clock import FixedClock
from phiguard.crypto.keyring import Keyring
from phiguard.errors import AuditError, AuthenticationError, PasswordPolicyError
from phiguard.identity.accounts import (
    ANONYMOUS,
    AccountError,
    AccountExists,
    Accounts,
    UnknownAccount,
)
from phiguard.identity.passwords import PasswordHashing, PasswordPolicy, Verification
from phiguard.identity.recovery import RecoveryCodes
from phiguard.identity.throttle import LoginThrottle, ThrottlePolicy
from phiguard.identity.totp import TotpStore
from phiguard.identity.webauthn import WebAuthnService
from phiguard.records.vault import Vault
from phiguard.store.engine import now_us
from phiguard.store.tables import revocations, users
from tests.identity.conftest import CHEAP
from tests.identity.test_webauthn import ORIGIN, RP_ID, Authenticator, register

PASSWORD = "violet-Ferry-orbit-57"
OTHER = "another-Good-phrase-93"
ADDR = "198.51.100.7"
ADMIN = "user/admin01"
# Locks after three consecutive failures with no back-off before, so a test can reach
# the lock quickly; the address budget is out of the way.
TEST_THROTTLE = ThrottlePolicy(free_failures=50, lock_after=3, address_burst=10_000)


class CountingHashing(PasswordHashing):
    """Counts the argon2 verifications, to see which refusals paid for one."""

    def __init__(self, parameters: Parameters = CHEAP) -> None:
        super().__init__(parameters)
        self.calls: list[str] = []

    def verify_password(self, stored: str, password: str) -> Verification:
        self.calls.append("real" if stored != self._decoy else "decoy")
        return super().verify_password(stored, password)


def make_accounts(
    engine: Engine,
    keyring: Keyring,
    clock: FixedClock,
    sink: Any,
    hashing: PasswordHashing,
    throttle: ThrottlePolicy = TEST_THROTTLE,
) -> Accounts:
    return Accounts(
        engine,
        clock,
        sink,
        hashing=hashing,
        policy=PasswordPolicy(),
        throttle=LoginThrottle(engine, clock, sink, throttle),
        totp=TotpStore(engine, keyring, clock),
        recovery=RecoveryCodes(engine, clock),
        tenant=keyring.tenant,
    )


@pytest.fixture
def counting() -> CountingHashing:
    return CountingHashing()


@pytest.fixture
def accounts(
    vault: Vault, clock: FixedClock, audit_sink: ListAuditSink, counting: CountingHashing
) -> Accounts:
    return make_accounts(vault.engine, vault.keyring, clock, audit_sink, counting)


def add(accounts: Accounts, user_id: str = "u00042", password: str = PASSWORD, **kw: Any) -> Any:
    kw.setdefault("by", ADMIN)
    return accounts.add(
        user_id, f"Staff {user_id}", f"{user_id}@hospital.example", ["nurse"], password, **kw
    )


def events(sink: ListAuditSink, action: str) -> list[AuditEvent]:
    return [e for e in sink.events if e.action == action]


def stored_hash(accounts: Accounts, user_id: str) -> str:
    with accounts.engine.connect() as conn:
        return str(
            conn.execute(select(users.c.password_hash).where(users.c.user_id == user_id)).scalar()
        )


def revoked_us(accounts: Accounts, user_id: str) -> int | None:
    with accounts.engine.connect() as conn:
        value = conn.execute(
            select(revocations.c.revoked_before).where(revocations.c.user_id == user_id)
        ).scalar()
    return None if value is None else int(value)


# -- administration ------------------------------------------------------------------------


def test_add_get_list(accounts: Accounts, audit_sink: ListAuditSink, clock: FixedClock) -> None:
    created = accounts.add(
        "u00042",
        "  Jane Doe ",
        "jane.doe@hospital.example",
        ["physician", "nurse", "physician"],
        PASSWORD,
        by=ADMIN,
        department="Cardiology",
        practitioner_id="pr-17",
    )
    clock.advance(seconds=1)
    add(accounts, "a.smith")
    assert created == accounts.get("u00042")
    assert created.display_name == "Jane Doe"
    assert created.roles == ("nurse", "physician")  # de-duplicated, sorted
    assert (created.department, created.practitioner_id) == ("Cardiology", "pr-17")
    assert created.status == "active" and created.mfa_required
    assert created.created_at == created.password_changed_at == created.updated_at
    assert created.suspended_at is None and created.terminated_at is None
    assert not hasattr(created, "password_hash")
    assert [a.user_id for a in accounts.list()] == ["a.smith", "u00042"]
    assert [a.user_id for a in accounts.list("active")] == ["a.smith", "u00042"]
    assert accounts.list("suspended") == []

    digest = stored_hash(accounts, "u00042")
    assert digest.startswith("$argon2id$") and PASSWORD not in digest

    (event,) = [e for e in events(audit_sink, "user-add") if e.detail["account"] == "u00042"]
    assert event.principal == ADMIN and event.outcome == "success"
    assert event.detail["roles"] == ["nurse", "physician"]

    with pytest.raises(AccountExists):
        add(accounts, "u00042", OTHER)
    with pytest.raises(UnknownAccount):
        accounts.get("u99999")
    with pytest.raises(AccountError, match="unknown status"):
        accounts.list("retired")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("user_id", "U00042", "user id"),  # upper case
        ("user_id", "u", "user id"),  # too short
        ("user_id", "u00042\n", "user id"),  # a trailing newline must not slip through
        ("user_id", "-u1", "user id"),
        ("roles", ["nurse", "surgeon"], "unknown role 'surgeon'"),
        ("roles", [], "at least one role"),
        ("email", "not-an-address", "e-mail"),
        ("display_name", "  ", "display name"),
        ("practitioner_id", "bad id!", "Practitioner id"),
    ],
)
def test_add_refuses_invalid_fields(
    accounts: Accounts, audit_sink: ListAuditSink, field: str, value: Any, message: str
) -> None:
    args: dict[str, Any] = {
        "user_id": "u00042",
        "display_name": "Jane Doe",
        "email": "jane@hospital.example",
        "roles": ["nurse"],
        "password": PASSWORD,
        field: value,
    }
    with pytest.raises(AccountError, match=message):
        accounts.add(**args, by=ADMIN)
    assert accounts.list() == [] and audit_sink.events == []


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short-1", "shorter than 12 characters"),
        ("qwertyuiop123", "commonly used or breached"),
        ("u00042-violet-ferry", "your user id"),
        ("jane-violet-ferry-9", "your name"),
    ],
)
def test_password_refused_with_reason(
    accounts: Accounts, audit_sink: ListAuditSink, password: str, reason: str
) -> None:
    with pytest.raises(PasswordPolicyError) as refused:
        accounts.add("u00042", "Jane Doe", "jd@hospital.example", ["nurse"], password, by=ADMIN)
    assert reason in refused.value.reason
    assert password not in str(refused.value)
    assert accounts.list() == [] and audit_sink.events == []


def test_state_changes_need_a_named_administrator(accounts: Accounts) -> None:
    add(accounts)
    with pytest.raises(AccountError, match="acting principal"):
        accounts.suspend("u00042", by=" ")
    assert accounts.get("u00042").status == "active"  # rolled back with the event


def test_a_change_that_cannot_be_audited_does_not_happen(
    vault: Vault, clock: FixedClock, hashing: PasswordHashing
) -> None:
    class Broken:
        fail = False

        def record(self, event: AuditEvent, conn: Any = None) -> None:
            if self.fail:
                raise AuditError("the audit ledger could not record the event")

    sink = Broken()
    accounts = make_accounts(vault.engine, vault.keyring, clock, sink, hashing)
    add(accounts)
    sink.fail = True
    with pytest.raises(AuditError):
        accounts.suspend("u00042", by=ADMIN)
    with pytest.raises(AuditError):
        accounts.terminate("u00042", by=ADMIN)
    account = accounts.get("u00042")
    assert account.status == "active" and account.suspended_at is None
    assert revoked_us(accounts, "u00042") is None


# -- authentication ------------------------------------------------------------------------


def test_authenticate_success(
    accounts: Accounts, audit_sink: ListAuditSink, clock: FixedClock
) -> None:
    add(accounts)
    result = accounts.authenticate("u00042", PASSWORD, ADDR)
    assert result.account.user_id == "u00042" and not result.rehashed
    assert result.mfa == "enrol" and result.mfa_pending  # required, not yet enrolled
    (event,) = events(audit_sink, "login-success")
    assert (event.principal, event.outcome, event.source) == ("user/u00042", "success", ADDR)

    enrolment = accounts.totp.enrol("u00042")
    assert accounts.totp.confirm("u00042", pyotp.TOTP(enrolment.secret).at(clock.now())).accepted
    assert accounts.authenticate("u00042", PASSWORD, ADDR).mfa == "verify"

    with accounts.engine.begin() as conn:  # an account exempted from MFA (not via the API)
        conn.execute(update(users).values(mfa_required=False))
    accounts.totp.remove("u00042")
    result = accounts.authenticate("u00042", PASSWORD, ADDR)
    assert result.mfa == "none" and not result.mfa_pending


def test_successful_login_clears_the_failure_count(accounts: Accounts) -> None:
    """Only a complete log-in clears it: with a second factor still to pass, the count
    stays (``test_mfa.py``: a right password must not reset the count of wrong codes)."""
    add(accounts)
    for _ in range(2):
        with pytest.raises(AuthenticationError):
            accounts.authenticate("u00042", OTHER, ADDR)
    assert accounts.throttle.account_state("u00042").failures == 2
    assert accounts.authenticate("u00042", PASSWORD, ADDR).mfa_pending
    assert accounts.throttle.account_state("u00042").failures == 2
    with accounts.engine.begin() as conn:  # an account exempted from MFA
        conn.execute(update(users).values(mfa_required=False))
    assert not accounts.authenticate("u00042", PASSWORD, ADDR).mfa_pending
    assert accounts.throttle.account_state("u00042").failures == 0


def test_the_same_failure_for_every_cause(
    accounts: Accounts, audit_sink: ListAuditSink, counting: CountingHashing
) -> None:
    for user in ("wrong1", "susp1", "term1", "lock1"):
        add(accounts, user)
    accounts.suspend("susp1", by=ADMIN)
    accounts.terminate("term1", by=ADMIN)
    for _ in range(TEST_THROTTLE.lock_after):  # three wrong passwords lock lock1
        with pytest.raises(AuthenticationError):
            accounts.authenticate("lock1", OTHER, ADDR)
    assert accounts.throttle.account_state("lock1").locked_until is not None
    audit_sink.events.clear()

    attempts = [
        ("nobody99", PASSWORD, "unknown-account", ["decoy"]),
        ("wrong1", OTHER, "wrong-password", ["real"]),
        ("susp1", PASSWORD, "suspended", ["real"]),
        ("term1", PASSWORD, "terminated", ["real"]),
        # Not counted again, but as slow as any refusal: a decoy verification.
        ("lock1", PASSWORD, "account-locked", ["decoy"]),
    ]
    failures = set()
    for user, password, reason, verifications in attempts:
        counting.calls.clear()
        with pytest.raises(Exception) as caught:
            accounts.authenticate(user, password, ADDR)
        failures.add((type(caught.value), str(caught.value), caught.value.args))
        assert counting.calls == verifications, user
        event = audit_sink.events[-1]
        assert (event.action, event.outcome, event.source) == ("login-failure", "denied", ADDR)
        assert event.detail["reason"] == reason, user
        if reason == "unknown-account":
            assert event.principal == ANONYMOUS
            assert "nobody99" not in repr(event)  # typed user ids may be passwords
        else:
            assert event.principal == f"user/{user}"
    assert failures == {(AuthenticationError, "authentication failed", ("authentication failed",))}
    reasons = {e.detail["reason"]: e.detail for e in events(audit_sink, "login-failure")}
    # A suspended or terminated user who still knows the password is worth knowing about.
    assert reasons["suspended"]["password_correct"] is True
    assert reasons["terminated"]["password_correct"] is True
    # None of the refusals logged anyone in, and no event carries a password.
    assert events(audit_sink, "login-success") == []
    for event in audit_sink.events:
        assert PASSWORD not in repr(event) and OTHER not in repr(event)


def test_malformed_user_id_fails_like_an_unknown_one(
    accounts: Accounts, audit_sink: ListAuditSink, counting: CountingHashing
) -> None:
    typed = "Violet Ferry Orbit 57 " * 20  # a password typed into the user-name field
    with pytest.raises(AuthenticationError):
        accounts.authenticate(typed, PASSWORD, ADDR)
    assert counting.calls == ["decoy"]
    (event,) = events(audit_sink, "login-failure")
    assert event.detail == {"reason": "unknown-account"} and "Violet" not in repr(event)


def test_rehash_on_login_when_parameters_change(
    vault: Vault, clock: FixedClock, audit_sink: ListAuditSink, hashing: PasswordHashing
) -> None:
    old = make_accounts(vault.engine, vault.keyring, clock, audit_sink, hashing)
    add(old)
    before = stored_hash(old, "u00042")
    assert "t=1" in before

    stronger = PasswordHashing(dataclasses.replace(CHEAP, time_cost=2))
    new = make_accounts(vault.engine, vault.keyring, clock, audit_sink, stronger)
    with pytest.raises(AuthenticationError):  # a wrong password never triggers a rehash
        new.authenticate("u00042", OTHER, ADDR)
    assert stored_hash(new, "u00042") == before

    assert new.authenticate("u00042", PASSWORD, ADDR).rehashed
    after = stored_hash(new, "u00042")
    assert after != before and "t=2" in after
    assert PASSWORD not in after
    assert not new.authenticate("u00042", PASSWORD, ADDR).rehashed
    assert stored_hash(new, "u00042") == after
    assert [e.detail["rehashed"] for e in events(audit_sink, "login-success")] == [True, False]
    # The password itself did not change.
    assert new.get("u00042").password_changed_at == old.get("u00042").created_at


# -- status changes and revocation -----------------------------------------------------------


def test_suspend_and_reactivate(
    accounts: Accounts, audit_sink: ListAuditSink, clock: FixedClock
) -> None:
    add(accounts)
    session_issued = clock.now()
    clock.advance(hours=1)
    suspended = accounts.suspend("u00042", by=ADMIN)
    assert suspended.status == "suspended" and suspended.suspended_at == clock.now()
    assert revoked_us(accounts, "u00042") == now_us(clock.now())
    assert accounts.is_revoked("u00042", session_issued)
    assert not accounts.is_revoked("u00042", clock.now())
    with pytest.raises(AuthenticationError):
        accounts.authenticate("u00042", PASSWORD, ADDR)
    with pytest.raises(AccountError, match="already suspended"):
        accounts.suspend("u00042", by=ADMIN)

    clock.advance(hours=1)
    reactivated = accounts.reactivate("u00042", by=ADMIN)
    assert reactivated.status == "active" and reactivated.suspended_at is None
    assert accounts.authenticate("u00042", PASSWORD, ADDR).account.status == "active"
    # The suspension's revocation stands: old sessions do not come back to life.
    assert accounts.is_revoked("u00042", session_issued)
    with pytest.raises(AccountError, match="not suspended"):
        accounts.reactivate("u00042", by=ADMIN)
    assert [e.principal for e in events(audit_sink, "user-suspend")] == [ADMIN]
    assert [e.detail["account"] for e in events(audit_sink, "user-reactivate")] == ["u00042"]


def test_terminate_sets_terminated_at_and_revokes(
    accounts: Accounts, audit_sink: ListAuditSink, clock: FixedClock
) -> None:
    add(accounts)
    add(accounts, "u00043")
    clock.advance(days=3)
    assert accounts.revoked_before("u00042") is None

    gone = accounts.terminate("u00042", by=ADMIN)
    assert gone.status == "terminated" and gone.terminated_at == clock.now()
    assert revoked_us(accounts, "u00042") == now_us(clock.now())
    assert accounts.revoked_before("u00042") == clock.now()

    # Back-dated: HR reported the departure two days late.  Revocation is still now.
    left_on = clock.now() - dt.timedelta(days=2)
    late = accounts.terminate("u00043", by=ADMIN, when=left_on)
    assert late.terminated_at == left_on
    assert revoked_us(accounts, "u00043") == now_us(clock.now())
    (event,) = [e for e in events(audit_sink, "user-terminate") if e.detail["account"] == "u00043"]
    assert event.principal == ADMIN and event.detail["terminated_at"] == left_on.isoformat()

    # Only reinstate undoes a termination.
    with pytest.raises(AccountError, match="only reinstate"):
        accounts.reactivate("u00042", by=ADMIN)
    with pytest.raises(AccountError, match="only reinstate"):
        accounts.suspend("u00042", by=ADMIN)
    with pytest.raises(AccountError, match="already terminated"):
        accounts.terminate("u00042", by=ADMIN)
    with pytest.raises(AccountError, match="future"):
        accounts.terminate("u00043", by=ADMIN, when=clock.now() + dt.timedelta(days=1))
    with pytest.raises(AccountError, match="time zone"):
        accounts.terminate("u00043", by=ADMIN, when=dt.datetime(2025, 1, 1))
    with pytest.raises(UnknownAccount):
        accounts.terminate("nobody99", by=ADMIN)
    with pytest.raises(AuthenticationError):
        accounts.authenticate("u00042", PASSWORD, ADDR)

    clock.advance(hours=1)
    back = accounts.reinstate("u00042", by=ADMIN)
    assert back.status == "active" and back.terminated_at is None
    assert accounts.authenticate("u00042", PASSWORD, ADDR).account.user_id == "u00042"
    assert accounts.revoked_before("u00042") == clock.now() - dt.timedelta(hours=1)
    with pytest.raises(AccountError, match="not terminated"):
        accounts.reinstate("u00042", by=ADMIN)


def test_revocation_only_moves_forward(accounts: Accounts, clock: FixedClock) -> None:
    add(accounts)
    accounts.suspend("u00042", by=ADMIN)
    first = revoked_us(accounts, "u00042")
    clock.set(clock.now() - dt.timedelta(hours=5))  # a clock stepped back (NTP, VM restore)
    accounts.reactivate("u00042", by=ADMIN)
    accounts.suspend("u00042", by=ADMIN)
    assert revoked_us(accounts, "u00042") == first


def test_reset_mfa_removes_totp_and_recovery_codes(
    accounts: Accounts, audit_sink: ListAuditSink, clock: FixedClock
) -> None:
    add(accounts)
    add(accounts, "u00043")
    for user in ("u00042", "u00043"):
        enrolment = accounts.totp.enrol(user)
        assert accounts.totp.confirm(user, pyotp.TOTP(enrolment.secret).at(clock.now())).accepted
        accounts.recovery.generate(user)
    with accounts.engine.begin() as conn:
        conn.execute(update(users).where(users.c.user_id == "u00042").values(mfa_required=False))
    clock.advance(minutes=5)

    result = accounts.reset_mfa("u00042", by=ADMIN)
    assert result.totp_removed and result.recovery_codes_removed == 10
    assert result.account.mfa_required
    assert not accounts.mfa_enrolled("u00042")
    assert accounts.recovery.remaining("u00042") == 0
    assert revoked_us(accounts, "u00042") == now_us(clock.now())
    assert accounts.authenticate("u00042", PASSWORD, ADDR).mfa == "enrol"
    (event,) = events(audit_sink, "user-reset-mfa")
    assert event.principal == ADMIN
    assert event.detail == {
        "account": "u00042",
        "totp_enrolled": True,
        "recovery_codes_unused": 10,
        "security_keys": 0,
    }
    # Another account keeps its factors.
    assert accounts.mfa_enrolled("u00043") and accounts.recovery.remaining("u00043") == 10
    with pytest.raises(UnknownAccount):
        accounts.reset_mfa("nobody99", by=ADMIN)


def test_reset_mfa_removes_security_keys_too(vault: Vault, accounts: Accounts) -> None:
    """A reset is for a lost or compromised factor: a passkey on the lost phone must not
    keep working, nor spare the account the enrolment that the reset asks for."""
    add(accounts)
    add(accounts, "u00043")
    service = WebAuthnService(
        vault.engine, accounts.clock, rp_id=RP_ID, rp_name="phiguard", origin=ORIGIN
    )
    for user in ("u00042", "u00043"):
        register(service, user, Authenticator())
    result = accounts.reset_mfa("u00042", by=ADMIN)
    assert result.security_keys_removed == 1
    assert service.credentials("u00042") == []
    assert len(service.credentials("u00043")) == 1


# -- passwords -------------------------------------------------------------------------------


def test_change_password(accounts: Accounts, audit_sink: ListAuditSink, clock: FixedClock) -> None:
    add(accounts)
    created = accounts.get("u00042").password_changed_at
    clock.advance(days=30)

    with pytest.raises(AuthenticationError) as wrong:
        accounts.change_password("u00042", OTHER, "third-Good-phrase-71", address=ADDR)
    assert str(wrong.value) == "authentication failed"
    (denied,) = events(audit_sink, "password-change")
    assert (denied.outcome, denied.detail["reason"]) == ("denied", "wrong-password")
    assert accounts.throttle.account_state("u00042").failures == 1  # throttled like a log-in

    with pytest.raises(AccountError, match="differ"):
        accounts.change_password("u00042", PASSWORD, PASSWORD, address=ADDR)
    with pytest.raises(PasswordPolicyError, match="your user id"):
        accounts.change_password("u00042", PASSWORD, "u00042-is-my-name", address=ADDR)
    assert (
        stored_hash(accounts, "u00042") != ""
        and accounts.get("u00042").password_changed_at == created
    )

    changed = accounts.change_password("u00042", PASSWORD, OTHER, address=ADDR)
    assert changed.password_changed_at == clock.now() != created
    assert revoked_us(accounts, "u00042") == now_us(clock.now())
    with pytest.raises(AuthenticationError):
        accounts.authenticate("u00042", PASSWORD, ADDR)
    assert accounts.authenticate("u00042", OTHER, ADDR).account.user_id == "u00042"
    success = [e for e in events(audit_sink, "password-change") if e.outcome == "success"]
    assert [e.principal for e in success] == ["user/u00042"]
    for event in audit_sink.events:
        assert PASSWORD not in repr(event) and OTHER not in repr(event)


def test_change_password_is_refused_for_suspended_and_locked_accounts(
    accounts: Accounts, audit_sink: ListAuditSink
) -> None:
    add(accounts)
    accounts.suspend("u00042", by=ADMIN)
    with pytest.raises(AuthenticationError):
        accounts.change_password("u00042", PASSWORD, OTHER)
    accounts.reactivate("u00042", by=ADMIN)
    for _ in range(TEST_THROTTLE.lock_after):
        with pytest.raises(AuthenticationError):
            accounts.authenticate("u00042", "not-the-password-1", ADDR)
    with pytest.raises(AuthenticationError):
        accounts.change_password("u00042", PASSWORD, OTHER, address=ADDR)
    reasons = [e.detail["reason"] for e in events(audit_sink, "password-change")]
    assert reasons == ["suspended", "account-locked"]
    assert accounts.unlock("u00042", by=ADMIN)
    accounts.change_password("u00042", PASSWORD, OTHER, address=ADDR)


def test_reset_password_by_an_administrator(
    accounts: Accounts, audit_sink: ListAuditSink, clock: FixedClock
) -> None:
    add(accounts)
    clock.advance(hours=2)
    with pytest.raises(PasswordPolicyError):
        accounts.reset_password("u00042", "password1234", by=ADMIN)
    accounts.reset_password("u00042", OTHER, by=ADMIN)
    assert accounts.authenticate("u00042", OTHER, ADDR)
    assert revoked_us(accounts, "u00042") == now_us(clock.now())
    (event,) = events(audit_sink, "password-reset")
    assert event.principal == ADMIN and event.detail == {"account": "u00042"}
    accounts.terminate("u00042", by=ADMIN)
    with pytest.raises(AccountError, match="terminated"):
        accounts.reset_password("u00042", "third-Good-phrase-71", by=ADMIN)


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_accounts_on_postgres(
    pg_keyring: Keyring, clock: FixedClock, hashing: PasswordHashing
) -> None:
    sink = ListAuditSink()
    accounts = make_accounts(pg_keyring.engine, pg_keyring, clock, sink, hashing)
    add(accounts)
    with pytest.raises(AccountExists):
        add(accounts)
    assert accounts.authenticate("u00042", PASSWORD, ADDR).mfa == "enrol"
    accounts.terminate("u00042", by=ADMIN)
    with pytest.raises(AuthenticationError):
        accounts.authenticate("u00042", PASSWORD, ADDR)
    assert accounts.get("u00042").terminated_at == clock.now()
    assert revoked_us(accounts, "u00042") == now_us(clock.now())
    assert [e.detail["reason"] for e in events(sink, "login-failure")] == ["terminated"]

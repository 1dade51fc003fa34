"""Console sessions: expiry, revocation, step-up, CSRF, AAL2 bounds, no ids at rest."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from phiguard.audit.events import ListAuditSink
from phiguard.clock import FixedClock
from phiguard.errors import AuthenticationError, ConfigError
from phiguard.identity.accounts import Accounts
from phiguard.identity.passwords import PasswordHashing
from phiguard.identity.sessions import (
    DEFAULT_ABSOLUTE,
    DEFAULT_IDLE,
    DEFAULT_REAUTH_WINDOW,
    SessionInvalid,
    SessionStore,
)
from phiguard.records.vault import Vault
from tests.identity.conftest import CHEAP
from tests.identity.test_accounts import ADMIN, add, make_accounts

ADDR = "198.51.100.7"
UA = "Mozilla/5.0 " + "x" * 400


@pytest.fixture
def store(vault: Vault, clock: FixedClock) -> SessionStore:
    return SessionStore(vault.engine, clock)


def test_create_validate_and_list(store: SessionStore, clock: FixedClock) -> None:
    new = store.create("u00042", 1, ADDR, UA)
    assert new.session_id not in repr(new) and new.csrf_token not in repr(new)
    assert len(new.session_id) >= 43  # 256 bits, base64url
    assert new.session.user_agent is not None and len(new.session.user_agent) == 200
    clock.advance(minutes=5)
    seen = store.validate(new.session_id, address="203.0.113.9")
    assert seen.user_id == "u00042" and seen.aal == 1
    assert seen.last_seen_at == clock.now() and seen.address == "203.0.113.9"
    other = store.create("u00042", 2, ADDR, None)
    assert {s.handle for s in store.list_for_user("u00042")} == {
        new.session.handle,
        other.session.handle,
    }
    assert store.list_for_user("someone-else") == []
    with pytest.raises(SessionInvalid) as caught:
        store.validate("not-a-session")
    assert isinstance(caught.value, AuthenticationError)
    assert str(caught.value) == "authentication failed"
    with pytest.raises(SessionInvalid):
        store.validate("")
    with pytest.raises(SessionInvalid):
        store.validate("x" * 10_000)


def test_idle_expiry_is_reset_by_activity(store: SessionStore, clock: FixedClock) -> None:
    new = store.create("u00042", 2, ADDR, UA)
    for _ in range(3):
        clock.advance(minutes=14, seconds=59)
        store.validate(new.session_id)
    clock.advance(minutes=15)
    with pytest.raises(SessionInvalid):
        store.validate(new.session_id)
    assert store.list_for_user("u00042") == []


def test_absolute_expiry_despite_activity(store: SessionStore, clock: FixedClock) -> None:
    new = store.create("u00042", 2, ADDR, UA)
    for _ in range(12 * 6 - 1):
        clock.advance(minutes=10)
        store.validate(new.session_id)
    clock.advance(minutes=10)  # exactly 12 hours after the log-in
    with pytest.raises(SessionInvalid):
        store.validate(new.session_id)


def test_revoke_and_revoke_all(store: SessionStore) -> None:
    a = store.create("u00042", 2, ADDR, UA)
    b = store.create("u00042", 2, ADDR, UA)
    c = store.create("u00042", 1, ADDR, UA)
    other = store.create("u00099", 2, ADDR, UA)
    assert store.revoke(a.session_id)
    assert not store.revoke(a.session_id)
    with pytest.raises(SessionInvalid):
        store.validate(a.session_id)
    assert store.revoke_all("u00042", except_id=b.session_id) == 1  # only c was still live
    store.validate(b.session_id)
    with pytest.raises(SessionInvalid):
        store.validate(c.session_id)
    assert store.revoke_handle("u00042", b.session.handle)
    assert not store.revoke_handle("u00042", other.session.handle)  # not theirs
    assert store.revoke_all("u00042") == 0
    store.validate(other.session_id)
    assert store.purge() == 3
    assert [s.user_id for s in store.list_for_user("u00099")] == ["u00099"]


def test_account_revocation_ends_sessions(
    vault: Vault, clock: FixedClock, audit_sink: ListAuditSink
) -> None:
    accounts: Accounts = make_accounts(
        vault.engine, vault.keyring, clock, audit_sink, PasswordHashing(CHEAP)
    )
    add(accounts, "u00042")
    store = SessionStore(vault.engine, clock, is_revoked=accounts.is_revoked)
    new = store.create("u00042", 2, ADDR, UA)
    clock.advance(seconds=1)
    store.validate(new.session_id)
    accounts.terminate("u00042", by=ADMIN)
    with pytest.raises(SessionInvalid):
        store.validate(new.session_id)
    assert store.list_for_user("u00042") == []
    assert not store.check_csrf(new.session_id, new.csrf_token)


def test_callback_sees_user_and_issue_time(vault: Vault, clock: FixedClock) -> None:
    seen: list[tuple[str, dt.datetime]] = []
    cutoff: list[dt.datetime] = []

    def is_revoked(user_id: str, issued_at: dt.datetime) -> bool:
        seen.append((user_id, issued_at))
        return bool(cutoff) and issued_at < cutoff[0]

    store = SessionStore(vault.engine, clock, is_revoked=is_revoked)
    new = store.create("u00042", 2, ADDR, UA)
    issued = clock.now()
    store.validate(new.session_id)
    assert seen == [("u00042", issued)]
    clock.advance(seconds=1)
    cutoff.append(clock.now())
    with pytest.raises(SessionInvalid):
        store.validate(new.session_id)
    later = store.create("u00042", 2, ADDR, UA)  # a log-in after the cut-off is fine
    store.validate(later.session_id)


def test_step_up_rotates_the_id(store: SessionStore, clock: FixedClock) -> None:
    first = store.create("u00042", 1, ADDR, UA)
    clock.advance(minutes=10)
    store.validate(first.session_id)
    clock.advance(minutes=10)  # the reauthentication window has passed
    assert store.needs_reauth(store.validate(first.session_id))
    clock.advance(seconds=1)
    stepped = store.step_up(first.session_id)
    assert stepped.session_id != first.session_id
    assert stepped.csrf_token != first.csrf_token
    assert stepped.session.aal == 2
    assert stepped.session.created_at == first.session.created_at  # lifetime runs on
    assert not store.needs_reauth(stepped.session)
    with pytest.raises(SessionInvalid):
        store.validate(first.session_id)
    with pytest.raises(SessionInvalid):
        store.step_up(first.session_id)
    assert not store.check_csrf(stepped.session_id, first.csrf_token)
    assert store.validate(stepped.session_id).aal == 2
    assert [s.handle for s in store.list_for_user("u00042")] == [stepped.session.handle]
    # the absolute lifetime still counts from the first log-in
    clock.set(first.session.created_at + dt.timedelta(hours=12))
    with pytest.raises(SessionInvalid):
        store.validate(stepped.session_id)


def test_needs_reauth_and_reauthenticated(store: SessionStore, clock: FixedClock) -> None:
    new = store.create("u00042", 2, ADDR, UA)
    assert not store.needs_reauth(new.session)
    clock.advance(minutes=14, seconds=59)
    assert not store.needs_reauth(store.validate(new.session_id))
    clock.advance(seconds=1)
    assert store.needs_reauth(store.validate(new.session_id))
    assert not store.needs_reauth(store.reauthenticated(new.session_id))
    assert not store.needs_reauth(store.validate(new.session_id))


def test_csrf(store: SessionStore) -> None:
    a = store.create("u00042", 2, ADDR, UA)
    b = store.create("u00042", 2, ADDR, UA)
    assert store.check_csrf(a.session_id, a.csrf_token)
    assert not store.check_csrf(a.session_id, b.csrf_token)
    assert not store.check_csrf(a.session_id, "")
    assert not store.check_csrf(a.session_id, a.csrf_token[:-1])
    assert not store.check_csrf("unknown", a.csrf_token)
    store.revoke(a.session_id)
    assert not store.check_csrf(a.session_id, a.csrf_token)


def test_no_secret_at_rest(vault: Vault, store: SessionStore, tmp_path: Path) -> None:
    new = store.create("u00042", 1, ADDR, UA)
    stepped = store.step_up(new.session_id)
    store.validate(stepped.session_id)
    vault.engine.dispose()  # flush the WAL into the database file
    files = [p for p in (tmp_path / "db").iterdir() if p.is_file()]
    blob = b"".join(p.read_bytes() for p in files)
    assert b"u00042" in blob  # the right file was read
    for secret in (new.session_id, new.csrf_token, stepped.session_id, stepped.csrf_token):
        assert secret.encode() not in blob


@pytest.mark.parametrize(
    "kwargs",
    [
        {"idle": dt.timedelta(minutes=31)},
        {"idle": dt.timedelta(0)},
        {"absolute": dt.timedelta(hours=12, seconds=1)},
        {"absolute": dt.timedelta(minutes=10)},  # shorter than the idle timeout
        {"reauth_window": dt.timedelta(0)},
        {"reauth_window": dt.timedelta(hours=13)},
    ],
)
def test_bounds_outside_aal2_refused(
    vault: Vault, clock: FixedClock, kwargs: dict[str, dt.timedelta]
) -> None:
    with pytest.raises(ConfigError):
        SessionStore(
            vault.engine,
            clock,
            idle=kwargs.get("idle", DEFAULT_IDLE),
            absolute=kwargs.get("absolute", DEFAULT_ABSOLUTE),
            reauth_window=kwargs.get("reauth_window", DEFAULT_REAUTH_WINDOW),
        )


def test_bounds_within_aal2_accepted(vault: Vault, clock: FixedClock) -> None:
    store = SessionStore(
        vault.engine,
        clock,
        idle=dt.timedelta(minutes=30),
        absolute=dt.timedelta(hours=12),
        reauth_window=dt.timedelta(minutes=5),
    )
    new = store.create("u00042", 2, ADDR, UA)
    clock.advance(minutes=29)
    store.validate(new.session_id)
    with pytest.raises(ValueError):
        store.create("u00042", 3, ADDR, UA)

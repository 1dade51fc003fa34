"""Server-side console sessions within the NIST SP 800-63B AAL2 reauthentication bounds.

A session id is 256 bits from ``secrets`` and lives only in the user's cookie; the
``sessions`` table keeps its SHA-256, so a database dump, a backup or a log of
queries opens no session.  The CSRF token is kept the same way and compared in
constant time.

A fresh id is issued at every log-in (``create``) and at every step-up to AAL2
(``step_up``, which voids the old id), so an id planted in a victim's browser before
they authenticate is never the one that carries their privileges: session fixation
is impossible.

``validate`` refuses, with one generic ``SessionInvalid`` for every cause, a session
that is unknown, revoked, idle longer than ``idle``, older than ``absolute``, or
issued before its account's revocation cut-off (``is_revoked``, normally
``Accounts.is_revoked``: suspension, termination, password change and MFA reset then
end every session at the next request, without hunting them down).  SP 800-63B
(rev. 3, section 4.2.3) bounds AAL2 sessions at 12 hours in all and 30 minutes of
inactivity; the constructor refuses looser settings.

Sensitive operations (break-the-glass, exports, key operations, user administration)
ask ``needs_reauth`` first: the user must have proven who they are within
``reauth_window``, and ``reauthenticated`` records that they just did.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, delete, insert, or_, select, update

from phiguard.clock import Clock
from phiguard.errors import AuthenticationError, ConfigError
from phiguard.store.engine import now_us
from phiguard.store.tables import sessions

ID_BYTES = 32  # 256 bits
MAX_ID_CHARS = 128  # a presented id longer than this is refused before hashing
MAX_USER_AGENT = 200
MAX_ADDRESS = 64

# SP 800-63B AAL2: reauthenticate at least every 12 hours, and after 30 minutes idle.
AAL2_MAX_IDLE = dt.timedelta(minutes=30)
AAL2_MAX_ABSOLUTE = dt.timedelta(hours=12)

DEFAULT_IDLE = dt.timedelta(minutes=15)
DEFAULT_ABSOLUTE = dt.timedelta(hours=12)
DEFAULT_REAUTH_WINDOW = dt.timedelta(minutes=15)

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class SessionInvalid(AuthenticationError):
    """The session cannot be used: one generic error for every cause.

    Unknown, revoked, expired and account-revoked sessions all look the same, so a
    caller (or an attacker holding an old cookie) learns nothing about why.
    """


@dataclass(frozen=True)
class Session:
    """A live session as the console sees it; never carries the session id itself.

    ``handle`` is the stored hash of the id: it names the session on the account
    page (``revoke_handle``) but cannot be presented as a cookie.
    """

    handle: str
    user_id: str
    aal: int
    created_at: dt.datetime
    last_seen_at: dt.datetime
    reauth_at: dt.datetime
    address: str | None
    user_agent: str | None


@dataclass(frozen=True)
class NewSession:
    """A just-issued session: the id for the cookie and the CSRF token for the page.

    Both secrets are left out of ``repr`` so that logging the object leaks nothing.
    """

    session_id: str = field(repr=False)
    csrf_token: str = field(repr=False)
    session: Session


class SessionStore:
    """Creates, validates, steps up and revokes sessions in ``sessions``."""

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        *,
        idle: dt.timedelta = DEFAULT_IDLE,
        absolute: dt.timedelta = DEFAULT_ABSOLUTE,
        reauth_window: dt.timedelta = DEFAULT_REAUTH_WINDOW,
        is_revoked: Callable[[str, dt.datetime], bool] | None = None,
    ) -> None:
        zero = dt.timedelta(0)
        if not zero < idle <= AAL2_MAX_IDLE:
            raise ConfigError("session idle timeout must be positive and at most 30 minutes")
        if not zero < absolute <= AAL2_MAX_ABSOLUTE:
            raise ConfigError("session lifetime must be positive and at most 12 hours")
        if idle > absolute:
            raise ConfigError("session idle timeout cannot exceed the session lifetime")
        if not zero < reauth_window <= absolute:
            raise ConfigError("reauthentication window must be positive and within the lifetime")
        self.engine = engine
        self.clock = clock
        self.idle = idle
        self.absolute = absolute
        self.reauth_window = reauth_window
        self._is_revoked = is_revoked

    # -- issuing -----------------------------------------------------------------------
    def create(
        self, user_id: str, aal: int, address: str | None = None, user_agent: str | None = None
    ) -> NewSession:
        """Issue a new session after a successful log-in (always a fresh id)."""
        if aal not in (1, 2):
            raise ValueError("aal must be 1 (password) or 2 (password and second factor)")
        if not user_id:
            raise ValueError("a session needs a user id")
        now = now_us(self.clock.now())
        session_id, csrf_token = _token(), _token()
        row: dict[str, Any] = {
            "id_hash": _hash(session_id),
            "user_id": user_id,
            "created_at": now,
            "last_seen_at": now,
            "aal": aal,
            "reauth_at": now,
            "address": _clip(address, MAX_ADDRESS),
            "user_agent": _clip(user_agent, MAX_USER_AGENT),
            "revoked": False,
            "csrf_hash": _hash(csrf_token),
        }
        with self.engine.begin() as conn:
            conn.execute(insert(sessions).values(**row))
        return NewSession(session_id, csrf_token, _session_from(row))

    def step_up(self, session_id: str, *, address: str | None = None) -> NewSession:
        """Raise a valid session to AAL2 after the second factor: new id, old one void.

        The caller has just verified the second factor.  The new session keeps the
        original ``created_at`` (the absolute lifetime and the revocation cut-off run
        from the first log-in) and counts as a fresh authentication (``reauth_at``).
        """
        now = now_us(self.clock.now())
        new_id, csrf_token = _token(), _token()
        with self.engine.begin() as conn:
            old = self._valid_row(conn, session_id, now)
            revoked = conn.execute(
                update(sessions)
                .where(sessions.c.id_hash == old.id_hash, sessions.c.revoked.is_(False))
                .values(revoked=True)
            )
            if revoked.rowcount != 1:  # a concurrent step-up or revocation won
                raise SessionInvalid()
            row: dict[str, Any] = {
                "id_hash": _hash(new_id),
                "user_id": old.user_id,
                "created_at": int(old.created_at),
                "last_seen_at": now,
                "aal": 2,
                "reauth_at": now,
                "address": _clip(address, MAX_ADDRESS) if address is not None else old.address,
                "user_agent": old.user_agent,
                "revoked": False,
                "csrf_hash": _hash(csrf_token),
            }
            conn.execute(insert(sessions).values(**row))
        return NewSession(new_id, csrf_token, _session_from(row))

    # -- checking ----------------------------------------------------------------------
    def validate(self, session_id: str, *, address: str | None = None) -> Session:
        """The session behind a cookie, touched; ``SessionInvalid`` for every refusal.

        ``address``, when given, is recorded as the address the session was last seen
        from (shown on the account page); it does not bind the session.
        """
        now = now_us(self.clock.now())
        with self.engine.begin() as conn:
            row = self._valid_row(conn, session_id, now)
            values: dict[str, Any] = {"last_seen_at": now}
            if address is not None:
                values["address"] = _clip(address, MAX_ADDRESS)
            conn.execute(
                update(sessions)
                .where(sessions.c.id_hash == row.id_hash, sessions.c.revoked.is_(False))
                .values(**values)
            )
        current = {**row._asdict(), **values}
        return _session_from(current)

    def check_csrf(self, session_id: str, token: str) -> bool:
        """Whether ``token`` is the CSRF token of this (valid) session; constant time."""
        try:
            with self.engine.connect() as conn:
                row = self._valid_row(conn, session_id, now_us(self.clock.now()))
        except SessionInvalid:
            return False
        presented = _hash(token) if 0 < len(token) <= MAX_ID_CHARS else "0" * 64
        return hmac.compare_digest(presented.encode("ascii"), str(row.csrf_hash).encode("ascii"))

    def needs_reauth(self, session: Session) -> bool:
        """Whether the user must re-authenticate before a sensitive operation."""
        return self.clock.now() - session.reauth_at >= self.reauth_window

    def reauthenticated(self, session_id: str) -> Session:
        """Record that the user has just re-authenticated in this session."""
        now = now_us(self.clock.now())
        with self.engine.begin() as conn:
            row = self._valid_row(conn, session_id, now)
            values = {"last_seen_at": now, "reauth_at": now}
            conn.execute(update(sessions).where(sessions.c.id_hash == row.id_hash).values(**values))
        return _session_from({**row._asdict(), **values})

    def list_for_user(self, user_id: str) -> list[Session]:
        """The user's active sessions, newest first (for the account page)."""
        now = now_us(self.clock.now())
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(sessions)
                .where(sessions.c.user_id == user_id, sessions.c.revoked.is_(False))
                .order_by(sessions.c.created_at.desc(), sessions.c.id_hash)
            ).all()
        return [_session_from(r._asdict()) for r in rows if self._usable(r, now)]

    # -- ending ------------------------------------------------------------------------
    def revoke(self, session_id: str) -> bool:
        """End one session (log-out); False if it was unknown or already ended."""
        if not _plausible(session_id):
            return False
        return self._revoke_hash(_hash(session_id), None)

    def revoke_handle(self, user_id: str, handle: str) -> bool:
        """End one of ``user_id``'s sessions named by ``Session.handle``."""
        return self._revoke_hash(handle, user_id)

    def revoke_all(self, user_id: str, except_id: str | None = None) -> int:
        """End every session of ``user_id`` (but ``except_id``); how many were ended."""
        stmt = update(sessions).where(sessions.c.user_id == user_id, sessions.c.revoked.is_(False))
        if except_id is not None and _plausible(except_id):
            stmt = stmt.where(sessions.c.id_hash != _hash(except_id))
        with self.engine.begin() as conn:
            return int(conn.execute(stmt.values(revoked=True)).rowcount)

    def purge(self) -> int:
        """Delete revoked and expired rows; how many were deleted."""
        now = now_us(self.clock.now())
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(sessions).where(
                    or_(
                        sessions.c.revoked.is_(True),
                        sessions.c.last_seen_at <= now - _us(self.idle),
                        sessions.c.created_at <= now - _us(self.absolute),
                    )
                )
            )
        return int(result.rowcount)

    # -- internals ---------------------------------------------------------------------
    def signed_in(self, handle: str) -> bool:
        """Whether the session named by ``handle`` (its stored hash) has not been signed
        out, revoked or reached its absolute lifetime, and its account has not been
        revoked since; idleness does not count (SMART ``online_access``: the user is
        online while their session lasts, even when the app, not the console, is in
        use).  Touches nothing."""
        if not isinstance(handle, str) or len(handle) != 64:
            return False
        now = now_us(self.clock.now())
        with self.engine.connect() as conn:
            row = conn.execute(select(sessions).where(sessions.c.id_hash == handle)).first()
        if row is None or row.revoked or now - int(row.created_at) >= _us(self.absolute):
            return False
        return not (
            self._is_revoked is not None
            and self._is_revoked(str(row.user_id), _from_us(int(row.created_at)))
        )

    def _revoke_hash(self, id_hash: str, user_id: str | None) -> bool:
        stmt = update(sessions).where(sessions.c.id_hash == id_hash, sessions.c.revoked.is_(False))
        if user_id is not None:
            stmt = stmt.where(sessions.c.user_id == user_id)
        with self.engine.begin() as conn:
            return bool(conn.execute(stmt.values(revoked=True)).rowcount)

    def _valid_row(self, conn: Any, session_id: str, now: int) -> Any:
        if not _plausible(session_id):
            raise SessionInvalid()
        row = conn.execute(select(sessions).where(sessions.c.id_hash == _hash(session_id))).first()
        if row is None or not self._usable(row, now):
            raise SessionInvalid()
        return row

    def _usable(self, row: Any, now: int) -> bool:
        if row.revoked:
            return False
        if now - int(row.last_seen_at) >= _us(self.idle):
            return False
        if now - int(row.created_at) >= _us(self.absolute):
            return False
        return not (
            self._is_revoked is not None
            and self._is_revoked(str(row.user_id), _from_us(int(row.created_at)))
        )


def _token() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _plausible(session_id: str) -> bool:
    return isinstance(session_id, str) and 0 < len(session_id) <= MAX_ID_CHARS


def _clip(value: str | None, limit: int) -> str | None:
    return None if value is None else value[:limit]


def _us(delta: dt.timedelta) -> int:
    return delta // dt.timedelta(microseconds=1)


def _from_us(value: int) -> dt.datetime:
    """Exact (no float) conversion of stored microseconds."""
    return _EPOCH + dt.timedelta(microseconds=value)


def _session_from(row: dict[str, Any]) -> Session:
    return Session(
        handle=str(row["id_hash"]),
        user_id=str(row["user_id"]),
        aal=int(row["aal"]),
        created_at=_from_us(int(row["created_at"])),
        last_seen_at=_from_us(int(row["last_seen_at"])),
        reauth_at=_from_us(int(row["reauth_at"])),
        address=row["address"],
        user_agent=row["user_agent"],
    )

"""Workforce accounts: who may log in, with which roles, and whether they still may.

An account is a member of staff (``users``): an id that people type (``u00042``), a
name and e-mail for the console, the FHIR Practitioner that represents them in the
records (so access decisions and the audit trail can tie a log-in to clinical
activity), roles from a fixed vocabulary, and a status:

* ``active``     may log in;
* ``suspended``  may not, for now (leave, investigation); ``reactivate`` undoes it;
* ``terminated`` has left.  ``terminated_at`` is the *effective* date, which may be
  back-dated, because monitoring flags access after it; only an explicit
  ``reinstate`` brings the account back, so a slip of the keyboard cannot.

Suspension, termination, a password change or reset and an MFA reset all move the
account's ``revocations.revoked_before`` forward: every session or token issued
before it is void.  Sessions and OAuth tokens (built later) are to check
``is_revoked`` rather than being hunted down one by one, so revocation is one row,
takes effect everywhere at once and cannot miss a credential.

``authenticate`` gives one answer for every refusal -- unknown account, wrong
password, suspended, terminated, throttled -- because any difference tells an
attacker which user ids exist or which accounts are worth more guesses.  The reason
goes to the audit event only.  An unknown account still pays an argon2 verification
(``verify_decoy``) so that it costs the same time as a wrong password; a suspended
or terminated account is verified too before being refused.  A throttled attempt is
not counted again (so the lock cannot be reached in seconds), but it still pays a
decoy verification: otherwise a fast answer after a few failures would show that an
id exists and is backing off, since unknown ids are never throttled per account.
What bounds the CPU an attacker can burn this way is the per-address budget.

Every change and every log-in outcome is an ``AuditEvent`` recorded through the
injected sink before the change commits (a change that cannot be audited does not
happen).  No event, error or log line carries a password or hash.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hmac
import json
import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from phiguard.audit.events import AuditEvent, AuditSink
from phiguard.clock import Clock
from phiguard.errors import AuthenticationError, IdentityError, InvalidPasswordHash
from phiguard.roles import ROLES as ROLES  # re-exported for the CLI
from phiguard.store.engine import from_us, now_us
from phiguard.store.tables import revocations, users

from . import webauthn
from .breached import BreachedPasswords
from .passwords import PasswordContext, PasswordHashing, PasswordPolicy, Verification
from .recovery import RecoveryCodes
from .throttle import LoginThrottle, ThrottlePolicy
from .totp import TotpStore

if TYPE_CHECKING:
    from phiguard.system import System

Status = Literal["active", "suspended", "terminated"]
STATUSES: tuple[Status, ...] = ("active", "suspended", "terminated")
MfaStep = Literal["verify", "enrol", "none"]

USER_ID = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
PRACTITIONER_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")  # the FHIR id type
EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
MAX_NAME = 200
MAX_EMAIL = 254
MAX_DEPARTMENT = 128

# The principal of a log-in attempt for an account that does not exist.  The typed
# user id is never recorded: people type their password into the user-name field.
ANONYMOUS = "anonymous/unknown-account"
PURPOSE = "HOPERAT"


class AccountError(IdentityError):
    """An account operation was refused: invalid input, or the wrong account state."""


class UnknownAccount(AccountError):
    """An administrator named an account that does not exist.

    Only administrative calls raise this; ``authenticate`` never tells a caller
    whether an account exists.
    """


class AccountExists(AccountError):
    """``add`` was given a user id that is already taken."""


@dataclass(frozen=True)
class Account:
    """An account as administrators see it.  The password hash is deliberately absent,
    so that no view, log or response built from an ``Account`` can include it."""

    user_id: str
    tenant: str
    display_name: str
    email: str
    practitioner_id: str | None
    roles: tuple[str, ...]
    department: str | None
    status: Status
    password_changed_at: dt.datetime
    mfa_required: bool
    created_at: dt.datetime
    suspended_at: dt.datetime | None
    terminated_at: dt.datetime | None
    updated_at: dt.datetime

    @property
    def principal(self) -> str:
        """The audit principal of this account (``user/<id>``)."""
        return f"user/{self.user_id}"


@dataclass(frozen=True)
class AuthResult:
    """A password that was accepted, and what the log-in still needs.

    ``mfa`` is ``verify`` when the account has a confirmed TOTP enrolment (ask for a
    code), ``enrol`` when MFA is required but not set up (the session may do nothing
    but enrol), ``none`` when neither: the password alone completes the log-in.
    """

    account: Account
    mfa: MfaStep
    rehashed: bool = False

    @property
    def mfa_pending(self) -> bool:
        return self.mfa != "none"


@dataclass(frozen=True)
class MfaReset:
    """What ``reset_mfa`` removed."""

    account: Account
    totp_removed: bool
    recovery_codes_removed: int
    security_keys_removed: int = 0


class Accounts:
    """Creates, changes and authenticates workforce accounts (see the module docstring).

    Every collaborator is injected, so tests pass cheap argon2 parameters, a fixed
    clock and an in-memory audit sink; ``from_system`` wires the production ones.
    """

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        audit: AuditSink,
        *,
        hashing: PasswordHashing,
        policy: PasswordPolicy,
        throttle: LoginThrottle,
        totp: TotpStore,
        recovery: RecoveryCodes,
        tenant: str = "default",
        breached: BreachedPasswords | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.audit = audit
        self.hashing = hashing
        self.policy = policy
        self.throttle = throttle
        self.totp = totp
        self.recovery = recovery
        self.tenant = tenant
        # None: the shipped list (``breached.default_list``), loaded on first use.
        self.breached = breached

    @classmethod
    def from_system(
        cls,
        system: System,
        *,
        hashing: PasswordHashing | None = None,
        policy: PasswordPolicy | None = None,
        throttle_policy: ThrottlePolicy | None = None,
    ) -> Accounts:
        """The production wiring: the system's engine, clock, audit ledger and keyring.

        Build one per process and keep it: the throttle's address budgets and
        stuffing/spraying detectors live in its memory.
        """
        audit = system.vault.audit
        return cls(
            system.engine,
            system.clock,
            audit,
            hashing=hashing or PasswordHashing(),
            policy=policy or PasswordPolicy(),
            throttle=LoginThrottle(system.engine, system.clock, audit, throttle_policy),
            totp=TotpStore(system.engine, system.keyring, system.clock),
            recovery=RecoveryCodes(system.engine, system.clock),
            tenant=system.settings.tenant,
        )

    # -- reading -----------------------------------------------------------------------
    def get(self, user_id: str) -> Account:
        """The account ``user_id``, or ``UnknownAccount``."""
        _check_user_id(user_id)
        with self.engine.connect() as conn:
            row = self._select(conn, user_id)
        if row is None:
            raise UnknownAccount(f"there is no account {user_id}")
        return _account(row)

    def list(self, status: str | None = None) -> builtins.list[Account]:
        """Every account of the tenant (optionally of one status), ordered by user id."""
        stmt = select(users).where(users.c.tenant == self.tenant).order_by(users.c.user_id)
        if status is not None:
            stmt = stmt.where(users.c.status == _check_status(status))
        with self.engine.connect() as conn:
            return [_account(row) for row in conn.execute(stmt)]

    def mfa_enrolled(self, user_id: str) -> bool:
        """Whether the account has a confirmed TOTP second factor."""
        return self.totp.is_enrolled(user_id)

    def revoked_before(self, user_id: str) -> dt.datetime | None:
        """Credentials of ``user_id`` issued before this moment are void (None: none are)."""
        cutoff = self._revoked_before_us(user_id)
        return None if cutoff is None else from_us(cutoff)

    def is_revoked(self, user_id: str, issued_at: dt.datetime) -> bool:
        """Whether a session or token issued to ``user_id`` at ``issued_at`` is void.

        Compared in stored integer microseconds (no float round trip); a credential
        issued in the very microsecond of the revocation counts as issued after it.
        """
        cutoff = self._revoked_before_us(user_id)
        return cutoff is not None and now_us(issued_at) < cutoff

    def _revoked_before_us(self, user_id: str) -> int | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(revocations.c.revoked_before).where(revocations.c.user_id == user_id)
            ).scalar()
        return None if value is None else int(value)

    # -- administration ----------------------------------------------------------------
    def add(
        self,
        user_id: str,
        display_name: str,
        email: str,
        roles: Iterable[str],
        password: str,
        *,
        by: str,
        department: str | None = None,
        practitioner_id: str | None = None,
        source: str = "",
        request_id: str = "",
    ) -> Account:
        """Create an active account whose initial password meets the policy.

        The password is checked against the breached list and the account's own id,
        name and e-mail before anything is stored; ``PasswordPolicyError`` says why
        it was refused.  MFA is required from the start.
        """
        _check_user_id(user_id)
        name = _text(display_name, "the display name", MAX_NAME)
        mail = _email(email)
        role_list = _roles(roles)
        dept = _optional_text(department, "the department", MAX_DEPARTMENT)
        practitioner = _practitioner(practitioner_id)
        self.policy.check(password, PasswordContext(user_id, name, mail), self.breached)
        password_hash = self.hashing.hash_password(password)
        now = self.clock.now()
        at = now_us(now)
        try:
            with self.engine.begin() as conn:
                # The primary key decides (ids are unique across tenants): no read
                # first, which would race and, under SQLite, have to upgrade its lock.
                conn.execute(
                    insert(users).values(
                        user_id=user_id,
                        tenant=self.tenant,
                        display_name=name,
                        email=mail,
                        practitioner_id=practitioner,
                        roles=json.dumps(role_list),
                        department=dept,
                        status="active",
                        password_hash=password_hash,
                        password_changed_at=at,
                        mfa_required=True,
                        created_at=at,
                        suspended_at=None,
                        terminated_at=None,
                        updated_at=at,
                    )
                )
                self._record(
                    conn,
                    "user-add",
                    by,
                    now,
                    source,
                    request_id,
                    account=user_id,
                    roles=role_list,
                    department=dept,
                    practitioner=practitioner,
                )
        except IntegrityError:
            raise AccountExists(f"the user id {user_id} is already taken") from None
        return self.get(user_id)

    def suspend(self, user_id: str, *, by: str, source: str = "", request_id: str = "") -> Account:
        """Stop an active account from logging in, and void its sessions and tokens."""
        now = self.clock.now()
        return self._transition(
            user_id,
            ("active",),
            {"status": "suspended", "suspended_at": now_us(now)},
            "user-suspend",
            by,
            now,
            source,
            request_id,
            revoke=True,
        )

    def reactivate(
        self, user_id: str, *, by: str, source: str = "", request_id: str = ""
    ) -> Account:
        """Lift a suspension.  Sessions voided by the suspension stay void."""
        now = self.clock.now()
        return self._transition(
            user_id,
            ("suspended",),
            {"status": "active", "suspended_at": None},
            "user-reactivate",
            by,
            now,
            source,
            request_id,
            revoke=False,
        )

    def terminate(
        self,
        user_id: str,
        *,
        by: str,
        when: dt.datetime | None = None,
        source: str = "",
        request_id: str = "",
    ) -> Account:
        """Close the account of someone who has left, effective ``when`` (default now).

        ``when`` may lie in the past (HR reports a departure late; monitoring then
        flags access after the real date) but not in the future: until that day the
        person still works here, and a scheduled termination would need a job that
        phiguard does not run.  Everything issued to the account is revoked now.
        """
        now = self.clock.now()
        effective = now if when is None else when
        if effective.tzinfo is None:
            raise AccountError("the termination date must carry a time zone")
        if effective > now:
            raise AccountError("the termination date lies in the future; terminate on the day")
        return self._transition(
            user_id,
            ("active", "suspended"),
            {"status": "terminated", "terminated_at": now_us(effective)},
            "user-terminate",
            by,
            now,
            source,
            request_id,
            revoke=True,
            terminated_at=effective.astimezone(dt.UTC).isoformat(),
        )

    def reinstate(
        self, user_id: str, *, by: str, source: str = "", request_id: str = ""
    ) -> Account:
        """Undo a termination (re-hire, or a termination in error).

        A separate verb from ``reactivate`` so that bringing back someone who left
        is always a deliberate act with its own audit event.  Credentials revoked at
        termination stay revoked; consider ``reset_mfa`` and ``reset_password`` too.
        """
        now = self.clock.now()
        return self._transition(
            user_id,
            ("terminated",),
            {"status": "active", "terminated_at": None, "suspended_at": None},
            "user-reinstate",
            by,
            now,
            source,
            request_id,
            revoke=False,
        )

    def reset_mfa(
        self, user_id: str, *, by: str, source: str = "", request_id: str = ""
    ) -> MfaReset:
        """Remove every second factor -- the TOTP enrolment, recovery codes, security
        keys and passkeys -- so the user must enrol again.

        Used when the phone is lost or the factor may be compromised, so sessions
        that were opened with the old factor are revoked as well.  Security keys go
        too: a passkey synced to the lost phone would otherwise still sign in, and a
        remaining key would spare the account the enrolment the reset asks for.  The account row
        and the audit event commit first, then the factors are deleted: if deleting
        fails, the audit trail already shows the reset and running it again finishes
        it, whereas the reverse order could remove a factor without any record.
        """
        _check_user_id(user_id)
        had_totp = self.totp.is_enrolled(user_id)
        unused_codes = self.recovery.remaining(user_id)
        keys = webauthn.registered(self.engine, user_id)
        now = self.clock.now()
        at = now_us(now)
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(users)
                .where(users.c.user_id == user_id, users.c.tenant == self.tenant)
                .values(mfa_required=True, updated_at=at)
            )
            if changed.rowcount != 1:
                raise UnknownAccount(f"there is no account {user_id}")
            self._revoke(conn, user_id, at)
            self._record(
                conn,
                "user-reset-mfa",
                by,
                now,
                source,
                request_id,
                account=user_id,
                totp_enrolled=had_totp,
                recovery_codes_unused=unused_codes,
                security_keys=keys,
            )
        totp_removed = self.totp.remove(user_id)
        codes_removed = self.recovery.revoke(user_id)
        keys_removed = webauthn.remove_all(self.engine, user_id)
        return MfaReset(self.get(user_id), totp_removed, codes_removed, keys_removed)

    def reset_password(
        self,
        user_id: str,
        new: str,
        *,
        by: str,
        source: str = "",
        request_id: str = "",
    ) -> Account:
        """An administrator sets a new password (the user forgot theirs).

        The same policy applies as to a user's own choice.  Sessions are revoked: a
        reset usually means the old password can no longer be trusted.
        """
        account = self.get(user_id)
        if account.status == "terminated":
            raise AccountError(f"account {user_id} is terminated")
        self.policy.check(new, _context(account), self.breached)
        password_hash = self.hashing.hash_password(new)
        now = self.clock.now()
        with self.engine.begin() as conn:
            guard = users.c.status != "terminated"
            if not self._store_password(conn, user_id, password_hash, now, guard):
                raise AccountError(f"account {user_id} changed meanwhile; nothing was reset")
            self._record(conn, "password-reset", by, now, source, request_id, account=user_id)
        return self.get(user_id)

    def unlock(self, user_id: str, *, by: str, request_id: str = "") -> bool:
        """Clear a log-in lock or back-off (audited by the throttle); False if none."""
        self.get(user_id)
        return self.throttle.unlock(user_id, by=by, request_id=request_id)

    # -- the user's own actions --------------------------------------------------------
    def change_password(
        self,
        user_id: str,
        old: str,
        new: str,
        *,
        address: str = "local",
        request_id: str = "",
    ) -> Account:
        """The user replaces their password, proving the old one first.

        The old password is checked exactly like a log-in (throttled, the one
        generic ``AuthenticationError``), or this would be a guessing oracle that
        bypasses the throttle.  Every session issued before the change is revoked:
        a change is often the reaction to a suspected compromise.
        """
        request_id = request_id or secrets.token_hex(16)
        row, _ = self._verify(user_id, old, address, request_id, failure_action="password-change")
        self.throttle.record_success(user_id, address)
        account = _account(row)
        if hmac.compare_digest(_nfkc(new).encode(), _nfkc(old).encode()):
            raise AccountError("the new password must differ from the current one")
        self.policy.check(new, _context(account), self.breached)
        password_hash = self.hashing.hash_password(new)
        now = self.clock.now()
        with self.engine.begin() as conn:
            # Conditional on the hash just verified: of two concurrent changes, one wins.
            if not self._store_password(
                conn,
                user_id,
                password_hash,
                now,
                users.c.password_hash == row.password_hash,
                users.c.status == "active",
            ):
                raise AccountError("the password was changed meanwhile; nothing was changed")
            self._record(
                conn,
                "password-change",
                account.principal,
                now,
                address,
                request_id,
                account=user_id,
            )
        return self.get(user_id)

    def authenticate(
        self, user_id: str, password: str, address: str, *, request_id: str = ""
    ) -> AuthResult:
        """Check a log-in's user id and password; ``AuthenticationError`` on any refusal.

        On success the stored hash is upgraded if its argon2 parameters are older
        than the current ones (the only moment the plaintext is at hand), and the
        result says which MFA step follows.  The throttle's failure count is cleared
        only when no second factor follows: wrong codes count like wrong passwords,
        and if the right password wiped them, whoever holds it could sign in again
        before every few guesses and never reach the lock.  The second factor clears
        the count when it passes (``mfa.SecondFactor``, the WebAuthn sign-in).
        """
        request_id = request_id or secrets.token_hex(16)
        row, verification = self._verify(
            user_id, password, address, request_id, failure_action="login-failure"
        )
        account = _account(row)
        new_hash = self.hashing.hash_password(password) if verification.needs_rehash else None
        rehashed = False
        with self.engine.begin() as conn:
            if new_hash is not None:
                # Conditional: a password change that raced this log-in is not undone.
                rehashed = (
                    conn.execute(
                        update(users)
                        .where(
                            users.c.user_id == user_id,
                            users.c.password_hash == row.password_hash,
                        )
                        .values(password_hash=new_hash)
                    ).rowcount
                    == 1
                )
            self._record(
                conn,
                "login-success",
                account.principal,
                self.clock.now(),
                address,
                request_id,
                rehashed=rehashed,
            )
        mfa: MfaStep = "none"
        if self.totp.is_enrolled(user_id):
            mfa = "verify"
        elif account.mfa_required:
            mfa = "enrol"
        if mfa == "none":
            self.throttle.record_success(user_id, address)
        return AuthResult(account, mfa, rehashed)

    # -- internals ---------------------------------------------------------------------
    def _verify(
        self,
        user_id: str,
        password: str,
        address: str,
        request_id: str,
        *,
        failure_action: str,
    ) -> tuple[Any, Verification]:
        """The stored row of a user whose password is right and who may log in now.

        Every refusal records a throttle failure (unless the throttle itself refused),
        audits the real reason under ``failure_action`` and raises the same
        ``AuthenticationError``.
        """
        valid_id = USER_ID.fullmatch(user_id) is not None
        row = None
        if valid_id:
            with self.engine.connect() as conn:
                row = self._select(conn, user_id)
        # Bounded: the throttle keeps recent ids in memory for its detectors.
        throttle_id = user_id if valid_id else user_id[:64]
        decision = self.throttle.check(throttle_id, address)
        if not decision.allowed:
            # No further count (see the module docstring): counting refused attempts
            # would let an attacker reach the hard lock in seconds.  The decoy
            # verification keeps the answer as slow as any other refusal, so a fast
            # reply cannot tell an attacker that this account exists and is backing off.
            self.hashing.verify_decoy(password)
            self._refuse(row, failure_action, decision.reason, address, request_id)
        if row is None:
            self.hashing.verify_decoy(password)
            self.throttle.record_failure(
                throttle_id, address, password, known_account=False, request_id=request_id
            )
            self._refuse(None, failure_action, "unknown-account", address, request_id)
        try:
            verification = self.hashing.verify_password(str(row.password_hash), password)
        except InvalidPasswordHash:
            self.throttle.record_failure(user_id, address, password, request_id=request_id)
            self._refuse(row, failure_action, "invalid-stored-hash", address, request_id)
        if row.status != "active":
            # Verified all the same, so that a suspended account answers in the same
            # time; whether the password was right matters to an investigator (a
            # terminated user who still knows it is trying to get back in).
            self.throttle.record_failure(user_id, address, password, request_id=request_id)
            self._refuse(
                row,
                failure_action,
                str(row.status),
                address,
                request_id,
                password_correct=verification.ok,
            )
        if not verification.ok:
            self.throttle.record_failure(user_id, address, password, request_id=request_id)
            self._refuse(row, failure_action, "wrong-password", address, request_id)
        return row, verification

    def _refuse(
        self,
        row: Any,
        action: str,
        reason: str,
        address: str,
        request_id: str,
        **detail: object,
    ) -> NoReturn:
        """Audit the real reason of a refused credential check; raise the generic error."""
        principal = ANONYMOUS if row is None else f"user/{row.user_id}"
        self.audit.record(
            AuditEvent(
                action=action,
                outcome="denied",
                principal=principal,
                purpose=PURPOSE,
                request_id=request_id,
                recorded=self.clock.now(),
                source=address,
                detail={"reason": reason, **detail},
            )
        )
        raise AuthenticationError()

    def _transition(
        self,
        user_id: str,
        allowed_from: tuple[Status, ...],
        values: dict[str, object],
        action: str,
        by: str,
        now: dt.datetime,
        source: str,
        request_id: str,
        *,
        revoke: bool,
        **detail: object,
    ) -> Account:
        """Move an account between statuses in one conditional UPDATE.

        The UPDATE comes first and names the statuses it may start from, so two
        administrators racing cannot both succeed and SQLite takes the write lock at
        once (a read first would have to upgrade its lock, which WAL may refuse).
        """
        _check_user_id(user_id)
        at = now_us(now)
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(users)
                .where(
                    users.c.user_id == user_id,
                    users.c.tenant == self.tenant,
                    users.c.status.in_(allowed_from),
                )
                .values(**values, updated_at=at)
            )
            if changed.rowcount != 1:
                current = self._select(conn, user_id)
                if current is None:
                    raise UnknownAccount(f"there is no account {user_id}")
                raise AccountError(_wrong_state(user_id, str(current.status), action))
            if revoke:
                self._revoke(conn, user_id, at)
            self._record(conn, action, by, now, source, request_id, account=user_id, **detail)
        return self.get(user_id)

    def _select(self, conn: Connection, user_id: str) -> Any:
        return conn.execute(
            select(users).where(users.c.user_id == user_id, users.c.tenant == self.tenant)
        ).first()

    def _store_password(
        self, conn: Connection, user_id: str, password_hash: str, now: dt.datetime, *guards: Any
    ) -> bool:
        """Store a new password hash if ``guards`` still hold, and revoke every session
        and token issued before it; False if the row changed meanwhile.  (Hash before
        the transaction: argon2 takes ~130 ms, too long to hold a write lock.)"""
        at = now_us(now)
        changed = conn.execute(
            update(users)
            .where(users.c.user_id == user_id, users.c.tenant == self.tenant, *guards)
            .values(
                password_hash=password_hash,
                password_changed_at=at,
                updated_at=at,
            )
        )
        if changed.rowcount != 1:
            return False
        self._revoke(conn, user_id, at)
        return True

    def _revoke(self, conn: Connection, user_id: str, at: int) -> None:
        """Move ``revoked_before`` forward to ``at`` (never backward)."""
        moved = conn.execute(
            update(revocations)
            .where(revocations.c.user_id == user_id, revocations.c.revoked_before < at)
            .values(revoked_before=at)
        )
        if moved.rowcount:
            return
        exists = conn.execute(
            select(revocations.c.user_id).where(revocations.c.user_id == user_id)
        ).first()
        if exists is None:
            conn.execute(insert(revocations).values(user_id=user_id, revoked_before=at))

    def _record(
        self,
        conn: Connection,
        action: str,
        principal: str,
        now: dt.datetime,
        source: str,
        request_id: str,
        **detail: object,
    ) -> None:
        if not principal.strip():
            raise AccountError("the acting principal (by) must be named")
        self.audit.record(
            AuditEvent(
                action=action,
                outcome="success",
                principal=principal,
                purpose=PURPOSE,
                request_id=request_id or secrets.token_hex(16),
                recorded=now,
                source=source,
                detail=dict(detail),
            ),
            conn,
        )


# -- validation and conversion -----------------------------------------------------------


def _check_user_id(user_id: str) -> None:
    if USER_ID.fullmatch(user_id) is None:
        raise AccountError(
            "a user id is 2 to 64 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def _check_status(status: str) -> Status:
    for known in STATUSES:
        if status == known:
            return known
    raise AccountError(f"unknown status {status}; one of: {', '.join(STATUSES)}")


def _roles(roles: Iterable[str]) -> builtins.list[str]:
    """The roles, de-duplicated and sorted; an unknown role is refused by name."""
    given = [r.strip() for r in ([roles] if isinstance(roles, str) else roles)]
    for role in given:
        if role not in ROLES:
            raise AccountError(f"unknown role {role!r}; allowed roles: {', '.join(ROLES)}")
    if not given:
        raise AccountError(f"an account needs at least one role; allowed: {', '.join(ROLES)}")
    return sorted(set(given))


def _text(value: str, what: str, limit: int) -> str:
    text = unicodedata.normalize("NFC", value.strip())
    if not text:
        raise AccountError(f"{what} must not be empty")
    if len(text) > limit:
        raise AccountError(f"{what} is longer than {limit} characters")
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise AccountError(f"{what} contains control characters")
    return text


def _optional_text(value: str | None, what: str, limit: int) -> str | None:
    if value is None or not value.strip():
        return None
    return _text(value, what, limit)


def _email(value: str) -> str:
    mail = _text(value, "the e-mail address", MAX_EMAIL)
    if EMAIL.fullmatch(mail) is None:
        raise AccountError("the e-mail address must look like name@example.org")
    return mail


def _practitioner(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    pid = value.strip()
    if PRACTITIONER_ID.fullmatch(pid) is None:
        raise AccountError("a Practitioner id is 1 to 64 letters, digits, '-' or '.'")
    return pid


def _wrong_state(user_id: str, status: str, action: str) -> str:
    if status == "terminated" and action in ("user-suspend", "user-reactivate"):
        return f"account {user_id} is terminated; only reinstate brings it back"
    if action == "user-suspend" and status == "suspended":
        return f"account {user_id} is already suspended"
    if action == "user-terminate":
        return f"account {user_id} is already terminated"
    if action == "user-reinstate":
        return f"account {user_id} is not terminated (it is {status})"
    return f"account {user_id} is not suspended (it is {status})"


def _context(account: Account) -> PasswordContext:
    return PasswordContext(account.user_id, account.display_name, account.email)


def _nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _account(row: Any) -> Account:
    return Account(
        user_id=str(row.user_id),
        tenant=str(row.tenant),
        display_name=str(row.display_name),
        email=str(row.email),
        practitioner_id=None if row.practitioner_id is None else str(row.practitioner_id),
        roles=tuple(json.loads(row.roles)),
        department=None if row.department is None else str(row.department),
        status=_check_status(str(row.status)),
        password_changed_at=from_us(int(row.password_changed_at)),
        mfa_required=bool(row.mfa_required),
        created_at=from_us(int(row.created_at)),
        suspended_at=None if row.suspended_at is None else from_us(int(row.suspended_at)),
        terminated_at=None if row.terminated_at is None else from_us(int(row.terminated_at)),
        updated_at=from_us(int(row.updated_at)),
    )

"""Break-the-glass: emergency access to one patient, declared, time-limited and reviewed.

A plain emergency account makes every emergency invisible; here an emergency is a
purpose of use with a paper trail.  A physician or nurse without a care relationship
declares it for ONE patient, with a reason, after proving again who they are
(password and TOTP over the API, the console's re-authentication in a browser).  The
service then, in one transaction:

- stores a grant (user, patient, until ``declared + duration``, default 60 minutes)
  with the reason sealed under the ``__identity__`` data key (it may describe the
  patient);
- records a ``break-glass`` security event in the ledger, naming the patient, so the
  patient's access report shows it;
- opens a review task (the grant's ``review_status``) that only someone else, who
  holds the privacy-officer role, can close.

After commit every ``on_break_glass`` subscriber is called (the monitoring module
notifies the privacy officer); a failing subscriber is recorded, never undoes the
grant.  While the grant lasts, ``StoreAttributes`` reports ``break_glass`` for that
user and patient only, and only requests made with purpose BTG or ETREAT are
decided under it (clinical.cedar ``clinician-break-glass``); the repository marks
every such access ``break_glass`` in the ledger.  Nothing else widens: other
patients, writes, and other roles are decided as always.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Engine, insert, select, update

from phiguard.audit.events import AuditEvent, AuditSink
from phiguard.clock import Clock
from phiguard.crypto.envelope import aad
from phiguard.crypto.keyring import IDENTITY_COMPARTMENT, Keyring
from phiguard.errors import AccessError, AuthenticationError
from phiguard.records.validation import valid_id
from phiguard.store.engine import from_us, now_us
from phiguard.store.tables import access_break_glass, users

from .facts import BREAK_GLASS_PURPOSES

if TYPE_CHECKING:
    from phiguard.identity.accounts import Accounts
    from phiguard.system import System

DEFAULT_DURATION: Final = dt.timedelta(minutes=60)
MAX_DURATION: Final = dt.timedelta(hours=4)
MAX_REASON: Final = 2000
MIN_REASON: Final = 10
ROLES: Final = frozenset({"physician", "nurse"})
"""Roles the policies let read under break-the-glass (clinical.cedar)."""
REVIEWER_ROLE: Final = "privacy_officer"


class BreakGlassError(AccessError):
    """A declaration or review was refused; the message says why and nothing changed."""


@dataclass(frozen=True)
class Grant:
    """One declaration: the emergency access and the review task it opened."""

    grant_id: str
    user_id: str
    patient_id: str
    purpose: str
    declared_at: dt.datetime
    expires_at: dt.datetime
    review_status: str
    reviewed_by: str | None = None
    reviewed_at: dt.datetime | None = None
    reason: str | None = None
    """Only filled by ``get`` (opened for a reviewer); never in lists or events."""
    note: str | None = None

    def active(self, now: dt.datetime) -> bool:
        return self.declared_at <= now < self.expires_at


on_break_glass: list[Callable[[Grant], None]] = []
"""Subscribers called after every declaration (the privacy officer's notification)."""


def _grant(r: Any) -> Grant:
    return Grant(
        grant_id=str(r.grant_id),
        user_id=str(r.user_id),
        patient_id=str(r.patient_id),
        purpose=str(r.purpose),
        declared_at=from_us(int(r.declared_at)),
        expires_at=from_us(int(r.expires_at)),
        review_status=str(r.review_status),
        reviewed_by=r.reviewed_by,
        reviewed_at=from_us(int(r.reviewed_at)) if r.reviewed_at is not None else None,
    )


class BreakGlass:
    """Declares, looks up, lists and reviews break-the-glass grants for one tenant."""

    def __init__(
        self,
        engine: Engine,
        keyring: Keyring,
        clock: Clock,
        audit: AuditSink,
        *,
        tenant: str = "default",
        accounts: Accounts | None = None,
        duration: dt.timedelta = DEFAULT_DURATION,
        cache_ttl: dt.timedelta = dt.timedelta(seconds=2),
    ) -> None:
        if not dt.timedelta(0) < duration <= MAX_DURATION:
            raise ValueError("a break-the-glass grant lasts between 0 and 4 hours")
        self.engine = engine
        self.keyring = keyring
        self.clock = clock
        self.audit = audit
        self.tenant = tenant
        self.accounts = accounts
        self.duration = duration
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[dt.datetime, dict[str, dt.datetime]]] = {}
        # Called with [patient id] when a grant starts or ends in this process, so
        # cached decisions about that patient are dropped at once (wiring.py).
        self.listeners: list[Callable[[list[str]], object]] = []

    @classmethod
    def from_system(cls, system: System, accounts: Accounts | None = None) -> BreakGlass:
        return cls(
            system.engine,
            system.keyring,
            system.clock,
            system.vault.audit,
            tenant=system.settings.tenant,
            accounts=accounts,
        )

    # -- sealing -----------------------------------------------------------------------
    def _aad(self, grant_id: str, what: str) -> bytes:
        return aad(self.tenant, "break-glass", grant_id, what)

    # -- declaring ---------------------------------------------------------------------
    def declare(
        self,
        user_id: str,
        patient_id: str,
        reason: str,
        *,
        reauthenticated: bool,
        purpose: str = "BTG",
        principal_kind: str = "user",
        source: str = "",
        request_id: str = "",
    ) -> Grant:
        """Open emergency access for ``user_id`` to ``patient_id``; ``BreakGlassError`` if
        any condition fails (nothing is stored then).

        ``reauthenticated`` is the caller's statement that the user proved their
        identity again just now (the console's ``needs_reauth``/``reauthenticated``;
        the API's password and TOTP, see ``declare_with_credentials``).
        """
        text = self.check(
            user_id, patient_id, reason, purpose=purpose, principal_kind=principal_kind
        )
        if not reauthenticated:
            raise BreakGlassError("re-authenticate before breaking the glass")
        now = self.clock.now()
        grant = Grant(
            grant_id=secrets.token_hex(16),
            user_id=user_id,
            patient_id=patient_id,
            purpose=purpose,
            declared_at=now,
            expires_at=now + self.duration,
            review_status="open",
        )
        with self.engine.begin() as conn:
            sealer = self.keyring.current_sealer(IDENTITY_COMPARTMENT, conn)
            conn.execute(
                insert(access_break_glass).values(
                    grant_id=grant.grant_id,
                    tenant=self.tenant,
                    user_id=user_id,
                    patient_id=patient_id,
                    purpose=purpose,
                    declared_at=now_us(now),
                    expires_at=now_us(grant.expires_at),
                    ended_at=None,
                    reason_dek_version=sealer.key_version,
                    reason=sealer.seal(text.encode(), self._aad(grant.grant_id, "reason")),
                    review_status="open",
                )
            )
            self.audit.record(
                AuditEvent(
                    action="break-glass",
                    outcome="success",
                    principal=f"user/{user_id}",
                    purpose=purpose,
                    request_id=request_id or secrets.token_hex(16),
                    recorded=now,
                    source=source,
                    patient_ids=(patient_id,),
                    break_glass=True,
                    detail={
                        "grant": grant.grant_id,
                        "expires": grant.expires_at.isoformat(),
                        "review": "open",
                        "reason": text,
                    },
                ),
                conn,
            )
        self._changed(user_id, patient_id)
        self._notify(grant, source)
        return grant

    def check(
        self,
        user_id: str,
        patient_id: str,
        reason: str,
        *,
        purpose: str = "BTG",
        principal_kind: str = "user",
    ) -> str:
        """Every condition on a declaration but the re-authentication; returns the reason
        as it will be stored.  Run first, so bad input never costs a TOTP step."""
        if principal_kind != "user":
            raise BreakGlassError(
                "break-the-glass is declared by a workforce user, not by an application"
            )
        if purpose not in BREAK_GLASS_PURPOSES:
            raise BreakGlassError(
                f"purpose {purpose[:16]!r} is not an emergency purpose (use BTG or ETREAT)"
            )
        text = " ".join((reason or "").split())
        if len(text) < MIN_REASON:
            raise BreakGlassError(
                f"state the emergency: a reason of at least {MIN_REASON} characters is required"
            )
        if len(text) > MAX_REASON:
            raise BreakGlassError(f"the reason is longer than {MAX_REASON} characters")
        if not valid_id(patient_id):
            raise BreakGlassError("the patient id is not a valid FHIR id")
        if not self.roles_of(user_id) & ROLES:
            raise BreakGlassError(
                "break-the-glass is for physicians and nurses; your roles do not include it"
            )
        return text

    def declare_with_credentials(
        self,
        user_id: str,
        password: str,
        totp_code: str,
        patient_id: str,
        reason: str,
        *,
        purpose: str = "BTG",
        source: str = "",
        request_id: str = "",
    ) -> Grant:
        """The API's declaration: password and a current TOTP code prove the user again.

        A wrong password or code is the usual ``AuthenticationError`` (counted by the
        login throttle, the real reason in the ledger); nothing is declared then.
        """
        if self.accounts is None:
            raise BreakGlassError("re-authentication is not available here")
        # Bad input is refused before the credentials are checked: a refusal then
        # costs no throttle count and no TOTP step.
        self.check(user_id, patient_id, reason, purpose=purpose)
        result = self.accounts.authenticate(user_id, password, source, request_id=request_id)
        if result.mfa != "verify" or not self.accounts.totp.verify(user_id, totp_code).accepted:
            raise AuthenticationError()
        return self.declare(
            user_id,
            patient_id,
            reason,
            reauthenticated=True,
            purpose=purpose,
            source=source,
            request_id=request_id,
        )

    def roles_of(self, user_id: str) -> frozenset[str]:
        """The roles of an active account (``BreakGlassError`` for any other)."""

        with self.engine.connect() as conn:
            row = conn.execute(
                select(users.c.roles, users.c.status).where(users.c.user_id == user_id)
            ).first()
        if row is None or row.status != "active":
            raise BreakGlassError("there is no active account with this user id")
        return frozenset(json.loads(row.roles or "[]"))

    def _changed(self, user_id: str, patient_id: str) -> None:
        self._cache.pop(user_id, None)
        for listener in self.listeners:
            listener([patient_id])

    def _notify(self, grant: Grant, source: str) -> None:
        for subscriber in list(on_break_glass):
            try:
                subscriber(grant)
            except Exception as exc:  # a notification failure must not hide the grant
                self.audit.record(
                    AuditEvent(
                        action="break-glass-notify",
                        outcome="failure",
                        principal="system/phiguard",
                        purpose="HOPERAT",
                        request_id=secrets.token_hex(16),
                        recorded=self.clock.now(),
                        source=source,
                        patient_ids=(grant.patient_id,),
                        detail={"grant": grant.grant_id, "error": type(exc).__name__},
                    )
                )

    # -- the hot path ------------------------------------------------------------------
    def active_until(self, user_id: str, patient_id: str, now: dt.datetime) -> dt.datetime | None:
        """When ``user_id``'s grant for ``patient_id`` ends, if one is active at ``now``."""
        cached = self._cache.get(user_id)
        if cached is None or cached[0] <= now:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(
                        access_break_glass.c.patient_id,
                        access_break_glass.c.declared_at,
                        access_break_glass.c.expires_at,
                    ).where(
                        access_break_glass.c.tenant == self.tenant,
                        access_break_glass.c.user_id == user_id,
                        access_break_glass.c.expires_at > now_us(now),
                        access_break_glass.c.ended_at.is_(None),
                    )
                ).all()
            grants: dict[str, dt.datetime] = {}
            for row in rows:
                if int(row.declared_at) <= now_us(now):
                    until = from_us(int(row.expires_at))
                    grants[row.patient_id] = max(until, grants.get(row.patient_id, until))
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[user_id] = (now + self.cache_ttl, grants)
            cached = self._cache[user_id]
        found = cached[1].get(patient_id)
        return found if found is not None and now < found else None

    def any_active(self, user_id: str, now: dt.datetime) -> bool:
        """Whether ``user_id`` holds any running grant (a type-level search may start)."""
        self.active_until(user_id, "", now)
        cached = self._cache.get(user_id)
        return cached is not None and any(now < until for until in cached[1].values())

    # -- review ------------------------------------------------------------------------
    def uses(self, grant: Grant, ledger: Any) -> list[str]:
        """The ledger's entries by the grant's user about its patient while it ran.

        What the reviewer checks: every read under the emergency, with its time,
        action, resource and purpose (BTG entries are the ones the grant allowed).
        """
        _total, docs = ledger.search(
            patient=grant.patient_id,
            since_us=now_us(grant.declared_at),
            until_us=now_us(grant.expires_at),
            who=f"user/{grant.user_id}",
            count=10_000,
        )
        out = []
        for d in docs:
            at = from_us(int(d.get("t", 0))).isoformat()
            target = f"{d.get('type', '')}/{d.get('id', '')}" if d.get("type") else "-"
            out.append(
                f"{at} {d.get('action', '')} {d.get('outcome', '')} {target} "
                f"purpose {d.get('purpose', '')}" + (" break-glass" if d.get("btg") else "")
            )
        return out

    def list(self, status: str | None = "open") -> list[Grant]:
        """Grants (newest first), optionally only those whose review is ``status``."""
        stmt = select(access_break_glass).where(access_break_glass.c.tenant == self.tenant)
        if status is not None:
            if status not in ("open", "closed"):
                raise BreakGlassError("review status is open or closed")
            stmt = stmt.where(access_break_glass.c.review_status == status)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(access_break_glass.c.declared_at.desc())).all()
        return [_grant(r) for r in rows]

    def get(self, grant_id: str) -> Grant:
        """One grant with its reason (and the reviewer's note) opened, for the reviewer."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(access_break_glass).where(
                    access_break_glass.c.tenant == self.tenant,
                    access_break_glass.c.grant_id == grant_id,
                )
            ).first()
            if row is None:
                raise BreakGlassError(f"there is no break-the-glass grant {grant_id[:40]}")
            reason = self.keyring.sealer(IDENTITY_COMPARTMENT, int(row.reason_dek_version), conn)
            text = reason.open(bytes(row.reason), self._aad(grant_id, "reason")).decode()
            note = None
            if row.note is not None:
                sealer = self.keyring.sealer(IDENTITY_COMPARTMENT, int(row.note_dek_version), conn)
                note = sealer.open(bytes(row.note), self._aad(grant_id, "note")).decode()
        return replace(_grant(row), reason=text, note=note)

    def close(
        self,
        grant_id: str,
        reviewer_id: str,
        note: str,
        *,
        reauthenticated: bool,
        source: str = "",
    ) -> Grant:
        """Close the review task of a grant; only another user who is a privacy officer."""
        if not reauthenticated:
            raise BreakGlassError("re-authenticate before closing a review")
        text = " ".join((note or "").split())
        if not text:
            raise BreakGlassError("a review needs a note saying what was found")
        if len(text) > MAX_REASON:
            raise BreakGlassError(f"the note is longer than {MAX_REASON} characters")
        grant = self.get(grant_id)
        if grant.review_status != "open":
            raise BreakGlassError(f"the review of {grant_id} is already closed")
        if reviewer_id == grant.user_id:
            raise BreakGlassError("a break-the-glass review is closed by someone else")
        if REVIEWER_ROLE not in self.roles_of(reviewer_id):
            raise BreakGlassError("only a privacy officer closes break-the-glass reviews")
        now = self.clock.now()
        with self.engine.begin() as conn:
            sealer = self.keyring.current_sealer(IDENTITY_COMPARTMENT, conn)
            done = conn.execute(
                update(access_break_glass)
                .where(
                    access_break_glass.c.grant_id == grant_id,
                    access_break_glass.c.review_status == "open",
                )
                .values(
                    review_status="closed",
                    reviewed_by=reviewer_id,
                    reviewed_at=now_us(now),
                    note_dek_version=sealer.key_version,
                    note=sealer.seal(text.encode(), self._aad(grant_id, "note")),
                    # A closed review ends the access too, if it was still running.
                    ended_at=now_us(min(now, grant.expires_at)),
                )
            ).rowcount
            if done != 1:
                raise BreakGlassError(f"the review of {grant_id} is already closed")
            self.audit.record(
                AuditEvent(
                    action="break-glass-review",
                    outcome="success",
                    principal=f"user/{reviewer_id}",
                    purpose="HOPERAT",
                    request_id=secrets.token_hex(16),
                    recorded=now,
                    source=source,
                    patient_ids=(grant.patient_id,),
                    detail={"grant": grant_id, "user": grant.user_id, "note": text},
                ),
                conn,
            )
        self._changed(grant.user_id, grant.patient_id)
        return self.get(grant_id)


__all__ = [
    "DEFAULT_DURATION",
    "BreakGlass",
    "BreakGlassError",
    "Grant",
    "on_break_glass",
]

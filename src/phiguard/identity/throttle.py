"""Throttling of failed log-ins, and alerts for credential stuffing and password spraying.

SP 800-63B (section 5.2.2) asks for rate limiting that keeps online guessing
hopeless without letting an attacker lock users out at will.  Three budgets:

* Per account, exponential back-off: the first ``free_failures`` consecutive failures
  cost nothing (typos), then each further one makes the next attempt wait
  2^(n - free) seconds, capped at ``max_delay``.  At ``lock_after`` (100, the NIST
  ceiling) consecutive failures the account locks until an administrator unlocks it
  or ``lock_duration`` passes; an expired lock also clears the count.  A success
  clears the count.  These counters live in ``account_throttle`` so they survive a
  restart and are shared by every process.
* Per client address, a token bucket: ``address_burst`` failures, then one more per
  ``address_refill``.  It stops one source from guessing across many accounts;
  successes do not refill it, or an attacker would interleave log-ins to an account
  of their own.  IPv6 addresses are counted per /64 (one host usually owns one).
  The buckets live in ``address_throttle`` and are spent with one atomic UPDATE, so
  every process draws on the same budget; a bucket that has refilled completely is
  swept.
* Detection, in memory: one address failing for many distinct accounts in a window
  (credential stuffing), and one password failing for many distinct accounts in a
  window (password spraying).  Passwords are never kept: each attempted password is
  reduced to an HMAC under a key that lives only in this process's memory, so the
  fingerprints are useless outside it.  Alerts go to the audit sink, at most once
  per source or password per window, with counts only -- never the account names
  tried, because people type passwords into the user-name field.

The detectors are per process: a multi-process deployment sees each process's share
of the failures (the per-account counters, locks and address budgets are exact,
being in the database).  Sharing them would mean storing fingerprints of attempted
passwords where every process can read them, under a key they all hold: a list of
near-miss passwords, cheap to test offline.  Not worth a detector's reach.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import ipaddress
import secrets
import threading
import unicodedata
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine, and_, case, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from phiguard.audit.events import AuditEvent, AuditSink
from phiguard.clock import Clock
from phiguard.store.engine import from_us, now_us
from phiguard.store.tables import account_throttle, address_throttle

# ``locked_until`` of a lock only an administrator lifts: as late as a datetime goes
# (with a margin), so every reader can still convert it.
ADMIN_ONLY_UNTIL = dt.datetime(9999, 1, 1, tzinfo=dt.UTC)
SYSTEM_PRINCIPAL = "system/phiguard"

Reason = Literal["", "account-backoff", "account-locked", "address-backoff"]


@dataclass(frozen=True)
class ThrottlePolicy:
    """Thresholds; the defaults follow SP 800-63B and common practice."""

    free_failures: int = 5
    max_delay: dt.timedelta = dt.timedelta(minutes=15)
    lock_after: int = 100
    lock_duration: dt.timedelta | None = dt.timedelta(hours=24)  # None: admin only
    address_burst: int = 30
    address_refill: dt.timedelta = dt.timedelta(seconds=30)
    stuffing_window: dt.timedelta = dt.timedelta(minutes=10)
    stuffing_accounts: int = 20
    spraying_window: dt.timedelta = dt.timedelta(hours=1)
    spraying_accounts: int = 10
    max_tracked: int = 100_000  # sources / fingerprints the detectors hold, oldest dropped

    def delay(self, failures: int) -> dt.timedelta:
        """How long after the ``failures``-th consecutive failure the next try waits."""
        extra = failures - self.free_failures
        if extra <= 0:
            return dt.timedelta(0)
        if extra >= 40:  # 2^40 s is far past any sane cap; avoid huge timedeltas
            return self.max_delay
        return min(dt.timedelta(seconds=2**extra), self.max_delay)


@dataclass(frozen=True)
class ThrottleDecision:
    """Whether a log-in attempt may proceed now.

    ``retry_after`` is None when allowed, or when only an administrator can unlock.
    """

    allowed: bool
    reason: Reason = ""
    retry_after: dt.timedelta | None = None


@dataclass(frozen=True)
class AccountState:
    """The stored counters of one account (for administrators' views)."""

    failures: int
    locked_until: dt.datetime | None
    last_failure: dt.datetime | None

    @property
    def locked_by_admin_only(self) -> bool:
        return self.locked_until is not None and self.locked_until >= ADMIN_ONLY_UNTIL


ALLOWED = ThrottleDecision(True)


class _Window:
    """Distinct accounts seen per key within a sliding time window, plus alert memory."""

    def __init__(self, window: dt.timedelta, max_keys: int, max_events: int) -> None:
        self.window = window.total_seconds()
        self.max_keys = max_keys
        self.max_events = max_events
        self.events: OrderedDict[str, deque[tuple[float, str, str]]] = OrderedDict()
        self.alerted: dict[str, float] = {}

    def add(
        self, key: str, now: float, account: str, address: str
    ) -> deque[tuple[float, str, str]]:
        events = self.events.get(key)
        if events is None:
            events = self.events[key] = deque(maxlen=self.max_events)
            while len(self.events) > self.max_keys:
                old, _ = self.events.popitem(last=False)
                self.alerted.pop(old, None)
        else:
            self.events.move_to_end(key)
        events.append((now, account, address))
        while events and events[0][0] <= now - self.window:
            events.popleft()
        return events

    def should_alert(self, key: str, now: float) -> bool:
        last = self.alerted.get(key)
        if last is not None and now - last < self.window:
            return False
        self.alerted[key] = now
        return True


class LoginThrottle:
    """Decides whether a log-in may be tried, and learns from each failure.

    Usage: ``check`` before verifying anything; on a refusal do not verify (so a
    throttled guess costs the attacker time, not the server CPU); afterwards call
    ``record_failure`` or ``record_success``.
    """

    def __init__(
        self,
        engine: Engine,
        clock: Clock,
        audit: AuditSink,
        policy: ThrottlePolicy | None = None,
        *,
        fingerprint_key: bytes | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.audit = audit
        self.policy = policy or ThrottlePolicy()
        self._key = fingerprint_key or secrets.token_bytes(32)
        self._lock = threading.Lock()
        p = self.policy
        events = 4 * max(p.stuffing_accounts, p.spraying_accounts)
        self._stuffing = _Window(p.stuffing_window, p.max_tracked, events)
        self._spraying = _Window(p.spraying_window, p.max_tracked, events)

    # -- decisions ---------------------------------------------------------------------
    def check(self, user_id: str, address: str) -> ThrottleDecision:
        """May ``user_id`` try to log in from ``address`` now?"""
        now = self.clock.now()
        account = self._account_decision(user_id, now)
        if not account.allowed:
            return account
        return self._address_decision(_address_key(address), now)

    def _account_decision(self, user_id: str, now: dt.datetime) -> ThrottleDecision:
        state = self.account_state(user_id)
        if state.locked_until is not None:
            if state.locked_until > now:
                if state.locked_by_admin_only:
                    return ThrottleDecision(False, "account-locked", None)
                return ThrottleDecision(False, "account-locked", state.locked_until - now)
            return ALLOWED  # an expired lock: the next failure starts a fresh count
        if state.last_failure is None:
            return ALLOWED
        ready = state.last_failure + self.policy.delay(state.failures)
        if now < ready:
            return ThrottleDecision(False, "account-backoff", ready - now)
        return ALLOWED

    def _address_decision(self, key: str, now: dt.datetime) -> ThrottleDecision:
        t = address_throttle.c
        with self.engine.connect() as conn:
            row = conn.execute(select(t.tokens, t.updated).where(t.address_key == key[:64])).first()
        if row is None:
            return ALLOWED
        tokens = min(
            float(self.policy.address_burst),
            float(row.tokens) + (now_us(now) - int(row.updated)) * self._rate_per_us,
        )
        if tokens >= 1:
            return ALLOWED
        wait = (1 - tokens) * self.policy.address_refill.total_seconds()
        return ThrottleDecision(False, "address-backoff", dt.timedelta(seconds=wait))

    @property
    def _rate_per_us(self) -> float:
        return 1 / (self.policy.address_refill.total_seconds() * 1_000_000)

    def account_state(self, user_id: str) -> AccountState:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(account_throttle).where(account_throttle.c.user_id == user_id)
            ).first()
        if row is None:
            return AccountState(0, None, None)
        return AccountState(
            failures=int(row.failures),
            locked_until=None if row.locked_until is None else from_us(int(row.locked_until)),
            last_failure=from_us(int(row.last_failure)),
        )

    # -- learning ----------------------------------------------------------------------
    def record_failure(
        self,
        user_id: str,
        address: str,
        attempted_password: str | None = None,
        *,
        known_account: bool = True,
        request_id: str = "",
    ) -> ThrottleDecision:
        """Count a failed log-in; returns the decision for the next attempt.

        ``known_account=False`` for a user id that does not exist: it still counts
        against the address and towards detection, but gets no database row (or an
        attacker could fill the table with made-up names).
        """
        now = self.clock.now()
        ts = now.timestamp()
        key = _address_key(address)
        fingerprint = None
        if attempted_password is not None:
            fingerprint = hmac.new(
                self._key,
                unicodedata.normalize("NFKC", attempted_password).encode(),
                hashlib.sha256,
            ).hexdigest()
        alerts: list[AuditEvent] = []
        self._consume(key, now)
        with self._lock:
            events = self._stuffing.add(key, ts, user_id, key)
            accounts = len({e[1] for e in events})
            if accounts >= self.policy.stuffing_accounts and self._stuffing.should_alert(key, ts):
                alerts.append(
                    self._event(
                        "credential-stuffing-suspected",
                        now,
                        request_id,
                        source=address,
                        accounts=accounts,
                        failures=len(events),
                        window_seconds=int(self.policy.stuffing_window.total_seconds()),
                    )
                )
            if fingerprint is not None:
                events = self._spraying.add(fingerprint, ts, user_id, key)
                accounts = len({e[1] for e in events})
                if accounts >= self.policy.spraying_accounts and self._spraying.should_alert(
                    fingerprint, ts
                ):
                    alerts.append(
                        self._event(
                            "password-spraying-suspected",
                            now,
                            request_id,
                            source=address,
                            accounts=accounts,
                            addresses=len({e[2] for e in events}),
                            window_seconds=int(self.policy.spraying_window.total_seconds()),
                        )
                    )
        if known_account:
            self._count_failure(user_id, now, request_id)
        for event in alerts:
            self.audit.record(event)
        return self.check(user_id, address)

    def _consume(self, key: str, now: dt.datetime) -> None:
        """Spend one token of the address's bucket in one statement (refill, cap,
        spend), so concurrent failures in any process never spend the same token."""
        t = address_throttle.c
        at = now_us(now)
        burst = float(self.policy.address_burst)
        refilled = t.tokens + (at - t.updated) * self._rate_per_us
        capped = case((refilled > burst, burst), else_=refilled)
        spent = case((capped < 1.0, 0.0), else_=capped - 1.0)
        full_after = int(burst * self.policy.address_refill.total_seconds() * 1_000_000)
        address = key[:64]
        for attempt in range(2):
            try:
                with self.engine.begin() as conn:
                    # A bucket that has refilled completely says nothing: sweep it.
                    conn.execute(delete(address_throttle).where(t.updated < at - full_after))
                    changed = conn.execute(
                        update(address_throttle)
                        .where(t.address_key == address)
                        .values(tokens=spent, updated=at)
                    )
                    if changed.rowcount == 0:
                        conn.execute(
                            insert(address_throttle).values(
                                address_key=address, tokens=burst - 1, updated=at
                            )
                        )
                return
            except IntegrityError:
                # Another process counted this address's first failure at the same
                # moment: the retry finds its row and spends from it.
                if attempt:
                    raise

    def _count_failure(self, user_id: str, now: dt.datetime, request_id: str) -> None:
        t = account_throttle.c
        at = now_us(now)
        expired = and_(t.locked_until.is_not(None), t.locked_until <= at)
        for attempt in range(2):
            try:
                with self.engine.begin() as conn:
                    # One UPDATE takes the write lock first (a read-then-write would race
                    # other processes); an expired lock restarts the count at one.
                    bumped = conn.execute(
                        update(account_throttle)
                        .where(t.user_id == user_id)
                        .values(
                            failures=case((expired, 1), else_=t.failures + 1),
                            locked_until=case((expired, None), else_=t.locked_until),
                            last_failure=at,
                        )
                    )
                    if bumped.rowcount == 0:
                        conn.execute(
                            insert(account_throttle).values(
                                user_id=user_id, failures=1, locked_until=None, last_failure=at
                            )
                        )
                    failures = int(
                        conn.execute(select(t.failures).where(t.user_id == user_id)).scalar_one()
                    )
                    if failures < self.policy.lock_after:
                        return
                    duration = self.policy.lock_duration
                    until = now_us(ADMIN_ONLY_UNTIL if duration is None else now + duration)
                    locked = conn.execute(
                        update(account_throttle)
                        .where(t.user_id == user_id, t.locked_until.is_(None))
                        .values(locked_until=until)
                    )
                    if locked.rowcount == 1:
                        self.audit.record(
                            self._event(
                                "account-locked",
                                now,
                                request_id,
                                account=user_id,
                                failures=failures,
                                until="administrator" if duration is None else "expiry",
                            ),
                            conn,
                        )
                return
            except IntegrityError:
                # Another process inserted the first failure at the same moment: the
                # retry finds its row and increments it.
                if attempt:
                    raise

    def record_success(self, user_id: str, address: str) -> None:
        """Clear the account's failure count after a successful log-in.

        An active lock stays: a locked account should not have been verified at all.
        The address budget is not refilled (see the module docstring).
        """
        t = account_throttle.c
        at = now_us(self.clock.now())
        with self.engine.begin() as conn:
            conn.execute(
                delete(account_throttle).where(
                    t.user_id == user_id, or_(t.locked_until.is_(None), t.locked_until <= at)
                )
            )

    def unlock(self, user_id: str, *, by: str, request_id: str = "") -> bool:
        """An administrator (``by``, a principal reference) clears lock and count."""
        now = self.clock.now()
        with self.engine.begin() as conn:
            removed = conn.execute(
                delete(account_throttle).where(account_throttle.c.user_id == user_id)
            )
            if not removed.rowcount:
                return False
            self.audit.record(
                self._event("account-unlocked", now, request_id, principal=by, account=user_id),
                conn,
            )
        return True

    def _event(
        self,
        action: str,
        now: dt.datetime,
        request_id: str,
        *,
        source: str = "",
        principal: str = SYSTEM_PRINCIPAL,
        **detail: object,
    ) -> AuditEvent:
        return AuditEvent(
            action=action,
            outcome="denied" if action != "account-unlocked" else "success",
            principal=principal,
            purpose="HOPERAT",
            request_id=request_id or secrets.token_hex(16),
            recorded=now,
            source=source,
            detail=dict(detail),
        )


def _address_key(address: str) -> str:
    """The unit an address budget applies to: the address, or its /64 for IPv6."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address.strip()
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)

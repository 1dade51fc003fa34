"""Attributes from the store: the users table, the relationship index, break-the-glass grants.

``StoreAttributes`` is the production ``AttributeProvider``.  It answers with the same
meanings as ``HospitalAttributes`` (attributes.py is the reference), but from data:

- the caller: ``users`` (status, department, ``practitioner_id``) and the
  PractitionerRoles of that practitioner (``access_practitioner_roles``), which give
  the references that name the user in resources and a department when the account
  has none (one query);
- the patient: the facts of the relationship index (index.py): care teams,
  encounters, appointments, episodes of care, consent directives, and the VIP and
  employee flags of the Patient resource (one row, one unsealing);
- break-the-glass: the caller's unexpired grant for that patient (breakglass.py),
  looked up only for the purposes a grant serves (ETREAT, BTG).

Every decision asks for these, so they are cached:

- a patient's parsed facts stay cached (up to ``max_patients``) and are *re-checked*
  once they are ``ttl`` old: one query compares the row's ``change_tag`` (in bulk
  for a page of search results) and only a changed row is read and unsealed again.
  A write in this process drops the patient's entry at once;
- a user's facts for ``ttl``;
- the answer for one (user, purpose, patient) until ``ttl`` passes or a
  break-the-glass grant in it expires, whichever is first.

So a change made by another process (a care team ended on another server, a consent
recorded there) counts here within ``ttl`` (5 s by default); a grant's expiry is
exact.  ``prefetch`` loads or re-checks a page of search results' patients with one
query each.  Times are compared as epoch microseconds (the index stores them so); all
come from the injected clock.

**Resident facts** (resident.py, the server's default): ``warm`` loads every
patient's facts (up to ``max_patients``, most recently changed first) and every
user's, 500 rows a query, and ``keep_fresh``, run in the background every half
``ttl``, re-checks the tags of whatever is about to go stale and reloads what
changed.  A decision then finds its facts in memory: no query and no unsealing on
the decision path, the way policy decision points hold their entities.  The
guarantees are the same as on demand, because a decision that finds its facts
stale (the background fell behind) still re-checks them itself.

A load racing a write in this process could install the facts the write just
replaced; ``invalidate`` records what it dropped while loads are running, and a
load installs nothing that was dropped after it began.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Final

from phiguard.clock import Clock
from phiguard.records.context import AccessContext, Principal
from phiguard.store.engine import now_us

from .attributes import NO_RELATIONSHIP, About, Relationship, UserFacts
from .facts import BREAK_GLASS_PURPOSES, PatientFacts
from .index import Fact, PatientFactsRow, RelationshipIndex

if TYPE_CHECKING:
    from phiguard.records.vault import Vault

GrantLookup = Callable[[str, str, dt.datetime], dt.datetime | None]
"""(user id, patient id, now) -> when the caller's break-the-glass grant ends, or None."""

_INACTIVE = frozenset({"cancelled", "entered-in-error"})
_NOT_ATTENDED = frozenset({"cancelled", "noshow", "entered-in-error"})
_NO_USER = UserFacts()
_SLICE: Final = 500
_MAX_USERS: Final = 100_000

_SQL_USER: Final = (
    "SELECT u.status, u.department, u.practitioner_id, r.role_id, r.organization_id, r.active "
    "FROM users u LEFT JOIN access_practitioner_roles r "
    "ON r.tenant = ? AND r.practitioner_id = u.practitioner_id "
    "WHERE u.user_id = ?"
)
_SQL_USERS: Final = (
    "SELECT u.user_id, u.status, u.department, u.practitioner_id, "
    "r.role_id, r.organization_id, r.active "
    "FROM users u LEFT JOIN access_practitioner_roles r "
    "ON r.tenant = ? AND r.practitioner_id = u.practitioner_id"
)
"""Every user and their PractitionerRoles, for ``warm`` and ``keep_fresh``."""
"""The caller and their PractitionerRoles.  No ORDER BY: sorting by role id made SQLite
walk every role of the tenant in primary-key order instead of using the practitioner
index (80 us instead of 7 us with 500 roles); the rows are sorted here."""


@dataclass(slots=True)
class _Patient:
    """One patient's indexed facts as unsealed (dicts, times in epoch us).

    They are not turned into objects: the first answer about a patient walks them
    once, and building objects for that one walk cost as much as the walk.
    """

    change_tag: int
    fresh_until: dt.datetime
    """When to re-check the row's ``change_tag`` before trusting these facts again."""
    facts: tuple[Fact, ...]
    vip: bool = False
    employee: bool = False
    answers: dict[tuple[str, str, str], tuple[dt.datetime, About]] = field(default_factory=dict)


def _user_facts(rows: list[Any]) -> UserFacts:
    """A user's facts from their rows of ``_SQL_USER`` (status, department,
    practitioner, role id, role organization, role active): nothing unless active."""
    if not rows or rows[0][0] != "active":
        return _NO_USER
    actors: set[str] = set()
    department = str(rows[0][1] or "")
    practitioner = str(rows[0][2] or "")
    if practitioner:
        actors.add(f"Practitioner/{practitioner}")
        for _s, _d, _p, role_id, org, active in sorted(rows, key=lambda r: str(r[3])):
            if role_id is None:
                continue
            actors.add(f"PractitionerRole/{role_id}")
            if not department and active and org:
                department = str(org)
    return UserFacts(department, practitioner, frozenset(actors))


@dataclass(frozen=True, slots=True)
class Warmed:
    """What ``warm`` loaded."""

    patients: int
    users: int
    seconds: float


def _covers(start: int | None, end: int | None, now: int) -> bool:
    return (start is None or start <= now) and (end is None or now < end)


def _patient(row: PatientFactsRow, fresh_until: dt.datetime) -> _Patient:
    state = _Patient(row.change_tag, fresh_until, row.facts)
    for f in row.facts:
        if f.get("t") == "Patient":
            state.vip, state.employee = bool(f.get("vip")), bool(f.get("emp"))
    return state


def _denies(fact: Fact, names: frozenset[str], purpose: str, now: int) -> bool:
    """Whether an active Consent's deny provisions cover this caller and purpose now."""
    if fact.get("s") != "active":
        return False
    c_start, c_end = fact.get("b"), fact.get("e")
    for rule in fact.get("deny") or ():
        start, end = rule.get("b"), rule.get("e")
        if not _covers(c_start if start is None else start, c_end if end is None else end, now):
            continue
        actors = rule.get("a")
        if actors and names.isdisjoint(actors):
            continue
        purposes = rule.get("p")
        if purposes and purpose not in purposes:
            continue
        return True
    return False


class StoreAttributes:
    """``AttributeProvider`` over the store (see the module docstring)."""

    def __init__(
        self,
        vault: Vault,
        index: RelationshipIndex,
        *,
        window: dt.timedelta = dt.timedelta(days=30),
        ttl: dt.timedelta = dt.timedelta(seconds=5),
        grants: GrantLookup | None = None,
        any_grant: Callable[[str, dt.datetime], bool] | None = None,
        max_patients: int = 50_000,
        clock: Clock | None = None,
    ) -> None:
        self.vault = vault
        self.index = index
        self.window = window
        self._window_us = int(window.total_seconds() * 1_000_000)
        self.ttl = ttl
        self.grants = grants
        self.any_grant = any_grant
        self.clock: Clock = clock or vault.clock
        self.max_patients = max_patients
        self._patients: dict[str, _Patient] = {}
        self._users: dict[str, tuple[dt.datetime, UserFacts]] = {}
        # Loads in progress, and what ``invalidate`` dropped meanwhile (see _install).
        self._lock = threading.Lock()
        self._loads = 0
        self._epoch = 0
        self._dropped: dict[str, int] = {}
        self._cleared = -1
        index.on_change(self.invalidate)

    # -- caches ------------------------------------------------------------------------
    def invalidate(self, patient_ids: Iterable[str] = ()) -> None:
        """Forget what is cached about these patients (all patients and users if empty)."""
        ids = list(patient_ids)
        with self._lock:
            self._epoch += 1
            if not ids:
                self._patients.clear()
                self._users.clear()
                if self._loads:
                    self._cleared = self._epoch
                return
            for pid in ids:
                self._patients.pop(pid, None)
                if self._loads:
                    self._dropped[pid] = self._epoch

    def _begin_load(self) -> int:
        with self._lock:
            self._loads += 1
            return self._epoch

    def _end_load(self) -> None:
        with self._lock:
            self._loads -= 1
            if not self._loads:
                self._dropped.clear()
                self._cleared = -1

    def _install(self, loaded: dict[str, _Patient], began: int) -> dict[str, _Patient]:
        """Cache what a load that began at ``began`` read, except what a write in this
        process dropped since (the load may have read the row before that write)."""
        with self._lock:
            if self._cleared >= began:
                return loaded
            overflow = len(self._patients) + len(loaded) - self.max_patients
            if overflow > 0:
                # The oldest entries go (dicts keep insertion order), a tenth at a
                # time, so a full cache of resident facts is not emptied for one load.
                for pid in list(islice(self._patients, max(overflow, self.max_patients // 10))):
                    del self._patients[pid]
            for pid, state in loaded.items():
                if self._dropped.get(pid, -1) < began:
                    self._patients[pid] = state
        return loaded

    @property
    def resident(self) -> int:
        """How many patients' facts are cached."""
        return len(self._patients)

    def _state(self, patient_id: str, now: dt.datetime) -> _Patient:
        state = self._patients.get(patient_id)
        if state is not None and now < state.fresh_until:
            return state
        if state is not None:
            return self._refresh([patient_id], now)[patient_id]
        began = self._begin_load()
        try:
            state = _patient(self.index.load_one(patient_id), now + self.ttl)
            self._install({patient_id: state}, began)
        finally:
            self._end_load()
        return state

    def prefetch(
        self, ctx: AccessContext | None, patient_ids: list[str], *, now: dt.datetime | None = None
    ) -> None:
        """Make every listed patient's facts current: one query re-checks the cached
        ones that are ``ttl`` old, one more loads the missing and the changed."""
        now = now or self.clock.now()
        stale = [
            p for p in patient_ids if (s := self._patients.get(p)) is None or s.fresh_until <= now
        ]
        if stale:
            self._refresh(stale, now)

    def _refresh(self, patient_ids: list[str], now: dt.datetime) -> dict[str, _Patient]:
        """Re-check the cached ones among ``patient_ids`` by tag, load the rest and the
        changed.  ``now`` is taken before the queries, so what they confirm is
        trusted until ``now + ttl`` at most."""
        fresh_until = now + self.ttl
        out: dict[str, _Patient] = {}
        cached = {p: s for p in patient_ids if (s := self._patients.get(p)) is not None}
        missing = [p for p in patient_ids if p not in cached]
        began = self._begin_load()
        try:
            if cached:
                tags = self.index.change_tags(list(cached))
                for pid, state in cached.items():
                    if tags[pid] == state.change_tag:
                        state.fresh_until = fresh_until
                        out[pid] = state
                    else:
                        missing.append(pid)
            if missing:
                loaded = {
                    pid: _patient(row, fresh_until) for pid, row in self.index.load(missing).items()
                }
                out.update(self._install(loaded, began))
        finally:
            self._end_load()
        return out

    # -- residency (resident.py) ---------------------------------------------------------
    def warm(self, *, limit: int | None = None) -> Warmed:
        """Load the facts of every patient (the ``limit`` most recently changed, at most
        ``max_patients``) and of every user, 500 patients a query, so decisions need
        no query."""
        started = time.perf_counter()
        wanted = self.max_patients if limit is None else min(limit, self.max_patients)
        ids = self.index.patient_ids(wanted)
        for i in range(0, len(ids), _SLICE):
            chunk = [p for p in ids[i : i + _SLICE] if p not in self._patients]
            if chunk:
                self._refresh(chunk, self.clock.now())
        users = self._load_users(None)
        return Warmed(len(ids), users, time.perf_counter() - started)

    def keep_fresh(self, *, ahead: dt.timedelta | None = None) -> int:
        """Re-check what goes stale within ``ahead`` (3/4 of ``ttl`` by default, so a
        pass every half ``ttl`` re-checks everything before it goes stale):
        patients by tag (reloading the changed), users by reloading all cached ones.
        Returns how many patients were re-checked.  Run in the background, it keeps
        decisions from ever waiting on a re-check."""
        now = self.clock.now()
        horizon = now + (self.ttl * 3 / 4 if ahead is None else ahead)
        due = [p for p, s in list(self._patients.items()) if s.fresh_until <= horizon]
        for i in range(0, len(due), _SLICE):
            self._refresh(due[i : i + _SLICE], self.clock.now())
        users = [u for u, (until, _f) in list(self._users.items()) if until <= horizon]
        if users:
            self._load_users(set(users))
        return len(due)

    def _load_users(self, wanted: set[str] | None) -> int:
        """Load the facts of ``wanted`` users (all users if None) with one query."""
        now = self.clock.now()
        rows: dict[str, list[Any]] = {}
        for row in self.index.reader.rows(_SQL_USERS, (self.vault.tenant,)):
            user_id = str(row[0])
            if wanted is None or user_id in wanted:
                rows.setdefault(user_id, []).append(tuple(row[1:]))
        until = now + self.ttl
        if len(self._users) + len(rows) > _MAX_USERS:
            self._users.clear()
        for user_id in wanted or ():
            rows.setdefault(user_id, [])
        for user_id, found in rows.items():
            self._users[user_id] = (until, _user_facts(found))
        return len(rows)

    # -- the caller --------------------------------------------------------------------
    def user(self, principal: Principal) -> UserFacts:
        if principal.kind != "user":
            return _NO_USER
        now = self.clock.now()
        cached = self._users.get(principal.id)
        if cached is not None and cached[0] > now:
            return cached[1]
        rows = self.index.reader.rows(_SQL_USER, (self.vault.tenant, principal.id))
        facts = _user_facts(rows)
        if len(self._users) > _MAX_USERS:
            self._users.clear()
        self._users[principal.id] = (now + self.ttl, facts)
        return facts

    # -- the patient -------------------------------------------------------------------
    def _walk(
        self, user: UserFacts, purpose: str, state: _Patient, now: int
    ) -> tuple[str, Relationship, bool]:
        """Admitted department, relationship and consent denial, in one pass.

        Admitted: the department of the latest encounter that started and ended no
        more than ``window`` ago (ongoing counts).  Relationship: a care team or
        episode of care covering now, such an encounter, or an appointment (not
        cancelled, no-show or entered in error) within ``window`` of now.
        """
        since, until = now - self._window_us, now + self._window_us
        actors = user.actors
        names: frozenset[str] | None = None
        team = encounter = denied = False
        admitted, admitted_at = "", None
        for f in state.facts:
            kind = f.get("t")
            status = f.get("s")
            if kind == "Patient" or status in _INACTIVE:
                continue
            start, end = f.get("b"), f.get("e")
            if kind == "Encounter":
                if start is None or start > now or (end is not None and end < since):
                    continue
                if admitted_at is None or start > admitted_at:
                    orgs = f.get("o")
                    admitted, admitted_at = (str(orgs[0]) if orgs else ""), start
                if not encounter and actors and not actors.isdisjoint(f.get("m") or ()):
                    encounter = True
            elif kind == "Consent":
                if denied:
                    continue
                if names is None:
                    names = (
                        actors | {f"Organization/{user.department}"} if user.department else actors
                    )
                denied = _denies(f, names, purpose, now)
            elif not actors or actors.isdisjoint(f.get("m") or ()):
                continue
            elif kind in ("CareTeam", "EpisodeOfCare"):
                team = team or _covers(start, end, now)
            elif kind == "Appointment" and status not in _NOT_ATTENDED:
                last = end if end is not None else start
                near = start is not None and start <= until
                encounter = encounter or (near and last is not None and last >= since)
        department = bool(admitted) and admitted == user.department
        if not (team or encounter or department):
            return admitted, NO_RELATIONSHIP, denied
        return admitted, Relationship(team, encounter, department), denied

    def about(self, ctx: AccessContext, patient_id: str) -> About:
        """Patient flags, relationship, consent and break-the-glass for one decision.

        A grant is looked up only for an emergency purpose: it is used by nothing
        else (docs/access.md), so an ordinary request never waits on that look-up.
        """
        now = self.clock.now()
        state = self._state(patient_id, now)
        principal = ctx.principal
        key = (principal.id, principal.kind, ctx.purpose)
        cached = state.answers.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        user = self.user(principal)
        admitted, relationship, denied = self._walk(user, ctx.purpose, state, now_us(now))
        expires = now + self.ttl
        grant_until = None
        if (
            self.grants is not None
            and principal.kind == "user"
            and ctx.purpose in BREAK_GLASS_PURPOSES
        ):
            grant_until = self.grants(principal.id, patient_id, now)
            if grant_until is not None:
                expires = min(expires, grant_until)
        answer = About(
            PatientFacts(admitted, state.vip, state.employee),
            relationship,
            denied,
            grant_until is not None and now < grant_until,
        )
        state.answers[key] = (expires, answer)
        return answer

    def break_glass_any(self, principal: Principal) -> bool:
        """Whether the caller holds a running grant for some patient: a search may start
        under it (each result is then decided on its own patient's grant)."""
        if self.any_grant is None or principal.kind != "user":
            return False
        return self.any_grant(principal.id, self.clock.now())

    # -- the AttributeProvider protocol, for explain and the tests ---------------------
    def patient(self, patient_id: str) -> PatientFacts:
        now = self.clock.now()
        state = self._state(patient_id, now)
        admitted = self._walk(_NO_USER, "", state, now_us(now))[0]
        return PatientFacts(admitted, state.vip, state.employee)

    def relationship(self, principal: Principal, patient_id: str) -> Relationship:
        now = self.clock.now()
        user = self.user(principal)
        if user is _NO_USER:
            return NO_RELATIONSHIP
        return self._walk(user, "", self._state(patient_id, now), now_us(now))[1]

    def consent_denied(self, ctx: AccessContext, patient_id: str) -> bool:
        now = self.clock.now()
        user = self.user(ctx.principal)
        state = self._state(patient_id, now)
        return self._walk(user, ctx.purpose, state, now_us(now))[2]

    def describe(self, patient_id: str) -> str:
        """Counts of the indexed facts of a patient (for ``phiguard access explain``)."""
        state = self._state(patient_id, self.clock.now())
        kinds: dict[str, int] = {}
        denials = 0
        for f in state.facts:
            kind = str(f.get("t"))
            if kind == "Consent":
                denials += len(f.get("deny") or ()) if f.get("s") == "active" else 0
            elif kind != "Patient":
                kinds[kind] = kinds.get(kind, 0) + 1
        return json.dumps({**kinds, "consent-denials": denials}, sort_keys=True)

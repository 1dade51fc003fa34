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
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

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

_SQL_USER: Final = (
    "SELECT u.status, u.department, u.practitioner_id, r.role_id, r.organization_id, r.active "
    "FROM users u LEFT JOIN access_practitioner_roles r "
    "ON r.tenant = ? AND r.practitioner_id = u.practitioner_id "
    "WHERE u.user_id = ?"
)
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
        index.on_change(self.invalidate)

    # -- caches ------------------------------------------------------------------------
    def invalidate(self, patient_ids: Iterable[str] = ()) -> None:
        """Forget what is cached about these patients (all patients and users if empty)."""
        ids = list(patient_ids)
        if not ids:
            self._patients.clear()
            self._users.clear()
            return
        for pid in ids:
            self._patients.pop(pid, None)

    def _state(self, patient_id: str, now: dt.datetime) -> _Patient:
        state = self._patients.get(patient_id)
        if state is not None and now < state.fresh_until:
            return state
        if state is not None:
            return self._refresh([patient_id], now)[patient_id]
        if len(self._patients) >= self.max_patients:
            self._patients.clear()
        state = _patient(self.index.load_one(patient_id), now + self.ttl)
        self._patients[patient_id] = state
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
        fresh_until = now + self.ttl
        out: dict[str, _Patient] = {}
        cached = {p: s for p in patient_ids if (s := self._patients.get(p)) is not None}
        missing = [p for p in patient_ids if p not in cached]
        if cached:
            tags = self.index.change_tags(list(cached))
            for pid, state in cached.items():
                if tags[pid] == state.change_tag:
                    state.fresh_until = fresh_until
                    out[pid] = state
                else:
                    missing.append(pid)
        if missing:
            if len(self._patients) + len(missing) > self.max_patients:
                self._patients.clear()
            for pid, row in self.index.load(missing).items():
                out[pid] = self._patients[pid] = _patient(row, fresh_until)
        return out

    # -- the caller --------------------------------------------------------------------
    def user(self, principal: Principal) -> UserFacts:
        if principal.kind != "user":
            return _NO_USER
        now = self.clock.now()
        cached = self._users.get(principal.id)
        if cached is not None and cached[0] > now:
            return cached[1]
        rows = self.index.reader.rows(_SQL_USER, (self.vault.tenant, principal.id))
        facts = _NO_USER
        if rows and rows[0][0] == "active":
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
            facts = UserFacts(department, practitioner, frozenset(actors))
        if len(self._users) > 10_000:
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

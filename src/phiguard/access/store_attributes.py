"""Attributes from the store: the users table, the relationship index, break-the-glass grants.

``StoreAttributes`` is the production ``AttributeProvider``.  It answers with the same
meanings as ``HospitalAttributes`` (attributes.py is the reference), but from data:

- the caller: ``users`` (status, department, ``practitioner_id``) and the
  PractitionerRoles of that practitioner (``access_practitioner_roles``), which give
  the references that name the user in resources and a department when the account
  has none;
- the patient: the facts of the relationship index (index.py): care teams,
  encounters, appointments, episodes of care, consent directives, and the VIP and
  employee flags of the Patient resource;
- break-the-glass: the caller's unexpired grant for that patient (breakglass.py).

Every decision asks for these, so they are cached: a patient's facts for ``ttl``
(and dropped at once when this process writes one of the patient's indexed
resources), a user's facts for ``ttl``, and the answer for one (user, purpose,
patient) until ``ttl`` passes or a break-the-glass grant in it expires, whichever is
first.  ``prefetch`` loads a page of search results' patients in one query.  The
ttl bounds how long a change made by another process (a care team ended on another
server) takes to count; a grant's expiry is exact.  All times come from the
injected clock.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from phiguard.clock import Clock
from phiguard.records.context import AccessContext, Principal
from phiguard.store.engine import from_us
from phiguard.store.tables import users

from .attributes import NO_RELATIONSHIP, About, Relationship, UserFacts
from .facts import PatientFacts
from .index import Fact, RelationshipIndex

if TYPE_CHECKING:
    from phiguard.records.vault import Vault

GrantLookup = Callable[[str, str, dt.datetime], dt.datetime | None]
"""(user id, patient id, now) -> when the caller's break-the-glass grant ends, or None."""

_INACTIVE = frozenset({"cancelled", "entered-in-error"})
_NOT_ATTENDED = frozenset({"cancelled", "noshow", "entered-in-error"})
_NO_USER = UserFacts()


def _bounds(start: Any, end: Any) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Stored instants (epoch microseconds, see index.py) as datetimes."""
    return (
        from_us(start) if isinstance(start, int) else None,
        from_us(end) if isinstance(end, int) else None,
    )


@dataclass(frozen=True, slots=True)
class _Span:
    kind: str
    status: str
    members: frozenset[str]
    department: str
    start: dt.datetime | None
    end: dt.datetime | None


@dataclass(frozen=True, slots=True)
class _Denial:
    actors: frozenset[str]
    purposes: frozenset[str]
    start: dt.datetime | None
    end: dt.datetime | None


@dataclass(slots=True)
class _Patient:
    """One patient's indexed facts, parsed once per load."""

    expires: dt.datetime
    vip: bool = False
    employee: bool = False
    spans: list[_Span] = field(default_factory=list)
    denials: list[_Denial] = field(default_factory=list)
    answers: dict[tuple[str, str, str], tuple[dt.datetime, About]] = field(default_factory=dict)


def _covers(start: dt.datetime | None, end: dt.datetime | None, now: dt.datetime) -> bool:
    return (start is None or start <= now) and (end is None or now < end)


def _parse(facts: list[Fact], expires: dt.datetime) -> _Patient:
    out = _Patient(expires)
    for f in facts:
        kind = f.get("t")
        if kind == "Patient":
            out.vip, out.employee = bool(f.get("vip")), bool(f.get("emp"))
        elif kind == "Consent":
            if f.get("s") != "active":
                continue
            c_start, c_end = _bounds(f.get("b"), f.get("e"))
            for rule in f.get("deny") or []:
                start, end = _bounds(rule.get("b"), rule.get("e"))
                out.denials.append(
                    _Denial(
                        frozenset(rule.get("a") or ()),
                        frozenset(rule.get("p") or ()),
                        start or c_start,
                        end or c_end,
                    )
                )
        elif isinstance(kind, str):
            start, end = _bounds(f.get("b"), f.get("e"))
            orgs = f.get("o") or []
            out.spans.append(
                _Span(
                    kind,
                    str(f.get("s") or ""),
                    frozenset(f.get("m") or ()),
                    str(orgs[0]) if orgs else "",
                    start,
                    end,
                )
            )
    return out


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
        if state is None or state.expires <= now:
            self.prefetch(None, [patient_id], now=now)
            state = self._patients[patient_id]
        return state

    def prefetch(
        self, ctx: AccessContext | None, patient_ids: list[str], *, now: dt.datetime | None = None
    ) -> None:
        """Load every listed patient not freshly cached, with one index query."""
        now = now or self.clock.now()
        stale = [p for p in patient_ids if (s := self._patients.get(p)) is None or s.expires <= now]
        if not stale:
            return
        if len(self._patients) + len(stale) > self.max_patients:
            self._patients.clear()
        loaded = self.index.load(stale)
        expires = now + self.ttl
        for pid, facts in loaded.items():
            self._patients[pid] = _parse(facts, expires)

    # -- the caller --------------------------------------------------------------------
    def user(self, principal: Principal) -> UserFacts:
        if principal.kind != "user":
            return _NO_USER
        now = self.clock.now()
        cached = self._users.get(principal.id)
        if cached is not None and cached[0] > now:
            return cached[1]
        with self.vault.engine.connect() as conn:
            row = conn.execute(
                select(users.c.status, users.c.department, users.c.practitioner_id).where(
                    users.c.user_id == principal.id
                )
            ).first()
        facts = _NO_USER
        if row is not None and row.status == "active":
            actors: set[str] = set()
            department = str(row.department or "")
            practitioner = str(row.practitioner_id or "")
            if practitioner:
                actors.add(f"Practitioner/{practitioner}")
                for role_id, org, active in self.index.practitioner_roles(practitioner):
                    actors.add(f"PractitionerRole/{role_id}")
                    if not department and active and org:
                        department = org
            facts = UserFacts(department, practitioner, frozenset(actors))
        if len(self._users) > 10_000:
            self._users.clear()
        self._users[principal.id] = (now + self.ttl, facts)
        return facts

    # -- the patient -------------------------------------------------------------------
    def _admitted(self, state: _Patient, now: dt.datetime) -> str:
        since = now - self.window
        latest: _Span | None = None
        for s in state.spans:
            if s.kind != "Encounter" or s.status in _INACTIVE or s.start is None:
                continue
            recent = s.start <= now and (s.end is None or s.end >= since)
            if recent and (latest is None or (latest.start is not None and s.start > latest.start)):
                latest = s
        return latest.department if latest is not None else ""

    def _relationship(
        self, user: UserFacts, state: _Patient, admitted: str, now: dt.datetime
    ) -> Relationship:
        actors = user.actors
        team = encounter = False
        since, until = now - self.window, now + self.window
        if actors:
            for s in state.spans:
                if not (s.members & actors) or s.status in _INACTIVE:
                    continue
                if s.kind in ("CareTeam", "EpisodeOfCare"):
                    team = team or _covers(s.start, s.end, now)
                elif s.kind == "Encounter":
                    recent = s.start is not None and s.start <= now
                    encounter = encounter or (recent and (s.end is None or s.end >= since))
                elif s.kind == "Appointment" and s.status not in _NOT_ATTENDED:
                    last = s.end or s.start
                    near = s.start is not None and s.start <= until
                    encounter = encounter or (near and last is not None and last >= since)
        department = bool(admitted) and admitted == user.department
        if not (team or encounter or department):
            return NO_RELATIONSHIP
        return Relationship(team, encounter, department)

    def _denied(self, user: UserFacts, purpose: str, state: _Patient, now: dt.datetime) -> bool:
        if not state.denials:
            return False
        names = user.actors | ({f"Organization/{user.department}"} if user.department else set())
        for d in state.denials:
            if not _covers(d.start, d.end, now):
                continue
            if d.actors and not (d.actors & names):
                continue
            if d.purposes and purpose not in d.purposes:
                continue
            return True
        return False

    def about(self, ctx: AccessContext, patient_id: str) -> About:
        """Patient flags, relationship, consent and break-the-glass for one decision."""
        now = self.clock.now()
        state = self._state(patient_id, now)
        principal = ctx.principal
        key = (principal.id, principal.kind, ctx.purpose)
        cached = state.answers.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        user = self.user(principal)
        admitted = self._admitted(state, now)
        relationship = (
            self._relationship(user, state, admitted, now)
            if user is not _NO_USER
            else NO_RELATIONSHIP
        )
        expires = min(state.expires, now + self.ttl)
        grant_until = None
        if self.grants is not None and principal.kind == "user":
            grant_until = self.grants(principal.id, patient_id, now)
            if grant_until is not None:
                expires = min(expires, grant_until)
        answer = About(
            PatientFacts(admitted, state.vip, state.employee),
            relationship,
            self._denied(user, ctx.purpose, state, now),
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
        return PatientFacts(self._admitted(state, now), state.vip, state.employee)

    def relationship(self, principal: Principal, patient_id: str) -> Relationship:
        now = self.clock.now()
        state = self._state(patient_id, now)
        user = self.user(principal)
        if user is _NO_USER:
            return NO_RELATIONSHIP
        return self._relationship(user, state, self._admitted(state, now), now)

    def consent_denied(self, ctx: AccessContext, patient_id: str) -> bool:
        now = self.clock.now()
        return self._denied(
            self.user(ctx.principal), ctx.purpose, self._state(patient_id, now), now
        )

    def describe(self, patient_id: str) -> str:
        """Counts of the indexed facts of a patient (for ``phiguard access explain``)."""
        state = self._state(patient_id, self.clock.now())
        kinds: dict[str, int] = {}
        for s in state.spans:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
        return json.dumps({**kinds, "consent-denials": len(state.denials)}, sort_keys=True)

"""Where the facts about people come from: care relationships, consent, patient flags.

The policies never look anything up themselves; they decide on flags the caller
computes.  ``AttributeProvider`` is that caller's seam: the records-layer
implementation (CareTeam, Encounter and Consent resources in the store) comes with
the wiring.  ``HospitalAttributes`` answers the same questions from the synthetic
hospital's ground truth, for tests, demos and the monitoring experiments, and is the
reference for what each flag means:

- ``on_care_team``: on a care team of the patient that has started and not ended;
- ``recent_encounter``: took part in an encounter of the patient that started before
  now and ended no more than ``window`` ago (an ongoing one counts), or is booked on
  an appointment with the patient (not cancelled or a no-show) that lies within
  ``window`` of now, before or after (preparing a visit counts);
- ``department_match``: the patient is admitted to the user's department, i.e. the
  patient's latest such encounter was in it.

A relationship that has expired (team ended, encounter older than the window) is
simply no relationship.  Staff who are not active on the day have none at all.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from phiguard.clock import Clock
from phiguard.records.context import AccessContext, Principal
from phiguard.synth.model import Appointment, CareTeam, Encounter, Hospital

from .facts import PatientFacts


@dataclass(frozen=True, slots=True)
class UserFacts:
    """What the policies may know about the caller beyond roles."""

    department: str = ""
    practitioner_id: str = ""
    """The Practitioner resource that is this user (users.practitioner_id)."""
    actors: frozenset[str] = frozenset()
    """References that name this user in resources: ``Practitioner/..``,
    ``PractitionerRole/..`` (and, for consent, ``Organization/<department>``)."""


@dataclass(frozen=True, slots=True)
class Relationship:
    """How a user relates to a patient right now."""

    on_care_team: bool = False
    recent_encounter: bool = False
    department_match: bool = False


NO_RELATIONSHIP = Relationship()


@dataclass(frozen=True, slots=True)
class About:
    """Everything one decision needs to know about a caller and a patient, at once.

    Providers that can answer in one look-up (the store-backed one) offer
    ``about(ctx, patient_id)``; ``break_glass`` is then the caller's live grant for
    this patient, never a flag the caller sets on its own context.
    """

    patient: PatientFacts
    relationship: Relationship
    consent_denied: bool
    break_glass: bool = False


class AttributeProvider(Protocol):
    """The look-ups a decision needs; implementations must be cheap and side-effect free."""

    def user(self, principal: Principal) -> UserFacts: ...

    def patient(self, patient_id: str) -> PatientFacts: ...

    def relationship(self, principal: Principal, patient_id: str) -> Relationship: ...

    def consent_denied(self, ctx: AccessContext, patient_id: str) -> bool:
        """Whether the patient's consent denies this caller/purpose access."""
        ...


class HospitalAttributes:
    """Attributes from a synthetic ``Hospital`` at the clock's current time."""

    def __init__(
        self,
        hospital: Hospital,
        clock: Clock,
        *,
        window: dt.timedelta = dt.timedelta(days=30),
        consent_denied: Collection[str] = (),
    ) -> None:
        self.hospital = hospital
        self.clock = clock
        self.window = window
        self._denied = frozenset(consent_denied)
        teams: defaultdict[str, list[CareTeam]] = defaultdict(list)
        for team in hospital.care_teams:
            teams[team.patient_id].append(team)
        self._teams = dict(teams)
        appointments: defaultdict[str, list[Appointment]] = defaultdict(list)
        for appointment in hospital.appointments:
            if appointment.status not in ("cancelled", "noshow"):
                appointments[appointment.patient_id].append(appointment)
        self._appointments = dict(appointments)

    def user(self, principal: Principal) -> UserFacts:
        staff = self.hospital.staff_by_user_id.get(principal.id)
        return UserFacts(staff.department_id if staff else "")

    def _recent(self, patient_id: str, now: dt.datetime) -> list[Encounter]:
        since = now - self.window
        return [
            e
            for e in self.hospital.encounters_by_patient.get(patient_id, ())
            if e.start <= now and e.end >= since
        ]

    def _admitted(self, patient_id: str, now: dt.datetime) -> str:
        recent = self._recent(patient_id, now)
        return max(recent, key=lambda e: e.start).department_id if recent else ""

    def patient(self, patient_id: str) -> PatientFacts:
        record = self.hospital.patient_by_id.get(patient_id)
        return PatientFacts(
            department=self._admitted(patient_id, self.clock.now()),
            vip=bool(record and record.vip),
            employee=patient_id in self.hospital.staff_by_patient_id,
        )

    def relationship(self, principal: Principal, patient_id: str) -> Relationship:
        now = self.clock.now()
        staff = self.hospital.staff_by_user_id.get(principal.id)
        if staff is None or not staff.active_on(now.date()):
            return NO_RELATIONSHIP
        today = now.date()
        team = any(
            staff.user_id in t.user_ids and t.start <= today and (t.end is None or today <= t.end)
            for t in self._teams.get(patient_id, ())
        )
        encounter = any(staff.user_id in e.user_ids for e in self._recent(patient_id, now)) or any(
            a.user_id == staff.user_id
            and a.start <= now + self.window
            and a.end >= now - self.window
            for a in self._appointments.get(patient_id, ())
        )
        admitted = self._admitted(patient_id, now)
        return Relationship(team, encounter, bool(admitted) and admitted == staff.department_id)

    def consent_denied(self, ctx: AccessContext, patient_id: str) -> bool:
        return patient_id in self._denied

"""Dataclasses of the synthetic hospital.

Records are frozen so scenario code built on top (snooping injection, monitoring
evaluation) cannot quietly mutate the shared ground truth; ``slots`` keeps a
100,000-patient hospital (about a million records) within a few hundred MB.
Staff are referred to by ``user_id`` everywhere outside FHIR because that is what
audit logs record; ``practitioner_id`` is only the FHIR resource id.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final, Literal

from phiguard.roles import ROLES as ROLES  # re-exported: synth users import them here
from phiguard.roles import Role as Role
from phiguard.synth.codes import ObservationCategory, Sensitivity

CLINICAL_ROLES: Final[frozenset[Role]] = frozenset({"physician", "nurse"})

Gender = Literal["male", "female", "other", "unknown"]
EncounterClass = Literal["ambulatory", "emergency", "inpatient"]
AppointmentStatus = Literal["booked", "fulfilled", "cancelled", "noshow"]
ClinicalStatus = Literal["active", "resolved"]


@dataclass(frozen=True, slots=True)
class Department:
    id: str
    code: str
    """Short stable code (``ED``, ``CARD``...) that survives a change of seed."""
    name: str
    clinical: bool
    """Clinical departments employ physicians and nurses and see patients."""


@dataclass(frozen=True, slots=True)
class Household:
    id: str
    street: str
    """Street name without number; neighbours share it and the postal code."""
    house_number: int
    city: str
    postal_code: str
    patient_ids: tuple[str, ...]
    staff_user_ids: tuple[str, ...]
    """Staff living here; with non-empty ``patient_ids`` they are the patients' relatives."""

    @property
    def address(self) -> str:
        return f"{self.house_number} {self.street}"


@dataclass(frozen=True, slots=True)
class Patient:
    patient_id: str
    mrn: str
    family_name: str
    given_name: str
    birth_date: dt.date
    gender: Gender
    address: str
    city: str
    postal_code: str
    household_id: str
    vip: bool
    ssn: str
    """Always in the 999 area, which the SSA never issues."""
    phone: str


@dataclass(frozen=True, slots=True)
class StaffMember:
    user_id: str
    practitioner_id: str
    practitioner_role_id: str
    npi: str
    """NPI-shaped (Luhn-valid) but starting with 9, a prefix real NPIs never use."""
    family_name: str
    given_name: str
    gender: Gender
    role: Role
    department_id: str
    address: str
    city: str
    postal_code: str
    phone: str
    hire_date: dt.date
    termination_date: dt.date | None
    patient_id: str | None
    """The staff member's own patient record, if they are also a patient here."""
    household_id: str

    def active_on(self, day: dt.date) -> bool:
        return self.hire_date <= day and (
            self.termination_date is None or day < self.termination_date
        )


@dataclass(frozen=True, slots=True)
class Encounter:
    id: str
    patient_id: str
    department_id: str
    user_ids: tuple[str, ...]
    """Participating staff, attending physician first."""
    start: dt.datetime
    end: dt.datetime
    encounter_class: EncounterClass


@dataclass(frozen=True, slots=True)
class Appointment:
    id: str
    patient_id: str
    user_id: str
    department_id: str
    start: dt.datetime
    end: dt.datetime
    status: AppointmentStatus


@dataclass(frozen=True, slots=True)
class CareTeam:
    id: str
    patient_id: str
    user_ids: tuple[str, ...]
    department_id: str
    start: dt.date
    end: dt.date | None
    """``None`` while the team is still caring for the patient."""


@dataclass(frozen=True, slots=True)
class Condition:
    id: str
    patient_id: str
    encounter_id: str
    recorder_user_id: str
    code: str
    """SNOMED CT."""
    display: str
    onset: dt.date
    clinical_status: ClinicalStatus
    sensitivity: Sensitivity | None


@dataclass(frozen=True, slots=True)
class Observation:
    id: str
    patient_id: str
    encounter_id: str
    code: str
    """LOINC."""
    display: str
    category: ObservationCategory
    value: float
    unit: str
    """UCUM."""
    effective: dt.datetime
    sensitivity: Sensitivity | None


@dataclass
class Hospital:
    """The whole synthetic hospital plus lookups; equality is by content (see ``__eq__``)."""

    seed: int
    name: str
    organization_id: str
    start: dt.date
    days: int
    departments: list[Department]
    staff: list[StaffMember]
    patients: list[Patient]
    """In MRN order."""
    households: list[Household]
    encounters: list[Encounter]
    appointments: list[Appointment]
    care_teams: list[CareTeam]
    conditions: list[Condition]
    observations: list[Observation]

    department_by_id: dict[str, Department] = field(init=False, repr=False)
    department_by_code: dict[str, Department] = field(init=False, repr=False)
    staff_by_user_id: dict[str, StaffMember] = field(init=False, repr=False)
    staff_by_practitioner_id: dict[str, StaffMember] = field(init=False, repr=False)
    patient_by_id: dict[str, Patient] = field(init=False, repr=False)
    patient_by_mrn: dict[str, Patient] = field(init=False, repr=False)
    household_by_id: dict[str, Household] = field(init=False, repr=False)
    encounter_by_id: dict[str, Encounter] = field(init=False, repr=False)
    staff_by_patient_id: dict[str, StaffMember] = field(init=False, repr=False)
    """Employee-patients: patient record id to the staff member it belongs to."""
    encounters_by_patient: dict[str, list[Encounter]] = field(init=False, repr=False)
    households_by_street: dict[tuple[str, str], list[Household]] = field(init=False, repr=False)
    """(street, postal code) to the households on it, in house-number order."""

    def __post_init__(self) -> None:
        self.department_by_id = {d.id: d for d in self.departments}
        self.department_by_code = {d.code: d for d in self.departments}
        self.staff_by_user_id = {s.user_id: s for s in self.staff}
        self.staff_by_practitioner_id = {s.practitioner_id: s for s in self.staff}
        self.patient_by_id = {p.patient_id: p for p in self.patients}
        self.patient_by_mrn = {p.mrn: p for p in self.patients}
        self.household_by_id = {h.id: h for h in self.households}
        self.encounter_by_id = {e.id: e for e in self.encounters}
        self.staff_by_patient_id = {s.patient_id: s for s in self.staff if s.patient_id is not None}
        by_patient: defaultdict[str, list[Encounter]] = defaultdict(list)
        for encounter in self.encounters:
            by_patient[encounter.patient_id].append(encounter)
        self.encounters_by_patient = dict(by_patient)
        by_street: defaultdict[tuple[str, str], list[Household]] = defaultdict(list)
        for household in self.households:
            by_street[household.street, household.postal_code].append(household)
        for street in by_street.values():
            street.sort(key=_house_number)
        self.households_by_street = dict(by_street)

    @property
    def end(self) -> dt.date:
        """First day after the simulated period."""
        return self.start + dt.timedelta(days=self.days)

    def household_members(self, patient_id: str) -> list[Patient]:
        """Everyone registered at the patient's household, the patient included."""
        household = self.household_by_id[self.patient_by_id[patient_id].household_id]
        return [self.patient_by_id[pid] for pid in household.patient_ids]

    def neighbours(self, household_id: str, distance: int | None = None) -> list[Household]:
        """Other households on the same street; ``distance`` bounds the house-number gap.

        Each household has its own house number, so "same street, different number"
        is exactly "same street, different household".
        """
        home = self.household_by_id[household_id]
        return [
            h
            for h in self.households_by_street[home.street, home.postal_code]
            if h.id != home.id
            and (distance is None or abs(h.house_number - home.house_number) <= distance)
        ]

    def __eq__(self, other: object) -> bool:
        # Lookups are derived, so comparing the source lists is enough and cheaper.
        if not isinstance(other, Hospital):
            return NotImplemented
        return _content(self) == _content(other)

    def __repr__(self) -> str:
        return (
            f"Hospital(seed={self.seed}, patients={len(self.patients)}, "
            f"staff={len(self.staff)}, encounters={len(self.encounters)}, "
            f"observations={len(self.observations)})"
        )


def _house_number(household: Household) -> int:
    return household.house_number


def _content(h: Hospital) -> tuple[object, ...]:
    return (
        h.seed,
        h.name,
        h.organization_id,
        h.start,
        h.days,
        h.departments,
        h.staff,
        h.patients,
        h.households,
        h.encounters,
        h.appointments,
        h.care_teams,
        h.conditions,
        h.observations,
    )

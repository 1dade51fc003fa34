"""The synthetic hospital generator.

Everything is drawn from one ``random.Random(seed)`` in a fixed order, so a seed and
the arguments fully determine the hospital; no set iteration, clock or uuid4 is
involved.  The social structure (households, neighbours, staff who are patients or
live with patients, terminated staff) is the ground truth later snooping scenarios
are built on, so it is generated deliberately rather than left to chance: counts of
VIPs, employee-patients and terminated staff are fixed fractions with a minimum of one.

The hot loop (one pass per patient) avoids per-record helper objects and keeps lookups
in local variables: at 100,000 patients it creates about a million records.
"""

from __future__ import annotations

import datetime as dt
import gc
import itertools
import random
from dataclasses import dataclass, field
from typing import Final

from phiguard.synth import codes
from phiguard.synth.codes import ConditionCode, ObservationCode
from phiguard.synth.ids import IdFactory
from phiguard.synth.model import (
    ROLES,
    Appointment,
    AppointmentStatus,
    CareTeam,
    Condition,
    Department,
    Encounter,
    EncounterClass,
    Gender,
    Hospital,
    Household,
    Observation,
    Patient,
    Role,
    StaffMember,
)
from phiguard.synth.names import (
    CITIES,
    POSTAL_CODES_PER_CITY,
    STREET_NAMES,
    STREET_SUFFIXES,
    NameSampler,
    postal_code,
)

DEPARTMENTS: Final[tuple[tuple[str, str, bool], ...]] = (
    ("ED", "Emergency", True),
    ("CARD", "Cardiology", True),
    ("ONC", "Oncology", True),
    ("PED", "Pediatrics", True),
    ("PSY", "Psychiatry", True),
    ("OBS", "Obstetrics", True),
    ("ORTH", "Orthopedics", True),
    ("IM", "Internal Medicine", True),
    ("RAD", "Radiology", True),
    ("BILL", "Billing", False),
    ("REG", "Registration", False),
    ("HIM", "Health Information Management", False),
    ("ITSEC", "IT Security", False),
    ("PRIV", "Privacy Office", False),
    ("RES", "Research", False),
)
NON_CLINICAL_HOME: Final[dict[Role, str]] = {
    "registration": "REG",
    "billing": "BILL",
    "him": "HIM",
    "researcher": "RES",
    "privacy_officer": "PRIV",
    "security_admin": "ITSEC",
}
ROLE_WEIGHTS: Final[dict[Role, float]] = {
    "physician": 0.22,
    "nurse": 0.42,
    "registration": 0.09,
    "billing": 0.08,
    "him": 0.06,
    "researcher": 0.05,
    "privacy_officer": 0.03,
    "security_admin": 0.05,
}
CLINICAL_STAFFING: Final[dict[str, float]] = {
    "ED": 16,
    "IM": 18,
    "CARD": 10,
    "ONC": 8,
    "PED": 10,
    "PSY": 7,
    "OBS": 8,
    "ORTH": 9,
    "RAD": 7,
}
ADULT_VISITS: Final[dict[str, float]] = {
    "IM": 30,
    "ED": 22,
    "CARD": 10,
    "ORTH": 10,
    "RAD": 10,
    "ONC": 3,
    "PSY": 5,
    "OBS": 10,
}
CHILD_VISITS: Final[dict[str, float]] = {"PED": 70, "ED": 20, "RAD": 5, "ORTH": 5}
CHILD_SAFE_DEPARTMENTS: Final = frozenset({"ED", "PSY", "ORTH", "RAD", "OBS"})

HOUSEHOLD_SIZE_WEIGHTS: Final = (0.28, 0.34, 0.16, 0.14, 0.08)
HOUSEHOLDS_PER_STREET: Final = 25
MIXED_SURNAME_RATE: Final = 0.18

VIP_RATE: Final = 0.005
EMPLOYEE_PATIENT_RATE: Final = 0.30
STAFF_RELATIVE_RATE: Final = 0.15
"""Staff who are not patients themselves but live in a household with patients."""
TERMINATED_RATE: Final = 0.03
HIRED_IN_PERIOD_RATE: Final = 0.05
MIN_STAFF: Final = 20
MAX_PATIENTS: Final = 900_000
"""The fake SSN space (999-10-0000 .. 999-99-9999) holds 900,000 distinct numbers."""

_SSN_STRIDE: Final = 7919  # prime, coprime with 900,000: a bijection that looks unordered


@dataclass(slots=True, eq=False)
class _Person:
    family: str
    given: str
    gender: Gender
    birth: dt.date
    household: _HouseholdDraft
    vip: bool = False
    patient_id: str = ""
    mrn: str = ""


@dataclass(slots=True, eq=False)
class _HouseholdDraft:
    street: int
    number: int
    persons: list[_Person] = field(default_factory=list)
    staff: list[int] = field(default_factory=list)
    id: str = ""


@dataclass(slots=True)
class _StaffDraft:
    role: Role
    department: str
    protected: bool
    """Never terminated and hired well before the period: keeps every department staffed."""
    family: str = ""
    given: str = ""
    gender: Gender = "unknown"
    person: _Person | None = None
    household: _HouseholdDraft | None = None
    hire: dt.date = dt.date.min
    termination: dt.date | None = None


def default_staff(patients: int) -> int:
    """Roughly one staff member per twenty patients, enough to staff every department."""
    return max(MIN_STAFF, patients // 20)


def generate_hospital(
    seed: int,
    patients: int = 1000,
    staff: int | None = None,
    start: dt.date = dt.date(2025, 1, 1),
    days: int = 365,
) -> Hospital:
    """A synthetic hospital fully determined by ``seed`` and the other arguments."""
    n_staff = default_staff(patients) if staff is None else staff
    minimum = sum(1 for _, _, clinical in DEPARTMENTS if clinical) + len(NON_CLINICAL_HOME)
    if not 1 <= patients <= MAX_PATIENTS:
        raise ValueError(f"patients must be between 1 and {MAX_PATIENTS}")
    if n_staff < minimum:
        raise ValueError(f"staff must be at least {minimum} to cover every department")
    if days < 1:
        raise ValueError("days must be at least 1")
    # A million new long-lived records trigger repeated full collections that free
    # almost nothing; pausing the collector saves about a quarter of the run time.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _Generator(seed, patients, n_staff, start, days).run()
    finally:
        if was_enabled:
            gc.enable()


class _Generator:
    departments: list[Department]
    dept_id: dict[str, str]
    """Department code to id."""
    streets: list[tuple[str, str, str]]
    """(street, city, postal code); households refer to streets by index."""
    next_number: list[int]
    encounters: list[Encounter]
    appointments: list[Appointment]
    care_teams: list[CareTeam]
    conditions: list[Condition]
    observations: list[Observation]

    def __init__(self, seed: int, patients: int, staff: int, start: dt.date, days: int) -> None:
        self.seed = seed
        self.n_patients = patients
        self.n_staff = staff
        self.start = start
        self.days = days
        self.rng = random.Random(seed)
        self.ids = IdFactory(seed)
        self.names = NameSampler(self.rng)
        self.start_ord = start.toordinal()

    # -- structure ---------------------------------------------------------------

    def run(self) -> Hospital:
        rng = self.rng
        hospital_name = f"{rng.choice(CITIES)} General Hospital"
        organization_id = self.ids.new("organization")
        self.departments = [
            Department(self.ids.new("department"), code, name, clinical)
            for code, name, clinical in DEPARTMENTS
        ]
        self.dept_id = {d.code: d.id for d in self.departments}
        self._make_streets()
        households = self._make_patient_households()
        staff_drafts = self._make_staff_drafts()
        staff_households = self._place_staff(staff_drafts, households)
        all_households = households + staff_households
        for draft in all_households:
            draft.id = self.ids.new("household")
        patients = self._make_patients(households)
        staff = self._make_staff(staff_drafts)
        household_records = [self._household_record(draft, staff) for draft in all_households]
        self._make_clinical(patients, staff)
        return Hospital(
            seed=self.seed,
            name=hospital_name,
            organization_id=organization_id,
            start=self.start,
            days=self.days,
            departments=self.departments,
            staff=staff,
            patients=patients,
            households=household_records,
            encounters=self.encounters,
            appointments=self.appointments,
            care_teams=self.care_teams,
            conditions=self.conditions,
            observations=self.observations,
        )

    def _make_streets(self) -> None:
        rng = self.rng
        expected = self.n_patients / 2.4 + self.n_staff
        combos = len(STREET_NAMES) * len(STREET_SUFFIXES) * len(CITIES)
        count = min(combos, max(10, int(expected / HOUSEHOLDS_PER_STREET)))
        self.streets = []
        for index in rng.sample(range(combos), count):
            index, city = divmod(index, len(CITIES))
            name, suffix = divmod(index, len(STREET_SUFFIXES))
            zone = rng.randrange(POSTAL_CODES_PER_CITY)
            self.streets.append(
                (
                    f"{STREET_NAMES[name]} {STREET_SUFFIXES[suffix]}",
                    CITIES[city],
                    postal_code(city, zone),
                )
            )
        self.next_number = [rng.randint(1, 40) for _ in self.streets]

    def _new_household(self) -> _HouseholdDraft:
        rng = self.rng
        street = rng.randrange(len(self.streets))
        number = self.next_number[street]
        self.next_number[street] = number + rng.randint(2, 8)
        return _HouseholdDraft(street, number)

    def _birth(self, age: int) -> dt.date:
        return dt.date.fromordinal(self.start_ord - age * 365 - self.rng.randrange(365))

    def _gender(self) -> Gender:
        r = self.rng.random()
        if r < 0.495:
            return "female"
        if r < 0.99:
            return "male"
        return "other" if r < 0.995 else "unknown"

    def _adult_age(self) -> int:
        rng = self.rng
        return rng.randint(20, 64) if rng.random() < 0.75 else rng.randint(65, 95)

    def _make_patient_households(self) -> list[_HouseholdDraft]:
        rng, names = self.rng, self.names
        sizes = (1, 2, 3, 4, 5)
        size_cum = list(itertools.accumulate(HOUSEHOLD_SIZE_WEIGHTS))
        households: list[_HouseholdDraft] = []
        remaining = self.n_patients
        while remaining:
            size = min(remaining, rng.choices(sizes, cum_weights=size_cum)[0])
            remaining -= size
            household = self._new_household()
            households.append(household)
            surname = names.surname()
            head_age = self._adult_age() if size > 1 else rng.randint(18, 95)
            head_gender = self._gender()
            members = household.persons
            members.append(
                _Person(
                    surname, names.given(head_gender), head_gender, self._birth(head_age), household
                )
            )
            if size == 1:
                continue
            mixed = rng.random() < MIXED_SURNAME_RATE
            partner_surname = names.surname() if mixed else surname
            if head_gender in ("female", "male") and rng.random() < 0.9:
                partner_gender: Gender = "male" if head_gender == "female" else "female"
            else:
                partner_gender = self._gender()
            partner_age = min(98, max(18, head_age + rng.randint(-6, 6)))
            members.append(
                _Person(
                    partner_surname,
                    names.given(partner_gender),
                    partner_gender,
                    self._birth(partner_age),
                    household,
                )
            )
            for _ in range(size - 2):
                if head_age <= 60:
                    age = rng.randint(0, max(0, min(head_age - 20, 25)))
                else:
                    age = rng.randint(18, max(18, head_age - 22))
                gender = self._gender()
                family = partner_surname if mixed and rng.random() < 0.5 else surname
                members.append(
                    _Person(family, names.given(gender), gender, self._birth(age), household)
                )
        return households

    def _make_staff_drafts(self) -> list[_StaffDraft]:
        rng = self.rng
        clinical = [code for code, _, is_clinical in DEPARTMENTS if is_clinical]
        drafts = [_StaffDraft("physician", code, True) for code in clinical]
        drafts += [_StaffDraft(role, code, True) for role, code in NON_CLINICAL_HOME.items()]
        for code in clinical:
            if len(drafts) < self.n_staff:
                drafts.append(_StaffDraft("nurse", code, False))
        role_cum = list(itertools.accumulate(ROLE_WEIGHTS[r] for r in ROLES))
        dept_codes = list(CLINICAL_STAFFING)
        dept_cum = list(itertools.accumulate(CLINICAL_STAFFING.values()))
        while len(drafts) < self.n_staff:
            role = rng.choices(ROLES, cum_weights=role_cum)[0]
            if role in NON_CLINICAL_HOME:
                code = NON_CLINICAL_HOME[role]
            else:
                code = rng.choices(dept_codes, cum_weights=dept_cum)[0]
            drafts.append(_StaffDraft(role, code, False))
        rng.shuffle(drafts)
        return drafts

    def _place_staff(
        self, drafts: list[_StaffDraft], households: list[_HouseholdDraft]
    ) -> list[_HouseholdDraft]:
        """Decide who is an employee-patient, who lives with patient relatives, who alone.

        Returns the households that contain only staff.
        """
        rng, names = self.rng, self.names
        order = list(range(len(drafts)))
        rng.shuffle(order)
        min_birth = self.start_ord - 66 * 365
        max_birth = self.start_ord - 21 * 365
        candidates = [
            person
            for household in households
            for person in household.persons
            if min_birth <= person.birth.toordinal() <= max_birth
        ]
        n_employee = min(len(candidates), round(EMPLOYEE_PATIENT_RATE * len(drafts)))
        n_relative = min(len(households), round(STAFF_RELATIVE_RATE * len(drafts)))
        employee_people = rng.sample(candidates, n_employee)
        relative_homes = rng.sample(households, n_relative)
        staff_only: list[_HouseholdDraft] = []
        for position, index in enumerate(order):
            draft = drafts[index]
            if position < n_employee:
                person = employee_people[position]
                draft.person = person
                draft.household = person.household
                draft.family, draft.given, draft.gender = person.family, person.given, person.gender
            elif position < n_employee + n_relative:
                home = relative_homes[position - n_employee]
                draft.household = home
                draft.gender = self._gender()
                draft.family = home.persons[0].family if rng.random() < 0.85 else names.surname()
                draft.given = names.given(draft.gender)
            else:
                home = self._new_household()
                staff_only.append(home)
                draft.household = home
                draft.gender = self._gender()
                draft.family = names.surname()
                draft.given = names.given(draft.gender)
            draft.household.staff.append(index)
        self._employment_dates(drafts)
        return staff_only

    def _employment_dates(self, drafts: list[_StaffDraft]) -> None:
        rng, start, days = self.rng, self.start_ord, self.days
        for draft in drafts:
            if draft.protected:
                hire = start - rng.randint(2 * 365, 20 * 365)
            elif rng.random() < HIRED_IN_PERIOD_RATE:
                hire = start + rng.randrange(max(1, days // 2))
            else:
                hire = start - rng.randint(30, 25 * 365)
            if draft.person is not None:
                hire = max(hire, draft.person.birth.toordinal() + 18 * 365)
            draft.hire = dt.date.fromordinal(hire)
        eligible = [d for d in drafts if not d.protected and d.hire.toordinal() < start]
        count = min(len(eligible), max(1, round(TERMINATED_RATE * len(drafts))))
        for draft in rng.sample(eligible, count):
            draft.termination = dt.date.fromordinal(start + rng.randint(1, max(1, days - 1)))

    def _phone(self) -> str:
        rng = self.rng
        return f"555-{rng.randrange(200, 1000)}-{rng.randrange(10000):04d}"

    def _make_patients(self, households: list[_HouseholdDraft]) -> list[Patient]:
        """Patients in MRN order; MRNs follow registration order, not household order."""
        rng, new_id = self.rng, self.ids.new
        persons = [person for household in households for person in household.persons]
        for person in rng.sample(persons, max(1, round(VIP_RATE * len(persons)))):
            person.vip = True
        rng.shuffle(persons)
        ssn_offset = rng.randrange(900_000)
        streets = self.streets
        patients: list[Patient] = []
        append = patients.append
        for index, person in enumerate(persons):
            person.patient_id = new_id("patient")
            person.mrn = f"MRN{index + 1:07d}"
            serial = (index * _SSN_STRIDE + ssn_offset) % 900_000
            group, number = divmod(serial, 10_000)
            household = person.household
            street, city, postal = streets[household.street]
            append(
                Patient(
                    patient_id=person.patient_id,
                    mrn=person.mrn,
                    family_name=person.family,
                    given_name=person.given,
                    birth_date=person.birth,
                    gender=person.gender,
                    address=f"{household.number} {street}",
                    city=city,
                    postal_code=postal,
                    household_id=household.id,
                    vip=person.vip,
                    ssn=f"999-{group + 10:02d}-{number:04d}",
                    phone=self._phone(),
                )
            )
        return patients

    def _make_staff(self, drafts: list[_StaffDraft]) -> list[StaffMember]:
        rng, new_id = self.rng, self.ids.new
        npis: set[str] = set()
        staff: list[StaffMember] = []
        for index, draft in enumerate(drafts):
            household = draft.household
            assert household is not None
            street, city, postal = self.streets[household.street]
            npi = _fake_npi(rng)
            while npi in npis:
                npi = _fake_npi(rng)
            npis.add(npi)
            staff.append(
                StaffMember(
                    user_id=f"u{index + 1:05d}",
                    practitioner_id=new_id("practitioner"),
                    practitioner_role_id=new_id("practitioner-role"),
                    npi=npi,
                    family_name=draft.family,
                    given_name=draft.given,
                    gender=draft.gender,
                    role=draft.role,
                    department_id=self.dept_id[draft.department],
                    address=f"{household.number} {street}",
                    city=city,
                    postal_code=postal,
                    phone=self._phone(),
                    hire_date=draft.hire,
                    termination_date=draft.termination,
                    patient_id=draft.person.patient_id if draft.person else None,
                    household_id=household.id,
                )
            )
        return staff

    def _household_record(self, draft: _HouseholdDraft, staff: list[StaffMember]) -> Household:
        street, city, postal = self.streets[draft.street]
        return Household(
            id=draft.id,
            street=street,
            house_number=draft.number,
            city=city,
            postal_code=postal,
            patient_ids=tuple(p.patient_id for p in draft.persons),
            staff_user_ids=tuple(staff[i].user_id for i in sorted(draft.staff)),
        )

    # -- care and clinical data ----------------------------------------------------

    def _make_clinical(self, patients: list[Patient], staff: list[StaffMember]) -> None:
        """Encounters, diagnoses, vitals and labs, care teams and appointments per patient.

        Deliberately one long function: it dominates generation time, so everything
        is a local and nothing is called per record that need not be.  Staff are only
        chosen among those employed on the day, so legitimate care never involves a
        terminated or not-yet-hired user and such accesses are unambiguous later.
        """
        rng = self.rng
        random_ = rng.random
        randrange = rng.randrange
        randint = rng.randint
        gauss = rng.gauss
        new_encounter = self.ids.maker("encounter")
        new_observation = self.ids.maker("observation")
        new_condition = self.ids.maker("condition")
        new_appointment = self.ids.maker("appointment")
        new_care_team = self.ids.maker("care-team")
        days = self.days
        start_ord = self.start_ord
        base = dt.datetime.combine(self.start, dt.time(0), tzinfo=dt.UTC)
        td = dt.timedelta
        dept_id = self.dept_id
        never = dt.date.max.toordinal()

        hire = [s.hire_date.toordinal() for s in staff]
        term = [
            never if s.termination_date is None else s.termination_date.toordinal() for s in staff
        ]
        user = [s.user_id for s in staff]
        physicians: dict[str, list[int]] = {code: [] for code in CLINICAL_STAFFING}
        nurses: dict[str, list[int]] = {code: [] for code in CLINICAL_STAFFING}
        code_of = {d.id: d.code for d in self.departments}
        for i, s in enumerate(staff):
            if s.role == "physician":
                physicians[code_of[s.department_id]].append(i)
            elif s.role == "nurse":
                nurses[code_of[s.department_id]].append(i)
        all_physicians = [i for pool in physicians.values() for i in pool]

        def pick(pool: list[int], day: int) -> int | None:
            if not pool:
                return None
            for _ in range(4):
                i = pool[int(random_() * len(pool))]
                if hire[i] <= day < term[i]:
                    return i
            active = [i for i in pool if hire[i] <= day < term[i]]
            return active[int(random_() * len(active))] if active else None

        adult_codes = list(ADULT_VISITS)
        adult_cum = list(itertools.accumulate(ADULT_VISITS.values()))
        adult_no_obs = [c for c in adult_codes if c != "OBS"]
        adult_no_obs_cum = list(itertools.accumulate(ADULT_VISITS[c] for c in adult_no_obs))
        child_codes = list(CHILD_VISITS)
        child_cum = list(itertools.accumulate(CHILD_VISITS.values()))
        choices = rng.choices
        extra_visits = (0, 1, 2)
        extra_cum = (0.5, 0.85, 1.0)
        clinical_codes = list(CLINICAL_STAFFING)

        encounters = self.encounters = []
        appointments = self.appointments = []
        care_teams = self.care_teams = []
        conditions = self.conditions = []
        observations = self.observations = []
        add_encounter = encounters.append
        add_observation = observations.append

        def measure(code: ObservationCode, shift: float = 0.0) -> float:
            value = gauss(code.mean + shift, code.sd)
            value = min(code.high, max(code.low, value))
            return round(value, code.decimals) if code.decimals else float(round(value))

        conds_table = codes.CONDITIONS
        visit_diagnoses = codes.VISIT_DIAGNOSES
        hr, sbp, dbp, weight_code = (
            codes.HEART_RATE,
            codes.SYSTOLIC_BP,
            codes.DIASTOLIC_BP,
            codes.BODY_WEIGHT,
        )
        temp, spo2, resp = codes.BODY_TEMPERATURE, codes.OXYGEN_SATURATION, codes.RESPIRATORY_RATE
        routine = codes.ROUTINE_LABS
        thirty_min = td(minutes=30)

        for patient in patients:
            pid = patient.patient_id
            birth_ord = patient.birth_date.toordinal()
            age = (start_ord - birth_ord) * 4 // 1461
            female = patient.gender == "female"
            child = age < 18
            if age < 13:
                base_weight = 3.5 + age * 3.1
            elif child:
                base_weight = 40 + (age - 13) * 5.0
            else:
                base_weight = gauss(70 if female else 84, 14)
            base_weight = max(2.5, base_weight)
            vital_shift = 18.0 if child else 0.0

            # Conditions drive the first encounters; general visits fill in.
            plans: list[tuple[int, str, ConditionCode | None]] = []
            has: set[str] = set()
            for candidate in conds_table:
                if (
                    candidate.min_age <= age <= candidate.max_age
                    and random_() < candidate.prevalence
                    and (female or not candidate.female_only)
                ):
                    dept = candidate.department
                    if child and dept not in CHILD_SAFE_DEPARTMENTS:
                        dept = "PED"
                    day = randrange(days)
                    plans.append((day, dept, candidate))
                    has.add(candidate.code)
                    if random_() < candidate.follow_up:
                        later = day + randint(7, 90)
                        if later < days:
                            plans.append((later, dept, None))
            visits = choices(extra_visits, cum_weights=extra_cum)[0]
            if not plans:
                visits = max(1, visits)
            for _ in range(visits):
                if child:
                    dept = choices(child_codes, cum_weights=child_cum)[0]
                elif female and 18 <= age <= 45:
                    dept = choices(adult_codes, cum_weights=adult_cum)[0]
                else:
                    dept = choices(adult_no_obs, cum_weights=adult_no_obs_cum)[0]
                diagnoses = visit_diagnoses.get(dept)
                diagnosis = None
                if diagnoses and random_() < 0.55:
                    diagnosis = diagnoses[int(random_() * len(diagnoses))]
                    if not diagnosis.min_age <= age <= diagnosis.max_age:
                        diagnosis = None
                plans.append((randrange(days), dept, diagnosis))
            plans.sort(key=_plan_key)

            hypertensive = "38341003" in has
            diabetic = "44054006" in has
            affinity: dict[str, int] = {}
            team_depts: dict[str, tuple[dt.date, dt.date | None]] = {}
            last: Encounter | None = None
            for day, dept, cond in plans:
                day_ord = start_ord + day
                attending = affinity.get(dept)
                if attending is None or not hire[attending] <= day_ord < term[attending]:
                    attending = pick(physicians[dept], day_ord)
                    if attending is None:
                        attending = pick(all_physicians, day_ord)
                        if attending is None:
                            continue
                    affinity[dept] = attending
                team = [attending]
                if dept == "ED":
                    klass: EncounterClass = "emergency"
                    begin = base + td(days=day, minutes=randrange(1440))
                    finish = begin + td(minutes=randint(60, 480))
                elif dept != "RAD" and random_() < 0.07:
                    klass = "inpatient"
                    begin = base + td(days=day, minutes=randrange(360, 1200))
                    finish = begin + td(days=randint(1, 8), minutes=randrange(600))
                else:
                    klass = "ambulatory"
                    begin = base + td(days=day, minutes=480 + 15 * randrange(36))
                    finish = begin + td(minutes=15 * randint(1, 4))
                nurse_pool = nurses[dept]
                if nurse_pool and (klass != "ambulatory" or random_() < 0.75):
                    nurse = pick(nurse_pool, day_ord)
                    if nurse is not None:
                        team.append(nurse)
                        if klass == "inpatient" and random_() < 0.6:
                            second = pick(nurse_pool, day_ord)
                            if second is not None and second not in team:
                                team.append(second)
                if random_() < (0.25 if klass == "inpatient" else 0.04):
                    other = clinical_codes[int(random_() * len(clinical_codes))]
                    if other != dept:
                        consultant = pick(physicians[other], day_ord)
                        if consultant is not None and consultant not in team:
                            team.append(consultant)
                encounter = Encounter(
                    new_encounter(),
                    pid,
                    dept_id[dept],
                    tuple(user[i] for i in team),
                    begin,
                    finish,
                    klass,
                )
                add_encounter(encounter)
                last = encounter
                eid = encounter.id

                # Vitals at every encounter, labs when the visit or condition calls for them.
                add_observation(
                    Observation(
                        new_observation(),
                        pid,
                        eid,
                        hr.code,
                        hr.display,
                        hr.category,
                        measure(hr, vital_shift),
                        hr.unit,
                        begin,
                        None,
                    )
                )
                shift = 16.0 if hypertensive else (-15.0 if child else 0.0)
                add_observation(
                    Observation(
                        new_observation(),
                        pid,
                        eid,
                        sbp.code,
                        sbp.display,
                        sbp.category,
                        measure(sbp, shift),
                        sbp.unit,
                        begin,
                        None,
                    )
                )
                add_observation(
                    Observation(
                        new_observation(),
                        pid,
                        eid,
                        dbp.code,
                        dbp.display,
                        dbp.category,
                        measure(dbp, shift / 2),
                        dbp.unit,
                        begin,
                        None,
                    )
                )
                if child or random_() < 0.4:
                    value = round(max(2.5, base_weight + gauss(0, 1.0)), 1)
                    add_observation(
                        Observation(
                            new_observation(),
                            pid,
                            eid,
                            weight_code.code,
                            weight_code.display,
                            weight_code.category,
                            value,
                            weight_code.unit,
                            begin,
                            None,
                        )
                    )
                acute = klass != "ambulatory"
                extra: list[tuple[ObservationCode, float]] = []
                if acute or (cond is not None and cond.code == "195662009"):
                    extra.append((temp, 0.8 if cond is not None and not cond.chronic else 0.0))
                if acute:
                    extra.append((spo2, 0.0))
                    extra.append((resp, 0.0))
                labs: list[tuple[ObservationCode, float]] = []
                if klass == "inpatient":
                    labs.extend((lab, 0.0) for lab in routine)
                elif random_() < 0.15:
                    labs.append((routine[int(random_() * len(routine))], 0.0))
                if cond is not None:
                    if cond.code == "44054006":
                        labs.append((codes.GLUCOSE, 55.0))
                        labs.append((codes.HBA1C, 1.9))
                    elif cond.code in ("55822004", "38341003"):
                        labs.append((codes.CHOLESTEROL, 25.0))
                    elif cond.code == "86406008":
                        labs.append((codes.HIV_VIRAL_LOAD, 0.0))
                elif diabetic and random_() < 0.3:
                    labs.append((codes.GLUCOSE, 50.0))
                for code, code_shift in extra:
                    add_observation(
                        Observation(
                            new_observation(),
                            pid,
                            eid,
                            code.code,
                            code.display,
                            code.category,
                            measure(code, code_shift),
                            code.unit,
                            begin,
                            code.sensitivity,
                        )
                    )
                lab_time = begin + thirty_min
                for code, code_shift in labs:
                    add_observation(
                        Observation(
                            new_observation(),
                            pid,
                            eid,
                            code.code,
                            code.display,
                            code.category,
                            measure(code, code_shift),
                            code.unit,
                            lab_time,
                            code.sensitivity,
                        )
                    )

                if cond is not None:
                    low, high = cond.onset_days_before
                    onset = max(birth_ord, day_ord - randint(low, high))
                    conditions.append(
                        Condition(
                            new_condition(),
                            pid,
                            eid,
                            user[attending],
                            cond.code,
                            cond.display,
                            dt.date.fromordinal(onset),
                            "active" if cond.chronic else "resolved",
                            cond.sensitivity,
                        )
                    )
                    if cond.chronic and dept not in team_depts and random_() < 0.6:
                        team_depts[dept] = (begin.date(), None)
                if klass == "inpatient" and dept not in team_depts:
                    team_depts[dept] = (begin.date(), finish.date())
                if klass == "ambulatory" and dept != "RAD" and random_() < 0.5:
                    appointments.append(
                        Appointment(
                            new_appointment(),
                            pid,
                            user[attending],
                            dept_id[dept],
                            begin,
                            finish,
                            "fulfilled",
                        )
                    )

            for dept, (team_start, team_end) in team_depts.items():
                day_ord = team_start.toordinal()
                lead: int | None = affinity[dept]
                if lead is None or not hire[lead] <= day_ord < term[lead]:
                    lead = pick(physicians[dept], day_ord)
                    if lead is None:
                        lead = pick(all_physicians, day_ord)
                        if lead is None:
                            continue
                members = [lead]
                for _ in range(randint(1, 2)):
                    nurse = pick(nurses[dept], day_ord)
                    if nurse is not None and nurse not in members:
                        members.append(nurse)
                care_teams.append(
                    CareTeam(
                        new_care_team(),
                        pid,
                        tuple(user[i] for i in members),
                        dept_id[dept],
                        team_start,
                        team_end,
                    )
                )

            if last is not None and random_() < 0.35:
                day = (last.start.toordinal() - start_ord) + randint(14, 90)
                dept = code_of[last.department_id]
                doctor = pick(physicians[dept], start_ord + day)
                if doctor is not None:
                    begin = base + td(days=day, minutes=480 + 15 * randrange(36))
                    status: AppointmentStatus
                    if day >= days:
                        status = "booked"
                    else:
                        status = "noshow" if random_() < 0.5 else "cancelled"
                    appointments.append(
                        Appointment(
                            new_appointment(),
                            pid,
                            user[doctor],
                            last.department_id,
                            begin,
                            begin + td(minutes=30),
                            status,
                        )
                    )


def _plan_key(plan: tuple[int, str, ConditionCode | None]) -> int:
    return plan[0]


def _fake_npi(rng: random.Random) -> str:
    """Ten digits with a valid NPI check digit, but a leading 9 no real NPI has."""
    body = f"9{rng.randrange(10**8):08d}"
    return body + str(_luhn_check_digit("80840" + body))


def _luhn_check_digit(digits: str) -> int:
    total = 0
    for position, char in enumerate(reversed(digits)):
        d = int(char)
        if position % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10

"""The generated hospital: determinism, proportions and the social structure that later
snooping scenarios rely on (households, neighbours, employee-patients, care)."""

from __future__ import annotations

import csv
import itertools
import os
import re
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from phiguard.synth import (
    CONDITIONS,
    DEPARTMENTS,
    ROLES,
    Hospital,
    default_staff,
    generate_hospital,
    write_roster_csv,
)
from phiguard.synth.codes import CONDITION_BY_CODE, OBSERVATIONS
from phiguard.synth.ids import NAMESPACE, IdFactory


@pytest.fixture(scope="module")
def hospital() -> Hospital:
    return generate_hospital(seed=11, patients=3000)


@pytest.fixture(scope="module")
def small() -> Hospital:
    return generate_hospital(seed=5, patients=50)


# -- determinism ---------------------------------------------------------------------


def test_same_seed_same_hospital() -> None:
    assert generate_hospital(seed=3, patients=300) == generate_hospital(seed=3, patients=300)


def test_different_seed_different_hospital() -> None:
    a = generate_hospital(seed=3, patients=300)
    b = generate_hospital(seed=4, patients=300)
    assert a != b
    assert {p.patient_id for p in a.patients}.isdisjoint(p.patient_id for p in b.patients)
    assert [p.family_name for p in a.patients] != [p.family_name for p in b.patients]


def test_arguments_change_the_hospital() -> None:
    base = generate_hospital(seed=3, patients=100)
    assert base != generate_hospital(seed=3, patients=100, days=200)
    assert base != generate_hospital(seed=3, patients=100, staff=30)


def test_ids_are_uuid5_of_seed_and_counter(small: Hospital) -> None:
    first = small.patients[0].patient_id
    assert first == str(uuid.uuid5(NAMESPACE, "5:patient:0"))
    assert uuid.UUID(small.encounters[0].id).version == 5
    factory = IdFactory(42)
    assert [factory.new("x") for _ in range(3)] == [
        str(uuid.uuid5(NAMESPACE, f"42:x:{n}")) for n in range(3)
    ]


def test_ids_are_unique(hospital: Hospital) -> None:
    ids = [
        *(d.id for d in hospital.departments),
        *(s.practitioner_id for s in hospital.staff),
        *(s.practitioner_role_id for s in hospital.staff),
        *(p.patient_id for p in hospital.patients),
        *(h.id for h in hospital.households),
        *(e.id for e in hospital.encounters),
        *(a.id for a in hospital.appointments),
        *(t.id for t in hospital.care_teams),
        *(c.id for c in hospital.conditions),
        *(o.id for o in hospital.observations),
        hospital.organization_id,
    ]
    assert len(ids) == len(set(ids))


# -- sizes and proportions -------------------------------------------------------------


def test_counts(hospital: Hospital, small: Hospital) -> None:
    assert len(hospital.patients) == 3000
    assert len(hospital.staff) == default_staff(3000) == 150
    assert len(small.staff) == 20
    assert len(generate_hospital(seed=1, patients=10, staff=40).staff) == 40
    assert [d.code for d in hospital.departments] == [code for code, _, _ in DEPARTMENTS]


def test_rejects_impossible_arguments() -> None:
    with pytest.raises(ValueError, match="staff"):
        generate_hospital(seed=1, patients=10, staff=5)
    with pytest.raises(ValueError, match="patients"):
        generate_hospital(seed=1, patients=0)
    with pytest.raises(ValueError, match="days"):
        generate_hospital(seed=1, patients=10, days=0)


def test_proportions(hospital: Hospital, small: Hospital) -> None:
    staff = hospital.staff
    assert sum(p.vip for p in hospital.patients) == 15
    assert sum(p.vip for p in small.patients) == 1
    assert sum(s.patient_id is not None for s in staff) == 45
    terminated = [s for s in staff if s.termination_date is not None]
    assert len(terminated) == round(0.03 * len(staff))
    for member in terminated:
        assert member.termination_date is not None
        assert hospital.start < member.termination_date < hospital.end
        assert member.hire_date < member.termination_date
    roles = Counter(s.role for s in staff)
    assert set(roles) == set(ROLES)
    assert roles["nurse"] > roles["physician"] > roles["privacy_officer"]


def test_every_department_is_staffed(small: Hospital) -> None:
    by_department = Counter((s.department_id, s.role) for s in small.staff)
    for department in small.departments:
        if department.clinical:
            assert by_department[department.id, "physician"] >= 1
        else:
            assert sum(n for (d, _), n in by_department.items() if d == department.id) >= 1


def test_identifier_formats(hospital: Hospital) -> None:
    mrns = [p.mrn for p in hospital.patients]
    assert mrns == [f"MRN{n:07d}" for n in range(1, len(mrns) + 1)]
    ssns = [p.ssn for p in hospital.patients]
    assert len(set(ssns)) == len(ssns)
    assert all(re.fullmatch(r"999-\d\d-\d{4}", ssn) for ssn in ssns)
    assert all(re.fullmatch(r"555-\d{3}-\d{4}", p.phone) for p in hospital.patients)
    assert all(re.fullmatch(r"u\d{5}", s.user_id) for s in hospital.staff)
    assert all(int(p.postal_code) < 500 for p in hospital.patients)
    npis = [s.npi for s in hospital.staff]
    assert len(set(npis)) == len(npis)
    assert all(re.fullmatch(r"9\d{9}", npi) and _luhn_ok("80840" + npi) for npi in npis)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        d = int(char) * (2 if position % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_mrn_order_is_not_household_order(hospital: Hospital) -> None:
    """Family members must not sit on consecutive MRNs, or family snooping would look
    like MRN browsing (and vice versa)."""
    adjacent_same_household = sum(
        a.household_id == b.household_id for a, b in itertools.pairwise(hospital.patients)
    )
    assert adjacent_same_household < len(hospital.patients) * 0.01


def test_surnames_follow_a_skewed_distribution(hospital: Hospital) -> None:
    counts = Counter(p.family_name for p in hospital.patients).most_common()
    top = counts[0][1]
    median = counts[len(counts) // 2][1]
    assert top >= 10 * median
    assert len(counts) > 300


def test_ages_and_genders(hospital: Hospital) -> None:
    ages = [(hospital.start - p.birth_date).days // 365 for p in hospital.patients]
    assert min(ages) >= 0 and max(ages) <= 99
    assert 0.08 < sum(a < 18 for a in ages) / len(ages) < 0.3
    genders = Counter(p.gender for p in hospital.patients)
    assert abs(genders["female"] - genders["male"]) < len(hospital.patients) * 0.1


# -- households, neighbours, staff at home ---------------------------------------------


def test_households_share_address(hospital: Hospital) -> None:
    for household in hospital.households:
        assert len(household.patient_ids) <= 5
        assert household.patient_ids or household.staff_user_ids
        for pid in household.patient_ids:
            patient = hospital.patient_by_id[pid]
            assert patient.household_id == household.id
            assert (patient.address, patient.city, patient.postal_code) == (
                household.address,
                household.city,
                household.postal_code,
            )
        for user_id in household.staff_user_ids:
            member = hospital.staff_by_user_id[user_id]
            assert member.household_id == household.id
            assert (member.address, member.postal_code) == (
                household.address,
                household.postal_code,
            )


def test_household_sizes_and_surnames(hospital: Hospital) -> None:
    sizes = Counter(len(h.patient_ids) for h in hospital.households if h.patient_ids)
    assert set(sizes) == {1, 2, 3, 4, 5}
    multi = [h for h in hospital.households if len(h.patient_ids) > 1]
    surnames = [{hospital.patient_by_id[p].family_name for p in h.patient_ids} for h in multi]
    mixed = sum(len(s) > 1 for s in surnames)
    assert 0.05 * len(multi) < mixed < 0.3 * len(multi)


def test_addresses_are_unique_per_household(hospital: Hospital) -> None:
    keys = [(h.street, h.house_number, h.postal_code) for h in hospital.households]
    assert len(keys) == len(set(keys))


def test_neighbours(hospital: Hospital) -> None:
    household = hospital.households[0]
    neighbours = hospital.neighbours(household.id)
    assert neighbours
    for other in neighbours:
        assert (other.street, other.postal_code) == (household.street, household.postal_code)
        assert other.house_number != household.house_number
    near = hospital.neighbours(household.id, distance=10)
    assert all(abs(h.house_number - household.house_number) <= 10 for h in near)
    with_neighbours = sum(bool(hospital.neighbours(h.id)) for h in hospital.households[:200])
    assert with_neighbours > 190


def test_employee_patients_link_both_ways(hospital: Hospital) -> None:
    employees = [s for s in hospital.staff if s.patient_id is not None]
    assert employees
    for member in employees:
        assert member.patient_id is not None
        patient = hospital.patient_by_id[member.patient_id]
        assert hospital.staff_by_patient_id[patient.patient_id] is member
        assert (patient.family_name, patient.given_name) == (member.family_name, member.given_name)
        assert patient.household_id == member.household_id
        assert member.user_id in hospital.household_by_id[patient.household_id].staff_user_ids
        assert (hospital.start - patient.birth_date).days >= 18 * 365


def test_staff_live_with_patient_relatives(hospital: Hospital) -> None:
    relatives = [
        s
        for s in hospital.staff
        if s.patient_id is None and hospital.household_by_id[s.household_id].patient_ids
    ]
    assert len(relatives) >= 0.1 * len(hospital.staff)
    same_surname = sum(
        any(
            hospital.patient_by_id[p].family_name == s.family_name
            for p in hospital.household_by_id[s.household_id].patient_ids
        )
        for s in relatives
    )
    assert same_surname > 0.6 * len(relatives)
    alone = [s for s in hospital.staff if not hospital.household_by_id[s.household_id].patient_ids]
    assert alone


# -- care and clinical data --------------------------------------------------------------


def test_every_patient_has_an_encounter(hospital: Hospital, small: Hospital) -> None:
    for h in (hospital, small):
        assert set(h.encounters_by_patient) == set(h.patient_by_id)


def test_encounters_are_staffed_by_active_clinicians(hospital: Hospital) -> None:
    in_department = total = 0
    for encounter in hospital.encounters:
        assert encounter.user_ids
        assert hospital.start <= encounter.start.date() < hospital.end
        assert encounter.end > encounter.start
        assert encounter.start.tzinfo is not None
        attending = hospital.staff_by_user_id[encounter.user_ids[0]]
        assert attending.role == "physician"
        for user_id in encounter.user_ids:
            member = hospital.staff_by_user_id[user_id]
            assert member.role in ("physician", "nurse")
            assert member.active_on(encounter.start.date())
            total += 1
            in_department += member.department_id == encounter.department_id
    assert in_department / total > 0.9


def test_encounter_departments_and_classes(hospital: Hospital) -> None:
    classes = Counter(e.encounter_class for e in hospital.encounters)
    assert set(classes) == {"ambulatory", "emergency", "inpatient"}
    emergency = hospital.department_by_code["ED"].id
    for encounter in hospital.encounters:
        assert (encounter.department_id == emergency) == (encounter.encounter_class == "emergency")
        assert hospital.department_by_id[encounter.department_id].clinical
    pediatrics = hospital.department_by_code["PED"].id
    for encounter in hospital.encounters:
        if encounter.department_id == pediatrics:
            patient = hospital.patient_by_id[encounter.patient_id]
            assert (encounter.start.date() - patient.birth_date).days < 19 * 365


def test_conditions(hospital: Hospital) -> None:
    per_patient = len(hospital.conditions) / len(hospital.patients)
    assert 0.7 < per_patient < 3
    sensitivities = Counter(c.sensitivity for c in hospital.conditions)
    assert set(sensitivities) == {None, "mental-health", "hiv", "substance-use", "reproductive"}
    for condition in hospital.conditions:
        encounter = hospital.encounter_by_id[condition.encounter_id]
        assert encounter.patient_id == condition.patient_id
        assert condition.recorder_user_id == encounter.user_ids[0]
        assert condition.onset <= encounter.start.date()
        known = CONDITION_BY_CODE[condition.code]
        assert condition.sensitivity == known.sensitivity
        patient = hospital.patient_by_id[condition.patient_id]
        assert condition.onset >= patient.birth_date
        if known.female_only:
            assert patient.gender == "female"
    required = {"44054006", "38341003", "195662009", "35489007", "86406008", "66590003"}
    assert required <= {c.code for c in CONDITIONS}


def test_observations(hospital: Hospital) -> None:
    codes = {o.code: o for o in OBSERVATIONS}
    assert {"8867-4", "8480-6", "2339-0", "29463-7"} <= set(codes)
    for observation in hospital.observations:
        encounter = hospital.encounter_by_id[observation.encounter_id]
        assert observation.patient_id == encounter.patient_id
        known = codes[observation.code]
        assert known.low <= observation.value <= known.high
        assert observation.unit == known.unit
        assert observation.category == known.category
        assert observation.sensitivity == known.sensitivity
    per_encounter = len(hospital.observations) / len(hospital.encounters)
    assert 3 <= per_encounter < 8


def test_care_teams_and_appointments(hospital: Hospital) -> None:
    assert hospital.care_teams and hospital.appointments
    for team in hospital.care_teams:
        assert team.user_ids
        assert team.end is None or team.end >= team.start
        for user_id in team.user_ids:
            assert hospital.staff_by_user_id[user_id].active_on(team.start)
    statuses = Counter(a.status for a in hospital.appointments)
    assert statuses["fulfilled"] and statuses["booked"]
    for appointment in hospital.appointments:
        assert appointment.end > appointment.start
        assert appointment.patient_id in hospital.patient_by_id
        assert hospital.staff_by_user_id[appointment.user_id].active_on(appointment.start.date())
        assert (appointment.status == "booked") == (appointment.start.date() >= hospital.end)


# -- CSV roster --------------------------------------------------------------------------


def test_roster_csv(small: Hospital, tmp_path: Path) -> None:
    paths = write_roster_csv(small, tmp_path / "roster")
    assert [p.name for p in paths] == ["staff.csv", "patients.csv", "care.csv"]
    rows = {p.name: list(csv.reader(p.open(newline="", encoding="utf-8"))) for p in paths}
    assert rows["staff.csv"][0] == [
        "user_id", "family_name", "given_name", "role", "department", "address", "postal_code",
        "hire_date", "termination_date", "patient_id",
    ]  # fmt: skip
    assert rows["patients.csv"][0] == [
        "patient_id", "mrn", "family_name", "given_name", "birth_date", "address",
        "postal_code", "vip",
    ]  # fmt: skip
    assert rows["care.csv"][0] == ["patient_id", "user_id", "department", "start", "end", "kind"]
    assert len(rows["staff.csv"]) == len(small.staff) + 1
    assert len(rows["patients.csv"]) == len(small.patients) + 1
    care = rows["care.csv"][1:]
    expected = (
        sum(len(e.user_ids) for e in small.encounters)
        + len(small.appointments)
        + sum(len(t.user_ids) for t in small.care_teams)
    )
    assert len(care) == expected
    assert {row[5] for row in care} == {"encounter", "appointment", "care_team"}
    names = {d.name for d in small.departments}
    assert all(row[2] in names for row in care)
    assert {row[7] for row in rows["patients.csv"][1:]} == {"true", "false"}
    terminated = [r for r in rows["staff.csv"][1:] if r[8]]
    assert len(terminated) == sum(s.termination_date is not None for s in small.staff)


_DIGEST_SCRIPT = """
import hashlib, json
from phiguard.synth import generate_hospital, to_fhir
digest = hashlib.sha256()
for resource in to_fhir(generate_hospital(seed=8, patients=200)):
    digest.update(json.dumps(resource, sort_keys=True).encode())
print(digest.hexdigest())
"""


def test_output_is_identical_across_processes() -> None:
    """String hashing is randomised per process; nothing may depend on set or hash order."""
    digests = {
        subprocess.run(
            [sys.executable, "-c", _DIGEST_SCRIPT],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(digests) == 1

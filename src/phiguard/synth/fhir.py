"""Conversion of a synthetic hospital to FHIR R4 resource dicts.

``to_fhir`` is a generator so a 100,000-patient hospital (over a million resources)
can be streamed into a store without materialising every dict.  Resources come in
dependency order (organizations, practitioners, roles, patients, encounters, then
what refers to encounters), so a loader that checks referential integrity never sees
a dangling reference.  Security labels follow HL7 conventions so access control can
act on them without knowing about ``synth``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from phiguard.synth import codes, names
from phiguard.synth.codes import Sensitivity
from phiguard.synth.model import (
    Appointment,
    CareTeam,
    Condition,
    Department,
    Encounter,
    Hospital,
    Observation,
    Patient,
    Role,
    StaffMember,
)

Resource = dict[str, Any]

STAFF_SYSTEM: Final = "urn:phiguard:staff"
MRN_SYSTEM: Final = "urn:phiguard:mrn"
DEPARTMENT_SYSTEM: Final = "urn:phiguard:department"
ROLE_SYSTEM: Final = "urn:phiguard:role"
FLAGS_SYSTEM: Final = "urn:phiguard:flags"
SSN_SYSTEM: Final = "http://hl7.org/fhir/sid/us-ssn"
NPI_SYSTEM: Final = "http://hl7.org/fhir/sid/us-npi"
ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY: Final = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
IDENTIFIER_TYPE: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
ORG_TYPE: Final = "http://terminology.hl7.org/CodeSystem/organization-type"
PARTICIPATION: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
OBS_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
COND_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/condition-category"
COND_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/condition-clinical"
COND_VERIFICATION: Final = "http://terminology.hl7.org/CodeSystem/condition-ver-status"

Coding = tuple[str, str, str]
"""(system, code, display); turned into fresh dicts per resource by ``_coding``."""

VIP_LABEL: Final[Coding] = (FLAGS_SYSTEM, "vip", "VIP patient")
EMPLOYEE_LABEL: Final[Coding] = (FLAGS_SYSTEM, "employee", "Patient is a member of staff")
RESTRICTED: Final[Coding] = (CONFIDENTIALITY, "R", "restricted")
SENSITIVITY_LABELS: Final[dict[Sensitivity, Coding]] = {
    "mental-health": (ACT_CODE, "PSY", "psychiatry information sensitivity"),
    "hiv": (ACT_CODE, "HIV", "HIV/AIDS information sensitivity"),
    "substance-use": (ACT_CODE, "SUD", "substance use disorder information sensitivity"),
    "reproductive": (ACT_CODE, "SEX", "sexuality and reproductive health information sensitivity"),
}
"""``meta.security`` per ``Sensitivity``; every sensitive resource is also marked ``R``."""

ROLE_DISPLAY: Final[dict[Role, str]] = {
    "physician": "Physician",
    "nurse": "Nurse",
    "registration": "Registration clerk",
    "billing": "Billing specialist",
    "him": "Health information management",
    "researcher": "Researcher",
    "privacy_officer": "Privacy officer",
    "security_admin": "Security administrator",
}
ENCOUNTER_CLASS: Final[dict[str, Coding]] = {
    "ambulatory": (ACT_CODE, "AMB", "ambulatory"),
    "emergency": (ACT_CODE, "EMER", "emergency"),
    "inpatient": (ACT_CODE, "IMP", "inpatient encounter"),
}
_PRIMARY_PERFORMER: Final[Coding] = (PARTICIPATION, "PPRF", "primary performer")
_PARTICIPANT: Final[Coding] = (PARTICIPATION, "PART", "Participation")
_MR_TYPE: Final[Coding] = (IDENTIFIER_TYPE, "MR", "Medical record number")
_SSN_TYPE: Final[Coding] = (IDENTIFIER_TYPE, "SS", "Social Security number")
_NPI_TYPE: Final[Coding] = (IDENTIFIER_TYPE, "NPI", "National provider identifier")
_CONDITION_STATUS: Final[dict[str, Coding]] = {
    "active": (COND_CLINICAL, "active", "Active"),
    "resolved": (COND_CLINICAL, "resolved", "Resolved"),
}
_CONFIRMED: Final[Coding] = (COND_VERIFICATION, "confirmed", "Confirmed")
_ENCOUNTER_DIAGNOSIS: Final[Coding] = (COND_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")
_OBS_CATEGORIES: Final[dict[str, Coding]] = {
    "vital-signs": (OBS_CATEGORY, "vital-signs", "Vital Signs"),
    "laboratory": (OBS_CATEGORY, "laboratory", "Laboratory"),
}
_PROVIDER: Final[Coding] = (ORG_TYPE, "prov", "Healthcare Provider")
_DEPARTMENT: Final[Coding] = (ORG_TYPE, "dept", "Hospital Department")


def _coding(coding: Coding) -> Resource:
    return {"system": coding[0], "code": coding[1], "display": coding[2]}


def _concept(coding: Coding, text: str | None = None) -> Resource:
    concept: Resource = {"coding": [{"system": coding[0], "code": coding[1], "display": coding[2]}]}
    if text is not None:
        concept["text"] = text
    return concept


def _ref(resource_type: str, resource_id: str) -> Resource:
    return {"reference": f"{resource_type}/{resource_id}"}


def to_fhir(hospital: Hospital) -> Iterator[Resource]:
    """Every resource of ``hospital``, referenced resources before their referrers.

    Each yielded dict is an independent tree (nothing shared with other resources or
    module constants), so an importer may annotate resources in place.
    """
    yield {
        "resourceType": "Organization",
        "id": hospital.organization_id,
        "active": True,
        "type": [_concept(_PROVIDER)],
        "name": hospital.name,
    }
    departments = {d.id: d for d in hospital.departments}
    for department in hospital.departments:
        yield _department(department, hospital.organization_id)
    for member in hospital.staff:
        yield _practitioner(member)
    for member in hospital.staff:
        yield _practitioner_role(member, departments[member.department_id])
    for patient in hospital.patients:
        yield _patient(
            patient, hospital.organization_id, patient.patient_id in hospital.staff_by_patient_id
        )
    practitioner = {s.user_id: s.practitioner_id for s in hospital.staff}
    for encounter in hospital.encounters:
        yield _encounter(encounter, practitioner)
    for appointment in hospital.appointments:
        yield _appointment(appointment, practitioner)
    for team in hospital.care_teams:
        yield _care_team(team, practitioner)
    for condition in hospital.conditions:
        yield _condition(condition, practitioner)
    for observation in hospital.observations:
        yield _observation(observation)


def _department(department: Department, organization_id: str) -> Resource:
    return {
        "resourceType": "Organization",
        "id": department.id,
        "active": True,
        "identifier": [{"system": DEPARTMENT_SYSTEM, "value": department.code}],
        "type": [_concept(_DEPARTMENT)],
        "name": department.name,
        "partOf": _ref("Organization", organization_id),
    }


def _address(line: str, city: str, postal_code: str) -> list[Resource]:
    return [
        {
            "use": "home",
            "line": [line],
            "city": city,
            "state": names.STATE,
            "postalCode": postal_code,
            "country": "US",
        }
    ]


def _practitioner(member: StaffMember) -> Resource:
    return {
        "resourceType": "Practitioner",
        "id": member.practitioner_id,
        "identifier": [
            {"use": "usual", "system": STAFF_SYSTEM, "value": member.user_id},
            {
                "use": "official",
                "type": _concept(_NPI_TYPE),
                "system": NPI_SYSTEM,
                "value": member.npi,
            },
        ],
        "active": member.termination_date is None,
        "name": [{"use": "official", "family": member.family_name, "given": [member.given_name]}],
        "telecom": [{"system": "phone", "value": member.phone, "use": "home"}],
        "address": _address(member.address, member.city, member.postal_code),
        "gender": member.gender,
    }


def _practitioner_role(member: StaffMember, department: Department) -> Resource:
    period = {"start": member.hire_date.isoformat()}
    if member.termination_date is not None:
        period["end"] = member.termination_date.isoformat()
    return {
        "resourceType": "PractitionerRole",
        "id": member.practitioner_role_id,
        "active": member.termination_date is None,
        "period": period,
        "practitioner": _ref("Practitioner", member.practitioner_id),
        "organization": {"reference": f"Organization/{department.id}", "display": department.name},
        "code": [_concept((ROLE_SYSTEM, member.role, ROLE_DISPLAY[member.role]))],
    }


def _patient(patient: Patient, organization_id: str, employee: bool = False) -> Resource:
    resource: Resource = {
        "resourceType": "Patient",
        "id": patient.patient_id,
        "identifier": [
            {
                "use": "usual",
                "type": _concept(_MR_TYPE),
                "system": MRN_SYSTEM,
                "value": patient.mrn,
            },
            {
                "use": "official",
                "type": _concept(_SSN_TYPE),
                "system": SSN_SYSTEM,
                "value": patient.ssn,
            },
        ],
        "active": True,
        "name": [{"use": "official", "family": patient.family_name, "given": [patient.given_name]}],
        "telecom": [{"system": "phone", "value": patient.phone, "use": "home"}],
        "gender": patient.gender,
        "birthDate": patient.birth_date.isoformat(),
        "address": _address(patient.address, patient.city, patient.postal_code),
        "managingOrganization": _ref("Organization", organization_id),
    }
    flags = [_coding(c) for c, on in ((VIP_LABEL, patient.vip), (EMPLOYEE_LABEL, employee)) if on]
    if flags:
        # Access control narrows the reach to VIPs and employee-patients.
        resource["meta"] = {"security": flags}
    return resource


def _encounter(encounter: Encounter, practitioner: dict[str, str]) -> Resource:
    participants = [
        {
            "type": [_concept(_PRIMARY_PERFORMER if i == 0 else _PARTICIPANT)],
            "individual": _ref("Practitioner", practitioner[user_id]),
        }
        for i, user_id in enumerate(encounter.user_ids)
    ]
    return {
        "resourceType": "Encounter",
        "id": encounter.id,
        "status": "finished",
        "class": _coding(ENCOUNTER_CLASS[encounter.encounter_class]),
        "subject": _ref("Patient", encounter.patient_id),
        "participant": participants,
        "period": {"start": encounter.start.isoformat(), "end": encounter.end.isoformat()},
        "serviceProvider": _ref("Organization", encounter.department_id),
    }


def _appointment(appointment: Appointment, practitioner: dict[str, str]) -> Resource:
    return {
        "resourceType": "Appointment",
        "id": appointment.id,
        "status": appointment.status,
        "start": appointment.start.isoformat(),
        "end": appointment.end.isoformat(),
        "participant": [
            {"actor": _ref("Patient", appointment.patient_id), "status": "accepted"},
            {
                "actor": _ref("Practitioner", practitioner[appointment.user_id]),
                "status": "accepted",
            },
        ],
        # Appointment has no organization element; this keeps the department findable.
        "supportingInformation": [_ref("Organization", appointment.department_id)],
    }


def _care_team(team: CareTeam, practitioner: dict[str, str]) -> Resource:
    period = {"start": team.start.isoformat()}
    if team.end is not None:
        period["end"] = team.end.isoformat()
    return {
        "resourceType": "CareTeam",
        "id": team.id,
        "status": "active" if team.end is None else "inactive",
        "subject": _ref("Patient", team.patient_id),
        "period": period,
        "participant": [
            {
                "member": _ref("Practitioner", practitioner[user_id]),
                "onBehalfOf": _ref("Organization", team.department_id),
            }
            for user_id in team.user_ids
        ],
        "managingOrganization": [_ref("Organization", team.department_id)],
    }


def _security(sensitivity: Sensitivity) -> Resource:
    return {"security": [_coding(SENSITIVITY_LABELS[sensitivity]), _coding(RESTRICTED)]}


def _condition(condition: Condition, practitioner: dict[str, str]) -> Resource:
    resource: Resource = {
        "resourceType": "Condition",
        "id": condition.id,
        "clinicalStatus": _concept(_CONDITION_STATUS[condition.clinical_status]),
        "verificationStatus": _concept(_CONFIRMED),
        "category": [_concept(_ENCOUNTER_DIAGNOSIS)],
        "code": _concept((codes.SNOMED, condition.code, condition.display), condition.display),
        "subject": _ref("Patient", condition.patient_id),
        "encounter": _ref("Encounter", condition.encounter_id),
        "onsetDateTime": condition.onset.isoformat(),
        "recorder": _ref("Practitioner", practitioner[condition.recorder_user_id]),
    }
    if condition.sensitivity is not None:
        resource["meta"] = _security(condition.sensitivity)
    return resource


def _observation(observation: Observation) -> Resource:
    resource: Resource = {
        "resourceType": "Observation",
        "id": observation.id,
        "status": "final",
        "category": [_concept(_OBS_CATEGORIES[observation.category])],
        "code": _concept((codes.LOINC, observation.code, observation.display), observation.display),
        "subject": _ref("Patient", observation.patient_id),
        "encounter": _ref("Encounter", observation.encounter_id),
        "effectiveDateTime": observation.effective.isoformat(),
        "valueQuantity": {
            "value": observation.value,
            "unit": observation.unit,
            "system": codes.UCUM,
            "code": observation.unit,
        },
    }
    if observation.sensitivity is not None:
        resource["meta"] = _security(observation.sensitivity)
    return resource


CONSENT_SCOPE: Final = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_CATEGORY: Final = "http://loinc.org"
PURPOSE_OF_USE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def consent_denying(
    consent_id: str,
    patient_id: str,
    *,
    practitioners: tuple[str, ...] = (),
    organizations: tuple[str, ...] = (),
    purposes: tuple[str, ...] = (),
    start: str | None = None,
    end: str | None = None,
    status: str = "active",
) -> Resource:
    """A privacy Consent that permits by default and denies the named people,
    organisations and/or purposes of use (all three empty: denies everyone).

    The synthetic hospital has no consent directives of its own; tests and demos add
    them with this, in the shape a patient portal would record them.
    """
    actors = [
        {
            "role": _concept((PARTICIPATION, "PRCP", "primary information recipient")),
            "reference": _ref("Practitioner", p),
        }
        for p in practitioners
    ] + [
        {
            "role": _concept((PARTICIPATION, "PRCP", "primary information recipient")),
            "reference": _ref("Organization", o),
        }
        for o in organizations
    ]
    deny: Resource = {"type": "deny"}
    if actors:
        deny["actor"] = actors
    if purposes:
        deny["purpose"] = [
            {"system": PURPOSE_OF_USE, "code": code, "display": code} for code in purposes
        ]
    if start or end:
        deny["period"] = {k: v for k, v in (("start", start), ("end", end)) if v}
    return {
        "resourceType": "Consent",
        "id": consent_id,
        "status": status,
        "scope": _concept((CONSENT_SCOPE, "patient-privacy", "Privacy Consent")),
        "category": [_concept((CONSENT_CATEGORY, "59284-0", "Patient Consent"))],
        "patient": _ref("Patient", patient_id),
        "policyRule": _concept(
            ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN", "opt-in")
        ),
        "provision": {"type": "permit", "provision": [deny]},
    }

"""Which patient a resource is about, and which resources it points at.

The patient compartment decides which data key seals a resource, which patient's
shredding destroys it, and (later) which patient's care relationships govern access.
The paths follow the FHIR Patient CompartmentDefinition for the resource types
phiguard serves; anything not about a patient lives in the shared compartment.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from phiguard.crypto.keyring import SHARED, patient_compartment

# Fields, in order of preference, whose Patient reference places a resource in a
# patient's compartment.
PATIENT_PATHS: dict[str, tuple[str, ...]] = {
    "AllergyIntolerance": ("patient",),
    "Appointment": ("participant.actor",),
    "CarePlan": ("subject",),
    "CareTeam": ("subject",),
    "Claim": ("patient",),
    "ClinicalImpression": ("subject",),
    "Communication": ("subject",),
    "Composition": ("subject",),
    "Condition": ("subject",),
    "Consent": ("patient",),
    "Coverage": ("beneficiary",),
    "DetectedIssue": ("patient",),
    "Device": ("patient",),
    "DiagnosticReport": ("subject",),
    "DocumentReference": ("subject",),
    "Encounter": ("subject",),
    "EpisodeOfCare": ("patient",),
    "ExplanationOfBenefit": ("patient",),
    "FamilyMemberHistory": ("patient",),
    "Flag": ("subject",),
    "Goal": ("subject",),
    "ImagingStudy": ("subject",),
    "Immunization": ("patient",),
    "MedicationAdministration": ("subject",),
    "MedicationDispense": ("subject",),
    "MedicationRequest": ("subject",),
    "MedicationStatement": ("subject",),
    "Observation": ("subject",),
    "Procedure": ("subject",),
    "Provenance": ("target",),
    "QuestionnaireResponse": ("subject",),
    "RelatedPerson": ("patient",),
    "ServiceRequest": ("subject",),
    "Specimen": ("subject",),
    "SupplyDelivery": ("patient",),
    "SupplyRequest": ("requester",),
}


def _values(node: Any, path: list[str]) -> Iterator[Any]:
    if not path:
        yield node
        return
    if isinstance(node, list):
        for item in node:
            yield from _values(item, path)
        return
    if isinstance(node, dict) and path[0] in node:
        yield from _values(node[path[0]], path[1:])


def patient_of(resource: dict[str, Any]) -> str | None:
    """The id of the patient a resource is about, or None."""
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        rid = resource.get("id")
        return str(rid) if rid else None
    for path in PATIENT_PATHS.get(str(rtype), ()):
        for ref in _values(resource, [*path.split("."), "reference"]):
            if isinstance(ref, str) and ref.startswith("Patient/"):
                return ref.split("/", 2)[1]
    return None


def compartment_of(resource: dict[str, Any]) -> str:
    patient = patient_of(resource)
    return patient_compartment(patient) if patient else SHARED


def iter_references(node: Any) -> list[tuple[dict[str, Any], str]]:
    """Every ``Reference.reference`` in a resource, with the dict holding it.

    Iterative, and a list rather than a generator: it runs over every resource of
    every import, twice, and recursion over deep FHIR trees dominated import time.
    """
    found: list[tuple[dict[str, Any], str]] = []
    stack = [node]
    pop, push = stack.pop, stack.append
    while stack:
        item = pop()
        if type(item) is dict:
            for key, value in item.items():
                kind = type(value)
                if kind is dict or kind is list:
                    push(value)
                elif key == "reference" and kind is str:
                    found.append((item, value))
        elif type(item) is list:
            for value in item:
                kind = type(value)
                if kind is dict or kind is list:
                    push(value)
    return found

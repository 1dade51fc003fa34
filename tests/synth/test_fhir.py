"""FHIR R4 output of the synthetic hospital: validity, ordering, references, labels."""

from __future__ import annotations

import dataclasses
import json
import types
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from phiguard.synth import Hospital, generate_hospital, to_fhir
from phiguard.synth.fhir import ACT_CODE, CONFIDENTIALITY, FLAGS_SYSTEM

Resource = dict[str, Any]

ORDER = [
    "Organization", "Practitioner", "PractitionerRole", "Patient", "Encounter", "Appointment",
    "CareTeam", "Condition", "Observation",
]  # fmt: skip


@pytest.fixture(scope="module")
def hospital() -> Hospital:
    return generate_hospital(seed=21, patients=50)


@pytest.fixture(scope="module")
def resources(hospital: Hospital) -> list[Resource]:
    return list(to_fhir(hospital))


@pytest.fixture(scope="module")
def labelled(hospital: Hospital) -> Hospital:
    """The small hospital with every sensitivity represented, so labels get validated."""
    kinds = ["mental-health", "hiv", "substance-use", "reproductive", None]
    conditions = [
        dataclasses.replace(c, sensitivity=kinds[i % len(kinds)])  # type: ignore[arg-type]
        for i, c in enumerate(hospital.conditions)
    ]
    return dataclasses.replace(hospital, conditions=conditions)


def _validate(resource: Resource) -> None:
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def test_every_resource_validates_against_r4b(resources: list[Resource]) -> None:
    for resource in resources:
        _validate(resource)
    assert set(Counter(r["resourceType"] for r in resources)) == set(ORDER)


def test_security_labels_validate(labelled: Hospital) -> None:
    for resource in to_fhir(labelled):
        if resource["resourceType"] == "Condition":
            _validate(resource)


def test_counts_match_the_model(hospital: Hospital, resources: list[Resource]) -> None:
    counts = Counter(r["resourceType"] for r in resources)
    assert counts == {
        "Organization": 1 + len(hospital.departments),
        "Practitioner": len(hospital.staff),
        "PractitionerRole": len(hospital.staff),
        "Patient": len(hospital.patients),
        "Encounter": len(hospital.encounters),
        "Appointment": len(hospital.appointments),
        "CareTeam": len(hospital.care_teams),
        "Condition": len(hospital.conditions),
        "Observation": len(hospital.observations),
    }


def test_streams_as_a_generator(hospital: Hospital) -> None:
    stream = to_fhir(hospital)
    assert isinstance(stream, types.GeneratorType)
    assert next(stream)["id"] == hospital.organization_id


def test_resource_types_come_in_dependency_order(resources: list[Resource]) -> None:
    ranks = [ORDER.index(r["resourceType"]) for r in resources]
    assert ranks == sorted(ranks)


def _references(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def test_references_point_at_earlier_resources(resources: list[Resource]) -> None:
    seen: set[str] = set()
    count = 0
    for resource in resources:
        for reference in _references(resource):
            assert reference in seen, f"{resource['resourceType']}/{resource['id']} -> {reference}"
            count += 1
        key = f"{resource['resourceType']}/{resource['id']}"
        assert key not in seen
        seen.add(key)
    assert count > len(resources)


def _containers(node: object) -> Iterator[int]:
    if isinstance(node, dict):
        yield id(node)
        for value in node.values():
            yield from _containers(value)
    elif isinstance(node, list):
        yield id(node)
        for item in node:
            yield from _containers(item)


def test_resources_share_no_mutable_structure(resources: list[Resource]) -> None:
    owner: dict[int, str] = {}
    for resource in resources:
        for container in set(_containers(resource)):
            assert container not in owner, f"{resource['id']} shares with {owner[container]}"
            owner[container] = resource["id"]


def test_is_json_serialisable(resources: list[Resource]) -> None:
    assert json.loads(json.dumps(resources)) == resources


def test_ids_match_the_model(hospital: Hospital, resources: list[Resource]) -> None:
    by_type: dict[str, set[str]] = {}
    for r in resources:
        by_type.setdefault(r["resourceType"], set()).add(r["id"])
    assert by_type["Patient"] == {p.patient_id for p in hospital.patients}
    assert by_type["Practitioner"] == {s.practitioner_id for s in hospital.staff}
    assert by_type["Encounter"] == {e.id for e in hospital.encounters}
    assert by_type["Organization"] == {hospital.organization_id} | {
        d.id for d in hospital.departments
    }


def test_patient_identifiers_and_vip_flag(hospital: Hospital, resources: list[Resource]) -> None:
    patients = {r["id"]: r for r in resources if r["resourceType"] == "Patient"}
    for patient in hospital.patients:
        resource = patients[patient.patient_id]
        mrn, ssn = resource["identifier"]
        assert mrn["system"] == "urn:phiguard:mrn" and mrn["value"] == patient.mrn
        assert mrn["type"]["coding"][0]["code"] == "MR"
        assert ssn["system"] == "http://hl7.org/fhir/sid/us-ssn" and ssn["value"] == patient.ssn
        assert resource["birthDate"] == patient.birth_date.isoformat()
        assert resource["address"][0]["postalCode"] == patient.postal_code
        labels = resource.get("meta", {}).get("security", [])
        assert ({"system": FLAGS_SYSTEM, "code": "vip"} in _system_codes(labels)) == patient.vip
    assert any(p.vip for p in hospital.patients)


def _system_codes(codings: list[Resource]) -> list[Resource]:
    return [{"system": c["system"], "code": c["code"]} for c in codings]


def test_practitioners_carry_user_ids(hospital: Hospital, resources: list[Resource]) -> None:
    practitioners = {r["id"]: r for r in resources if r["resourceType"] == "Practitioner"}
    roles = {r["id"]: r for r in resources if r["resourceType"] == "PractitionerRole"}
    for member in hospital.staff:
        identifiers = practitioners[member.practitioner_id]["identifier"]
        assert {"system": "urn:phiguard:staff", "value": member.user_id} in [
            {"system": i["system"], "value": i["value"]} for i in identifiers
        ]
        role = roles[member.practitioner_role_id]
        assert role["practitioner"]["reference"] == f"Practitioner/{member.practitioner_id}"
        assert role["organization"]["reference"] == f"Organization/{member.department_id}"
        assert role["code"][0]["coding"][0]["code"] == member.role
        assert ("end" in role["period"]) == (member.termination_date is not None)


def test_sensitive_conditions_are_labelled(labelled: Hospital) -> None:
    expected = {
        "mental-health": "PSY",
        "hiv": "HIV",
        "substance-use": "SUD",
        "reproductive": "SEX",
    }
    sensitivity = {c.id: c.sensitivity for c in labelled.conditions}
    for resource in to_fhir(labelled):
        if resource["resourceType"] != "Condition":
            continue
        kind = sensitivity[resource["id"]]
        if kind is None:
            assert "meta" not in resource
            continue
        labels = _system_codes(resource["meta"]["security"])
        assert {"system": ACT_CODE, "code": expected[kind]} in labels
        assert {"system": CONFIDENTIALITY, "code": "R"} in labels


def test_encounters_and_observations(hospital: Hospital, resources: list[Resource]) -> None:
    encounters = [r for r in resources if r["resourceType"] == "Encounter"]
    assert {e["class"]["code"] for e in encounters} <= {"AMB", "EMER", "IMP"}
    assert all(e["status"] == "finished" for e in encounters)
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    for observation in observations:
        assert observation["status"] == "final"
        assert observation["valueQuantity"]["system"] == "http://unitsofmeasure.org"
        assert observation["category"][0]["coding"][0]["code"] in ("vital-signs", "laboratory")
        assert observation["code"]["coding"][0]["system"] == "http://loinc.org"

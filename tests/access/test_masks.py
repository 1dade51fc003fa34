"""Field masks: the data next to the policies, the decision's obligations, apply_masks."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from phiguard.access.engine import PolicyEngine
from phiguard.access.facts import Facts, PatientFacts
from phiguard.access.masks import REDACTED, MaskRule, MaskTable, apply_masks, parse_path

SSN = "http://hl7.org/fhir/sid/us-ssn"
SSN_PATH = f"identifier[system={SSN}]"


def patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"versionId": "3"},
        "identifier": [
            {"system": "urn:phiguard:mrn", "value": "MRN-1"},
            {"system": SSN, "value": "999-12-3456"},
        ],
        "text": {"status": "generated", "div": "<div>Anna Example</div>"},
        "name": [{"family": "Example", "given": ["Anna"]}],
    }


def test_ssn_removed_mrn_kept_input_untouched() -> None:
    original = patient()
    before = copy.deepcopy(original)
    masked = apply_masks(original, [SSN_PATH])
    assert original == before
    assert masked["identifier"] == [{"system": "urn:phiguard:mrn", "value": "MRN-1"}]
    assert masked["meta"]["versionId"] == "3"
    assert REDACTED in masked["meta"]["security"]
    assert masked["name"] is original["name"]  # untouched branches are shared, not copied


def test_absent_paths_change_nothing_and_add_no_label() -> None:
    original = {"resourceType": "Observation", "status": "final"}
    assert apply_masks(original, ["text", "note", SSN_PATH, "subject.display"]) == original


def test_nested_paths_lists_and_empty_containers() -> None:
    obs = {
        "resourceType": "Observation",
        "subject": {"reference": "Patient/p1", "display": "Anna Example"},
        "performer": [{"reference": "Practitioner/x", "display": "Dr X"}],
        "note": [{"text": "feels low"}],
        "component": [{"code": {"text": "a"}, "note": "x"}, {"code": {"text": "b"}}],
    }
    masked = apply_masks(obs, ["subject.display", "note", "component.note", "performer"])
    assert masked["subject"] == {"reference": "Patient/p1"}
    assert "note" not in masked and "performer" not in masked
    assert masked["component"] == [{"code": {"text": "a"}}, {"code": {"text": "b"}}]
    # A dict left empty by masking is dropped (FHIR forbids empty elements).
    only = apply_masks({"subject": {"display": "Anna"}}, ["subject.display"], mark=False)
    assert only == {}
    # Removing every identifier removes the element.
    ssn_only = {"identifier": [{"system": SSN, "value": "999-00-0000"}]}
    assert apply_masks(ssn_only, [SSN_PATH], mark=False) == {}


def test_filter_then_descend_and_single_element() -> None:
    res = {"identifier": [{"system": SSN, "value": "1", "type": {"text": "SSN"}}, {"system": "x"}]}
    masked = apply_masks(res, [f"identifier[system={SSN}].value"], mark=False)
    assert masked == {"identifier": [{"system": SSN, "type": {"text": "SSN"}}, {"system": "x"}]}
    single = {"managingOrganization": {"reference": "Organization/o", "type": "Organization"}}
    out = apply_masks(single, ["managingOrganization[type=Organization]"], mark=False)
    assert out == {}


def test_redacted_label_not_duplicated() -> None:
    once = apply_masks(patient(), [SSN_PATH])
    twice = apply_masks({**once, "text": {"div": "x"}}, ["text"])
    assert [c["code"] for c in twice["meta"]["security"]].count("REDACTED") == 1


@pytest.mark.parametrize("bad", ["", ".a", "a.", "a..b", "a[b]", "a[=x]", "1a", "a b"])
def test_bad_paths(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_path(bad)


def test_path_with_dotted_value() -> None:
    steps = parse_path(f"{SSN_PATH}.value")
    assert [s.name for s in steps] == ["identifier", "value"]
    assert steps[0].value == SSN


def test_intersection_over_permits() -> None:
    table = MaskTable(
        [
            MaskRule("a", "", frozenset({"p1"}), frozenset(), ("text", "note")),
            MaskRule("b", "", frozenset({"p2"}), frozenset({"Observation"}), ("note",)),
        ]
    )
    assert table.fields_for(["p1"], "Observation") == ("note", "text")
    assert table.fields_for(["p1", "p2"], "Observation") == ("note",)
    assert table.fields_for(["p1", "p2"], "Encounter") == ()  # p2 shows everything there
    assert table.fields_for(["p3"], "Observation") == ()
    assert table.fields_for([], "Observation") == ()


def test_decisions_carry_the_masks(engine: PolicyEngine) -> None:
    clinician = engine.decide(
        Facts("read", "Patient", frozenset({"nurse"}), patient=PatientFacts(), on_care_team=True)
    )
    assert clinician.allowed and clinician.masked_fields == (SSN_PATH,)
    registration = engine.decide(
        Facts("read", "Patient", frozenset({"registration"}), patient=PatientFacts())
    )
    assert registration.allowed and registration.masked_fields == ()
    billing = engine.decide(
        Facts("read", "Encounter", frozenset({"billing"}), patient=PatientFacts(), purpose="HPAYMT")
    )
    assert billing.masked_fields == ("note", "text")
    # A physician who also works in billing sees the narrative through the clinical permit.
    both = engine.decide(
        Facts(
            "read",
            "Encounter",
            frozenset({"billing", "physician"}),
            patient=PatientFacts(),
            purpose="TREAT",
            on_care_team=True,
        )
    )
    assert both.allowed and both.masked_fields == ()
    research = engine.decide(
        Facts("search", "Observation", frozenset({"researcher"}), purpose="HRESCH")
    )
    assert "subject.display" in research.masked_fields and "text" in research.masked_fields
    denied = engine.decide(Facts("read", "Claim", frozenset({"nurse"}), patient=PatientFacts()))
    assert not denied.allowed and denied.masked_fields == ()


def test_masks_applied_to_a_billing_encounter(engine: PolicyEngine) -> None:
    encounter = {
        "resourceType": "Encounter",
        "status": "finished",
        "text": {"status": "generated", "div": "<div>psychiatric admission</div>"},
        "note": [{"text": "details"}],
        "subject": {"reference": "Patient/p1"},
    }
    decision = engine.decide(
        Facts("read", "Encounter", frozenset({"billing"}), patient=PatientFacts(), purpose="HPAYMT")
    )
    masked = apply_masks(encounter, decision.masked_fields)
    assert "text" not in masked and "note" not in masked
    assert masked["subject"] == {"reference": "Patient/p1"}

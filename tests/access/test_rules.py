"""Each rule of docs/access.md by example: the matrix in words."""

from __future__ import annotations

import pytest

from phiguard.access.engine import DEFAULT_DENY, UNKNOWN_ACTION, PolicyEngine
from phiguard.access.facts import Facts, PatientFacts

PATIENT = PatientFacts("cardiology")
VIP = PatientFacts("cardiology", vip=True)
STAFF = PatientFacts("cardiology", employee=True)
PHYSICIAN = frozenset({"physician"})
NURSE = frozenset({"nurse"})


def decide(engine: PolicyEngine, **kw: object) -> tuple[bool, tuple[str, ...]]:
    d = engine.decide(Facts(**kw))  # type: ignore[arg-type]
    return d.allowed, d.reasons


@pytest.mark.parametrize("roles", [PHYSICIAN, NURSE])
@pytest.mark.parametrize("action", ["read", "search", "history", "everything", "create", "update"])
def test_clinicians_treat_patients_they_care_for(
    engine: PolicyEngine, roles: frozenset[str], action: str
) -> None:
    base = {"action": action, "resource_type": "Observation", "roles": roles, "patient": PATIENT}
    assert decide(engine, **base, on_care_team=True) == (True, ("clinician-direct-care",))
    assert decide(engine, **base, recent_encounter=True) == (True, ("clinician-direct-care",))
    assert decide(engine, **base, department_match=True) == (True, ("clinician-department",))
    assert decide(engine, **base) == (False, (DEFAULT_DENY,))  # none, or expired
    assert decide(engine, **base, on_care_team=True, purpose="HOPERAT")[0] is False


def test_clinicians_do_not_delete_or_export(engine: PolicyEngine) -> None:
    for action in ("delete", "export"):
        assert not decide(
            engine,
            action=action,
            resource_type="Observation",
            roles=PHYSICIAN,
            patient=PATIENT,
            on_care_team=True,
        )[0]


def test_clinicians_see_no_billing_data(engine: PolicyEngine) -> None:
    for rtype in ("Claim", "ExplanationOfBenefit", "Coverage"):
        assert not decide(
            engine,
            action="read",
            resource_type=rtype,
            roles=PHYSICIAN,
            patient=PATIENT,
            on_care_team=True,
        )[0]


def test_type_level_search_then_per_result(engine: PolicyEngine) -> None:
    assert decide(engine, action="search", resource_type="Observation", roles=NURSE) == (
        True,
        ("clinician-search",),
    )
    assert not decide(engine, action="read", resource_type="Observation", roles=NURSE)[0]


def test_vip_and_employee_patients_need_team_or_encounter(engine: PolicyEngine) -> None:
    for patient in (VIP, STAFF):
        base = {
            "action": "read",
            "resource_type": "Condition",
            "roles": PHYSICIAN,
            "patient": patient,
        }
        assert decide(engine, **base, department_match=True) == (False, (DEFAULT_DENY,))
        assert decide(engine, **base, department_match=True, recent_encounter=True)[0]
        assert decide(engine, **base, on_care_team=True)[0]


@pytest.mark.parametrize("label", ["PSY", "HIV", "SUD", "SEX", "R", "V"])
def test_sensitive_labels_need_direct_care(engine: PolicyEngine, label: str) -> None:
    base = {
        "action": "read",
        "resource_type": "Condition",
        "roles": PHYSICIAN,
        "patient": PATIENT,
        "labels": frozenset({label}),
    }
    assert decide(engine, **base, department_match=True) == (
        False,
        ("sensitive-needs-direct-care",),
    )
    assert decide(engine, **base, on_care_team=True)[0]
    assert decide(engine, **base, recent_encounter=True)[0]
    # HIM reads everything for operations, but not restricted records.
    him = {**base, "roles": frozenset({"him"}), "purpose": "HOPERAT"}
    assert decide(engine, **him) == (False, ("sensitive-needs-direct-care",))
    po = {**base, "roles": frozenset({"privacy_officer"}), "purpose": "HOPERAT"}
    assert decide(engine, **po) == (True, ("privacy-officer-audit",))


def test_break_the_glass(engine: PolicyEngine) -> None:
    base = {
        "action": "read",
        "resource_type": "Condition",
        "roles": PHYSICIAN,
        "patient": VIP,
        "labels": frozenset({"PSY", "R"}),
        "consent_denied": True,
    }
    for purpose in ("ETREAT", "BTG"):
        assert decide(engine, **base, purpose=purpose, break_glass=True) == (
            True,
            ("clinician-break-glass",),
        )
    # The flag without an emergency purpose, or the purpose without the flag, is nothing.
    assert not decide(engine, **base, purpose="TREAT", break_glass=True)[0]
    assert not decide(engine, **base, purpose="ETREAT")[0]
    # Break-the-glass is for reading: no writes, and not for other roles.
    assert not decide(engine, **{**base, "action": "update"}, purpose="BTG", break_glass=True)[0]
    billing = {**base, "roles": frozenset({"billing"})}
    assert not decide(engine, **billing, purpose="BTG", break_glass=True)[0]


def test_registration_demographics_only(engine: PolicyEngine) -> None:
    reg = frozenset({"registration"})
    for rtype in ("Patient", "Coverage", "Appointment"):
        for action in ("read", "search", "create", "update"):
            assert decide(engine, action=action, resource_type=rtype, roles=reg, patient=PATIENT)[0]
        assert not decide(engine, action="delete", resource_type=rtype, roles=reg, patient=PATIENT)[
            0
        ]
    for rtype in ("Observation", "Condition", "Encounter", "Claim"):
        assert not decide(engine, action="read", resource_type=rtype, roles=reg, patient=PATIENT)[0]
    assert not decide(
        engine, action="everything", resource_type="Patient", roles=reg, patient=PATIENT
    )[0]


def test_billing_for_payment_only(engine: PolicyEngine) -> None:
    billing = frozenset({"billing"})
    for rtype in ("Claim", "ExplanationOfBenefit", "Coverage", "Encounter"):
        ok = decide(
            engine,
            action="read",
            resource_type=rtype,
            roles=billing,
            patient=PATIENT,
            purpose="HPAYMT",
        )
        assert ok == (True, ("billing-payment",))
        assert not decide(
            engine,
            action="read",
            resource_type=rtype,
            roles=billing,
            patient=PATIENT,
            purpose="TREAT",
        )[0]
    for rtype in ("Observation", "Condition", "Patient"):
        assert not decide(
            engine,
            action="read",
            resource_type=rtype,
            roles=billing,
            patient=PATIENT,
            purpose="HPAYMT",
        )[0]


def test_researchers_search_clinical_facts_never_patients(engine: PolicyEngine) -> None:
    res = frozenset({"researcher"})
    for rtype in ("Observation", "Condition"):
        assert decide(engine, action="search", resource_type=rtype, roles=res, purpose="HRESCH")[0]
        # What a search shows may be read again, never written.
        assert decide(engine, action="read", resource_type=rtype, roles=res, purpose="HRESCH")[0]
        assert not decide(
            engine, action="update", resource_type=rtype, roles=res, purpose="HRESCH"
        )[0]
    assert decide(
        engine, action="search", resource_type="Patient", roles=res, purpose="HRESCH"
    ) == (
        False,
        ("research-never-identifies",),
    )
    # Even a role that may read Patients cannot do so for research.
    both = frozenset({"researcher", "registration"})
    assert not decide(
        engine,
        action="read",
        resource_type="Patient",
        roles=both,
        patient=PATIENT,
        purpose="HRESCH",
    )[0]


def test_privacy_officer_reads_never_writes(engine: PolicyEngine) -> None:
    po = frozenset({"privacy_officer"})
    for action in ("read", "search", "history", "everything"):
        assert decide(
            engine,
            action=action,
            resource_type="Condition",
            roles=po,
            patient=VIP,
            purpose="HOPERAT",
        )[0]
    for action in ("create", "update", "delete", "export"):
        assert not decide(
            engine,
            action=action,
            resource_type="Condition",
            roles=po,
            patient=VIP,
            purpose="HOPERAT",
        )[0]


def test_security_admins_reach_no_phi_even_with_another_role(engine: PolicyEngine) -> None:
    both = frozenset({"security_admin", "him"})
    assert decide(
        engine,
        action="read",
        resource_type="Observation",
        roles=both,
        patient=PATIENT,
        purpose="HOPERAT",
    ) == (False, ("security-admin-no-phi",))
    # Shared reference data is not PHI.
    assert decide(
        engine, action="read", resource_type="Practitioner", roles=frozenset({"security_admin"})
    )[0]


def test_consent_denial_blocks_everyone_but_break_the_glass(engine: PolicyEngine) -> None:
    for roles, purpose in (
        (PHYSICIAN, "TREAT"),
        (frozenset({"privacy_officer"}), "HOPERAT"),
        (frozenset({"registration"}), "TREAT"),
    ):
        assert decide(
            engine,
            action="read",
            resource_type="Patient",
            roles=roles,
            patient=PATIENT,
            on_care_team=True,
            purpose=purpose,
            consent_denied=True,
        ) == (False, ("consent-denied",))


def test_unknown_action_and_unknown_role(engine: PolicyEngine) -> None:
    assert decide(engine, action="vread", resource_type="Patient", roles=PHYSICIAN) == (
        False,
        (UNKNOWN_ACTION,),
    )
    assert decide(
        engine,
        action="read",
        resource_type="Patient",
        roles=frozenset({"janitor"}),
        patient=PATIENT,
        on_care_team=True,
    ) == (False, (DEFAULT_DENY,))


def test_every_compartment_type_is_classified(engine: PolicyEngine) -> None:
    from .oracle import CLINICAL, DEMOGRAPHIC, FINANCIAL, PHI, REFERENCE, RESEARCH

    classes = engine.resource_classes
    for rtype in PHI:
        assert "phi" in classes[rtype], rtype
        assert ("clinical" in classes[rtype]) == (rtype in CLINICAL), rtype
        assert ("demographic" in classes[rtype]) == (rtype in DEMOGRAPHIC), rtype
        assert ("financial" in classes[rtype]) == (rtype in FINANCIAL), rtype
        assert ("research" in classes[rtype]) == (rtype in RESEARCH), rtype
    for rtype in REFERENCE:
        assert classes[rtype] == {"reference"}

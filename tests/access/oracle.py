"""An independent statement of the access rules, in plain Python, for the tests.

It is written from the rules in docs/access.md, not from the Cedar files, and shares
no code with phiguard.access beyond the ``Facts`` record it reads: if the policies
and this oracle disagree, one of them misstates a rule.  Its tables of resource
types come from the FHIR Patient compartment (records.compartment), not from
resource_types.yaml.
"""

from __future__ import annotations

from phiguard.access.facts import Facts
from phiguard.records.compartment import PATIENT_PATHS

PHI = frozenset(PATIENT_PATHS) | {"Patient"}
DEMOGRAPHIC = frozenset({"Patient", "Coverage", "Appointment", "RelatedPerson"})
FINANCIAL = frozenset({"Claim", "ExplanationOfBenefit", "Coverage", "Encounter"})
RESEARCH = frozenset({"Observation", "Condition"})
CLINICAL = PHI - {"Claim", "ExplanationOfBenefit", "Coverage"}
REFERENCE = frozenset(
    {
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Location",
        "HealthcareService",
        "Endpoint",
        "Medication",
        "Substance",
    }
)

RESTRICTED = frozenset({"PSY", "HIV", "SUD", "SEX", "R", "V"})
CLINICIANS = frozenset({"physician", "nurse"})
CLINICAL_READ = frozenset({"read", "search", "history", "everything"})
CLINICAL_WORK = CLINICAL_READ | {"create", "update"}


def expected(f: Facts) -> tuple[bool, frozenset[str]]:
    """(allowed, ids of the determining policies, or {"default-deny"})."""
    action, rtype, roles = f.action, f.resource_type, f.roles
    emergency = f.break_glass and f.purpose in ("ETREAT", "BTG")
    treatment = f.purpose in ("TREAT", "ETREAT")
    about_patient = f.patient is not None
    clinician = bool(roles & CLINICIANS)

    permits: set[str] = set()
    if clinician and rtype in CLINICAL:
        if action in CLINICAL_WORK and treatment and about_patient:
            if f.on_care_team or f.recent_encounter:
                permits.add("clinician-direct-care")
            assert f.patient is not None
            if f.department_match and not (f.patient.vip or f.patient.employee):
                permits.add("clinician-department")
        if action == "search" and treatment and not about_patient:
            permits.add("clinician-search")
        if action in CLINICAL_READ and emergency:
            permits.add("clinician-break-glass")
    registration_work = ("read", "search", "create", "update")
    if "registration" in roles and rtype in DEMOGRAPHIC and action in registration_work:
        permits.add("registration-demographics")
    billing_work = rtype in FINANCIAL and action in ("read", "search")
    if "billing" in roles and billing_work and f.purpose == "HPAYMT":
        permits.add("billing-payment")
    if "him" in roles and action in CLINICAL_READ | {"export"} and f.purpose == "HOPERAT":
        permits.add("him-operations")
    # Read too: a result of a search may be fetched again (search never shows more
    # than read would).
    research_work = action in ("read", "search") and rtype in RESEARCH
    if "researcher" in roles and research_work and f.purpose == "HRESCH":
        permits.add("researcher-research")
    if "privacy_officer" in roles and action in CLINICAL_READ and f.purpose == "HOPERAT":
        permits.add("privacy-officer-audit")
    if rtype in REFERENCE and action in ("read", "search"):
        permits.add("reference-data")

    forbids: set[str] = set()
    if f.labels & RESTRICTED and not (
        f.on_care_team or f.recent_encounter or "privacy_officer" in roles or emergency
    ):
        forbids.add("sensitive-needs-direct-care")
    if f.consent_denied and not emergency:
        forbids.add("consent-denied")
    if not f.scopes_allow:
        forbids.add("scopes-narrow")
    if "security_admin" in roles and (rtype in PHI or about_patient):
        forbids.add("security-admin-no-phi")
    if f.purpose == "HRESCH" and rtype == "Patient":
        forbids.add("research-never-identifies")

    if forbids:
        return False, frozenset(forbids)
    if permits:
        return True, frozenset(permits)
    return False, frozenset({"default-deny"})

"""The decision matrix: cases.yaml as ``Facts``, and the generator that writes it.

Regenerate with ``python -m tests.access.cases`` after a deliberate rule change (the
expected values come from the oracle, never from the engine); review the diff.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import yaml

from phiguard.access.facts import Facts, PatientFacts

from .oracle import expected

CASES = Path(__file__).with_name("cases.yaml")

ROLES = (
    "physician",
    "nurse",
    "registration",
    "billing",
    "him",
    "researcher",
    "privacy_officer",
    "security_admin",
)
ACTIONS = ("read", "search", "create", "update", "delete", "history", "everything", "export")
RELATIONSHIPS = ("none", "care_team", "encounter", "department", "expired")
TYPES = (
    "Patient",
    "Observation",
    "Condition",
    "MedicationRequest",
    "Encounter",
    "Coverage",
    "Claim",
    "ExplanationOfBenefit",
    "Appointment",
    "Practitioner",
)
LABELS = ((), ("PSY", "R"), ("HIV", "R"), ("SUD", "R"), ("SEX", "R"), ("R",), ("V",))
PURPOSES = ("TREAT", "ETREAT", "BTG", "HPAYMT", "HOPERAT", "HRESCH")
HOME_PURPOSE = {
    "physician": "TREAT",
    "nurse": "TREAT",
    "registration": "TREAT",
    "billing": "HPAYMT",
    "him": "HOPERAT",
    "researcher": "HRESCH",
    "privacy_officer": "HOPERAT",
    "security_admin": "HOPERAT",
}
HOME_TYPES = {
    "physician": ("Observation", "Condition", "MedicationRequest", "Encounter", "Patient"),
    "nurse": ("Observation", "Condition", "MedicationRequest", "Encounter", "Patient"),
    "registration": ("Patient", "Coverage", "Appointment"),
    "billing": ("Claim", "ExplanationOfBenefit", "Coverage", "Encounter"),
    "researcher": ("Observation", "Condition"),
}
PATIENTS = {
    "ordinary": PatientFacts("cardiology"),
    "vip": PatientFacts("cardiology", vip=True),
    "employee": PatientFacts("cardiology", employee=True),
}


def to_facts(case: dict[str, Any]) -> Facts:
    """One case of cases.yaml as the facts the engine decides on.

    ``expired`` is a relationship that has lapsed (team ended, encounter outside the
    window): the attribute provider reports it as no relationship at all.
    """
    rel = case["rel"]
    patient = PATIENTS.get(case["patient"])
    return Facts(
        action=case["action"],
        resource_type=case["type"],
        roles=frozenset({case["role"]}),
        department="cardiology",
        labels=frozenset(case["labels"]),
        patient=patient,
        purpose=case["purpose"],
        break_glass=case["break_glass"],
        on_care_team=patient is not None and rel == "care_team",
        recent_encounter=patient is not None and rel == "encounter",
        department_match=patient is not None and rel == "department",
        consent_denied=patient is not None and case["consent_denied"],
        scopes_allow=case["scopes_allow"],
    )


def _case(rng: random.Random, role: str, action: str, rel: str) -> dict[str, Any]:
    home = HOME_TYPES.get(role)
    rtype = rng.choice(home) if home and rng.random() < 0.6 else rng.choice(TYPES)
    if rtype == "Practitioner":
        patient = "none"
    elif action == "search" and rng.random() < 0.3:
        patient = "none"  # a type-level search, before results are known
    else:
        patient = rng.choice(("ordinary", "ordinary", "vip", "employee"))
    break_glass = rng.random() < 0.2
    if break_glass and rng.random() < 0.6:
        purpose = rng.choice(("ETREAT", "BTG"))
    elif rng.random() < 0.6:
        purpose = HOME_PURPOSE[role]
    else:
        purpose = rng.choice(PURPOSES)
    return {
        "role": role,
        "action": action,
        "type": rtype,
        "patient": patient,
        "rel": rel,
        "labels": list(rng.choice(LABELS)) if rng.random() < 0.35 else [],
        "purpose": purpose,
        "break_glass": break_glass,
        "consent_denied": patient != "none" and rng.random() < 0.1,
        "scopes_allow": rng.random() < 0.92,
    }


def generate(per_stratum: int = 5, seed: int = 20260101) -> list[dict[str, Any]]:
    """Every role x action x relationship, ``per_stratum`` random cases each."""
    rng = random.Random(seed)
    out = []
    for role in ROLES:
        for action in ACTIONS:
            for rel in RELATIONSHIPS:
                for _ in range(per_stratum):
                    case = _case(rng, role, action, rel)
                    allowed, reasons = expected(to_facts(case))
                    case["expect"] = "allow" if allowed else "deny"
                    case["reasons"] = sorted(reasons)
                    out.append(case)
    return out


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).strip()


def write(cases: list[dict[str, Any]], path: Path = CASES) -> None:
    allowed = sum(c["expect"] == "allow" for c in cases)
    lines = [
        "# The access decision matrix: role x action x relationship, with resource type,",
        "# labels, patient flags, purpose, break-the-glass, consent and scopes varied.",
        "# Expected values come from tests/access/oracle.py (an independent statement of",
        "# the rules), never from the engine.  Regenerate: python -m tests.access.cases",
        f"# {len(cases)} cases, {allowed} allowed.",
        "cases:",
    ]
    lines += [f"  - {_flow(c)}" for c in cases]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def load(path: Path = CASES) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    cases: list[dict[str, Any]] = data["cases"]
    return cases


if __name__ == "__main__":
    write(generate())
    print(f"wrote {CASES}")

"""The decision matrix (cases.yaml) and properties over arbitrary facts.

The expected values come from the oracle, an independent restatement of the rules;
the engine must agree with it case by case, reasons included.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phiguard.access.engine import PolicyEngine
from phiguard.access.facts import Facts, PatientFacts

from .cases import ROLES, load, to_facts
from .oracle import PHI, RESTRICTED, expected

CASES = load()


def test_matrix_is_large_and_covers_every_rule(engine: PolicyEngine) -> None:
    assert len(CASES) >= 1000
    reasons = {r for c in CASES for r in c["reasons"]}
    assert set(engine.policies) | {"default-deny"} == reasons
    assert {c["role"] for c in CASES} == set(ROLES)
    assert {c["rel"] for c in CASES} == {"none", "care_team", "encounter", "department", "expired"}


GROUPS: dict[str, list[tuple[int, dict[str, Any]]]] = {}
for _n, _case in enumerate(CASES):
    GROUPS.setdefault(f"{_case['role']}-{_case['action']}", []).append((_n, _case))


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_cases(engine: PolicyEngine, group: str) -> None:
    """Every case of one role x action stratum; a failure lists each disagreeing case."""
    stale, wrong = [], []
    for n, case in GROUPS[group]:
        facts = to_facts(case)
        want = (case["expect"] == "allow", frozenset(case["reasons"]))
        if expected(facts) != want:
            stale.append(n)
        decision = engine.decide(facts)
        got = (decision.allowed, frozenset(decision.reasons))
        if got != want:
            wrong.append(f"case {n} {case}: got {got}")
    assert not stale, f"cases.yaml is stale (regenerate from the oracle): {stale}"
    assert not wrong, "\n".join(wrong)


# -- properties over arbitrary facts -------------------------------------------------

TYPES = sorted(PHI | {"Practitioner", "Organization", "Basic", "AuditEvent"})
LABELS = sorted(RESTRICTED | {"N", "ETH", "REDACTED"})
ROLE_SETS = st.frozensets(st.sampled_from([*ROLES, "operator", "auditor"]), max_size=3)

facts_strategy = st.builds(
    Facts,
    action=st.sampled_from(
        ["read", "search", "create", "update", "delete", "history", "everything", "export"]
    ),
    resource_type=st.sampled_from(TYPES),
    roles=ROLE_SETS,
    principal_kind=st.sampled_from(["user", "client"]),
    department=st.sampled_from(["", "cardiology", "oncology"]),
    labels=st.frozensets(st.sampled_from(LABELS), max_size=3),
    patient=st.none()
    | st.builds(
        PatientFacts,
        department=st.sampled_from(["", "cardiology", "oncology"]),
        vip=st.booleans(),
        employee=st.booleans(),
    ),
    purpose=st.sampled_from(["TREAT", "ETREAT", "BTG", "HPAYMT", "HOPERAT", "HRESCH", "PUBHLTH"]),
    break_glass=st.booleans(),
    on_care_team=st.booleans(),
    recent_encounter=st.booleans(),
    department_match=st.booleans(),
    consent_denied=st.booleans(),
    scopes_allow=st.booleans(),
)

PROPERTY = settings(max_examples=400, deadline=None)


@PROPERTY
@given(facts=facts_strategy)
def test_engine_agrees_with_oracle(engine: PolicyEngine, facts: Facts) -> None:
    decision = engine.decide(facts)
    assert (decision.allowed, frozenset(decision.reasons)) == expected(facts)
    assert engine.decide_uncached(facts) == decision


@PROPERTY
@given(facts=facts_strategy)
def test_restricted_labels_need_direct_care_privacy_office_or_btg(
    engine: PolicyEngine, facts: Facts
) -> None:
    if facts.labels & RESTRICTED and engine.decide(facts).allowed:
        assert (
            facts.on_care_team
            or facts.recent_encounter
            or "privacy_officer" in facts.roles
            or facts.break_glass_active
        )


@PROPERTY
@given(facts=facts_strategy)
def test_security_admins_never_reach_phi(engine: PolicyEngine, facts: Facts) -> None:
    facts = Facts(**{**_fields(facts), "roles": facts.roles | {"security_admin"}})
    if facts.resource_type in PHI or facts.patient is not None:
        assert not engine.decide(facts).allowed


@PROPERTY
@given(facts=facts_strategy)
def test_consent_denial_blocks_all_but_break_glass(engine: PolicyEngine, facts: Facts) -> None:
    facts = Facts(**{**_fields(facts), "consent_denied": True})
    decision = engine.decide(facts)
    if decision.allowed:
        assert facts.break_glass_active
    else:
        assert facts.break_glass_active or "consent-denied" in decision.reasons


@PROPERTY
@given(facts=facts_strategy)
def test_scopes_only_narrow(engine: PolicyEngine, facts: Facts) -> None:
    narrowed = engine.decide(Facts(**{**_fields(facts), "scopes_allow": False}))
    assert not narrowed.allowed and "scopes-narrow" in narrowed.reasons


@PROPERTY
@given(facts=facts_strategy)
def test_department_alone_never_reaches_vip_or_staff(engine: PolicyEngine, facts: Facts) -> None:
    if facts.patient is not None and (facts.patient.vip or facts.patient.employee):
        assert "clinician-department" not in engine.decide(facts).reasons


def _fields(facts: Facts) -> dict[str, Any]:
    return {name: getattr(facts, name) for name in Facts.__slots__}

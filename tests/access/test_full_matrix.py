"""The whole decision matrix, exhaustively: every role x interaction x relationship x
label x consent x purpose x break-the-glass, for clinical, demographic, financial and
reference types, against the oracle (an independent restatement of the rules).

cases.yaml samples this space with reasons spelled out for review; this walks all of
it (about 50,000 decisions, a few seconds) so no corner goes unchecked.
"""

from __future__ import annotations

import itertools

from phiguard.access.engine import PolicyEngine
from phiguard.access.facts import Facts

from .cases import ACTIONS, PATIENTS, PURPOSES, RELATIONSHIPS, ROLES
from .oracle import expected

TYPES = ("Observation", "Patient", "Claim", "Appointment", "Practitioner")
LABELS = ((), ("PSY", "R"), ("V",))


def _facts() -> list[Facts]:
    out = []
    for role, action, rel, rtype, labels, consent, purpose, btg in itertools.product(
        (*ROLES, None),
        ACTIONS,
        RELATIONSHIPS,
        TYPES,
        LABELS,
        (False, True),
        PURPOSES,
        (False, True),
    ):
        patient = None if rtype == "Practitioner" else PATIENTS["ordinary"]
        if rel == "department" and rtype == "Patient":
            patient = PATIENTS["vip"]  # department alone must not reach a VIP
        out.append(
            Facts(
                action=action,
                resource_type=rtype,
                roles=frozenset({role}) if role else frozenset(),
                department="cardiology",
                labels=frozenset(labels),
                patient=patient,
                purpose=purpose,
                break_glass=btg,
                on_care_team=patient is not None and rel == "care_team",
                recent_encounter=patient is not None and rel == "encounter",
                department_match=patient is not None and rel == "department",
                consent_denied=patient is not None and consent,
            )
        )
    return out


def test_every_combination_agrees_with_the_oracle(engine: PolicyEngine) -> None:
    facts = _facts()
    assert len(facts) > 40_000
    wrong = []
    allowed = 0
    for f in facts:
        decision = engine.decide_uncached(f)
        want_allowed, want_reasons = expected(f)
        allowed += decision.allowed
        if decision.allowed != want_allowed or frozenset(decision.reasons) != want_reasons:
            wrong.append((f, decision, want_allowed, sorted(want_reasons)))
    assert not wrong, f"{len(wrong)} disagreements, first: {wrong[0]}"
    assert 0.02 < allowed / len(facts) < 0.5  # the matrix exercises both outcomes

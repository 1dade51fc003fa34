"""Explanations name the rules that permitted and forbade, and what was masked."""

from __future__ import annotations

from phiguard.access.engine import PolicyEngine
from phiguard.access.explain import explain
from phiguard.access.facts import Facts, PatientFacts


def test_denied_by_a_guard_shows_the_overridden_permit(engine: PolicyEngine) -> None:
    facts = Facts(
        "read",
        "Condition",
        frozenset({"physician"}),
        labels=frozenset({"PSY", "R"}),
        patient=PatientFacts("cardiology"),
        department_match=True,
        consent_denied=True,
    )
    ex = explain(engine, facts)
    assert not ex.decision.allowed and not ex.default_deny
    assert [h.id for h in ex.permits] == ["clinician-department"]
    assert not ex.permits[0].determining
    assert {h.id for h in ex.forbids} == {"consent-denied", "sensitive-needs-direct-care"}
    assert all(h.determining and h.effect == "forbid" for h in ex.forbids)
    text = ex.text()
    assert text.splitlines()[0] == (
        "DENIED: read Condition labelled PSY, R, a patient's data, for physician with purpose TREAT"
    )
    assert "care team no; recent encounter no; department yes" in text
    assert "clinician-department (overridden): Physicians and nurses" in text
    assert "  - consent-denied: When the patient's consent denies" in text


def test_default_deny_is_said_plainly(engine: PolicyEngine) -> None:
    ex = explain(
        engine, Facts("delete", "Observation", frozenset({"nurse"}), patient=PatientFacts())
    )
    assert ex.default_deny
    assert "deny by default" in ex.text()


def test_allowed_lists_permits_and_masks(engine: PolicyEngine) -> None:
    facts = Facts("read", "Claim", frozenset({"billing"}), patient=PatientFacts(), purpose="HPAYMT")
    ex = explain(engine, facts)
    text = ex.text()
    assert text.startswith("ALLOWED: read Claim, a patient's data, for billing")
    assert "+ billing-payment: Billing may read" in text
    assert "Masked fields: note, text" in text
    assert "narrative-hidden-from-billing: Billing works from codes" in text
    assert ex.masks == (
        (
            "narrative-hidden-from-billing",
            engine.masks.rules[1].why,
            ("text", "note"),
        ),
    )


def test_type_level_and_break_glass_wording(engine: PolicyEngine) -> None:
    ex = explain(
        engine,
        Facts(
            "search",
            "Observation",
            frozenset({"nurse"}),
            purpose="BTG",
            break_glass=True,
        ),
    )
    text = ex.text()
    assert "no patient's (type level) data" in text
    assert "break-the-glass active" in text
    assert {h.id for h in ex.permits} == {"clinician-break-glass"}


def test_unknown_action(engine: PolicyEngine) -> None:
    ex = explain(engine, Facts("purge", "Observation", frozenset({"him"})))
    assert ex.decision.reasons == ("unknown-action",)
    assert "Denied: unknown-action." in ex.text()

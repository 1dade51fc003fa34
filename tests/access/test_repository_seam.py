"""The Cedar policy in the repository's AccessPolicy seam, without wiring anything in.

The repository is built with the policy object, exactly as the wiring will do it;
this checks that the requests the repository makes today get sensible answers.
"""

from __future__ import annotations

from typing import Any

import pytest

from phiguard.access.attributes import NO_RELATIONSHIP, Relationship, UserFacts
from phiguard.access.engine import PolicyEngine
from phiguard.access.facts import PatientFacts
from phiguard.access.policy import CedarPolicy
from phiguard.errors import AccessDenied, NotFound
from phiguard.records.context import AccessContext, Principal, system_context
from phiguard.records.hooks import ListAuditSink
from phiguard.records.vault import Vault

ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


class DepartmentOnly:
    """Every user is in the patient's department, nothing more."""

    def user(self, principal: Principal) -> UserFacts:
        return UserFacts("ward-1")

    def patient(self, patient_id: str) -> PatientFacts:
        return PatientFacts("ward-1")

    def relationship(self, principal: Principal, patient_id: str) -> Relationship:
        if principal.id == "stranger":
            return NO_RELATIONSHIP
        return Relationship(department_match=True)

    def consent_denied(self, ctx: AccessContext, patient_id: str) -> bool:
        return False


def condition(pid: str, labelled: bool) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Condition",
        "subject": {"reference": f"Patient/{pid}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "35489007"}]},
    }
    if labelled:
        res["meta"] = {"security": [{"system": ACT, "code": "PSY"}]}
    return res


def doctor(uid: str = "doc") -> AccessContext:
    return AccessContext(principal=Principal(id=uid, kind="user", roles=frozenset({"physician"})))


def test_repository_asks_the_cedar_policy(
    vault: Vault, engine: PolicyEngine, audit_sink: ListAuditSink
) -> None:
    vault.policy = CedarPolicy(engine, DepartmentOnly())
    system = vault.repository(system_context())  # import jobs keep working (fallback)
    pid = system.create({"resourceType": "Patient", "name": [{"family": "Test"}]}).id
    plain = system.create(condition(pid, labelled=False)).id
    sensitive = system.create(condition(pid, labelled=True)).id

    repo = vault.repository(doctor())
    assert repo.read("Patient", pid).resource is not None
    assert repo.read("Condition", plain).resource is not None
    # Refused reads answer like absent ids; the ledger has the real reason.
    with pytest.raises(NotFound):
        repo.read("Condition", sensitive)
    assert audit_sink.events[-1].outcome == "denied"
    assert audit_sink.events[-1].detail == {"reasons": ["sensitive-needs-direct-care"]}

    with pytest.raises(NotFound):
        vault.repository(doctor("stranger")).read("Condition", plain)
    with pytest.raises(AccessDenied):  # clinicians do not delete what they can see
        repo.delete("Condition", plain)
    with pytest.raises(NotFound):  # nor learn that a hidden one exists by trying
        repo.delete("Condition", sensitive)

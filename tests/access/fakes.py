"""Test doubles for the access tests."""

from __future__ import annotations

from dataclasses import dataclass, field

from phiguard.access.attributes import NO_RELATIONSHIP, Relationship, UserFacts
from phiguard.access.facts import PatientFacts
from phiguard.records.context import AccessContext, Principal


@dataclass
class FakeAttributes:
    """Relationships and flags set by the test."""

    relationships: dict[tuple[str, str], Relationship] = field(default_factory=dict)
    patients: dict[str, PatientFacts] = field(default_factory=dict)
    denied: set[str] = field(default_factory=set)
    departments: dict[str, str] = field(default_factory=dict)
    calls: int = 0

    def user(self, principal: Principal) -> UserFacts:
        return UserFacts(self.departments.get(principal.id, ""))

    def patient(self, patient_id: str) -> PatientFacts:
        self.calls += 1
        return self.patients.get(patient_id, PatientFacts())

    def relationship(self, principal: Principal, patient_id: str) -> Relationship:
        return self.relationships.get((principal.id, patient_id), NO_RELATIONSHIP)

    def consent_denied(self, ctx: AccessContext, patient_id: str) -> bool:
        return patient_id in self.denied

"""The facts a decision is made from: everything the policies may look at, nothing else.

``Facts`` holds attributes, not identities.  The engine hands Cedar placeholder ids,
so two requests with the same facts get the same decision; that makes a decision
cacheable by its facts, and keeps patient and user ids out of the policy engine.
Who asked about whom is the audit record's business, not the policy's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

ACTIONS: Final[frozenset[str]] = frozenset(
    {"read", "search", "create", "update", "delete", "history", "everything", "export"}
)
"""The Cedar actions.  The repository's ``vread`` is a ``read`` (of an older version)."""

ACTION_ALIASES: Final[dict[str, str]] = {"vread": "read"}

PURPOSES: Final[frozenset[str]] = frozenset(
    {"TREAT", "ETREAT", "BTG", "HPAYMT", "HOPERAT", "HRESCH"}
)
"""HL7 v3 PurposeOfUse codes the policies know; any other purpose simply matches no permit."""

BREAK_GLASS_PURPOSES: Final[frozenset[str]] = frozenset({"ETREAT", "BTG"})

SENSITIVE_LABELS: Final[frozenset[str]] = frozenset({"PSY", "HIV", "SUD", "SEX", "R", "V"})
"""Labels that need a direct care relationship; mirrors guards.cedar for callers and tests."""


@dataclass(frozen=True, slots=True)
class PatientFacts:
    """What the policies may know about the patient a resource is about."""

    department: str = ""
    """Department the patient is admitted to, ``""`` when none."""
    vip: bool = False
    employee: bool = False


@dataclass(frozen=True, slots=True)
class Facts:
    """One access question, as attributes.

    ``patient`` is ``None`` for a type-level request (a search before its results are
    known) and for shared data about no patient; the relationship flags are then
    meaningless and should be ``False``.
    """

    action: str
    resource_type: str
    roles: frozenset[str] = frozenset()
    principal_kind: str = "user"
    department: str = ""
    labels: frozenset[str] = frozenset()
    patient: PatientFacts | None = None
    purpose: str = "TREAT"
    break_glass: bool = False
    on_care_team: bool = False
    recent_encounter: bool = False
    department_match: bool = False
    consent_denied: bool = False
    scopes_allow: bool = True

    @property
    def break_glass_active(self) -> bool:
        """Break-the-glass counts only with an emergency purpose, as in the policies."""
        return self.break_glass and self.purpose in BREAK_GLASS_PURPOSES

    @property
    def direct_care(self) -> bool:
        """A care relationship strong enough for sensitive data: team or recent encounter."""
        return self.on_care_team or self.recent_encounter

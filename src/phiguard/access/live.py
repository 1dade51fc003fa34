"""Live explanations: why would this real user be allowed or refused this real resource now?

An officer's question is about people and records, not attributes: "why could
u00042 read Patient/abc this morning?"  ``explain_live`` answers it from the home's
store, exactly as the running system would decide: the account (roles, status,
department), the stored resource (labels, patient), the relationship index, consent
and any running break-the-glass grant, through the running policy set (or another
set, to try a change before installing it).

Asking opens a patient's facts (labels, relationships, consent), so every question
is recorded in the ledger as ``access-explain`` naming the patient, who asked and
what they asked about.  The CLI (``phiguard access explain --user --resource``) and
the console page (``/access/explain``) both come here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from phiguard.errors import AccessError, NotFound
from phiguard.records.compartment import compartment_of
from phiguard.records.context import AccessContext, Principal, system_context
from phiguard.records.hooks import AccessRequest
from phiguard.records.validation import valid_id

from .engine import PolicyEngine
from .explain import Explanation
from .facts import ACTION_ALIASES, ACTIONS, PURPOSES
from .policy import CedarPolicy, patient_id_of

if TYPE_CHECKING:
    from phiguard.system import System

    from .wiring import AccessServices


@dataclass(frozen=True)
class LiveExplanation:
    """The answer, with what it was asked about (ids only; no resource content)."""

    user_id: str
    roles: tuple[str, ...]
    status: str
    department: str
    reference: str
    stored: bool
    patient: str | None
    indexed: str
    """Counts of the patient's indexed facts (``StoreAttributes.describe``)."""
    result: Explanation
    unclassified: bool
    """The resource type is in no resource class of the policy set."""

    def notes(self) -> list[str]:
        """What the reader should know before the decision itself."""
        roles = ", ".join(self.roles) or "no role"
        out = [
            f"User: {self.user_id} ({roles}; {self.status}; department {self.department or '-'})"
        ]
        if self.status != "active":
            out.append(
                f"Note: the account is {self.status}: it cannot sign in, and the store "
                "gives it no relationship to anyone."
            )
        if not self.stored:
            out.append(f"Note: {self.reference} is not stored; decided on the patient's facts.")
        if self.patient:
            out.append(f"Patient: {self.patient} (indexed: {self.indexed})")
        return out


def parse_question(reference: str, action: str, purpose: str) -> tuple[str, str, str, str]:
    """(type, id, action, purpose) checked, or ``AccessError`` with what is wrong."""
    rtype, _, rid = reference.strip().partition("/")
    if not rtype.isalpha() or not valid_id(rid):
        raise AccessError("the resource is Type/id, e.g. Patient/123")
    action = ACTION_ALIASES.get(action, action)
    if action not in ACTIONS:
        raise AccessError(f"unknown action (one of {', '.join(sorted(ACTIONS))}, vread)")
    purpose = purpose.strip().upper()
    if purpose not in PURPOSES:
        raise AccessError(f"unknown purpose of use (one of {', '.join(sorted(PURPOSES))})")
    return rtype, rid, action, purpose


def explain_live(
    system: System,
    services: AccessServices,
    *,
    user_id: str,
    reference: str,
    action: str = "read",
    purpose: str = "TREAT",
    scopes: list[str] | None = None,
    engine: PolicyEngine | None = None,
    asked_by: str = "system/phiguard",
    source: str = "cli",
) -> LiveExplanation:
    """The decision the running system would make now (see the module docstring).

    Raises ``AccessError`` for a malformed question, ``UnknownAccount`` for a user who
    does not exist, ``NotFound`` for a resource that is not stored (other than a
    Patient, whose facts can be explained without the resource).
    """
    from phiguard.identity.accounts import Accounts

    rtype, rid, action, purpose = parse_question(reference, action, purpose)
    account = Accounts.from_system(system).get(user_id)
    try:
        stored = system.vault.repository(system_context()).read(rtype, rid).resource
    except NotFound:
        stored = None
    if stored is None and rtype != "Patient":
        raise NotFound(f"{rtype}/{rid} is not stored: there is nothing to explain")
    compartment = compartment_of(stored) if stored is not None else f"Patient/{rid}"
    request = AccessRequest(action, rtype, rid, compartment, stored)
    ctx = AccessContext(
        Principal(
            account.user_id,
            "user",
            roles=frozenset(account.roles),
            scopes=frozenset(scopes) if scopes else None,
        ),
        purpose,
    )
    engine = engine or services.engine
    result = CedarPolicy(engine, services.attributes).explain(ctx, request)
    patient = patient_id_of(request)
    indexed = services.attributes.describe(patient) if patient else ""
    system.record(
        "access-explain",
        principal=asked_by,
        source=source,
        patient_ids=(patient,) if patient else (),
        user=account.user_id,
        resource=f"{rtype}/{rid}",
        asked=action,
        purpose=purpose,
        allowed=result.decision.allowed,
    )
    return LiveExplanation(
        user_id=account.user_id,
        roles=tuple(account.roles),
        status=account.status,
        department=account.department or "",
        reference=f"{rtype}/{rid}",
        stored=stored is not None,
        patient=patient,
        indexed=indexed,
        result=result,
        unclassified=rtype not in engine.resource_classes,
    )

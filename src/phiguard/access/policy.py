"""``CedarPolicy``: the records layer's ``AccessPolicy`` seam, answered by the Cedar engine.

The adapter turns one repository question, ``(AccessContext, AccessRequest)``, into
``Facts``: the action (``vread`` is a ``read``), the resource's security labels and
VIP flag from its ``meta.security``, the patient it is about (compartment, then the
resource's own patient reference), the relationship, consent and patient flags from
the ``AttributeProvider``, and whether the token's scopes cover the action.

Workforce users and OAuth clients are decided by the policies.  Operator tokens and
phiguard's own jobs (import, rotation, backup) are not people with roles and
purposes; they go to ``fallback`` (by default today's ``OperatorOnlyPolicy``), so
wiring this in does not change what maintenance may do.

A decision made without the resource body (a type-level search, or the repository's
pre-check before it has opened a record) cannot see labels; results must then be
decided one by one with their bodies (``decide_each``) before they are returned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from phiguard.records.compartment import patient_of
from phiguard.records.context import AccessContext
from phiguard.records.hooks import AccessPolicy, AccessRequest, Decision, OperatorOnlyPolicy

from .attributes import NO_RELATIONSHIP, AttributeProvider
from .engine import PolicyEngine
from .explain import Explanation, explain
from .facts import ACTION_ALIASES, Facts, PatientFacts
from .labels import has_flag, security_labels
from .scopes import scopes_allow

POLICY_KINDS = frozenset({"user", "client"})
"""Principal kinds the Cedar policies decide; others go to the fallback policy."""


def patient_id_of(request: AccessRequest) -> str | None:
    """The patient a request is about: compartment, resource reference, or the Patient itself."""
    if request.compartment and request.compartment.startswith("Patient/"):
        return request.compartment.split("/", 1)[1] or None
    if request.resource is not None:
        found = patient_of(request.resource)
        if found:
            return found
    if request.resource_type == "Patient" and request.resource_id:
        return request.resource_id
    return None


class CedarPolicy:
    """``AccessPolicy`` over a ``PolicyEngine`` and an ``AttributeProvider``."""

    def __init__(
        self,
        engine: PolicyEngine,
        attributes: AttributeProvider,
        *,
        fallback: AccessPolicy | None = None,
    ) -> None:
        self.engine = engine
        self.attributes = attributes
        self.fallback: AccessPolicy = fallback or OperatorOnlyPolicy()

    def facts(self, ctx: AccessContext, request: AccessRequest) -> Facts:
        """The facts the engine decides ``request`` on."""
        principal = ctx.principal
        patient_id = patient_id_of(request)
        patient: PatientFacts | None = None
        relationship = NO_RELATIONSHIP
        consent_denied = False
        if patient_id is not None:
            patient = self.attributes.patient(patient_id)
            if has_flag(request.resource, "vip") and not patient.vip:
                patient = PatientFacts(patient.department, True, patient.employee)
            relationship = self.attributes.relationship(principal, patient_id)
            consent_denied = self.attributes.consent_denied(ctx, patient_id)
        return Facts(
            action=ACTION_ALIASES.get(request.action, request.action),
            resource_type=request.resource_type,
            roles=principal.roles,
            principal_kind=principal.kind,
            department=self.attributes.user(principal).department,
            labels=security_labels(request.resource),
            patient=patient,
            purpose=ctx.purpose,
            break_glass=ctx.break_glass,
            on_care_team=relationship.on_care_team,
            recent_encounter=relationship.recent_encounter,
            department_match=relationship.department_match,
            consent_denied=consent_denied,
            scopes_allow=scopes_allow(principal.scopes, request.action, request.resource_type),
        )

    def decide(self, ctx: AccessContext, request: AccessRequest) -> Decision:
        if ctx.principal.kind not in POLICY_KINDS:
            return self.fallback.decide(ctx, request)
        return self.engine.decide(self.facts(ctx, request))

    def decide_each(
        self, ctx: AccessContext, action: str, resources: Iterable[Mapping[str, Any]]
    ) -> list[Decision]:
        """One decision per result of a search, history or $everything, on its own body.

        The wiring drops the denied ones and masks the allowed ones before returning.
        """
        out = []
        for resource in resources:
            request = AccessRequest(
                action,
                str(resource.get("resourceType", "")),
                str(resource["id"]) if resource.get("id") else None,
                None,
                dict(resource),
            )
            out.append(self.decide(ctx, request))
        return out

    def explain(self, ctx: AccessContext, request: AccessRequest) -> Explanation:
        """Why ``request`` is allowed or denied, for a person (see explain.py)."""
        return explain(self.engine, self.facts(ctx, request))

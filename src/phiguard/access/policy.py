"""``CedarPolicy``: the records layer's ``AccessPolicy`` seam, answered by the Cedar engine.

The adapter turns one repository question, ``(AccessContext, AccessRequest)``, into
``Facts``: the action (``vread`` is a ``read``), the resource's security labels and
VIP flag from its ``meta.security``, the patient it is about (compartment, then the
resource's own patient reference), the relationship, consent, break-the-glass grant
and patient flags from the ``AttributeProvider``, and whether the token's scopes
cover the action (a ``patient/`` scope only for the token's launch patient).

Workforce users and OAuth clients are decided by the policies.  Operator tokens and
phiguard's own jobs (import, rotation, backup) are not people with roles and
purposes; they go to ``fallback`` (by default ``OperatorOnlyPolicy``), so wiring
this in does not change what maintenance may do.

A decision made without the resource body (a type-level search, or the repository's
pre-check before it has opened a record) cannot see labels; the repository decides
results one by one with their bodies (``per_resource``) and asks this adapter to
carry out the obligations (``redact``, ``merge_hidden``).

Break-the-glass: with a provider that answers ``about`` (the store-backed one), the
``break_glass`` fact is the caller's live, unexpired grant for that very patient;
``AccessContext.break_glass`` is ignored, so no caller can switch the override on
for itself.  Providers without ``about`` (tests, the synthetic hospital) fall back
to the context flag.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from phiguard.records.compartment import patient_of
from phiguard.records.context import AccessContext
from phiguard.records.hooks import AccessPolicy, AccessRequest, Decision, OperatorOnlyPolicy

from .attributes import NO_RELATIONSHIP, About, AttributeProvider
from .engine import PolicyEngine
from .explain import Explanation, explain
from .facts import ACTION_ALIASES, BREAK_GLASS_PURPOSES, Facts, PatientFacts
from .labels import labels_and_flag
from .masks import apply_masks, merge_hidden
from .scopes import scopes_allow

_NO_DEPARTMENT = {
    (vip, employee): PatientFacts("", vip, employee)
    for vip in (False, True)
    for employee in (False, True)
}

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
    """``AccessPolicy`` over a ``PolicyEngine`` and an ``AttributeProvider``.

    ``refresh`` (optional) is called at most every ``refresh_seconds`` from
    ``decide``: the system passes the policy store's check for a newer policy
    generation, so a running server picks up an administrator's change.
    """

    def __init__(
        self,
        engine: PolicyEngine,
        attributes: AttributeProvider,
        *,
        fallback: AccessPolicy | None = None,
        refresh: Callable[[], object] | None = None,
        refresh_seconds: float = 3.0,
    ) -> None:
        self.engine = engine
        self.attributes = attributes
        self.fallback: AccessPolicy = fallback or OperatorOnlyPolicy()
        self._about: Callable[[AccessContext, str], About] | None = getattr(
            attributes, "about", None
        )
        self._prefetch: Callable[[AccessContext, list[str]], object] | None = getattr(
            attributes, "prefetch", None
        )
        self._any_grant: Callable[[Any], bool] | None = getattr(attributes, "break_glass_any", None)
        self._refresh = refresh
        self._refresh_every = refresh_seconds
        self._next_refresh = 0.0

    def facts(
        self, ctx: AccessContext, request: AccessRequest, *, departments: bool = True
    ) -> Facts:
        """The facts the engine decides ``request`` on (``departments=False``: without
        the department ids, for an engine whose policies do not read them)."""
        principal = ctx.principal
        patient_id = patient_id_of(request)
        labels, vip_flag = labels_and_flag(request.resource, "vip")
        patient: PatientFacts | None = None
        relationship = NO_RELATIONSHIP
        consent_denied = False
        break_glass = ctx.break_glass if self._about is None else False
        if patient_id is not None:
            if self._about is not None:
                about = self._about(ctx, patient_id)
                patient, relationship = about.patient, about.relationship
                consent_denied, break_glass = about.consent_denied, about.break_glass
            else:
                patient = self.attributes.patient(patient_id)
                relationship = self.attributes.relationship(principal, patient_id)
                consent_denied = self.attributes.consent_denied(ctx, patient_id)
            if vip_flag and not patient.vip:
                patient = PatientFacts(patient.department, True, patient.employee)
            if not departments and patient.department:
                patient = _NO_DEPARTMENT[patient.vip, patient.employee]
        elif self._any_grant is not None and ctx.purpose in BREAK_GLASS_PURPOSES:
            break_glass = self._any_grant(principal)
        return Facts(
            action=ACTION_ALIASES.get(request.action, request.action),
            resource_type=request.resource_type,
            roles=principal.roles,
            principal_kind=principal.kind,
            department=self.attributes.user(principal).department if departments else "",
            labels=labels,
            patient=patient,
            purpose=ctx.purpose,
            break_glass=break_glass,
            on_care_team=relationship.on_care_team,
            recent_encounter=relationship.recent_encounter,
            department_match=relationship.department_match,
            consent_denied=consent_denied,
            scopes_allow=scopes_allow(
                principal.scopes,
                request.action,
                request.resource_type,
                patient=patient_id,
                launch_patient=ctx.launch_patient,
                bind_patient=True,
            ),
        )

    def decide(self, ctx: AccessContext, request: AccessRequest) -> Decision:
        if ctx.principal.kind not in POLICY_KINDS:
            return self.fallback.decide(ctx, request)
        if self._refresh is not None:
            now = time.monotonic()
            if now >= self._next_refresh:
                self._next_refresh = now + self._refresh_every
                self._refresh()
        engine = self.engine
        return engine.decide(self.facts(ctx, request, departments=engine.uses_departments))

    # -- what the repository asks besides decisions ------------------------------------
    def per_resource(self, ctx: AccessContext) -> bool:
        """Users and clients get each result decided (and masked) on its own."""
        if ctx.principal.kind in POLICY_KINDS:
            return True
        check = getattr(self.fallback, "per_resource", None)
        return True if check is None else bool(check(ctx))

    def prefetch(self, ctx: AccessContext, compartments: Iterable[str]) -> None:
        """Load the attributes of many patients at once (a page of search results)."""
        if self._prefetch is None or ctx.principal.kind not in POLICY_KINDS:
            return
        ids = sorted({c[8:] for c in compartments if c.startswith("Patient/")})
        if ids:
            self._prefetch(ctx, ids)

    @staticmethod
    def redact(resource: Mapping[str, Any], fields: Iterable[str]) -> dict[str, Any]:
        """The decision's masks applied (a new dict; ``resource`` is untouched)."""
        return apply_masks(resource, fields)

    @staticmethod
    def merge_hidden(
        new: Mapping[str, Any],
        old: Mapping[str, Any],
        masked: Iterable[str],
        readonly: Iterable[str],
    ) -> dict[str, Any]:
        """Masked fields keep their stored values; changed read-only fields are refused."""
        return merge_hidden(new, old, masked, readonly)

    def decide_each(
        self, ctx: AccessContext, action: str, resources: Iterable[Mapping[str, Any]]
    ) -> list[Decision]:
        """One decision per resource, each on its own body (what search does per result)."""
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

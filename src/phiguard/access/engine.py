"""The decision core: Cedar policies, checked against their schema, evaluated in process.

Why Cedar: the policies are short declarative files a privacy officer can review;
forbid beats permit by the language's own semantics (so a guard cannot be undone by
a later permit); every decision names the policies that determined it, which is
what the audit record and the explanation need; and the validator checks each
policy against the schema, so a misspelt attribute is refused at load instead of
quietly matching nothing.

Loading is all-or-nothing.  Schema, every policy file, the resource-type classes and
the masks are parsed and validated together, and a probe request is evaluated
against the schema; any problem raises ``PolicyLoadError`` listing all of them, and
the set loaded before stays in force.  A loaded set is an immutable snapshot swapped
in by one assignment, so a decision in flight never sees half of a reload.

Decisions are cached by ``Facts`` (attributes only, see facts.py) per snapshot, and
the per-request Cedar entities by their attribute tuple; a reload starts both
caches afresh.  Fail closed: an evaluation error in any policy denies the request.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal

import cedarpy
import yaml
from cedarpy import pst

from phiguard.errors import PolicyLoadError
from phiguard.records.hooks import Decision

from .facts import ACTIONS, Facts, PatientFacts
from .masks import MaskTable

POLICY_DIR: Final = Path(__file__).parent / "policies"
SCHEMA_FILE: Final = "schema.cedarschema"
TYPES_FILE: Final = "resource_types.yaml"
MASKS_FILE: Final = "masks.yaml"

DEFAULT_DENY: Final = "default-deny"
"""Reason of a denial no policy determined: nothing permits the request."""
POLICY_ERROR: Final = "policy-error"
"""Reason of a denial because a policy failed to evaluate (fail closed)."""
UNKNOWN_ACTION: Final = "unknown-action"
"""Reason of a denial for an action the policies do not model."""

_PRINCIPAL: Final = {"type": "User", "id": "principal"}
_RESOURCE: Final = {"type": "Resource", "id": "resource"}
_PATIENT: Final = {"type": "Patient", "id": "patient"}
_ACTION: Final = {a: {"type": "Action", "id": a} for a in ACTIONS}

Effect = Literal["permit", "forbid"]


@dataclass(frozen=True)
class PolicyInfo:
    """One policy as the explanation and the docs present it."""

    id: str
    effect: Effect
    description: str
    source: str
    """The file it came from."""


@dataclass(frozen=True)
class Evaluation:
    """A decision together with every policy that matched, overridden or not.

    ``decision.reasons`` names only the determining policies (the forbids on a deny);
    ``permits`` also shows the permits a forbid overrode, which is what a person
    asking "why was I refused?" needs to see.
    """

    decision: Decision
    permits: tuple[str, ...]
    forbids: tuple[str, ...]
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyBundle:
    """The texts of one policy set, before anything is parsed."""

    schema: str
    policies: Mapping[str, str]
    """File name -> Cedar policy text."""
    resource_types: str
    """YAML: classes and the classes of each resource type."""
    masks: str
    """YAML: field masks attached to permit policies."""
    origin: str = ""

    @classmethod
    def from_directory(cls, directory: Path = POLICY_DIR) -> PolicyBundle:
        """Read ``schema.cedarschema``, ``*.cedar``, ``resource_types.yaml``, ``masks.yaml``."""
        try:
            return cls(
                schema=(directory / SCHEMA_FILE).read_text(encoding="utf-8"),
                policies={
                    p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.cedar"))
                },
                resource_types=(directory / TYPES_FILE).read_text(encoding="utf-8"),
                masks=(directory / MASKS_FILE).read_text(encoding="utf-8"),
                origin=str(directory),
            )
        except OSError as exc:
            raise PolicyLoadError([f"{directory}: {exc.strerror or exc}"]) from None

    def with_policy(self, name: str, text: str) -> PolicyBundle:
        """This bundle with one policy file added or replaced (a candidate to load)."""
        return replace(self, policies={**self.policies, name: text})


def _entity(uid: Mapping[str, str], attrs: Mapping[str, Any], parents: list[Any]) -> Any:
    return {"uid": uid, "attrs": attrs, "parents": parents}


def _user_entity(roles: frozenset[str], kind: str, department: str) -> Any:
    return _entity(
        _PRINCIPAL,
        {"kind": kind, "department": department},
        [{"type": "Role", "id": r} for r in sorted(roles)],
    )


def _resource_entities(rtype: str, labels: frozenset[str], patient: PatientFacts | None) -> Any:
    attrs: dict[str, Any] = {"type": rtype, "labels": sorted(labels)}
    out = []
    if patient is not None:
        attrs["patient"] = {"__entity": _PATIENT}
        out.append(
            _entity(
                _PATIENT,
                {
                    "department": patient.department,
                    "vip": patient.vip,
                    "employee": patient.employee,
                },
                [],
            )
        )
    out.append(_entity(_RESOURCE, attrs, [{"type": "ResourceType", "id": rtype}]))
    return out


def _request(facts: Facts) -> dict[str, Any]:
    return {
        "principal": _PRINCIPAL,
        "action": _ACTION[facts.action],
        "resource": _RESOURCE,
        "context": {
            "purpose": facts.purpose,
            "break_glass": facts.break_glass,
            "on_care_team": facts.on_care_team,
            "recent_encounter": facts.recent_encounter,
            "department_match": facts.department_match,
            "consent_denied": facts.consent_denied,
            "scopes_allow": facts.scopes_allow,
        },
    }


# Probes evaluated at load, against the schema, so a schema edit that no longer
# fits the requests this module builds is refused before it can fail every call.
_PROBES: Final = (
    Facts(
        "read", "Observation", frozenset({"physician"}), patient=PatientFacts(), on_care_team=True
    ),
    Facts("search", "Observation", frozenset({"nurse", "researcher"}), purpose="HRESCH"),
    Facts(
        "export",
        "Patient",
        frozenset({"him"}),
        labels=frozenset({"R"}),
        purpose="HOPERAT",
        patient=PatientFacts("d", vip=True, employee=True),
        consent_denied=True,
    ),
)


class _Snapshot:
    """One loaded policy set and its caches; never modified after construction."""

    def __init__(
        self,
        *,
        generation: int,
        policy_set: cedarpy.PolicySet,
        permits_only: cedarpy.PolicySet,
        forbids_only: cedarpy.PolicySet,
        base: cedarpy.Entities,
        ids: Mapping[str, str],
        policies: Mapping[str, PolicyInfo],
        classes: Mapping[str, frozenset[str]],
        masks: MaskTable,
        decision_cache_size: int,
        entity_cache_size: int,
        uses_departments: bool = True,
    ) -> None:
        self.generation = generation
        self.uses_departments = uses_departments
        self.policy_set = policy_set
        self.permits_only = permits_only
        self.forbids_only = forbids_only
        self.base = base
        self.ids = ids
        self.policies = policies
        self.classes = classes
        self.masks = masks
        self.entities = lru_cache(maxsize=entity_cache_size)(self._build_entities)
        self.decide = lru_cache(maxsize=decision_cache_size)(self.decide_uncached)

    def _build_entities(
        self,
        roles: frozenset[str],
        kind: str,
        department: str,
        rtype: str,
        labels: frozenset[str],
        patient: PatientFacts | None,
    ) -> cedarpy.Entities:
        delta = [_user_entity(roles, kind, department), *_resource_entities(rtype, labels, patient)]
        return self.base.with_added_json_str(json.dumps(delta))

    def entities_for(self, facts: Facts) -> cedarpy.Entities:
        return self.entities(
            facts.roles,
            facts.principal_kind,
            facts.department,
            facts.resource_type,
            facts.labels,
            facts.patient,
        )

    def _names(self, cedar_ids: list[str]) -> tuple[str, ...]:
        return tuple(sorted(self.ids.get(c, c) for c in cedar_ids))

    def decide_uncached(self, facts: Facts) -> Decision:
        if facts.action not in ACTIONS:
            return Decision(False, (UNKNOWN_ACTION,))
        result = cedarpy.is_authorized(_request(facts), self.policy_set, self.entities_for(facts))
        if result.diagnostics.errors:
            return Decision(False, (POLICY_ERROR,))
        reasons = self._names(result.diagnostics.reasons)
        if result.allowed:
            return Decision(
                True,
                reasons,
                self.masks.fields_for(reasons, facts.resource_type),
                self.masks.readonly_for(reasons, facts.resource_type),
                break_glass=facts.break_glass_active,
            )
        return Decision(False, reasons or (DEFAULT_DENY,))

    def evaluate(self, facts: Facts) -> Evaluation:
        decision = self.decide_uncached(facts)
        if facts.action not in ACTIONS:
            return Evaluation(decision, (), ())
        request, entities = _request(facts), self.entities_for(facts)
        permits = cedarpy.is_authorized(request, self.permits_only, entities).diagnostics
        forbids = cedarpy.is_authorized(request, self.forbids_only, entities).diagnostics
        return Evaluation(
            decision,
            self._names(permits.reasons),
            self._names(forbids.reasons),
            tuple(permits.errors) + tuple(forbids.errors),
        )


def _only(policies: pst.PolicySet, effect: Effect) -> cedarpy.PolicySet:
    kept = {k: v for k, v in policies.static_policies.items() if v.effect == effect}
    return cedarpy.PolicySet.from_pst(
        pst.PolicySet(templates={}, static_policies=kept, template_links=())
    )


def _yaml(text: str, name: str, problems: list[str]) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problems.append(f"{name}: {exc}")
        return None


def _read_classes(data: Any, problems: list[str]) -> tuple[list[str], dict[str, frozenset[str]]]:
    if not isinstance(data, Mapping) or not isinstance(data.get("classes"), Mapping):
        problems.append(f"{TYPES_FILE}: expected 'classes' and 'types' mappings")
        return [], {}
    classes = [str(c) for c in data["classes"]]
    types: dict[str, frozenset[str]] = {}
    for rtype, members in (data.get("types") or {}).items():
        if not isinstance(members, list):
            problems.append(f"{TYPES_FILE}: {rtype}: expected a list of classes")
            continue
        unknown = [m for m in members if m not in classes]
        if unknown:
            problems.append(f"{TYPES_FILE}: {rtype}: unknown classes {unknown}")
        types[str(rtype)] = frozenset(str(m) for m in members)
    return classes, types


def compile_bundle(
    bundle: PolicyBundle,
    *,
    generation: int = 1,
    decision_cache_size: int = 65_536,
    entity_cache_size: int = 4_096,
) -> _Snapshot:
    """Parse and validate all of ``bundle``; ``PolicyLoadError`` lists every problem found."""
    problems: list[str] = []
    try:
        schema = cedarpy.Schema.from_str(bundle.schema)
    except ValueError as exc:
        raise PolicyLoadError([f"{SCHEMA_FILE}: {exc}"]) from None

    # Each file on its own first, so a syntax error names its file.
    sources: dict[str, str] = {}
    if not bundle.policies:
        problems.append("no policy files")
    for name, text in sorted(bundle.policies.items()):
        try:
            file_pst = cedarpy.PolicySet.from_str(text).to_pst()
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            continue
        if file_pst.templates:
            problems.append(f"{name}: templates are not used by phiguard's policies")
        for policy in file_pst.static_policies.values():
            pid = policy.annotations.get("id", "")
            if not pid:
                problems.append(f"{name}: a {policy.effect} policy has no @id")
            elif pid in sources:
                problems.append(f"{name}: @id {pid!r} is already used in {sources[pid]}")
            else:
                sources[pid] = name
            if not policy.annotations.get("description"):
                problems.append(f"{name}: policy {pid or '?'} has no @description")
    if problems:
        raise PolicyLoadError(problems)

    combined = "\n\n".join(bundle.policies[name] for name in sorted(bundle.policies))
    validation = cedarpy.validate_policies(combined, schema)
    if not validation.validation_passed:
        names = validation.id_annotations_by_policy_id
        for error in validation.errors:
            pid = names.get(error.policy_id, error.policy_id)
            where = f"{sources.get(pid, '?')}: {pid}" if pid else "policies"
            problems.append(f"{where}: {error.error}")
        raise PolicyLoadError(problems)

    policy_set = cedarpy.PolicySet.from_str(combined)
    tree = policy_set.to_pst()
    ids = {cid: p.annotations["id"] for cid, p in tree.static_policies.items()}
    policies = {
        p.annotations["id"]: PolicyInfo(
            p.annotations["id"],
            p.effect,
            p.annotations["description"],
            sources[p.annotations["id"]],
        )
        for p in tree.static_policies.values()
    }
    roles = sorted(
        uid.id for uid in pst.entity_uids(tree.static_policies) if str(uid.type) == "Role"
    )

    classes, types = _read_classes(_yaml(bundle.resource_types, TYPES_FILE, problems), problems)
    masks = MaskTable()
    masks_data = _yaml(bundle.masks, MASKS_FILE, problems)
    if masks_data is not None:
        try:
            masks = MaskTable.from_data(
                masks_data, [p.id for p in policies.values() if p.effect == "permit"]
            )
        except ValueError as exc:
            problems.append(f"{MASKS_FILE}: {exc}")
    if problems:
        raise PolicyLoadError(problems)

    base_entities = [
        *(_entity({"type": "Role", "id": r}, {}, []) for r in roles),
        *(_entity({"type": "ResourceClass", "id": c}, {}, []) for c in classes),
        *(
            _entity(
                {"type": "ResourceType", "id": t},
                {},
                [{"type": "ResourceClass", "id": c} for c in sorted(members)],
            )
            for t, members in sorted(types.items())
        ),
    ]
    try:
        base = cedarpy.Entities.from_json_str(json.dumps(base_entities), schema)
        for probe in _PROBES:
            delta = [
                _user_entity(probe.roles, probe.principal_kind, probe.department),
                *_resource_entities(probe.resource_type, probe.labels, probe.patient),
            ]
            entities = base.with_added_json_str(json.dumps(delta), schema)
            result = cedarpy.is_authorized(_request(probe), policy_set, entities, schema=schema)
            problems.extend(f"probe {probe.action}: {e}" for e in result.diagnostics.errors)
    except ValueError as exc:
        problems.append(f"entities do not fit {SCHEMA_FILE}: {exc}")
    if problems:
        raise PolicyLoadError(problems)

    # The shipped policies decide on ``context.department_match`` only; when no policy
    # reads a department id itself, decisions are cached without the ids, so a
    # hospital's many departments do not split the cache (engine.decide).
    uses_departments = re.search(r"\.department\b", combined) is not None
    return _Snapshot(
        uses_departments=uses_departments,
        generation=generation,
        policy_set=policy_set,
        permits_only=_only(tree, "permit"),
        forbids_only=_only(tree, "forbid"),
        base=base,
        ids=ids,
        policies=policies,
        classes=types,
        masks=masks,
        decision_cache_size=decision_cache_size,
        entity_cache_size=entity_cache_size,
    )


class PolicyEngine:
    """Loads a policy set once and answers access questions from it.

    ``decide`` is the hot path (cached by facts); ``evaluate`` also lists the permits
    a forbid overrode, for explanations; ``load`` swaps in a new set only if the whole
    set validates.
    """

    def __init__(
        self,
        bundle: PolicyBundle | None = None,
        *,
        decision_cache_size: int = 65_536,
        entity_cache_size: int = 4_096,
    ) -> None:
        self._lock = threading.Lock()
        self._cache_sizes = {
            "decision_cache_size": decision_cache_size,
            "entity_cache_size": entity_cache_size,
        }
        self._active = compile_bundle(
            bundle or PolicyBundle.from_directory(), generation=1, **self._cache_sizes
        )

    def load(self, bundle: PolicyBundle | None = None) -> None:
        """Validate and swap in ``bundle`` (default: the packaged policies).

        On any problem ``PolicyLoadError`` is raised and the current set stays in force.
        """
        with self._lock:
            self._active = compile_bundle(
                bundle or PolicyBundle.from_directory(),
                generation=self._active.generation + 1,
                **self._cache_sizes,
            )

    def decide(self, facts: Facts) -> Decision:
        """The decision for ``facts``; reasons are the ids of the determining policies."""
        active = self._active
        if not active.uses_departments and (
            facts.department or (facts.patient is not None and facts.patient.department)
        ):
            patient = facts.patient
            facts = replace(
                facts,
                department="",
                patient=None
                if patient is None
                else PatientFacts("", patient.vip, patient.employee),
            )
        return active.decide(facts)

    def decide_uncached(self, facts: Facts) -> Decision:
        """``decide`` without the decision cache (entities are still reused)."""
        return self._active.decide_uncached(facts)

    def evaluate(self, facts: Facts) -> Evaluation:
        """The decision plus every permit and forbid that matched (uncached, for explaining)."""
        return self._active.evaluate(facts)

    @property
    def generation(self) -> int:
        """Counts successful loads; the first set is generation 1."""
        return self._active.generation

    @property
    def uses_departments(self) -> bool:
        """Whether any loaded policy reads department ids (the shipped ones do not: they
        decide on ``department_match``); callers may then leave the ids out of ``Facts``,
        which spares ``decide`` a copy of them."""
        return self._active.uses_departments

    @property
    def policies(self) -> Mapping[str, PolicyInfo]:
        return self._active.policies

    @property
    def masks(self) -> MaskTable:
        return self._active.masks

    @property
    def resource_classes(self) -> Mapping[str, frozenset[str]]:
        """Resource type -> its classes, as loaded from resource_types.yaml."""
        return self._active.classes

    def clear_caches(self) -> None:
        """Drop cached decisions and entities (benchmarks; a reload does this by itself)."""
        self._active.decide.cache_clear()
        self._active.entities.cache_clear()

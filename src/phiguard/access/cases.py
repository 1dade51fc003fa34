"""Tables of expected access decisions: load them, run them against a policy engine.

A table is YAML with a ``cases`` list; each case is one access question as
attributes plus what the policies must answer::

    cases:
      - name: nurse on the care team reads a PSY note
        roles: [nurse]            # or ``role: nurse``
        action: read
        type: Observation
        patient: ordinary         # ordinary | vip | employee | none (type level / shared)
        rel: care_team            # none | care_team | encounter | department | expired
        labels: [PSY, R]
        purpose: TREAT
        break_glass: false
        consent_denied: false
        scopes_allow: true
        expect: allow             # allow | deny
        reasons: [clinician-direct-care]   # optional: the determining policy ids

Only ``action``, ``type``, a role and ``expect`` are required; the rest default to
the values shown above except ``rel`` (``none``), ``labels`` (none) and ``purpose``
(``TREAT``).  ``name`` defaults to ``case N``.  ``expired`` is a relationship that
has lapsed: the attribute provider reports it as no relationship at all.  This is
the format of tests/access/cases.yaml, so that matrix runs here too.

The shipped table, ``policies/cases.yaml``, states the expected decision of the
shipped policies rule by rule; ``phiguard access test`` runs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from phiguard.errors import PhiGuardError

from .engine import POLICY_DIR, PolicyEngine
from .facts import ACTION_ALIASES, Facts, PatientFacts

SHIPPED_CASES: Final = POLICY_DIR / "cases.yaml"

DEPARTMENT: Final = "cardiology"
"""The department of the user in every case, and of the patient it is admitted to."""

PATIENTS: Final[Mapping[str, PatientFacts | None]] = {
    "none": None,
    "ordinary": PatientFacts(DEPARTMENT),
    "vip": PatientFacts(DEPARTMENT, vip=True),
    "employee": PatientFacts(DEPARTMENT, employee=True),
}
RELATIONSHIPS: Final = ("none", "care_team", "encounter", "department", "expired")

_KEYS: Final = frozenset(
    {
        "name",
        "role",
        "roles",
        "action",
        "type",
        "patient",
        "rel",
        "labels",
        "purpose",
        "break_glass",
        "consent_denied",
        "scopes_allow",
        "expect",
        "reasons",
    }
)


class CaseTableError(PhiGuardError):
    """A table of access cases could not be read or a case in it is malformed."""


@dataclass(frozen=True)
class Case:
    """One expected decision."""

    name: str
    facts: Facts
    allowed: bool
    reasons: tuple[str, ...] | None
    """Sorted ids of the determining policies, ``None`` when the table does not say."""


@dataclass(frozen=True)
class Failure:
    case: Case
    allowed: bool
    reasons: tuple[str, ...]

    def line(self) -> str:
        want = _outcome(self.case.allowed, self.case.reasons)
        got = _outcome(self.allowed, self.reasons)
        return f"{self.case.name}: expected {want}, got {got}"


@dataclass(frozen=True)
class Report:
    cases: int
    failures: tuple[Failure, ...]

    @property
    def passed(self) -> int:
        return self.cases - len(self.failures)


def _outcome(allowed: bool, reasons: Sequence[str] | None) -> str:
    verdict = "ALLOW" if allowed else "DENY"
    return f"{verdict} ({', '.join(reasons)})" if reasons else verdict


def relationship_flags(rel: str, has_patient: bool) -> tuple[bool, bool, bool]:
    """(on_care_team, recent_encounter, department_match) for a relationship name."""
    if rel not in RELATIONSHIPS:
        raise CaseTableError(f"unknown relationship {rel!r} (one of {', '.join(RELATIONSHIPS)})")
    if not has_patient:
        return False, False, False
    return rel == "care_team", rel == "encounter", rel == "department"


def _str_list(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CaseTableError(f"{what}: expected a list of strings")
    return list(value)


def _flag(raw: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise CaseTableError(f"{where}: {key} must be true or false")
    return value


def parse_case(raw: Any, index: int) -> Case:
    """One case of a table; ``index`` (from 1) names it when it has no ``name``."""
    if not isinstance(raw, Mapping):
        raise CaseTableError(f"case {index}: expected a mapping")
    name = str(raw.get("name") or f"case {index}")
    where = f"case {name!r}" if raw.get("name") else name
    unknown = sorted(set(map(str, raw)) - _KEYS)
    if unknown:
        raise CaseTableError(f"{where}: unknown keys {', '.join(unknown)}")
    for key in ("action", "type", "expect"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise CaseTableError(f"{where}: {key} is required")
    roles = _str_list(raw.get("roles", raw.get("role", [])), f"{where}: roles")
    if not roles:
        raise CaseTableError(f"{where}: role or roles is required")
    expect = raw["expect"].lower()
    if expect not in ("allow", "deny"):
        raise CaseTableError(f"{where}: expect must be allow or deny")
    patient_name = str(raw.get("patient", "ordinary"))
    if patient_name not in PATIENTS:
        raise CaseTableError(
            f"{where}: unknown patient {patient_name!r} (one of {', '.join(PATIENTS)})"
        )
    patient = PATIENTS[patient_name]
    try:
        care, encounter, department = relationship_flags(
            str(raw.get("rel", "none")), patient is not None
        )
    except CaseTableError as exc:
        raise CaseTableError(f"{where}: {exc}") from None
    reasons = raw.get("reasons")
    action = str(raw["action"])
    facts = Facts(
        action=ACTION_ALIASES.get(action, action),
        resource_type=str(raw["type"]),
        roles=frozenset(roles),
        department=DEPARTMENT,
        labels=frozenset(_str_list(raw.get("labels", []), f"{where}: labels")),
        patient=patient,
        purpose=str(raw.get("purpose", "TREAT")),
        break_glass=_flag(raw, "break_glass", False, where),
        on_care_team=care,
        recent_encounter=encounter,
        department_match=department,
        consent_denied=patient is not None and _flag(raw, "consent_denied", False, where),
        scopes_allow=_flag(raw, "scopes_allow", True, where),
    )
    return Case(
        name=name,
        facts=facts,
        allowed=expect == "allow",
        reasons=None if reasons is None else tuple(sorted(_str_list(reasons, f"{where}: reasons"))),
    )


def load_cases(path: Path = SHIPPED_CASES) -> list[Case]:
    """Every case of the table at ``path``; ``CaseTableError`` names the first bad one."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CaseTableError(f"{path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CaseTableError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("cases"), list):
        raise CaseTableError(f"{path}: expected a 'cases' list")
    cases = [parse_case(raw, n) for n, raw in enumerate(data["cases"], start=1)]
    if not cases:
        raise CaseTableError(f"{path}: the table has no cases")
    seen: set[str] = set()
    for case in cases:
        if case.name in seen:
            raise CaseTableError(f"{path}: case name {case.name!r} is used twice")
        seen.add(case.name)
    return cases


def run_cases(engine: PolicyEngine, cases: Iterable[Case]) -> Report:
    """Decide every case (uncached) and collect those the engine answers otherwise."""
    failures = []
    total = 0
    for case in cases:
        total += 1
        decision = engine.decide_uncached(case.facts)
        reasons = tuple(sorted(decision.reasons))
        wrong = decision.allowed != case.allowed
        if case.reasons is not None and reasons != case.reasons:
            wrong = True
        if wrong:
            failures.append(Failure(case, decision.allowed, reasons))
    return Report(total, tuple(failures))

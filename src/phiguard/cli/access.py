"""``phiguard access explain|test|validate``: ask, check and validate the access policies.

These commands work on the policy files alone: no phiguard home, no store, no
passphrase.  ``explain`` takes the attributes of a request on the command line;
resolving a real user and patient from the store into those attributes comes later.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from phiguard.access.cases import (
    DEPARTMENT,
    RELATIONSHIPS,
    SHIPPED_CASES,
    load_cases,
    relationship_flags,
    run_cases,
)
from phiguard.access.engine import POLICY_DIR, PolicyBundle, PolicyEngine
from phiguard.access.explain import explain as explain_facts
from phiguard.access.facts import ACTION_ALIASES, ACTIONS, Facts, PatientFacts
from phiguard.access.scopes import scopes_allow
from phiguard.errors import PhiGuardError, PolicyLoadError

from .common import console

app = typer.Typer(
    help="Access policies: explain a decision, run a table of expected decisions, validate.",
    no_args_is_help=True,
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _engine(policies: Path | None) -> PolicyEngine:
    """The engine for ``policies`` (default: shipped); a refused set is one error line."""
    bundle = PolicyBundle.from_directory(policies or POLICY_DIR)
    try:
        return PolicyEngine(bundle)
    except PolicyLoadError as exc:
        where = policies or POLICY_DIR
        raise PhiGuardError(
            f"policies in {where} do not load ({len(exc.problems)} problems); "
            f"run 'phiguard access validate {where}'"
        ) from None


PoliciesOption = Annotated[
    Path | None,
    typer.Option(
        "--policies",
        help="policy directory to use (default: the shipped policies)",
        show_default=False,
        file_okay=False,
    ),
]


@app.command()
def explain(
    role: Annotated[list[str], typer.Option("--role", help="a role the user holds (repeatable)")],
    action: Annotated[str, typer.Option(help=f"one of: {', '.join(sorted(ACTIONS))}, vread")],
    type_: Annotated[str, typer.Option("--type", help="FHIR resource type, e.g. Observation")],
    purpose: Annotated[str, typer.Option(help="HL7 PurposeOfUse code")] = "TREAT",
    relationship: Annotated[
        str,
        typer.Option(help=f"the user's relationship to the patient: {', '.join(RELATIONSHIPS)}"),
    ] = "none",
    label: Annotated[
        list[str] | None,
        typer.Option("--label", help="security label on the resource, e.g. PSY (repeatable)"),
    ] = None,
    consent_denied: Annotated[
        bool, typer.Option("--consent-denied", help="the patient's consent denies this access")
    ] = False,
    break_glass: Annotated[
        bool, typer.Option("--break-glass", help="the user invoked break-the-glass")
    ] = False,
    vip: Annotated[bool, typer.Option("--vip", help="the patient is a VIP")] = False,
    employee: Annotated[
        bool, typer.Option("--employee", help="the patient is an employee")
    ] = False,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="an OAuth scope the caller carries, e.g. user/Observation.rs (repeatable); "
            "without any, no scope limit applies",
        ),
    ] = None,
    type_level: Annotated[
        bool,
        typer.Option(
            "--type-level",
            help="ask about the type, not one patient's resource "
            "(a search before its results are known, or shared reference data)",
        ),
    ] = False,
    policies: PoliciesOption = None,
) -> None:
    """Decide one request, given as attributes, and say which policies decided it and why.

    Real users and patients are not resolved from the store yet: give their attributes.
    """
    action = ACTION_ALIASES.get(action, action)
    if action not in ACTIONS:
        raise PhiGuardError(
            f"unknown action {action!r} (one of {', '.join(sorted(ACTIONS))}, vread)"
        )
    if relationship not in RELATIONSHIPS:
        raise PhiGuardError(
            f"unknown relationship {relationship!r} (one of {', '.join(RELATIONSHIPS)})"
        )
    if type_level and (relationship != "none" or vip or employee or consent_denied):
        raise PhiGuardError(
            "--type-level asks about no patient: "
            "--relationship, --vip, --employee and --consent-denied do not apply"
        )
    patient = None if type_level else PatientFacts(DEPARTMENT, vip=vip, employee=employee)
    care, encounter, department = relationship_flags(relationship, patient is not None)
    facts = Facts(
        action=action,
        resource_type=type_,
        roles=frozenset(role),
        department=DEPARTMENT,
        labels=frozenset(label or ()),
        patient=patient,
        purpose=purpose,
        break_glass=break_glass,
        on_care_team=care,
        recent_encounter=encounter,
        department_match=department,
        consent_denied=consent_denied,
        scopes_allow=scopes_allow(scope or None, action, type_),
    )
    engine = _engine(policies)
    result = explain_facts(engine, facts)
    decision = result.decision
    console.print(f"Decision: {'ALLOW' if decision.allowed else 'DENY'}")
    console.print(f"Decided by: {', '.join(decision.reasons)}")
    masked = ", ".join(decision.masked_fields) if decision.masked_fields else "none"
    console.print(f"Masked fields: {masked}")
    if type_ not in engine.resource_classes:
        console.print(f"Note: {type_} is in no resource class, so no class-based rule grants it.")
    console.print("")
    for line in result.lines():
        console.print(line, markup=False)


@app.command("test")
def test_cases(
    cases: Annotated[
        Path | None,
        typer.Argument(
            help="YAML table of expected decisions (default: the shipped table)",
            show_default=False,
            dir_okay=False,
        ),
    ] = None,
    policies: PoliciesOption = None,
) -> None:
    """Run a table of expected decisions against the policies; exit 1 if any case fails."""
    table = cases or SHIPPED_CASES
    loaded = load_cases(table)
    report = run_cases(_engine(policies), loaded)
    for failure in report.failures:
        console.print(f"FAIL {failure.line()}", markup=False)
    console.print(
        f"{report.cases} cases: {report.passed} passed, {len(report.failures)} failed ({table})",
        markup=False,
    )
    if report.failures:
        raise typer.Exit(1)


@app.command()
def validate(
    directory: Annotated[
        Path | None,
        typer.Argument(
            help="policy directory (default: the shipped policies)",
            show_default=False,
            file_okay=False,
        ),
    ] = None,
) -> None:
    """Load a policy directory as the engine would and report every problem; exit 1 on any.

    Loading stops at the first stage that fails (schema, then each file's syntax and
    annotations, then validation against the schema, then types, masks and probes), so
    fixing one stage may reveal problems in the next.
    """
    where = directory or POLICY_DIR
    try:
        engine = PolicyEngine(PolicyBundle.from_directory(where))
    except PolicyLoadError as exc:
        for problem in map(_one_line, exc.problems):
            if not problem.startswith(str(where)):
                problem = f"{where}: {problem}"
            print(f"phiguard: error: {problem}", file=sys.stderr)
        raise typer.Exit(1) from None
    policies = engine.policies.values()
    permits = sum(p.effect == "permit" for p in policies)
    console.print(
        f"{where}: valid: {permits} permits, {len(engine.policies) - permits} forbids, "
        f"{len(engine.resource_classes)} resource types, {len(engine.masks.rules)} masks",
        markup=False,
    )

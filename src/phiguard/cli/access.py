"""``phiguard access ...``: explain, test and validate policies; administer the running
set; review break-the-glass; rebuild the relationship index.

``explain``, ``test`` and ``validate`` work on policy files alone (no home, no store);
``explain --user U --resource Type/ID`` asks a home's store instead: the real account
(roles, status, department) and the real resource and patient (labels, relationship
index, consent, a running break-the-glass grant).
``policy list|show|history|set`` act on a home's running set and are limited to a
security administrator who re-authenticates (password, then a current TOTP code,
from a prompt or, with ``--password-stdin``, one per line on standard input).
``btg list`` shows the review queue; ``btg review`` and ``btg close`` open a grant's
reason and close its review, as a privacy officer who re-authenticates likewise.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

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
from phiguard.access.explain import Explanation
from phiguard.access.explain import explain as explain_facts
from phiguard.access.facts import ACTION_ALIASES, ACTIONS, Facts, PatientFacts
from phiguard.access.scopes import scopes_allow
from phiguard.errors import PhiGuardError, PolicyLoadError

from .common import HomeOption, console, system
from .users import PasswordStdin, read_password

app = typer.Typer(
    help="Access policies: explain, test, validate, administer; break-the-glass reviews.",
    no_args_is_help=True,
)
policy_app = typer.Typer(
    help="The running policy set (security administrators, re-authenticated).",
    no_args_is_help=True,
)
btg_app = typer.Typer(
    help="Break-the-glass grants and their reviews (privacy officers).", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")
app.add_typer(btg_app, name="btg")


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


_OFFLINE_ONLY = (
    "--role, --type, --relationship, --label, --consent-denied, --break-glass, --vip, "
    "--employee and --type-level"
)


@app.command()
def explain(
    action: Annotated[str, typer.Option(help=f"one of: {', '.join(sorted(ACTIONS))}, vread")],
    role: Annotated[
        list[str] | None,
        typer.Option("--role", help="a role the user holds (repeatable; offline)"),
    ] = None,
    type_: Annotated[
        str | None,
        typer.Option("--type", help="FHIR resource type, e.g. Observation (offline)"),
    ] = None,
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
    user: Annotated[
        str | None,
        typer.Option("--user", help="a real account of the home: its roles, status and department"),
    ] = None,
    resource: Annotated[
        str | None,
        typer.Option(
            "--resource",
            help="a stored resource, e.g. Patient/ID: its labels, patient, relationships, "
            "consent (with --user)",
        ),
    ] = None,
    policies: PoliciesOption = None,
    home: HomeOption = None,
) -> None:
    """Decide one request and say which policies decided it and why.

    Offline: give the request as attributes (--role, --type, --relationship, ...).
    Live: --user U --resource Type/ID [--home H] asks the home's store, so an officer
    can ask why u00042 could read Patient/abc today.
    """
    action = ACTION_ALIASES.get(action, action)
    if action not in ACTIONS:
        raise PhiGuardError(
            f"unknown action {action!r} (one of {', '.join(sorted(ACTIONS))}, vread)"
        )
    offline_given = bool(
        role
        or type_
        or label
        or relationship != "none"
        or consent_denied
        or break_glass
        or vip
        or employee
        or type_level
    )
    if user is not None or resource is not None:
        if user is None or resource is None:
            raise PhiGuardError("a live explanation needs both --user and --resource")
        if offline_given:
            raise PhiGuardError(
                f"with --user and --resource the facts come from the store: {_OFFLINE_ONLY} "
                "do not apply"
            )
        _explain_live(home, user, resource, action, purpose, scope, policies)
        return
    if home is not None:
        raise PhiGuardError("--home is for a live explanation: give --user and --resource")
    if not role or type_ is None:
        raise PhiGuardError(
            "give the request as attributes (--role and --type at least), "
            "or a real one with --user and --resource"
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
    _print_explanation(explain_facts(engine, facts), engine, type_)


def _print_explanation(result: Explanation, engine: PolicyEngine, rtype: str) -> None:
    decision = result.decision
    console.print(f"Decision: {'ALLOW' if decision.allowed else 'DENY'}")
    console.print(f"Decided by: {', '.join(decision.reasons)}")
    masked = ", ".join(decision.masked_fields) if decision.masked_fields else "none"
    console.print(f"Masked fields: {masked}")
    if rtype not in engine.resource_classes:
        console.print(f"Note: {rtype} is in no resource class, so no class-based rule grants it.")
    console.print("")
    for line in result.lines():
        console.print(line, markup=False)


def _explain_live(
    home: str | None,
    user_id: str,
    reference: str,
    action: str,
    purpose: str,
    scopes: list[str] | None,
    policies: Path | None,
) -> None:
    """The decision the running system would make now, from the home's store."""
    from phiguard.access.live import explain_live

    with system(home) as sys_:
        services = _services(sys_)
        engine = _engine(policies) if policies is not None else services.engine
        live = explain_live(
            sys_,
            services,
            user_id=user_id,
            reference=reference,
            action=action,
            purpose=purpose,
            scopes=scopes,
            engine=engine,
        )
    for line in live.notes():
        console.print(line, markup=False)
    _print_explanation(live.result, engine, live.reference.partition("/")[0])


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


# -- administration of a home's running set --------------------------------------------

AdminOption = Annotated[
    str, typer.Option("--admin", help="user id of the security administrator doing this")
]
ReviewerOption = Annotated[
    str, typer.Option("--reviewer", help="user id of the privacy officer doing this")
]


def _reauthenticate(sys_: Any, user_id: str, from_stdin: bool) -> bool:
    """Password and a current TOTP code of ``user_id``; one generic error otherwise."""
    from phiguard.access.administration import PolicyStore
    from phiguard.errors import AuthenticationError
    from phiguard.identity.accounts import Accounts

    password = read_password("Password", from_stdin=from_stdin, confirm=False)
    code = read_password("TOTP code", from_stdin=from_stdin, confirm=False).strip()
    try:
        return PolicyStore.reauthenticate(Accounts.from_system(sys_), user_id, password, code)
    except AuthenticationError:
        raise PhiGuardError("re-authentication failed; nothing was done") from None


def _admin_store(sys_: Any, admin: str, from_stdin: bool) -> Any:
    """The policy store, once ``admin`` has re-authenticated as a security admin."""
    store = _services(sys_).policies
    store.check_admin(admin, reauthenticated=_reauthenticate(sys_, admin, from_stdin))
    return store


def _services(sys_: Any) -> Any:
    if sys_.access is None:
        raise PhiGuardError("access control is not configured in this home")
    return sys_.access


@policy_app.command("list")
def policy_list(
    admin: AdminOption, home: HomeOption = None, password_stdin: PasswordStdin = False
) -> None:
    """The running set: generation, files and every policy with its effect."""
    from phiguard.access.administration import bundle_files

    with system(home) as sys_:
        store = _admin_store(sys_, admin, password_stdin)
        current = store.current()
        bundle = store.running_bundle()
        engine = PolicyEngine(bundle)
        where = (
            f"generation {current.generation} installed by {current.installed_by}"
            if current
            else "the shipped set (never replaced)"
        )
        console.print(f"Running: {where}", markup=False)
        for name in bundle_files(bundle):
            console.print(f"  file {name}", markup=False)
        for info in engine.policies.values():
            console.print(f"  {info.effect:6} {info.id} ({info.source})", markup=False)


@policy_app.command("show")
def policy_show(
    name: Annotated[str, typer.Argument(help="file name, e.g. guards.cedar or masks.yaml")],
    admin: AdminOption,
    home: HomeOption = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Print one file of the running set."""
    from phiguard.access.administration import bundle_files

    with system(home) as sys_:
        store = _admin_store(sys_, admin, password_stdin)
        files = bundle_files(store.running_bundle())
        if name not in files:
            raise PhiGuardError(f"the running set has no file {name[:80]}")
        print(files[name], end="" if files[name].endswith("\n") else "\n")


@policy_app.command("history")
def policy_history(
    admin: AdminOption, home: HomeOption = None, password_stdin: PasswordStdin = False
) -> None:
    """Every installed generation: when, by whom, why, and its SHA-256."""
    with system(home) as sys_:
        store = _admin_store(sys_, admin, password_stdin)
        sets = store.history()
        if not sets:
            console.print("No generation installed: the shipped set is running.")
        for ps in sets:
            console.print(
                f"{ps.generation}  {ps.installed_at.isoformat()}  {ps.installed_by}  "
                f"{ps.sha256[:16]}  {ps.comment}",
                markup=False,
            )


@policy_app.command("set")
def policy_set(
    path: Annotated[
        Path,
        typer.Argument(help="a policy file (replaces the file of that name) or a directory"),
    ],
    admin: AdminOption,
    comment: Annotated[str, typer.Option("--comment", help="why (kept with the set)")] = "",
    home: HomeOption = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Validate and install a new running set; a set that does not load is refused."""
    from phiguard.access.administration import read_policy_path

    with system(home) as sys_:
        store = _services(sys_).policies
        ok = _reauthenticate(sys_, admin, password_stdin)
        candidate, what = read_policy_path(path, store.running_bundle())
        try:
            installed = store.install(candidate, by=admin, reauthenticated=ok, comment=comment)
        except PolicyLoadError as exc:
            for problem in exc.problems:
                print(f"phiguard: error: {_one_line(problem)}", file=sys.stderr)
            raise PhiGuardError(
                f"{what}: refused ({len(exc.problems)} problems); the running set is unchanged"
            ) from None
        console.print(
            f"Installed generation {installed.generation} ({what}); "
            "running servers load it within seconds.",
            markup=False,
        )


# -- break-the-glass -----------------------------------------------------------------------


@btg_app.command("list")
def btg_list(
    status: Annotated[str, typer.Option(help="open, closed or all")] = "open",
    home: HomeOption = None,
) -> None:
    """Grants and their reviews (ids, users, patients, times; never the reasons)."""
    with system(home) as sys_:
        grants = _services(sys_).break_glass.list(None if status == "all" else status)
        if not grants:
            console.print(f"No {'' if status == 'all' else status + ' '}break-the-glass reviews.")
        for g in grants:
            console.print(
                f"{g.grant_id}  {g.review_status:6}  user {g.user_id}  patient {g.patient_id}  "
                f"{g.declared_at.isoformat()} .. {g.expires_at.isoformat()}"
                + (f"  closed by {g.reviewed_by}" if g.reviewed_by else ""),
                markup=False,
            )


@btg_app.command("review")
def btg_review(
    grant_id: Annotated[str, typer.Argument(help="the grant id (from btg list)")],
    reviewer: ReviewerOption,
    home: HomeOption = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Show one grant with its reason and the ledger entries made under it."""
    from phiguard.access.breakglass import REVIEWER_ROLE, BreakGlassError

    with system(home) as sys_:
        service = _services(sys_).break_glass
        ok = _reauthenticate(sys_, reviewer, password_stdin)
        if not ok or REVIEWER_ROLE not in service.roles_of(reviewer):
            raise BreakGlassError("only a privacy officer reviews break-the-glass grants")
        grant = service.get(grant_id)
        uses = service.uses(grant, sys_.ledger)
        sys_.record(
            "break-glass-review-open",
            principal=f"user/{reviewer}",
            patient_ids=(grant.patient_id,),
            grant=grant_id,
        )
    console.print(f"Grant {grant.grant_id} ({grant.review_status})", markup=False)
    console.print(
        f"User: {grant.user_id}  Patient: {grant.patient_id}  Purpose: {grant.purpose}",
        markup=False,
    )
    console.print(
        f"From {grant.declared_at.isoformat()} to {grant.expires_at.isoformat()}", markup=False
    )
    console.print(f"Reason: {grant.reason}", markup=False)
    if grant.note:
        console.print(f"Review note ({grant.reviewed_by}): {grant.note}", markup=False)
    console.print(f"Accesses under it: {len(uses)}", markup=False)
    for line in uses:
        console.print(f"  {line}", markup=False)


@btg_app.command("close")
def btg_close(
    grant_id: Annotated[str, typer.Argument(help="the grant id (from btg list)")],
    reviewer: ReviewerOption,
    home: HomeOption = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Close a review (a privacy officer other than the user who declared it).

    What the review found is read from standard input (one line, after the password
    and TOTP code with --password-stdin), never from the command line: it may
    describe the patient's care, and arguments end up in shell history and in every
    user's process list.
    """
    with system(home) as sys_:
        ok = _reauthenticate(sys_, reviewer, password_stdin)
        if sys.stdin.isatty():
            console.print("What the review found (one line):")
        note = " ".join(sys.stdin.readline().split())
        if not note:
            raise PhiGuardError("give what the review found on standard input (one line)")
        grant = _services(sys_).break_glass.close(
            grant_id, reviewer, note, reauthenticated=ok, source="cli"
        )
    console.print(f"Closed the review of {grant.grant_id} (user {grant.user_id}).", markup=False)


@app.command()
def reindex(home: HomeOption = None) -> None:
    """Rebuild the relationship index from the resources (after a restore or key rotation)."""
    with system(home) as sys_:
        patients = _services(sys_).index.rebuild_all()
        sys_.record("access-reindex", patients=patients)
    console.print(f"Relationship index rebuilt for {patients} patients.", markup=False)

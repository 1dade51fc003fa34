"""``phiguard user add|list|show|suspend|reactivate|terminate|reinstate|reset-mfa|passwd|unlock``.

Passwords are read from a prompt (without echo, twice for a new one) or, for
scripts, from standard input with ``--password-stdin`` -- never from an argument,
where ``ps``, shell history and CI logs would keep them.  The administrator named in
the audit trail is the operating-system account running the command, read from the
password database rather than ``$USER`` so the environment cannot forge it.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from phiguard.clock import isoformat
from phiguard.errors import Gone, NotFound, PhiGuardError
from phiguard.identity.accounts import ROLES, STATUSES, Account, Accounts
from phiguard.records.context import system_context
from phiguard.system import System

from .common import HomeOption, console, prompt, system

app = typer.Typer(
    help="Workforce accounts: create, list, suspend, terminate, reset MFA and passwords.",
    no_args_is_help=True,
)

SOURCE = "cli"

UserIdArg = Annotated[str, typer.Argument(help="the user id, e.g. u00042")]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="read the password(s) from standard input, one per line, instead of a prompt",
    ),
]


def operator() -> str:
    """The audit principal of whoever runs the command (``operator/<os account>``)."""
    try:
        import pwd

        name = pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):  # no password database (Windows, a bare container)
        name = "unknown"
    return f"operator/{name}"


def read_password(label: str, *, from_stdin: bool, confirm: bool) -> str:
    """One password, from the next line of stdin or from a no-echo prompt.

    A prompt needs a terminal: with stdin redirected, ``getpass`` would either read
    the redirected data with a warning or block on /dev/tty, so it is refused with a
    pointer to ``--password-stdin`` instead.
    """
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise PhiGuardError(f"no {label.lower()} on standard input")
        return line.removesuffix("\n").removesuffix("\r")
    if not sys.stdin.isatty():
        raise PhiGuardError("no terminal to ask for the password: use --password-stdin")
    value = prompt(f"{label}: ")
    if confirm and not hmac.compare_digest(
        prompt(f"Repeat the {label.lower()}: ").encode(), value.encode()
    ):
        raise PhiGuardError("the two passwords differ; nothing was changed")
    return value


def _accounts(sys_: System) -> Accounts:
    return Accounts.from_system(sys_)


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else isoformat(value)


def _parse_date(value: str) -> dt.datetime:
    """An ISO 8601 date or date-time; no zone means UTC (a bare date: its midnight)."""
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise PhiGuardError(
            "--effective must be an ISO 8601 date or date-time, e.g. 2026-03-31"
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _done(message: str, account: Account) -> None:
    console.print(escape(f"{message}: {account.user_id} ({account.display_name})"))


@app.command()
def add(
    user_id: UserIdArg,
    name: Annotated[str, typer.Option("--name", help="display name")],
    email: Annotated[str, typer.Option("--email", help="work e-mail address")],
    role: Annotated[
        list[str],
        typer.Option("--role", help=f"a role (repeatable): {', '.join(ROLES)}"),
    ],
    home: HomeOption = None,
    department: Annotated[str | None, typer.Option(help="department or ward")] = None,
    practitioner: Annotated[
        str | None,
        typer.Option("--practitioner", help="id of the staff member's FHIR Practitioner"),
    ] = None,
    password_stdin: PasswordStdin = False,
) -> None:
    """Create an active account; the initial password is prompted for (or read from stdin)."""
    password = read_password("Initial password", from_stdin=password_stdin, confirm=True)
    with system(home) as sys_:
        if practitioner:
            # Through the records path (audited, access-checked) like any other read.
            try:
                sys_.vault.repository(system_context(source=SOURCE)).read(
                    "Practitioner", practitioner
                )
            except (NotFound, Gone):
                raise PhiGuardError(f"there is no Practitioner/{practitioner}") from None
        account = _accounts(sys_).add(
            user_id,
            name,
            email,
            role,
            password,
            by=operator(),
            department=department,
            practitioner_id=practitioner,
            source=SOURCE,
        )
    _done("Added", account)
    console.print("The user must enrol an authenticator (TOTP) at their first log-in.")


@app.command("list")
def list_(
    home: HomeOption = None,
    status: Annotated[
        str | None, typer.Option(help=f"only this status: {', '.join(STATUSES)}")
    ] = None,
) -> None:
    """List the accounts: id, name, roles, department, status, MFA enrolment."""
    with system(home) as sys_:
        accounts = _accounts(sys_)
        rows = [(a, accounts.mfa_enrolled(a.user_id)) for a in accounts.list(status)]
    table = Table("id", "name", "roles", "department", "status", "MFA enrolled")
    for account, enrolled in rows:
        table.add_row(
            escape(account.user_id),
            escape(account.display_name),
            escape(", ".join(account.roles)),
            escape(account.department or "-"),
            account.status,
            "yes" if enrolled else "no",
        )
    console.print(table)
    console.print(f"{len(rows)} account(s)")


@app.command()
def show(user_id: UserIdArg, home: HomeOption = None) -> None:
    """Show one account (never its password hash)."""
    with system(home) as sys_:
        accounts = _accounts(sys_)
        account = accounts.get(user_id)
        enrolled = accounts.mfa_enrolled(user_id)
        codes = accounts.recovery.remaining(user_id)
        revoked = accounts.revoked_before(user_id)
        throttle = accounts.throttle.account_state(user_id)
    table = Table(show_header=False, box=None)
    rows = [
        ("user id", account.user_id),
        ("name", account.display_name),
        ("e-mail", account.email),
        (
            "practitioner",
            f"Practitioner/{account.practitioner_id}" if account.practitioner_id else "-",
        ),
        ("roles", ", ".join(account.roles)),
        ("department", account.department or "-"),
        ("status", account.status),
        ("MFA required", "yes" if account.mfa_required else "no"),
        ("MFA enrolled", "yes" if enrolled else "no"),
        ("recovery codes left", str(codes)),
        ("password changed", _when(account.password_changed_at)),
        ("created", _when(account.created_at)),
        ("suspended", _when(account.suspended_at)),
        ("terminated", _when(account.terminated_at)),
        ("updated", _when(account.updated_at)),
        ("credentials revoked before", _when(revoked)),
        ("failed log-ins", str(throttle.failures)),
        (
            "locked until",
            "administrator unlock"
            if throttle.locked_by_admin_only
            else _when(throttle.locked_until),
        ),
    ]
    for key, value in rows:
        table.add_row(key, escape(value))
    console.print(table)


@app.command()
def suspend(user_id: UserIdArg, home: HomeOption = None) -> None:
    """Stop an account from logging in for now; its sessions and tokens are revoked."""
    with system(home) as sys_:
        account = _accounts(sys_).suspend(user_id, by=operator(), source=SOURCE)
    _done("Suspended", account)


@app.command()
def reactivate(user_id: UserIdArg, home: HomeOption = None) -> None:
    """Lift a suspension."""
    with system(home) as sys_:
        account = _accounts(sys_).reactivate(user_id, by=operator(), source=SOURCE)
    _done("Reactivated", account)


@app.command()
def terminate(
    user_id: UserIdArg,
    home: HomeOption = None,
    effective: Annotated[
        str | None,
        typer.Option(help="effective date of leaving (ISO 8601, UTC; default now; not future)"),
    ] = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="confirm without the interactive question")
    ] = False,
) -> None:
    """Close the account of someone who has left; only 'reinstate' undoes it."""
    when = _parse_date(effective) if effective else None
    if not yes:
        try:
            answer = typer.prompt(
                f"This terminates account {user_id} and revokes its sessions; only "
                f"'phiguard user reinstate' undoes it. Type the user id to confirm"
            )
        except typer.Abort:
            raise PhiGuardError("no confirmation was given; nothing was changed") from None
        if answer.strip() != user_id:
            raise PhiGuardError("confirmation did not match; nothing was changed")
    with system(home) as sys_:
        account = _accounts(sys_).terminate(user_id, by=operator(), when=when, source=SOURCE)
    _done("Terminated", account)
    console.print(f"Effective {_when(account.terminated_at)}.")


@app.command()
def reinstate(user_id: UserIdArg, home: HomeOption = None) -> None:
    """Bring back a terminated account (re-hire, or a termination in error)."""
    with system(home) as sys_:
        account = _accounts(sys_).reinstate(user_id, by=operator(), source=SOURCE)
    _done("Reinstated", account)
    console.print("Consider 'phiguard user reset-mfa' and 'phiguard user passwd --reset'.")


@app.command("reset-mfa")
def reset_mfa(user_id: UserIdArg, home: HomeOption = None) -> None:
    """Remove the TOTP enrolment, recovery codes and security keys; the user enrols again."""
    with system(home) as sys_:
        result = _accounts(sys_).reset_mfa(user_id, by=operator(), source=SOURCE)
    _done("Reset MFA", result.account)
    console.print(
        f"TOTP enrolment {'removed' if result.totp_removed else 'was not present'}; "
        f"{result.recovery_codes_removed} recovery code(s) and "
        f"{result.security_keys_removed} security key(s) removed; sessions revoked."
    )


@app.command()
def passwd(
    user_id: UserIdArg,
    home: HomeOption = None,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset", help="administrator reset: set a new password without the current one"
        ),
    ] = False,
    password_stdin: PasswordStdin = False,
) -> None:
    """Change a password (current, then new), or with --reset set a new one as administrator.

    With --password-stdin the first line is the current password and the second the
    new one (only the new one with --reset).
    """
    current = None
    if not reset:
        current = read_password("Current password", from_stdin=password_stdin, confirm=False)
    new = read_password("New password", from_stdin=password_stdin, confirm=True)
    with system(home) as sys_:
        accounts = _accounts(sys_)
        if current is None:
            account = accounts.reset_password(user_id, new, by=operator(), source=SOURCE)
        else:
            account = accounts.change_password(user_id, current, new, address=SOURCE)
    _done("Password changed", account)
    console.print("Sessions and tokens issued before now are revoked.")


@app.command()
def unlock(user_id: UserIdArg, home: HomeOption = None) -> None:
    """Clear the log-in lock and failure count of an account."""
    with system(home) as sys_:
        cleared = _accounts(sys_).unlock(user_id, by=operator())
    console.print(
        escape(f"Unlocked {user_id}." if cleared else f"{user_id} had no failed log-ins.")
    )

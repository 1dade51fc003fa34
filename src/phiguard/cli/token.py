"""``phiguard token issue --user U``: a short-lived user token for operators and scripts.

The token is an ordinary OAuth access token (at most 15 minutes, the user's roles,
scopes narrowed to what those roles could ever use) issued without an application
and without a refresh token.  Only the token is printed on standard output, so
``TOKEN=$(phiguard token issue --user u00042)`` works; the issue is recorded in the
audit ledger under the operating-system account that ran the command.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from phiguard.errors import PhiGuardError
from phiguard.identity.oauth import OAuthService
from phiguard.identity.tokens import MAX_LIFETIME

from .common import HomeOption, err, system
from .users import operator

app = typer.Typer(help="Access tokens for operators and scripts.", no_args_is_help=True)

MAX_MINUTES = int(MAX_LIFETIME.total_seconds() // 60)


@app.command()
def issue(
    user: Annotated[str, typer.Option("--user", help="the user id the token acts for")],
    home: HomeOption = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="a patient/ or user/ scope (repeatable; default user/*.rs)"),
    ] = None,
    minutes: Annotated[
        int, typer.Option("--minutes", help=f"lifetime, 1 to {MAX_MINUTES} minutes")
    ] = MAX_MINUTES,
) -> None:
    """Mint an access token for an active user; prints only the token."""
    if not 1 <= minutes <= MAX_MINUTES:
        raise PhiGuardError(f"--minutes must be between 1 and {MAX_MINUTES}")
    with system(home) as sys_:
        issued = OAuthService.from_system(sys_).issue_for_user(
            user,
            [s for v in (scope or []) for s in v.split()],
            by=operator(),
            lifetime=dt.timedelta(minutes=minutes),
        )
    print(issued.token)
    err.print(
        f"Token for {user}, scopes {' '.join(sorted(issued.claims.scopes))}, "
        f"valid {issued.expires_in // 60} min."
    )

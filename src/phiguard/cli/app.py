"""The ``phiguard`` command: groups are registered here, each in its own module.

Every command turns a phiguard error into one plain line on stderr and exit code 1
(2 for usage errors, from Typer), never a traceback.
"""

from __future__ import annotations

import os
import sys

import typer

from phiguard.errors import PhiGuardError

from . import access as access_cmd
from . import audit as audit_cmd
from . import backup as backup_cmd
from . import clients as clients_cmd
from . import data, home, patient
from . import keys as keys_cmd
from . import monitor as monitor_cmd
from . import token as token_cmd
from . import users as users_cmd

app = typer.Typer(
    name="phiguard",
    help="phiguard: encrypted FHIR vault, keys, audit and monitoring for patient data.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
home.register(app)
data.register(app)
app.add_typer(keys_cmd.app, name="keys")
app.add_typer(backup_cmd.app, name="backup")
app.add_typer(patient.app, name="patient")
app.add_typer(audit_cmd.app, name="audit")
app.add_typer(users_cmd.app, name="user")
app.add_typer(access_cmd.app, name="access")
app.add_typer(clients_cmd.app, name="client")
app.add_typer(token_cmd.app, name="token")
app.add_typer(monitor_cmd.app, name="monitor")


def main() -> None:
    try:
        app()
    except PhiGuardError as exc:
        print(f"phiguard: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("phiguard: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # an unexpected failure: one line, no traceback, no data
        if os.environ.get("PHIGUARD_DEBUG") == "1":
            raise
        print(
            f"phiguard: internal error ({type(exc).__name__}); "
            f"set PHIGUARD_DEBUG=1 to see the traceback",
            file=sys.stderr,
        )
        sys.exit(70)

"""``phiguard patient shred``."""

from __future__ import annotations

from typing import Annotated

import typer

from phiguard.errors import PhiGuardError
from phiguard.records.context import system_context
from phiguard.records.maintenance import shred_patient

from .common import HomeOption, console, system

app = typer.Typer(help="Per-patient operations.", no_args_is_help=True)


@app.command()
def shred(
    patient_id: Annotated[str, typer.Argument(help="the Patient resource id")],
    home: HomeOption = None,
    yes: Annotated[
        bool, typer.Option("--yes", help="confirm without the interactive question")
    ] = False,
) -> None:
    """Destroy the patient's data keys: every record about them becomes unreadable, for good."""
    if not yes:
        try:
            answer = typer.prompt(
                f"This destroys every record about Patient/{patient_id} in this database, and "
                f"cannot be undone. Type the patient id to confirm"
            )
        except typer.Abort:
            # No input (closed stdin, Ctrl-C): one "phiguard: error:" line like every
            # other refusal, instead of Click's bare "Aborted.".
            raise PhiGuardError("no confirmation was given; nothing was changed") from None
        if answer.strip() != patient_id:
            raise PhiGuardError("confirmation did not match; nothing was changed")
    with system(home) as sys_:
        result = shred_patient(sys_.vault, system_context(purpose="HOPERAT"), patient_id)
    console.print(
        f"Shredded Patient/{patient_id}: {result.keys_destroyed} data key(s) destroyed; "
        f"{result.records} records ({result.versions} versions) are now unreadable. "
        f"Backups taken before now still hold the key until they expire "
        f"(see docs/operations.md)."
    )

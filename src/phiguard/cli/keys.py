"""``phiguard keys status|rotate|rewrap|rotate-data``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from phiguard.crypto.keyring import RESERVED, patient_compartment
from phiguard.errors import KeyShreddedError, PhiGuardError
from phiguard.records.maintenance import rotate_compartment

from .common import HomeOption, console, progress, system

app = typer.Typer(
    help="Key provider, KEK rotation, rewrap and data-key rotation.", no_args_is_help=True
)


@app.command()
def status(home: HomeOption = None) -> None:
    """Show the key provider, KEK versions and data keys."""
    with system(home) as sys_:
        st = sys_.keyring.status()
        in_rotation = sys_.keyring.compartments_in_rotation()
    table = Table(show_header=False, box=None)
    for k, v in st.provider.items():
        table.add_row(k, v)
    table.add_row("compartments", str(st.compartments))
    table.add_row("active data keys", str(st.active_deks))
    table.add_row("retired data keys", str(st.retired_deks))
    table.add_row("shredded compartments", str(st.shredded))
    for version, n in st.by_kek_version.items():
        table.add_row(f"wrapped by KEK v{version}", str(n))
    stale = sum(n for v, n in st.by_kek_version.items() if str(v) != st.provider.get("current"))
    table.add_row("needing rewrap", str(stale))
    table.add_row("data-key rotations unfinished", str(len(in_rotation)))
    console.print(table)


@app.command()
def rotate(home: HomeOption = None) -> None:
    """Create a new KEK version: new data keys are wrapped by it (then run rewrap)."""
    with system(home) as sys_:
        version = sys_.provider.rotate()
        sys_.record("kek-rotate", kek_version=version, provider=sys_.provider.name)
    console.print(f"KEK version {version} created and now wraps new data keys.")
    console.print("Run 'phiguard keys rewrap' to move existing data keys to it.")


@app.command()
def rewrap(home: HomeOption = None) -> None:
    """Re-wrap every data key under the current KEK (record ciphertext is not touched)."""
    with system(home) as sys_, progress() as bar:
        task = bar.add_task("Rewrapping data keys", total=None)
        done = sys_.keyring.rewrap(progress=lambda d, t: bar.update(task, completed=d, total=t))
        bar.update(task, completed=done, total=max(done, 1))
        kek_version = sys_.provider.current_version()
        sys_.record("kek-rewrap", keys=done, kek_version=kek_version)
    console.print(f"Rewrapped {done} data keys under KEK v{kek_version}.")


@app.command("rotate-data")
def rotate_data(
    home: HomeOption = None,
    patient: Annotated[list[str] | None, typer.Option(help="patient id (repeatable)")] = None,
    shared: Annotated[
        bool, typer.Option(help="rotate the shared (non-patient) compartment")
    ] = False,
    all_: Annotated[bool, typer.Option("--all", help="rotate every compartment")] = False,
    resume: Annotated[bool, typer.Option(help="finish rotations an interrupted run left")] = False,
    batch: Annotated[
        int, typer.Option(min=1, help="record versions re-sealed per committed transaction")
    ] = 500,
) -> None:
    """Re-encrypt compartments under new data keys (resumable: run again after a crash)."""
    with system(home) as sys_:
        keyring = sys_.keyring
        targets: list[str] = [patient_compartment(p) for p in patient or []]
        if shared:
            targets.append("shared")
        if all_:
            targets += [c for c in keyring.iter_compartments() if c not in RESERVED]
        if resume or not targets:
            targets = keyring.compartments_in_rotation() + targets
        targets = list(dict.fromkeys(targets))
        if not targets:
            raise PhiGuardError("nothing to rotate: name --patient, --shared, --all or --resume")
        # Refuse before any work (and before progress bars reach stderr): a shredded
        # compartment cannot be rotated, and rotating one without a key would create a
        # stray key for a patient phiguard holds nothing about.
        known = set(keyring.iter_compartments()) | set(keyring.compartments_in_rotation())
        for compartment in targets:
            if keyring.is_shredded(compartment):
                raise KeyShreddedError(f"the data key of {compartment} was destroyed")
            if compartment not in known:
                raise PhiGuardError(f"{compartment} has no data key; nothing was rotated")
        resealed = 0
        with progress() as bar:
            overall = bar.add_task("Compartments", total=len(targets))
            rows = bar.add_task("Records", total=None)
            for compartment in targets:
                result = rotate_compartment(
                    sys_.vault,
                    compartment,
                    batch=batch,
                    progress=lambda d, t: bar.update(rows, completed=d, total=t),
                )
                resealed += result.resealed
                bar.advance(overall)
        sys_.record("dek-rotate", compartments=len(targets), resealed=resealed)
    console.print(f"Rotated {len(targets)} compartment(s); re-sealed {resealed} record versions.")

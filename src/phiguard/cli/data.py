"""``phiguard import``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from phiguard.errors import ImportFailed
from phiguard.fhir.importer import Importer, discover, read_units
from phiguard.records.context import system_context

from .common import HomeOption, console, progress, system


def register(app: typer.Typer) -> None:
    @app.command("import")
    def import_(
        paths: Annotated[
            list[Path], typer.Argument(help="Bundle (.json) or NDJSON files, or folders")
        ],
        home: HomeOption = None,
    ) -> None:
        """Import FHIR Bundles and NDJSON; run again to resume an interrupted import."""
        files = discover(paths)
        if not files:
            raise ImportFailed("no .json or .ndjson files found")
        units = [u for f in files for u in read_units(f)]
        total = sum(u.size for u in units)
        with system(home) as sys_:
            repo = sys_.vault.repository(system_context(purpose="HOPERAT", source="import"))
            with progress() as bar:
                task = bar.add_task("Importing", total=total)
                report = Importer(repo, progress=lambda n: bar.advance(task, n)).run(units)
        console.print(
            f"Imported {report.resources} resources in {report.units} units from "
            f"{report.files} files; {report.skipped_resources} resources in "
            f"{report.skipped_units} units were already imported."
        )
        for rtype, n in sorted(report.by_type.items()):
            console.print(f"  {rtype:<28} {n}")
        if report.failures:
            console.print(f"[red]{len(report.failures)} units failed:[/red]")
            for line in report.failures:
                console.print(f"  {line}")
            raise typer.Exit(1)

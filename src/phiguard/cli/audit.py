"""``phiguard audit verify|checkpoint|proof|export``."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from phiguard.audit import export as exports
from phiguard.audit import reports, retention
from phiguard.audit.verify import verify as verify_ledger
from phiguard.errors import AuditError

from .common import HomeOption, console, progress, system

app = typer.Typer(help="The tamper-evident audit ledger.", no_args_is_help=True)


@app.command()
def verify(
    home: HomeOption = None,
    witness: Annotated[Path | None, typer.Option(help="folder of exported checkpoints")] = None,
    archive: Annotated[
        list[Path] | None, typer.Option(help="archive file of old entries (repeatable)")
    ] = None,
) -> None:
    """Recompute the ledger, check every signature and MAC, and name the first bad entry."""
    with system(home) as sys_, progress() as bar:
        task = bar.add_task("Verifying the ledger", total=sys_.ledger.size or 1)
        report = verify_ledger(
            sys_.ledger,
            witness=witness,
            archives=archive,
            progress=lambda d, t: bar.update(task, completed=d, total=t),
        )
        sys_.record(
            "audit-verify",
            outcome="success" if report.ok else "error",
            entries=report.entries,
            findings=len(report.findings),
        )
    table = Table(show_header=False, box=None)
    table.add_row("entries", str(report.entries))
    table.add_row("checkpoints", str(report.checkpoints))
    table.add_row("witnessed checkpoints", str(report.witnessed))
    if report.archived_unchecked:
        table.add_row("archived, MAC-checked only", str(report.archived_unchecked))
    console.print(table)
    if report.ok:
        console.print("[green]The ledger verifies.[/green]")
        return
    if report.first_bad_entry is not None:
        console.print(f"[red]First bad entry: {report.first_bad_entry}[/red]")
    for f in report.findings:
        console.print(f"[red]{f.kind}[/red]: {f.message}")
    raise typer.Exit(1)


@app.command()
def checkpoint(
    home: HomeOption = None,
    export: Annotated[Path | None, typer.Option(help="witness folder to copy it to")] = None,
) -> None:
    """Sign the current tree head; optionally export it to an external witness folder."""
    with system(home) as sys_:
        cp = sys_.ledger.checkpoint()
        doc = cp.to_json(sys_.ledger.public_key_b64)
        if export is not None:
            export.mkdir(parents=True, exist_ok=True)
            target = export / f"checkpoint-{cp.size:012d}.json"
            target.write_text(json.dumps(doc, indent=2) + "\n")
        sys_.record("audit-checkpoint", size=cp.size, exported=str(export or ""))
    console.print(f"Checkpoint at size {cp.size}, root {doc['root']}")
    if export is not None:
        console.print(f"Exported to {target}")


@app.command()
def proof(
    seq: Annotated[int, typer.Argument(help="the entry's sequence number")],
    home: HomeOption = None,
    out: Annotated[Path | None, typer.Option(help="write the proof here")] = None,
) -> None:
    """Print an inclusion proof that 'python -m phiguard.audit.verify_proof' checks offline."""
    with system(home) as sys_:
        doc = sys_.ledger.proof_document(seq)
    text = json.dumps(doc, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        console.print(f"Proof for entry {seq} written to {out}")


@app.command("export")
def export_(
    home: HomeOption = None,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or syslog")] = "jsonl",
    since: Annotated[int | None, typer.Option(help="first sequence number to export")] = None,
    cursor: Annotated[Path | None, typer.Option(help="file keeping the next seq to export")] = None,
    out: Annotated[Path | None, typer.Option(help="append to this file (default stdout)")] = None,
) -> None:
    """Stream ledger events for a SIEM, resumable from a cursor."""
    if fmt not in ("jsonl", "syslog"):
        raise AuditError("--format must be jsonl or syslog")
    start = since
    if start is None and cursor is not None and cursor.exists():
        try:
            start = int(cursor.read_text().strip())
        except ValueError:
            raise AuditError(f"the cursor file {cursor} does not hold a number") from None
    start = start or 0
    with system(home) as sys_:
        end = sys_.ledger.size
        events = sys_.ledger.events(start, end)
        lines = exports.jsonl(events) if fmt == "jsonl" else exports.syslog(events)
        sink = open(out, "a", encoding="utf-8") if out else sys.stdout  # noqa: SIM115
        try:
            n = 0
            for line in lines:
                sink.write(line + "\n")
                n += 1
        finally:
            if out:
                sink.close()
        if cursor is not None:
            cursor.write_text(f"{end}\n")
        sys_.record("audit-export", format=fmt, first=start, count=n)
    print(f"exported {n} events ({start}..{end - 1}); next cursor {end}", file=sys.stderr)


def _date(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise AuditError(f"{name} must be a date like 2026-01-31") from None


@app.command()
def report(
    patient: Annotated[str, typer.Option(help="the Patient resource id")],
    from_: Annotated[str, typer.Option("--from", help="first day (YYYY-MM-DD)")],
    to: Annotated[str, typer.Option(help="last day (YYYY-MM-DD)")],
    home: HomeOption = None,
    fmt: Annotated[str, typer.Option("--format", help="html, pdf or json")] = "html",
    out: Annotated[Path | None, typer.Option(help="file to write (default stdout)")] = None,
) -> None:
    """The patient's access report: who looked at the record, and disclosures."""
    if fmt not in ("html", "pdf", "json"):
        raise AuditError("--format must be html, pdf or json")
    since, until = _date(from_, "--from"), _date(to, "--to")
    if until < since:
        raise AuditError("--to is before --from")
    if fmt == "pdf" and out is None:
        raise AuditError("a PDF report needs --out FILE")
    with system(home) as sys_:
        built = reports.build(sys_.ledger, patient, since, until)
        if fmt == "html":
            data = reports.render_html(built).encode()
        elif fmt == "pdf":
            data = reports.render_pdf(built)
        else:
            data = (json.dumps(reports.to_bundle(built), indent=2) + "\n").encode()
        sys_.record(
            "access-report",
            patient_ids=(patient,),
            format=fmt,
            since=str(since),
            until=str(until),
            rows=len(built.rows),
        )
    if out is None:
        sys.stdout.buffer.write(data)
    else:
        out.write_bytes(data)
        console.print(
            f"Access report for Patient/{patient} ({len(built.rows)} accesses, "
            f"{len(built.disclosures)} disclosures) written to {out}"
        )


@app.command()
def disclose(
    patient: Annotated[str, typer.Option(help="the Patient resource id")],
    recipient: Annotated[str, typer.Option(help="who received the information")],
    purpose: Annotated[str, typer.Option(help="purpose of use code")] = "PUBHLTH",
    home: HomeOption = None,
) -> None:
    """Record a disclosure for the patient's accounting of disclosures (164.528).

    What was disclosed is read from standard input (one line), never from the command
    line: it may describe the patient's care, and arguments end up in shell history
    and in every user's process list.
    """
    if sys.stdin.isatty():
        console.print("What was disclosed (one line):")
    description = " ".join(sys.stdin.readline().split())
    if not description:
        raise AuditError("give what was disclosed on standard input (one line)")
    if len(description) > 2000:
        raise AuditError("the description is longer than 2,000 characters")
    with system(home) as sys_:
        sys_.record(
            "disclosure",
            patient_ids=(patient,),
            purpose=purpose.upper(),
            recipient=recipient,
            description=description,
        )
    console.print(f"Disclosure of Patient/{patient} to {recipient} recorded.")


@app.command("archive")
def archive_(
    out: Annotated[Path, typer.Option(help="the archive file to write")],
    home: HomeOption = None,
    before: Annotated[
        str | None, typer.Option(help="archive entries before this day (default: retention)")
    ] = None,
) -> None:
    """Move leaves older than the retention period to a file; proofs stay valid."""
    with system(home) as sys_:
        if before is None:
            cutoff = sys_.clock.now() - dt.timedelta(days=sys_.settings.audit_retention_days)
        else:
            day = _date(before, "--before")
            cutoff = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
        result = retention.archive(sys_.ledger, out, cutoff)
        sys_.record(
            "audit-archive",
            first=result.first,
            last=result.last,
            entries=result.entries,
            archive=str(out),
        )
    console.print(f"Archived entries {result.first}..{result.last} ({result.entries}) to {out}.")
    console.print("Keep the file: 'phiguard audit verify --archive FILE' checks them in full.")
